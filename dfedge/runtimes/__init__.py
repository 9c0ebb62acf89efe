"""One detector interface over every runtime: PyTorch (the reference), ONNX Runtime, OpenVINO, LiteRT, CoreML.

    import dfedge
    det = dfedge.load("dist/toy/onnx-fp32")        # checks the manifest's hashes, picks the runtime
    result = det(crops)                             # aligned crops, uint8 RGB [B, S, S, 3] or [S, S, 3]
    result.probability, result.region_tokens        # the same Result from every runtime

The runtime code itself lives in `standalone.py` (numpy + one runtime), which every bundle ships as bench.py; the
kit adds the MIL interpreter (`mil.py`: CoreML numerics off macOS) and the torch reference (`reference.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import standalone
from .reference import torch_runner
from .standalone import FORMATS, BundleError, RuntimeUnavailable, verify  # noqa: F401 - public API

MIL_RUNTIME = "MIL interpreter (dfedge)"


@dataclass
class Result:
    """One record per crop, identical in meaning on every runtime (see a bundle's manifest `outputs`)."""

    probability: np.ndarray  # [B] float32, P(fake)
    logit: np.ndarray  # [B] float32, positive = fake
    region_tokens: np.ndarray  # [B] int32; 0 = the region was not found: do not use the score
    token_mask: np.ndarray  # [B, g, g] bool, tokens that belong to the region
    contributions: np.ndarray  # [B, g, g] float32, each region token's share of the logit (sum + bias = logit)

    def __len__(self) -> int:
        return len(self.logit)

    @property
    def found(self) -> np.ndarray:
        return self.region_tokens > 0


class Detector:
    """A loaded detector: call it on aligned uint8 RGB crops, get a Result."""

    def __init__(self, run, runtime: str, crop_size: int, manifest: dict | None = None, threads: int = 0,
                 device: str = "CPU", path: Path | None = None):
        self.run = run  # float32 [1, 3, S, S] 0-255 -> {output name: array}; the graphs have batch 1
        self.runtime, self.crop_size, self.manifest = runtime, crop_size, manifest or {}
        self.threads, self.device, self.path = threads, device, path

    @property
    def target(self) -> str:
        return self.manifest.get("target", "torch")

    @property
    def precision(self) -> str:
        return self.manifest.get("precision", "fp32")

    @property
    def threshold_logit(self) -> float | None:
        return self.manifest.get("probe", {}).get("threshold_logit")

    def __repr__(self) -> str:
        return f"Detector({self.target} {self.precision} on {self.runtime}, {self.path or 'in memory'})"

    def __call__(self, crops: np.ndarray) -> Result:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        s = self.crop_size
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
            raise ValueError(f"expected aligned crops uint8 [B, {s}, {s}, 3] (RGB), got {crops.dtype} {list(crops.shape)}")
        outs = [self.run(np.ascontiguousarray(c.transpose(2, 0, 1)[None], dtype=np.float32)) for c in crops]

        def stack(name: str, shape: tuple) -> np.ndarray:
            return np.concatenate([np.asarray(o[name], dtype=np.float32).reshape(1, *shape) for o in outs])

        g = int(np.asarray(outs[0]["token_mask"]).shape[-1])
        return Result(probability=stack("probability", ()), logit=stack("logit", ()),
                      region_tokens=np.rint(stack("region_tokens", ())).astype(np.int32),
                      token_mask=stack("token_mask", (g, g)) > 0.5, contributions=stack("contributions", (g, g)))


def open_runtime(bundle: str | Path, target: str, threads: int = 0, device: str = "CPU", interpreter: bool = False):
    """-> (run, runtime name): the bundle's runner from standalone.open_runner, the code a device runs. CoreML
    predicts only on macOS; elsewhere `interpreter=True` runs the package's MIL program with the kit's interpreter
    (numerics, not speed) instead of raising RuntimeUnavailable. Nothing is verified here: see `load`."""
    try:
        return standalone.open_runner(bundle, target, threads, device), FORMATS[target].package
    except RuntimeUnavailable:
        if not (interpreter and target == "coreml"):
            raise
        from .mil import open_mil

        return open_mil(Path(bundle)), MIL_RUNTIME


def load(bundle: str | Path, threads: int = 0, device: str = "CPU", interpreter: bool = False) -> Detector:
    """Open a bundle with its target's runtime after checking every file's SHA-256 against the manifest.

    `device` is passed to OpenVINO (CPU, GPU, NPU, AUTO). CoreML predicts only on macOS; elsewhere this raises
    RuntimeUnavailable, unless `interpreter=True` (how `dfedge validate` checks CoreML bundles on Linux)."""
    bundle = Path(bundle)
    manifest = verify(bundle)
    run, runtime = open_runtime(bundle, manifest.get("target"), threads, device, interpreter)
    return Detector(run, runtime, int(manifest["alignment"]["crop_size"]), manifest, threads, device, bundle)


def from_torch(detector, device: str = "cpu", threads: int = 0) -> Detector:
    """The PyTorch reference (a dfedge.models.detector.Detector module) behind the same interface."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    manifest = {"target": "torch", "precision": "fp32",
                "probe": {"threshold_logit": float(detector.probe.info.threshold)}}
    return Detector(torch_runner(detector, device), "torch", detector.cfg.crop_size, manifest, threads, device)


def open_bundle(bundle: str | Path, threads: int = 0):
    """-> (runner on float32 NCHW crops, manifest): the form `score_set` takes. CoreML uses the interpreter off macOS."""
    det = load(bundle, threads, interpreter=True)
    return det.run, det.manifest
