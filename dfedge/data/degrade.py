"""Degradations an uploaded face crop suffers: recompression, resampling, blur, noise, colour changes.

Every family maps a uint8 RGB image [H, W, 3] to a uint8 image of the same shape (resampling goes down and back
up) and is a pure function of (image, params, seed). The pixel work is OpenCV's (JPEG codec, filters, resize,
colour conversions); this module only chooses parameters.

A spec names degradations to measure drift under, one per comma; a family may repeat with other params, and
params inside one family are separated by ';':

    jpeg:q=50,jpeg:q=10,blur:s=1.5,motion:k=9;angle=30,compound

`compound` is a seeded random chain of 2-4 of the other families with random strengths (strength ~
Beta(1.2, 1.2), as in the NTIRE 2026 robust deepfake detection degradation engines); `describe()` gives the
concrete chain a seed picked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, rng: np.random.Generator, *, q: int) -> np.ndarray:
    """Re-encode as JPEG at quality q (libjpeg's default 4:2:0 subsampling)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(q)])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode a {list(image.shape)} image")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _resize(image: np.ndarray, rng: np.random.Generator, *, scale: float, interp: str) -> np.ndarray:
    """Down to `scale` of the size and back up, both ways with `interp`."""
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=INTERPOLATIONS[interp])
    return cv2.resize(small, (w, h), interpolation=INTERPOLATIONS[interp])


def _blur(image: np.ndarray, rng: np.random.Generator, *, s: float) -> np.ndarray:
    """Gaussian blur of standard deviation s pixels (kernel size from OpenCV's rule for sigma)."""
    return cv2.GaussianBlur(image, (0, 0), float(s)) if s > 0 else image.copy()


def _random_angle(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(0, 180)), 1)


def _motion(image: np.ndarray, rng: np.random.Generator, *, k: int, angle: float | None) -> np.ndarray:
    """Linear motion blur: a line kernel of length k pixels at `angle` degrees (counter-clockwise from the x axis;
    drawn from rng when None)."""
    if angle is None:
        angle = _random_angle(rng)
    if k <= 1:
        return image.copy()
    size = int(k) | 1  # odd, so the line is centred; an even k gets half-weight end pixels
    c = (size - 1) / 2
    line = np.zeros((size, size), np.float32)
    line[size // 2] = 1
    if size != k:
        line[size // 2, [0, -1]] = 0.5
    rotation = cv2.getRotationMatrix2D((c, c), float(angle), 1.0)
    kernel = cv2.warpAffine(line, rotation, (size, size), flags=cv2.INTER_LINEAR)
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101)


def _noise(image: np.ndarray, rng: np.random.Generator, *, sigma: float) -> np.ndarray:
    """Additive Gaussian noise, standard deviation sigma on the 0-255 scale, independent per pixel and channel."""
    return _to_uint8(image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma))


def _chroma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """4:2:0 chroma subsampling: Cr and Cb averaged over 2x2 blocks and upsampled again; luma kept."""
    h, w = image.shape[:2]
    y, cr, cb = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb))
    half = (max(1, (w + 1) // 2), max(1, (h + 1) // 2))
    cr, cb = (cv2.resize(cv2.resize(ch, half, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
              for ch in (cr, cb))
    return cv2.cvtColor(cv2.merge([y, cr, cb]), cv2.COLOR_YCrCb2RGB)


def _color(image: np.ndarray, rng: np.random.Generator, *, m: float) -> np.ndarray:
    """Brightness (up to +-0.25 of full scale), contrast and saturation (factors 1 +- m) and hue (up to +-30 deg)
    shifts, each of magnitude m times a seeded uniform draw in [-1, 1]."""
    brightness, contrast, saturation, hue = (float(v) for v in m * rng.uniform(-1, 1, 4) * [0.25, 1, 1, 30])
    x = image.astype(np.float32) / 255
    x = np.clip((x - x.mean()) * (1 + contrast) + x.mean() + brightness, 0, 1)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float input: H in [0, 360), S and V in [0, 1]
    hsv[..., 0] = (hsv[..., 0] + hue) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + saturation), 0, 1)
    return _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255)


def _compound(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for step in _draw_chain(rng):
        image = _run(image, step, rng)
    return image


@dataclass(frozen=True)
class Family:
    """One degradation family: `fn(image, rng, **params)`, its default params, the valid range (lo, hi) or the
    allowed names of each param, and `sample(strength, rng)` -> params for a compound step (strength in [0, 1],
    1 = worst)."""

    fn: Callable[..., np.ndarray]
    defaults: dict
    limits: dict = field(default_factory=dict)
    sample: Callable[[float, np.random.Generator], dict] | None = None
    random: bool = False  # the output depends on the seed


FAMILIES: dict[str, Family] = {
    "jpeg": Family(_jpeg, {"q": 50}, {"q": (1, 100)}, lambda s, rng: {"q": int(round(95 - 85 * s))}),
    "resize": Family(
        _resize, {"scale": 0.5, "interp": "bilinear"}, {"scale": (0.01, 1.0), "interp": tuple(INTERPOLATIONS)},
        lambda s, rng: {"scale": round(1 - 0.7 * s, 2), "interp": str(rng.choice(list(INTERPOLATIONS)))},
    ),
    "blur": Family(_blur, {"s": 1.5}, {"s": (0.0, 50.0)}, lambda s, rng: {"s": round(0.3 + 2.7 * s, 2)}),
    "motion": Family(
        _motion, {"k": 9, "angle": None}, {"k": (1, 101), "angle": (-360.0, 360.0)},
        lambda s, rng: {"k": 3 + 2 * int(round(6 * s)), "angle": _random_angle(rng)}, random=True,
    ),
    "noise": Family(_noise, {"sigma": 8.0}, {"sigma": (0.0, 255.0)}, lambda s, rng: {"sigma": round(2 + 18 * s, 1)},
                    random=True),
    "chroma": Family(_chroma, {}, {}, lambda s, rng: {}),
    "color": Family(_color, {"m": 0.2}, {"m": (0.0, 1.0)}, lambda s, rng: {"m": round(0.05 + 0.35 * s, 2)},
                    random=True),
    "compound": Family(_compound, {}, random=True),
}

COMPOUND_STEPS = (2, 4)  # chain length, inclusive
COMPOUND_STRENGTH = (1.2, 1.2)  # Beta(a, b) of each step's strength


def _format(value) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _known(names) -> str:
    return ", ".join(names) if names else "none"


def _check(family: str, params: dict) -> dict:
    """Params with defaults filled in, validated against the family's table entry."""
    if family not in FAMILIES:
        raise ValueError(f"unknown degradation family '{family}' (known: {_known(FAMILIES)})")
    entry = FAMILIES[family]
    unknown = [name for name in params if name not in entry.defaults]
    if unknown:
        raise ValueError(f"unknown parameter '{unknown[0]}' for {family} (known: {_known(entry.defaults)})")
    full = {**entry.defaults, **params}
    for name, value in full.items():
        limit = entry.limits.get(name)
        if value is None or limit is None:
            continue
        if isinstance(limit[0], str):
            if value not in limit:
                raise ValueError(f"{family}: {name}={value} is not one of {', '.join(limit)}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{family}: {name}={value!r} is not a number")
        elif not limit[0] <= value <= limit[1]:
            raise ValueError(f"{family}: {name}={_format(value)} is outside [{_format(limit[0])}, {_format(limit[1])}]")
    return full


@dataclass(frozen=True)
class Degradation:
    """A family and its params (defaults filled in on construction, so equal specs compare equal)."""

    family: str
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "params", _check(self.family, dict(self.params)))

    @property
    def label(self) -> str:
        """`family[:name=value;...]`, params left out when None (drawn from the seed); parse_spec reads it back."""
        parts = [f"{k}={_format(v)}" for k, v in self.params.items() if v is not None]
        return f"{self.family}:{';'.join(parts)}" if parts else self.family

    def __hash__(self) -> int:
        return hash(self.label)


def _parse_value(family: str, name: str, text: str):
    default = FAMILIES[family].defaults[name]
    kind = float if default is None else type(default)
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{family}: {name}={text} is not {'an int' if kind is int else 'a number'}") from None


def parse_spec(spec: str) -> list[Degradation]:
    """`"jpeg:q=50,blur:s=1.5,compound"` -> three Degradations; missing params take the family's defaults."""
    out = []
    for entry in (e.strip() for e in spec.split(",")) if spec.strip() else ():
        if not entry:
            raise ValueError(f"empty entry in degradation spec '{spec}'")
        family, _, rest = (part.strip() for part in entry.partition(":"))
        _check(family, {})
        params = {}
        for item in (i.strip() for i in rest.split(";")) if rest else ():
            name, eq, value = (part.strip() for part in item.partition("="))
            if not eq or not name or not value:
                raise ValueError(f"malformed parameter '{item}' in '{entry}' (expected name=value)")
            if name in params:
                raise ValueError(f"parameter '{name}' given twice in '{entry}'")
            # an unknown name is kept as text: Degradation() refuses it, naming the known ones
            params[name] = _parse_value(family, name, value) if name in FAMILIES[family].defaults else value
        out.append(Degradation(family, params))
    return out


def _draw_chain(rng: np.random.Generator) -> list[Degradation]:
    """The compound chain: 2-4 distinct other families in random order, each at a Beta-distributed strength."""
    names = [name for name in FAMILIES if name != "compound"]
    n = int(rng.integers(COMPOUND_STEPS[0], COMPOUND_STEPS[1] + 1))
    chain = []
    for name in rng.choice(names, size=n, replace=False):
        strength = float(rng.beta(*COMPOUND_STRENGTH))
        chain.append(Degradation(str(name), FAMILIES[name].sample(strength, rng)))
    return chain


def _resolve(degradation: Degradation, rng: np.random.Generator) -> list[Degradation]:
    """The concrete steps for this rng: the compound chain, or the degradation with seeded params drawn."""
    if degradation.family == "compound":
        return _draw_chain(rng)
    if degradation.family == "motion" and degradation.params["angle"] is None:
        return [Degradation("motion", {**degradation.params, "angle": _random_angle(rng)})]
    return [degradation]


def _run(image: np.ndarray, step: Degradation, rng: np.random.Generator) -> np.ndarray:
    return FAMILIES[step.family].fn(image, rng, **step.params)


def apply(image: np.ndarray, degradation: Degradation, seed: int) -> np.ndarray:
    """Degraded copy of a uint8 RGB image [H, W, 3], same shape and dtype; identical bytes for the same
    (image, degradation, seed). Pass a different seed per image (e.g. its index) for independent noise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {got}")
    rng = np.random.default_rng(seed)
    out = np.ascontiguousarray(image)
    for step in _resolve(degradation, rng):
        out = _run(out, step, rng)
    return out


def describe(degradation: Degradation, seed: int) -> str:
    """What apply() does for this seed: the label, with seeded params filled in; for compound the chain,
    e.g. `compound[jpeg:q=43 > blur:s=1.2]`."""
    steps = _resolve(degradation, np.random.default_rng(seed))
    if degradation.family == "compound":
        return f"compound[{' > '.join(step.label for step in steps)}]"
    return steps[0].label
