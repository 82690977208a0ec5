"""Batches for the session loop: which rows, in which order, augmented how, prepared ahead.

The batch of a step is a pure function of (seed, step): each epoch is a permutation drawn from
a generator seeded by (seed, epoch), cut into consecutive batches; the augmentation of a batch is
drawn from a generator seeded by (seed, step). A run resumed at step S therefore sees exactly the
batches the uninterrupted run saw from step S on.

With the balanced sampler each slot of a batch draws its class uniformly, then a row of that
class, from a generator seeded by (seed, step): the same purity, classes seen equally often.

Usage:
  plan = plan_for(labels, batch_size=16, seed=0)
  with Prefetcher(lambda step: make_batch(x, y, step, plan), start=0) as batches:
    for step in range(start, max_steps):
      images, labels = batches.get(step)
"""
import queue
import threading
from dataclasses import dataclass

import numpy as np


def steps_per_epoch(num_rows, batch_size):
    """Full batches in one epoch; the incomplete tail of each permutation is dropped so every
    step has the same batch size (one batch of all rows when there are fewer than batch_size)."""
    return max(1, num_rows // batch_size)


def epoch_order(num_rows, seed, epoch):
    """The permutation of the rows for one epoch, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def batch_indices(num_rows, batch_size, seed, step):
    """The row indices of the batch of global step `step` (0-based).

    Args:
      num_rows: rows in the training set.
      batch_size: rows per batch.
      seed: the run's seed.
      step: the global step whose batch is wanted.
    Returns:
      int array of min(batch_size, num_rows) distinct row indices.
    """
    per_epoch = steps_per_epoch(num_rows, batch_size)
    epoch, k = divmod(step, per_epoch)
    return epoch_order(num_rows, seed, epoch)[k * batch_size:(k + 1) * batch_size]


def augment(images, seed, step):
    """Rotates each image by a random multiple of 90 degrees and flips it left-right at random.

    The four rotations times the flip give all eight symmetries of the square, which a CT patch
    has no preferred one of. Seeded by (seed, step), so the augmentation of a step is fixed.

    Args:
      images: [N, H, W, C] array with H == W.
      seed: the run's seed.
      step: the global step.
    Returns:
      a new array of the same shape.
    """
    rng = np.random.default_rng([seed, step, 1])
    turns = rng.integers(0, 4, size=len(images))
    flips = rng.integers(0, 2, size=len(images)).astype(bool)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        image = np.rot90(image, turns[i], axes=(0, 1))
        out[i] = image[:, ::-1] if flips[i] else image
    return out


@dataclass(frozen=True)
class Plan:
    """How a run draws its batches.

    batch_size, seed: as the run's options.
    augment: rotate and flip each image (see `augment`).
    class_rows: for the balanced sampler, the training rows of each class present (tuple of
      int arrays); None for the uniform sampler (epochs of shuffled rows).
    """
    batch_size: int
    seed: int
    augment: bool = False
    class_rows: tuple = None


def plan_for(labels, batch_size, seed, augment=False, sampler="uniform"):
    """The Plan of a run whose training labels are `labels`."""
    class_rows = None
    if sampler == "balanced":
        class_rows = tuple(np.flatnonzero(labels == c) for c in np.unique(labels))
    return Plan(batch_size, seed, augment, class_rows)


def balanced_indices(class_rows, batch_size, seed, step):
    """The rows of a balanced batch: each slot's class drawn uniformly among the classes
    present, then a row of that class (with replacement), from a generator seeded by
    (seed, step), so a resumed run draws the same batches."""
    rng = np.random.default_rng([seed, step, 2])
    classes = rng.integers(0, len(class_rows), size=batch_size)
    return np.array([class_rows[c][rng.integers(0, len(class_rows[c]))] for c in classes])


def make_batch(images, labels, step, plan):
    """The (images, labels) batch of global step `step` under `plan`."""
    if plan.class_rows is None:
        rows = batch_indices(len(images), plan.batch_size, plan.seed, step)
    else:
        rows = balanced_indices(plan.class_rows, plan.batch_size, plan.seed, step)
    x = images[rows]
    if plan.augment:
        x = augment(x, plan.seed, step)
    return x, labels[rows]


class Prefetcher:
    """Prepares the batches of steps start, start+1, ... in a background thread.

    numpy releases the GIL while copying and TensorFlow while it runs a step, so the next batch is
    gathered while the current step runs. The queue is bounded so at most `depth` batches wait in
    memory.

    Args:
      make: function step -> batch.
      start: the first step.
      depth: batches prepared ahead.
    """

    def __init__(self, make, start, depth=2):
        self._make = make
        self._next = start
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(start,), daemon=True)
        self._thread.start()

    def _fill(self, step):
        while not self._stop.is_set():
            try:
                item = (step, self._make(step), None)
            except BaseException as e:  # handed to the consumer, which raises it
                item = (step, None, e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += 1

    def get(self, step):
        """The batch of `step`; steps must be asked for in order."""
        if step != self._next:
            raise ValueError(f"asked for step {step}, the next prepared step is {self._next}")
        got, batch, error = self._queue.get()
        if error is not None:
            raise error
        self._next = got + 1
        return batch

    def close(self):
        """Stops the thread (batches prepared but not taken are dropped)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
