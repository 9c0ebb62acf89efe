"""One detector interface over every runtime: PyTorch (the reference), ONNX Runtime, OpenVINO, LiteRT, CoreML.

    import dfedge
    det = dfedge.load("dist/toy/onnx-fp32")        # checks the manifest's hashes, picks the runtime
    result = det(crops)                             # aligned crops, uint8 RGB [B, S, S, 3] or [S, S, 3]
    result.probability, result.region_tokens        # the same Result from every runtime

A loaded model is a `dfedge.device.pipeline.Pipeline`, the same type a bundle's own `bench.load` returns: the
runtime code is the device package's (dfedge/device/, shipped in every bundle). The kit adds its interpreters for
formats that do not predict here (`mil.py`: CoreML's MIL program off macOS) and the torch reference
(`reference.py`).
"""

from __future__ import annotations

from pathlib import Path

from ..device import bundle as device_bundle
from ..device.errors import BundleError, RuntimeUnavailable  # noqa: F401 - public API
from ..device.faces.mtcnn import Mtcnn
from ..device.formats import FORMATS, format_of
from ..device.manifest import verify  # noqa: F401 - public API
from ..device.pipeline import Graphs, Pipeline, Result  # noqa: F401 - public API
from ..device.pipeline import load as load_pipeline
from .reference import torch_runner


def _opener(target: str, interpreter: bool):
    """(opener, runtime name): with `interpreter`, the kit's interpreter (the row's `interpreter`) for a format whose
    runtime does not predict here; else (None, the format's package): its own runtime."""
    fmt = FORMATS[target]
    if not interpreter or fmt.runs_here() or fmt.interpreter is None:
        return None, fmt.package
    from .mil import INTERPRETERS

    return INTERPRETERS[fmt.interpreter]


def open_runtime(bundle: str | Path, target: str, threads: int = 0, device: str = "CPU", interpreter: bool = False,
                 options: dict | None = None):
    """-> (run, runtime name): the bundle's runner from the device package, the code a device runs. Where the
    format's runtime does not predict (CoreML off macOS), `interpreter=True` runs its graph on the kit's interpreter
    (numerics, not speed) instead of raising RuntimeUnavailable. options: the runtime options (default: the
    format's). Nothing is verified here: see `load`."""
    opener, runtime = _opener(format_of(bundle, target).name, interpreter)
    return device_bundle.open_runner(bundle, target, threads, device, options, opener), runtime


def open_face_nets(bundle: str | Path, manifest: dict, threads: int = 0, device: str = "CPU", interpreter: bool = False):
    """The bundle's face detector on its runtime, or None for a bundle without one (the kit's interpreter where the
    runtime does not predict, with `interpreter=True`)."""
    opener, _ = _opener(format_of(bundle, manifest.get("target")).name, interpreter)
    return device_bundle.open_faces(bundle, manifest, threads, device, opener)


def open_temporal(bundle: str | Path, manifest: dict, threads: int = 0, device: str = "CPU", interpreter: bool = False):
    """The bundle's temporal head on its runtime (None without one); the kit's interpreter likewise."""
    opener, _ = _opener(format_of(bundle, manifest.get("target")).name, interpreter)
    return device_bundle.open_temporal(bundle, manifest, threads, device, opener)


def load(bundle: str | Path, threads: int = 0, device: str = "CPU", interpreter: bool = False) -> Pipeline:
    """Open a bundle with its target's runtime after checking every file's SHA-256 against the manifest.

    `device` is passed to OpenVINO (CPU, GPU, NPU, AUTO). A format that does not predict here (CoreML off macOS)
    raises RuntimeUnavailable, unless `interpreter=True` (how `dfedge validate` checks CoreML bundles on Linux)."""
    manifest = verify(bundle)
    opener, runtime = _opener(format_of(bundle, manifest["target"]).name, interpreter)
    return load_pipeline(bundle, threads, device, opener, runtime)


def from_torch(detector, device: str = "cpu", threads: int = 0, faces=None, temporal=None) -> Pipeline:
    """The PyTorch reference (a dfedge.models.detector.Detector module) behind the same interface, with the kit's
    torch face detector (`faces`: a models.mtcnn.TorchNets; default: the shipped MTCNN weights) and, for videos, a
    models.temporal.TemporalHead."""
    import torch

    from ..models.detector import ALIGN_TEMPLATE
    from ..models.mtcnn import TorchNets, load_mtcnn

    if threads:
        torch.set_num_threads(threads)
    info = detector.probe.info
    manifest = {"target": "torch", "precision": "fp32", "probe": {"threshold_logit": float(info.threshold), "guard": info.guard},
                "alignment": {"crop_size": detector.cfg.crop_size, "template": ALIGN_TEMPLATE.tolist()},
                "labels": {"region": detector.region_index.region},
                "random_weights": list(getattr(detector, "random_parts", []))}
    if temporal is not None:
        manifest["temporal"] = temporal_section(temporal)
    nets = faces or TorchNets(load_mtcnn(), device)
    graphs = Graphs(torch_runner(detector, device), Mtcnn(nets.pnet, nets.rnet, nets.onet),
                    torch_runner(temporal, device) if temporal is not None else None)
    return Pipeline(graphs, "torch", manifest)


def temporal_section(head) -> dict:
    """What a Stream needs of a temporal head (the manifest's `temporal` keys): window, feature width, threshold."""
    return {"frames": head.cfg.frames, "feature_dim": head.cfg.feature_dim, "threshold_logit": float(head.info.threshold),
            "min_valid": int(head.info.min_valid)}


def open_bundle(bundle: str | Path, threads: int = 0):
    """-> (runner on float32 NCHW crops, manifest): the form `score_set` takes. CoreML uses the interpreter off macOS."""
    det = load(bundle, threads, interpreter=True)
    return det.run, det.manifest
