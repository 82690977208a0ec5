"""Tests of the learning-rate range test (training.lr_find, tools.lr_find)."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.test_training_helpers import tiny_net, write_dataset
from tools import cli
from tools import lr_find as lr_find_tool
from training import data, lr_find, runner
from training.lr_find import SweepOptions


def test_rates_grow_exponentially_from_start_to_end():
    options = SweepOptions(start=1e-6, end=1.0, steps=7)
    rates = [lr_find.rate(step, options) for step in range(7)]
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.diff(np.log10(rates)), 1.0)


def test_smoothing_is_a_bias_corrected_moving_average():
    assert lr_find.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    smoothed = lr_find.smooth([1.0, 3.0], beta=0.5)
    assert smoothed == pytest.approx([1.0, (0.25 * 1 + 0.5 * 3) / 0.75])


def test_the_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = np.logspace(-6, 0, 61)
    # Flat, then falling fastest around 1e-3, lowest at 1e-2, then rising again.
    x = np.log10(rates)
    smoothed = 2 - np.tanh(2 * (x + 3)) + np.where(x > -2, 5 * (x + 2) ** 2, 0)
    steepest, tenth = lr_find.suggest(rates, smoothed)
    assert steepest == pytest.approx(1e-3, rel=0.3)
    lowest = rates[np.argmin(smoothed)]
    assert tenth == pytest.approx(lowest / 10)
    assert steepest < lowest


def test_a_curve_that_only_rises_suggests_its_start():
    rates = np.logspace(-6, 0, 20)
    steepest, tenth = lr_find.suggest(rates, np.linspace(1, 5, 20))
    assert steepest == tenth == pytest.approx(1e-6)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("lr")
    return write_dataset(root / "work", sizes=(90, 30, 30))


def test_a_sweep_on_the_tiny_net_suggests_a_rate_below_the_divergence(work, tmp_path):
    options = SweepOptions(start=1e-4, end=1e3, steps=60, batch_size=16, seed=0)
    result = lr_find.sweep(tiny_net, data.load(work / "dataset", "train"), options,
                           log=lambda *a: None)
    # Adam at rates up to 1000 throws the tiny net off well before the end.
    assert 10 <= len(result.rates) < 60
    assert "passed 4x its minimum" in result.stopped
    assert result.smoothed[-1] > 4 * min(result.smoothed)
    assert all(math.isfinite(v) for v in result.losses)
    assert options.start <= result.suggestion <= options.end
    lowest = result.rates[int(np.argmin(result.smoothed))]
    assert result.suggestion <= lowest < result.rates[-1]
    lr_find.plot(result, tmp_path / "lr.png", "tiny")
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"


def test_the_command_writes_the_plot_and_prints_the_suggestion(work, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setattr(runner, "resolve_net", lambda name: tiny_net)
    monkeypatch.setattr(tf.compat.v1, "disable_eager_execution", lambda: None)
    out = tmp_path / "tiny.png"
    assert lr_find_tool.main(["--net", "tiny", "--work", str(work), "--steps", "30",
                              "--start", "1e-4", "--end", "100", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert f"suggested --lr: {numbers['suggestion']:.2g}" in printed
    assert 1e-4 <= numbers["suggestion"] <= 100 and len(numbers["rates"]) <= 30


@pytest.mark.parametrize("argv, words", [
    (["--start", "1", "--end", "0.1"], "--start 1 must be below --end 0.1"),
    (["--start", "0"], "--start: must be over 0"),
    (["--steps", "2"], "--steps: must be at least 5"),
    (["--net", "nope"], "unknown network 'nope'"),
])
def test_bad_options_exit_2(work, capsys, argv, words, monkeypatch):
    monkeypatch.setattr(tf.compat.v1, "disable_eager_execution", lambda: None)
    with pytest.raises(SystemExit) as exit_:
        cli.run(lr_find_tool.main, ["--net", "lenet5", "--work", str(work), *argv])
    assert exit_.value.code == 2 and words in capsys.readouterr().err
