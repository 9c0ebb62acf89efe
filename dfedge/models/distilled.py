"""The distilled region index: a small head on DINOv3's own patch tokens that predicts, per token, the class
distribution the exact FaRL parser gives that token (its area-pooled softmax). No FaRL at run time.

    patch tokens [B, g*g, D] -> Linear D->H -> ReLU -> Linear H->C (+ a learned per-token prior [g*g, C])
                             -> softmax over C -> [B, C, g, g]

The output replaces the parser's token soft map, so the membership rule (region.py) and every downstream output
are unchanged. The per-token prior is a constant add: aligned crops put parts at nearly fixed tokens, and the
prior lets the head spend its capacity on the deviations. Trained by `dfedge distill-region-head`
(dfedge/train/distill.py); the file is safetensors with the config in its metadata and a JSON manifest beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    CheckpointError, check_sha256, check_state_dict, config_from_metadata, expected_shapes, read_safetensors,
)
from .farl import LABEL_SETS

CONFIG_KEY = "dfedge_region_head_config"


@dataclass(frozen=True)
class RegionHeadConfig:
    label_set: str = "lapa"
    embed_dim: int = 1024  # DINOv3's token width
    grid: int = 14  # DINOv3's token grid (224 input)
    hidden: int = 256  # 0 = a linear head
    position_prior: bool = True

    def __post_init__(self) -> None:
        if self.label_set not in LABEL_SETS:
            raise ValueError(f"unknown label set '{self.label_set}' (known: {', '.join(LABEL_SETS)})")

    @property
    def num_classes(self) -> int:
        return len(LABEL_SETS[self.label_set])

    @property
    def label_names(self) -> tuple[str, ...]:
        return LABEL_SETS[self.label_set]


class DistilledRegionHead(nn.Module):
    """forward(patch tokens [B, g*g, D]) -> class probabilities per token [B, C, g, g]."""

    def __init__(self, cfg: RegionHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.num_classes
        if cfg.hidden:
            self.fc1 = nn.Linear(cfg.embed_dim, cfg.hidden)
            self.fc2 = nn.Linear(cfg.hidden, c)
        else:
            self.fc2 = nn.Linear(cfg.embed_dim, c)
        self.prior = nn.Parameter(torch.zeros(cfg.grid * cfg.grid, c), requires_grad=cfg.position_prior)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, g*g, D] -> [B, g*g, C]."""
        x = F.relu(self.fc1(tokens)) if self.cfg.hidden else tokens
        return self.fc2(x) + self.prior

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        g = self.cfg.grid
        probs = self.logits(tokens).softmax(dim=-1)  # [B, g*g, C]
        return probs.transpose(1, 2).reshape(-1, self.cfg.num_classes, g, g)


def config_json(cfg: RegionHeadConfig) -> str:
    return json.dumps(asdict(cfg))


def load_region_head(path, embed_dim: int | None = None, grid: int | None = None,
                     sha256: str | None = None) -> tuple[DistilledRegionHead, dict]:
    """(head, file metadata). Checks the head fits the DINOv3 it will read (`embed_dim`, `grid`); `sha256` (64 hex
    digits) pins the file."""
    check_sha256(path, sha256)
    tensors, meta = read_safetensors(path)
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{path}: no '{CONFIG_KEY}' metadata (not written by distill-region-head)")
    cfg = config_from_metadata(RegionHeadConfig, meta, CONFIG_KEY, path)
    if embed_dim is not None and cfg.embed_dim != embed_dim:
        raise CheckpointError(f"{path}: head reads {cfg.embed_dim}-wide tokens but this DINOv3 gives {embed_dim}")
    if grid is not None and cfg.grid != grid:
        raise CheckpointError(f"{path}: head was distilled for a {cfg.grid}x{cfg.grid} token grid, this DINOv3 has {grid}x{grid}")
    head = DistilledRegionHead(cfg)
    check_state_dict(tensors, expected_shapes(head), path)  # the same keys and shapes, finite values
    head.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return head.eval(), meta
