"""Classification metrics in numpy: confusion matrix, accuracy, precision, recall, F1, ROC AUC.

Conventions: `confusion[t, p]` counts examples of true class t predicted as p. A ratio with a
zero denominator (a class never predicted, or absent) is 0 for precision/recall/F1 and NaN for
AUC, which is undefined without both positives and negatives. Macro averages are unweighted means
over the classes (NaN AUCs left out).

Usage:
  report = metrics.report(labels, probabilities, CLASS_NAMES)
  print(metrics.table(report))
"""
import numpy as np


def confusion_matrix(labels, predictions, num_classes):
    """[num_classes, num_classes] int64 counts, rows the true class, columns the predicted."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (np.asarray(labels), np.asarray(predictions)), 1)
    return confusion


def accuracy(confusion):
    """The share of examples on the diagonal of a confusion matrix (0 for none)."""
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0


def _ratio(numerator, denominator):
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator),
                     where=denominator > 0)


def precision_recall_f1(confusion):
    """Per-class precision, recall and F1 (three float arrays) from a confusion matrix."""
    hits = np.diag(confusion)
    precision = _ratio(hits, confusion.sum(axis=0))
    recall = _ratio(hits, confusion.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1


def average_ranks(values):
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def roc_auc(scores, positive):
    """Area under the ROC curve by the rank statistic (Mann-Whitney U / (P * N)).

    It equals the probability that a random positive scores above a random negative, a tie
    counting one half, which is also the area under the step ROC curve with ties interpolated.

    Args:
      scores: 1-D float array, higher meaning more likely positive.
      positive: 1-D bool array, the true answers.
    Returns:
      the AUC in [0, 1], or NaN when there are no positives or no negatives.
    """
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(np.asarray(scores, np.float64))
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def one_vs_rest_auc(labels, probabilities):
    """Per-class AUC of each class's probability against all other classes."""
    labels = np.asarray(labels)
    return np.array([roc_auc(probabilities[:, c], labels == c)
                     for c in range(probabilities.shape[1])])


def _mean(values):
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def balanced_accuracy(confusion):
    """The mean recall over the classes present (scikit-learn's balanced_accuracy_score): 1/K
    for a classifier that always answers one class, whatever the imbalance."""
    support = confusion.sum(axis=1)
    present = support > 0
    return float((np.diag(confusion)[present] / support[present]).mean()) if present.any() \
        else 0.0


# The figures a run can be judged and stopped by (training.options' --stop-metric).
STOP_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


def headline(labels, probabilities):
    """{accuracy, balanced_accuracy, macro_f1, macro_auc} of probabilities against labels (the
    macro AUC over the classes present on both sides; None when none is)."""
    labels = np.asarray(labels, np.int64)
    confusion = confusion_matrix(labels, probabilities.argmax(axis=1), probabilities.shape[1])
    _, _, f1 = precision_recall_f1(confusion)
    auc = _mean(one_vs_rest_auc(labels, probabilities))
    return {"accuracy": accuracy(confusion), "balanced_accuracy": balanced_accuracy(confusion),
            "macro_f1": float(f1[confusion.sum(axis=1) > 0].mean()) if confusion.any() else 0.0,
            "macro_auc": _json_float(auc)}


# When the patches of one lesion carry different labels, the lesion takes the larger finding:
# a nodule >= 3 mm before a non-nodule >= 3 mm before a nodule < 3 mm (lidc.dataset.TIE_ORDER).
LESION_TIE_ORDER = (0, 2, 1)


def by_lesion(labels, probabilities, lesion_ids):
    """One row per lesion: its label (the majority of its patches' labels, ties to
    LESION_TIE_ORDER) and its probabilities (the mean over its patches).

    Returns:
      (labels [L], probabilities [L, C], lesion ids [L]), lesions in increasing id.
    """
    lesion_ids = np.asarray(lesion_ids)
    ids, owner = np.unique(lesion_ids, return_inverse=True)
    sums = np.zeros((len(ids), probabilities.shape[1]))
    np.add.at(sums, owner, probabilities)
    mean = sums / np.bincount(owner, minlength=len(ids))[:, None]
    votes = np.zeros((len(ids), probabilities.shape[1]), np.int64)
    np.add.at(votes, (owner, np.asarray(labels)), 1)
    rank = np.array([LESION_TIE_ORDER.index(c) if c in LESION_TIE_ORDER else c
                     for c in range(probabilities.shape[1])])
    lesion_labels = np.array([max(range(votes.shape[1]), key=lambda c: (row[c], -rank[c]))
                              for row in votes])
    return lesion_labels, mean, ids


def roc_points(labels, probabilities):
    """Each class's one-vs-rest ROC curve (scikit-learn's roc_curve, with the points that change
    nothing dropped): class index -> {fpr, tpr} lists; a class without positives or negatives
    has none."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels)
    curves = {}
    for c in range(probabilities.shape[1]):
        positive = labels == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probabilities[:, c])
        curves[c] = {"fpr": np.round(fpr, 4).tolist(), "tpr": np.round(tpr, 4).tolist()}
    return curves


def reliability(labels, probabilities, bins=10):
    """How far the network's confidence (its top probability) is from how often it is right:
    the reliability diagram's bins and the expected calibration error (Guo et al., "On
    Calibration of Modern Neural Networks", ICML 2017): the mean over bins of |accuracy -
    confidence|, weighted by the bin's share of the patches.

    Returns:
      {"ece": float, "bins": [{"low", "high", "count", "confidence", "accuracy"}, ...]} with
      the empty bins left out.
    """
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # A confidence of exactly 1 belongs to the last bin; each bin is (low, high].
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        conf, acc = float(confidence[members].mean()), float(right[members].mean())
        ece += members.mean() * abs(acc - conf)
        out.append({"low": float(edges[b]), "high": float(edges[b + 1]),
                    "count": int(members.sum()), "confidence": conf, "accuracy": acc})
    return {"ece": float(ece), "bins": out}


def report(labels, probabilities, class_names):
    """Every metric of a classifier's output, as a JSON-ready dict.

    Args:
      labels: [N] int true classes.
      probabilities: [N, C] predicted class probabilities.
      class_names: C names, in class order.
    Returns:
      dict with n, accuracy, balanced_accuracy, confusion (list of lists), per_class (name ->
      precision, recall, f1, auc, support) and macro (precision, recall, f1, auc).
    """
    labels = np.asarray(labels, np.int64)
    probabilities = np.asarray(probabilities)
    confusion = confusion_matrix(labels, probabilities.argmax(axis=1), len(class_names))
    precision, recall, f1 = precision_recall_f1(confusion)
    auc = one_vs_rest_auc(labels, probabilities)
    support = confusion.sum(axis=1)
    return {
        "n": int(len(labels)),
        "accuracy": accuracy(confusion),
        "balanced_accuracy": balanced_accuracy(confusion),
        "class_names": list(class_names),
        "confusion": confusion.tolist(),
        "per_class": {
            name: {"precision": float(precision[c]), "recall": float(recall[c]),
                   "f1": float(f1[c]), "auc": _json_float(auc[c]), "support": int(support[c])}
            for c, name in enumerate(class_names)},
        "macro": {"precision": _mean(precision), "recall": _mean(recall), "f1": _mean(f1),
                  "auc": _json_float(_mean(auc))},
    }


def _json_float(value):
    # JSON has no NaN; None says "undefined" to every reader.
    return None if np.isnan(value) else float(value)


def table(rep):
    """A plain-text table of a `report`: per-class rows, the macro row, then the confusion."""
    def cell(value):
        return "   n/a" if value is None else f"{value:6.3f}"

    width = max(len(n) for n in rep["class_names"] + ["macro average"])
    lines = [f"{'class':<{width}}  precision  recall      f1     auc  support"]
    for name, m in rep["per_class"].items():
        lines.append(f"{name:<{width}}     {cell(m['precision'])}  {cell(m['recall'])}  "
                     f"{cell(m['f1'])}  {cell(m['auc'])}  {m['support']:7d}")
    m = rep["macro"]
    lines.append(f"{'macro average':<{width}}     {cell(m['precision'])}  {cell(m['recall'])}  "
                 f"{cell(m['f1'])}  {cell(m['auc'])}  {rep['n']:7d}")
    counted = "lesions" if rep.get("unit") == "lesion" else "patches"
    lines.append(f"accuracy: {rep['accuracy']:.3f}, balanced accuracy "
                 f"{rep['balanced_accuracy']:.3f} on {rep['n']} {counted}")
    lines.append("confusion (rows: true class, columns: predicted):")
    for name, row in zip(rep["class_names"], rep["confusion"]):
        lines.append(f"  {name:<{width}} " + " ".join(f"{v:6d}" for v in row))
    return "\n".join(lines)
