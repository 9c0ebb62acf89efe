"""What a converter is given: the frozen job of one bundle (its target's row: export/row.py).

A converter (an exporter in `export/<target>.py`, a quantizer in `quantize/<target>.py`) is one function:

    convert(job: Job, out_dir: Path, report: dict) -> list[Path]

It writes the target's model file into `out_dir`, with `job.metadata` embedded in it, and records what it did in
`report` (tool, settings, calibration; the bundle's manifest keeps it under `conversion`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from .._version import __version__
from ..data.calibration import Calibration
from ..eval.gate import Gate
from ..eval.video import VideoGate
from ..device.graphs import OUTPUTS
from ..models.detector import ALIGN_TEMPLATE, Detector
from ..models.temporal import TemporalHead
from ..device.schema import BUNDLE_SCHEMA
from .row import Target


class Outputs(torch.nn.Module):
    """A graph's outputs as a plain tuple (their declared order): a .pte's output spec or a LiteRT signature cannot
    hold a namedtuple. `nhwc`: the graph takes [B, H, W, 3], as mobile cameras deliver, and hands NCHW on."""

    def __init__(self, detector: torch.nn.Module, nhwc: bool = False) -> None:
        super().__init__()
        self.detector, self.nhwc = detector, nhwc

    def forward(self, image: torch.Tensor):
        return tuple(self.detector(image.permute(0, 3, 1, 2) if self.nhwc else image))


@dataclass(frozen=True)
class Job:
    """Everything one bundle's conversion, parity check and gate need, fixed before it starts."""

    detector: Detector  # the rung's torch graph (models/detector.py), eval mode
    target: Target
    precision: str
    name: str  # the bundle set: dist/NAME
    folder: str  # the bundle: dist/NAME/FOLDER
    sources: dict  # the manifest's `sources`: provenance of the weights (models.factory.weight_sources)
    options: dict  # the manifest's `export_options`
    parity_images: np.ndarray  # [N, 3, S, S] float32 0-255: the parity crops; the first is the trace example
    calibration: Calibration | None = None  # crops for static quantized rungs
    gate: Gate | None = None  # AUC drift on the validation split after parity (None: parity only)
    accuracy_iterations: int = 3  # NNCF accuracy control's bound (the mixed rung)
    temporal: TemporalHead | None = None  # a video bundle's second graph (SDR), eval mode; None: a photo bundle
    temporal_sources: dict = field(default_factory=dict)  # its file's provenance (path, sha256) for the manifest
    video_gate: VideoGate | None = None  # the gate at video level (video bundles with --video-data)
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # conversions shared by the jobs of one detector x target

    @property
    def example(self) -> torch.Tensor:
        """[1, 3, S, S] float32: the input the graph is traced with (its shape is the bundle's)."""
        return torch.from_numpy(np.ascontiguousarray(self.parity_images[:1]))

    @property
    def metadata(self) -> dict[str, str]:
        """Key facts stored inside the model file itself (ONNX metadata_props, OpenVINO rt_info, CoreML user
        metadata, TFLite flatbuffer metadata)."""
        det = self.detector
        return {
            "dfedge.schema": BUNDLE_SCHEMA, "dfedge.version": __version__, "dfedge.name": self.name,
            "dfedge.precision": self.precision,
            "dfedge.input": f"image float32 RGB 0-255 {det.cfg.crop_size}x{det.cfg.crop_size} aligned crop",
            "dfedge.template": json.dumps(np.round(ALIGN_TEMPLATE, 4).tolist()),
            "dfedge.label_set": det.label_set, "dfedge.region": det.region_index.region,
            "dfedge.threshold_logit": repr(float(det.probe.info.threshold)), "dfedge.outputs": ",".join(OUTPUTS),
        }
