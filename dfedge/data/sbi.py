"""Self-blended fakes from any folder of real aligned crops: each real face is used twice, as itself (label 0)
and as a fake (label 1) whose mouth is blended from an altered copy of the face (the toy world's generator).

Without a parser pass the region comes from the alignment template: an ellipse through the two mouth corners,
as tall as half their distance — an aligned crop puts the mouth there by construction.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from ..models.detector import ALIGN_TEMPLATE
from .blend import self_blend
from .images import IMAGE_SUFFIXES, read_crop
from .samples import LabelledSet, Sample


def template_mouth_mask(size: int) -> np.ndarray:
    (lx, ly), (rx, ry) = ALIGN_TEMPLATE[3] * size / 448, ALIGN_TEMPLATE[4] * size / 448
    centre = (int(round((lx + rx) / 2)), int(round((ly + ry) / 2)))
    half_width = np.hypot(rx - lx, ry - ly) / 2
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, centre, (int(half_width * 1.15), int(half_width * 0.5)), 0, 0, 360, 1.0, -1)
    return mask


class SelfBlendSet(LabelledSet):
    def __init__(self, root: str | Path, strength: float = 1.0, seed: int = 0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: no such folder of real face crops")
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.strength, self.seed = strength, seed
        self.description = f"sbi:{self.root.resolve()}:{strength}:{seed}"

    def __len__(self) -> int:
        return 2 * len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path, fake = self.paths[index // 2], index % 2 == 1
        image = read_crop(path)
        if fake:
            rng = np.random.default_rng([self.seed, index // 2])
            image, _ = self_blend(image, template_mouth_mask(image.shape[0]), rng, strength=self.strength)
        sid = f"{path}#{'fake' if fake else 'real'}"
        return Sample(id=sid, image=image, label=int(fake), video_id=sid)

    def labels(self) -> np.ndarray:
        return np.arange(len(self)) % 2

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.description.encode())
        for p in self.paths:
            h.update(f"{p}|{p.stat().st_size}|{p.stat().st_mtime_ns}".encode())
        return h.hexdigest()[:16]
