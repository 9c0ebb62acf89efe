"""Calibration crops for static quantization: a folder of aligned crops, a list file or the toy world."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np

from .sources import open_set

DEFAULT_SIZE = 300
MIN_ADVISED = 100


@dataclass
class Calibration:
    images: np.ndarray  # [N, 3, 448, 448] float32 0-255
    source: str
    sha256: str  # of the crops' bytes, in order

    def record(self) -> dict:
        return {"data": self.source, "size": len(self.images), "sha256": self.sha256}

    def items(self) -> list[np.ndarray]:
        """One [1, 3, 448, 448] array per item, as the exported graphs take them."""
        return [self.images[i : i + 1] for i in range(len(self.images))]


def calibration_set(spec: str, size: int = DEFAULT_SIZE, region: str = "mouth") -> Calibration:
    if spec == "toy":
        spec = f"toy:train:{size}"
    data = open_set(spec, region)
    n = min(size, len(data))
    if n < MIN_ADVISED:
        warnings.warn(f"calibration set {spec}: only {n} crops (advised: >= {MIN_ADVISED}); ranges may be poor",
                      stacklevel=2)
    images = data.crops(n)
    return Calibration(images, f"{data.description} (first {n})", hashlib.sha256(images.tobytes()).hexdigest())
