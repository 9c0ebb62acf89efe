"""Procedural toy faces: 448x448 aligned crops with an exact LaPa label map and 5 landmarks.

Each face is drawn as label polygons in the alignment template's frame, moved by a small similarity transform
(pose/scale jitter), then coloured per label with identity-specific palettes, shading, a lighting gradient,
texture noise and a blur. The label map is exact by construction: it is what was drawn. Every sample is a
pure function of (seed, index), so any item can be regenerated alone. A `FrameState` moves, lights and opens the
mouth of the same face (same identity) for the frames of a toy video (toyvideo.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ..models.detector import ALIGN_TEMPLATE, CROP_SIZE
from ..models.farl import LABEL_SETS

LAPA = {name: i for i, name in enumerate(LABEL_SETS["lapa"])}

SKIN_TONES = np.array(
    [[232, 190, 160], [224, 172, 140], [198, 140, 105], [165, 110, 80], [120, 80, 55], [90, 60, 42], [240, 205, 180]],
    dtype=np.float32,
)
HAIR_TONES = np.array(
    [[30, 25, 20], [70, 50, 35], [120, 85, 50], [180, 150, 100], [200, 190, 170], [110, 40, 25], [60, 60, 60]],
    dtype=np.float32,
)
IRIS_TONES = np.array([[70, 45, 30], [40, 80, 120], [60, 110, 70], [25, 20, 18]], dtype=np.float32)


@dataclass
class ToyFace:
    image: np.ndarray  # uint8 [448, 448, 3] RGB
    labels: np.ndarray  # uint8 [448, 448], LaPa indices
    landmarks: np.ndarray  # float32 [5, 2] (x, y): eye, eye, nose tip, mouth corner, mouth corner (image-left first)
    mouth_open: bool
    occluded: bool


@dataclass(frozen=True)
class FrameState:
    """One video frame's changes to a face, applied after its identity is drawn (so every frame of a clip is the
    same person): mouth opening in px at 448 (None: the drawn one; 0: closed), head motion composed onto the drawn
    pose (rotation in degrees, shift in px at 448, scale factor, all about the crop centre), a lighting gain and a
    turn of the lighting gradient (radians)."""

    opening: float | None = None
    angle: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    gain: float = 1.0
    light_angle: float = 0.0


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle: float = 0.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = ax * np.cos(t), ay * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _lip_polygons(cx: float, cy: float, half_w: float, upper: float, lower: float, opening: float, n: int = 24):
    """Upper lip, inner mouth (None when closed) and lower lip as polygons around the mouth line y = cy."""
    x = np.linspace(-half_w, half_w, n)
    s = np.sqrt(np.clip(1 - (x / half_w) ** 2, 0, 1))
    cupid = 0.25 * upper * np.exp(-((np.abs(x) - 0.25 * half_w) ** 2) / (0.02 * half_w**2))  # the bow's two peaks
    gap = 0.5 * opening * s
    top = cy - gap - upper * s - cupid
    bottom = cy + gap + lower * s
    upper_poly = np.concatenate([np.stack([cx + x, top], 1), np.stack([cx + x, cy - gap], 1)[::-1]])
    lower_poly = np.concatenate([np.stack([cx + x, cy + gap], 1), np.stack([cx + x, bottom], 1)[::-1]])
    inner = None
    if opening > 0:
        inner = np.concatenate([np.stack([cx + x, cy - gap], 1), np.stack([cx + x, cy + gap], 1)[::-1]])
    return upper_poly, inner, lower_poly


def _fill(canvas: np.ndarray, poly: np.ndarray, value, transform: np.ndarray) -> None:
    pts = poly @ transform[:, :2].T + transform[:, 2]
    # cv2 draws with sub-pixel precision given a shift: 4 fractional bits.
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], value, lineType=cv2.LINE_8, shift=4)


def _similarity(rng: np.random.Generator, size: int) -> np.ndarray:
    """Pose/scale jitter around the crop centre: rotation +-6 deg, scale 0.93-1.07, shift +-8 px."""
    angle = np.deg2rad(rng.uniform(-6, 6))
    scale = rng.uniform(0.93, 1.07)
    shift = rng.uniform(-8, 8, size=2)
    c = np.array([size / 2, size * 0.56])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.concatenate([rot, (c - rot @ c + shift)[:, None]], axis=1)


def _moved(transform: np.ndarray, state: FrameState, size: int) -> np.ndarray:
    """The drawn pose followed by the state's rotation/scale about the crop centre and its shift."""
    k = size / CROP_SIZE
    angle = np.deg2rad(state.angle)
    c = np.array([size / 2, size * 0.56])
    rot = state.scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    motion = np.concatenate([rot, (c - rot @ c + np.asarray(state.shift) * k)[:, None]], axis=1)
    return np.concatenate([motion[:, :2] @ transform[:, :2], (motion[:, :2] @ transform[:, 2] + motion[:, 2])[:, None]], axis=1)


def render_face(seed: int, index: int, size: int = CROP_SIZE, state: FrameState | None = None) -> ToyFace:
    """One toy face, a pure function of (seed, index); `state` moves, lights and opens the mouth of the same face
    (None: the face as drawn, byte for byte)."""
    rng = np.random.default_rng([seed, index])
    k = size / CROP_SIZE
    tpl = ALIGN_TEMPLATE * k
    transform = _similarity(rng, size)
    eye_l, eye_r, nose_tip, mouth_l, mouth_r = (tpl[i] + rng.normal(0, 2.5 * k, 2) for i in range(5))
    mouth_c = (mouth_l + mouth_r) / 2
    half_w = (mouth_r[0] - mouth_l[0]) / 2 * rng.uniform(0.95, 1.15)
    mouth_open = rng.random() < 0.5
    opening = rng.uniform(5, 18) * k if mouth_open else 0.0
    teeth = None  # (drawn opening, teeth of a mouth drawn closed) when the state reopens the mouth
    if state is not None:
        transform = _moved(transform, state, size)
        if state.opening is not None:
            teeth = (opening, bool(np.random.default_rng([seed, index, 7]).random() < 0.6))
            opening = max(float(state.opening), 0.0) * k

    face_c = np.array([size / 2 + rng.normal(0, 3 * k), size * 0.53 + rng.normal(0, 4 * k)])
    face_ax, face_ay = rng.uniform(100, 122) * k, rng.uniform(135, 160) * k

    labels = np.zeros((size, size), np.uint8)
    hair_style = rng.choice(["none", "short", "long"], p=[0.15, 0.5, 0.35])
    if hair_style != "none":
        top = _ellipse(face_c[0], face_c[1] - 18 * k, face_ax * 1.12, face_ay * 1.08)
        if hair_style == "short":
            top = top[top[:, 1] < face_c[1] - 0.1 * face_ay]
        else:
            top = np.concatenate([top[top[:, 1] < face_c[1]], [[face_c[0] + face_ax * 1.25, face_c[1] + face_ay * 0.9],
                                                            [face_c[0] - face_ax * 1.25, face_c[1] + face_ay * 0.9]]])
        _fill(labels, top, LAPA["hair"], transform)
    _fill(labels, _ellipse(*face_c, face_ax, face_ay), LAPA["face"], transform)
    if hair_style != "none":  # a fringe over the forehead
        fringe = _ellipse(face_c[0], face_c[1] - face_ay * 0.95, face_ax * 0.95, face_ay * rng.uniform(0.12, 0.3))
        _fill(labels, fringe, LAPA["hair"], transform)

    brow_lift, brow_w = rng.uniform(24, 34) * k, rng.uniform(22, 30) * k
    for eye, brow_label, eye_label, tilt in ((eye_l, "rb", "re", -1), (eye_r, "lb", "le", 1)):
        brow = _ellipse(eye[0], eye[1] - brow_lift, brow_w, rng.uniform(4, 7) * k, angle=tilt * rng.uniform(0.0, 0.15))
        _fill(labels, brow, LAPA[brow_label], transform)
        _fill(labels, _ellipse(*eye, rng.uniform(17, 23) * k, rng.uniform(7, 11) * k), LAPA[eye_label], transform)

    nose_w = rng.uniform(13, 19) * k
    nose = np.array([[nose_tip[0] - 5 * k, eye_l[1] + 8 * k], [nose_tip[0] + 5 * k, eye_l[1] + 8 * k],
                     [nose_tip[0] + nose_w, nose_tip[1] - 4 * k], [nose_tip[0] + 0.6 * nose_w, nose_tip[1] + 6 * k],
                     [nose_tip[0] - 0.6 * nose_w, nose_tip[1] + 6 * k], [nose_tip[0] - nose_w, nose_tip[1] - 4 * k]])
    _fill(labels, nose, LAPA["nose"], transform)

    upper, inner, lower = _lip_polygons(mouth_c[0], mouth_c[1], half_w, rng.uniform(8, 13) * k,
                                        rng.uniform(10, 16) * k, opening)
    _fill(labels, upper, LAPA["ulip"], transform)
    _fill(labels, lower, LAPA["llip"], transform)
    if inner is not None:
        _fill(labels, inner, LAPA["imouth"], transform)

    occluded = rng.random() < 0.12
    occluder = None
    if occluded:  # a blob on a cheek or the forehead, never over the mouth; occluded pixels are background
        spot = rng.choice(3)
        centre = [(eye_l[0] - 25 * k, mouth_c[1] - 40 * k), (eye_r[0] + 25 * k, mouth_c[1] - 40 * k),
                  (face_c[0], eye_l[1] - 60 * k)][spot]
        occluder = _ellipse(*centre, rng.uniform(15, 30) * k, rng.uniform(12, 25) * k, angle=rng.uniform(0, np.pi))
        _fill(labels, occluder, LAPA["background"], transform)

    image = _paint(rng, labels, transform, (eye_l, eye_r), (mouth_c, opening), occluder, state, teeth)
    if state is not None:
        mouth_open = bool((labels == LAPA["imouth"]).any())
    points = np.stack([eye_l, eye_r, nose_tip + np.array([0, 2 * k]), mouth_c - [half_w, 0], mouth_c + [half_w, 0]])
    landmarks = (points @ transform[:, :2].T + transform[:, 2]).astype(np.float32)
    return ToyFace(image=image, labels=labels, landmarks=landmarks, mouth_open=mouth_open, occluded=occluded)


def _paint(rng, labels, transform, eyes, mouth, occluder, state=None, teeth=None) -> np.ndarray:
    """Colour the label map [size, size]; `eyes` = (left, right) centres, `mouth` = (centre, opening). Smooth fields
    (shading, lighting, background texture) are computed at 1/4 size and upsampled: they are low-frequency by
    design, and this keeps a face at a few milliseconds. `state` relights (FrameState); `teeth` = (the drawn opening,
    whether a mouth drawn closed shows teeth once opened) when the state changed the opening."""
    (eye_l, eye_r), (mouth_c, opening), size = eyes, mouth, labels.shape[0]
    k = size / CROP_SIZE
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, 3)
    hair = HAIR_TONES[rng.integers(len(HAIR_TONES))] * rng.uniform(0.85, 1.15, 3)
    lips = skin * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.85, 1.1) + np.array([20, 0, 5])
    palette = np.zeros((256, 3), np.float32)
    palette[LAPA["background"]] = rng.uniform(20, 235, 3)
    palette[LAPA["face"]] = skin
    palette[LAPA["nose"]] = skin * 0.93
    palette[[LAPA["rb"], LAPA["lb"]]] = hair * 0.8 if rng.random() < 0.7 else skin * 0.45
    palette[[LAPA["re"], LAPA["le"]]] = [235, 235, 230]
    palette[[LAPA["ulip"], LAPA["llip"]]] = lips
    palette[LAPA["llip"]] *= 1.06
    palette[LAPA["imouth"]] = [60, 20, 25]
    palette[LAPA["hair"]] = hair
    lut = np.clip(palette, 0, 255).astype(np.uint8)[:, None, :]  # [256, 1, 3] for cv2.LUT
    base = cv2.LUT(cv2.merge([labels, labels, labels]), lut)

    # irises, teeth and the occluder's own colour: painted over the label colours, labels unchanged
    overlay = np.zeros((size, size), np.uint8)
    for eye in (eye_l, eye_r):
        _fill(overlay, _ellipse(eye[0] + rng.normal(0, 2), eye[1], 7 * k, 7 * k), 1, transform)
    drawn, closed_teeth = (opening, None) if teeth is None else teeth
    # the teeth draw happens as for the mouth as drawn, so that the identity's later draws stay the same
    show = drawn > 6 * k and rng.random() < 0.6
    if teeth is not None:
        show = opening > 6 * k and (show if drawn > 6 * k else closed_teeth)
    if show:
        _fill(overlay, _ellipse(mouth_c[0], mouth_c[1] - opening * 0.25, 22 * k, opening * 0.3), 2, transform)
    if occluder is not None:
        _fill(overlay, occluder, 3, transform)
    eyes = np.isin(labels, [LAPA["re"], LAPA["le"]])
    base[(overlay == 1) & eyes] = IRIS_TONES[rng.integers(len(IRIS_TONES))]
    base[(overlay == 2) & (labels == LAPA["imouth"])] = [225, 220, 205]
    base[overlay == 3] = rng.uniform(30, 220, 3)

    small = size // 4
    yy, xx = np.mgrid[0:small, 0:small].astype(np.float32) * (size / small)
    face = cv2.resize(((labels > 0) & (labels < LAPA["hair"])).astype(np.float32), (small, small), interpolation=cv2.INTER_AREA)
    shade = 0.8 + 0.2 * cv2.GaussianBlur(face, (0, 0), 18 * k / 4)
    theta = rng.uniform(0, 2 * np.pi)
    if state is not None:
        theta += state.light_angle
    grad = (np.cos(theta) * (xx - size / 2) + np.sin(theta) * (yy - size / 2)) / size
    gain = shade * (rng.uniform(0.8, 1.15) + rng.uniform(0.1, 0.5) * grad)
    if state is not None:
        gain = gain * state.gain
    if rng.random() < 0.5:  # background texture: stripes or blobs
        freq, phase, th = rng.uniform(0.01, 0.05), rng.uniform(0, 6.3), rng.uniform(0, np.pi)
        wave = np.sin(freq * (np.cos(th) * xx + np.sin(th) * yy) + phase)
    else:
        wave = cv2.resize(rng.normal(0, 1, (6, 6)).astype(np.float32), (small, small), interpolation=cv2.INTER_CUBIC)
    background = cv2.resize((labels == 0).astype(np.float32), (small, small), interpolation=cv2.INTER_AREA)
    offset = (wave * background)[..., None] * (rng.uniform(10, 40) * rng.uniform(-1, 1, 3)).astype(np.float32)
    offset += cv2.resize(rng.normal(0, 1, (12, 12, 3)).astype(np.float32), (small, small), interpolation=cv2.INTER_CUBIC) * rng.uniform(2, 8)
    gain = cv2.resize(gain.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    offset = cv2.resize(offset.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)

    img = cv2.GaussianBlur(base.astype(np.float32) * gain[..., None] + offset, (0, 0), rng.uniform(0.6, 1.3) * k)
    # sensor grain last, so every photo has pixel-level texture (a generated region lacks it)
    dy, dx = rng.integers(0, _NOISE_MARGIN, 2)
    img += _noise_tile(size)[dy : dy + size, dx : dx + size] * np.float32(rng.uniform(3, 8))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


_NOISE_MARGIN = 64


@functools.lru_cache(maxsize=2)
def _noise_tile(size: int) -> np.ndarray:
    """One fixed tile of white noise; faces take random windows of it (drawing fresh noise per face would cost
    more than drawing the face)."""
    rng = np.random.default_rng(20261123)
    return rng.standard_normal((size + _NOISE_MARGIN, size + _NOISE_MARGIN, 3), dtype=np.float32)


@dataclass
class ToySample:
    image: np.ndarray  # uint8 [448, 448, 3]
    fake: bool
    face: ToyFace  # the real face it was made from (labels, landmarks)
    blend_mask: np.ndarray | None  # float32 [448, 448] for fakes
    region: str | None = None  # the manipulated region of a fake


# Named, disjoint splits of the toy world (seeds). The shipped parser trains on "parser"; probes fit on
# "train" and are judged on "val"/"test".
SPLITS = {"parser": 0, "train": 1000, "val": 2000, "test": 3000}


# Toy fakes carry one generator's signature: a soft blended boundary, a random colour mismatch plus a consistent
# one (desaturated, slightly hue-shifted mouths), and less detail than the photo around them (smoothed, so they
# lack the sensor grain). With SBI's random colour changes alone a seeded toy DINOv3 gives no signal (mouth
# probe AUC 0.50, measured); with the consistent bias the mouth probe reaches ~0.97 while CLS stays ~0.48.
TOY_FAKE_STRENGTH = 1.4
TOY_GENERATOR_TINT = (6.0, 0.3)


# The multi-region toy world (toy:SPLIT:N:mixed): each fake is manipulated in one of these, drawn per item, so
# heads can be compared where the manipulated region is unknown.
MIXED_REGIONS = ("mouth", "eyes", "nose", "face")


def toy_sample(index: int, split: str = "train", region: str = "mouth", fake_fraction: float = 0.5) -> ToySample:
    """Item `index` of a toy split: a real face, or (with probability `fake_fraction`) its self-blended fake in
    `region` ("mixed": one of MIXED_REGIONS, drawn from the item's own stream). A pure function of its arguments;
    the same index is the same face, real or fake, in every region's set."""
    from .blend import region_mask, self_blend

    if split not in SPLITS:
        raise ValueError(f"unknown toy split '{split}' (known: {', '.join(SPLITS)})")
    seed = SPLITS[split]
    face = render_face(seed, index)
    rng = np.random.default_rng([seed, index, 1])
    if rng.random() >= fake_fraction:
        return ToySample(image=face.image, fake=False, face=face, blend_mask=None)
    if region == "mixed":
        region = MIXED_REGIONS[int(np.random.default_rng([seed, index, 2]).integers(len(MIXED_REGIONS)))]
    mask = region_mask(face.labels, region)
    if region == "face":
        mask = np.maximum(mask, region_mask(face.labels, "skin"))
    fake, blend = self_blend(face.image, mask, rng, strength=TOY_FAKE_STRENGTH, detail="smooth", tint=TOY_GENERATOR_TINT)
    return ToySample(image=fake, fake=True, face=face, blend_mask=blend, region=region)
