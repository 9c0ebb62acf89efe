"""The face detector interface: a Face, what a detector is (FaceDetector), and a detector's row (its nets)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

MIN_FACE = 20  # the smallest face side scored, in pixels, unless a detector's settings say otherwise


@dataclass(frozen=True, eq=False)
class Face:
    box: np.ndarray  # float32 [4]: x1, y1, x2, y2 in pixels (x2, y2 exclusive)
    score: float  # detector confidence, 1.0 for given landmarks
    landmarks: np.ndarray  # float32 [5, 2] (x, y), order: left eye, right eye, nose, mouth left, mouth right

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def scaled(self, kx: float, ky: float) -> Face:
        """The same face in an image kx times as wide and ky times as tall (area-resampled): box edges scale, and
        pixel-index points map as (x + 0.5) k - 0.5."""
        return Face((self.box * [kx, ky, kx, ky]).astype(np.float32), self.score,
                    ((self.landmarks + 0.5) * [kx, ky] - 0.5).astype(np.float32))


def face_from_landmarks(points, box=None, score: float | None = None) -> Face:
    """A Face from 5 given landmarks (an app's own detector); without a box, the landmarks' bounds widened to about
    where a detector's box would be."""
    pts = np.asarray(points, np.float32).reshape(5, 2)
    if not np.isfinite(pts).all():
        raise ValueError("landmarks must be 5 finite (x, y) points")
    if box is None:
        lo, hi = pts.min(0), pts.max(0)
        side = float(max(hi - lo)) * 1.6
        cx, cy = (lo + hi) / 2
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return Face(np.asarray(box, np.float32).reshape(4), 1.0 if score is None else float(score), pts)


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box (ties: the higher score); None when there is none."""
    return max(faces, key=lambda f: (f.area, f.score), default=None)



class FaceDetector(Protocol):
    """What the pipeline needs of a face detector: the faces of an image, best score first, and the smallest face
    side it looks for (faces with a shorter box side are not scored)."""

    min_face: int

    def detect(self, image: np.ndarray) -> list[Face]: ...

    def with_min_face(self, min_face: int) -> FaceDetector: ...


@dataclass(frozen=True)
class Net:
    """One network of a detector: the stem of its graph file (`face_<name>.<ext>` in a bundle), its outputs in order,
    the example input it is exported with (NCHW, batch 1: a batch goes one item at a time), whether its height and
    width are free."""

    name: str
    outputs: tuple[str, ...]
    example: tuple[int, int, int, int]
    free_size: bool = False  # height and width free (an image pyramid's levels)

    @property
    def stem(self) -> str:
        return f"face_{self.name}"


@dataclass(frozen=True)
class DetectorRow:
    """One face detector: what a bundle records of it and how a device opens it."""

    name: str  # the manifest's front_end.detector
    title: str  # in words, with its paper
    nets: tuple[Net, ...]
    inputs: str  # how the nets' inputs are made, in words (the manifest's front_end.inputs)
    settings: dict  # defaults of its settings (the manifest's front_end.settings)
    settings_schema: dict  # what a manifest's front_end.settings may hold (device/schema.py's subset), checked by verify
    smallest_face: int  # the smallest face it can find at all, in pixels (its smallest window)
    licence: str  # of the weights it ships with
    make: Callable[[dict, dict], FaceDetector] = field(repr=False)  # ({net name: run(x) -> {output: array}}, settings) -> detector

    def net(self, name: str) -> Net:
        return next(n for n in self.nets if n.name == name)
