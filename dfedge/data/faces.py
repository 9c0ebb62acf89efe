"""Faces in video frames: find them (a `FaceLocator`), pick one, align it to the kit's template.

The kit's contract with any face detector is "5 landmarks in -> aligned crop out":

    frame  uint8 [H, W, 3] RGB
      -> locator.locate(frame, at)  -> [Face(box [4], score, landmarks [5, 2])]   (pixels of the frame)
      -> largest_face(faces)        -> Face | None
      -> align(frame, face.landmarks) -> uint8 [448, 448, 3], the detector's input (ALIGN_TEMPLATE)

Landmarks are (x, y) in pixel-index coordinates (the centre of the top-left pixel is (0, 0)), in the order left
eye, right eye, nose tip, left mouth corner, right mouth corner, "left" meaning image-left.

Locators here:
  LandmarkFile  landmarks a user's own detector wrote to a JSON or CSV file, keyed by video and frame index
  MTCNN         Zhang et al. 2016 (P-Net -> R-Net -> O-Net), this module's own PyTorch code running the MIT
                weights shipped in the facenet-pytorch 2.6.0 wheel (`facenet_pytorch/data/{pnet,rnet,onet}.pt`);
                install those with `pip install --no-deps facenet-pytorch==2.6.0` (the package itself is never
                imported: it pins an old torch and numpy).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import cv2
import numpy as np
import torch
from torch import nn

from ..models.checkpoint import CheckpointError, check_state_dict, expected_shapes, read_torch_state_dict
from ..models.detector import CROP_SIZE, align_template

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True, eq=False)
class Face:
    box: np.ndarray  # float32 [4]: x1, y1, x2, y2 in pixels (x2, y2 exclusive)
    score: float  # detector confidence, 1.0 for given landmarks
    landmarks: np.ndarray  # float32 [5, 2] (x, y), order LANDMARK_NAMES

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class FrameRef(NamedTuple):
    """Where a frame comes from: a video's key (its path relative to the dataset root, '/'-separated) and the
    0-based index among its decoded frames. Locators that look at pixels ignore it; `LandmarkFile` needs it."""

    video: str
    index: int


class FaceLocator(Protocol):
    """Finds faces in one RGB frame. `name` identifies the locator and its settings in crop-cache keys."""

    name: str

    def locate(self, frame: np.ndarray, at: FrameRef | None = None) -> list[Face]: ...


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box (ties: the higher score); None when there is none."""
    return max(faces, key=lambda f: (f.area, f.score), default=None)


def similarity_transform(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """[2, 3] least-squares similarity (rotation, uniform scale, shift) taking `landmarks` [5, 2] onto `template`.

    OpenCV's partial-affine estimator with a threshold no point can fail keeps all five points as inliers and
    refines the model on all of them (Levenberg-Marquardt), i.e. the least-squares similarity (Umeyama's)."""
    src = np.asarray(landmarks, np.float64).reshape(-1, 2)
    dst = np.asarray(template, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2 or not np.isfinite(src).all():
        raise ValueError(f"alignment needs {len(dst)} finite (x, y) landmarks, got shape {list(src.shape)}")
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1e9, refineIters=50)
    if m is None:
        raise ValueError("alignment failed: the landmarks are degenerate (all at one point?)")
    return m


def align(
    frame: np.ndarray, landmarks: np.ndarray, template: np.ndarray | None = None, size: int = CROP_SIZE
) -> np.ndarray:
    """uint8 [size, size, 3] crop whose 5 landmarks sit on `template` (pixels of the crop; default the kit's
    ALIGN_TEMPLATE scaled to `size`). Bilinear sampling; outside the frame is black."""
    template = align_template(size) if template is None else np.asarray(template, np.float64)
    m = similarity_transform(landmarks, template)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def _face_from_points(points, box=None, score=None) -> Face:
    pts = np.asarray(points, np.float32).reshape(5, 2)
    if box is None:  # the landmarks' bounds, widened to roughly where a detector's box would be
        lo, hi = pts.min(0), pts.max(0)
        side = float(max(hi - lo)) * 1.6
        cx, cy = (lo + hi) / 2
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return Face(box=np.asarray(box, np.float32).reshape(4), score=1.0 if score is None else float(score), landmarks=pts)


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
                        _face_from_points(f["landmarks"], f.get("box"), f.get("score")) if isinstance(f, dict)
                        else _face_from_points(f) for f in faces
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
                face = _face_from_points([float(row[c]) for c in points], box, row.get("score") or None)
                out.setdefault((row["video"], int(row["frame"])), []).append(face)
            except (TypeError, ValueError):
                raise ValueError(f"{self.path}:{n}: expected numbers for frame, landmarks and box") from None
        return out


# --- MTCNN -----------------------------------------------------------------------------------------------------
# Three cascaded CNNs. Inputs are RGB normalised as (x - 127.5) / 128, NCHW. Module names mirror the keys of the
# facenet-pytorch state dicts, so loading is a strict key-and-shape check and nothing else. The dense layers of
# R-Net and O-Net were converted from a TensorFlow port and read their input flattened in (W, H, C) order.

MTCNN_PACKAGE = "facenet_pytorch"
MTCNN_INSTALL = "pip install --no-deps facenet-pytorch==2.6.0"


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, W*H*C] in the order the converted dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class _Cascade(nn.Module):
    """The front the three nets share: conv{i} -> prelu{i} -> pool{i} (where given), i = 1..n, named as in the
    checkpoints. `layers`: one (in channels, out channels, kernel, (pool kernel, pool stride) or None) per conv."""

    def __init__(self, layers: list[tuple[int, int, int, tuple[int, int] | None]]) -> None:
        super().__init__()
        self.depth = len(layers)
        for i, (c_in, c_out, kernel, pool) in enumerate(layers, 1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, kernel))
            setattr(self, f"prelu{i}", nn.PReLU(c_out))
            if pool is not None:
                setattr(self, f"pool{i}", nn.MaxPool2d(*pool, ceil_mode=True))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
            if hasattr(self, f"pool{i}"):
                x = getattr(self, f"pool{i}")(x)
        return x


class PNet(_Cascade):
    """Proposal net, fully convolutional: a 12x12 window per output cell, stride 2."""

    def __init__(self) -> None:
        super().__init__([(3, 10, 3, (2, 2)), (10, 16, 3, None), (16, 32, 3, None)])
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets (x1, y1, x2, y2) in units of the window size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 3, H, W] -> P(face) [B, H', W'], offsets [B, 4, H', W'] with H' = ceil((H - 2) / 2) - 4."""
        x = self.trunk(x)  # [B, 32, H', W']
        return self.conv4_1(x).softmax(1)[:, 1], self.conv4_2(x)


class RNet(_Cascade):
    """Refine net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__([(3, 28, 3, (3, 2)), (28, 48, 3, (3, 2)), (48, 64, 2, None)])
        self.dense4, self.prelu4 = nn.Linear(64 * 3 * 3, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 3, 24, 24] -> P(face) [B], offsets [B, 4]."""
        x = self.prelu4(self.dense4(_flatten_whc(self.trunk(x))))  # [B, 64, 3, 3] -> [B, 128]
        return self.dense5_1(x).softmax(1)[:, 1], self.dense5_2(x)


class ONet(_Cascade):
    """Output net on 48x48 crops: the final score, box and 5 landmarks."""

    def __init__(self) -> None:
        super().__init__([(3, 32, 3, (3, 2)), (32, 64, 3, (3, 2)), (64, 64, 3, (2, 2)), (64, 128, 2, None)])
        self.dense5, self.prelu5 = nn.Linear(128 * 3 * 3, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # x1..x5, y1..y5 as fractions of the crop

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, 3, 48, 48] -> P(face) [B], offsets [B, 4], landmarks [B, 10]."""
        x = self.prelu5(self.dense5(_flatten_whc(self.trunk(x))))  # [B, 128, 3, 3] -> [B, 256]
        return self.dense6_1(x).softmax(1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def mtcnn_weights_dir(path: str | Path | None = None) -> Path:
    """The folder holding pnet.pt, rnet.pt, onet.pt: `path`, or the installed facenet-pytorch wheel's data/."""
    if path is not None:
        return Path(path)
    spec = importlib.util.find_spec(MTCNN_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"MTCNN weights not found: install them with `{MTCNN_INSTALL}` or pass a folder "
                              "holding pnet.pt, rnet.pt, onet.pt")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _load_net(net: nn.Module, path: Path) -> nn.Module:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (MTCNN weights; install them with `{MTCNN_INSTALL}`)")
    state = read_torch_state_dict(path)
    check_state_dict(state, expected_shapes(net), path)
    net.load_state_dict(state, strict=True)
    return net.eval()


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, overlap: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first. boxes [N, 4] x1, y1, x2, y2 (exclusive);
    overlap 'union' (IoU) or 'min' (intersection over the smaller box)."""
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]))
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]))
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if overlap == "min" else area[i] + area[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-9)]
    return np.array(keep, dtype=np.int64)


def _calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each box edge by its regressed offset (a fraction of the box's width or height)."""
    wh = np.concatenate([boxes[:, 2:4] - boxes[:, 0:2]] * 2, axis=1)
    return boxes + offsets * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """The square of side max(w, h) around each box's centre."""
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    side = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True)
    return np.concatenate([centre - side / 2, centre + side / 2], axis=1)


def _normalise(images: np.ndarray) -> torch.Tensor:
    """uint8/float NHWC RGB -> float32 NCHW, (x - 127.5) / 128."""
    return torch.from_numpy((np.asarray(images, np.float32) - 127.5) / 128.0).permute(0, 3, 1, 2).contiguous()


def _crops(frame: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer boxes [M, 4] (rounded; those under a pixel wide dropped) and their crops [M, size, size, 3], zero
    outside the frame."""
    h, w = frame.shape[:2]
    ibox = np.round(boxes).astype(np.int64)
    ibox = ibox[(ibox[:, 2] > ibox[:, 0]) & (ibox[:, 3] > ibox[:, 1])]
    out = np.zeros((len(ibox), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(ibox):
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = frame[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return ibox, out


class MTCNN:
    """MTCNN face detector with 5 landmarks, CPU or GPU.

    min_face: smallest face side in pixels searched for (the image pyramid starts at 12 / min_face).
    thresholds: P(face) needed at the P-, R- and O-Net stages. factor: pyramid step.
    """

    def __init__(self, weights: str | Path | None = None, min_face: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 device: str = "cpu", batch: int = 256) -> None:
        folder = mtcnn_weights_dir(weights)
        self.pnet = _load_net(PNet(), folder / "pnet.pt").to(device)
        self.rnet = _load_net(RNet(), folder / "rnet.pt").to(device)
        self.onet = _load_net(ONet(), folder / "onet.pt").to(device)
        self.min_face, self.thresholds, self.factor = min_face, tuple(thresholds), factor
        self.device, self.batch = device, batch
        self.name = f"mtcnn-{min_face}-{'-'.join(f'{t:g}' for t in thresholds)}-{factor:g}"

    def locate(self, frame: np.ndarray, at: FrameRef | None = None) -> list[Face]:
        """Faces in a uint8 [H, W, 3] RGB frame, best score first."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"MTCNN expects an RGB frame [H, W, 3], got shape {list(frame.shape)}")
        with torch.no_grad():
            boxes = self._propose(frame)
            if len(boxes):
                boxes = self._refine(frame, boxes)
            if len(boxes):
                return self._output(frame, boxes)
        return []

    def _run(self, net: nn.Module, crops: np.ndarray) -> list[np.ndarray]:
        outs = [net(_normalise(crops[i : i + self.batch]).to(self.device)) for i in range(0, len(crops), self.batch)]
        return [torch.cat(parts).cpu().numpy().astype(np.float64) for parts in zip(*outs)]

    def _propose(self, frame: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over the image pyramid -> squared candidate boxes [N, 4]."""
        h, w = frame.shape[:2]
        scale, found = 12.0 / self.min_face, []
        while min(h, w) * scale >= 12:
            small = cv2.resize(frame, (int(np.ceil(w * scale)), int(np.ceil(h * scale))), interpolation=cv2.INTER_AREA)
            prob, offsets = self.pnet(_normalise(small[None]).to(self.device))
            prob, offsets = prob[0].cpu().numpy(), offsets[0].cpu().numpy()
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if len(ys):
                cells = np.stack([xs, ys, xs, ys], axis=1).astype(np.float64) * 2 + [0, 0, 12, 12]
                boxes, scores = cells / scale, prob[ys, xs].astype(np.float64)
                keep = _nms(boxes, scores, 0.5)
                found.append(np.concatenate([boxes, scores[:, None], offsets[:, ys, xs].T], axis=1)[keep])
            scale *= self.factor
        if not found:
            return np.zeros((0, 4))
        cand = np.concatenate(found)
        cand = cand[_nms(cand[:, :4], cand[:, 4], 0.7)]
        return _square(_calibrate(cand[:, :4], cand[:, 5:9]))

    def _refine(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24x24 crops -> fewer, better squared boxes."""
        boxes, crops = _crops(frame, boxes, 24)
        prob, offsets = self._run(self.rnet, crops)
        ok = prob > self.thresholds[1]
        boxes, prob, offsets = boxes[ok].astype(np.float64), prob[ok], offsets[ok]
        keep = _nms(boxes, prob, 0.7)
        return _square(_calibrate(boxes[keep], offsets[keep]))

    def _output(self, frame: np.ndarray, boxes: np.ndarray) -> list[Face]:
        """Stage 3: O-Net on 48x48 crops -> scored boxes and landmarks."""
        boxes, crops = _crops(frame, boxes, 48)
        prob, offsets, marks = self._run(self.onet, crops)
        ok = prob > self.thresholds[2]
        boxes, prob, offsets, marks = boxes[ok].astype(np.float64), prob[ok], offsets[ok], marks[ok]
        size = boxes[:, 2:4] - boxes[:, 0:2]  # [N, 2] w, h of the crops O-Net saw
        points = np.stack([boxes[:, None, 0] + marks[:, 0:5] * size[:, None, 0],
                           boxes[:, None, 1] + marks[:, 5:10] * size[:, None, 1]], axis=2)  # [N, 5, 2]
        boxes = _calibrate(boxes, offsets)
        keep = _nms(boxes, prob, 0.7, overlap="min")
        return [Face(box=boxes[i].astype(np.float32), score=float(prob[i]), landmarks=points[i].astype(np.float32))
                for i in keep]
