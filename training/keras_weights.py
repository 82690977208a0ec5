"""The weights of Keras' ResNet (`tf.keras.applications.ResNet50`, and 101 and 152 alike) for the
ResNets of `nets.resnet_v1`: read from an .h5 file, renamed, and adapted to our layers, so that a
run can start from ImageNet's weights (`train --init-from FILE.h5`).

Two file layouts are read, told apart by their contents rather than their names:
  Keras 2 (`resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`, the ImageNet files Keras
    downloads; `save_weights` or `save` to a plain `.h5`): the root, or its `model_weights` group,
    lists its layers in the attribute `layer_names`; each layer's group lists its weights in
    `weight_names` ('conv1_conv/kernel:0', ...), the datasets under those paths.
  Keras 3 (`save_weights` to `.weights.h5`): `layers/<class-named group>/vars/0, 1, ...`, the
    layer's name in the `name` attribute of `vars`, each weight known by its position (a
    convolution's kernel and bias; a batch norm's gamma, beta, moving_mean, moving_variance; the
    dense layer's kernel and bias).

Keras' layers and ours (under the network's scope, e.g. resnet50/):
  conv1_conv, conv1_bn                      conv1 (weights; bn/gamma, beta, moving_mean, ...)
  convS_blockU_{0,1,2,3}_{conv,bn}          block{S-1}/unit_U/bottleneck/{shortcut,conv1,conv2,conv3}
  predictions (kernel, bias)                logits (weights, biases)

What is adapted, each exactly (up to float32 rounding) in inference:
  - Keras' convolutions have biases, ours none, since batch norm follows each: with the moving
    mean m, BN(conv + b) = gamma (conv - (m - b)) / sqrt(var + eps) + beta, so b goes into the
    moving mean, m - b. In training the batch mean absorbs b all the same.
  - Keras' batch-norm epsilon is 1.001e-5, ours 1e-3 (nets.layers.BATCH_NORM_EPSILON, one for the
    whole project): the moving variance becomes var + 1.001e-5 - 1e-3, so that var' + 1e-3 =
    var + 1.001e-5. Where var < 0.00099 that is below 0, a variance in name only; inference stays
    exact, and training moves it toward the batches' variances. Training normalises each batch
    with 1e-3, as every run here does: that differs from Keras only for channels whose batch
    variance is not well above 1e-3.
  - A network of 1-channel images gets the stem kernels summed over the file's 3 channels:
    conv(x repeated on RGB, W) = conv(x, W_R + W_G + W_B). A 3-channel network takes them as they
    are.
  - The classifier is loaded when it has the network's classes; otherwise it is dropped and the
    logits layer keeps its initialisation.
Every other weight must match one variable by name and shape, and every variable one weight:
anything else stops with the file, the names and both shapes. The older keras_applications
ResNet50 file (Caffe's layer names: bn_conv1, res2a_branch2a, ...) is refused with a pointer to
the current one.

Why the variance and not a batch-norm epsilon per network (a scoped setting of nets.layers): the
checkpoints, the folded export, evaluation and every resumed run would then have to carry it;
shifting the imported variances keeps one epsilon for the project and is exact where the imported
values are used as they are, in inference.

Not adapted: the inputs. ImageNet's ResNet50 was trained on 224x224 RGB images in Caffe's
preprocessing (BGR, 0-255, minus the ImageNet mean); our patches are 64x64 CT windowed to [0, 1],
so the stem sees values about 100 times smaller. Training normalises with each batch's statistics
and absorbs that, but the moving averages start as ImageNet's and need a few hundred steps (decay
0.99) to become the patches': the first evaluations of such a run say little.

Usage:
  imported = import_weights("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", variables)
  assign(session, variables, imported.values)
"""
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lidc.errors import LidcError
from nets.layers import BATCH_NORM_EPSILON

# The epsilon of every batch norm of Keras' ResNet (keras/src/applications/resnet.py).
KERAS_EPSILON = 1.001e-5
# Our bottleneck's convolutions in the order of Keras' _0_ to _3_ (_0_ is the projection).
_BRANCHES = ("shortcut", "conv1", "conv2", "conv3")
_BLOCK = re.compile(r"conv(\d+)_block(\d+)_(\d)_(conv|bn)$")
# A Keras 3 file knows a layer's weights by position only.
_BATCH_NORM = ("gamma", "beta", "moving_mean", "moving_variance")
_POSITIONS = {"conv": ("kernel", "bias"), "bn": _BATCH_NORM, "predictions": ("kernel", "bias")}


@dataclass(frozen=True)
class Imported:
    """What `import_weights` made of a file for a network.

    values: {variable name: float32 array} for the variables the file gives.
    loaded: the names of those variables, in the network's order.
    initial: the names of the variables left at their initialisation (the logits layer, when the
      file has no classifier or one of other classes).
    notes: what was adapted or dropped, one sentence each.
    """
    values: dict
    loaded: tuple
    initial: tuple
    notes: tuple

    def report(self, path):
        """Lines for the run's log: what was loaded from `path`, what was left as it was."""
        count = sum(int(np.prod(value.shape)) for value in self.values.values())
        lines = [f"{path}: {len(self.loaded)} variables ({count:,} values) loaded from Keras' "
                 f"ResNet"]
        lines.append("  left at their initialisation: " + (", ".join(self.initial) or "none"))
        lines += [f"  {note}" for note in self.notes]
        return lines


def import_weights(path, variables):
    """The values of Keras' ResNet weights in `path` for the network of `variables`.

    Args:
      path: an .h5 file in the Keras 2 or the Keras 3 layout (module docstring).
      variables: the network's variables (tf.Variable, or anything with `.op.name` and `.shape`),
        all under one scope, as training.model.Model.variables.

    Returns:
      An Imported.

    Raises:
      LidcError: the file is not a Keras weights file, holds a layer that is not Keras' ResNet's
        or one the network lacks, lacks a weight, or a weight's shape does not fit its
        variable's (the message names the file, both names and both shapes); or the network
        has variables besides its classifier's that the file does not give.
    """
    shapes = {v.op.name: tuple(int(d) for d in v.shape) for v in variables}
    scope = _network_scope(shapes, path)
    ours, notes = network_values(read_h5(path), path)
    _check_names(shapes, ours, scope, path)
    values, initial = {}, []
    for name, shape in shapes.items():
        if name[len(scope):] not in ours:  # a file without classifier (_check_names)
            initial.append(name)
            _note(notes, "the file has no classifier (Keras' include_top=False)")
            continue
        value, source = ours[name[len(scope):]]
        fitted, note = _fitted(name[len(scope):], value, shape)
        _note(notes, note)
        if fitted is None:
            initial.append(name)
        elif fitted.shape != shape:
            raise LidcError(path, f"{source} has shape {list(value.shape)}, the network's "
                                  f"{name} {list(shape)}")
        else:
            values[name] = fitted
    return Imported(values, tuple(n for n in shapes if n in values), tuple(initial), tuple(notes))


def source_sha1(path):
    """The SHA-1 (hex) of the Keras weights file at `path`, once it is known to hold Keras'
    ResNet (None for None): what a run records of the file it starts from, so that resuming it
    with another file refuses. Whether the weights fit the network is known only when it is
    built (import_weights).

    Raises:
      LidcError: the file cannot be read, or does not hold Keras' ResNet.
    """
    if path is None:
        return None
    network_values(read_h5(path), path)
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise LidcError(path, f"cannot read the weights file ({e.strerror or e})") from None
    return digest.hexdigest()


def assign(session, variables, values):
    """Sets each of `variables` named in `values` ({name: array}) to its value in `session`, by
    running its initialiser with the value fed, so the graph gains no op."""
    chosen = [v for v in variables if v.op.name in values]
    session.run([v.initializer for v in chosen],
                {v.initial_value: values[v.op.name] for v in chosen})


def read_h5(path):
    """Every weight of a Keras weights file: {(layer name, weight name): array}, e.g.
    ('conv1_conv', 'kernel'), in either layout (module docstring).

    Raises:
      LidcError: no such file, not an HDF5 file, or neither layout.
    """
    if not Path(path).is_file():
        raise LidcError(path, "no such weights file")
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "model_weights" in f:
                return _read_keras2(f if "layer_names" in f.attrs else f["model_weights"], path)
            if "layers" in f:
                return _read_keras3(f, path)
    except OSError as e:
        raise LidcError(path, f"not a readable HDF5 file ({e})") from None
    except KeyError as e:  # a layer or weight listed without its group or dataset
        raise LidcError(path, f"an incomplete Keras weights file ({e})") from None
    raise LidcError(path, "not a Keras weights file: neither Keras 2's layer_names nor Keras 3's "
                          "layers/ group")


def network_values(weights, path):
    """Keras' weights as our variables' values, the biases folded into the batch norms and the
    epsilon difference into the moving variances.

    Args:
      weights: {(layer, weight): array}, as read_h5 gives.
      path: the file, for the messages.

    Returns:
      ({name under the network's scope: (array, the Keras weight it came from)}, [notes saying
      what was adapted]).

    Raises:
      LidcError: a layer that is not Keras' ResNet's, or a weight missing.
    """
    layers = {}
    for (layer, weight), value in weights.items():
        layers.setdefault(layer, {})[weight] = np.asarray(value)
    ours, notes = {}, []
    for layer, layer_weights in sorted(layers.items()):
        scope = our_scope(layer)
        if scope is None:
            raise LidcError(path, f"layer {layer!r} is not one of Keras' ResNet "
                                  f"(conv1_conv, conv2_block1_1_bn, ..., predictions)"
                            + _older_names_hint(layer))
        if layer.endswith("_bn"):
            bias = layers.get(layer[:-len("_bn")] + "_conv", {}).get("bias")
            ours.update(_batch_norm(layer, layer_weights, bias, scope, path))
        else:
            ours.update(_kernel_and_bias(layer, layer_weights, scope, path))
    if any(layer.endswith("_conv") and "bias" in w for layer, w in layers.items()):
        notes.append("convolution biases folded into the batch norms' moving means")
    if any(layer.endswith("_bn") for layer in layers):
        notes.append(f"moving variances shifted by {KERAS_EPSILON:g} - {BATCH_NORM_EPSILON:g} "
                     "(Keras' batch-norm epsilon and ours)")
    return ours, notes


def our_scope(layer):
    """Our scope of Keras layer `layer`, under the network's ('conv2_block1_0_conv' ->
    'block1/unit_1/bottleneck/shortcut'); None for a layer that is not Keras' ResNet's."""
    if layer in ("conv1_conv", "conv1_bn"):
        return "conv1"
    if layer == "predictions":
        return "logits"
    match = _BLOCK.match(layer)
    if match is None or int(match[1]) < 2 or int(match[3]) >= len(_BRANCHES):
        return None
    stage, unit, branch = int(match[1]), int(match[2]), int(match[3])
    return f"block{stage - 1}/unit_{unit}/bottleneck/{_BRANCHES[branch]}"


def _read_keras2(group, path):
    weights = {}
    for layer in _string_list(group.attrs, "layer_names"):
        layer_group = group[layer]
        for name in _string_list(layer_group.attrs, "weight_names"):
            # 'conv1_conv/kernel:0'; a model nested in another prefixes its own name.
            parts = name.split("/")
            key = (parts[-2] if len(parts) > 1 else layer, parts[-1].split(":")[0])
            if key in weights:
                raise LidcError(path, f"two weights named {'/'.join(key)}")
            weights[key] = np.asarray(layer_group[name])
    return weights


def _read_keras3(root, path):
    weights = {}

    def visit(name, node):
        if not (isinstance(node, h5py.Group) and name.split("/")[-1] == "vars" and len(node)):
            return
        layer = _text(node.attrs.get("name", name.split("/")[-2]))
        kinds = _positions(layer, len(node))
        if len(node) > len(kinds):
            raise LidcError(path, f"{name}: {len(node)} weights, where a layer named {layer!r} "
                                  f"has {len(kinds)} ({', '.join(kinds)})")
        for index in range(len(node)):
            weights[(layer, kinds[index])] = np.asarray(node[str(index)])

    root["layers"].visititems(visit)
    return weights


def _positions(layer, count):
    """The names of the `count` weights of a Keras 3 layer by position, from the kind its name
    says; '0', '1', ... for a layer that is not Keras' ResNet's, which network_values refuses."""
    for suffix, kinds in _POSITIONS.items():
        if layer == suffix or layer.endswith("_" + suffix):
            return kinds
    return tuple(str(i) for i in range(count))


def _string_list(attrs, name):
    """An attribute list of names, which Keras splits into NAME0, NAME1, ... when it is too long
    for one HDF5 attribute."""
    if name in attrs:
        return [_text(n) for n in attrs[name]]
    names, chunk = [], 0
    while f"{name}{chunk}" in attrs:
        names += [_text(n) for n in attrs[f"{name}{chunk}"]]
        chunk += 1
    return names


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _batch_norm(layer, weights, bias, scope, path):
    """Our batch norm's four values from Keras' (and the preceding convolution's bias)."""
    missing = [k for k in _BATCH_NORM if k not in weights]
    if missing:
        raise LidcError(path, f"{layer} lacks {', '.join(missing)}")
    values = {k: np.asarray(weights[k], np.float64) for k in _BATCH_NORM}
    if bias is not None:
        if bias.shape != values["moving_mean"].shape:
            raise LidcError(path, f"{layer[:-3]}_conv/bias has shape {list(bias.shape)}, "
                                  f"{layer}/moving_mean {list(values['moving_mean'].shape)}")
        values["moving_mean"] = values["moving_mean"] - bias
    values["moving_variance"] = values["moving_variance"] + (KERAS_EPSILON - BATCH_NORM_EPSILON)
    return {f"{scope}/bn/{k}": (values[k].astype(np.float32), f"{layer}/{k}")
            for k in _BATCH_NORM}


def _kernel_and_bias(layer, weights, scope, path):
    """A convolution's kernel (its bias goes to the batch norm), or the dense layer's kernel and
    bias."""
    if "kernel" not in weights:
        raise LidcError(path, f"{layer} lacks its kernel")
    ours = {f"{scope}/weights": (np.asarray(weights["kernel"], np.float32), f"{layer}/kernel")}
    if layer == "predictions":
        if "bias" not in weights:
            raise LidcError(path, f"{layer} lacks its bias")
        ours[f"{scope}/biases"] = (np.asarray(weights["bias"], np.float32), f"{layer}/bias")
    return ours


def _fitted(name, value, shape):
    """(value for the variable `name` of `shape`, a note), where the stem and the classifier may
    differ from the file: (None, note) for a classifier of other classes."""
    if name == "conv1/weights" and value.ndim == 4 and value.shape[2] == 3 and shape[2:3] == (1,):
        return (value.astype(np.float64).sum(axis=2, keepdims=True).astype(np.float32),
                "stem kernels summed over the file's 3 input channels (for 1-channel images)")
    if name.startswith("logits/") and value.shape[-1] != shape[-1] and \
            value.shape[:-1] == tuple(shape[:-1]):
        return None, (f"the file's classifier (predictions, {value.shape[-1]} classes) dropped: "
                      f"the network has {shape[-1]}")
    return value, None


def _network_scope(shapes, path):
    """'resnet50/': the scope every variable is under."""
    scopes = {name.split("/")[0] for name in shapes}
    if len(scopes) != 1:
        raise LidcError(path, f"the network's variables are under {len(scopes)} scopes "
                              f"({', '.join(sorted(scopes))}), not one")
    return scopes.pop() + "/"


def _check_names(shapes, ours, scope, path):
    """Refuses a network with variables the file does not give (other than the classifier's,
    which a file without one leaves at their initialisation), and a file with weights the network
    has no variable for: not Keras' ResNet, or a ResNet of another depth."""
    missing = [name for name in shapes
               if name[len(scope):] not in ours and not name[len(scope):].startswith("logits/")]
    if missing:
        raise LidcError(path, "no weight for the network's " + _listed(missing)
                        + ": --init-from reads Keras' ResNet into our ResNets "
                          "(resnet50, resnet101, resnet152)")
    unused = sorted(source for key, (_, source) in ours.items() if scope + key not in shapes)
    if unused:
        raise LidcError(path, f"the network {scope[:-1]} has no variable for "
                        + _listed(unused) + " (a deeper ResNet's file?)")


def _note(notes, note):
    if note and note not in notes:
        notes.append(note)


def _listed(names, most=5):
    names = list(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _older_names_hint(layer):
    """Keras' ResNet50 before 2019 (keras_applications' resnet50.py) named its layers after
    Caffe's (bn_conv1, res2a_branch2a, fc1000), with another batch-norm epsilon."""
    if layer in ("bn_conv1", "fc1000") or re.match(r"(res|bn)\d[a-z]_branch", layer):
        return ("; this is the older keras_applications ResNet50's file (Caffe's layer names), "
                "not read here: take resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 from "
                "https://storage.googleapis.com/tensorflow/keras-applications/resnet/")
    return ""
