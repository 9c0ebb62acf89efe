"""The one thing a loaded model is, on every runtime and in the kit alike: `Pipeline` — aligned crops in (a
`Result`), or photos and video frames in (verdicts per face, through the face detector)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Opener, open_faces, open_runner, open_temporal, runtime_options, scorer, stream
from .faces import FaceDetector
from .formats import format_of
from .manifest import verify
from .stream import Stream
from .verdict import Verdict, judge


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
    status: np.ndarray  # [B] str: ok | no_region | implausible_region (verdict.STATUSES)
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


@dataclass
class Graphs:
    """The runnable parts of a loaded model: the detector graph, its face detector, its temporal head."""

    run: object  # float32 [1, 3, S, S] 0-255 -> {output name: array}; the graphs have batch 1
    faces: FaceDetector | None = None  # None: crops only, or photos with landmarks given
    temporal: object | None = None  # frames [1, T, D + 1] -> {logit, probability, valid_frames}: a video bundle's


class Pipeline:
    """A loaded detector: call it on aligned uint8 RGB crops (a Result), or score whole photos and video frames
    (`score_image`, `score_video`: verdicts per face, through the face detector where it has one)."""

    def __init__(self, graphs: Graphs, runtime: str, manifest: dict, path: Path | None = None) -> None:
        self.run, self.temporal = graphs.run, graphs.temporal
        self.runtime, self.manifest, self.path = runtime, manifest, path
        self.crop_size = int(manifest["alignment"]["crop_size"])
        self.scorer = scorer(graphs.run, manifest, graphs.faces)

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
        return f"Pipeline({self.target} {self.precision} on {self.runtime}, {self.path or 'in memory'})"

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
        verdicts = [judge(o, self.scorer.threshold, self.scorer.guard, self.scorer.region) for o in outs]
        ok = np.array([v.status == "ok" for v in verdicts])
        return Result(probability=np.where(ok, raw["probability"], np.nan).astype(np.float32),
                      logit=np.where(ok, raw["logit"], np.nan).astype(np.float32),
                      region_tokens=np.rint(raw["region_tokens"]).astype(np.int32), token_mask=raw["token_mask"] > 0.5,
                      contributions=raw["contributions"], status=np.array([v.status for v in verdicts]),
                      decision=[v.decision for v in verdicts], reason=[v.reason for v in verdicts], raw=raw)

    def score_image(self, image: np.ndarray, landmarks=None, faces: str = "all") -> list[Verdict]:
        """Verdicts for the faces of a uint8 RGB image [H, W, 3] of any size (see Scorer.score_image);
        `landmarks` ([[x, y] x 5], the platform's own face detector) skips the detector."""
        return self.scorer.score_image(image, landmarks, faces)

    def stream(self, stride: int | None = None) -> Stream:
        """A ring buffer feeding the temporal head window by window (Stream); ValueError without one."""
        if self.temporal is None:
            raise ValueError(f"{self.path or 'this detector'} has no temporal head: a video bundle is built with "
                             "--temporal, the torch model given one with --temporal-head")
        return stream(self.temporal, self.manifest, stride)

    def score_video(self, frames, track: str = "iou", temporal: bool = False, stride: int | None = None) -> dict:
        """The video record of [(frame index, uint8 RGB frame)] (see Scorer.score_video); `temporal`: the verdict is
        the temporal head's over windows of its T frames, every `stride` frames."""
        return self.scorer.score_video(frames, track, self.stream(stride) if temporal else None)


def load(bundle: str | Path, threads: int = 0, device: str = "CPU", opener: Opener | None = None,
         runtime: str | None = None) -> Pipeline:
    """Verify a bundle, then open its graphs with the runtime options it was validated with: a Pipeline. `opener`
    (with the `runtime` it names): how its graph files are opened instead of the format's own runtime."""
    bundle = Path(bundle)
    manifest = verify(bundle)
    fmt = format_of(bundle, manifest["target"])
    options = runtime_options(manifest)
    graphs = Graphs(open_runner(bundle, fmt.name, threads, device, options, opener),
                    open_faces(bundle, manifest, threads, device, opener), open_temporal(bundle, manifest, threads, device, opener))
    return Pipeline(graphs, runtime or fmt.package, manifest, bundle)
