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
    unit = "sample"  # what one unit of work is (`units`, `expand`): a sample, or a video

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    @abstractmethod
    def labels(self) -> np.ndarray:
        """[N] int labels without decoding images."""

    def units(self) -> int:
        """How many independent pieces of work the set splits into, for an engine that fans out (dfedge.distributed):
        one per sample here; one per video in sets that decode a video at a time."""
        return len(self)

    def expand(self, unit: int) -> tuple[list[Sample], list[dict]]:
        """A unit's samples in set order, and the problems met making them: a sample that cannot be read is a
        problem record ({"unit", "kind", "detail"}), not an exception, so the rest of the set is still scored."""
        from .images import ImageError

        try:
            return [self[unit]], []
        except (ImageError, OSError) as e:
            return [], [{"unit": unit, "kind": "unreadable", "detail": str(e)}]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.description.encode()).hexdigest()[:16]

    def crops(self, count: int | None = None) -> np.ndarray:
        """The first `count` crops (default all) as the graphs take them: [N, 3, 448, 448] float32 0-255."""
        n = len(self) if count is None else min(count, len(self))
        return np.stack([self[i].image for i in range(n)]).transpose(0, 3, 1, 2).astype(np.float32)
