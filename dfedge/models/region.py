"""The spatial index: parser probabilities on DINOv3's token grid, a region's tokens, their mean, a linear probe.

Token-membership rule (the one rule the whole kit uses): token t belongs to region R when the parser assigns
R at least a quarter of the token's area, i.e. mean over the token's pixels of sum_{c in R} P(c) >= 0.25, where P
is the parser softmax brought to the crop frame and area-pooled onto the g x g grid. Ties count as inside.

Why a quarter and not a half: at the default DINOv3 input (224, 14x14 tokens of 32x32 crop pixels) the mouth
of a face aligned to the template is ~63 px wide and 20-45 px tall, so it rarely fills half of any token. On
toy faces drawn to the template, a 0.5 rule finds no mouth token on 30 % of faces (mean 1.0 token); 0.25 finds
one on every face (mean 2.7 tokens). Everything is fixed-shape: the region mean is a weight vector times the
token matrix, never a gather.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (CheckpointError, check_sha256, check_state_dict, config_from_metadata, expected_shapes,
                         read_safetensors, save_safetensors)
from .labels import LABEL_SETS, REGIONS
from .pooling import GLOBAL, EnsembleProbe, TopKProbe
from .heads import head

MEMBERSHIP_THRESHOLD = 0.25


def region_classes(label_set: str, region: str) -> list[int]:
    """Class indices of `region` in `label_set` (mouth in LaPa: [7, 8, 9]; in CelebAMask-HQ: [11, 12, 13])."""
    if region not in REGIONS:
        raise ValueError(f"unknown region '{region}' (known: {', '.join(REGIONS)})")
    names = LABEL_SETS[label_set]
    return [i for i, n in enumerate(names) if region == "all" or n in REGIONS[region]]


def region_class_weights(label_set: str, region: str) -> torch.Tensor:
    """One-hot [C] selector of the region's classes."""
    w = torch.zeros(len(LABEL_SETS[label_set]))
    w[region_classes(label_set, region)] = 1.0
    return w


class RegionIndex(nn.Module):
    """soft map [B, C, g, g] (probabilities per token) -> membership mask [B, g*g] (float 0/1).

    `head` is the distilled rung's soft map (DINOv3 patch tokens -> [B, C, g, g], models/distilled.py); it lives
    here so that everything deciding membership sits under one module path (quantizers keep it in float).
    """

    def __init__(self, label_set: str, region: str, threshold: float = MEMBERSHIP_THRESHOLD,
                 head: nn.Module | None = None) -> None:
        super().__init__()
        self.label_set, self.region, self.threshold = label_set, region, threshold
        self.head = head
        self.register_buffer("class_weights", region_class_weights(label_set, region).view(1, -1, 1, 1), persistent=False)

    def region_probability(self, soft: torch.Tensor) -> torch.Tensor:
        return (soft * self.class_weights).sum(dim=1)  # [B, g, g]

    def forward(self, soft: torch.Tensor) -> torch.Tensor:
        return (self.region_probability(soft) >= self.threshold).to(soft.dtype).flatten(1)


@dataclass
class ProbeInfo:
    """What travels with a probe: which features it reads and where its decision threshold sits."""

    head: str = "region"
    region: str = "mouth"
    label_set: str = "lapa"
    threshold: float = 0.0  # on the logit; positive logit = fake
    threshold_rule: str = "logit>=0"
    fitted_on: str = ""
    guard: dict | None = None  # plausible region token count and centroid (device/verdict.check_region; fit-probe)
    head_config: dict | None = None  # topk: channels, k; ensemble: streams, vote_weights, step, calibration (fit-probe)

    def __post_init__(self) -> None:
        head(self.head)  # an unknown head is refused here, when a probe file is read


class LinearProbe(nn.Module):
    """feature [B, D] -> logit [B] (positive = fake)."""

    def __init__(self, dim: int, info: ProbeInfo | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(()))
        self.info = info or ProbeInfo()

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return F.linear(feature, self.weight.unsqueeze(0), self.bias.reshape(1)).squeeze(-1)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """w . x_t for every token, [B, N, D] -> [B, N] (a linear op: every converter takes it)."""
        return F.linear(tokens, self.weight.unsqueeze(0)).squeeze(-1)


# The ensemble's defaults: NTIRE's rule (round to 0.1, weighted mean, round again) over the kit's regions and a
# global stream, equal whole-number weights (theirs, 2, 1, 2, weighted three different streams).
ENSEMBLE_STREAMS = ("mouth", "eyes", "nose", "skin", GLOBAL)
TOPK_DEFAULTS = {"channels": 64, "k": 16}
ENSEMBLE_DEFAULTS = {"streams": list(ENSEMBLE_STREAMS), "vote_weights": [1.0] * len(ENSEMBLE_STREAMS), "step": 0.1,
                     "calibration": "platt"}
MAX_VOTE_WEIGHT = 49  # whole numbers summing below 50: the vote's halves stay exact (models/pooling.EnsembleProbe.vote)


def check_vote_weights(weights) -> tuple[float, ...]:
    """Positive whole numbers summing to less than 50 (the discretized vote is exact for those), as floats."""
    try:
        w = tuple(float(x) for x in weights)
    except ValueError:
        w = ()
    if not w or any(x <= 0 or x != int(x) for x in w) or sum(w) > MAX_VOTE_WEIGHT:
        raise ValueError(f"vote weights {list(weights)}: use positive whole numbers summing to at most {MAX_VOTE_WEIGHT} (2,1,2)")
    return w


def make_probe(head_name: str, dim: int, info: ProbeInfo) -> nn.Module:
    """An empty probe module of head `head_name` over `dim`-wide tokens, shaped by `info.head_config` (its head's
    defaults when absent), carrying `info`."""
    cfg = info.head_config or {}
    if head_name == "topk":
        cfg = {**TOPK_DEFAULTS, **cfg}
        probe = TopKProbe(dim, int(cfg["channels"]), int(cfg["k"]))
    elif head_name == "ensemble":
        cfg = {**ENSEMBLE_DEFAULTS, **cfg}
        streams = tuple(cfg["streams"])
        for name in streams:
            if name != GLOBAL and (name not in REGIONS or name == "all"):
                raise ValueError(f"ensemble stream '{name}': a region ({', '.join(r for r in REGIONS if r != 'all')}) or '{GLOBAL}'")
        selectors = torch.stack([region_class_weights(info.label_set, n) if n != GLOBAL else torch.zeros(len(LABEL_SETS[info.label_set]))
                                 for n in streams])
        probe = EnsembleProbe(dim, selectors, streams, check_vote_weights(cfg["vote_weights"]), float(cfg["step"]),
                              MEMBERSHIP_THRESHOLD)
    else:
        return LinearProbe(dim, info)
    info.head_config = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    probe.info = info
    return probe


def save_probe(probe: nn.Module, path: str | Path) -> Path:
    """safetensors with the probe's tensors (a linear probe: `weight` [D] and `bias` []); the ProbeInfo JSON rides
    in the file's metadata."""
    tensors = {k: v.detach().contiguous() for k, v in probe.state_dict().items()}
    return save_safetensors(path, tensors, {"dfedge_probe": json.dumps(asdict(probe.info))})


def load_probe(path: str | Path, dim: int | None = None, sha256: str | None = None) -> nn.Module:
    """A probe file written by save_probe (fit-probe), checked whole: exactly the tensors its head's probe holds,
    in their shapes, finite values, a finite threshold, metadata the kit knows; `sha256` (64 hex digits) pins the
    file."""
    check_sha256(path, sha256)
    tensors, meta = read_safetensors(path)
    if "dfedge_probe" not in meta:
        raise CheckpointError(f"{path}: no 'dfedge_probe' metadata (threshold and head unknown)")
    info = config_from_metadata(ProbeInfo, meta, "dfedge_probe", path)
    w = tensors.get("salience_weight" if info.head == "topk" else "weight")  # [D], or [C, D] / [S, D]: D is its last axis
    if w is None or w.ndim not in (1, 2):
        raise CheckpointError(f"{path}: no probe weight ([D], or [C, D] / [S, D]) among {sorted(tensors)}")
    try:
        probe = make_probe(info.head, w.shape[-1], info)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: bad probe settings: {e}") from None
    if not (all(bool(torch.isfinite(t).all()) for t in tensors.values()) and math.isfinite(info.threshold)):
        raise CheckpointError(f"{path}: the probe holds NaN or infinite values (weights, bias or threshold)")
    check_state_dict(tensors, expected_shapes(probe), f"{path}: a '{info.head}' probe")
    if dim is not None and probe.in_features != dim:
        raise CheckpointError(f"{path}: probe has {probe.in_features} inputs but the feature has {dim}")
    with torch.no_grad():
        for k, v in probe.state_dict().items():
            v.copy_(tensors[k].float().reshape(v.shape))
    return probe
