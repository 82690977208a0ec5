"""The training graph around a network builder, and trained models loaded for inference.

The graph (Krizhevsky-style supervised training, as the paper): float32 NHWC `images` and one-hot
`labels` placeholders, an `is_training` switch defaulting to False, softmax cross-entropy, Adam
with a fed learning rate, and the train op tied to the batch-norm updates in UPDATE_OPS. The
tensors that inference needs get fixed names at the root of the graph ("images:0",
"probabilities:0"), so a checkpoint's meta graph or the saved model can be used without the
builder's code. The builder's end points and its logits are recorded in graph collections
("end_points/NAME", "logits"), which both keep, so that Grad-CAM (training.explain) can reach
any stage of a loaded model by its name.

Precision (`precision`: float32, bfloat16 or float16): the network computes in that type, built in
`nets.layers.precision`, whose custom getter keeps every variable float32 and casts it on read (the
official TF1 ResNet's way); the batch-norm statistics, the logits from there on, the softmax, the
loss and Adam stay float32. float16 also scales the loss dynamically (`_loss_scaled_minimize`);
bfloat16 has float32's exponent range and needs no scaling. The export is in the same type.

Usage:
  graph = tf.Graph()
  with graph.as_default():
    model = build(nets.get("resnet50"), image_shape=(64, 64, 1), num_classes=3, seed=0)
"""
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from lidc.errors import LidcError
from nets import folding, layers

v1 = tf.compat.v1

SIGNATURE_INPUT = "images"
SIGNATURE_OUTPUT = "probabilities"
# Graph collections naming what a builder returned: "end_points/NAME" holds the end point NAME,
# "logits" the softmax's input. Saver meta graphs and saved models keep collections.
END_POINTS_COLLECTION = "end_points/"
LOGITS_COLLECTION = "logits"


@dataclass(frozen=True)
class Model:
    """The training graph of one network: what the loop feeds, runs and saves.

    builder, image_shape, num_classes: what it was built from (the export rebuilds it).
    images, labels, is_training, learning_rate: the placeholders (is_training and learning_rate
      have defaults: False and 0.001).
    logits, probabilities: the network's outputs, before and after softmax.
    losses, correct: per example (cross-entropy; 1.0 where the top class is the label).
    loss, accuracy: their means; total_loss adds the regularisation losses, if any.
    global_step, train_op: Adam's step, tied to the batch-norm updates.
    end_points: the builder's named tensors.
    variables: the network's variables without the optimiser's (weights, batch-norm averages).
    precision: the type the network computes in (nets.layers.PRECISIONS).
    loss_scale: float16's dynamic loss scale and the count of the steps it skipped (a LossScale),
      None in the other precisions.
    """
    builder: Callable
    image_shape: tuple
    num_classes: int
    images: tf.Tensor
    labels: tf.Tensor
    is_training: tf.Tensor
    learning_rate: tf.Tensor
    logits: tf.Tensor
    probabilities: tf.Tensor
    losses: tf.Tensor
    loss: tf.Tensor
    total_loss: tf.Tensor
    correct: tf.Tensor
    accuracy: tf.Tensor
    global_step: tf.Variable
    train_op: tf.Operation
    end_points: dict
    variables: list
    precision: str = "float32"
    loss_scale: object = None


@dataclass(frozen=True)
class Loss:
    """What the loss adds to the cross-entropy: each class's weight (None: all 1) and the L2
    weight decay of the convolution and dense weights (0: none; nets.layers' weight_decay)."""
    class_weights: tuple = None
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Network:
    """What the inference form of a network is built from: its builder, the shape of one input,
    the number of classes, and the type it computes in. A Model has the same four attributes."""
    builder: Callable
    image_shape: tuple
    num_classes: int
    precision: str = "float32"


@dataclass(frozen=True)
class LossScale:
    """float16's dynamic loss scale, the rule of TF1's DynamicLossScale (and Keras'
    LossScaleOptimizer): the loss is multiplied by `scale` before the gradients and they are divided
    by it after, so that small gradients do not flush to zero in float16; a step whose gradients
    are not all finite is skipped (Adam leaves the weights and its moments alone; the global step
    still counts it) and halves the scale (not below 1); GROWTH_STEPS finite steps in a row double
    it. The three variables (under loss_scale/) are in the latest checkpoints, so a resumed run
    goes on with the scale it had."""
    scale: tf.Variable
    good_steps: tf.Variable
    skipped: tf.Variable

    INITIAL = 2.0 ** 15  # about half of float16's largest value: too high is soon lowered
    GROWTH_STEPS = 2000
    FACTOR = 2.0

    @classmethod
    def create(cls):
        """The variables, non-trainable, in the default graph."""
        def variable(name, dtype, value):
            return v1.get_variable(name, [], dtype, v1.constant_initializer(value),
                                   trainable=False)
        with v1.variable_scope("loss_scale"):
            return cls(variable("scale", tf.float32, cls.INITIAL),
                       variable("good_steps", tf.int64, 0),
                       variable("skipped_steps", tf.int64, 0))

    def update(self, finite):
        """The op that moves the scale and the counters after a step whose gradients were all
        finite or not (a boolean tensor)."""
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.GROWTH_STEPS)
        doubled = self.scale * self.FACTOR
        doubled = tf.where(tf.math.is_finite(doubled), doubled, self.scale)
        scale = tf.where(finite, tf.where(grow, doubled, self.scale),
                         tf.maximum(self.scale / self.FACTOR, 1.0))
        good = tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1,
                        tf.zeros([], tf.int64))
        return tf.group(self.scale.assign(scale), self.good_steps.assign(good),
                        self.skipped.assign_add(1 - tf.cast(finite, tf.int64)))


def build(builder, image_shape, num_classes, seed=0, loss=Loss(), precision="float32"):
    """Builds the training graph in the default graph.

    Args:
      builder: a network function `(images, num_classes, is_training) -> (logits, end_points)`.
      image_shape: (height, width, channels) of one input.
      num_classes: number of classes.
      seed: the graph-level seed, which fixes the initial weights and every seeded random op.
      loss: the Loss: class weights (an example's cross-entropy is multiplied by its class's
        weight) and weight decay.
      precision: the type the network computes in (nets.layers.PRECISIONS); float32 builds the
        very graph of a build without it.
    Returns:
      a Model.
    """
    v1.set_random_seed(seed)
    # Model.builder is then the recording one too: the export's inference form records its own.
    builder = recording_end_points(builder)
    images = v1.placeholder(tf.float32, [None, *image_shape], name=SIGNATURE_INPUT)
    labels = v1.placeholder(tf.float32, [None, num_classes], name="labels")
    is_training = v1.placeholder_with_default(False, [], name="is_training")
    # Fed every step from rules.learning_rate: the schedule stays a plain function of the step.
    learning_rate = v1.placeholder_with_default(0.001, [], name="learning_rate")
    # Created before the network so that its random ops can be seeded by the step (stateless
    # dropout is then a function of (seed, step) and survives a resume unchanged).
    global_step = v1.train.get_or_create_global_step()
    with layers.arg_scope(layers.WITH_WEIGHTS, weight_decay=loss.weight_decay), \
            layers.precision(precision):
        logits, end_points = builder(images, num_classes, is_training)
    # Softmax and loss in float32 (no op when the network computes in float32).
    logits = tf.cast(logits, tf.float32)
    # The network's own variables (weights and batch-norm averages), without the optimiser's:
    # what the best checkpoint and the export need, a third of what Adam's slots add.
    variables = [v for v in v1.global_variables() if v is not global_step]
    loss_scale = LossScale.create() if precision == "float16" else None
    probabilities = tf.nn.softmax(logits, name=SIGNATURE_OUTPUT)
    losses, mean_loss, total_loss = _losses(labels, logits, loss.class_weights)
    correct = tf.cast(tf.equal(tf.argmax(logits, 1), tf.argmax(labels, 1)), tf.float32,
                      name="correct")
    return Model(builder=builder, image_shape=tuple(image_shape), num_classes=num_classes,
                 images=images, labels=labels, is_training=is_training,
                 learning_rate=learning_rate, logits=logits, probabilities=probabilities,
                 losses=losses, loss=mean_loss, total_loss=total_loss, correct=correct,
                 accuracy=tf.reduce_mean(correct, name="accuracy"), global_step=global_step,
                 train_op=_train_op(total_loss, learning_rate, global_step, loss_scale),
                 end_points=end_points, variables=variables, precision=precision,
                 loss_scale=loss_scale)


def recording_end_points(builder):
    """The builder that also records its end points and logits in the default graph's
    collections (END_POINTS_COLLECTION + name, LOGITS_COLLECTION), where a loaded model finds
    them (Predictor.end_points, Predictor.logits).

    Args:
      builder: a network function `(images, num_classes, is_training) -> (logits, end_points)`.
    Returns:
      a network function of the same signature and results.
    """
    if getattr(builder, "records_end_points", False):
        return builder

    @functools.wraps(builder)
    def build_and_record(images, num_classes, is_training):
        logits, end_points = builder(images, num_classes, is_training)
        for name, tensor in end_points.items():
            v1.add_to_collection(END_POINTS_COLLECTION + name, tensor)
        v1.add_to_collection(LOGITS_COLLECTION, logits)
        return logits, end_points

    build_and_record.records_end_points = True
    return build_and_record


def _losses(labels, logits, class_weights=None):
    """(per-example cross-entropy (times its class's weight), its mean, the mean plus any
    regularisation losses)."""
    losses = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if class_weights is not None:
        weights = tf.constant(np.asarray(class_weights, np.float32), name="class_weights")
        losses = losses * tf.reduce_sum(labels * weights, axis=1)
    losses = tf.identity(losses, name="losses")
    loss = tf.reduce_mean(losses, name="loss")
    regularization = v1.get_collection(v1.GraphKeys.REGULARIZATION_LOSSES)
    total_loss = tf.add_n([loss] + regularization, name="total_loss") if regularization else loss
    return losses, loss, total_loss


def _train_op(total_loss, learning_rate, global_step, loss_scale=None):
    """Adam's step on `total_loss`, run after the batch-norm updates; loss-scaled with a
    LossScale."""
    optimizer = v1.train.AdamOptimizer(learning_rate)
    # Without this dependency batch norm's moving averages would never be updated.
    # GATE_NONE: the default gating makes every op's gradients wait for one another, which also
    # computes the gradient of the first convolution with respect to the images that nobody
    # uses. The results stay reproducible: an update of a resource variable copies it while a
    # gradient still holds its old value.
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        if loss_scale is not None:
            return _loss_scaled_minimize(optimizer, total_loss, global_step, loss_scale)
        return optimizer.minimize(total_loss, global_step=global_step, name="train_op",
                                  gate_gradients=v1.train.Optimizer.GATE_NONE)


def _loss_scaled_minimize(optimizer, total_loss, global_step, loss_scale):
    """Adam's step on `total_loss` with dynamic loss scaling (LossScale): the update is applied
    only when every unscaled gradient is finite; the global step counts every step."""
    scaled = optimizer.compute_gradients(total_loss * loss_scale.scale,
                                         gate_gradients=v1.train.Optimizer.GATE_NONE)
    pairs = [(gradient / loss_scale.scale, variable)
             for gradient, variable in scaled if gradient is not None]
    finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(gradient))
                                     for gradient, _ in pairs]), name="gradients_finite")
    applied = tf.cond(finite, lambda: optimizer.apply_gradients(pairs), tf.no_op)
    with tf.control_dependencies([applied, loss_scale.update(finite)]):
        return tf.group(global_step.assign_add(1), name="train_op")


def session_config():
    """Session options: GPU memory taken as needed, not the whole card; Grappler off.

    Grappler's rewrites of these hand-built graphs made a ResNet-50 step slower on the CPU, with
    no single pass to blame (bench/README.md), so the graph runs as written.
    """
    config = v1.ConfigProto()
    config.gpu_options.allow_growth = True
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return config


def device_description():
    """'GPU (names)' when TensorFlow sees a GPU (memory growth turned on), else 'CPU'."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by an earlier graph in this process
            pass
    if gpus:
        return f"GPU ({', '.join(g.name for g in gpus)})"
    return "CPU (TensorFlow sees no GPU)"


def run_in_batches(session, fetches, arrays, batch_size=256):
    """Runs per-example `fetches` over arrays fed in batches; concatenates the outputs.

    Args:
      session: the session to run in.
      fetches: list of tensors whose first dimension is the batch.
      arrays: dict placeholder -> array, all with the same number of rows.
      batch_size: rows per run.
    Returns:
      list of arrays, one per fetch.
    """
    rows = len(next(iter(arrays.values())))
    outputs = [[] for _ in fetches]
    for start in range(0, rows, batch_size):
        feed = {tensor: array[start:start + batch_size] for tensor, array in arrays.items()}
        for out, value in zip(outputs, session.run(fetches, feed)):
            out.append(value)
    return [np.concatenate(out) for out in outputs]


def _passing_custom_gradients(graph):
    """A context in which the ops loaded into `graph` pass gradients through tf.custom_gradient's
    IdentityN to the ops it wraps (for Grad-CAM).

    A custom gradient (nets.fast_ops.matmul) is a Python function that a saved graph does not keep:
    loaded, its IdentityN names a gradient nobody registered. Ours compute the ops' own gradients
    with faster kernels, so TensorFlow's gradients of the wrapped ops give the same values.
    """
    return graph.gradient_override_map({"IdentityN": "IdentityN"})


class Predictor:
    """A trained model in its own graph and session: images -> class probabilities.

    Use `Predictor.from_checkpoint` or `Predictor.from_saved_model`; close() (or `with`) frees it.
    """

    def __init__(self, graph, session, images, probabilities, source):
        self.graph = graph
        self.session = session
        self.images = images
        self.probabilities = probabilities
        self.source = source

    @classmethod
    def from_checkpoint(cls, prefix):
        """Loads a Saver checkpoint through its meta graph (no builder needed)."""
        graph = tf.Graph()
        with graph.as_default(), _passing_custom_gradients(graph):
            try:
                saver = v1.train.import_meta_graph(f"{prefix}.meta", clear_devices=True)
            except (OSError, tf.errors.OpError) as e:
                raise LidcError(f"{prefix}.meta", f"cannot load the checkpoint's graph ({e})")
            session = v1.Session(graph=graph, config=session_config())
            saver.restore(session, str(prefix))
        return cls(graph, session, graph.get_tensor_by_name(f"{SIGNATURE_INPUT}:0"),
                   graph.get_tensor_by_name(f"{SIGNATURE_OUTPUT}:0"), str(prefix))

    @classmethod
    def from_weights(cls, prefix, network):
        """The inference form of `network` (a Network: batch norm folded, computing in its
        precision, as the export) with the weights of the Saver checkpoint `prefix`: a run
        trained in one precision evaluated in another."""
        try:
            reader = tf.train.load_checkpoint(str(prefix))
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise LidcError(prefix, f"cannot read the checkpoint ({e})")
        values = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
        graph = tf.Graph()
        session = v1.Session(graph=graph, config=session_config())
        with graph.as_default():
            try:
                images, probabilities = _inference_form(
                    network, folding.fold_batch_norm(values), session)
            except KeyError as e:
                session.close()
                raise LidcError(prefix, f"holds no variable {e} of the network")
        return cls(graph, session, images, probabilities, str(prefix))

    @classmethod
    def from_saved_model(cls, export_dir):
        """Loads the `saved_model/` export and its serving signature."""
        graph = tf.Graph()
        session = v1.Session(graph=graph, config=session_config())
        with graph.as_default(), _passing_custom_gradients(graph):
            try:
                meta = v1.saved_model.loader.load(
                    session, [v1.saved_model.tag_constants.SERVING], str(export_dir))
            except (OSError, RuntimeError, tf.errors.OpError) as e:
                session.close()
                raise LidcError(export_dir, f"cannot load the saved model ({e})")
        signature = meta.signature_def[
            v1.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
        return cls(graph, session,
                   graph.get_tensor_by_name(signature.inputs[SIGNATURE_INPUT].name),
                   graph.get_tensor_by_name(signature.outputs[SIGNATURE_OUTPUT].name),
                   str(export_dir))

    def end_points(self):
        """The builder's end points recorded in the graph (training.model.recording_end_points),
        as {name: tensor} in the order the network computes them ({} for a model saved before
        they were recorded)."""
        order = {op: k for k, op in enumerate(self.graph.get_operations())}
        found = {}
        for key in self.graph.get_all_collection_keys():
            if key.startswith(END_POINTS_COLLECTION):
                tensors = self.graph.get_collection(key)
                if tensors:
                    found[key[len(END_POINTS_COLLECTION):]] = tensors[-1]
        # Collections come back from a meta graph in no set order; the ops keep theirs. Of two
        # names of one tensor ('block2/unit_4', 'block2') the shorter comes last.
        return dict(sorted(found.items(),
                           key=lambda item: (order[item[1].op], -len(item[0]), item[0])))

    @property
    def logits(self):
        """The network's logits: the recorded ones, else the input of the softmax that gives
        the probabilities."""
        recorded = self.graph.get_collection(LOGITS_COLLECTION)
        return recorded[-1] if recorded else self.probabilities.op.inputs[0]

    def predict(self, images, batch_size=256):
        """[N, C] float probabilities of `images` ([N, H, W, C] float32 in [0, 1])."""
        (probabilities,) = run_in_batches(
            self.session, [self.probabilities],
            {self.images: np.asarray(images, np.float32)}, batch_size)
        return probabilities

    def close(self):
        """Frees the session."""
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def export(session, model, export_dir):
    """Writes a saved model (serving signature images -> probabilities) to `export_dir`.

    The model is the network's inference form, in a graph of its own: is_training is fixed to
    False and each batch norm is folded into the convolution before it (nets.folding), which
    made ResNet-50 inference faster (bench/README.md).
    It holds the folded values of the network's variables in `session` (not Adam's slots) and
    gives the training graph's probabilities up to float32 rounding. It computes in the model's
    precision, its folded weights stored in that type (rounded once, from the float64 fold; half
    the size in bfloat16 or float16) rather than cast at every run; its probabilities are float32
    whatever the precision. Written to a temporary
    folder beside `export_dir` and renamed into place, so `export_dir` is always either the
    previous complete export or the new one (between the two renames, briefly none).
    """
    values = dict(zip((v.op.name for v in model.variables), session.run(model.variables)))
    export_dir = Path(export_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.", dir=export_dir.parent))
    try:
        staged = tmp / "model"  # the builder wants a folder that does not exist yet
        with tf.Graph().as_default() as graph, \
                v1.Session(graph=graph, config=session_config()) as inference:
            images, probabilities = _inference_form(model, folding.fold_batch_norm(values),
                                                    inference)
            builder = v1.saved_model.Builder(str(staged))
            signature = v1.saved_model.predict_signature_def(
                inputs={SIGNATURE_INPUT: images}, outputs={SIGNATURE_OUTPUT: probabilities})
            builder.add_meta_graph_and_variables(
                inference, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={
                    v1.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
                        signature})
            builder.save()
        if export_dir.exists():
            os.replace(export_dir, tmp / "old")  # removed with tmp below
        os.replace(staged, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _inference_form(network, values, session):
    """Builds `network` (a Network or a Model) with batch norm folded into the default graph,
    computing in its precision with its variables in that type, and sets its variables to
    `values` (rounded to their type) in `session`; returns (images, probabilities)."""
    # The initialisers' random ops are never run (the values are fed), but with op determinism
    # on they cannot even be made without a seed.
    v1.set_random_seed(0)
    images = v1.placeholder(tf.float32, [None, *network.image_shape], name=SIGNATURE_INPUT)
    with layers.arg_scope(layers.WITH_BATCH_NORM, fold_batch_norm=True), \
            layers.arg_scope(layers.WITH_DTYPE, dtype=tf.as_dtype(network.precision)):
        logits, _ = network.builder(images, network.num_classes, tf.constant(False))
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), name=SIGNATURE_OUTPUT)
    variables = v1.global_variables()
    session.run([v.initializer for v in variables],
                {v.initial_value: np.asarray(values[v.op.name]).astype(
                    v.dtype.base_dtype.as_numpy_dtype) for v in variables})
    return images, probabilities
