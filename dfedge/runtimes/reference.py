"""The torch FP32 reference as a runtime: the same runner shape as every bundle's (float32 [B, 3, S, S] 0-255 ->
{output name: array}), on the CPU or a CUDA device."""

from __future__ import annotations

import platform

import numpy as np


def torch_runner(detector, device: str = "cpu"):
    """-> run(images) -> {output name: float32 array} of a dfedge.models.detector.Detector module."""
    import torch

    if device.startswith("cuda"):
        full_precision()
    detector = detector.to(device).eval()

    def run(images: np.ndarray) -> dict:
        with torch.no_grad():
            out = detector(torch.from_numpy(images).to(device))
        return {k: v.float().cpu().numpy() for k, v in out._asdict().items()}

    return run


def full_precision() -> dict:
    """What "full-precision GPU reference" means in the kit: float32 storage and arithmetic everywhere, with the CUDA
    shortcuts that trade precision for speed switched off (TF32 for matmuls and cuDNN convolutions, fp16/bf16 reduced-
    precision reductions inside fp16/bf16 GEMMs, float32 matmul precision 'highest'). Set process-wide before a CUDA
    reference runs; returns the settings as recorded in the scores header."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.set_float32_matmul_precision("highest")
    return precision_settings()


def precision_settings() -> dict:
    import torch

    return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "fp16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
            "bf16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


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
        facts.update(gpu=torch.cuda.get_device_name(0), precision=precision_settings())
    return facts
