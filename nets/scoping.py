"""Settings that a scope gives the layers built inside it, after TF-slim's `arg_scope`.

Some choices concern every layer of a network at once: fold each batch norm into its convolution
(the inference form), add an L2 weight-decay loss for every weight matrix. Passing them down
through every builder, block and layer would change every signature for every new choice, and a
module-level flag would change what every builder builds, everywhere. A scope makes the choice once,
around the builder's call, and only there:

  with layers.arg_scope(layers.WITH_BATCH_NORM, fold_batch_norm=True):
    logits, end_points = builder(images, num_classes, False)

As in slim (tf_slim/ops/arg_scope.py), a scope is keyed by layer function, scopes nest (the
innermost value of a setting wins, the others are kept), and a scope can be saved and entered again:

  with layers.arg_scope([layers.dense], weight_decay=1e-4) as saved:
    ...
  with layers.arg_scope(saved):
    ...

Unlike slim, the scoped values are not defaults of keyword arguments: a layer declares the settings
it reads, with their defaults, by `@add_arg_scope(name=default, ...)`, and reads them with
`settings(layer)`. They are kept out of the layers' signatures, so a setting is made for a whole
scope or not at all, and a setting that a layer does not declare is refused when the scope is
entered, not when some layer happens to be called. A later choice is one more declared setting on
the layers that read it, as the compute type was (`dtype`, nets.layers.precision). The stack of
scopes is per thread, as TensorFlow's own name and variable scopes are.
"""
import contextlib
import threading
import types

_DECLARED = {}  # layer function -> {setting: default}
_LOCAL = threading.local()


def add_arg_scope(**defaults):
    """Declares the settings a layer reads from `arg_scope`, and their defaults.

    Usage:
      @add_arg_scope(weight_decay=0.0)
      def dense(inputs, units, scope='fc'):
        decay = settings(dense).weight_decay

    Args:
      **defaults: setting name -> the value outside any scope that sets it.

    Returns:
      A decorator that registers the function and returns it unchanged.
    """
    def declare(layer):
        _DECLARED[layer] = dict(defaults)
        return layer
    return declare


def has_arg_scope(layer):
    """Whether `layer` declares settings, i.e. may be named in an `arg_scope`."""
    return layer in _DECLARED


def arg_scoped_settings(layer):
    """The settings `layer` declares, with their defaults: {name: default}.

    Raises:
      ValueError: `layer` declares no settings.
    """
    _check_declared(layer)
    return dict(_DECLARED[layer])


def current_arg_scope():
    """The innermost scope: {layer: {setting: value}} (a copy; enter it again with arg_scope)."""
    return {layer: dict(values) for layer, values in _stack()[-1].items()}


@contextlib.contextmanager
def arg_scope(layers_or_scope, **values):
    """Sets `values` for the layers built in the block.

    Args:
      layers_or_scope: a list or tuple of layer functions that declare every name in `values`; or a
        scope saved earlier (the dict this context yields, or `current_arg_scope()`), entered again
        as it was, with no `values`.
      **values: setting name -> value, for every layer listed; they override the enclosing scopes'
        values of the same settings and keep the others.

    Yields:
      The scope now in force, {layer: {setting: value}}.

    Raises:
      TypeError: `layers_or_scope` is neither a list, a tuple nor a dict; or one of its layers
        does not declare one of the settings.
      ValueError: one of its functions declares no settings; or a saved scope is given with
        values.
    """
    if isinstance(layers_or_scope, dict):
        if values:
            raise ValueError("a saved scope is entered as it is: no settings beside it")
        scope = {}
        for layer, named in layers_or_scope.items():
            _check_settings(layer, named)
            scope[layer] = dict(named)
    elif isinstance(layers_or_scope, (list, tuple)):
        scope = current_arg_scope()
        for layer in layers_or_scope:
            _check_settings(layer, values)
            scope[layer] = {**scope.get(layer, {}), **values}
    else:
        raise TypeError("arg_scope takes a list or tuple of layers, or a saved scope (a dict); "
                        "got %r" % (layers_or_scope,))
    stack = _stack()
    stack.append(scope)
    try:
        yield scope
    finally:
        stack.pop()


def settings(layer):
    """The settings `layer` is built with here: its defaults, overridden by the scopes around.

    Returns:
      A namespace with one attribute per declared setting.

    Raises:
      ValueError: `layer` declares no settings.
    """
    _check_declared(layer)
    return types.SimpleNamespace(**{**_DECLARED[layer], **_stack()[-1].get(layer, {})})


def _check_settings(layer, names):
    _check_declared(layer)
    unknown = sorted(set(names) - set(_DECLARED[layer]))
    if unknown:
        raise TypeError("%s has no setting %s; it has: %s" % (
            layer.__name__, ", ".join(unknown), ", ".join(sorted(_DECLARED[layer]))))


def _check_declared(layer):
    if layer not in _DECLARED:
        raise ValueError("%s takes no scoped settings (it is not decorated with add_arg_scope)"
                         % getattr(layer, "__name__", layer))


def _stack():
    if not hasattr(_LOCAL, "stack"):
        _LOCAL.stack = [{}]
    return _LOCAL.stack
