"""The torch FP32 reference as a runtime: the same runner shape as every bundle's (float32 [B, 3, S, S] 0-255 ->
{output name: array}), on the CPU or a CUDA device."""

from __future__ import annotations

import platform

import numpy as np


def torch_runner(detector, device: str = "cpu"):
    """-> run(images) -> {output name: float32 array} of a dfedge.models.detector.Detector module."""
    import torch

    detector = detector.to(device).eval()

    def run(images: np.ndarray) -> dict:
        with torch.no_grad():
            out = detector(torch.from_numpy(images).to(device))
        return {k: v.float().cpu().numpy() for k, v in out._asdict().items()}

    return run


def resolve_device(device: str) -> str:
    """auto -> cuda when torch sees one, else cpu; cuda without one is a user error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to torch")
    return device


def torch_facts(device: str) -> dict:
    """Where the reference ran (recorded in a scores file's header)."""
    import torch

    facts = {"device": device, "torch": torch.__version__, "host": platform.node(), "machine": platform.machine(),
             "os": platform.platform()}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts
