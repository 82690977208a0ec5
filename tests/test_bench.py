"""Tests of the benchmarks: each core function runs an iteration or two on a tiny network or
cohort. What they time is checked against a fake clock (the figures must be exactly the clock's),
or, where the work runs in other processes, against sleeps of known length; never against the
speed of the machine."""
import io
import math
import time
import types

import numpy as np
import pydicom
import pytest

import bench
from bench import inference, preprocess, roofline, torch_speed, train_speed, xml_speed
from lidc import synthetic
from tests.test_training_helpers import tiny_net


class FakeClock:
    """A stand-in for the time module whose perf_counter moves only by tick() (and by `step` at
    each reading, if given)."""

    def __init__(self, step=0.0):
        self.now, self.step = 0.0, step

    def tick(self, seconds):
        self.now += seconds

    def perf_counter(self):
        self.now += self.step
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_alternate_times_every_competitor_in_turn_and_takes_the_median(clock):
    calls = []
    per_call = {"a": iter([1.0, 1.0, 5.0, 5.0, 2.0, 2.0]), "b": iter([3.0] * 6)}

    def competitor(name):
        def run():
            calls.append(name)
            clock.tick(next(per_call[name]))
        return run

    seconds = bench.alternate({"a": competitor("a"), "b": competitor("b")}, repeats=3, number=2)
    assert calls == ["a", "a", "b", "b"] * 3
    assert seconds == {"a": 2.0, "b": 3.0}  # a: rounds of 1, 5 and 2 s a call


def test_table_lines_up_columns():
    text = bench.table(["net", "img/s"], [["lenet5", 1234.5], ["vgg16", 0.25]])
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1


def test_matmul_rate_is_the_products_flops_over_the_median_time(clock):
    clock.step = 0.25  # each reading of the clock: a step of the probe takes 0.25 s
    rate = roofline.matmul_rate(size=64, chain=2, repeats=3)
    assert rate == 2 * (2 * 64 ** 3) / 0.25  # two products of 64x64 matrices


def test_share_and_network_flops():
    assert roofline.share(1e9, 10.0, 30e9, training=True) == pytest.approx(1.0)
    assert roofline.share(1e9, 10.0, 30e9, training=False) == pytest.approx(1 / 3)
    # LeNet-5: 64 -conv5-> 60 -pool-> 30 -conv5-> 26 -pool-> 13, then 120, 84 and 3 units.
    multiply_adds = (60 * 60 * 25 * 6 + 26 * 26 * 25 * 6 * 16 + 13 * 13 * 16 * 120 + 120 * 84
                     + 84 * 3)
    assert roofline.network_flops("lenet5") == 2 * multiply_adds


def test_training_step_of_ours_trains_at_every_step_it_times(clock):
    trainer = train_speed.OursTrainer(tiny_net, batch_size=4, image_shape=(16, 16, 1))
    clock.step = 0.5
    try:
        seconds = train_speed.measure({"ours": trainer}, warmup=1, repeats=2, steps=3)
        steps = trainer.session.run(trainer.model.global_step)
    finally:
        trainer.close()
    assert seconds == {"ours": 0.5 / 3}  # one interval of the clock over the round's 3 steps
    assert steps == 1 + 2 * 3  # warm-up, then every step of every round ran the train op


def test_inference_of_session_and_saved_model(tmp_path):
    ours = inference.OursSession(tiny_net, image_shape=(16, 16, 1))
    try:
        x = inference.images(5, image_shape=(16, 16, 1))
        probabilities = ours.predict(x, batch_size=2)
        ours.export(tmp_path / "saved_model")
    finally:
        ours.close()
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()


def test_preprocess_stages_and_floor_on_a_tiny_cohort(tmp_path):
    root = tmp_path / "root"
    paths = preprocess.cohort(root, patients=1, size=synthetic.MIN_SIZE,
                              slices=synthetic.MIN_SLICES)
    pixel_bytes = 0
    for path in paths:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        pixel_bytes += header.Rows * header.Columns * header.BitsAllocated // 8
    assert len(paths) >= synthetic.MIN_SLICES
    assert preprocess.decode_floor(paths) == pixel_bytes
    seconds = preprocess.run_stages(root, tmp_path / "work", workers=1)
    assert set(seconds) == {*preprocess.STAGES, *(f"{s} {part}" for s in preprocess.STAGES
                                                  for part in ("pool", "busy"))}
    assert all(0 < seconds[f"{s} busy"] <= seconds[f"{s} pool"] < seconds[s]
               for s in preprocess.STAGES)
    assert (tmp_path / "work" / "patches" / "patches.npy").is_file()
    shared = preprocess.run_stages(root, tmp_path / "shared", workers=2, shared=True)
    assert shared.keys() == seconds.keys()
    assert (tmp_path / "shared" / "patches" / "patches.npy").is_file()


def test_preprocess_table_has_the_floor_each_stage_and_both_totals():
    way = {name: 2.0 for name in (*preprocess.STAGES, "total")}
    way.update({f"{name} pool": 1.0 for name in (*preprocess.STAGES, "total")})
    way.update({f"{name} busy": 0.8 for name in (*preprocess.STAGES, "total")})
    r = {"floor": 1.0, "floor on 2": 0.5, **{name: dict(way) for name, _, _ in preprocess.WAYS}}
    rows = preprocess.rows(r)
    assert [row[0].split(":")[0].split(" (")[0] for row in rows] == [
        "floor", *preprocess.STAGES, "total", "total in one process"]
    assert rows[0][3] == pytest.approx(2.0)
    assert rows[1][3:] == [pytest.approx(1.0), 1.0, pytest.approx(0.5), 0.0,
                           pytest.approx(4 / 3)]


def test_amdahl_ceiling():
    assert preprocess.ceiling(serial=0.0, pooled=1.0) == pytest.approx(2.0)
    assert preprocess.ceiling(serial=1.0, pooled=2.0) == pytest.approx(1.5)
    assert preprocess.ceiling(serial=1.0, pooled=0.0) == pytest.approx(1.0)


def test_by_size_row_gives_ratios_serial_share_and_ceiling():
    def way(total, pool):
        return {"total": total, "total pool": pool}
    r = {"floor": 1.0, "floor on 2": 0.5, "1 worker": way(2.0, 1.8),
         "2 workers": way(1.6, 0.0), "2 workers, one pool": way(1.0, 0.0)}
    row = preprocess.size_row(8, r)
    assert row[:3] == [8, 1.0, 2.0]
    assert row[3:6] == [pytest.approx(2.0), pytest.approx(1.25), pytest.approx(2.0)]
    assert row[6] == "10%"
    assert row[7] == pytest.approx(preprocess.ceiling(0.2, 1.8))
    assert row[8] == pytest.approx(2.0)


def test_preprocess_bench_prints_a_table_per_size_and_the_by_size_table(tmp_path, capsys):
    argv = ["--patients", "1", "2", "--size", str(synthetic.MIN_SIZE), "--slices",
            str(synthetic.MIN_SLICES), "--repeats", "1", "--cache", str(tmp_path)]
    assert preprocess.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("total in one process") == 2
    by_size = out.split("by cohort size")[1].splitlines()
    assert [line.split()[0] for line in by_size[3:5]] == ["1", "2"]


def _decode_slowly(paths):
    """Stands for bench.preprocess.decode_floor: a known time, whatever the machine."""
    time.sleep(0.3)
    return len(paths)


def test_floor_on_two_times_both_halves_at_once_after_a_warm_up(monkeypatch):
    monkeypatch.setattr(preprocess, "decode_floor", _decode_slowly)
    seconds = preprocess.floor_on_two(["a.dcm", "b.dcm", "c.dcm"])
    # One round of two 0.3 s halves side by side; 0.6 s if they ran one after the other or the
    # warm-up round were timed too.
    assert 0.3 <= seconds < 0.5


def test_scale_bench_measures_each_size_in_a_process_of_its_own(tmp_path, capsys):
    from bench import scale

    argv = ["--patients", "2", "1", "--size", str(synthetic.MIN_SIZE), "--slices",
            str(synthetic.MIN_SLICES), "--cache", str(tmp_path)]
    assert scale.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("patients"))
    table = [line.split() for line in lines[header + 2:header + 4]]
    assert [row[:2] for row in table] == [["1", "1"], ["2", "2"]]
    assert table[0][scale.COLUMNS.index("vs linear")] == "1"
    assert all(float(row[scale.COLUMNS.index("main MB")]) > 0 for row in table)


def test_scale_rows_compare_each_size_with_linear_growth():
    from bench import scale

    def measured(series, total):
        return {"series": series, "slices": 8 * series, "patches": 5 * series, "index": total,
                "annotations": 0.0, "crop": 0.0, "total": total, "main MB": 100.0,
                "worker MB": 50.0}
    rows = scale.rows([(10, measured(10, 2.0)), (40, measured(40, 10.0))])
    vs_linear = scale.COLUMNS.index("vs linear")
    assert rows[0][vs_linear] == pytest.approx(1.0)
    assert rows[1][vs_linear] == pytest.approx(1.25)
    assert rows[1][scale.COLUMNS.index("ms/series")] == pytest.approx(250.0)


def test_xml_speed_corpus_has_the_archive_make_up():
    groups = xml_speed.layout(xml_speed.generated_groups(), xml_speed.ARCHIVE_FILES)
    files = [name for group in groups for name, _ in group]
    points = sum(xml_speed._points(text) for group in groups for _, text in group)
    assert len(files) == xml_speed.ARCHIVE_FILES
    assert sum("IdriReadMessage" in group[0][1] for group in groups) == xml_speed.ARCHIVE_CXR
    assert sorted(len(g) for g in groups if len(g) > 1 and "correction" not in g[1][0]) == \
        sorted(xml_speed.COPIES)
    assert abs(points / xml_speed.ARCHIVE_POINTS - 1) < 0.02


def test_xml_speed_times_both_sides_and_divides_them(tmp_path, capsys):
    folder, description = xml_speed.corpus(tmp_path, 12, samples=tmp_path / "no-samples")
    assert "generated" in description and len(xml_speed.xml_paths(folder)) == 12
    r = xml_speed.measure(folder, repeats=1, scratch=tmp_path)
    assert all(s > 0 for side in ("bare", "ours", "careful") for s in r[side])
    assert r["ratio"] == (r["ours"][0] / r["bare"][0], r["ours"][1] / r["bare"][1])
    assert all(math.isfinite(x) and x > 0 for x in r["ratio"])
    argv = ["--files", "12", "--repeats", "1", "--no-careful", "--cache", str(tmp_path),
            "--samples", str(tmp_path / "no-samples")]
    assert xml_speed.main(argv) == 0
    out = capsys.readouterr().out
    assert "generated reads" in out and "annotations --xml / bare parse" in out
    assert "parsing the reads into marks" in out


def test_training_step_of_ours_in_bfloat16_trains_with_float32_weights():
    trainer = train_speed.OursTrainer(tiny_layers_net, batch_size=4, image_shape=(16, 16, 1),
                                      precision="bfloat16")
    try:
        before = trainer.session.run(trainer.model.variables)
        loss = [trainer.step()[1] for _ in range(2)][-1]
        after = trainer.session.run(trainer.model.variables)
        kinds = {op.type for op in trainer.graph.get_operations()
                 if op.outputs and op.outputs[0].dtype == "bfloat16"}
    finally:
        trainer.close()
    assert np.isfinite(loss) and {"MatMul", "Conv2D"} <= kinds
    assert all(a.dtype == np.float32 for a in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


def tiny_layers_net(images, num_classes, is_training):
    """A convolution with batch norm and a dense layer from nets.layers: what precision reaches."""
    from nets import layers

    net = layers.conv_bn_relu(images, 4, 3, is_training, stride=2, scope="conv1")
    return layers.dense(layers.global_avg_pool(net), num_classes, scope="logits"), {}


def test_keras_policy_is_set_for_the_block_and_set_back():
    import tensorflow as tf

    before = tf.keras.mixed_precision.global_policy().name
    with train_speed.keras_policy("bfloat16"):
        assert tf.keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert tf.keras.mixed_precision.global_policy().name == before


def test_row_gives_each_rate_its_ratio_and_a_dash_where_a_competitor_is_missing():
    seconds = {"ours": 0.5, "keras": 1.0, "torch": None, "limit": 100e9}
    cells, line = train_speed.row("resnet50", 16, seconds, flops=1e9)
    assert cells[:8] == ["resnet50", 16, 0.5, 32.0, 16.0, 2.0, "-", "-"]
    assert cells[8] == 100.0 and cells[9] == "96%"  # 32 img/s x 3 GFLOP of 100 GFLOP/s
    assert line == "  resnet50 batch 16: ours 32.0 img/s, keras 16.0 img/s, limit 100 GFLOP/s"


def test_torch_server_answers_each_request_with_the_seconds_of_its_steps(monkeypatch, clock):
    steps = []

    class FakeTrainer:
        def __init__(self, batch_size, precision):
            self.key = (precision, batch_size)

        def step(self):
            steps.append(self.key)
            clock.tick(0.25)

    monkeypatch.setattr(torch_speed, "TorchTrainer", FakeTrainer)
    monkeypatch.setattr(torch_speed, "time", bench.time)  # the fake clock
    out = io.StringIO()
    torch_speed.serve(["bfloat16 16 2\n", "bfloat16 16 1\n", "float32 64 1\n"], out)
    assert [float(x) for x in out.getvalue().split()] == [0.5, 0.25, 0.25]
    # Each trainer is built once and warmed up by one untimed step.
    assert steps == [("bfloat16", 16)] * 4 + [("float32", 64)] * 2


def test_torch_resnet50_has_our_parameter_count():
    pytest.importorskip("torch")
    model = torch_speed.resnet50()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 23_507_907
