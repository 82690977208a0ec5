"""Thin command-line stages: parse options, call `lidc`/`nets`/`training`, write artifacts."""
import os

# TensorFlow's C++ start-up chatter (CUDA probes, CPU feature notes) drowns the commands' own
# output; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
