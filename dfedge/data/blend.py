"""Self-blended fakes (the idea of Shiohara & Yamasaki, CVPR 2022, re-implemented from the paper).

A fake is a real face whose region is replaced by an altered copy of itself: the copy gets a colour shift and a
frequency change (down-up resampling or sharpening) and is shifted/scaled slightly; it is blended back through
the region's mask after the mask is elastically deformed, blurred and scaled by a blend ratio. The region mask
comes from a label map (toy faces) or from a parser's labels (real photos), so the same code serves both.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..models.farl import LABEL_SETS
from ..models.region import region_classes


def region_mask(labels: np.ndarray, region: str = "mouth", label_set: str = "lapa") -> np.ndarray:
    """Binary float32 mask [H, W] of the region's classes in a label map."""
    if labels.max() >= len(LABEL_SETS[label_set]):
        raise ValueError(f"label map holds class {int(labels.max())}, beyond the {label_set} label set")
    return np.isin(labels, region_classes(label_set, region)).astype(np.float32)


def _elastic(mask: np.ndarray, rng: np.random.Generator, amplitude: float, cells: int = 6) -> np.ndarray:
    """Warp a mask by a smooth random displacement field (cubic-upsampled coarse noise, `amplitude` pixels)."""
    h, w = mask.shape
    field = [cv2.resize(rng.normal(0, 1, (cells, cells)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) for _ in range(2)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.float32(amplitude)
    return cv2.remap(mask, xx + a * field[0], yy + a * field[1], cv2.INTER_LINEAR, borderValue=0)


DETAIL_MODES = ("random", "smooth", "sharp")


def _colour_and_frequency(img: np.ndarray, rng: np.random.Generator, strength: float, detail: str) -> np.ndarray:
    out = img.astype(np.float32)
    out = out * (1 + strength * rng.uniform(-0.15, 0.15, 3)) + strength * rng.uniform(-20, 20, 3)  # per-channel gain/shift
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + strength * rng.uniform(-8, 8)) % 180
    hsv[..., 1] *= 1 + strength * rng.uniform(-0.3, 0.3)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    h, w = img.shape[:2]
    smooth = rng.random() < 0.5 if detail == "random" else detail == "smooth"
    if smooth:  # lose detail: down-up resampling
        f = 1 - strength * rng.uniform(0.3, 0.6)
        small = cv2.resize(out, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:  # add detail: unsharp masking
        blur = cv2.GaussianBlur(out, (0, 0), 2.0)
        out = out + strength * rng.uniform(0.8, 1.5) * (out - blur)
    return out


def self_blend(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float = 1.0, detail: str = "random",
    tint: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(fake uint8 [H, W, 3], blend mask float32 [H, W]) from a real face and a binary region mask.

    `strength` scales the colour/frequency change and the blend ratio (1 = the SBI ranges). `detail` picks the
    frequency change: "random" (SBI: blur or sharpen, half each), "smooth" (always down-up resampled, the
    signature of a generated region that is less detailed than the photo around it) or "sharp". `tint` =
    (hue shift in OpenCV hue units, saturation factor) adds a consistent colour bias on top of the random one,
    as a particular generator has.
    """
    if detail not in DETAIL_MODES:
        raise ValueError(f"unknown detail mode '{detail}' (known: {', '.join(DETAIL_MODES)})")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {list(image.shape)}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {list(mask.shape)} does not match image {list(image.shape[:2])}")
    if mask.max() <= 0:
        raise ValueError("the region mask is empty: nothing to blend")
    h, w = mask.shape
    source = _colour_and_frequency(image, rng, strength, detail)
    if tint is not None:
        hsv = cv2.cvtColor(np.clip(source, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + tint[0]) % 180
        hsv[..., 1] *= tint[1]
        source = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    ys, xs = np.nonzero(mask)
    centre = (float(xs.mean()), float(ys.mean()))
    extent = max(np.ptp(xs), np.ptp(ys)) + 1
    m = cv2.getRotationMatrix2D(centre, 0.0, rng.uniform(0.95, 1.05))
    m[:, 2] += [rng.uniform(-0.06, 0.06) * extent, rng.uniform(-0.03, 0.03) * extent]
    source = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    grown = cv2.dilate(mask.astype(np.float32), np.ones((3, 3), np.uint8), iterations=int(rng.integers(1, 4)))
    blend = _elastic(grown, rng, amplitude=0.04 * extent)
    blend = cv2.GaussianBlur(blend, (0, 0), rng.uniform(0.04, 0.12) * extent)
    blend = blend / max(float(blend.max()), 1e-6)
    blend *= min(1.0, strength * rng.choice([0.6, 0.8, 1.0, 1.0, 1.0]))
    fake = blend[..., None] * source + (1 - blend[..., None]) * image.astype(np.float32)
    return np.clip(fake + 0.5, 0, 255).astype(np.uint8), blend.astype(np.float32)
