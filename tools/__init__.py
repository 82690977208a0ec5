"""Thin command-line stages: parse options, call `lidc`/`nets`/`training`, write artifacts."""
import os

# Quiets TensorFlow's C++ info logging. The few lines it prints while loading, before abseil's
# logging is initialised, ignore every level setting (an upstream abseil issue) and still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
