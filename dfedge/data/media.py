"""Photos and videos as users upload them, decoded into uint8 RGB frames.

Photos: JPEG, PNG, WebP, BMP, TIFF and HEIC/HEIF (pillow-heif), EXIF orientation applied. A photo larger than
`MAX_SIDE` is decoded at a reduced size (JPEG's DCT scaling: a 48-MP photo never exists at full size in memory)
and area-reduced to fit: faces in uploads are large, and alignment samples a 448 crop from what is left.
Videos (PyAV): frames sampled uniformly over the frames that decode (the Celeb-DF protocol: 32), or at a rate.
Every failure is a `MediaError` with a kind and a one-line detail naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")
FRAMES_PER_VIDEO = 32
MAX_SIDE = 4096  # longest side a photo is decoded to; the face front end searches a copy of at most 1600

try:  # HEIC/HEIF, as phones upload them
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - a dependency of the package; without it HEIC files are unreadable
    pass


class MediaError(Exception):
    """A file that cannot be used. kind: unreadable | no frames (a record's status is then `unreadable`); detail:
    the problem in one line, without the file's name (callers put it in front)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def media_kind(path: str | Path) -> str | None:
    """'photo', 'video' or None, by the file's suffix."""
    suffix = Path(path).suffix.lower()
    return "photo" if suffix in PHOTO_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def read_photo(path: str | Path, max_side: int = MAX_SIDE) -> np.ndarray:
    """uint8 [H, W, 3] RGB, upright (EXIF orientation applied), at most `max_side` on its longest side."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that still fits
                im = ImageOps.exif_transpose(im)
                im = im.convert("RGB")
        if max(im.size) > max_side:
            im = im.reduce(-(-max(im.size) // max_side))  # integer box reduction, then it fits
        rgb = np.asarray(im)
    except FileNotFoundError:
        raise MediaError("unreadable", "no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise MediaError("unreadable", f"unreadable image ({_first_line(e)})") from None
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise MediaError("unreadable", "empty image")
    return rgb


def frame_indices(n_frames: int, count: int = FRAMES_PER_VIDEO) -> np.ndarray:
    """`count` indices spaced uniformly over 0..n_frames-1, first and last included (DeepfakeBench:
    np.linspace truncated to int); every frame when there are no more than `count`."""
    if n_frames <= count:
        return np.arange(max(n_frames, 0), dtype=np.int64)
    return np.linspace(0, n_frames - 1, count).astype(np.int64)


def rate_indices(n_frames: int, video_fps: float, fps: float) -> np.ndarray:
    """Indices of the frames closest to every 1/fps seconds, from the first frame."""
    if n_frames <= 0:
        return np.zeros(0, np.int64)
    step = max(video_fps / fps, 1.0) if video_fps > 0 else 1.0
    return np.unique(np.round(np.arange(0, n_frames - 0.5, step)).astype(np.int64))


def _decode(path: Path, choose: Callable[[int, float], set[int]]) -> tuple[int, dict[int, np.ndarray], str | None, float]:
    """One pass over the video: (frames decoded, {index: RGB [H, W, 3]} for the indices `choose(container's
    frame count or 0 if unknown, its frame rate or 0)` picks, the error that ended decoding early or None, the
    frame rate)."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError("unreadable", _first_line(e)) from None
    with container:
        if not container.streams.video:
            raise MediaError("no frames", "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        keep = choose(stream.frames or 0, rate)
        n, kept, error = 0, {}, None
        try:
            for frame in container.decode(stream):
                if n in keep:
                    kept[n] = frame.to_ndarray(format="rgb24")
                n += 1
        except av.error.FFmpegError as e:
            error = _first_line(e)
    return n, kept, error, rate


def decode_frames(path: str | Path, count: int = FRAMES_PER_VIDEO,
                  fps: float | None = None) -> tuple[int, dict[int, np.ndarray], str | None]:
    """(decodable frame count, {index: uint8 RGB frame} at `frame_indices(count)` or, with `fps`, at that rate,
    early-end error or None).

    One pass when the container's frame count is right; a second when it is not (the indices depend on how many
    frames really decode). Raises MediaError when the file cannot be opened or has no video stream."""
    path = Path(path)
    pick = (lambda n, rate: rate_indices(n, rate, fps)) if fps else (lambda n, rate: frame_indices(n, count))
    n, kept, error, rate = _decode(path, lambda hint, rate: set(pick(hint, rate).tolist()))
    wanted = pick(n, rate).tolist()
    if any(i not in kept for i in wanted):
        _, kept, _, _ = _decode(path, lambda hint, rate: set(wanted))
    return n, {i: kept[i] for i in wanted if i in kept}, error
