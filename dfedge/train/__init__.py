"""Fitting and training: the toy models, probes."""
