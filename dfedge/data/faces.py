"""Faces in photos and video frames: find them (a `FaceLocator`), pick one, align it to the kit's template.

The kit's contract with any face detector is "5 landmarks in -> aligned crop out":

    frame  uint8 [H, W, 3] RGB
      -> locator.locate(frame, at)  -> [Face(box [4], score, landmarks [5, 2])]   (pixels of the frame)
      -> largest_face(faces)        -> Face | None
      -> align(frame, face.landmarks) -> uint8 [448, 448, 3], the detector's input (ALIGN_TEMPLATE)

Landmarks are (x, y) in pixel-index coordinates (the centre of the top-left pixel is (0, 0)), in the order left
eye, right eye, nose tip, left mouth corner, right mouth corner, "left" meaning image-left. The geometry and the
MTCNN cascade are numpy in the device package (`dfedge/device/`), the code every bundle ships; here they get the kit's torch nets.

Locators here:
  LandmarkFile  landmarks a user's own detector wrote to a JSON or CSV file, keyed by video and frame index
  MTCNN         Zhang et al. 2016 (P-Net -> R-Net -> O-Net) on the MIT weights of facenet-pytorch 2.6.0, shipped
                with the kit (`models/mtcnn.py`)
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from ..device import align as device_align
from ..device.align import similarity_transform  # noqa: F401 - API
from ..device.faces import Face, face_from_landmarks, largest_face  # noqa: F401 - API
from ..device.faces import mtcnn as cascade
from ..models.detector import CROP_SIZE, align_template
from ..models.mtcnn import TorchNets, load_mtcnn

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class FrameRef(NamedTuple):
    """Where a frame comes from: a video's key (its path relative to the dataset root, '/'-separated) and the
    0-based index among its decoded frames. Locators that look at pixels ignore it; `LandmarkFile` needs it."""

    video: str
    index: int


class FaceLocator(Protocol):
    """Finds faces in one RGB frame. `name` identifies the locator and its settings in crop-cache keys."""

    name: str

    def locate(self, frame: np.ndarray, at: FrameRef | None = None) -> list[Face]: ...


def align(frame: np.ndarray, landmarks: np.ndarray, template: np.ndarray | None = None, size: int = CROP_SIZE) -> np.ndarray:
    """uint8 [size, size, 3] crop whose 5 landmarks sit on `template` (pixels of the crop; default the kit's
    ALIGN_TEMPLATE scaled to `size`). Bilinear sampling; outside the frame is black."""
    return device_align.align(frame, landmarks, align_template(size) if template is None else template, size)


def _one_face(value) -> bool:
    """A JSON face ({...} or [[x, y] x 5]) rather than a list of faces."""
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and isinstance(value[0], list) and bool(value[0])
        and isinstance(value[0][0], (int, float))
    )


class LandmarkFile:
    """Pre-computed landmarks from the user's own detector, keyed by video and frame index.

    JSON: {"<video>": {"<frame>": FACES}} where FACES is one face or a list of faces, and a face is
          [[x, y] x 5] or {"landmarks": [[x, y] x 5], "box": [x1, y1, x2, y2], "score": s} (box, score optional).
    CSV:  a header row with video, frame, x1, y1, ..., x5, y5 and optionally box_x1, box_y1, box_x2, box_y2, score;
          one row per face.
    <video> is the video's path relative to the dataset root with '/' separators (Celeb-DF: the path in
    List_of_testing_videos.txt, e.g. "Celeb-real/id0_0000.mp4"). A frame without an entry has no face.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            raise ValueError(f"{self.path}: cannot read landmark file ({e.strerror})") from None
        self.name = f"landmarks-{hashlib.sha256(raw).hexdigest()[:12]}"
        text = raw.decode("utf-8", errors="replace")
        self.faces: dict[tuple[str, int], list[Face]] = (
            self._read_csv(text) if self.path.suffix.lower() == ".csv" else self._read_json(text)
        )

    def locate(self, frame: np.ndarray, at: FrameRef | None = None) -> list[Face]:
        if at is None:
            raise ValueError(f"{self.path}: a landmark file needs the video and frame index of each frame")
        return list(self.faces.get((at.video, int(at.index)), []))

    def _read_json(self, text: str) -> dict[tuple[str, int], list[Face]]:
        try:
            data = json.loads(text)
            out = {}
            for video, frames in data.items():
                for frame, faces in frames.items():
                    if _one_face(faces):
                        faces = [faces]
                    out[(str(video), int(frame))] = [
                        face_from_landmarks(f["landmarks"], f.get("box"), f.get("score")) if isinstance(f, dict)
                        else face_from_landmarks(f) for f in faces
                    ]
            return out
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{self.path}: not a landmark file (JSON {{video: {{frame: faces}}}}): {e}") from None

    def _read_csv(self, text: str) -> dict[tuple[str, int], list[Face]]:
        points = [f"{a}{i}" for i in range(1, 6) for a in "xy"]
        rows = csv.DictReader(text.splitlines())
        missing = [c for c in ("video", "frame", *points) if c not in (rows.fieldnames or [])]
        if missing:
            raise ValueError(f"{self.path}: CSV landmark file lacks column(s) {', '.join(missing)}")
        out: dict[tuple[str, int], list[Face]] = {}
        for n, row in enumerate(rows, 2):
            try:
                box = [float(row[c]) for c in ("box_x1", "box_y1", "box_x2", "box_y2")] if row.get("box_x1") else None
                face = face_from_landmarks([float(row[c]) for c in points], box, row.get("score") or None)
                out.setdefault((row["video"], int(row["frame"])), []).append(face)
            except (TypeError, ValueError):
                raise ValueError(f"{self.path}:{n}: expected numbers for frame, landmarks and box") from None
        return out


class MTCNN:
    """MTCNN face detector with 5 landmarks (device/faces/mtcnn.py's cascade on the kit's torch nets), CPU or GPU.

    min_face: smallest face side in pixels searched for; thresholds: P(face) needed at the P-, R- and O-Net stages.
    weights: None for the shipped weights, or a folder with facenet-pytorch's pnet.pt, rnet.pt, onet.pt."""

    def __init__(self, weights: str | Path | None = None, min_face: int = cascade.MIN_FACE,
                 thresholds: tuple[float, float, float] = cascade.THRESHOLDS, device: str = "cpu") -> None:
        self.nets = TorchNets(load_mtcnn(weights), device)
        self.min_face, self.thresholds = min_face, tuple(thresholds)
        self.name = f"mtcnn-{min_face}-{'-'.join(f'{t:g}' for t in thresholds)}-{cascade.FACTOR:g}-np{cascade.MAX_SIDE}"

    def locate(self, frame: np.ndarray, at: FrameRef | None = None) -> list[Face]:
        """Faces in a uint8 [H, W, 3] RGB frame, best score first."""
        return cascade.detect_faces(frame, self.nets.pnet, self.nets.rnet, self.nets.onet, self.min_face,
                                    self.thresholds)
