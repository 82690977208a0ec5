"""Smoke tests of the benchmarks: each core function runs an iteration or two on a tiny network or
cohort and returns figures of the right form. Never asserts on timing."""
import math

import numpy as np
import pytest

import bench
from bench import inference, preprocess, roofline, train_speed, xml_speed
from lidc import synthetic
from tests.test_training_helpers import tiny_net


def test_alternate_times_every_competitor():
    calls = []
    seconds = bench.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              repeats=2, number=2)
    assert calls == ["a", "a", "b", "b"] * 2
    assert set(seconds) == {"a", "b"} and all(s >= 0 for s in seconds.values())


def test_table_lines_up_columns():
    text = bench.table(["net", "img/s"], [["lenet5", 1234.5], ["vgg16", 0.25]])
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1


def test_matmul_rate_and_share():
    rate = roofline.matmul_rate(size=64, chain=2, repeats=1)
    assert rate > 0
    assert roofline.share(1e9, 10.0, 30e9, training=True) == pytest.approx(1.0)
    assert roofline.network_flops("lenet5") > 0


def test_training_step_of_ours_runs():
    trainer = train_speed.OursTrainer(tiny_net, batch_size=4, image_shape=(16, 16, 1))
    try:
        seconds = train_speed.measure({"ours": trainer}, warmup=1, repeats=1, steps=1)
    finally:
        trainer.close()
    assert seconds["ours"] > 0


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
    assert paths and preprocess.decode_floor(paths) > 0
    seconds = preprocess.run_stages(root, tmp_path / "work", workers=1)
    assert set(seconds) == {*preprocess.STAGES, *(f"{s} {part}" for s in preprocess.STAGES
                                                  for part in ("pool", "busy"))}
    assert all(0 < seconds[f"{s} busy"] <= seconds[f"{s} pool"] < seconds[s]
               for s in preprocess.STAGES)
    assert (tmp_path / "work" / "patches" / "patches.npy").is_file()
    shared = preprocess.run_stages(root, tmp_path / "shared", workers=2, shared=True)
    assert shared.keys() == seconds.keys()
    assert (tmp_path / "shared" / "patches" / "patches.npy").is_file()
    assert preprocess.floor_on_two(paths) > 0


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
