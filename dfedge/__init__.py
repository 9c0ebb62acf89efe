"""dfedge: run a region-indexed deepfake detector on phones and embedded cameras."""

from ._version import __version__
from .runtimes import Pipeline, Result, load

__all__ = ["Pipeline", "Result", "load", "__version__"]
