"""Tests of training.metrics against values computed by hand on a fixed confusion matrix."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from training import metrics

# rows: true class, columns: predicted class; 20 examples, 15 on the diagonal.
CONFUSION = np.array([[5, 2, 1],
                      [1, 3, 0],
                      [0, 1, 7]])


def labels_and_predictions(confusion):
    pairs = [(t, p) for t in range(3) for p in range(3) for _ in range(confusion[t, p])]
    return np.array([t for t, _ in pairs]), np.array([p for _, p in pairs])


def test_confusion_matrix_counts_true_rows_predicted_columns():
    labels, predictions = labels_and_predictions(CONFUSION)
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, predictions, 3), CONFUSION)


def test_accuracy_is_the_diagonal_share():
    assert metrics.accuracy(CONFUSION) == pytest.approx(15 / 20)


def test_precision_recall_f1_by_hand():
    precision, recall, f1 = metrics.precision_recall_f1(CONFUSION)
    # precision: diagonal over column sums 6, 6, 8; recall: over row sums 8, 4, 8.
    np.testing.assert_allclose(precision, [5 / 6, 3 / 6, 7 / 8])
    np.testing.assert_allclose(recall, [5 / 8, 3 / 4, 7 / 8])
    # F1 = 2pr / (p + r): 2(5/6)(5/8) / (5/6 + 5/8) = 5/7; 2(1/2)(3/4) / (5/4) = 3/5.
    np.testing.assert_allclose(f1, [5 / 7, 3 / 5, 7 / 8])


def test_a_class_never_predicted_has_zero_precision_not_nan():
    precision, recall, f1 = metrics.precision_recall_f1(np.array([[2, 0], [1, 0]]))
    np.testing.assert_array_equal(precision, [2 / 3, 0.0])
    np.testing.assert_array_equal(recall, [1.0, 0.0])
    assert not np.isnan(f1).any()


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(metrics.average_ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])


@pytest.mark.parametrize("scores, positive, auc", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),     # one of four pairs misordered
    ([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1], 0.75),      # two tied pairs count one half each
    ([0.3, 0.3, 0.3, 0.3], [0, 1, 0, 1], 0.5),       # all tied: chance
    ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),
    ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),
])
def test_roc_auc_by_hand(scores, positive, auc):
    assert metrics.roc_auc(scores, positive) == pytest.approx(auc)


def test_roc_auc_is_undefined_without_negatives():
    assert math.isnan(metrics.roc_auc([0.2, 0.7], [1, 1]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=2, max_size=30))
def test_roc_auc_equals_the_pairwise_count(pairs):
    scores = np.array([s for s, _ in pairs], float)
    positive = np.array([p for _, p in pairs])
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert metrics.roc_auc(scores, positive) == pytest.approx(wins / (len(pos) * len(neg)))


def test_report_per_class_macro_and_table():
    labels, predictions = labels_and_predictions(CONFUSION)
    probabilities = np.full((len(labels), 3), 0.1)
    probabilities[np.arange(len(labels)), predictions] = 0.8
    names = ("a", "b", "c")
    report = metrics.report(labels, probabilities, names)
    assert report["n"] == 20
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["confusion"] == CONFUSION.tolist()
    assert report["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["c"]["support"] == 8
    assert report["macro"]["f1"] == pytest.approx((5 / 7 + 3 / 5 + 7 / 8) / 3)
    # Class a: positives score 0.8 when predicted a (5 of 8) else 0.1; negatives 0.8 in 1 of 12.
    # Pairs: 5 high positives beat 11 low negatives and tie the 1 high (5.5 each); 3 low
    # positives beat none and tie 11 low (5.5 each): (5 * 11.5 + 3 * 5.5) / 96.
    assert report["per_class"]["a"]["auc"] == pytest.approx((5 * 11.5 + 3 * 5.5) / 96)
    text = metrics.table(report)
    assert "macro average" in text and "accuracy: 0.750, balanced accuracy" in text
    assert "on 20 patches" in text
    assert report["balanced_accuracy"] == pytest.approx((5 / 8 + 3 / 4 + 7 / 8) / 3)


def test_balanced_accuracy_of_always_answering_one_class_is_chance():
    confusion = np.array([[90, 0, 0], [7, 0, 0], [3, 0, 0]])
    assert metrics.accuracy(confusion) == pytest.approx(0.9)
    assert metrics.balanced_accuracy(confusion) == pytest.approx(1 / 3)
    assert metrics.balanced_accuracy(np.array([[4, 1], [0, 0]])) == pytest.approx(0.8)


def test_headline_figures_agree_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    labels = rng.choice(3, size=200, p=[0.6, 0.15, 0.25])
    probabilities = rng.dirichlet([1, 1, 1], size=200) + np.eye(3)[labels] * 0.4
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    got = metrics.headline(labels, probabilities)
    predicted = probabilities.argmax(1)
    assert got["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predicted))
    assert got["balanced_accuracy"] == pytest.approx(
        sklearn_metrics.balanced_accuracy_score(labels, predicted))
    assert got["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted,
                                                                     average="macro"))
    assert got["macro_auc"] == pytest.approx(sklearn_metrics.roc_auc_score(
        labels, probabilities, multi_class="ovr", average="macro"))


def test_a_lesion_is_the_mean_of_its_patches_and_the_majority_of_their_labels():
    labels = np.array([0, 0, 2, 1, 1, 2, 0])
    lesions = np.array([5, 5, 5, 9, 9, 7, 7])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8],
                              [0.2, 0.7, 0.1], [0.4, 0.5, 0.1], [0.3, 0.3, 0.4],
                              [0.5, 0.2, 0.3]])
    lesion_labels, mean, ids = metrics.by_lesion(labels, probabilities, lesions)
    assert ids.tolist() == [5, 7, 9]
    # Lesion 7's two patches say 2 and 0: the tie goes to the nodule >= 3 mm.
    assert lesion_labels.tolist() == [0, 0, 1]
    np.testing.assert_allclose(mean[0], [0.5, 0.4 / 3, 1.1 / 3])
    np.testing.assert_allclose(mean[2], [0.3, 0.6, 0.1])
