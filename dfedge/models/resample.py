"""Constant resampling matrices: fixed-size resizes, warps and pools written as `A @ x @ B.T`.

Converters handle MatMul everywhere, while grid_sample (absent from TFLite), non-divisible adaptive pooling
(rejected by ONNX/TFLite) and gathers with computed indices do not. Every operation here is separable (the
value at (y, x) only depends on source row weights times source column weights), so one small matrix per axis
carries it exactly. Matrices are built in float64 numpy and stored as float32 buffers.
"""

from __future__ import annotations

import numpy as np
import torch


def bilinear_matrix(src_coords: np.ndarray, src_size: int) -> np.ndarray:
    """Rows of bilinear weights sampling a length-`src_size` axis at continuous coordinates.

    `src_coords` use the pixel-area convention of `grid_sample(align_corners=False)`: pixel i covers [i, i+1)
    and its centre is at i + 0.5. Neighbours outside the axis contribute zero (zero padding).
    Returns [len(src_coords), src_size].
    """
    idx = np.asarray(src_coords, dtype=np.float64) - 0.5
    lo = np.floor(idx)
    frac = idx - lo
    out = np.zeros((len(idx), src_size), dtype=np.float64)
    rows = np.arange(len(idx))
    for offset, weight in ((0, 1.0 - frac), (1, frac)):
        col = lo.astype(np.int64) + offset
        ok = (col >= 0) & (col < src_size)
        out[rows[ok], col[ok]] += weight[ok]
    return out


def adaptive_avg_matrix(src_size: int, out_size: int) -> np.ndarray:
    """The averaging rows of `AdaptiveAvgPool` (bins [floor(i*n/k), ceil((i+1)*n/k))). Returns [out, src]."""
    out = np.zeros((out_size, src_size), dtype=np.float64)
    for i in range(out_size):
        start = (i * src_size) // out_size
        end = -((-(i + 1) * src_size) // out_size)
        out[i, start:end] = 1.0 / (end - start)
    return out


def area_matrix(src_size: int, out_size: int) -> np.ndarray:
    """Exact box averaging by an integer factor (`avg_pool` with kernel = stride = src/out). Returns [out, src]."""
    if src_size % out_size:
        raise ValueError(f"area pooling needs an integer factor, got {src_size} -> {out_size}")
    return adaptive_avg_matrix(src_size, out_size)


def tanh_warp(u: np.ndarray, warp_factor: float) -> np.ndarray:
    """facer's tanh warp on normalised coordinates in [-1, 1]: linear inside |u| <= 1 - f, tanh-compressed outside."""
    u = np.asarray(u, dtype=np.float64)
    if warp_factor <= 0:
        return u
    f = warp_factor
    hi = np.tanh((u - 1.0 + f) / f) * f + 1.0 - f
    lo = np.tanh((u + 1.0 - f) / f) * f - 1.0 + f
    return np.where(u > 1.0 - f, hi, np.where(u < -1.0 + f, lo, u))


def inverse_tanh_warp(u: np.ndarray, warp_factor: float, eps: float = 1e-3) -> np.ndarray:
    """Inverse of `tanh_warp`, with facer's clamp of the arctanh argument to [-1 + eps, 1 - eps]."""
    u = np.asarray(u, dtype=np.float64)
    if warp_factor <= 0:
        return u
    f = warp_factor

    def atanh(v: np.ndarray) -> np.ndarray:
        return np.arctanh(np.clip(v, -1.0 + eps, 1.0 - eps))

    hi = atanh((u - 1.0 + f) / f) * f + 1.0 - f
    lo = atanh((u + 1.0 - f) / f) * f - 1.0 + f
    return np.where(u > 1.0 - f, hi, np.where(u < -1.0 + f, lo, u))


def warp_matrix(size: int, warp_factor: float) -> np.ndarray:
    """Aligned crop -> tanh-warped crop (same size), as facer's `make_tanh_warp_grid` samples it. [size, size]."""
    centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    src = (inverse_tanh_warp(centres, warp_factor) + 1.0) / 2.0 * size
    return bilinear_matrix(src, size)


def unwarp_matrix(size: int, warp_factor: float) -> np.ndarray:
    """Tanh-warped frame -> aligned crop frame at `size` (facer's inverted grid). [size, size]."""
    centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    src = (tanh_warp(centres, warp_factor) + 1.0) / 2.0 * size
    return bilinear_matrix(src, size)


def as_buffer(matrix: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))


def apply_separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[..., H, W] -> [..., h, w] with rows [h, H] and cols [w, W]: rows @ x @ cols.T."""
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))
