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


def learning_curves(history, path, lines=None, title="Learning curves"):
    """Train and validation loss (log axis) and accuracy against the step, with the validation
    balanced accuracy where the history has it.

    Args:
      history: the `history` list of a run's metrics.json.
      path: the PNG to write.
      lines: optional {label: value} drawn as dashed horizontal lines on the accuracy panel
        (e.g. the stop threshold, the majority class's share).
    """
    steps = [h["step"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(steps, [h["train_loss"] for h in history], marker=".", label="train")
    loss_ax.plot(steps, [h["val_loss"] for h in history], marker=".", label="validation")
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("cross-entropy (log scale)")
    loss_ax.legend()
    acc_ax.plot(steps, [h.get("train_accuracy") for h in history], marker=".",
                label="train accuracy (mean of batches)")
    acc_ax.plot(steps, [h["val_accuracy"] for h in history], marker=".",
                label="validation accuracy")
    if any(h.get("val_balanced_accuracy") is not None for h in history):
        acc_ax.plot(steps, [h.get("val_balanced_accuracy") for h in history], marker=".",
                    label="validation balanced accuracy")
    for (label, value), style in zip((lines or {}).items(), ("--", ":", "-.")):
        acc_ax.axhline(value, linestyle=style, color="gray", label=f"{label} ({value:.2f})")
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    acc_ax.legend(fontsize="small")
    fig.suptitle(title)
    _save(fig, path)


def comparison(rows, path, metric="balanced_accuracy", labels=None, baselines=None):
    """One line per network: the mean of `metric` over the seeds against the training-set size
    (log axis), with error bars of one standard deviation where there are several seeds.

    Args:
      rows: compare.csv's rows: dicts with at least `net`, `size` and `metric`.
      path: the PNG to write.
      metric: the column to plot.
      labels: optional dict net -> the name shown in the legend.
      baselines: optional {label: value} drawn as dashed lines (chance, the majority class), so
        that a figure can be told from class imbalance at a glance.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for net in dict.fromkeys(r["net"] for r in rows):
        sizes = sorted({r["size"] for r in rows if r["net"] == net})
        values = [[r[metric] for r in rows if r["net"] == net and r["size"] == s
                   and r[metric] is not None] for s in sizes]
        means = [np.mean(v) if v else np.nan for v in values]
        spread = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        ax.errorbar(sizes, means, yerr=spread, marker="o", capsize=3,
                    label=(labels or {}).get(net, net))
    for (label, value), style in zip((baselines or {}).items(), ("--", ":")):
        ax.axhline(value, color="grey", linestyle=style, label=f"{label} ({value:.2f})")
    ax.set_xscale("log")
    sizes = sorted({r["size"] for r in rows})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training-set size (patches, log scale)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    seeds = len({r.get("seed") for r in rows})
    ax.set_title(f"Test {metric.replace('_', ' ')} by training-set size"
                 + (f" (mean ± sd over {seeds} seeds)" if seeds > 1 else ""))
    _save(fig, path)


def roc(curves, aucs, class_names, path, title="ROC curves (one class against the rest)"):
    """Each class's ROC curve with its AUC in the legend.

    Args:
      curves: training.metrics.roc_points's output (class index -> {fpr, tpr}).
      aucs: class index -> AUC (None when undefined).
      class_names: the names, in class order.
      path: the PNG to write.
    """
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for c, curve in curves.items():
        auc = aucs.get(c)
        label = class_names[c] + (f" (AUC {auc:.3f})" if auc is not None else "")
        ax.plot(curve["fpr"], curve["tpr"], label=label)
    _unit_square(ax, "chance", ("false positive rate", "true positive rate"), "lower right")
    ax.set_title(title)
    _save(fig, path)


def _unit_square(ax, diagonal, labels, legend):
    """Axes from 0 to 1 with the dashed diagonal (named `diagonal`), labels (x, y) and the
    legend at `legend`."""
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label=diagonal)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize="small", loc=legend)


def calibration(reliability, path, title="Calibration"):
    """The reliability diagram: in each confidence bin, how often the network was right
    against how sure it was, with the expected calibration error in the title.

    Args:
      reliability: training.metrics.reliability's output.
      path: the PNG to write.
    """
    fig, ax = plt.subplots(figsize=(5, 4.5))
    bins = reliability["bins"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.9, alpha=0.7,
           label="accuracy in the bin")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
            color="black", linestyle="none", label="(mean confidence, accuracy)")
    _unit_square(ax, "perfect calibration", ("confidence (top probability)", "accuracy"),
                 "upper left")
    ax.set_title(f"{title}: expected calibration error {reliability['ece']:.3f}")
    _save(fig, path)
