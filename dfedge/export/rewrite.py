"""Graph rewrites a converter's runtime needs, applied to a copy of the model before conversion; the math is the
same (parity checks it like any export).

`shifted_convs`: XNNPACK (LiteRT's CPU delegate) runs a 3x3 convolution with many channels far below the host's
GEMM rate, and a 1x1 convolution near it. Measured on an Intel Xeon @ 2.60 GHz (AVX-512, VNNI), 2 threads, a
768 -> 768 3x3 convolution at 112²: torch 0.48 s, LiteRT+XNNPACK 1.98 s, the same convolution as nine 1x1
convolutions of shifted inputs, summed, 0.74 s (`benchmarks/litert_ops.py`, docs/benchmarks.md)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class ShiftedConv2d(nn.Module):
    """A 3x3, stride 1, zero-padding 1 convolution as the sum of nine 1x1 convolutions of the padded input's
    shifted windows (one GEMM each), plus the bias."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1))
        out = F.conv2d(padded[:, :, :h, :w], self.weight[:, :, :1, :1], self.bias)
        for dy in range(3):
            for dx in range(3):
                if dy or dx:
                    out = out + F.conv2d(padded[:, :, dy : dy + h, dx : dx + w], self.weight[:, :, dy : dy + 1, dx : dx + 1])
        return out


def _shiftable(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.groups == 1 and m.padding == (1, 1) and m.padding_mode == "zeros")


@contextlib.contextmanager
def shifted_convs(model: nn.Module):
    """Within the block, every 3x3 / stride 1 / padding 1 convolution of `model` is a ShiftedConv2d holding the same
    weight tensors (no copy of a 1.9 GB model); the block gets how many were rewritten. The originals are back
    when it ends, however it ends."""
    swapped = []
    try:
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if _shiftable(child):
                    setattr(module, name, ShiftedConv2d(child))
                    swapped.append((module, name, child))
        yield len(swapped)
    finally:
        for module, name, child in reversed(swapped):
            setattr(module, name, child)
