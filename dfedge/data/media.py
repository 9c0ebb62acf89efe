"""Photos and videos as users upload them, decoded into uint8 RGB frames.

Photos: JPEG, PNG, WebP, BMP, TIFF and HEIC/HEIF (pillow-heif), EXIF orientation applied. A photo larger than
`MAX_SIDE` is decoded at a reduced size (JPEG's DCT scaling: a 48-MP JPEG never exists at full size in memory) or
reduced after decoding: faces in uploads are large, and alignment samples a 448 crop from what is left. Records
give coordinates in the photo's own pixels (`Photo.size`).
Videos (PyAV): frames sampled uniformly over the frames that decode (the Celeb-DF protocol: 32), or at a rate,
turned upright as their display matrix says.
Every failure is a `MediaError` with a kind and a one-line detail naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from ..device import image as device_image

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")
FRAMES_PER_VIDEO = 32
MAX_SIDE = device_image.MAX_DECODE  # longest side a photo is decoded to; the front end searches a copy of at most 1600

try:  # HEIC/HEIF, as phones upload them
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - a dependency of the package; without it HEIC files are unreadable
    pass

try:  # PyAV's side-data types (PyAV >= 12)
    from av.sidedata.sidedata import Type as _SideData

    DISPLAYMATRIX = _SideData.DISPLAYMATRIX
except (ImportError, AttributeError):  # pragma: no cover - an older PyAV: frames used as stored
    DISPLAYMATRIX = None


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


class Photo(NamedTuple):
    image: np.ndarray  # uint8 [H, W, 3] RGB, upright, at most MAX_SIDE long
    size: tuple[int, int]  # the photo's own upright (width, height): coordinates are reported in these pixels
    conversions: tuple[str, ...] = ()  # what reading it did besides decoding (device/image.read_image), in words


def read_photo(path: str | Path, max_side: int = MAX_SIDE, max_pixels: int = device_image.MAX_PIXELS) -> Photo:
    """The photo, upright and reduced to fit `max_side` (device/image.read_image: the code bundles run too)."""
    try:
        image, size, conversions = device_image.read_image(path, max_side, max_pixels)
    except ValueError as e:
        raise MediaError("unreadable", str(e)) from None
    return Photo(image, size, tuple(conversions))


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded video frame turned as its display matrix says (`display_rotation`: degrees counterclockwise, a
    multiple of 90): phone videos are stored sideways."""
    return np.ascontiguousarray(np.rot90(frame, k=round(rotation / 90) % 4)) if rotation else frame


def display_rotation(matrix) -> int | None:
    """The counterclockwise turn (0, 90, 180 or 270 degrees) a video's display matrix asks for, as FFmpeg reads it
    (av_display_rotation_get, PyAV's VideoFrame.rotation), or None when the matrix is not a rotation by a quarter
    turn: all zeros, a mirror, a shear, another angle. FFmpeg turns those too (a zero matrix by 270 degrees, a
    mirror by 180: every frame then has no face); None means the frames are used as stored.
    matrix: the DISPLAYMATRIX side data, nine int32 [a b u; c d v; x y w], a-d in 16.16 fixed point."""
    m = [float(v) for v in matrix]
    if len(m) != 9 or m[2] or m[5] or m[8] <= 0:
        return None
    (a, b), (c, d) = m[0:2], m[3:5]
    scale = math.hypot(a, c)
    if scale == 0 or not (math.isclose(a, d, abs_tol=1e-3 * scale) and math.isclose(b, -c, abs_tol=1e-3 * scale)):
        return None  # a rotation (times a uniform scale) has a == d and b == -c; a mirror has a == -d
    turn = -math.degrees(math.atan2(b, a))
    quarter = round(turn / 90)
    return quarter % 4 * 90 if abs(turn - 90 * quarter) < 0.5 else None


def frame_turn(frame, notes: list[str]) -> int:
    """The turn of a decoded PyAV frame by its display matrix (none without one); a matrix that is not a quarter
    turn is ignored, said once in `notes` (a record's `conversions`)."""
    side = getattr(frame, "side_data", None)
    data = side.get(DISPLAYMATRIX) if side is not None and DISPLAYMATRIX is not None else None
    if data is None:
        return 0
    matrix = np.frombuffer(bytes(data), np.int32)[:9].tolist()
    turn = display_rotation(matrix)
    note = (f"turned {turn} degrees as its display matrix says" if turn else None) if turn is not None else \
        f"display matrix {matrix} is not a rotation: frames used as stored"
    if note and note not in notes:
        notes.append(note)
    return turn or 0


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


class Pass:
    """One decoding pass over a video, one frame at a time: iterate (index, uint8 RGB frame, upright, at most
    `max_side` long) for the indices `choose(frame count, frame rate)` picks, the count being the container's (or,
    when it states none, its packets'). Afterwards `decoded` is how many frames decoded and `error` what ended
    decoding early (None). Opening raises MediaError: the file cannot be opened, has no video stream, or declares
    frames of more than `max_pixels` (device/image.check_pixels, the photos' rule); a frame that is larger than
    declared ends the pass with that MediaError before it is converted."""

    def __init__(self, path: str | Path, choose: Callable[[int, float], set[int]], max_side: int | None = None,
                 max_pixels: int = device_image.MAX_PIXELS) -> None:
        self.path, self.choose, self.max_side, self.max_pixels = Path(path), choose, max_side, max_pixels
        self.decoded, self.error, self.count, self.rate = 0, None, 0, 0.0
        self.conversions: list[str] = []  # besides decoding: a turn by the display matrix, or a matrix ignored
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise MediaError("no frames", "no video stream")
                stream = container.streams.video[0]
                self._check(stream.width, stream.height)  # as declared (0 x 0 when not): before any frame decodes
                self.rate = float(stream.average_rate or stream.guessed_rate or 0)
                self.count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        except (av.error.FFmpegError, OSError) as e:
            raise MediaError("unreadable", _first_line(e)) from None

    def __iter__(self):
        keep = self.choose(self.count, self.rate)
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    self._check(frame.width, frame.height)
                    if self.decoded in keep:
                        rgb = upright(frame.to_ndarray(format="rgb24"), frame_turn(frame, self.conversions))
                        yield self.decoded, self._fit(rgb)
                    self.decoded += 1
            except av.error.FFmpegError as e:
                self.error = _first_line(e)

    def _check(self, width: int, height: int) -> None:
        try:
            device_image.check_pixels(width, height, self.max_pixels, "pixels a frame")
        except device_image.ImageRefused as e:
            raise MediaError("unreadable", str(e)) from None

    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        k = max(rgb.shape[:2]) / self.max_side if self.max_side else 1.0
        if k <= 1:
            return rgb
        return np.rint(device_image.resize_area(rgb, round(rgb.shape[0] / k), round(rgb.shape[1] / k))).astype(np.uint8)


def sampler(count: int = FRAMES_PER_VIDEO, fps: float | None = None) -> Callable[[int, float], set[int]]:
    """(frame count, frame rate) -> the indices to keep: `count` spaced uniformly, or one every 1/fps seconds."""
    if fps:
        return lambda n, rate: set(rate_indices(n, rate, fps).tolist())
    return lambda n, rate: set(frame_indices(n, count).tolist())


def decode_frames(path: str | Path, count: int = FRAMES_PER_VIDEO,
                  fps: float | None = None) -> tuple[int, dict[int, np.ndarray], str | None]:
    """(decodable frame count, {index: uint8 RGB frame} at `frame_indices(count)` or, with `fps`, at that rate,
    early-end error or None), the indices computed from the frames that really decode (Celeb-DF's protocol): one
    pass when the container's count is right, a second when it is not. Raises MediaError."""
    pick = sampler(count, fps)
    first = Pass(path, pick)
    kept = dict(first)
    wanted = sorted(pick(first.decoded, first.rate))
    if any(i not in kept for i in wanted):
        kept = dict(Pass(path, lambda n, rate: set(wanted)))
    return first.decoded, {i: kept[i] for i in wanted if i in kept}, first.error
