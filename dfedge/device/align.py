"""5-point alignment: the least-squares similarity from a face's landmarks to the template, and the bilinear warp
that cuts the aligned crop.

Convention: points are (x, y) in pixel-index coordinates: the centre of the top-left pixel is (0, 0), the centre of
the bottom-right one (W - 1, H - 1); landmarks come in the order left eye, right eye, nose tip, left mouth corner,
right mouth corner, "left" meaning image-left."""

from __future__ import annotations

import numpy as np

LANDMARKS = ("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")  # image-left first


def similarity_transform(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """[2, 3] least-squares similarity (rotation, uniform scale, shift; no reflection) taking `landmarks` [K, 2]
    onto `template` [K, 2]: [u, v] = [[a, -b], [b, a]] [x, y] + [tx, ty], linear in (a, b, tx, ty)."""
    src = np.asarray(landmarks, np.float64).reshape(-1, 2)
    dst = np.asarray(template, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2 or not np.isfinite(src).all():
        raise ValueError(f"alignment needs {len(dst)} finite (x, y) landmarks, got shape {list(src.shape)}")
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones(len(src)), np.zeros(len(src))
    design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    if np.linalg.matrix_rank(design) < 4:
        raise ValueError("alignment failed: the landmarks are degenerate (all at one point?)")
    a, b, tx, ty = np.linalg.lstsq(design, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, C]: output pixel p samples the image at inverse(matrix) p (bilinear; outside is 0)."""
    img = np.asarray(image)
    h, w, c = img.shape
    inv = np.linalg.inv(np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]]))[:2]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    sy = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    flat = img.reshape(-1, c)
    out = np.zeros((size, size, c), np.float32)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            weight = wy * wx * ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w))  # neighbours outside the image: 0
            out += weight[..., None] * flat[np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1)]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def align(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, 3] crop whose 5 landmarks sit on `template` (pixels of the crop)."""
    return warp_affine(image, similarity_transform(landmarks, template), size)
