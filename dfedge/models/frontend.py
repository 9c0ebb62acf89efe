"""The face front end in numpy: an RGB image of any size -> faces (MTCNN's three-stage cascade) -> 5-point aligned
crops. The three networks are passed in as callables, so the same code runs them on torch (the kit) or on a
bundle's own runtime; this file imports nothing but numpy and the standard library and ships in every bundle beside bench.py.

Conventions: images are uint8 [H, W, 3] RGB. Points are (x, y) in pixel-index coordinates: the centre of the
top-left pixel is (0, 0), the centre of the bottom-right one (W - 1, H - 1). Landmarks come in the order left eye,
right eye, nose tip, left mouth corner, right mouth corner, "left" meaning image-left.

The networks (Zhang et al. 2016, the weights of facenet-pytorch), on inputs normalised as (x - 127.5) / 128, NCHW,
each giving P(not face, face) first:
    pnet(x [1, 3, h, w])    -> probabilities [1, 2, h', w'], box offsets [1, 4, h', w']  (h' = (h - 2) / 2 - 4, h even)
    rnet(x [N, 3, 24, 24])  -> probabilities [N, 2], offsets [N, 4]
    onet(x [N, 3, 48, 48])  -> probabilities [N, 2], offsets [N, 4], landmarks [N, 10] (x1..x5, y1..y5, crop fractions)
Every resize is an area average written here (`resize_area`) and every pyramid level has even sides, so P-Net's
2x2 ceil-mode pooling never pads: an exported P-Net with a static padding plan is exact at every level.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np

MIN_FACE = 20  # smallest face side searched for, in pixels of the detection image
THRESHOLDS = (0.6, 0.7, 0.7)  # P(face) needed after P-, R- and O-Net
FACTOR = 0.709  # pyramid step (area halves every two levels)
MAX_SIDE = 1600  # faces are searched in a copy of the image at most this long (landmarks come back in full size)


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


# --- reading ---------------------------------------------------------------------------------------------------

MAX_DECODE = 4096  # longest side a photo is decoded to
MAX_PIXELS = 64_000_000  # most pixels decoded from one file (after JPEG's reduced decoding), checked from its header
PRIMARY_IMAGE_FORMATS = ("MPO", "HEIF", "AVIF")  # several pictures in one file, the first the photo (a phone's depth
# map or preview follows it); any other file with more than one frame is an animation or a multi-page document


class ImageRefused(ValueError):
    """An image file the reader will not decode, for the reason given (not a decoding failure)."""


def _rgb8(im, notes: list[str]):
    """The decoded image as an 8-bit RGB Pillow image, each conversion said in `notes`: 16-bit samples scaled (not
    clipped) to 8 bits, transparency composited over white, other modes (palette, greyscale, CMYK) as Pillow
    converts them. A float or 32-bit integer image has no defined 8-bit scale and is refused."""
    from PIL import Image

    mode = im.mode
    if mode == "F" or (mode == "I" and im.getextrema()[1] > 65535) or (mode == "I" and im.getextrema()[0] < 0):
        raise ImageRefused(f"{'32-bit float' if mode == 'F' else '32-bit integer'} samples: no defined 8-bit scale")
    if mode.startswith("I;16") or mode == "I":
        wide = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or wide.max() > 255 else 255.0
        notes.append(f"{'16' if top > 255 else '8'}-bit greyscale scaled to 8-bit RGB")
        grey = np.clip(np.rint(wide * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    if "transparency" in im.info or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        if alpha.min() < 1.0:
            share = float((alpha < 1.0).mean())
            notes.append(f"transparency composited over white ({share:.0%} of pixels not opaque)")
            rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
            return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    return im.convert("RGB")


def read_image(path, max_side: int = MAX_DECODE, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int], list[str]]:
    """(uint8 RGB [H, W, 3] upright, at most `max_side` on its longest side; the photo's own upright (width,
    height); the conversions made, in words). EXIF orientation is applied. A JPEG is decoded at 1/2, 1/4 or 1/8
    scale when that still leaves `max_side` (a 48-MP photo never exists at full size in memory), anything else
    reduced after decoding; a file that would decode to more than `max_pixels` is refused from its header, before
    any decoding. Only a regular file is opened (a FIFO or a device would block or never end). Needs Pillow,
    imported here only (a device that passes arrays does not need it); every problem is a ValueError naming it in
    one line, without the file's name."""
    import math
    import os
    import stat
    import warnings

    from PIL import Image, ImageOps

    notes: list[str] = []
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageRefused("not a regular file (a FIFO, a device or a socket)")
        with warnings.catch_warnings():
            # large photos are what this reads; its own limit (max_pixels) is checked below, from the header
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                frames = getattr(im, "n_frames", 1)
                if frames > 1 and im.format not in PRIMARY_IMAGE_FORMATS:
                    raise ImageRefused(f"{frames} frames (an animation or a multi-page file): score it as a video, or "
                                     "one frame at a time")
                if frames > 1:
                    notes.append(f"the first of {frames} pictures in the {im.format} file (the photo)")
                width, height = im.size
                scale = max(width, height) / max_side
                if scale > 1:
                    step = min(8, 2 ** math.ceil(math.log2(scale)))
                    im.draft("RGB", (math.ceil(im.size[0] / step), math.ceil(im.size[1] / step)))
                if im.size[0] * im.size[1] > max_pixels:  # before anything decodes (a PNG's EXIF is read by decoding)
                    raise ImageRefused(f"{im.size[0]}x{im.size[1]} pixels to decode, over the limit of "
                                       f"{max_pixels / 1e6:g} MP (--max-pixels)")
                orientation = im.getexif().get(0x0112)
                if orientation not in (None, 1):
                    notes.append(f"turned upright (EXIF orientation {orientation})")
                im = _rgb8(ImageOps.exif_transpose(im), notes)
        if abs(im.size[0] / im.size[1] - height / width) < abs(im.size[0] / im.size[1] - width / height):
            width, height = height, width  # turned a quarter (EXIF 5-8): the photo's own size is upright too
        if max(im.size) > max_side:
            im = im.reduce(math.ceil(max(im.size) / max_side))
        rgb = np.asarray(im)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except ImageRefused:
        raise
    except Image.DecompressionBombError:
        raise ValueError(f"more pixels than Pillow opens (over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP)") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many types on hostile bytes; each is one line
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"unreadable image ({detail})") from None
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise ValueError("empty image")
    return rgb, (width, height), notes


def no_face(min_face: int) -> Verdict:
    return Verdict("no_face", f"no face of at least {min_face} px found")


# --- resampling ------------------------------------------------------------------------------------------------


def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Box-filter taps: output pixel j averages the input interval [j * s, (j + 1) * s), s = n_in / n_out, each input
    pixel weighted by its overlap. -> (indices [n_out, T], weights [n_out, T]); unused taps have weight 0."""
    s = n_in / n_out
    lo = np.arange(n_out) * s
    hi = lo + s
    first = np.floor(lo).astype(np.int64)
    taps = int(np.ceil(s)) + 1
    idx = first[:, None] + np.arange(taps)[None, :]
    overlap = np.minimum(hi[:, None], idx + 1.0) - np.maximum(lo[:, None], idx.astype(np.float64))
    weights = np.clip(overlap, 0.0, None) / s
    weights[idx >= n_in] = 0.0
    return np.minimum(idx, n_in - 1), weights


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] -> float32 [height, width, C] by area averaging (box filter, separable). One tap at a time, rows
    gathered in the image's own dtype: a 48-MP uint8 photo needs about two [height, W, C] float32 buffers."""
    img = np.asarray(image)
    rows, rw = _area_taps(img.shape[0], height)
    tall = np.zeros((height, img.shape[1], img.shape[2]), np.float32)
    for t in range(rows.shape[1]):
        tall += rw[:, t, None, None].astype(np.float32) * img[rows[:, t]]
    cols, cw = _area_taps(img.shape[1], width)
    out = np.zeros((height, width, img.shape[2]), np.float32)
    for t in range(cols.shape[1]):
        out += cw[None, :, t, None].astype(np.float32) * tall[:, cols[:, t]]
    return out


def similarity_transform(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """[2, 3] least-squares similarity (rotation, uniform scale, shift; no reflection) taking `landmarks` [K, 2]
    onto `template` [K, 2]: [u, v] = [[a, -b], [b, a]] [x, y] + [tx, ty], linear in (a, b, tx, ty)."""
    src = np.asarray(landmarks, np.float64).reshape(-1, 2)
    dst = np.asarray(template, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2 or not np.isfinite(src).all():
        raise ValueError(f"alignment needs {len(dst)} finite (x, y) landmarks, got shape {list(src.shape)}")
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones(len(src)), np.zeros(len(src))
    design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    if np.linalg.matrix_rank(design) < 4:
        raise ValueError("alignment failed: the landmarks are degenerate (all at one point?)")
    a, b, tx, ty = np.linalg.lstsq(design, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, C]: output pixel p samples the image at inverse(matrix) p (bilinear; outside is 0)."""
    img = np.asarray(image)
    h, w, c = img.shape
    inv = np.linalg.inv(np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]]))[:2]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    sy = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    flat = img.reshape(-1, c)
    out = np.zeros((size, size, c), np.float32)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            weight = wy * wx * ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w))  # neighbours outside the image: 0
            out += weight[..., None] * flat[np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1)]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def align(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, 3] crop whose 5 landmarks sit on `template` (pixels of the crop)."""
    return warp_affine(image, similarity_transform(landmarks, template), size)


# --- MTCNN -----------------------------------------------------------------------------------------------------


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
    sizes, scale = [], 12.0 / min_face
    while True:
        h, w = 2 * int(height * scale / 2), 2 * int(width * scale / 2)
        if min(h, w) < MIN_LEVEL:
            return sizes
        sizes.append((h, w))
        scale *= factor


def detect_faces(image: np.ndarray, pnet, rnet, onet, min_face: int = MIN_FACE,
                 thresholds: tuple[float, float, float] = THRESHOLDS, max_side: int = MAX_SIDE) -> list[Face]:
    """Faces in a uint8 [H, W, 3] RGB image, best score first, in the image's pixels. Images longer than `max_side`
    are searched in an area-downscaled copy (faces under min_face x scale pixels there are not found)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"faces are searched in RGB images [H, W, 3], got shape {list(image.shape)}")
    k = max(image.shape[:2]) / max_side
    work = image if k <= 1 else np.rint(resize_area(image, round(image.shape[0] / k), round(image.shape[1] / k))).astype(np.uint8)
    boxes = _propose(work, pnet, min_face, thresholds[0])
    if len(boxes):
        boxes = _refine(work, boxes, rnet, thresholds[1])
    faces = _output(work, boxes, onet, thresholds[2]) if len(boxes) else []
    if k <= 1:
        return faces
    return [f.scaled(image.shape[1] / work.shape[1], image.shape[0] / work.shape[0]) for f in faces]


def _propose(image: np.ndarray, pnet, min_face: int, threshold: float) -> np.ndarray:
    """Stage 1: P-Net over the image pyramid -> squared candidate boxes [N, 4]."""
    height, width = image.shape[:2]
    found = []
    for h, w in pyramid(height, width, min_face):
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


# --- verdicts ----------------------------------------------------------------------------------------------------

# ok: scored. no_face: the photo or frame has none. no_region: the region index found no region token.
# implausible_region: region tokens where genuine aligned faces never have them (a misaligned crop, or a parser that
# does not know this face). unreadable: the file cannot be decoded. Only `ok` carries a probability and a decision.
STATUSES = ("ok", "no_face", "no_region", "implausible_region", "unreadable", "model_error")  # model_error: NaN/Inf out


def region_stats(token_mask: np.ndarray) -> tuple[int, float, float]:
    """(region tokens, centroid row, centroid column) of a token mask [g, g], in tokens; NaN centroid if empty."""
    mask = np.asarray(token_mask, np.float64).reshape(np.shape(token_mask)[-2:]) > 0.5
    count = int(mask.sum())
    if not count:
        return 0, float("nan"), float("nan")
    rows, cols = np.nonzero(mask)
    return count, float(rows.mean()), float(cols.mean())


def check_region(token_mask: np.ndarray, guard: dict | None, region: str = "region") -> tuple[str, str]:
    """(status, reason) of one face's token mask: no_region, implausible_region (outside the guard's bounds on the
    token count and centroid, fitted on genuine aligned faces), or ok. No guard: only no_region is checked."""
    count, row, col = region_stats(token_mask)
    if count == 0:
        return "no_region", f"no {region} token: the {region} was not found on this face"
    for name, value in (("tokens", count), ("row", row), ("col", col)):
        lo, hi = (guard or {}).get(name, (-np.inf, np.inf))
        if not lo <= value <= hi:
            return "implausible_region", (f"{region} tokens {count} centred at row {row:.1f}, column {col:.1f}: {name} "
                                          f"{value:.2f} is outside [{lo:.2f}, {hi:.2f}] seen on genuine aligned faces")
    return "ok", ""


@dataclass
class Verdict:
    """One face's verdict. probability, logit and decision are None unless status is ok."""

    status: str
    reason: str = ""
    probability: float | None = None
    logit: float | None = None
    decision: str | None = None  # fake | real, at the model's own threshold
    region_tokens: int = 0
    token_mask: np.ndarray | None = None  # bool [g, g]
    contributions: np.ndarray | None = None  # float32 [g, g]
    streams: list[float] | None = None  # the ensemble head's per-stream probabilities (None for one stream)
    face: Face | None = None  # where it was found (None for a given crop)
    crop: np.ndarray | None = None  # the aligned crop the model saw
    feature: np.ndarray | None = None  # float32 [D], the frame encoder's `feature` (ok verdicts of graphs that have it)

    def record(self, top: int = 5) -> dict:
        """JSON-able: status, reason, the face (box, detector score, landmarks), the score and the top tokens."""
        out: dict = {"status": self.status, "reason": self.reason, "probability": self.probability,
                     "logit": self.logit, "decision": self.decision, "region_tokens": self.region_tokens}
        if self.streams is not None:
            out["streams"] = self.streams
        if self.face is not None:
            out["face"] = {"box": np.round(self.face.box.astype(np.float64), 2).tolist(),
                           "score": round(float(self.face.score), 4),
                           "landmarks": np.round(self.face.landmarks.astype(np.float64), 2).tolist()}
        if self.status == "ok" and self.contributions is not None:
            flat = self.contributions.reshape(-1)
            g = self.contributions.shape[-1]
            order = np.argsort(-np.abs(flat), kind="stable")[: min(top, self.region_tokens)]
            out["top_tokens"] = [{"row": int(i) // g, "col": int(i) % g, "contribution": float(flat[i])} for i in order]
        return out


def judge(outputs: dict, threshold: float, guard: dict | None = None, region: str = "region") -> Verdict:
    """The verdict of one crop's model outputs (logit, probability, token_mask, region_tokens, contributions)."""
    g = np.shape(outputs["token_mask"])[-1]
    mask = np.asarray(outputs["token_mask"]).reshape(g, g) > 0.5
    contributions = np.asarray(outputs["contributions"], np.float32).reshape(g, g)
    status, reason = check_region(mask, guard, region)
    verdict = Verdict(status, reason, region_tokens=int(mask.sum()), token_mask=mask, contributions=contributions)
    if status == "ok":
        logit = float(np.asarray(outputs["logit"]).reshape(-1)[0])
        probability = float(np.asarray(outputs["probability"]).reshape(-1)[0])
        if not (np.isfinite(logit) and np.isfinite(probability) and np.isfinite(contributions).all()):
            verdict.status, verdict.reason = "model_error", f"the model returned a non-finite score (logit {logit})"
            return verdict
        verdict.logit, verdict.probability = logit, probability
        if "feature" in outputs:
            verdict.feature = np.asarray(outputs["feature"], np.float32).reshape(-1)
        streams = np.asarray(outputs.get("streams", []), np.float64).reshape(-1)
        verdict.streams = [round(float(p), 6) for p in streams] if streams.size > 1 else None
        verdict.decision = "fake" if logit >= threshold else "real"
    return verdict


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes x1, y1, x2, y2."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


@dataclass
class Scorer:
    """An image (any size), a video's frames or an aligned crop -> verdicts, around a model runner and the three
    face nets. The kit builds one on torch (`dfedge score`), a bundle on its own runtime (bench.py, dfedge.load)."""

    run: object  # float32 [1, 3, S, S] RGB 0-255 -> {logit, probability, token_mask, region_tokens, contributions}
    threshold: float  # on the logit: decision fake when logit >= threshold
    template: np.ndarray  # [5, 2] landmark positions in the aligned crop (pixel-index coordinates)
    crop_size: int
    guard: dict | None = None  # bounds on region token count and centroid (check_region); None: no guard
    region: str = "region"  # the region's name, in reasons
    nets: tuple | None = None  # (pnet, rnet, onet); None: only crops, or images with landmarks given
    min_face: int = MIN_FACE  # faces whose box is smaller are not scored

    def score_crop(self, crop: np.ndarray) -> Verdict:
        """One aligned uint8 crop [S, S, 3]."""
        x = np.ascontiguousarray(np.asarray(crop, np.float32).transpose(2, 0, 1)[None])
        verdict = judge(self.run(x), self.threshold, self.guard, self.region)
        verdict.crop = crop
        return verdict

    def faces(self, image: np.ndarray, landmarks=None) -> list[Face]:
        """The faces to score in `image`, largest first: detected, or the one whose 5 landmarks are given."""
        if landmarks is not None:
            return [face_from_landmarks(landmarks)]
        if self.nets is None:
            raise ValueError("this scorer has no face detector: pass the 5 landmarks of the face")
        found = detect_faces(image, *self.nets, min_face=self.min_face)
        found = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= self.min_face]
        return sorted(found, key=lambda f: -f.area)

    def score_face(self, image: np.ndarray, face: Face) -> Verdict:
        verdict = self.score_crop(align(image, face.landmarks, self.template, self.crop_size))
        verdict.face = face
        return verdict

    def score_image(self, image: np.ndarray, landmarks=None, faces: str = "all") -> list[Verdict]:
        """Every face of a uint8 RGB image [H, W, 3] (`faces`: all, or the largest), largest first; one no_face
        verdict when there is none."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        found = self.faces(image, landmarks)
        if not found:
            return [no_face(self.min_face)]
        return [self.score_face(image, f) for f in (found if faces == "all" else found[:1])]

    def score_video(self, frames, track: str = "iou", stream: Stream | None = None) -> dict:
        """One face followed over the frames [(index, image)], read one at a time: the largest face in each frame
        (`largest`), or the one that overlaps the face followed so far the most (`iou`, starting from the first
        frame's largest; when none overlaps, sampled frames being far apart, the one whose centre is nearest). The
        video's probability is the mean over frames whose status is ok; `per_frame` lists every sampled frame's.
        With a `stream` (SDR's temporal head) every frame is pushed to it as it is scored, and the video's verdict is
        the temporal head's (`video_record`)."""
        records, last, windows = [], None, []
        for index, image in frames:
            face = follow(self.faces(image), last, track)
            verdict = self.score_face(image, face) if face else Verdict("no_face", "no face followed in this frame")
            last = face or last
            records.append((int(index), verdict))
            if stream is not None:
                windows += stream.push(int(index), verdict)
        if stream is not None:
            windows += stream.flush()
        return video_record(records, self.threshold, windows if stream is not None else None)


def follow(found: list[Face], last: Face | None, track: str = "iou") -> Face | None:
    """The face to score in this frame, given the faces found (largest first) and the one followed so far."""
    if last is not None and track == "iou" and found:
        best = max(found, key=lambda f: iou(f.box, last.box))
        if iou(best.box, last.box) <= 0.3:
            centre = (last.box[:2] + last.box[2:]) / 2
            best = min(found, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
        return best
    return found[0] if found else None


def video_record(frames: list[tuple[int, Verdict]], threshold: float, windows: list[dict] | None = None) -> dict:
    """The video's verdict from its frames': mean probability over the usable (ok) frames; with `windows` (the
    temporal head's, Stream), the mean logit of its windows whose status is ok, the frame mean kept beside it."""
    usable = [v for _, v in frames if v.status == "ok"]
    counts = {s: sum(v.status == s for _, v in frames) for s in STATUSES if any(v.status == s for _, v in frames)}
    record = {"frames": len(frames), "usable_frames": len(usable), "frame_statuses": counts,
              "per_frame": [dict(v.record(top=0), frame=i) for i, v in frames]}
    if not usable:
        status = "no_face" if not frames or counts.get("no_face", 0) == len(frames) else max(counts, key=counts.get)
        detail = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no frame decoded"
        if windows is not None:
            record.update(aggregation="temporal", windows=windows)
        return dict(record, status=status, reason=f"no frame with a usable region ({detail})", probability=None,
                    logit=None, decision=None)
    probability = float(np.mean([v.probability for v in usable]))
    p = min(max(probability, 1e-7), 1.0 - 1e-7)  # a finite logit for JSON when every frame's probability rounds to 0 or 1
    logit = float(np.log(p) - np.log1p(-p))
    decision = "fake" if logit >= threshold else "real"  # the logit of the mean probability, at the model's threshold
    record = dict(record, status="ok", reason="", probability=probability, logit=logit, decision=decision)
    return record if windows is None else temporal_record(record, windows)


def temporal_record(frame_mean: dict, windows: list[dict]) -> dict:
    """A video's record whose verdict is the temporal head's: the mean logit of its ok windows (status no_region
    when none), with `windows` and the frame mean's verdict as `frame_mean`."""
    keys = ("status", "reason", "probability", "logit", "decision")
    out = {k: v for k, v in frame_mean.items() if k not in keys}
    out.update(aggregation="temporal", windows=windows, frame_mean={k: frame_mean[k] for k in keys})
    ok = [w for w in windows if w["status"] == "ok"]
    if not ok:
        return dict(out, status="no_region", reason=f"no window of {len(windows)} had enough usable frames",
                    probability=None, logit=None, decision=None)
    logit = float(np.mean([w["logit"] for w in ok]))
    return dict(out, status="ok", reason="", probability=float(1.0 / (1.0 + np.exp(-logit))), logit=logit,
                decision="fake" if logit >= ok[0]["threshold"] else "real")


class Stream:
    """SDR's temporal head over frames as they arrive (a camera, or a video decoded one frame at a time): a ring
    buffer of the last T frames' features and validity; a window is scored once the buffer holds T frames and
    `stride` frames arrived since the last score (stride T: one score per T frames; 1: a sliding window), and
    `flush` scores what is left at the end (padded with invalid frames). `temporal(x [1, T, D + 1])` -> {logit,
    probability, valid_frames}: the bundle's temporal graph, or the kit's torch head."""

    def __init__(self, temporal, frames: int, feature_dim: int, threshold: float, min_valid: int = 1,
                 stride: int | None = None, clock=None) -> None:
        if not 1 <= (stride or frames) <= frames:
            raise ValueError(f"stride {stride} must be between 1 and the window's {frames} frames")
        self.temporal, self.frames, self.dim, self.threshold = temporal, frames, feature_dim, threshold
        self.min_valid, self.stride = min_valid, stride or frames
        self.buffer: collections.deque = collections.deque(maxlen=frames)  # (index, feature or None)
        self.since = 0  # frames pushed since the last scored window
        self.clock = clock or time.perf_counter
        self.window_ms: list[float] = []

    def push(self, index: int, verdict: Verdict) -> list[dict]:
        """Add one frame's verdict (usable when ok and it carries a feature); -> [the window scored now] or []."""
        usable = verdict.status == "ok" and verdict.feature is not None
        self.buffer.append((index, verdict.feature if usable else None))
        self.since += 1
        if len(self.buffer) == self.frames and self.since >= self.stride:
            return [self._score()]
        return []

    def flush(self) -> list[dict]:
        """Score the frames not yet in any scored window (a clip shorter than T, or its tail)."""
        return [self._score()] if self.since else []

    def _score(self) -> dict:
        x = np.zeros((1, self.frames, self.dim + 1), np.float32)
        items = list(self.buffer)  # the last T frames (fewer in a clip shorter than T: the rest stays invalid)
        for i, (_, feature) in enumerate(items):
            if feature is not None:
                x[0, i, :-1], x[0, i, -1] = feature, 1.0
        self.since = 0
        record = {"first_frame": items[0][0], "last_frame": items[-1][0], "valid_frames": int(x[0, :, -1].sum()),
                  "threshold": self.threshold}
        if record["valid_frames"] < self.min_valid:
            return dict(record, status="no_region", reason=f"{record['valid_frames']} usable frames of {len(items)} "
                        f"(at least {self.min_valid} needed)", logit=None, probability=None, decision=None)
        start = self.clock()
        out = self.temporal(x)
        self.window_ms.append((self.clock() - start) * 1e3)
        logit = float(np.asarray(out["logit"]).reshape(-1)[0])
        if not np.isfinite(logit):
            return dict(record, status="model_error", reason=f"the temporal head returned a non-finite score ({logit})",
                        logit=None, probability=None, decision=None)
        return dict(record, status="ok", reason="", logit=logit, probability=float(1.0 / (1.0 + np.exp(-logit))),
                    decision="fake" if logit >= self.threshold else "real")
