"""Training, evaluation and inference for the graph builders of `nets/`.

The package knows nothing of DICOM or XML: it reads the dataset stage's arrays, feeds them through
placeholders into a `tf.compat.v1` graph built by any builder with the signature of
ARCHITECTURE.md, and writes run folders. The modules:

  options      the training options: defaults, command-line form, which ones make another run
  rundir       the run folder: its files, its lock; start, resume, clear, find the checkpoint
  runner       one training run from the dataset files to a finished run folder
  loop         the Trainer: steps, evaluations, checkpoints, summaries, export
  model        the training graph around a builder; the export; loading a trained model
  batches      the batch order (a pure function of seed and step), augmentation, prefetching
  rules        the stop rule, patience and the learning-rate schedules (plain Python)
  data         the dataset stage's arrays
  evaluation   a trained run on the test set: metrics and figures
  comparison   networks by training-set size
  prediction   patches from files through a trained run
  metrics      accuracy, precision/recall/F1, confusion matrix, ROC AUC (numpy)
  plots        confusion matrix, learning curves, comparison plot (matplotlib, Agg)
  environment  TensorFlow set up for the commands: graph mode, quiet

`options`, `rundir`, `rules`, `data`, `metrics` and `plots` do not import TensorFlow.
"""
