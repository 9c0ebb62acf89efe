"""Evaluation: per-sample scores, metrics, and the comparison of an artifact with its full-precision reference."""
