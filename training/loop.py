"""The session loop: train a builder on a dataset, evaluate, checkpoint, summarise, export.

One call trains one run folder to its end. The loop continues whatever the folder holds: with no
checkpoint it starts at step 0, otherwise it restores the latest checkpoint (weights, Adam's
moments, batch-norm averages and the global step) and goes on from there. The batch of each
step, its augmentation and its learning rate are functions of (seed, step), and the stop rule a
function of the recorded history, so a resumed run takes the same steps as an uninterrupted one;
with op determinism on the CPU it ends with the same weights.

At every evaluation (each `eval_every` steps and at `max_steps`) the loop, in this order, appends
to the history in metrics.json, saves the best checkpoint if validation accuracy improved, then
saves the latest checkpoint. A run killed in between resumes from the previous checkpoint and
drops the history recorded after it. The status becomes final only after the export.

Usage:
  result = loop.train(nets.get("lenet5"), train_set, val_set, "runs/demo", config)
"""
import math
import time

import numpy as np
import tensorflow as tf

from lidc.io import write_json
from training import batches, model as model_lib, rules
from training.rundir import RunDir

v1 = tf.compat.v1

# Options of a run that the loop reads; tools/train.py owns their command-line form and defaults.
DEFAULTS = {
    "batch_size": 16,
    "lr": 0.001,
    "lr_schedule": "constant",
    "lr_decay": 0.96,
    "lr_decay_steps": 1000,
    "min_steps": 5000,
    "stop_accuracy": 0.90,
    "max_steps": 20000,
    "eval_every": 100,
    "patience": 0,
    "augment": False,
    "seed": 0,
    "keep_checkpoints": 2,
}


class _NullBar:
    """Stands in for a progress bar when none is wanted."""
    n = 0

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def refresh(self):
        pass

    def close(self):
        pass


def train(builder, train_set, val_set, run_dir, config, progress=None, after_step=None,
          device=None):
    """Trains `builder` until the stop rule says so; writes everything into `run_dir`.

    Args:
      builder: network function `(images, num_classes, is_training) -> (logits, end_points)`.
      train_set, val_set: training.data.Split (x, y).
      run_dir: the run folder (the caller holds its lock and wrote config.json).
      config: dict of options; missing keys take `DEFAULTS`.
      progress: optional factory with tools.cli.progress's signature, for a progress bar.
      after_step: optional function called with the global step after every training step
        (tests interrupt a run through it).
      device: the device description recorded in metrics.json.
    Returns:
      the final metrics.json content (dict).
    """
    config = {**DEFAULTS, **config}
    run_dir = RunDir(run_dir)
    graph = tf.Graph()
    with graph.as_default():
        model = model_lib.build(builder, train_set.x.shape[1:], train_set.y.shape[1],
                                seed=config["seed"])
        latest_saver = v1.train.Saver(max_to_keep=config["keep_checkpoints"])
        best_saver = v1.train.Saver(model.variables, max_to_keep=1)
        with v1.Session(graph=graph, config=model_lib.session_config()) as session:
            state = _start(session, model, latest_saver, run_dir, config, device)
            return _run(session, model, latest_saver, best_saver, run_dir, config, state,
                        train_set, val_set, progress, after_step)


class _State:
    """What the loop carries between evaluations; rebuilt from metrics.json on resume."""

    def __init__(self, step, history, device, fresh):
        self.step = step
        self.history = history
        self.device = device
        self.fresh = fresh

    @property
    def seconds(self):
        return self.history[-1]["seconds"] if self.history else 0.0

    @property
    def best(self):
        # The earliest evaluation with the highest accuracy: the one the best checkpoint holds.
        if not self.history:
            return None
        return max(self.history, key=lambda h: (h["val_accuracy"], -h["step"]))


def _start(session, model, saver, run_dir, config, device):
    """Initialises the variables or restores the latest checkpoint; returns the loop state."""
    latest = tf.train.latest_checkpoint(str(run_dir.ckpt))
    if latest is None:
        session.run(v1.global_variables_initializer())
        return _State(0, [], device, fresh=True)
    saver.restore(session, latest)
    step = int(session.run(model.global_step))
    history = run_dir.read_metrics().get("history", []) if run_dir.metrics.is_file() else []
    # Evaluations recorded after the checkpoint are redone, exactly as they were first done.
    history = [h for h in history if h["step"] <= step]
    return _State(step, history, device, fresh=False)


def _run(session, model, latest_saver, best_saver, run_dir, config, state, train_set, val_set,
         progress, after_step):
    train_writer = v1.summary.FileWriter(str(run_dir.train_events),
                                         graph=session.graph if state.fresh else None)
    val_writer = v1.summary.FileWriter(str(run_dir.val_events))
    if not state.fresh:
        # Tells TensorBoard to drop events written after this step by the interrupted run.
        for writer in (train_writer, val_writer):
            writer.add_session_log(v1.SessionLog(status=v1.SessionLog.START), state.step)
    bar = (progress or (lambda **kw: _NullBar()))(total=config["max_steps"],
                                                  desc=run_dir.root.name, unit="step")
    bar.n = state.step
    bar.refresh()
    try:
        reason = _last_reason(state, config)
        if reason is None:
            reason = _train_until_stop(session, model, latest_saver, best_saver, run_dir, config,
                                       state, train_set, val_set, bar, after_step,
                                       (train_writer, val_writer))
    finally:
        bar.close()
        train_writer.close()
        val_writer.close()
    return _finish(session, model, best_saver, run_dir, config, state, reason)


def _last_reason(state, config):
    """The stop reason of the last recorded evaluation, when it is at the restored step."""
    if not state.history or state.history[-1]["step"] != state.step:
        return None
    last = state.history[-1]
    return _stop_reason(last, state.history, config)


def _stop_reason(evaluation, history, config):
    return rules.stop_reason(evaluation["step"], evaluation["val_accuracy"],
                             [h["val_loss"] for h in history], config["min_steps"],
                             config["stop_accuracy"], config["max_steps"], config["patience"])


def _learning_rate(step, config):
    return rules.learning_rate(step, config["lr"], config["lr_schedule"], config["max_steps"],
                               config["lr_decay"], config["lr_decay_steps"])


def _train_until_stop(session, model, latest_saver, best_saver, run_dir, config, state,
                      train_set, val_set, bar, after_step, writers):
    batch_size = config["batch_size"]

    def make(step):
        return batches.make_batch(train_set.x, train_set.y, step, batch_size, config["seed"],
                                  config["augment"])

    with batches.Prefetcher(make, start=state.step) as feed:
        while True:
            target = min((state.step // config["eval_every"] + 1) * config["eval_every"],
                         config["max_steps"])
            interval = _train_steps(session, model, feed, state, target, config, bar, after_step)
            evaluation = _evaluate(session, model, val_set, state, config, interval,
                                   len(train_set.x))
            state.history.append(evaluation)
            reason = _stop_reason(evaluation, state.history, config)
            _write_metrics(run_dir, config, state, status="running")
            _write_summaries(writers, evaluation)
            if state.best is evaluation:
                best_saver.save(session, str(run_dir.best / "model"), global_step=state.step)
            latest_saver.save(session, str(run_dir.ckpt / "model"), global_step=state.step)
            if reason is not None:
                return reason


def _train_steps(session, model, feed, state, target, config, bar, after_step):
    """Runs training steps until the global step is `target`; returns the interval's figures."""
    losses, accuracies, images = [], [], 0
    started = time.perf_counter()
    while state.step < target:
        x, y = feed.get(state.step)
        lr = _learning_rate(state.step, config)
        # The global step is not fetched here: read in the same run as the train op, it may
        # come before or after the increment. The train op adds exactly one.
        _, loss, accuracy = session.run(
            [model.train_op, model.loss, model.accuracy],
            {model.images: x, model.labels: y, model.is_training: True,
             model.learning_rate: lr})
        state.step += 1
        losses.append(float(loss))
        accuracies.append(float(accuracy))
        images += len(x)
        rate = images / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}", img_s=f"{rate:.0f}",
                        refresh=False)
        bar.update()
        if after_step is not None:
            after_step(state.step)
    seconds = time.perf_counter() - started
    return {"train_loss": _mean(losses), "train_accuracy": _mean(accuracies),
            "images_per_second": images / seconds if seconds > 0 else None,
            "seconds": seconds, "lr": _learning_rate(max(state.step - 1, 0), config)}


def _mean(values):
    return float(np.mean(values)) if values else None


def _evaluate(session, model, val_set, state, config, interval, train_rows):
    """The evaluation record of the history: the interval's training figures and validation."""
    losses, correct = model_lib.run_in_batches(
        session, [model.losses, model.correct], {model.images: val_set.x, model.labels: val_set.y})
    return {
        "step": state.step,
        "epoch": round(state.step / batches.steps_per_epoch(train_rows, config["batch_size"]), 3),
        "train_loss": interval["train_loss"],
        "train_accuracy": interval["train_accuracy"],
        "val_loss": float(losses.mean()),
        "val_accuracy": float(correct.mean()),
        "lr": interval["lr"],
        "images_per_second": interval["images_per_second"],
        "seconds": state.seconds + interval["seconds"],
    }


def _write_summaries(writers, evaluation):
    train_writer, val_writer = writers
    step = evaluation["step"]
    _scalars(train_writer, step, loss=evaluation["train_loss"],
             accuracy=evaluation["train_accuracy"], learning_rate=evaluation["lr"],
             images_per_second=evaluation["images_per_second"])
    _scalars(val_writer, step, loss=evaluation["val_loss"], accuracy=evaluation["val_accuracy"])
    for writer in writers:
        writer.flush()


def _scalars(writer, step, **values):
    # Summary protos written from Python: no summary ops in the graph, and the train curve shows
    # the mean over the interval rather than one noisy batch.
    summary = v1.Summary(value=[v1.Summary.Value(tag=tag, simple_value=value)
                                for tag, value in values.items()
                                if value is not None and math.isfinite(value)])
    writer.add_summary(summary, step)


def _write_metrics(run_dir, config, state, status, reason=None):
    best = state.best
    write_json(run_dir.metrics, {
        "net": config.get("net"),
        "status": status,
        "finished": reason is not None,
        "stop_reason": reason,
        "step": state.step,
        "best": None if best is None else {k: best[k] for k in ("step", "val_accuracy",
                                                                "val_loss")},
        "train_seconds": state.seconds,
        "device": state.device,
        "history": state.history,
    })


def _finish(session, model, best_saver, run_dir, config, state, reason):
    """Exports the best checkpoint's weights as the saved model, then marks the run finished."""
    best = tf.train.latest_checkpoint(str(run_dir.best))
    if best is not None:
        best_saver.restore(session, best)
    model_lib.export(session, model, run_dir.saved_model)
    _write_metrics(run_dir, config, state, status=rules.status(reason, state.step), reason=reason)
    return run_dir.read_metrics()
