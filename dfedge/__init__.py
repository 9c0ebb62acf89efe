"""dfedge: run a region-indexed deepfake detector on phones and embedded cameras."""

__version__ = "0.1.0"
