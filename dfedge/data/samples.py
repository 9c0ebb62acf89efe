"""The unit every data source yields: a labelled, aligned face crop (`Sample`) in a sequence (`LabelledSet`).

Its own module, below the sources that produce samples (`sources.py`, `celebdf.py`, `sbi.py`), so that the
dispatcher `sources.open_set` can name every source without a source importing it back.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    id: str
    image: np.ndarray  # uint8 [448, 448, 3] RGB
    label: int  # 1 = fake, 0 = real
    video_id: str


class LabelledSet(ABC):
    """A sequence of Samples with a stable description (used in cache keys and manifests)."""

    description: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    @abstractmethod
    def labels(self) -> np.ndarray:
        """[N] int labels without decoding images."""

    def fingerprint(self) -> str:
        return hashlib.sha256(self.description.encode()).hexdigest()[:16]

    def crops(self, count: int | None = None) -> np.ndarray:
        """The first `count` crops (default all) as the graphs take them: [N, 3, 448, 448] float32 0-255."""
        n = len(self) if count is None else min(count, len(self))
        return np.stack([self[i].image for i in range(n)]).transpose(0, 3, 1, 2).astype(np.float32)
