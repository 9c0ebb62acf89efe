"""Videos as uploaded -> RGB frames, one at a time as they decode (PyAV, else OpenCV; a .npy array as is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BundleError
from .image import MAX_PIXELS, ImageRefused, check_pixels


def read_video(path: Path, max_pixels: int = MAX_PIXELS):
    """(index, uint8 RGB frame) one at a time, as they decode: a .npy array [T, H, W, 3] as is; a video file with
    PyAV or, without it, OpenCV (a bundle needs one of them for video files, and nothing else). Frames of more than
    `max_pixels` are refused (BundleError) from the size the file declares, before any decodes, and each frame's
    own size before it is converted (a stream may change size part-way)."""
    try:
        yield from _frames(Path(path), max_pixels)
    except ImageRefused as e:
        raise BundleError(f"{path}: {e}") from None


def _frames(path: Path, max_pixels: int):
    if path.suffix.lower() == ".npy":
        clip = np.load(path, allow_pickle=False, mmap_mode="r")
        if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[3] != 3:
            raise BundleError(f"{path}: expected RGB frames uint8 [T, H, W, 3], got {clip.dtype} {list(clip.shape)}")
        check_pixels(clip.shape[2], clip.shape[1], max_pixels, "pixels a frame")
        yield from ((i, np.asarray(f)) for i, f in enumerate(clip))
        return
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise BundleError(f"{path}: no video stream")
                stream = container.streams.video[0]
                check_pixels(stream.width, stream.height, max_pixels, "pixels a frame")  # 0 x 0 when not declared
                for i, frame in enumerate(container.decode(stream)):
                    check_pixels(frame.width, frame.height, max_pixels, "pixels a frame")
                    yield i, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise BundleError(f"{path}: {str(e).splitlines()[0]}") from None
        return
    try:
        import cv2
    except ImportError:
        raise BundleError(f"{path}: decoding video needs PyAV or OpenCV (pip install av); a .npy [T, H, W, 3] "
                          "array does not") from None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BundleError(f"{path}: OpenCV cannot open this video")
    try:
        width, height = (int(capture.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        check_pixels(width, height, max_pixels, "pixels a frame")
        i = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield i, np.ascontiguousarray(bgr[..., ::-1])
            i += 1
    finally:
        capture.release()
