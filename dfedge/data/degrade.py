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


def _aniso(image: np.ndarray, rng: np.random.Generator, *, sx: float, sy: float, angle: float | None) -> np.ndarray:
    """Anisotropic Gaussian blur: standard deviations sx and sy pixels along axes turned by `angle` degrees."""
    radius = int(np.ceil(3 * max(sx, sy)))
    if radius == 0:
        return image.copy()
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    t = np.deg2rad(angle)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    kernel = np.exp(-0.5 * ((u / max(sx, 1e-3)) ** 2 + (v / max(sy, 1e-3)) ** 2))
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101)


def _box(image: np.ndarray, rng: np.random.Generator, *, k: int) -> np.ndarray:
    """Box blur: the mean over a k x k window."""
    return cv2.blur(image, (int(k), int(k)), borderType=cv2.BORDER_REFLECT_101) if k > 1 else image.copy()


def _speckle(image: np.ndarray, rng: np.random.Generator, *, sigma: float) -> np.ndarray:
    """Multiplicative noise: x (1 + n), n ~ N(0, sigma^2) per pixel and channel."""
    x = image.astype(np.float32)
    return _to_uint8(x + x * rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma))


def _poisson(image: np.ndarray, rng: np.random.Generator, *, peak: float) -> np.ndarray:
    """Shot noise: photon counts ~ Poisson(x / 255 * peak), scaled back (fewer photons, more noise)."""
    return _to_uint8(rng.poisson(image.astype(np.float64) * (peak / 255.0)) * (255.0 / peak))


def _saltpepper(image: np.ndarray, rng: np.random.Generator, *, amount: float) -> np.ndarray:
    """A share `amount` of the pixels set to black or white (half each, all channels)."""
    out = image.copy()
    hit = rng.random(image.shape[:2])
    out[hit < amount / 2] = 0
    out[(hit >= amount / 2) & (hit < amount)] = 255
    return out


def _grey(image: np.ndarray, rng: np.random.Generator, *, m: float) -> np.ndarray:
    """A share m of the way to greyscale (luma, ITU-R BT.601 as OpenCV weighs it)."""
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
    return _to_uint8(image * np.float32(1 - m) + luma * np.float32(m))


def _cast(image: np.ndarray, rng: np.random.Generator, *, m: float) -> np.ndarray:
    """Colour cast: each channel's gain 1 + m u, u ~ U(-1, 1) per channel from the seed."""
    return _to_uint8(image * (1 + m * rng.uniform(-1, 1, 3)).astype(np.float32))


def _banding(image: np.ndarray, rng: np.random.Generator, *, levels: int) -> np.ndarray:
    """Posterisation to `levels` evenly spaced values per channel (0 and 255 among them)."""
    step = 255.0 / (levels - 1)
    return _to_uint8(np.rint(image / step) * step)


def _brightness(image: np.ndarray, rng: np.random.Generator, *, b: float, c: float) -> np.ndarray:
    """Brightness b (a share of full scale, added) and contrast c (factor 1 + c about mid-grey)."""
    return _to_uint8((image.astype(np.float32) - 127.5) * np.float32(1 + c) + np.float32(127.5 + 255 * b))


def _aberration(image: np.ndarray, rng: np.random.Generator, *, px: float) -> np.ndarray:
    """Lateral chromatic aberration: red magnified and blue shrunk about the centre, by `px` pixels at the edge."""
    h, w = image.shape[:2]
    out = image.copy()
    for channel, sign in ((0, 1), (2, -1)):
        scale = 1 + sign * px / max(w / 2, 1)
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, scale)
        out[..., channel] = cv2.warpAffine(image[..., channel], matrix, (w, h), flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_REFLECT_101)
    return out


def _moire(image: np.ndarray, rng: np.random.Generator, *, a: float, period: float, angle: float | None) -> np.ndarray:
    """Moiré: a sinusoidal grating of amplitude `a` grey levels and `period` pixels at `angle` degrees, in a
    slightly different phase per channel (as a screen photographed through a colour filter array)."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.deg2rad(angle)
    phase = (xx * np.cos(t) + yy * np.sin(t)) * np.float32(2 * np.pi / period)
    grating = np.stack([np.sin(phase + k * np.float32(2 * np.pi / 3 * 0.25)) for k in range(3)], axis=-1)
    return _to_uint8(image + np.float32(a) * grating)


def _glitch(image: np.ndarray, rng: np.random.Generator, *, lines: int) -> np.ndarray:
    """Glitch lines: `lines` horizontal bands (1-4 rows each) shifted sideways by up to a quarter of the width,
    their channels rotated."""
    out = image.copy()
    h, w = image.shape[:2]
    for _ in range(int(lines)):
        top = int(rng.integers(0, h))
        rows = slice(top, min(h, top + int(rng.integers(1, 5))))
        out[rows] = np.roll(image[rows], int(rng.integers(-w // 4, w // 4 + 1)), axis=1)[..., [1, 2, 0]]
    return out


def _vignette(image: np.ndarray, rng: np.random.Generator, *, v: float) -> np.ndarray:
    """Vignetting: brightness falls by a share v at the corners, quadratically with the distance from the centre."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - (w - 1) / 2) / max(w / 2, 1)) ** 2 + ((yy - (h - 1) / 2) / max(h / 2, 1)) ** 2
    return _to_uint8(image * (1 - np.float32(v) * r2 / 2)[..., None])


def _distractor(image: np.ndarray, rng: np.random.Generator, *, size: float) -> np.ndarray:
    """A pasted distractor at a seeded place: a line of random letters or a solid patch (even odds), `size` of the
    short side high, in a random colour."""
    out = image.copy()
    h, w = image.shape[:2]
    side = max(2, int(round(size * min(h, w))))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    x, y = int(rng.integers(0, max(1, w - side))), int(rng.integers(side, max(side + 1, h)))
    if rng.random() < 0.5:
        text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(3, 9))))
        scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, side, 2)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 2, cv2.LINE_AA)
    else:
        out[y - side : y, x : x + side] = colour
    return out


def _compound(image: np.ndarray, rng: np.random.Generator, steps: list | None = None) -> np.ndarray:
    """The steps in order (the compound chain this rng draws when none are given)."""
    for step in _draw_chain(rng) if steps is None else steps:
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
    # the NTIRE 2026 engine's other operations (their strengths in the engine: NTIRE_OPS below)
    "aniso": Family(_aniso, {"sx": 2.0, "sy": 0.5, "angle": None}, {"sx": (0.0, 50.0), "sy": (0.0, 50.0), "angle": (-360.0, 360.0)},
                    random=True),
    "box": Family(_box, {"k": 5}, {"k": (1, 101)}),
    "speckle": Family(_speckle, {"sigma": 0.1}, {"sigma": (0.0, 2.0)}, random=True),
    "poisson": Family(_poisson, {"peak": 30.0}, {"peak": (1.0, 1e6)}, random=True),
    "saltpepper": Family(_saltpepper, {"amount": 0.02}, {"amount": (0.0, 1.0)}, random=True),
    "grey": Family(_grey, {"m": 1.0}, {"m": (0.0, 1.0)}),
    "cast": Family(_cast, {"m": 0.2}, {"m": (0.0, 1.0)}, random=True),
    "banding": Family(_banding, {"levels": 8}, {"levels": (2, 256)}),
    "brightness": Family(_brightness, {"b": 0.1, "c": 0.0}, {"b": (-1.0, 1.0), "c": (-1.0, 4.0)}),
    "aberration": Family(_aberration, {"px": 2.0}, {"px": (0.0, 100.0)}),
    "moire": Family(_moire, {"a": 12.0, "period": 4.0, "angle": None}, {"a": (0.0, 255.0), "period": (1.0, 1000.0),
                                                                        "angle": (-360.0, 360.0)}, random=True),
    "glitch": Family(_glitch, {"lines": 5}, {"lines": (0, 10000)}, random=True),
    "vignette": Family(_vignette, {"v": 0.4}, {"v": (0.0, 1.0)}),
    "distractor": Family(_distractor, {"size": 0.1}, {"size": (0.0, 1.0)}, random=True),
}

COMPOUND_FAMILIES = ("jpeg", "resize", "blur", "motion", "noise", "chroma", "color")  # what `compound` draws from
COMPOUND_STEPS = (2, 4)  # chain length, inclusive
COMPOUND_STRENGTH = (1.2, 1.2)  # Beta(a, b) of each step's strength


# The compound degradation engine of the NTIRE 2026 robust deepfake detection 4th-place entry (arXiv 2604.25889), as
# data: with probability `cycle_p` a cycle of 1-5 rounds of JPEG (quality 10-95) and a x2 down-and-up resize; then
# every operation below in a shuffled order, each with its probability and a strength s ~ Beta(1.2, 1.2), one of
# its alternatives picked at even odds; every operation keeps the image size (the paper's final resize back is
# the identity here). The paper gives the operations, their probabilities, the cast (+-40 % s), the noise sigma
# (60-100 s), the aberration (4 s px) and the banding levels (4-32); the other ranges are ours, stated per lambda.
@dataclass(frozen=True)
class EngineOp:
    name: str
    choices: tuple[tuple[str, Callable[[float, np.random.Generator], dict]], ...]  # (family, s, rng -> params)
    p: float = 0.3


def _sign(rng: np.random.Generator) -> float:
    return float(rng.choice([-1.0, 1.0]))


NTIRE = {"cycle_p": 0.3, "cycle_rounds": (1, 5), "cycle_jpeg_q": (10, 95), "strength": (1.2, 1.2)}
NTIRE_OPS = (
    EngineOp("blur", (("blur", lambda s, rng: {"s": round(0.2 + 2.8 * s, 2)}),
                      ("aniso", lambda s, rng: {"sx": round(0.2 + 2.8 * s, 2), "sy": round((0.2 + 2.8 * s) * rng.uniform(0.2, 1), 2),
                                                "angle": _random_angle(rng)}),
                      ("box", lambda s, rng: {"k": 3 + 2 * int(round(2 * s))}))),
    EngineOp("motion", (("motion", lambda s, rng: {"k": 3 + 2 * int(round(6 * s)), "angle": _random_angle(rng)}),)),
    EngineOp("shot-noise", (("speckle", lambda s, rng: {"sigma": round(0.02 + 0.28 * s, 3)}),
                            ("poisson", lambda s, rng: {"peak": round(10 + 245 * (1 - s), 1)}),
                            ("saltpepper", lambda s, rng: {"amount": round(0.001 + 0.049 * s, 4)}))),
    EngineOp("resize", (("resize", lambda s, rng: {"scale": round(1 - 0.7 * s, 2), "interp": str(rng.choice(list(INTERPOLATIONS)))}),)),
    EngineOp("colour", (("grey", lambda s, rng: {"m": round(s, 3)}), ("cast", lambda s, rng: {"m": round(0.4 * s, 3)}))),
    EngineOp("noise", (("noise", lambda s, rng: {"sigma": round(float(rng.uniform(60, 100)) * s, 1)}),)),
    EngineOp("jpeg", (("jpeg", lambda s, rng: {"q": int(round(95 - 85 * s))}),)),
    EngineOp("chroma", (("chroma", lambda s, rng: {}),)),
    EngineOp("banding", (("banding", lambda s, rng: {"levels": int(round(32 - 28 * s))}),)),
    EngineOp("brightness", (("brightness", lambda s, rng: {"b": round(0.25 * s * _sign(rng), 3), "c": round(0.5 * s * _sign(rng), 3)}),)),
    EngineOp("aberration", (("aberration", lambda s, rng: {"px": round(4 * s, 2)}),)),
    EngineOp("moire", (("moire", lambda s, rng: {"a": round(4 + 16 * s, 1), "period": round(float(rng.uniform(2, 6)), 2),
                                                  "angle": _random_angle(rng)}),)),
    EngineOp("glitch", (("glitch", lambda s, rng: {"lines": 1 + int(round(9 * s))}),)),
    EngineOp("vignette", (("vignette", lambda s, rng: {"v": round(0.1 + 0.6 * s, 3)}),)),
    EngineOp("distractor", (("distractor", lambda s, rng: {"size": round(0.05 + 0.15 * s, 3)}),), p=0.15),
)
NTIRE_NAMES = ("cycle", *(op.name for op in NTIRE_OPS))


def _draw_ntire(rng: np.random.Generator, only: str) -> list[Degradation]:
    """The engine's steps for this rng; `only` = one of NTIRE_NAMES runs that operation alone, always."""
    steps = []
    if only in ("all", "cycle") and (only == "cycle" or rng.random() < NTIRE["cycle_p"]):
        lo, hi = NTIRE["cycle_rounds"]
        for _ in range(int(rng.integers(lo, hi + 1))):
            q = int(rng.integers(NTIRE["cycle_jpeg_q"][0], NTIRE["cycle_jpeg_q"][1] + 1))
            steps += [Degradation("jpeg", {"q": q}), Degradation("resize", {"scale": 0.5, "interp": "bilinear"})]
    ops = [op for op in NTIRE_OPS if only in ("all", op.name)]
    for i in rng.permutation(len(ops)):
        op = ops[int(i)]
        if only == "all" and rng.random() >= op.p:
            continue
        family, sample = op.choices[int(rng.integers(len(op.choices)))]
        steps.append(Degradation(family, sample(float(rng.beta(*NTIRE["strength"])), rng)))
    return steps


def _ntire(image: np.ndarray, rng: np.random.Generator, *, only: str) -> np.ndarray:
    return _compound(image, rng, steps=_draw_ntire(rng, only))


FAMILIES["ntire"] = Family(_ntire, {"only": "all"}, {"only": ("all", *NTIRE_NAMES)}, random=True)


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
    """`"jpeg:q=50,blur:s=1.5,compound"` -> three Degradations; missing params take the family's defaults. A bare
    `ntire` is the NTIRE engine's report: each of its operations alone (`ntire:only=NAME`), then the whole engine
    (`ntire:only=all`)."""
    out = []
    for entry in (e.strip() for e in spec.split(",")) if spec.strip() else ():
        if not entry:
            raise ValueError(f"empty entry in degradation spec '{spec}'")
        family, _, rest = (part.strip() for part in entry.partition(":"))
        if entry == "ntire":  # the engine's report: each operation alone, then the whole engine
            out += [Degradation("ntire", {"only": name}) for name in (*NTIRE_NAMES, "all")]
            continue
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
    names = list(COMPOUND_FAMILIES)
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
    if degradation.family == "ntire":
        return _draw_ntire(rng, degradation.params["only"])
    if "angle" in degradation.params and degradation.params["angle"] is None:
        return [Degradation(degradation.family, {**degradation.params, "angle": _random_angle(rng)})]
    return [degradation]


def _run(image: np.ndarray, step: Degradation, rng: np.random.Generator) -> np.ndarray:
    return FAMILIES[step.family].fn(image, rng, **step.params)


def as_rgb8(image) -> np.ndarray:
    """An image array as uint8 RGB [H, W, 3], by the rule the kit's image reader applies to files
    (models/frontend.py): greyscale repeated to three channels, 16-bit samples scaled (not clipped) to 8 bits,
    transparency composited over white. Float, boolean or wider integer samples have no defined 8-bit scale and are
    refused, as is any other layout, with a ValueError naming what was given."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an image array [H, W] or [H, W, 1-4], got {type(image).__name__}")
    got = f"{image.dtype} {list(image.shape)}"
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected 8- or 16-bit unsigned samples, got {got} (no defined 8-bit scale)")
    x = image[..., None] if image.ndim == 2 else image
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4) or min(x.shape[:2]) < 1:
        raise ValueError(f"expected an image [H, W] (grey) or [H, W, 1-4] (grey, grey+alpha, RGB, RGBA), got {got}")
    if x.dtype == np.uint8 and x.shape[2] == 3:
        return np.ascontiguousarray(x)
    top = 65535.0 if x.dtype == np.uint16 else 255.0
    x = x.astype(np.float32) / np.float32(top)
    colour = x[..., :3] if x.shape[2] >= 3 else np.repeat(x[..., :1], 3, axis=2)
    if x.shape[2] in (2, 4):  # the last channel is alpha
        colour = colour * x[..., -1:] + (1 - x[..., -1:])
    return _to_uint8(colour * 255)


def apply(image: np.ndarray, degradation: Degradation, seed: int) -> np.ndarray:
    """Degraded copy of an image as uint8 RGB [H, W, 3] (any other input first goes through as_rgb8), the same
    height and width; identical bytes for the same (image, degradation, seed). Pass a different seed per image
    (e.g. its index) for independent noise."""
    out = as_rgb8(image)  # (a contiguous array, the input's own when it is already uint8 RGB: never written to)
    rng = np.random.default_rng(seed)
    for step in _resolve(degradation, rng):
        out = _run(out, step, rng)
    return out


def describe(degradation: Degradation, seed: int) -> str:
    """What apply() does for this seed: the label, with seeded params filled in; for compound the chain,
    e.g. `compound[jpeg:q=43 > blur:s=1.2]`."""
    steps = _resolve(degradation, np.random.default_rng(seed))
    if degradation.family in ("compound", "ntire"):
        return f"{degradation.label}[{' > '.join(step.label for step in steps)}]"
    return steps[0].label
