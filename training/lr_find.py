"""The learning-rate range test: which learning rate to train a network with.

Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, arXiv:1506.01186
(section 3.3), as fastai's `lr_find` runs it: train from the initial weights for a few hundred
steps while the learning rate grows exponentially from `start` to `end`, record each step's
training loss, smooth it (an exponential moving average with bias correction, beta 0.98), and
stop early once the smoothed loss passes 4x its minimum (the rate has become too large: the
loss diverges). The loss falls fastest a little below the rate where training starts to go
wrong; the suggestion is the rate of that steepest descent (the most negative slope of the
smoothed loss against log rate, between the first steps and the minimum), which is always below
the minimum and so below the divergence. The minimum's rate / 10, the other usual rule, is
reported beside it.

    result = sweep(nets.get("lenet5"), train_split, SweepOptions(steps=100))
    plot(result, Path("lr_find.png"), "LeNet-5")
    result = find("lenet5", Path("data/work"), SweepOptions(), Path("lr_find.png"))

The batches are training's own (training.batches, uniform sampler, seeded), Adam as training's.
"""
import math
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted on a server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lidc.io import write_json  # noqa: E402
from training import batches, data, model as model_lib, runner  # noqa: E402
from training.explain import save_figure  # noqa: E402

v1 = tf.compat.v1

# fastai's: the smoothing of the loss, and how far past its minimum the smoothed loss may go.
SMOOTHING = 0.98
DIVERGENCE = 4.0


@dataclass(frozen=True)
class SweepOptions:
    """The sweep: rates from `start` to `end` (exponentially) over `steps` steps of `batch_size`
    patches, `seed` fixing the initial weights and the batches."""
    start: float = 1e-7
    end: float = 1.0
    steps: int = 200
    batch_size: int = 16
    seed: int = 0


@dataclass
class Sweep:
    """What a sweep saw: each step's rate, loss and smoothed loss; why it stopped; the suggested
    rate (steepest descent) and the minimum's rate / 10."""
    rates: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    stopped: str = "reached the end rate"
    suggestion: float = None
    minimum_tenth: float = None

    def as_json(self):
        """The sweep as a JSON-ready dict."""
        return {"rates": self.rates, "losses": self.losses, "smoothed": self.smoothed,
                "stopped": self.stopped, "suggestion": self.suggestion,
                "minimum_tenth": self.minimum_tenth,
                "rule": "suggestion: the steepest descent of the smoothed loss against log "
                        "rate, before its minimum; minimum_tenth: the minimum's rate / 10"}


def rate(step, options):
    """The learning rate of step `step`: start at step 0, end at step steps - 1, exponentially
    in between."""
    if options.steps < 2:
        return options.start
    return options.start * (options.end / options.start) ** (step / (options.steps - 1))


def smooth(losses, beta=SMOOTHING):
    """The exponential moving average of `losses`, bias-corrected (fastai's): the first value is
    the first loss, not beta times 0."""
    average, out = 0.0, []
    for k, loss in enumerate(losses, 1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** k))
    return out


def suggest(rates, smoothed, skip=None):
    """(steepest, minimum / 10): the rate where the smoothed loss falls fastest against log rate,
    among the steps from `skip` (default: a tenth of them, at most 10, whose average is still
    settling) to the minimum; and the minimum's rate / 10, not below the first rate.

    Returns:
      two rates of `rates` order of magnitude (the steepest falls back to minimum / 10 when fewer
      than 3 steps lead to the minimum).
    """
    rates = np.asarray(rates, np.float64)
    smoothed = np.asarray(smoothed, np.float64)
    lowest = int(np.argmin(smoothed))
    tenth = max(float(rates[lowest]) / 10, float(rates[0]))
    skip = min(10, len(rates) // 10) if skip is None else skip
    if lowest - skip < 2:
        return tenth, tenth
    window = slice(skip, lowest + 1)
    slopes = np.gradient(smoothed[window], np.log(rates[window]))
    return float(rates[window][int(np.argmin(slopes))]), tenth


def sweep(builder, train, options=SweepOptions(), log=print):
    """Runs the range test on a fresh graph of `builder`.

    Args:
      builder: a network function `(images, num_classes, is_training) -> (logits, end_points)`.
      train: the training Split (training.data).
      options: SweepOptions.
      log: where a line per tenth of the sweep goes.
    Returns:
      a Sweep.
    """
    result = Sweep()
    plan = batches.plan_for(train.label, options.batch_size, options.seed)
    with tf.Graph().as_default() as graph:
        model = model_lib.build(builder, train.x.shape[1:], train.y.shape[1], seed=options.seed)
        with v1.Session(graph=graph, config=model_lib.session_config()) as session:
            session.run(v1.global_variables_initializer())
            for step in range(options.steps):
                x, y = batches.make_batch(train.x, train.y, step, plan)
                lr = rate(step, options)
                _, loss = session.run([model.train_op, model.loss],
                                      {model.images: x, model.labels: y,
                                       model.is_training: True, model.learning_rate: lr})
                if _record(result, lr, float(loss), log, step % max(1, options.steps // 10)):
                    break
    if result.smoothed:
        result.suggestion, result.minimum_tenth = suggest(result.rates, result.smoothed)
    return result


def _record(result, lr, loss, log, phase):
    """Adds a step to `result`; True when the sweep must stop (the loss is not finite, or the
    smoothed loss passed DIVERGENCE x its minimum)."""
    if not math.isfinite(loss):
        result.stopped = f"the loss became {loss} at rate {lr:.3g}"
        return True
    result.rates.append(lr)
    result.losses.append(loss)
    result.smoothed.append(smooth(result.losses)[-1])
    if phase == 0:
        log(f"rate {lr:.3g}: loss {loss:.4f} (smoothed {result.smoothed[-1]:.4f})")
    if result.smoothed[-1] > DIVERGENCE * min(result.smoothed):
        result.stopped = f"the smoothed loss passed {DIVERGENCE:g}x its minimum at rate {lr:.3g}"
        return True
    return False


def plot(result, path, title="Learning-rate range test"):
    """The loss and the smoothed loss against the rate (log axis), the suggestion and the
    minimum / 10 marked; written to `path`."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(result.rates, result.losses, color="lightgray", label="loss per step")
    ax.plot(result.rates, result.smoothed, label="smoothed loss")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="tab:red", linestyle="--",
                   label=f"suggested (steepest descent) {result.suggestion:.2g}")
        ax.axvline(result.minimum_tenth, color="tab:green", linestyle=":",
                   label=f"minimum / 10 {result.minimum_tenth:.2g}")
    ax.set_xscale("log")
    if result.smoothed:
        # The raw losses past the divergence would squash the curve that matters.
        low, high = min(result.smoothed), max(result.smoothed[0], min(result.smoothed) * 2)
        ax.set_ylim(low - 0.1 * (high - low), high + 0.2 * (high - low) + 1e-9)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"{title}\n({result.stopped})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


def find(net, work, options, out, log=print):
    """The range test of network `net` on WORK/dataset/train.npz: writes the plot to `out` and
    the sweep (rates, losses, suggestion) beside it as JSON (same name, .json).

    Returns:
      the Sweep.
    Raises:
      LidcError: an unknown network, or no training set.
    """
    builder = runner.resolve_net(net)
    train = data.load(work / "dataset", "train")
    shown = runner.display_name(net)
    log(f"{shown}: rates {options.start:g} to {options.end:g} over {options.steps} steps of "
        f"{options.batch_size} of the {len(train)} training patches")
    result = sweep(builder, train, options, log)
    plot(result, out, f"{shown}: learning-rate range test")
    write_json(out.with_suffix(".json"), {"net": net, "options": vars(options),
                                          **result.as_json()})
    return result
