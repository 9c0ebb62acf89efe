"""Reading aligned face crops from image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..device.image import read_image
from ..models.detector import CROP_SIZE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """An input image is unreadable or not an aligned crop of the expected size."""


def read_crop(path: str | Path, size: int = CROP_SIZE, conversions: list[str] | None = None) -> np.ndarray:
    """An aligned crop as uint8 RGB [size, size, 3], read as photos are (device/image.read_image: EXIF
    orientation, 16-bit and transparency converted, each conversion appended to `conversions`); other sizes are
    refused, not silently resized."""
    path = Path(path)
    try:
        rgb, _, notes = read_image(path, max_side=1 << 30)
    except ValueError as e:
        raise ImageError(f"{path}: {e}") from None
    if rgb.shape[:2] != (size, size):
        raise ImageError(
            f"{path}: expected a {size}x{size} aligned face crop, got {rgb.shape[1]}x{rgb.shape[0]}"
        )
    if conversions is not None:
        conversions += notes
    return rgb


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 NHWC [B, H, W, 3] (or one HWC crop) -> float32 NCHW 0..255, the detector's input."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    return torch.from_numpy(np.array(crops, dtype=np.uint8)).permute(0, 3, 1, 2).float()
