"""Inputs: aligned face crops from files, generated toy faces, datasets."""
