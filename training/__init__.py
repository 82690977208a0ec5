"""Training, evaluation and inference for the graph builders of `nets/`.

The loop knows nothing of DICOM or XML: it reads the dataset stage's arrays, feeds them through
placeholders into a `tf.compat.v1` graph built by any builder with the signature of
ARCHITECTURE.md, and writes a run folder. The modules:

  batches   the batch order (a pure function of seed and step), augmentation, prefetching
  rules     the stop rule, patience and the learning-rate schedules (plain Python)
  model     the training graph around a builder, and loading a trained model for inference
  rundir    the run folder: its files, its state, its lock
  loop      the session loop: steps, evaluations, checkpoints, summaries, export
  metrics   accuracy, precision/recall/F1, confusion matrix, ROC AUC (numpy)
  plots     confusion matrix, learning curves, comparison plot (matplotlib, Agg)

Only `model` and `loop` import TensorFlow.
"""
