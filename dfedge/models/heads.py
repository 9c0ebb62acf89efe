"""Heads: how the probe's input [B, D] is pooled from what the detector computed. One function per head, one table
(HEADS); adding a head is one function and one row here (and, if it reads something new, one field of `Tokens`).

    region       the paper: the masked mean of DINOv3's patch tokens over the region (contributions per token)
    all          the mean of every DINOv3 patch token (ablation)
    cls          DINOv3's CLS token (ablation: no spatial index)
    farl-region  the parser's own last-block tokens over the region, on FaRL's grid (ablation)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .resample import apply_separable


class Tokens(NamedTuple):
    """What a head may pool: the detector's intermediate tensors for one batch."""

    patches: torch.Tensor  # [B, g*g, D] DINOv3 patch tokens
    cls: torch.Tensor  # [B, D] DINOv3 CLS token
    mask: torch.Tensor  # [B, g*g] region membership, 0/1
    weights: torch.Tensor  # [B, g*g] the region's masked-mean weights (all zero without a region)
    parser_probs: torch.Tensor | None  # [B, C, L, L] parser probabilities in its own frame (parser rungs only)
    farl_tokens: torch.Tensor | None  # [B, G*G, W] FaRL's last-block tokens (parser rungs only)


# (detector, tokens) -> (probe input [B, D], token weights [B, g*g] whose w.x_t give the per-token contributions,
# or None for a head that is not a mean of DINOv3 tokens)
Pool = Callable[[object, Tokens], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class Head:
    name: str
    pool: Pool
    reads: str  # whose tokens the probe sees: "dinov3" (width D) or "farl" (width W; needs the parser)
    regional: bool  # a face without region tokens carries no evidence: left out of a probe fit, scored no_region
    description: str


def masked_mean_weights(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mask [B, N] -> (weights [B, N] = mask / max(count, 1), count [B]). Empty regions get all-zero weights."""
    count = mask.sum(dim=1)
    return mask / count.clamp(min=1.0).unsqueeze(1), count


def _region(det, t: Tokens):
    return torch.bmm(t.weights.unsqueeze(1), t.patches).squeeze(1), t.weights


def _all(det, t: Tokens):
    uniform = torch.full_like(t.mask, 1.0 / t.mask.shape[1])
    return t.patches.mean(dim=1), uniform


def _cls(det, t: Tokens):
    return t.cls, None


def _farl_region(det, t: Tokens):
    """The region's FaRL tokens (final LayerNorm applied), masked on FaRL's own grid."""
    farl_soft = apply_separable(t.parser_probs, det.to_farl_tokens, det.to_farl_tokens)
    farl_weights, _ = masked_mean_weights(det.region_index(farl_soft))
    farl_tokens = det.parser.backbone.visual.ln_post(t.farl_tokens)
    return torch.bmm(farl_weights.unsqueeze(1), farl_tokens).squeeze(1), None


HEADS: dict[str, Head] = {
    h.name: h
    for h in (
        Head("region", _region, "dinov3", True, "masked mean of DINOv3 patch tokens over the region (the paper)"),
        Head("cls", _cls, "dinov3", False, "DINOv3 CLS token"),
        Head("all", _all, "dinov3", False, "mean of all DINOv3 patch tokens"),
        Head("farl-region", _farl_region, "farl", True, "the parser's own tokens over the region"),
    )
}


def head(name: str) -> Head:
    if name not in HEADS:
        raise ValueError(f"unknown head '{name}' (known: {', '.join(HEADS)})")
    return HEADS[name]


def feature_dim(name: str, dinov3_width: int, farl_width: int | None) -> int:
    """Width of the probe input of head `name`."""
    return farl_width if head(name).reads == "farl" else dinov3_width
