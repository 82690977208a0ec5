"""How sure the test figures are: 95% bootstrap confidence intervals, resampling patients.

The patches of one patient are not independent (slices of one nodule look alike), so the
bootstrap draws whole patients with replacement (a cluster bootstrap) and recomputes every
figure on the patches of the drawn patients; the interval is the 2.5th and 97.5th percentile
over the resamples (Efron and Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13).
A resample that lacks a class is skipped rather than scored with an undefined AUC or recall;
how many were used is reported. With few test patients an interval says little: below
FEW_PATIENTS the report says so, and below MIN_PATIENTS there is no interval at all.

    intervals = bootstrap(labels, probabilities, patient_ids, resamples=1000, seed=0)
"""
import numpy as np

from training import metrics

MIN_PATIENTS = 3
FEW_PATIENTS = 10


def bootstrap(labels, probabilities, patient_ids, resamples=1000, seed=0):
    """95% intervals of accuracy, balanced accuracy, macro F1, macro AUC and each class's
    recall, F1 and AUC, resampling patients.

    Args:
      labels: [N] true classes.
      probabilities: [N, C] predicted probabilities.
      patient_ids: [N] the patient of each patch.
      resamples: how many resamples to draw.
      seed: fixes the draws.
    Returns:
      dict with `patients`, `resamples` (drawn), `used` (with every class present), `note`
      (a sentence, or None), and `intervals`: figure -> [low, high] (per_class: class index ->
      {recall, f1, auc: [low, high]}); `intervals` is None when there are too few patients.
    """
    labels = np.asarray(labels, np.int64)
    patients, owner = np.unique(np.asarray(patient_ids), return_inverse=True)
    result = {"patients": int(len(patients)), "resamples": int(resamples), "used": 0,
              "note": _note(len(patients)), "intervals": None}
    if len(patients) < MIN_PATIENTS or resamples < 1:
        return result
    rows_of = [np.flatnonzero(owner == p) for p in range(len(patients))]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        rows = np.concatenate([rows_of[p] for p in rng.integers(0, len(patients),
                                                                  len(patients))])
        if len(np.unique(labels[rows])) == probabilities.shape[1]:
            draws.append(_figures(labels[rows], probabilities[rows]))
    result["used"] = len(draws)
    if draws:
        result["intervals"] = _percentiles(draws)
    return result


def _note(patients):
    if patients < MIN_PATIENTS:
        return (f"{patients} test patients are too few to resample: no confidence interval is "
                "given")
    if patients < FEW_PATIENTS:
        return (f"only {patients} test patients: the intervals show how much the figures move "
                "between such small groups, but are too wide (and too uncertain themselves) to "
                "tell similar networks apart")
    return None


def _figures(labels, probabilities):
    """The figures one resample is scored on, as a flat dict."""
    confusion = metrics.confusion_matrix(labels, probabilities.argmax(axis=1),
                                         probabilities.shape[1])
    _, recall, f1 = metrics.precision_recall_f1(confusion)
    auc = metrics.one_vs_rest_auc(labels, probabilities)
    figures = {"accuracy": metrics.accuracy(confusion),
               "balanced_accuracy": metrics.balanced_accuracy(confusion),
               "macro_f1": float(f1.mean()), "macro_auc": float(np.nanmean(auc))}
    for c in range(probabilities.shape[1]):
        figures.update({(c, "recall"): recall[c], (c, "f1"): f1[c], (c, "auc"): auc[c]})
    return figures


def _percentiles(draws):
    intervals, per_class = {}, {}
    for key in draws[0]:
        values = np.array([d[key] for d in draws], float)
        low, high = np.percentile(values, [2.5, 97.5])
        interval = [round(float(low), 4), round(float(high), 4)]
        if isinstance(key, tuple):
            per_class.setdefault(key[0], {})[key[1]] = interval
        else:
            intervals[key] = interval
    intervals["per_class"] = per_class
    return intervals
