"""The session loop: train a builder on a dataset, evaluate, checkpoint, summarise, export.

One Trainer trains one run folder to its end. It continues whatever the folder holds: with no
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
  result = loop.train(nets.get("lenet5"), Datasets(train_set, val_set), "runs/demo", config)
"""
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tensorflow as tf

from lidc.errors import LidcError
from lidc.io import write_json
from training import batches, keras_weights, metrics, model as model_lib, rules
from training.options import DEFAULTS, KEEP_CHECKPOINTS
from training.rundir import RunDir

v1 = tf.compat.v1


@dataclass(frozen=True)
class Datasets:
    """The training and validation splits (training.data.Split) of a run."""
    train: object
    val: object


@dataclass(frozen=True)
class Hooks:
    """What the caller sees of a run while it trains.

    progress: a factory with lidc.workers.progress's signature, for a progress bar; None: none.
    after_step: called with the global step after every training step (tests interrupt a run
      through it).
    log: where one-line messages go.
    """
    progress: Callable = None
    after_step: Callable = None
    log: Callable = print


class _NullBar:
    """Stands in for a progress bar when none is wanted."""
    n = 0

    def update(self, n=1):
        """Does nothing."""

    def set_postfix(self, *args, **kwargs):
        """Does nothing."""

    def refresh(self):
        """Does nothing."""

    def close(self):
        """Does nothing."""


@dataclass
class _State:
    """What the loop carries between evaluations; rebuilt from metrics.json on resume."""
    step: int
    history: list
    fresh: bool
    metric: str = "accuracy"

    @property
    def seconds(self):
        """Training seconds up to the last evaluation."""
        return self.history[-1]["seconds"] if self.history else 0.0

    @property
    def best(self):
        """The earliest evaluation with the highest stop metric: the one the best checkpoint
        holds (None before the first)."""
        if not self.history:
            return None
        return max(self.history, key=lambda h: (stop_value(h, self.metric), -h["step"]))


def stop_value(evaluation, metric):
    """The evaluation's validation figure `metric`; -inf where it is undefined (an AUC without
    both classes, or a history written before the figure was recorded)."""
    value = evaluation.get(f"val_{metric}")
    return -math.inf if value is None else value


def balanced_weights(labels, num_classes):
    """N / (K n_c) for each class c present among the training labels (1 for a class absent),
    so that every class adds as much to the loss as the others."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


@dataclass
class _Writers:
    """The TensorBoard event writers of the training and the validation curves."""
    train: object
    val: object

    def close(self):
        """Closes both writers."""
        self.train.close()
        self.val.close()


def train(builder, datasets, run_dir, config, hooks=Hooks(), device=None):
    """Trains `builder` until the stop rule says so; writes everything into `run_dir`.

    Args:
      builder: network function `(images, num_classes, is_training) -> (logits, end_points)`.
      datasets: the run's Datasets.
      run_dir: the run folder (the caller holds its lock and wrote config.json).
      config: dict of options (training.options); missing keys take their defaults.
      hooks: progress bar, per-step callback and log.
      device: the device description recorded in metrics.json.
    Returns:
      the final metrics.json content (dict).
    """
    config = {**DEFAULTS, **config}
    num_classes = datasets.train.y.shape[1]
    weights = (balanced_weights(datasets.train.label, num_classes)
               if config["class_weights"] == "balanced" else None)
    graph = tf.Graph()
    with graph.as_default():
        loss = model_lib.Loss(None if weights is None else tuple(weights), config["weight_decay"])
        model = model_lib.build(builder, datasets.train.x.shape[1:], num_classes,
                                seed=config["seed"], loss=loss, precision=config["precision"])
        with v1.Session(graph=graph, config=model_lib.session_config()) as session:
            trainer = Trainer(session, model, RunDir(run_dir), config, hooks)
            return trainer.run(datasets, device)


class Trainer:
    """One run being trained: its session and model, its savers, folder and options, and what
    it has done so far. Made by `train`, which holds the graph and the session."""

    def __init__(self, session, model, run_dir, config, hooks):
        self.session, self.model, self.run_dir = session, model, run_dir
        self.config, self.hooks = config, hooks
        self.latest_saver = v1.train.Saver(max_to_keep=KEEP_CHECKPOINTS)
        self.best_saver = v1.train.Saver(model.variables, max_to_keep=1)
        self.state = None
        self.device = None

    def run(self, datasets, device):
        """Trains from the latest checkpoint (or from scratch) to the stop rule, exports the
        best weights; returns the final metrics.json content."""
        self.device = device
        self.state = self._start()
        reason = self._last_reason()
        if reason is not None and self.run_dir.finished() and self.run_dir.saved_model.is_dir():
            metrics = self.run_dir.read_metrics()
            self.hooks.log(f"{self.run_dir.root}: finished earlier ({metrics['status']}); "
                           "nothing more to train")
            return metrics
        if reason is None:
            writers = self._open_writers()
            bar = self._bar()
            try:
                reason = self._train_until_stop(datasets, bar, writers)
            finally:
                bar.close()
                writers.close()
        return self._finish(reason)

    def _start(self):
        """Initialises the variables (to the Keras weights of --init-from where given) or
        restores the latest checkpoint; returns the state."""
        latest = tf.train.latest_checkpoint(str(self.run_dir.ckpt))
        metric = self.config["stop_metric"]
        if latest is None:
            self.session.run(v1.global_variables_initializer())
            if self.config.get("init_from"):
                # A fresh run only: a resumed one restores what training made of these weights.
                path = self.config["init_from"]
                imported = keras_weights.import_weights(path, self.model.variables)
                keras_weights.assign(self.session, self.model.variables, imported.values)
                for line in imported.report(path):
                    self.hooks.log(line)
            return _State(0, [], fresh=True, metric=metric)
        self.latest_saver.restore(self.session, latest)
        step = int(self.session.run(self.model.global_step))
        history = (self.run_dir.read_metrics().get("history", [])
                   if self.run_dir.metrics.is_file() else [])
        # Evaluations recorded after the checkpoint are redone, exactly as they were first done.
        return _State(step, [h for h in history if h["step"] <= step], fresh=False,
                      metric=metric)

    def _open_writers(self):
        writers = _Writers(
            v1.summary.FileWriter(str(self.run_dir.train_events),
                                  graph=self.session.graph if self.state.fresh else None),
            v1.summary.FileWriter(str(self.run_dir.val_events)))
        if not self.state.fresh:
            # Tells TensorBoard to drop events written after this step by the interrupted run.
            for writer in (writers.train, writers.val):
                writer.add_session_log(v1.SessionLog(status=v1.SessionLog.START),
                                       self.state.step)
        return writers

    def _bar(self):
        factory = self.hooks.progress or (lambda **kw: _NullBar())
        bar = factory(total=self.config["max_steps"], desc=self.run_dir.root.name, unit="step")
        bar.n = self.state.step
        bar.refresh()
        return bar

    def _last_reason(self):
        """The stop reason of the last recorded evaluation, when it is at the restored step."""
        history = self.state.history
        if not history or history[-1]["step"] != self.state.step:
            return None
        return self._stop_reason(history[-1])

    def _stop_reason(self, evaluation):
        c, metric = self.config, self.state.metric
        # Patience watches the validation loss with the paper's accuracy rule, else the stop
        # metric itself (negated: the rule counts evaluations without a lower value).
        watched = [h["val_loss"] if metric == "accuracy" else -stop_value(h, metric)
                   for h in self.state.history]
        return rules.stop_reason(evaluation["step"], stop_value(evaluation, metric), watched,
                                 rules.StopRule(c["min_steps"], c["stop_accuracy"],
                                                c["max_steps"], c["patience"]))

    def _learning_rate(self, step):
        c = self.config
        return rules.learning_rate(step, c["lr"], c["lr_schedule"], c["max_steps"],
                                   c["lr_decay"], c["lr_decay_steps"])

    def _train_until_stop(self, datasets, bar, writers):
        config, state = self.config, self.state

        plan = batches.plan_for(datasets.train.label, config["batch_size"], config["seed"],
                                config["augment"], config["sampler"])

        def make(step):
            return batches.make_batch(datasets.train.x, datasets.train.y, step, plan)

        with batches.Prefetcher(make, start=state.step) as feed:
            while True:
                target = min((state.step // config["eval_every"] + 1) * config["eval_every"],
                             config["max_steps"])
                interval = self._train_steps(feed, target, bar)
                evaluation = self._evaluate(datasets, interval)
                state.history.append(evaluation)
                reason = self._stop_reason(evaluation)
                self._write_metrics(status="running")
                _write_summaries(writers, evaluation)
                self._checkpoint(evaluation)
                if reason is not None:
                    return reason

    def _checkpoint(self, evaluation):
        root = self.run_dir
        if self.state.best is evaluation:
            self.best_saver.save(self.session, str(root.best / "model"),
                                 global_step=self.state.step)
        self.latest_saver.save(self.session, str(root.ckpt / "model"),
                               global_step=self.state.step)

    def _train_steps(self, feed, target, bar):
        """Runs training steps until the global step is `target`; returns the interval's
        figures."""
        model, state = self.model, self.state
        losses, accuracies, images = [], [], 0
        started = time.perf_counter()
        while state.step < target:
            x, y = feed.get(state.step)
            # The global step is not fetched here: read in the same run as the train op, it may
            # come before or after the increment. The train op adds exactly one.
            _, loss, accuracy = self.session.run(
                [model.train_op, model.loss, model.accuracy],
                {model.images: x, model.labels: y, model.is_training: True,
                 model.learning_rate: self._learning_rate(state.step)})
            state.step += 1
            if not math.isfinite(loss):
                self._diverged(f"the training loss became {loss} at step {state.step}")
            losses.append(float(loss))
            accuracies.append(float(accuracy))
            images += len(x)
            rate = images / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}", img_s=f"{rate:.0f}",
                            refresh=False)
            bar.update()
            if self.hooks.after_step is not None:
                self.hooks.after_step(state.step)
        seconds = time.perf_counter() - started
        return {"train_loss": _mean(losses), "train_accuracy": _mean(accuracies),
                "images_per_second": images / seconds if seconds > 0 else None,
                "seconds": seconds, "lr": self._learning_rate(max(state.step - 1, 0))}

    def _evaluate(self, datasets, interval):
        """The evaluation record of the history: the interval's training figures and the
        validation loss and accuracy."""
        model, val = self.model, datasets.val
        losses, correct, probabilities = model_lib.run_in_batches(
            self.session, [model.losses, model.correct, model.probabilities],
            {model.images: val.x, model.labels: val.y})
        if not np.isfinite(losses).all():
            self._diverged(f"the validation loss is not finite at step {self.state.step}")
        figures = metrics.headline(val.label, probabilities)
        per_epoch = batches.steps_per_epoch(len(datasets.train.x), self.config["batch_size"])
        return {
            "step": self.state.step,
            "epoch": round(self.state.step / per_epoch, 3),
            "train_loss": interval["train_loss"],
            "train_accuracy": interval["train_accuracy"],
            "val_loss": float(losses.mean()),
            "val_accuracy": float(correct.mean()),
            **{f"val_{name}": figures[name]
               for name in ("balanced_accuracy", "macro_f1", "macro_auc")},
            "lr": interval["lr"],
            "images_per_second": interval["images_per_second"],
            "seconds": self.state.seconds + interval["seconds"],
            **self._loss_scale_figures(),
        }

    def _loss_scale_figures(self):
        """float16's loss scale and the steps it has skipped so far (their gradients were not
        finite); nothing in the other precisions."""
        loss_scale = self.model.loss_scale
        if loss_scale is None:
            return {}
        scale, skipped = self.session.run([loss_scale.scale, loss_scale.skipped])
        return {"loss_scale": float(scale), "skipped_steps": int(skipped)}

    def _diverged(self, what):
        """Stops a run whose numbers stopped being finite: records it, keeps the last good
        checkpoint, and raises a LidcError saying what to do."""
        self._write_metrics(status=f"failed: {what}")
        last = self.state.history[-1]["step"] if self.state.history else None
        kept = f"the checkpoint of step {last} is kept" if last else "no checkpoint was saved"
        raise LidcError(self.run_dir.root, f"{what}; {kept}. Lower --lr (or check the "
                                           "dataset) and start over with --force")

    def _write_metrics(self, status, reason=None):
        state = self.state
        best = state.best
        write_json(self.run_dir.metrics, {
            "net": self.config.get("net"),
            "status": status,
            "finished": reason is not None,
            "stop_reason": reason,
            "step": state.step,
            "best": None if best is None else {
                "step": best["step"], "val_accuracy": best["val_accuracy"],
                "val_loss": best["val_loss"], "metric": state.metric,
                "value": best.get(f"val_{state.metric}")},
            "train_seconds": state.seconds,
            "device": self.device,
            "history": state.history,
        })

    def _finish(self, reason):
        """Exports the best checkpoint's weights as the saved model, then marks the run
        finished."""
        best = tf.train.latest_checkpoint(str(self.run_dir.best))
        if best is not None:
            self.best_saver.restore(self.session, best)
        model_lib.export(self.session, self.model, self.run_dir.saved_model)
        self._write_metrics(status=rules.status(reason, self.state.step), reason=reason)
        return self.run_dir.read_metrics()


def _mean(values):
    return float(np.mean(values)) if values else None


def _write_summaries(writers, evaluation):
    step = evaluation["step"]
    _scalars(writers.train, step, loss=evaluation["train_loss"],
             accuracy=evaluation["train_accuracy"], learning_rate=evaluation["lr"],
             images_per_second=evaluation["images_per_second"])
    _scalars(writers.val, step, loss=evaluation["val_loss"],
             accuracy=evaluation["val_accuracy"])
    writers.train.flush()
    writers.val.flush()


def _scalars(writer, step, **values):
    # Summary protos written from Python: no summary ops in the graph, and the train curve shows
    # the mean over the interval rather than one noisy batch.
    summary = v1.Summary(value=[v1.Summary.Value(tag=tag, simple_value=value)
                                for tag, value in values.items()
                                if value is not None and math.isfinite(value)])
    writer.add_summary(summary, step)
