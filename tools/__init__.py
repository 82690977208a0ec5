"""Thin command-line stages: each parses its options, calls `lidc`/`training`, and prints."""
