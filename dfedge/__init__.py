"""dfedge: run a region-indexed deepfake detector on phones and embedded cameras."""

__version__ = "0.1.0"

from .runtimes import Detector, Result, load  # noqa: E402 - after __version__, which submodules import

__all__ = ["Detector", "Result", "load", "__version__"]
