"""Constant matrices against the torch ops and facer grids they replace."""

import pytest
import torch
import torch.nn.functional as F

from dfedge.models.resample import (
    adaptive_avg_matrix, apply_separable, as_buffer, bilinear_matrix, unwarp_matrix, warp_matrix,
)


def facer_warp_grid(size: int, f: float, inverse: bool) -> torch.Tensor:
    """facer's (inverted) tanh-warp grid for an identity alignment matrix, written from its formulas."""
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    if inverse:  # crop pixel -> warped position: tanh
        hi = torch.tanh((c - 1 + f) / f) * f + 1 - f
        lo = torch.tanh((c + 1 - f) / f) * f - 1 + f
    else:  # warped pixel -> crop position: arctanh with facer's clamp
        hi = torch.clamp((c - 1 + f) / f, -1 + 1e-3, 1 - 1e-3).arctanh() * f + 1 - f
        lo = torch.clamp((c + 1 - f) / f, -1 + 1e-3, 1 - 1e-3).arctanh() * f - 1 + f
    u = torch.where(c > 1 - f, hi, torch.where(c < -1 + f, lo, c))
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([xx, yy], dim=-1)[None].float()


@pytest.mark.parametrize("size", [448, 112])
def test_warp_matrix_equals_facer_grid_sample(size):
    x = torch.rand(1, 3, size, size)
    ref = F.grid_sample(x, facer_warp_grid(size, 0.8, inverse=False), mode="bilinear", align_corners=False)
    m = as_buffer(warp_matrix(size, 0.8))
    # grid_sample un-normalises its float32 grid: ~448 * 6e-8 of coordinate error, i.e. a few 1e-5 of value.
    torch.testing.assert_close(apply_separable(x, m, m), ref, rtol=0, atol=1e-4)
    assert ref[0, :, 0, 0].abs().max() == 0  # the far corners of the warped frame lie outside the crop


def test_unwarp_matrix_equals_facer_inverted_grid_sample():
    x = torch.rand(1, 11, 112, 112)
    ref = F.grid_sample(x, facer_warp_grid(112, 0.8, inverse=True), mode="bilinear", align_corners=False)
    m = as_buffer(unwarp_matrix(112, 0.8))
    torch.testing.assert_close(apply_separable(x, m, m), ref, rtol=0, atol=2e-5)


def test_zero_warp_is_the_identity():
    torch.testing.assert_close(as_buffer(warp_matrix(64, 0.0)), torch.eye(64))


@pytest.mark.parametrize("out", [1, 2, 3, 6])
def test_adaptive_matrix_equals_adaptive_avg_pool(out):
    x = torch.randn(2, 5, 14, 14)
    m = as_buffer(adaptive_avg_matrix(14, out))
    torch.testing.assert_close(apply_separable(x, m, m), F.adaptive_avg_pool2d(x, out), rtol=0, atol=1e-6)


def test_bilinear_matrix_equals_interpolate():
    x = torch.randn(1, 2, 14, 14)
    src = (torch.arange(28, dtype=torch.float64) + 0.5) / 2  # output centres mapped to the input
    m = bilinear_matrix(src.numpy(), 14)
    ref = F.interpolate(x, size=28, mode="bilinear", align_corners=False)
    b = as_buffer(m)  # interior only: at the border interpolate clamps where zero padding drops weight
    torch.testing.assert_close(apply_separable(x, b, b)[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=0, atol=1e-6)
