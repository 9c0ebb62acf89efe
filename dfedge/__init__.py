"""dfedge: run a region-indexed deepfake detector on phones and embedded cameras."""

from ._version import __version__
from .runtimes import Detector, Result, load

__all__ = ["Detector", "Result", "load", "__version__"]
