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

from ..models import frontend
from . import standalone
from .reference import torch_runner
from .standalone import FORMATS, BundleError, RuntimeUnavailable, verify  # noqa: F401 - public API

MIL_RUNTIME = "MIL interpreter (dfedge)"


@dataclass
class Result:
    """One record per crop, identical in meaning on every runtime (see a bundle's manifest `outputs`).
    probability, logit and decision are NaN / None unless status is ok: never a number to compare with a threshold
    for a face whose region was not found or is implausible."""

    probability: np.ndarray  # [B] float32, P(fake); NaN unless ok
    logit: np.ndarray  # [B] float32, positive = fake; NaN unless ok
    region_tokens: np.ndarray  # [B] int32; 0 = the region was not found
    token_mask: np.ndarray  # [B, g, g] bool, tokens that belong to the region
    contributions: np.ndarray  # [B, g, g] float32, each region token's share of the logit (sum + bias = logit)
    status: np.ndarray  # [B] str: ok | no_region | implausible_region (models/frontend.STATUSES)
    decision: list  # [B] "fake" | "real" at the model's threshold, None unless ok
    reason: list  # [B] str, why a face is not ok ("" when it is)
    raw: dict  # the graph's outputs as computed ({name: [B, ...] float32}), for numerical checks

    def __len__(self) -> int:
        return len(self.logit)

    @property
    def found(self) -> np.ndarray:
        return self.region_tokens > 0

    @property
    def ok(self) -> np.ndarray:
        return self.status == "ok"


class Detector:
    """A loaded detector: call it on aligned uint8 RGB crops (a Result), or score whole photos and video frames
    (`score_image`, `score_video`: verdicts per face, the face front end included where the detector has one)."""

    def __init__(self, run, runtime: str, manifest: dict, threads: int = 0, device: str = "CPU",
                 path: Path | None = None, nets: tuple | None = None, temporal=None):
        self.run = run  # float32 [1, 3, S, S] 0-255 -> {output name: array}; the graphs have batch 1
        self.temporal = temporal  # frames [1, T, D + 1] -> {logit, probability, valid_frames}: a video bundle's second graph
        self.runtime, self.manifest = runtime, manifest
        self.threads, self.device, self.path = threads, device, path
        self.crop_size = int(manifest["alignment"]["crop_size"])
        self.scorer = standalone.scorer(run, manifest, nets)

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
        g = int(np.asarray(outs[0]["token_mask"]).shape[-1])
        shapes = {"logit": (), "probability": (), "region_tokens": (), "token_mask": (g, g), "contributions": (g, g),
                  "streams": (-1,), "feature": (-1,)}
        raw = {k: np.concatenate([np.asarray(o[k], np.float32).reshape(1, *shape) for o in outs]) for k, shape in shapes.items()}
        verdicts = [frontend.judge(o, self.scorer.threshold, self.scorer.guard, self.scorer.region) for o in outs]
        ok = np.array([v.status == "ok" for v in verdicts])
        return Result(probability=np.where(ok, raw["probability"], np.nan).astype(np.float32),
                      logit=np.where(ok, raw["logit"], np.nan).astype(np.float32),
                      region_tokens=np.rint(raw["region_tokens"]).astype(np.int32), token_mask=raw["token_mask"] > 0.5,
                      contributions=raw["contributions"], status=np.array([v.status for v in verdicts]),
                      decision=[v.decision for v in verdicts], reason=[v.reason for v in verdicts], raw=raw)

    def score_image(self, image: np.ndarray, landmarks=None, faces: str = "all") -> list[frontend.Verdict]:
        """Verdicts for the faces of a uint8 RGB image [H, W, 3] of any size (see frontend.Scorer.score_image);
        `landmarks` ([[x, y] x 5], the platform's own face detector) skips the detector."""
        return self.scorer.score_image(image, landmarks, faces)

    def stream(self, stride: int | None = None) -> frontend.Stream:
        """A ring buffer feeding the temporal head window by window (frontend.Stream); ValueError without one."""
        if self.temporal is None:
            raise ValueError(f"{self.path or 'this detector'} has no temporal head: a video bundle is built with "
                             "--temporal, the torch model given one with --temporal-head")
        return standalone.stream(self.temporal, self.manifest, stride)

    def score_video(self, frames, track: str = "iou", temporal: bool = False, stride: int | None = None) -> dict:
        """The video record of [(frame index, uint8 RGB frame)] (see frontend.Scorer.score_video); `temporal`: the
        verdict is the temporal head's over windows of its T frames, every `stride` frames."""
        return self.scorer.score_video(frames, track, self.stream(stride) if temporal else None)


def open_runtime(bundle: str | Path, target: str, threads: int = 0, device: str = "CPU", interpreter: bool = False,
                 options: dict | None = None):
    """-> (run, runtime name): the bundle's runner from standalone.open_runner, the code a device runs. CoreML
    predicts only on macOS; elsewhere `interpreter=True` runs the package's MIL program with the kit's interpreter
    (numerics, not speed) instead of raising RuntimeUnavailable. options: the runtime options (default: the
    format's). Nothing is verified here: see `load`."""
    try:
        return standalone.open_runner(bundle, target, threads, device, options), FORMATS[target].package
    except RuntimeUnavailable:
        if not (interpreter and target == "coreml"):
            raise
        from .mil import open_mil

        return open_mil(Path(bundle)), MIL_RUNTIME


def open_face_nets(bundle: str | Path, manifest: dict, threads: int = 0, device: str = "CPU", interpreter: bool = False):
    """The bundle's face front end (pnet, rnet, onet) on its runtime, or None for a bundle without one; CoreML off
    macOS: on the MIL interpreter with `interpreter=True`."""
    try:
        return standalone.open_face_nets(bundle, manifest, threads, device)
    except RuntimeUnavailable:
        if not (interpreter and manifest.get("target") == "coreml"):
            raise
        from .mil import mil_session

        files = manifest["front_end"]["files"]
        return standalone.face_nets({net: mil_session(Path(bundle) / files[net], names)
                                     for net, names in standalone.FACE_NETS.items()})


def open_temporal(bundle: str | Path, manifest: dict, threads: int = 0, device: str = "CPU", interpreter: bool = False):
    """The bundle's temporal head on its runtime (None without one); CoreML off macOS: the MIL interpreter with
    `interpreter=True`."""
    try:
        return standalone.open_temporal(bundle, manifest, threads, device)
    except RuntimeUnavailable:
        if not (interpreter and manifest.get("target") == "coreml"):
            raise
        from .mil import mil_session

        return mil_session(Path(bundle) / manifest["temporal"]["file"], standalone.TEMPORAL_OUTPUTS)


def load(bundle: str | Path, threads: int = 0, device: str = "CPU", interpreter: bool = False) -> Detector:
    """Open a bundle with its target's runtime after checking every file's SHA-256 against the manifest.

    `device` is passed to OpenVINO (CPU, GPU, NPU, AUTO). CoreML predicts only on macOS; elsewhere this raises
    RuntimeUnavailable, unless `interpreter=True` (how `dfedge validate` checks CoreML bundles on Linux)."""
    bundle = Path(bundle)
    manifest = verify(bundle)
    run, runtime = open_runtime(bundle, manifest.get("target"), threads, device, interpreter,
                                standalone.runtime_options(manifest))  # what its parity and gate ran with
    nets = open_face_nets(bundle, manifest, threads, device, interpreter)
    return Detector(run, runtime, manifest, threads, device, bundle, nets,
                    open_temporal(bundle, manifest, threads, device, interpreter))


def from_torch(detector, device: str = "cpu", threads: int = 0, faces=None, temporal=None) -> Detector:
    """The PyTorch reference (a dfedge.models.detector.Detector module) behind the same interface, with the kit's
    torch face front end (`faces`: a models.mtcnn.TorchNets; default: the shipped MTCNN weights) and, for videos,
    a models.temporal.TemporalHead."""
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
    return Detector(torch_runner(detector, device), "torch", manifest, threads, device,
                    nets=(nets.pnet, nets.rnet, nets.onet), temporal=torch_runner(temporal, device) if temporal is not None else None)


def temporal_section(head) -> dict:
    """What a Stream needs of a temporal head (the manifest's `temporal` keys): window, feature width, threshold."""
    return {"frames": head.cfg.frames, "feature_dim": head.cfg.feature_dim, "threshold_logit": float(head.info.threshold),
            "min_valid": int(head.info.min_valid)}


def open_bundle(bundle: str | Path, threads: int = 0):
    """-> (runner on float32 NCHW crops, manifest): the form `score_set` takes. CoreML uses the interpreter off macOS."""
    det = load(bundle, threads, interpreter=True)
    return det.run, det.manifest
