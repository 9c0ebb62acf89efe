"""MTCNN (Zhang et al. 2016): the three-stage cascade around its nets, in numpy. The nets are callables (the
bundle's graphs on its runtime, or the kit's torch modules), so the same code runs on every runtime.

The networks (the weights of facenet-pytorch), on inputs normalised as (x - 127.5) / 128, NCHW, each giving
P(not face, face) first:
    pnet(x [1, 3, h, w])    -> probabilities [1, 2, h', w'], box offsets [1, 4, h', w']  (h' = (h - 2) / 2 - 4, h even)
    rnet(x [N, 3, 24, 24])  -> probabilities [N, 2], offsets [N, 4]
    onet(x [N, 3, 48, 48])  -> probabilities [N, 2], offsets [N, 4], landmarks [N, 10] (x1..x5, y1..y5, crop fractions)
Every resize is an area average (`image.resize_area`) and every pyramid level has even sides, so P-Net's 2x2
ceil-mode pooling never pads: an exported P-Net with a static padding plan is exact at every level.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..image import resize_area
from ..schema import NUM, arr, obj
from .types import MIN_FACE, DetectorRow, Face, Net  # MIN_FACE: smallest face side searched for, in pixels of the detection image

THRESHOLDS = (0.6, 0.7, 0.7)  # P(face) needed after P-, R- and O-Net
FACTOR = 0.709  # pyramid step (area halves every two levels)
MAX_SIDE = 1600  # faces are searched in a copy of the image at most this long (landmarks come back in full size)
WINDOW = 12  # P-Net's window: the smallest face it can find at all


def _normalise(images: np.ndarray) -> np.ndarray:
    """NHWC RGB 0-255 -> float32 NCHW, (x - 127.5) / 128."""
    return np.ascontiguousarray(((np.asarray(images, np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, overlap: str = "union") -> np.ndarray:
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


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer boxes [M, 4] (rounded; those under a pixel wide dropped) and their crops [M, size, size, 3], zero
    outside the image."""
    h, w = image.shape[:2]
    ibox = np.round(boxes).astype(np.int64)
    ibox = ibox[(ibox[:, 2] > ibox[:, 0]) & (ibox[:, 3] > ibox[:, 1])]
    out = np.zeros((len(ibox), size, size, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(ibox):
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[k] = resize_area(patch, size, size)
    return ibox, out

MIN_LEVEL = 14  # P-Net's smallest input side: even, and large enough that its pooled grid is never a single cell


def pyramid(height: int, width: int, min_face: int = MIN_FACE, factor: float = FACTOR) -> list[tuple[int, int]]:
    """(h, w) of every P-Net level: even sides, the first at 12 / min_face of the image, down to MIN_LEVEL."""
    sizes, scale = [], WINDOW / min_face
    while True:
        h, w = 2 * int(height * scale / 2), 2 * int(width * scale / 2)
        if min(h, w) < MIN_LEVEL:
            return sizes
        sizes.append((h, w))
        scale *= factor


def detect_faces(image: np.ndarray, pnet, rnet, onet, min_face: int = MIN_FACE,
                 thresholds: tuple[float, float, float] = THRESHOLDS, max_side: int = MAX_SIDE,
                 factor: float = FACTOR) -> list[Face]:
    """Faces in a uint8 [H, W, 3] RGB image, best score first, in the image's pixels. Images longer than `max_side`
    are searched in an area-downscaled copy (faces under min_face x scale pixels there are not found)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"faces are searched in RGB images [H, W, 3], got shape {list(image.shape)}")
    k = max(image.shape[:2]) / max_side
    if min(image.shape[:2]) / max(k, 1.0) < min_face:  # too narrow to hold a face the search could find
        return []
    work = image if k <= 1 else np.rint(resize_area(image, round(image.shape[0] / k), round(image.shape[1] / k))).astype(np.uint8)
    boxes = _propose(work, pnet, (min_face, factor), thresholds[0])
    if len(boxes):
        boxes = _refine(work, boxes, rnet, thresholds[1])
    faces = _output(work, boxes, onet, thresholds[2]) if len(boxes) else []
    if k <= 1:
        return faces
    return [f.scaled(image.shape[1] / work.shape[1], image.shape[0] / work.shape[0]) for f in faces]


def _propose(image: np.ndarray, pnet, levels: tuple[int, float], threshold: float) -> np.ndarray:
    """Stage 1: P-Net over the image pyramid (levels: min_face, factor) -> squared candidate boxes [N, 4]."""
    height, width = image.shape[:2]
    found = []
    for h, w in pyramid(height, width, *levels):
        prob, offsets = pnet(_normalise(resize_area(image, h, w)[None]))
        prob, offsets = np.asarray(prob, np.float64)[0, 1], np.asarray(offsets, np.float64)[0]
        ys, xs = np.nonzero(prob >= threshold)
        if len(ys):
            cells = np.stack([xs, ys, xs, ys], axis=1).astype(np.float64) * 2 + [0, 0, 12, 12]  # level pixels
            boxes, scores = cells / [w / width, h / height, w / width, h / height], prob[ys, xs]
            keep = nms(boxes, scores, 0.5)
            found.append(np.concatenate([boxes, scores[:, None], offsets[:, ys, xs].T], axis=1)[keep])
    if not found:
        return np.zeros((0, 4))
    cand = np.concatenate(found)
    cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
    return _square(_calibrate(cand[:, :4], cand[:, 5:9]))


def _refine(image: np.ndarray, boxes: np.ndarray, rnet, threshold: float) -> np.ndarray:
    """Stage 2: R-Net on 24x24 crops -> fewer, better squared boxes."""
    boxes, crops = _crops(image, boxes, 24)
    if not len(boxes):
        return np.zeros((0, 4))
    prob, offsets = (np.asarray(o, np.float64) for o in rnet(_normalise(crops)))
    prob = prob[:, 1]
    ok = prob > threshold
    boxes, prob, offsets = boxes[ok].astype(np.float64), prob[ok], offsets[ok]
    keep = nms(boxes, prob, 0.7)
    return _square(_calibrate(boxes[keep], offsets[keep]))


def _output(image: np.ndarray, boxes: np.ndarray, onet, threshold: float) -> list[Face]:
    """Stage 3: O-Net on 48x48 crops -> scored boxes and landmarks."""
    boxes, crops = _crops(image, boxes, 48)
    if not len(boxes):
        return []
    prob, offsets, marks = (np.asarray(o, np.float64) for o in onet(_normalise(crops)))
    prob = prob[:, 1]
    ok = prob > threshold
    boxes, prob, offsets, marks = boxes[ok].astype(np.float64), prob[ok], offsets[ok], marks[ok]
    size = boxes[:, 2:4] - boxes[:, 0:2]  # [N, 2] w, h of the crops O-Net saw
    points = np.stack([boxes[:, None, 0] + marks[:, 0:5] * size[:, None, 0],
                       boxes[:, None, 1] + marks[:, 5:10] * size[:, None, 1]], axis=2)  # [N, 5, 2]
    boxes = _calibrate(boxes, offsets)
    keep = nms(boxes, prob, 0.7, overlap="min")
    return [Face(box=boxes[i].astype(np.float32), score=float(prob[i]), landmarks=points[i].astype(np.float32))
            for i in keep]




@dataclass(frozen=True)
class Mtcnn:
    """The cascade as a FaceDetector: its three nets and its settings."""

    pnet: object
    rnet: object
    onet: object
    min_face: int = MIN_FACE
    thresholds: tuple[float, float, float] = THRESHOLDS
    max_side: int = MAX_SIDE
    factor: float = FACTOR

    def detect(self, image: np.ndarray) -> list[Face]:
        return detect_faces(image, self.pnet, self.rnet, self.onet, self.min_face, self.thresholds, self.max_side,
                            self.factor)

    def with_min_face(self, min_face: int) -> Mtcnn:
        return replace(self, min_face=int(min_face))


def _make(sessions: dict, settings: dict) -> Mtcnn:
    """{net: run(x) -> {output: array}} (one crop at a time for R-Net and O-Net) + the manifest's settings -> Mtcnn."""

    def net(name):
        outputs = ROW.net(name).outputs

        def one_by_one(x):  # every net is exported with batch 1 (P-Net is called on one pyramid level at a time)
            outs = [sessions[name](x[i : i + 1]) for i in range(len(x))]
            return tuple(np.concatenate([o[k] for o in outs]) for k in outputs)

        return one_by_one

    return Mtcnn(net("pnet"), net("rnet"), net("onet"), int(settings.get("min_face", MIN_FACE)),
                 tuple(float(t) for t in settings.get("thresholds", THRESHOLDS)), int(settings.get("max_side", MAX_SIDE)),
                 float(settings.get("factor", FACTOR)))


ROW = DetectorRow(
    name="mtcnn", title="MTCNN (Zhang et al. 2016): P-Net, R-Net, O-Net",
    nets=(Net("pnet", ("prob", "offsets"), (1, 3, 48, 64), free_size=True),
          Net("rnet", ("prob", "offsets"), (1, 3, 24, 24)),
          Net("onet", ("prob", "offsets", "landmarks"), (1, 3, 48, 48))),
    inputs="NCHW float32, (RGB - 127.5) / 128; P-Net height and width free (even sides)",
    settings={"min_face": MIN_FACE, "thresholds": list(THRESHOLDS), "factor": FACTOR, "max_side": MAX_SIDE},
    # below its window P-Net's first level is the image enlarged (min_face 1: 12 x 1600 px a side); a factor of 1 or
    # more never ends the pyramid, and past 0.95 it has over 85 levels (0.709: 13)
    settings_schema=obj({"min_face": {"type": "integer", "minimum": WINDOW},
                         "thresholds": arr(dict(NUM, minimum=0, maximum=1), 3),
                         "factor": dict(NUM, exclusiveMinimum=0, maximum=0.95),
                         "max_side": {"type": "integer", "minimum": MIN_LEVEL}}),
    smallest_face=WINDOW,
    licence="MIT (facenet-pytorch 2.6.0, Copyright (c) 2019 Timothy Esler); weights/MTCNN-LICENSE.md",
    make=_make,
)
