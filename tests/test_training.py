"""Tests of the training loop, its batches and stop rule, the run folder, and tools.train.

Each test builds a tiny dataset of blobs (16x16) and trains the tiny network of
test_training_helpers for a few dozen steps, so the whole file runs in seconds.
"""
import json

import numpy as np
import pytest
import tensorflow as tf

from lidc.errors import LidcError
from tests.helpers import lock_held_elsewhere
from tests.test_training_helpers import blobs, tiny_net, train_config, write_dataset
from tools import train as train_tool
from training import runner
from training.loop import Hooks
from training import batches, model as model_lib, rules
from training.rundir import RunDir, locked

v1 = tf.compat.v1


class Interrupted(Exception):
    """Stands in for a kill between checkpoints."""


def run_until_killed(config, builder, step):
    """Trains `config` and stops it dead after `step`, as a kill between checkpoints would."""
    def kill(current):
        if current == step:
            raise Interrupted()

    with pytest.raises(Interrupted):
        runner.run_training(config, builder=builder,
                            hooks=Hooks(after_step=kill, log=lambda *a: None))


@pytest.fixture
def work(tmp_path):
    write_dataset(tmp_path / "work")
    return tmp_path


@pytest.fixture
def determinism():
    """Op determinism for one test, then back to the process's previous setting."""
    from tensorflow.python.framework import config

    was = config.is_op_determinism_enabled()
    yield
    if not was:
        config.disable_op_determinism()


def weights(run_dir):
    """Every variable of the latest checkpoint of a run, by name."""
    reader = tf.train.load_checkpoint(str(RunDir(run_dir).ckpt))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


# Batches ---------------------------------------------------------------------------------------

def test_batch_order_is_a_pure_function_of_seed_and_step():
    first = [batches.batch_indices(50, 8, seed=3, step=s) for s in range(20)]
    again = [batches.batch_indices(50, 8, seed=3, step=s) for s in reversed(range(20))][::-1]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    other_seed = batches.batch_indices(50, 8, seed=4, step=0)
    assert not np.array_equal(first[0], other_seed)


def test_each_epoch_visits_distinct_rows_and_epochs_differ():
    per_epoch = batches.steps_per_epoch(48, 8)
    epoch0 = np.concatenate([batches.batch_indices(48, 8, 0, s) for s in range(per_epoch)])
    epoch1 = np.concatenate([batches.batch_indices(48, 8, 0, s)
                             for s in range(per_epoch, 2 * per_epoch)])
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(48))
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(48))
    assert not np.array_equal(epoch0, epoch1)


def test_augment_is_seeded_and_keeps_each_image_up_to_a_symmetry():
    x, _ = blobs(6, size=8)
    a = batches.augment(x, seed=1, step=5)
    np.testing.assert_array_equal(a, batches.augment(x, seed=1, step=5))
    for original, augmented in zip(x, a):
        symmetries = [np.rot90(original, k, axes=(0, 1)) for k in range(4)]
        symmetries += [s[:, ::-1] for s in symmetries]
        assert any(np.array_equal(augmented, s) for s in symmetries)


def test_prefetcher_gives_the_batches_in_order_and_raises_the_producers_error():
    def make(step):
        if step == 3:
            raise RuntimeError("bad batch")
        return step * 10

    with batches.Prefetcher(make, start=1) as feed:
        assert [feed.get(1), feed.get(2)] == [10, 20]
        with pytest.raises(RuntimeError, match="bad batch"):
            feed.get(3)


# Stop rule and schedules -----------------------------------------------------------------------

@pytest.mark.parametrize("step, accuracy, losses, expected", [
    (5000, 0.99, [1.0], None),                # at min_steps, not past it
    (5100, 0.90, [1.0], None),                # at the threshold, not over it
    (5100, 0.91, [1.0], rules.THRESHOLD),
    (20000, 0.50, [1.0], rules.MAX_STEPS),
    (20000, 0.95, [1.0], rules.THRESHOLD),    # the threshold is the reason when both hold
    (300, 0.50, [0.5, 0.6, 0.7], rules.PATIENCE),
    (300, 0.50, [0.5, 0.6, 0.4], None),
])
def test_stop_rule(step, accuracy, losses, expected):
    rule = rules.StopRule(min_steps=5000, stop_accuracy=0.90, max_steps=20000, patience=2)
    assert rules.stop_reason(step, accuracy, losses, rule) == expected


def test_patience_zero_never_stops_and_ties_are_no_improvement():
    rule = rules.StopRule(5000, 0.9, 20000, patience=0)
    assert rules.stop_reason(300, 0.5, [0.5] + [0.9] * 50, rule) is None
    assert rules.evaluations_since_best([0.5, 0.5, 0.5]) == 2


def test_learning_rate_schedules():
    assert rules.learning_rate(700, 0.01, "constant", 1000) == 0.01
    assert rules.learning_rate(2000, 0.01, "exponential", 1000, 0.5, 1000) == pytest.approx(0.0025)
    assert rules.learning_rate(500, 0.01, "cosine", 1000) == pytest.approx(0.005)
    assert rules.learning_rate(1000, 0.01, "cosine", 1000) == pytest.approx(0.0)


# The graph -------------------------------------------------------------------------------------

def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    x, label = blobs(12)
    y = np.eye(3, dtype=np.float32)[label]
    with tf.Graph().as_default():
        model = model_lib.build(tiny_net, (16, 16, 1), 3, seed=0)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            feed = {model.images: x, model.labels: y, model.learning_rate: 0.01}
            before = session.run(model.loss, feed)
            session.run(model.train_op, {**feed, model.is_training: True})
            after = session.run(model.loss, feed)
            assert session.run(model.global_step) == 1
    assert after < before


def test_batch_norm_updates_run_with_the_train_op():
    x, label = blobs(6)
    with tf.Graph().as_default():
        model = model_lib.build(tiny_net, (16, 16, 1), 3, seed=0)
        moving = [v for v in v1.global_variables() if "moving_mean" in v.name][0]
        activations = v1.get_default_graph().get_tensor_by_name("tiny/conv1/Relu:0")
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            # tiny_net's average moves a tenth of the way to the batch's mean activation.
            expected = 0.1 * session.run(activations, {model.images: x}).mean(axis=(0, 1, 2))
            session.run(model.train_op, {model.images: x, model.labels: np.eye(3)[label],
                                         model.is_training: True})
            np.testing.assert_allclose(session.run(moving), expected, rtol=1e-5)
            assert expected.any()


def small_resnet(images, num_classes, is_training):
    from nets import resnet_v1
    return resnet_v1.resnet_v1(images, num_classes, is_training, [(8, 1, 1), (16, 1, 2)],
                               scope="small", stem_depth=4)


def test_the_export_folds_batch_norm_and_predicts_as_the_training_graph(tmp_path):
    x, label = blobs(24, seed=3)
    with tf.Graph().as_default():
        model = model_lib.build(small_resnet, (16, 16, 1), 3, seed=0)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            for _ in range(5):  # moves the batch norms' averages off their initial 0 and 1
                session.run(model.train_op, {model.images: x, model.labels: np.eye(3)[label],
                                             model.is_training: True})
            expected = session.run(model.probabilities, {model.images: x})
            model_lib.export(session, model, tmp_path / "saved_model")
    with model_lib.Predictor.from_saved_model(tmp_path / "saved_model") as predictor:
        names = {v.op.name for v in predictor.graph.get_collection("variables")}
        np.testing.assert_allclose(predictor.predict(x), expected, rtol=1e-4, atol=1e-5)
    assert "small/conv1/biases" in names and not [n for n in names if "/bn/" in n]


# The loop, through tools.train.run_training ---------------------------------------------------

def test_a_small_network_learns_the_blobs_and_the_run_folder_is_complete(work):
    config = train_config(work, max_steps=150, eval_every=50)
    metrics = runner.run_training(config, builder=tiny_net, hooks=Hooks(log=lambda *a: None))
    run = RunDir(work / "runs" / "tiny")
    assert metrics["finished"] and metrics["status"] == "stopped: max steps reached at step 150"
    assert [h["step"] for h in metrics["history"]] == [50, 100, 150]
    assert metrics["best"]["val_accuracy"] > 0.8  # chance is 1/3
    assert set(metrics["history"][0]) >= {"step", "train_loss", "val_loss", "val_accuracy",
                                          "lr", "images_per_second"}
    saved = json.loads(run.config.read_text())
    assert saved["batch_size"] == 8 and saved["max_steps"] == 150 and saved["train_rows"] == 60
    assert tf.train.latest_checkpoint(str(run.ckpt)).endswith("model-150")
    assert tf.train.latest_checkpoint(str(run.best)) is not None
    assert list(run.train_events.glob("events.out.tfevents.*"))
    assert list(run.val_events.glob("events.out.tfevents.*"))
    with model_lib.Predictor.from_saved_model(run.saved_model) as predictor:
        x, label = blobs(30, seed=7)
        assert (predictor.predict(x).argmax(1) == label).mean() > 0.8


def test_the_loop_stops_at_the_first_evaluation_past_min_steps_over_the_threshold(work):
    # Every evaluation is over a threshold of 0; the one at step 20 is not *past* min_steps.
    config = train_config(work, min_steps=20, stop_accuracy=0.0, max_steps=100, eval_every=10)
    metrics = runner.run_training(config, builder=tiny_net, hooks=Hooks(log=lambda *a: None))
    assert [h["step"] for h in metrics["history"]] == [10, 20, 30]
    assert metrics["stop_reason"] == rules.THRESHOLD
    assert metrics["status"] == "stopped: threshold reached at step 30"


def test_resume_continues_the_step_count_and_ends_with_the_uninterrupted_weights(
        tmp_path, determinism):
    options = dict(max_steps=30, eval_every=10, deterministic=True, augment=True)
    write_dataset(tmp_path / "a" / "work")
    write_dataset(tmp_path / "b" / "work")
    whole = runner.run_training(train_config(tmp_path / "a", **options), builder=tiny_net,
                                hooks=Hooks(log=lambda *a: None))
    config = train_config(tmp_path / "b", **options)
    run_until_killed(config, tiny_net, 25)
    run_b = RunDir(tmp_path / "b" / "runs" / "tiny")
    assert not run_b.finished()
    with pytest.raises(LidcError, match="unfinished run at step 20.*--resume"):
        runner.run_training(config, builder=tiny_net, hooks=Hooks(log=lambda *a: None))
    steps = []
    resumed = runner.run_training(config, resume=True, builder=tiny_net,
                                  hooks=Hooks(after_step=steps.append, log=lambda *a: None))
    assert steps[0] == 21 and resumed["step"] == 30  # continued from the checkpoint at 20
    assert [h["step"] for h in resumed["history"]] == [10, 20, 30]
    a, b = weights(tmp_path / "a" / "runs" / "tiny"), weights(run_b.root)
    assert a.keys() == b.keys() and any("Adam" in name for name in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert [h["val_loss"] for h in resumed["history"]] == [h["val_loss"]
                                                            for h in whole["history"]]


def test_a_finished_run_is_refused_without_resume_or_force_and_force_starts_over(work):
    config = train_config(work, max_steps=10, eval_every=10)
    runner.run_training(config, builder=tiny_net, hooks=Hooks(log=lambda *a: None))
    with pytest.raises(LidcError, match="finished run.*--resume.*--force"):
        runner.run_training(config, builder=tiny_net, hooks=Hooks(log=lambda *a: None))
    with pytest.raises(LidcError, match="cannot resume with other options.*--lr"):
        runner.run_training({**config, "lr": 0.5}, resume=True, builder=tiny_net)
    steps = []
    runner.run_training({**config, "max_steps": 20}, force=True, builder=tiny_net,
                        hooks=Hooks(after_step=steps.append, log=lambda *a: None))
    assert steps[0] == 1 and steps[-1] == 20


def test_the_lock_refuses_a_second_writer(work):
    config = train_config(work)
    run_dir = work / "runs" / "tiny"
    with locked(run_dir):
        with pytest.raises(LidcError, match="in use by pid"):
            runner.run_training(config, builder=tiny_net, hooks=Hooks(log=lambda *a: None))
    # Another process holding the lock is refused as well; its exit releases the lock.
    with lock_held_elsewhere("from training.rundir import locked",
                             f"locked({str(run_dir)!r})") as pid:
        with pytest.raises(LidcError, match=f"in use by pid {pid}"):
            with locked(run_dir):
                pass
    with locked(run_dir):
        pass


# The command line ------------------------------------------------------------------------------

@pytest.fixture
def graph_mode_is_not_global(monkeypatch):
    # The tools' main() turns eager execution off for the whole process; tests share one.
    monkeypatch.setattr(v1, "disable_eager_execution", lambda: None)


def test_train_main_refuses_a_missing_dataset_with_exit_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        from tools import cli
        cli.run(train_tool.main, ["--net", "lenet5", "--work", str(tmp_path / "none"),
                                  "--runs", str(tmp_path / "runs")])
    assert exit_.value.code == 1
    assert "run the dataset stage first" in capsys.readouterr().err


def test_train_main_needs_a_net(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        train_tool.main(["--work", str(tmp_path)])
    assert exit_.value.code == 2


def test_train_main_resume_keeps_the_saved_options(work, graph_mode_is_not_global,
                                                   monkeypatch, capsys):
    monkeypatch.setattr(runner, "resolve_net", lambda name: tiny_net)
    common = ["--work", str(work / "work"), "--runs", str(work / "runs"), "--name", "cli"]
    assert train_tool.main(["--net", "tiny", "--max-steps", "10", "--eval-every", "5",
                            "--batch-size", "4", "--stop-metric", "macro_f1", *common]) == 0
    out = capsys.readouterr().out
    assert "stopped: max steps reached at step 10" in out
    # The best checkpoint is the best by the stop metric, and the summary names that metric.
    best = json.loads((work / "runs" / "cli" / "metrics.json").read_text())["best"]
    assert f"best validation macro f1: {best['value']:.3f} at step {best['step']}" in out
    assert train_tool.main(["--resume", "--max-steps", "15", *common]) == 0
    saved = json.loads((work / "runs" / "cli" / "config.json").read_text())
    assert (saved["net"], saved["batch_size"], saved["eval_every"], saved["max_steps"]) == \
        ("tiny", 4, 5, 15)
    assert json.loads((work / "runs" / "cli" / "metrics.json").read_text())["step"] == 15


def test_resume_with_lenet5_ends_with_the_uninterrupted_weights(tmp_path, determinism):
    nets = pytest.importorskip("nets")
    options = dict(net="lenet5", max_steps=12, eval_every=4, deterministic=True, lr=0.001)
    for run in ("a", "b"):
        write_dataset(tmp_path / run / "work", sizes=(24, 6, 6), image=64)
    runner.run_training(train_config(tmp_path / "a", **options), builder=nets.get("lenet5"),
                        hooks=Hooks(log=lambda *a: None))
    config = train_config(tmp_path / "b", **options)
    run_until_killed(config, nets.get("lenet5"), 10)
    runner.run_training(config, resume=True, builder=nets.get("lenet5"),
                        hooks=Hooks(log=lambda *a: None))
    a, b = weights(tmp_path / "a" / "runs" / "tiny"), weights(tmp_path / "b" / "runs" / "tiny")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# Imbalance: class weights, the balanced sampler, the stop metric -------------------------------

def test_balanced_class_weights_make_every_class_add_the_same_to_the_loss():
    from training.loop import balanced_weights

    labels = np.array([0] * 60 + [1] * 10 + [2] * 30)
    weights = balanced_weights(labels, 3)
    np.testing.assert_allclose(weights, [100 / 180, 100 / 30, 100 / 90])
    totals = np.bincount(labels, minlength=3) * weights
    np.testing.assert_allclose(totals, totals[0])
    np.testing.assert_allclose(balanced_weights(np.array([0, 0, 2]), 3), [0.75, 1, 1.5])


def test_class_weights_scale_each_example_loss_by_its_class():
    with tf.Graph().as_default():
        model = model_lib.build(tiny_net, (16, 16, 1), 3, seed=0,
                                loss=model_lib.Loss(class_weights=(1.0, 4.0, 0.5)))
        plain = model_lib._losses(model.labels, model.logits)[0]
        x, labels = blobs(6)
        feed = {model.images: x, model.labels: np.eye(3, dtype=np.float32)[labels]}
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            weighted, unweighted = session.run([model.losses, plain], feed)
    np.testing.assert_allclose(weighted, unweighted * np.array([1.0, 4.0, 0.5])[labels],
                               rtol=1e-6)


def test_the_balanced_sampler_draws_classes_equally_and_is_a_function_of_seed_and_step():
    labels = np.array([0] * 90 + [1] * 4 + [2] * 6)
    plan = batches.plan_for(labels, batch_size=30, seed=2, sampler="balanced")
    drawn = np.concatenate([labels[batches.balanced_indices(plan.class_rows, 30, 2, s)]
                            for s in range(200)])
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(shares, 1 / 3, atol=0.02)
    np.testing.assert_array_equal(batches.balanced_indices(plan.class_rows, 30, 2, 7),
                                  batches.balanced_indices(plan.class_rows, 30, 2, 7))
    assert batches.plan_for(labels, 30, 2).class_rows is None  # uniform: epochs of shuffles


def test_the_stop_metric_decides_the_threshold_and_the_best_checkpoint(work):
    config = train_config(work, stop_metric="balanced_accuracy", stop_accuracy=0.5,
                          min_steps=5, max_steps=60, eval_every=10, class_weights="balanced",
                          sampler="balanced")
    metrics = runner.run_training(config, builder=tiny_net, hooks=Hooks(log=lambda *a: None))
    history = metrics["history"]
    assert all("val_balanced_accuracy" in h and "val_macro_auc" in h for h in history)
    best = max(history, key=lambda h: (h["val_balanced_accuracy"], -h["step"]))
    assert metrics["best"]["step"] == best["step"]
    assert metrics["best"]["metric"] == "balanced_accuracy"
    if metrics["stop_reason"] == rules.THRESHOLD:
        assert history[-1]["val_balanced_accuracy"] > 0.5 and history[-1]["step"] > 5
    else:
        assert all(h["val_balanced_accuracy"] <= 0.5 for h in history if h["step"] > 5)
