"""Photos as uploaded -> uint8 RGB arrays, and the one resampling rule of the pipeline (area averaging).

Decoding needs Pillow (imported only when a file is read: a device that passes arrays does not need it)."""

from __future__ import annotations

import numpy as np

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


def check_pixels(width: int, height: int, max_pixels: int, what: str = "pixels to decode") -> None:
    """The one pixel limit of everything decoded, a photo or each frame of a video, checked from the size its file
    declares before decoding: ImageRefused in one line naming the limit."""
    if width * height > max_pixels:
        raise ImageRefused(f"{width}x{height} {what}, over the limit of {max_pixels / 1e6:g} MP (--max-pixels)")


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
                check_pixels(*im.size, max_pixels)  # before anything decodes (a PNG's EXIF is read by decoding)
                orientation = im.getexif().get(0x0112)
                if orientation not in (None, 1):
                    notes.append(f"turned upright (EXIF orientation {orientation})")
                im = _rgb8(ImageOps.exif_transpose(im), notes)
        if abs(im.size[0] / im.size[1] - height / width) < abs(im.size[0] / im.size[1] - width / height):
            width, height = height, width  # turned a quarter (EXIF 5-8): the photo's own size is upright too
        if max(im.size) > max_side:
            factor = math.ceil(max(im.size) / max_side)
            if min(im.size) >= factor:
                im = im.reduce(factor)
            else:  # a sliver (20000 x 2): reduce() would leave a side of 0 px; the same box average, 1 px at least
                im = im.resize(tuple(max(1, round(side / factor)) for side in im.size), Image.Resampling.BOX)
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
    if min(height, width, *img.shape[:2]) < 1:
        raise ValueError(f"cannot resample {img.shape[1]}x{img.shape[0]} pixels to {width}x{height}")
    rows, rw = _area_taps(img.shape[0], height)
    tall = np.zeros((height, img.shape[1], img.shape[2]), np.float32)
    for t in range(rows.shape[1]):
        tall += rw[:, t, None, None].astype(np.float32) * img[rows[:, t]]
    cols, cw = _area_taps(img.shape[1], width)
    out = np.zeros((height, width, img.shape[2]), np.float32)
    for t in range(cols.shape[1]):
        out += cw[None, :, t, None].astype(np.float32) * tall[:, cols[:, t]]
    return out
