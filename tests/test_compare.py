"""Tests of the comparison (training.comparison, tools.compare): every (net, size) trained and
tested once, finished runs reused."""
import csv
import json
import shutil

import numpy as np

import pytest
import tensorflow as tf

from lidc.errors import LidcError
from tests.test_training_helpers import tiny_net, train_config, write_dataset
from tools import compare
from training.comparison import COLUMNS, Grid, baselines, majority_share, run_comparison, \
    whole
from training.loop import Hooks


class CountingBuilder:
    """tiny_net that counts the training graphs it is built into (a count of trainings: the
    export builds an inference form, with is_training False, and evaluation restores the
    checkpoint's own graph without calling the builder)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images, num_classes, is_training):
        if tf.get_static_value(is_training) in (None, True):
            self.calls += 1
        return tiny_net(images, num_classes, is_training)


def options(root, **overrides):
    config = train_config(root, **{"max_steps": 10, "eval_every": 10, **overrides})
    return {k: v for k, v in config.items() if k not in ("net", "name", "train_size", "seed")}


def test_compare_trains_each_pair_once_and_reuses_finished_runs(tmp_path):
    write_dataset(tmp_path / "work")
    builders = {"tiny": CountingBuilder(), "tiny2": CountingBuilder()}
    quiet = Hooks(log=lambda *a: None)
    rows = run_comparison(options(tmp_path), Grid(["tiny", "tiny2"], [12, 30], builders=builders),
                          quiet)
    assert [(r["net"], r["size"], r["run"]) for r in rows] == [
        ("tiny", 12, "compare-tiny-n12-s0"), ("tiny", 30, "compare-tiny-n30-s0"),
        ("tiny2", 12, "compare-tiny2-n12-s0"), ("tiny2", 30, "compare-tiny2-n30-s0")]
    assert all(r["steps"] == 10 and 0 <= r["test_accuracy"] <= 1 for r in rows)
    assert [b.calls for b in builders.values()] == [2, 2]
    out = tmp_path / "work" / "compare"
    with open(out / "compare.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(COLUMNS) and len(table) == 4
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "runs" / "compare-tiny-n12-s0" / "eval" / "metrics.json").is_file()

    again = run_comparison(options(tmp_path), Grid(["tiny", "tiny2"], [12, 30],
                                                   builders=builders), quiet)
    assert [b.calls for b in builders.values()] == [2, 2]  # nothing trained the second time
    assert again == rows

    # A finished run whose evaluation is missing is evaluated, not trained again.
    shutil.rmtree(tmp_path / "runs" / "compare-tiny-n30-s0" / "eval")
    assert run_comparison(options(tmp_path), Grid(["tiny"], [30], builders=builders),
                          quiet) == rows[1:2]
    assert builders["tiny"].calls == 2

    with pytest.raises(LidcError, match="other options.*--max-steps 10 -> 20.*--force"):
        run_comparison(options(tmp_path, max_steps=20), Grid(["tiny"], [12], builders=builders),
                       quiet)


def test_compare_refuses_a_size_larger_than_the_training_set(tmp_path):
    write_dataset(tmp_path / "work")
    with pytest.raises(LidcError, match=r"--sizes \[61\]"):
        run_comparison(options(tmp_path), Grid(["tiny"], [12, 61]), Hooks(log=lambda *a: None))


def test_compare_parser_reads_comma_lists():
    args = compare.build_parser().parse_args(["--nets", "lenet5,resnet50", "--sizes", "100,all",
                                              "--seeds", "0,2"])
    assert args.nets == ["lenet5", "resnet50"] and args.sizes == [100, "all"]
    assert args.seeds == [0, 2] and args.metric == "balanced_accuracy"
    assert args.batch_size == 16 and args.min_steps == 5000


def test_compare_over_seeds_summarises_each_net_and_size(tmp_path):
    write_dataset(tmp_path / "work")
    grid = Grid(["tiny"], whole([12, "all"], tmp_path / "work"), seeds=[0, 1],
                builders={"tiny": tiny_net})
    assert grid.sizes == [12, 60]
    rows = run_comparison(options(tmp_path), grid, Hooks(log=lambda *a: None),
                          metric="macro_auc")
    assert [(r["size"], r["seed"], r["run"]) for r in rows] == [
        (12, 0, "compare-tiny-n12-s0"), (12, 1, "compare-tiny-n12-s1"),
        (60, 0, "compare-tiny-n60-s0"), (60, 1, "compare-tiny-n60-s1")]
    configs = [json.loads((tmp_path / "runs" / r["run"] / "config.json").read_text())
               for r in rows]
    assert [c["seed"] for c in configs] == [0, 1, 0, 1]
    with open(tmp_path / "work" / "compare" / "compare_summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [(s["size"], s["runs"]) for s in summary] == [("12", "2"), ("60", "2")]
    for s, pair in zip(summary, (rows[:2], rows[2:])):
        values = np.array([r["balanced_accuracy"] for r in pair])
        assert float(s["balanced_accuracy_mean"]) == pytest.approx(values.mean(), abs=1e-4)
        assert float(s["balanced_accuracy_std"]) == pytest.approx(values.std(ddof=1), abs=1e-4)


def test_baselines_are_what_answering_without_looking_scores():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 2)
    assert baselines(labels, "test_accuracy") == {"chance": pytest.approx(1 / 3),
                                                  "majority class": 0.6}
    assert list(baselines(labels, "balanced_accuracy").values()) == [pytest.approx(1 / 3)]
    assert baselines(labels, "macro_auc") == {"chance": 0.5}
    # Always answering class 0: its F1 is 2 * 0.6 / 1.6 = 0.75, the others 0.
    assert baselines(labels, "macro_f1")["majority class"] == pytest.approx(0.25)


def test_majority_share_is_the_accuracy_of_always_answering_the_commonest_class():
    assert majority_share(np.array([0, 0, 2, 0, 1, 2])) == 0.5
