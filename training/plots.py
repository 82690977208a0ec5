"""Figures of a run and of a comparison, drawn with matplotlib's Agg backend into PNG files.

Each function takes plain data (lists, dicts from metrics.json) and a path, and writes the file
atomically, so a plot can be redrawn from the JSON artifacts at any time.
"""
import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted on a server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lidc.io import atomic_path  # noqa: E402


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def confusion(matrix, class_names, path, title="Confusion matrix"):
    """The confusion matrix, coloured by the share of each true class, annotated with counts."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=20, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for t in ticks:
        for p in ticks:
            ax.text(p, t, f"{matrix[t, p]}", ha="center", va="center",
                    color="white" if shares[t, p] > 0.5 else "black")
    _save(fig, path)


def learning_curves(history, path, stop_accuracy=None, title="Learning curves"):
    """Train and validation loss and accuracy against the step.

    Args:
      history: the `history` list of a run's metrics.json.
      path: the PNG to write.
      stop_accuracy: drawn as a dashed line when given.
    """
    steps = [h["step"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(steps, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(steps, [h["val_loss"] for h in history], label="validation")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend()
    acc_ax.plot(steps, [h.get("train_accuracy") for h in history], label="train (mean of batches)")
    acc_ax.plot(steps, [h["val_accuracy"] for h in history], label="validation")
    if stop_accuracy is not None:
        acc_ax.axhline(stop_accuracy, linestyle="--", color="gray", label="stop threshold")
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    acc_ax.legend()
    fig.suptitle(title)
    _save(fig, path)


def comparison(rows, path, metric="test_accuracy", title="Test accuracy by training-set size",
               labels=None, baseline=None):
    """One line per network: `metric` against the training-set size.

    Args:
      rows: dicts with at least `net`, `size` and `metric`.
      path: the PNG to write.
      labels: optional dict net -> the name shown in the legend.
      baseline: optional accuracy of always answering the majority class, drawn dashed so that
        an accuracy can be told from class imbalance at a glance.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for net in dict.fromkeys(r["net"] for r in rows):
        points = sorted((r["size"], r[metric]) for r in rows if r["net"] == net)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                label=(labels or {}).get(net, net))
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label=f"majority class ({baseline:.2f})")
    ax.set_xscale("log")
    sizes = sorted({r["size"] for r in rows})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training-set size (patches)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    _save(fig, path)
