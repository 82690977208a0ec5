"""The options of a training run: one table, read by the loop (defaults), by the commands
(their command-line form) and by resume and compare (which of them make another run).

A run's options are a dict keyed by these names (argparse dests), saved as its config.json.

    config = {**DEFAULTS, "net": "resnet50", "name": "demo", ...}
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """One training option: its name (the argparse dest), default, type, help and role.

    identity: the option fixes which steps the run takes (the batches, the learning rates, the
      initial weights), so a resumed run must keep it.
    compared: a finished run trained with another value is another experiment (compare).
    """
    name: str
    default: object
    help: str
    type: type = None
    choices: tuple = None
    identity: bool = False
    compared: bool = False
    bounds: tuple = (None, None)
    open_ends: tuple = (False, False)
    aliases: tuple = ()

    @property
    def flag(self):
        """The command-line flag: --batch-size for batch_size."""
        return "--" + self.name.replace("_", "-")


SCHEDULES = ("constant", "exponential", "cosine")
# training.metrics.STOP_METRICS, spelled here so that this module stays free of numpy.
STOP_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
# nets.layers.PRECISIONS, spelled here so that this module stays free of TensorFlow.
PRECISIONS = ("float32", "bfloat16", "float16")

OPTIONS = (
    Option("batch_size", 16, "patches per step (paper: 16)", int, identity=True,
           bounds=(1, None)),
    Option("lr", 0.001, "Adam's learning rate (paper: 0.001)", float, identity=True,
           bounds=(0, None), open_ends=(True, False)),
    Option("lr_schedule", "constant", "constant; exponential: lr * lr_decay ** (step / "
           "lr_decay_steps); cosine: annealed to 0 at --max-steps", str, SCHEDULES,
           identity=True),
    Option("lr_decay", 0.96, "rate of the exponential schedule", float, identity=True,
           bounds=(0, 1), open_ends=(True, False)),
    Option("lr_decay_steps", 1000, "steps per --lr-decay of the exponential schedule", int,
           identity=True, bounds=(1, None)),
    Option("min_steps", 5000, "the accuracy threshold applies only past this step (paper: 5000)",
           int, compared=True, bounds=(0, None)),
    Option("stop_metric", "accuracy", "the validation figure that stops the run (with "
           "--stop-threshold), picks the best checkpoint and, unless it is accuracy, is watched "
           "by --patience (accuracy: the paper's)", str, STOP_METRICS, compared=True),
    Option("stop_accuracy", 0.90, "stop once the stop metric on validation is over this "
           "(paper: accuracy 0.90)", float, compared=True, bounds=(0, 1),
           aliases=("--stop-threshold",)),
    Option("max_steps", 20000, "stop here in any case", int, compared=True, bounds=(1, None)),
    Option("eval_every", 100, "steps between validation evaluations (and checkpoints)", int,
           compared=True, bounds=(1, None)),
    Option("patience", 0, "stop after this many evaluations without a better validation "
           "figure: the loss with the paper's --stop-metric accuracy, else the stop metric "
           "(0: off)", int, compared=True, bounds=(0, None)),
    Option("augment", False, "random rotations by multiples of 90 degrees and flips", bool,
           identity=True),
    Option("weight_decay", 0.0, "L2 weight decay of the convolution and dense weights, added to "
           "the loss (0: none, the paper's)", float, identity=True, bounds=(0, None)),
    Option("class_weights", "none", "balanced: weigh each class's loss by N / (K n_c), so that "
           "every class counts as much (none: the paper's)", str, ("none", "balanced"),
           identity=True),
    Option("sampler", "uniform", "balanced: draw each batch slot's class uniformly, then a patch "
           "of it (uniform: epochs of shuffled patches, the paper's)", str,
           ("uniform", "balanced"), identity=True),
    Option("train_size", None, "train on a stratified subset of this many patches; none: all",
           int, identity=True, bounds=(1, None)),
    Option("init_from", None, "start a ResNet from the weights of Keras' ResNet50 (101, 152) in "
           "this .h5 file, e.g. ImageNet's resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 "
           "(its classifier only if it has the dataset's classes; training.keras_weights); a "
           "resumed run keeps its checkpoint and refuses another file", str, identity=True),
    Option("precision", "float32", "the type the network computes in; its variables, the "
           "batch-norm statistics, the softmax and the loss stay float32 (bfloat16: float32's "
           "range, fast on CPUs with AVX512_BF16 or AMX and on recent GPUs; float16: with dynamic "
           "loss scaling, for GPUs)", str, PRECISIONS, identity=True),
    Option("deterministic", False, "turn on TensorFlow's op determinism: the same seed gives the "
           "same weights (slower on a GPU)", bool),
)

DEFAULTS = {o.name: o.default for o in OPTIONS}
# Options outside the table that a run's identity also depends on; "dataset" is the digest of the
# dataset stage's files the run trains on (training.data.dataset_digest), "init_from_sha1" that
# of the --init-from file (training.keras_weights.source_sha1), both taken when a run starts.
IDENTITY = ("net", *(o.name for o in OPTIONS if o.identity), "seed", "dataset", "init_from_sha1")
# Compare reuses a finished run trained with the same options; it checks the --init-from file by
# its path only (its SHA-1 is taken when a run starts, training.runner).
COMPARED = tuple(k for k in IDENTITY if k != "init_from_sha1") + tuple(
    o.name for o in OPTIONS if o.compared)
# How many of the latest checkpoints a run keeps (besides the best one): the latest is all a
# resume needs, and a ResNet-50 checkpoint with Adam's slots is about 280 MB.
KEEP_CHECKPOINTS = 1


def identity(config):
    """The options that must match for `config` to continue a saved run (with the cosine
    schedule, max_steps decides every step's learning rate, so it counts too)."""
    return IDENTITY + (("max_steps",) if config.get("lr_schedule") == "cosine" else ())
