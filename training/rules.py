"""The stop rule, early stopping and the learning-rate schedules, as plain functions of the history.

The stop rule is the paper's: validation accuracy is measured every `eval_every` steps, and
training stops at the first evaluation where the step is past `min_steps` (5000 in the paper) and
the accuracy (or another --stop-metric) is over `stop_accuracy` (0.90); otherwise at `max_steps`.
Optionally it also stops when what patience watches (the validation loss with the paper's
accuracy, else the stop metric) has not improved for `patience` evaluations.

Because every decision is a function of the recorded history, a resumed run decides exactly as
the uninterrupted one would have.
"""
import math
from dataclasses import dataclass

from training.options import SCHEDULES

THRESHOLD = "threshold"
MAX_STEPS = "max steps"
PATIENCE = "patience"


def evaluations_since_best(losses):
    """How many evaluations came after the one with the lowest loss (0 if the last is best).

    Ties do not count as an improvement: the earliest lowest loss is the best.
    """
    if not losses:
        return 0
    best = min(range(len(losses)), key=lambda i: (losses[i], i))
    return len(losses) - 1 - best


@dataclass(frozen=True)
class StopRule:
    """When a run stops.

    min_steps: the threshold applies only when the step is past this (paper: 5000).
    stop_accuracy: ... and the stop metric on validation is over this (paper: accuracy 0.90).
    max_steps: stop when the step reaches this in any case.
    patience: stop after this many evaluations without a better watched figure (stop_reason's
      `watched`); 0 = never.
    """
    min_steps: int
    stop_accuracy: float
    max_steps: int
    patience: int = 0


def stop_reason(step, value, watched, rule):
    """Why training stops at this evaluation, or None to go on.

    Args:
      step: the global step just evaluated (steps done).
      value: the stop metric on validation at `step` (the paper's: accuracy).
      watched: what patience watches at every evaluation so far, this one last; lower is
        better (the validation loss, or the stop metric negated).
      rule: the StopRule.
    Returns:
      THRESHOLD, PATIENCE, MAX_STEPS or None, checked in that order.
    """
    if step > rule.min_steps and value > rule.stop_accuracy:
        return THRESHOLD
    if rule.patience and evaluations_since_best(watched) >= rule.patience:
        return PATIENCE
    if step >= rule.max_steps:
        return MAX_STEPS
    return None


def status(reason, step):
    """The sentence metrics.json and the summary give for a stop."""
    return {
        THRESHOLD: f"stopped: threshold reached at step {step}",
        PATIENCE: f"stopped: patience ran out at step {step}",
        MAX_STEPS: f"stopped: max steps reached at step {step}",
    }[reason]


def learning_rate(step, base, schedule, max_steps, decay_rate=0.96, decay_steps=1000):
    """The learning rate for global step `step`.

    constant: `base`. exponential: base * decay_rate ** (step / decay_steps), the continuous form
    of `tf.compat.v1.train.exponential_decay`. cosine: annealed from `base` to 0 at `max_steps`
    (Loshchilov & Hutter, SGDR, without restarts).
    """
    if schedule == "constant":
        return base
    if schedule == "exponential":
        return base * decay_rate ** (step / decay_steps)
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; one of {', '.join(SCHEDULES)}")
