"""Tests of nets.scoping, the scoped layer settings modelled on TF-slim's arg_scope (whose
arg_scope_test.py these follow)."""
import threading

import pytest

from nets import layers, scoping
from nets.scoping import arg_scope, settings


@scoping.add_arg_scope(rate=0.0, mode="plain")
def first(inputs):
    """A layer with two settings."""
    return inputs


@scoping.add_arg_scope(rate=0.0)
def second(inputs):
    """A layer with one of them."""
    return inputs


def undeclared(inputs):
    return inputs


def values(layer):
    return vars(settings(layer))


def test_outside_any_scope_a_layer_has_its_defaults():
    assert values(first) == {"rate": 0.0, "mode": "plain"}
    assert scoping.arg_scoped_settings(first) == {"rate": 0.0, "mode": "plain"}
    assert scoping.has_arg_scope(first) and not scoping.has_arg_scope(undeclared)


def test_a_scope_sets_the_listed_layers_until_its_block_ends():
    with arg_scope([first], rate=0.5):
        assert values(first) == {"rate": 0.5, "mode": "plain"}
        assert values(second) == {"rate": 0.0}
    assert values(first) == {"rate": 0.0, "mode": "plain"}


def test_nested_scopes_the_innermost_value_wins_and_the_others_are_kept():
    with arg_scope([first, second], rate=0.5):
        with arg_scope([first], mode="folded"):
            assert values(first) == {"rate": 0.5, "mode": "folded"}
            with arg_scope([first, second], rate=0.25):
                assert values(first) == {"rate": 0.25, "mode": "folded"}
                assert values(second) == {"rate": 0.25}
            assert values(first) == {"rate": 0.5, "mode": "folded"}
        assert values(first) == {"rate": 0.5, "mode": "plain"}
        assert values(second) == {"rate": 0.5}


def test_a_saved_scope_is_entered_again_as_it_was():
    with arg_scope([first], rate=0.5, mode="folded") as saved:
        pass
    with arg_scope([first], rate=0.75):
        with arg_scope(saved) as entered:
            assert values(first) == {"rate": 0.5, "mode": "folded"}
            assert entered == {first: {"rate": 0.5, "mode": "folded"}}
    assert scoping.current_arg_scope() == {}
    with pytest.raises(ValueError, match="saved scope"):
        with arg_scope(saved, rate=0.1):
            pass


def test_the_current_scope_is_a_copy():
    with arg_scope([first], rate=0.5):
        scoping.current_arg_scope()[first]["rate"] = 1.0
        assert values(first)["rate"] == 0.5


def test_a_setting_a_layer_does_not_declare_is_refused_on_entry():
    with pytest.raises(TypeError, match="second has no setting mode; it has: rate"):
        with arg_scope([first, second], mode="folded"):
            pass
    with pytest.raises(TypeError, match="conv_relu has no setting fold_batch_norm"):
        with arg_scope([layers.conv_relu], fold_batch_norm=True):
            pass
    with pytest.raises(TypeError, match="no setting mode"):
        with arg_scope({second: {"mode": "folded"}}):
            pass
    assert scoping.current_arg_scope() == {}


def test_a_function_without_settings_or_a_lone_layer_is_refused():
    with pytest.raises(ValueError, match="undeclared takes no scoped settings"):
        with arg_scope([first, undeclared], rate=0.5):
            pass
    with pytest.raises(ValueError, match="undeclared"):
        settings(undeclared)
    with pytest.raises(TypeError, match="list or tuple"):
        with arg_scope(first, rate=0.5):
            pass


def test_the_scope_ends_when_its_block_raises():
    with pytest.raises(RuntimeError):
        with arg_scope([first], rate=0.5):
            raise RuntimeError("in the block")
    assert values(first)["rate"] == 0.0


def test_scopes_are_per_thread():
    seen = []
    entered, checked = threading.Event(), threading.Event()

    def other_thread():
        entered.wait()
        seen.append(values(first)["rate"])
        checked.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with arg_scope([first], rate=0.5):
        entered.set()
        checked.wait()
        assert values(first)["rate"] == 0.5
    thread.join()
    assert seen == [0.0]


def test_the_layer_groups_declare_their_setting():
    for layer in layers.WITH_BATCH_NORM:
        assert "fold_batch_norm" in scoping.arg_scoped_settings(layer)
    for layer in layers.WITH_WEIGHTS:
        assert scoping.arg_scoped_settings(layer)["weight_decay"] == 0.0
