"""Tests of mixed precision: the networks computing in bfloat16 or float16 with float32 variables
(nets.layers.precision), float16's dynamic loss scaling (training.model.LossScale), the export and
evaluation in a chosen precision, and the float32 graph left exactly as it was."""
import contextlib
import json

import numpy as np
import pytest
import tensorflow as tf

import nets
from nets import fast_ops, layers, resnet_v1
from tests.test_training_helpers import blobs, train_config, write_dataset
from training import model as model_lib, options
from training.evaluation import EvalOptions, evaluate_run
from training.loop import Hooks
from training.model import Network, Predictor
from training.runner import run_training

v1 = tf.compat.v1
LOW = ("bfloat16", "float16")


def small_resnet(images, num_classes, is_training, scope="small"):
    """A ResNet v1 of two one-unit stages: on 16x16 inputs it has every kind of layer and fast path
    of ResNet-50 (stem, batch norm, 1x1 matmuls, the stride's subsampling, a 3x3 convolution on a
    2x2 map as shifted views, the dense logits)."""
    return resnet_v1.resnet_v1(images, num_classes, is_training, [(8, 1, 1), (16, 1, 2)],
                               scope=scope, stem_depth=4)


def build(precision, builder=small_resnet, seed=0):
    """(graph, Model) of `builder` on 16x16x1 blobs, 3 classes."""
    graph = tf.Graph()
    with graph.as_default():
        model = model_lib.build(builder, (16, 16, 1), 3, seed=seed, precision=precision)
    return graph, model


def feed(model, n=8, seed=0):
    """A training feed of n blobs."""
    x, label = blobs(n, 16, seed)
    return {model.images: x, model.labels: np.eye(3, dtype=np.float32)[label],
            model.is_training: True, model.learning_rate: 0.01}


def graph_bytes(graph):
    """The graph's serialised definition, less the process-wide counter that names each custom
    gradient (it differs between any two builds)."""
    definition = graph.as_graph_def()
    for node in definition.node:
        if "_gradient_op_type" in node.attr:
            del node.attr["_gradient_op_type"]
    return definition.SerializeToString(deterministic=True)


def test_precisions_are_spelled_alike_in_options_and_nets():
    assert options.PRECISIONS == layers.PRECISIONS
    option = {o.name: o for o in options.OPTIONS}["precision"]
    assert option.default == "float32" and option.identity
    assert "precision" in options.IDENTITY


@pytest.mark.parametrize("name", ["lenet5", "small"])
@pytest.mark.parametrize("is_training", [True, False])
def test_float32_builds_the_graph_of_a_build_without_precision(name, is_training):
    # A Python bool builds one mode without tf.cond, whose branch functions are named by a
    # process-wide counter too.
    builder = small_resnet if name == "small" else nets.get(name)
    graphs = []
    for scope in (contextlib.nullcontext, lambda: layers.precision("float32")):
        with tf.Graph().as_default() as graph, scope():
            v1.set_random_seed(0)
            builder(v1.placeholder(tf.float32, [None, 64, 64, 1]), 3, is_training)
        graphs.append(graph_bytes(graph))
    assert graphs[0] == graphs[1]


def test_the_float32_training_graph_has_no_cast_of_a_variable():
    graph, _ = build("float32")
    assert not [op.name for op in graph.get_operations() if op.name.endswith("_cast")]


@pytest.mark.parametrize("precision", LOW)
def test_low_precision_keeps_float32_variables_under_the_same_names(precision):
    graph32, model32 = build("float32")
    graph, model = build(precision)
    names = {v.op.name: (v.shape.as_list(), v.dtype.base_dtype) for v in model.variables}
    assert names == {v.op.name: (v.shape.as_list(), v.dtype.base_dtype)
                     for v in model32.variables}
    assert {dtype for _, dtype in names.values()} == {tf.float32}
    dtype = tf.as_dtype(precision)
    # Every convolution, product and batch norm computes in the low type...
    computing = [op for op in graph.get_operations()
                 if op.type in ("Conv2D", "MatMul", "FusedBatchNormV3")]
    assert computing and all(op.inputs[0].dtype == dtype for op in computing)
    assert all(model.end_points[name].dtype == dtype for name in ("block2", "features"))
    # ... and the logits from there on, the softmax and the loss are float32.
    assert model.logits.dtype == model.probabilities.dtype == model.loss.dtype == tf.float32
    assert (model.loss_scale is not None) == (precision == "float16")


def test_precision_refuses_another_type():
    with tf.Graph().as_default(), pytest.raises(ValueError, match="precision must be one of"):
        with layers.precision("float64"):
            pass


def weights(session, model):
    return session.run([v for v in model.variables if "weights" in v.op.name])


@pytest.mark.parametrize("precision", LOW)
def test_low_precision_trains_with_finite_float32_weights(precision):
    graph, model = build(precision)
    with graph.as_default(), v1.Session(graph=graph) as session:
        session.run(v1.global_variables_initializer())
        before = weights(session, model)
        losses = [session.run([model.train_op, model.loss], feed(model, seed=0))[1]
                  for _ in range(6)]
        after = weights(session, model)
        averages = session.run(v1.moving_average_variables())
        step = session.run(model.global_step)
        skipped = session.run(model.loss_scale.skipped) if model.loss_scale else 0
    assert step == 6 and skipped < 6  # every step counts; at least one was applied
    assert all(np.isfinite(w).all() for w in after + averages)
    assert all(np.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


def test_float16_skips_a_step_whose_gradients_overflow_and_halves_the_scale():
    graph, model = build("float16")
    scale = model.loss_scale
    with graph.as_default(), v1.Session(graph=graph) as session:
        slots = [v for v in v1.global_variables() if v.op.name.endswith("/Adam")]
        # The weights and Adam's moments must stay as they were; batch norm's averages may move.
        kept = [v for v in model.variables if v.trainable] + slots
        session.run(v1.global_variables_initializer())
        session.run(scale.scale.assign(1e30))  # every float16 gradient overflows
        before = session.run(kept)
        session.run(model.train_op, feed(model))
        after = session.run(kept)
        figures = session.run([scale.scale, scale.skipped, scale.good_steps, model.global_step])
    assert slots and len(kept) > len(slots)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert figures == [pytest.approx(5e29), 1, 0, 1]


def test_float16_doubles_the_scale_after_enough_finite_steps():
    graph, model = build("float16")
    scale = model.loss_scale
    with graph.as_default(), v1.Session(graph=graph) as session:
        session.run(v1.global_variables_initializer())
        session.run([scale.scale.assign(1.0), scale.good_steps.assign(scale.GROWTH_STEPS - 2)])
        session.run(model.train_op, feed(model))
        assert session.run([scale.scale, scale.good_steps]) == [1.0, scale.GROWTH_STEPS - 1]
        session.run(model.train_op, feed(model))
        assert session.run([scale.scale, scale.good_steps, scale.skipped]) == [2.0, 0, 0]


@pytest.mark.parametrize("precision", LOW)
@pytest.mark.parametrize("size,kernel,stride", [(8, 1, 1), (8, 1, 2), (2, 3, 1), (5, 3, 1)])
def test_fast_forms_give_the_plain_op_in_low_precision(precision, size, kernel, stride):
    rng = np.random.RandomState(size + kernel)
    x = rng.normal(size=(2, size, size, 16)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 16, 8)).astype(np.float32) / 4
    dtype = tf.as_dtype(precision)
    with tf.Graph().as_default(), v1.Session() as session:
        inputs, kernel_ = tf.constant(x), tf.constant(w)
        low = [tf.cast(t, dtype) for t in (inputs, kernel_)]
        outputs = [fast_ops.convolve(*low, stride), tf.nn.conv2d(inputs, kernel_, stride, "SAME")]
        grads = [tf.gradients(tf.reduce_sum(tf.cast(out, tf.float32) ** 2), [inputs, kernel_])
                 for out in outputs]
        (ours, reference), (ours_grads, reference_grads) = session.run([outputs, grads])
    assert ours.dtype == dtype.as_numpy_dtype
    np.testing.assert_allclose(ours.astype(np.float32), reference, rtol=0.05, atol=0.1)
    for ours_grad, reference_grad in zip(ours_grads, reference_grads):
        scale = np.abs(reference_grad).max()
        np.testing.assert_allclose(ours_grad / scale, reference_grad / scale, atol=0.03)


@pytest.fixture(scope="module")
def bfloat16_run(tmp_path_factory):
    """A run of the small ResNet (registered as 'small') trained in bfloat16 on the blobs, 300
    test patches; returns the folder holding work/ and runs/. 240 steps: enough for the
    batch-norm averages to forget their start, so that the answers are not all one class."""
    root = tmp_path_factory.mktemp("bfloat16")
    write_dataset(root / "work", sizes=(90, 30, 300))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(nets.NETWORKS, "small", small_resnet)
        run_training(train_config(root, net="small", name="small", precision="bfloat16",
                                  max_steps=240, eval_every=120),
                     hooks=Hooks(log=lambda *a: None))
        yield root


def test_a_bfloat16_run_records_its_precision_and_exports_bfloat16_weights(bfloat16_run):
    run = bfloat16_run / "runs" / "small"
    assert json.loads((run / "config.json").read_text())["precision"] == "bfloat16"
    with Predictor.from_saved_model(run / "saved_model") as predictor:
        dtypes = {v.dtype.base_dtype for v in predictor.graph.get_collection(
            v1.GraphKeys.GLOBAL_VARIABLES)}
        probabilities = predictor.predict(blobs(4, 16)[0])
    assert dtypes == {tf.bfloat16}  # batch norm folded: weights and biases only
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_bfloat16_and_float32_answers_of_the_same_weights_agree(bfloat16_run):
    """The brief's bar: the same class for at least 99% of the test patches, from the bfloat16
    export (what predict uses) and the float32 inference form of the same checkpoint; evaluate
    with and without --precision."""
    run = bfloat16_run / "runs" / "small"
    x = blobs(300, 16, seed=2)[0]
    prefix = tf.train.latest_checkpoint(str(run / "best"))
    with Predictor.from_weights(prefix, Network(small_resnet, (16, 16, 1), 3)) as predictor:
        float32 = predictor.predict(x)
    with Predictor.from_saved_model(run / "saved_model") as predictor:
        bfloat16 = predictor.predict(x)
    classes = float32.argmax(1)
    assert len(np.unique(classes)) == 3  # not one class for all: the agreement means something
    assert np.mean(classes == bfloat16.argmax(1)) >= 0.99
    np.testing.assert_allclose(bfloat16, float32, atol=0.05)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(nets.NETWORKS, "small", small_resnet)
        reports = [evaluate_run(bfloat16_run / "runs", "small", bfloat16_run / "work",
                                EvalOptions(bootstrap=0, precision=precision),
                                log=lambda *a: None) for precision in (None, "float32")]
    assert [r["precision"] for r in reports] == ["bfloat16", "float32"]  # None: the run's own
    assert abs(reports[0]["accuracy"] - reports[1]["accuracy"]) <= 0.01


def test_train_compare_and_evaluate_take_precision():
    from tools import compare, evaluate, train

    assert train.build_parser().parse_args(["--net", "lenet5"]).precision == "float32"
    assert compare.build_parser().parse_args(["--precision", "bfloat16"]).precision == "bfloat16"
    assert evaluate.build_parser().parse_args(["--name", "a"]).precision is None
    assert evaluate.build_parser().parse_args(
        ["--name", "a", "--precision", "float16"]).precision == "float16"
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--precision", "float64"])
