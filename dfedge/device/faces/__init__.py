"""Face detection behind one interface: a detector finds faces (box, score, 5 landmarks) in an RGB image of any
size; the bundle's manifest names which detector its face nets belong to (`front_end.detector`), and `DETECTORS`
holds one row per detector: its nets, their inputs and outputs, its settings and their defaults, its licence and
the function that makes it from the nets' sessions. Adding a detector is one module here and one row below.
"""

from __future__ import annotations

from .types import DetectorRow, Face, FaceDetector, Net, face_from_landmarks, largest_face  # noqa: F401 - the interface


def detectors() -> dict[str, DetectorRow]:
    """The detector table (imported on first use: each row's module is the detector's code)."""
    from . import mtcnn

    return {row.name: row for row in (mtcnn.ROW,)}
