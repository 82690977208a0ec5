"""Batches for the session loop: which rows, in which order, augmented how, prepared ahead.

The batch of a step is a pure function of (seed, step): each epoch is a permutation drawn from
a generator seeded by (seed, epoch), cut into consecutive batches; the augmentation of a batch is
drawn from a generator seeded by (seed, step). A run resumed at step S therefore sees exactly the
batches the uninterrupted run saw from step S on.

Usage:
  with Prefetcher(lambda step: make_batch(x, y, step, 16, seed=0), start=0) as batches:
    for step in range(start, max_steps):
      images, labels = batches.get(step)
"""
import queue
import threading

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


def make_batch(images, labels, step, batch_size, seed, augmented=False):
    """The (images, labels) batch of global step `step`; see `batch_indices` and `augment`."""
    rows = batch_indices(len(images), batch_size, seed, step)
    x = images[rows]
    if augmented:
        x = augment(x, seed, step)
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
