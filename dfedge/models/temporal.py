"""SDR's video-level head (Reduced Spatial Dependency, ICASSP 2025), as it runs at inference: a small transformer
over T frame features, giving one logit per window of T frames.

    frames [B, T, D + 1] float32: per frame, the frame encoder's `feature` (the region's pooled DINOv3 tokens, D)
                                  and one validity column (1: the frame had a face and its region, 0: not)
      LayerNorm(feature) -> Linear(D, W)  +  Linear(D, W) of its difference to the previous frame (both valid, else 0)
      + learned position [T, W] -> `depth` pre-norm blocks (attention over valid frames only, MLP) -> LayerNorm
      -> mean over valid frames -> Linear(W, 1) -> logit
    outputs: logit [B], probability [B] (sigmoid), valid_frames [B] (0: no usable frame, the score is not used)

The validity rides in the input as one more column so the graph has the single input every runtime session of
the kit takes (dfedge/device/). SDR's spatially perturbed branches and its mutual-information loss are
training devices (train/temporal.py): what ships is this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (CheckpointError, check_sha256, check_state_dict, config_from_metadata, expected_shapes,
                         read_safetensors, save_safetensors, sha256_file)
from .layers import merge_heads, multi_head_attention, split_heads

MASKED = -1e4  # attention bias of an invalid frame: exp() underflows to 0 in fp32 and fp16 alike, and it stays finite
METADATA_KEY = "dfedge_temporal"


@dataclass(frozen=True)
class TemporalConfig:
    feature_dim: int  # D: the frame encoder's feature width (DINOv3's token width)
    frames: int = 16  # T: the window, fixed per build
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.frames, self.width, self.depth, self.heads) < 1 or self.width % self.heads:
            raise ValueError(f"bad temporal head shape {self}: sizes >= 1 and width divisible by heads")


# Presets as data: the toy world's (D = 96) and the paper detector's (ViT-L/16, D = 1024).
PRESETS = {
    "toy": {"frames": 16, "width": 64, "depth": 2, "heads": 4},
    "vitl16": {"frames": 32, "width": 256, "depth": 2, "heads": 8},
}


@dataclass(frozen=True)
class TemporalInfo:
    """What a temporal head file says about itself: its shape, the logit threshold and how it was fitted."""

    config: dict
    threshold: float = 0.0  # decision fake when logit >= threshold
    min_valid: int = 1  # fewer valid frames in a window: no score (status no_region)
    trained_on: str = ""
    training: dict = field(default_factory=dict)


class TemporalOutput(NamedTuple):
    logit: torch.Tensor  # [B]
    probability: torch.Tensor  # [B]
    valid_frames: torch.Tensor  # [B]


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        qkv, w = self.qkv(self.norm1(x)), x.shape[-1]
        q, k, v = (split_heads(qkv[..., i * w : (i + 1) * w], self.heads) for i in range(3))  # slices: every converter has them
        x = x + self.proj(merge_heads(multi_head_attention(q, k, v, bias)))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TemporalHead(nn.Module):
    def __init__(self, cfg: TemporalConfig, info: TemporalInfo | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.info = info or TemporalInfo(config=asdict(cfg))
        d, w, t = cfg.feature_dim, cfg.width, cfg.frames
        self.norm_in = nn.LayerNorm(d)
        self.embed, self.embed_delta = nn.Linear(d, w), nn.Linear(d, w)
        self.position = nn.Parameter(torch.zeros(1, t, w))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w)
        self.classifier = nn.Linear(w, 1)
        self.register_buffer("previous", torch.diag(torch.ones(t - 1), -1), persistent=False)  # [T, T]: row t picks t-1
        self.eval()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.cfg.frames, self.cfg.feature_dim + 1)

    def embedding(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, T, D + 1] -> (the window's representation [B, W] before the classifier, valid frames [B])."""
        t, d = self.cfg.frames, self.cfg.feature_dim
        if frames.ndim != 3 or tuple(frames.shape[1:]) != (t, d + 1):
            raise ValueError(f"expected frames [B, {t}, {d + 1}] (features and a validity column), got {list(frames.shape)}")
        feature, valid = self.norm_in(frames[..., :d]), frames[..., d:]  # [B, T, D], [B, T, 1]
        both = valid * torch.matmul(self.previous, valid)  # this frame and the one before it are valid
        delta = (feature - torch.matmul(self.previous, feature)) * both  # its size is the cue: not normalised again
        x = self.embed(feature) + self.embed_delta(delta) + self.position
        bias = (1.0 - valid.transpose(1, 2)).unsqueeze(1) * MASKED  # [B, 1, 1, T]: keys of invalid frames are not attended
        for block in self.blocks:
            x = block(x, bias)
        count = valid.sum(dim=1)  # [B, 1]
        pooled = (self.norm(x) * valid).sum(dim=1) / count.clamp(min=1.0)
        return pooled, count.reshape(-1)

    def forward(self, frames: torch.Tensor) -> TemporalOutput:
        pooled, count = self.embedding(frames)
        logit = self.classifier(pooled).reshape(-1)
        return TemporalOutput(logit, torch.sigmoid(logit), count)


class Graph(nn.Module):
    """The head as exported: outputs as a plain tuple in TEMPORAL_OUTPUTS order (a .pte or a LiteRT signature cannot
    hold a namedtuple)."""

    def __init__(self, head: TemporalHead) -> None:
        super().__init__()
        self.head = head.eval()

    def forward(self, x: torch.Tensor):  # `x`: the input name every exporter's export_graph gives a small graph
        return tuple(self.head(x))


def pack(features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """features [B, T, D] and validity [B, T] -> the graph's input [B, T, D + 1] (invalid frames' features zeroed)."""
    v = valid.to(features.dtype).unsqueeze(-1)
    return torch.cat([features * v, v], dim=-1)


def make_temporal(feature_dim: int, preset: str = "toy", **overrides) -> TemporalHead:
    if preset not in PRESETS:
        raise ValueError(f"unknown temporal preset '{preset}' (known: {', '.join(PRESETS)})")
    return TemporalHead(TemporalConfig(feature_dim=feature_dim, **{**PRESETS[preset], **overrides}))


def shipped_temporal(preset: str) -> Path:
    """The temporal head a preset ships (`python -m dfedge.train.toy --temporal` makes the toy world's)."""
    path = Path(__file__).resolve().parent.parent / "weights" / f"{preset}_temporal.safetensors"
    if not path.is_file():
        raise ValueError(f"the '{preset}' preset ships no temporal head: pass a file from `dfedge fit-temporal`")
    return path


def temporal_head(path: str | Path | None, preset: str, feature_dim: int, sha256: str | None = None) -> TemporalHead:
    """The temporal head file given (None: the preset's shipped one), checked against the frame encoder's width; its
    provenance (file name, SHA-256, training set) is `head.sources`."""
    path = Path(path) if path else shipped_temporal(preset)
    head = load_temporal(path, feature_dim, sha256)
    head.sources = {"file": path.name, "sha256": sha256_file(path), "trained_on": head.info.trained_on}
    return head


def save_temporal(head: TemporalHead, path: str | Path) -> Path:
    """safetensors with the head's tensors; TemporalInfo (its config, threshold, training record) in the metadata."""
    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    return save_safetensors(path, tensors, {METADATA_KEY: json.dumps(asdict(head.info))})


def load_temporal(path: str | Path, feature_dim: int | None = None, sha256: str | None = None) -> TemporalHead:
    """A temporal head file written by save_temporal, checked whole (exactly its tensors in their shapes, finite
    values and threshold); `feature_dim` must match the frame encoder's; `sha256` pins the file."""
    check_sha256(path, sha256)
    tensors, meta = read_safetensors(path)
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{path}: no '{METADATA_KEY}' metadata: not a temporal head file")
    info = config_from_metadata(TemporalInfo, meta, METADATA_KEY, path)
    try:
        head = TemporalHead(TemporalConfig(**info.config), info)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad temporal head settings: {e}") from None
    check_state_dict(tensors, expected_shapes(head), f"{path}: a temporal head")
    if not (all(bool(torch.isfinite(t).all()) for t in tensors.values()) and math.isfinite(info.threshold)):
        raise CheckpointError(f"{path}: the temporal head holds NaN or infinite values")
    if feature_dim is not None and head.cfg.feature_dim != feature_dim:
        raise CheckpointError(f"{path}: the temporal head reads {head.cfg.feature_dim}-wide frame features; "
                              f"the frame encoder gives {feature_dim}")
    head.load_state_dict({k: v.float() for k, v in tensors.items()})
    return head.eval()
