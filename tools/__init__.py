"""Thin command-line stages: parse options, call `lidc`/`nets`/`training`, write artifacts."""
