"""Training, evaluation and inference for the graph builders of `nets/`.

The package knows nothing of DICOM or XML: it reads the dataset stage's arrays, feeds them through
placeholders into a `tf.compat.v1` graph built by any builder with the signature of
ARCHITECTURE.md, and writes run folders. The modules:

  options        the training options: defaults, command-line form, which ones make another run
  rundir         the run folder: its files, its lock; start, resume, clear, find the checkpoint
  runner         one training run from the dataset files to a finished run folder
  loop           the Trainer: steps, evaluations, checkpoints, summaries, export
  model          the training graph around a builder (precision, loss scaling); the export;
                 loading a trained model (Predictor)
  batches        the batch order (a pure function of seed and step), augmentation, the balanced
                 sampler, prefetching
  rules          the stop rule, patience and the learning-rate schedules (plain Python)
  data           the dataset stage's arrays, checked against their manifest
  keras_weights  Keras' ResNet weights from an .h5 file for our ResNets (train --init-from)
  evaluation     a trained run on the test set: metrics, figures, explanations, eval/
  metrics        accuracy, balanced accuracy, precision/recall/F1, confusion matrix, ROC AUC,
                 calibration, figures per lesion (numpy)
  uncertainty    95% bootstrap confidence intervals, resampling test patients
  tta            test-time augmentation: the softmax averaged over symmetries of the square
  explain        Grad-CAM heat maps and galleries of confident and uncertain test patches
  plots          confusion matrix, learning curves, ROC, calibration, comparison (matplotlib, Agg)
  report         self-contained HTML reports of a run and of a comparison
  comparison     networks by training-set size and seed, locally or as Ray tasks
  prediction     patches from files through a trained run, as text, CSV or JSON
  lr_find        the learning-rate range test
  environment    TensorFlow set up for the commands: graph mode, quiet
  viewer/        the case viewer: CT slices, readers' marks and a run's probabilities in a local
                 web page, or as files

`options`, `rundir`, `rules`, `data`, `batches`, `metrics`, `uncertainty`, `tta`, `plots`,
`report`, `environment` and `viewer` do not import TensorFlow when they are imported.
"""
