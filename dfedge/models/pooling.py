"""What each head of the table (models/heads.py) computes: how it pools the detector's tokens into the probe's
input and how it scores them (`NAME_pool`, `NAME_score`, which the table's rows name), the tokens they read
(`Tokens`), what they give (`Scored`), and the probes of their own that topk (LFM) and ensemble (NTIRE 2026) carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from .resample import apply_separable

# A token's salience outside the region, before Top-K: far below any response, so a region with at least K tokens
# never selects an outside one; one with fewer fills the remaining slots with outside tokens whose value is then
# zeroed. 1e4 is exact in float16 too.
OUTSIDE = 1.0e4


class Tokens(NamedTuple):
    """What a head may pool: the detector's intermediate tensors for one batch."""

    patches: torch.Tensor  # [B, g*g, D] DINOv3 patch tokens
    cls: torch.Tensor  # [B, D] DINOv3 CLS token
    mask: torch.Tensor  # [B, g*g] region membership, 0/1
    weights: torch.Tensor  # [B, g*g] the region's masked-mean weights (all zero without a region)
    parser_probs: torch.Tensor | None  # [B, C, L, L] parser probabilities in its own frame (parser rungs only)
    farl_tokens: torch.Tensor | None  # [B, G*G, W] FaRL's last-block tokens (parser rungs only)
    soft: torch.Tensor | None = None  # [B, C, g, g] class probabilities per token (the region index's input)


class Scored(NamedTuple):
    """A head's answer for a batch."""

    logit: torch.Tensor  # [B]
    probability: torch.Tensor  # [B] P(fake): sigmoid(logit), or the ensemble's discretized vote
    streams: torch.Tensor  # [B, S] each stream's (calibrated) probability; S = 1 but for the ensemble
    token_mask: torch.Tensor  # [B, g*g] the tokens the verdict rests on, 0/1
    contributions: torch.Tensor  # [B, g*g] shares of the logit per token (all zero for heads that have none)


# (detector, tokens) -> the probe's training input for one batch, first dimension B (fit-probe caches it):
# [B, D] for the mean heads, [B, g*g, D + 1] (tokens, membership) for topk, [B, S, D + 1] (stream means, token
# counts) for the ensemble.
Pool = Callable[[object, Tokens], torch.Tensor]
Score = Callable[[object, Tokens], Scored]


def masked_mean_weights(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mask [B, N] -> (weights [B, N] = mask / max(count, 1), count [B]). Empty regions get all-zero weights."""
    count = mask.sum(dim=1)
    return mask / count.clamp(min=1.0).unsqueeze(1), count


def _no_contributions(t: Tokens) -> torch.Tensor:
    """All-zero contributions computed from the input (a constant graph output trips converters: ONNX's float16
    converter casts a renamed initializer that no longer exists)."""
    return t.mask * 0.0


def _single(det, t: Tokens, feature: torch.Tensor, weights: torch.Tensor | None) -> Scored:
    """One linear probe on a mean of tokens: contributions w.x_t times each token's weight (sum + bias = logit)."""
    logit = det.probe(feature)
    contributions = _no_contributions(t) if weights is None else det.probe.project(t.patches) * weights
    probability = torch.sigmoid(logit)
    return Scored(logit, probability, probability.unsqueeze(1), t.mask, contributions)


def region_mean(t: Tokens) -> torch.Tensor:
    """The mean of the region's DINOv3 tokens [B, D] (zeros without region tokens)."""
    return torch.bmm(t.weights.unsqueeze(1), t.patches).squeeze(1)


def region_pool(det, t: Tokens):
    return region_mean(t)


def all_pool(det, t: Tokens):
    return t.patches.mean(dim=1)


def cls_pool(det, t: Tokens):
    return t.cls


def farl_region_pool(det, t: Tokens):
    """The region's FaRL tokens (final LayerNorm applied), masked on FaRL's own grid."""
    farl_soft = apply_separable(t.parser_probs, det.to_farl_tokens, det.to_farl_tokens)
    farl_weights, _ = masked_mean_weights(det.region_index(farl_soft))
    farl_tokens = det.parser.backbone.visual.ln_post(t.farl_tokens)
    return torch.bmm(farl_weights.unsqueeze(1), farl_tokens).squeeze(1)


def region_score(det, t: Tokens):
    return _single(det, t, region_pool(det, t), t.weights)


def all_score(det, t: Tokens):
    return _single(det, t, all_pool(det, t), torch.full_like(t.mask, 1.0 / t.mask.shape[1]))


def cls_score(det, t: Tokens):
    return _single(det, t, cls_pool(det, t), None)


def farl_region_score(det, t: Tokens):
    return _single(det, t, farl_region_pool(det, t), None)


def topk_pool(det, t: Tokens):
    return torch.cat([t.patches, t.mask.unsqueeze(-1)], dim=-1)


def topk_score(det, t: Tokens):
    logit, selected, contributions = det.probe.score(t.patches, t.mask)
    probability = torch.sigmoid(logit)
    return Scored(logit, probability, probability.unsqueeze(1), selected, contributions)


def ensemble_pool(det, t: Tokens):
    means, counts, _ = det.probe.stream_means(t.patches, t.soft)
    return torch.cat([means, counts.unsqueeze(-1)], dim=-1)


def ensemble_score(det, t: Tokens):
    means, counts, union = det.probe.stream_means(t.patches, t.soft)
    logit, vote, streams = det.probe.vote(means, counts)
    return Scored(logit, vote, streams, union, _no_contributions(t))


class TopKProbe(nn.Module):
    """LFM's head: tokens [B, N, D] and region membership [B, N] -> (logit [B], selected tokens [B, N] 0/1,
    contributions [B, N]).

    salience s = tokens . Ws^T + bs [B, N, C]; per channel the K largest responses over the region's tokens (a
    fixed K: static shapes, TopK on every target); logit = sum_{c,k} w[c, k] * s_c(token_{c,k}) + b. Every selected
    response belongs to one token, so a token's contribution is the sum of w[c, k] s_c over the slots it won:
    sum(contributions) + b == logit exactly. Slots a small region cannot fill hold 0.
    """

    def __init__(self, dim: int, channels: int = 64, k: int = 16) -> None:
        super().__init__()
        self.k = k
        self.salience_weight = nn.Parameter(torch.zeros(channels, dim))
        self.salience_bias = nn.Parameter(torch.zeros(channels))
        self.weight = nn.Parameter(torch.zeros(channels * k))
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def in_features(self) -> int:
        return self.salience_weight.shape[1]

    def responses(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the K largest responses per channel [B, C, K] (0 in slots outside the region), their tokens one-hot
        [B, C, K, N])."""
        n = tokens.shape[1]
        if n < self.k:
            raise ValueError(f"Top-{self.k} over {n} tokens: K must not exceed the token count")
        s = (tokens @ self.salience_weight.t() + self.salience_bias).transpose(1, 2)  # [B, C, N]
        ranked = s + (mask.unsqueeze(1) - 1.0) * OUTSIDE
        values, index = ranked.topk(self.k, dim=-1)  # [B, C, K]
        onehot = (index.unsqueeze(-1) == torch.arange(n, device=tokens.device)).to(tokens.dtype)  # [B, C, K, N]
        inside = (onehot * mask[:, None, None, :]).sum(dim=-1)  # [B, C, K]: 1 when the slot's token is in the region
        return values * inside, onehot * inside.unsqueeze(-1)

    def slot_values(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The first element of `responses` by a gather instead of the one-hot (what fit-probe trains with: a
        fraction of the memory; the exported graphs use the one-hot, which every target converts)."""
        s = (tokens @ self.salience_weight.t() + self.salience_bias).transpose(1, 2)
        values, index = (s + (mask.unsqueeze(1) - 1.0) * OUTSIDE).topk(self.k, dim=-1)
        return values * mask.unsqueeze(1).expand_as(s).gather(-1, index)

    def shares(self, values: torch.Tensor) -> torch.Tensor:
        """Each slot's share of the logit, w[c, k] * value [B, C, K] (the logit is their sum plus the bias)."""
        return values * self.weight.view(1, -1, self.k)

    def score(self, tokens: torch.Tensor, mask: torch.Tensor):
        values, onehot = self.responses(tokens, mask)
        shares = self.shares(values)  # [B, C, K]
        contributions = (shares.unsqueeze(-1) * onehot).sum(dim=(1, 2))  # [B, N]
        selected = (onehot.sum(dim=(1, 2)) > 0).to(tokens.dtype)
        return shares.sum(dim=(1, 2)) + self.bias, selected, contributions

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """The fit-probe input [B, N, D + 1] (tokens, membership) -> logit [B]."""
        return self.score(feature[..., :-1], feature[..., -1])[0]


# The global stream's name in an ensemble: the mean of every patch token.
GLOBAL = "global"


class EnsembleProbe(nn.Module):
    """NTIRE 2026's combination on one backbone pass: S streams (region means over parsed regions, `global` the mean
    of all tokens), each with its own linear probe and calibration p_s = sigmoid(a_s z_s + c_s) (temperature
    scaling: c_s = 0), then the discretized vote: each p_s rounded to `step`, the weighted mean over the streams
    that found their region, rounded to `step` again.

    `class_weights` [S, C] selects each stream's classes (the global stream's row is unused); built from the
    label set by the caller (models/region.py knows the regions).
    """

    def __init__(self, dim: int, class_weights: torch.Tensor, streams: tuple[str, ...], vote_weights: tuple[float, ...],
                 step: float = 0.1, threshold: float = 0.25) -> None:
        super().__init__()
        s = len(streams)
        if len(vote_weights) != s or class_weights.shape[0] != s:
            raise ValueError(f"{s} streams need {s} vote weights and class selectors, got {len(vote_weights)} and {class_weights.shape[0]}")
        if not 0.0 < step <= 0.5 or abs(1.0 / step - round(1.0 / step)) > 1e-6:
            raise ValueError(f"vote step {step}: use 1/n for a whole n >= 2 (0.1, 0.05, 0.25)")
        self.streams, self.step, self.threshold = tuple(streams), float(step), threshold
        self.weight = nn.Parameter(torch.zeros(s, dim))
        self.bias = nn.Parameter(torch.zeros(s))
        self.calib_scale = nn.Parameter(torch.ones(s))
        self.calib_shift = nn.Parameter(torch.zeros(s))
        self.register_buffer("vote_weights", torch.tensor(vote_weights, dtype=torch.float32), persistent=False)
        self.register_buffer("class_weights", class_weights.float(), persistent=False)
        self.register_buffer("is_global", torch.tensor([n == GLOBAL for n in streams], dtype=torch.float32), persistent=False)

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    def stream_means(self, patches: torch.Tensor, soft: torch.Tensor):
        """(stream means [B, S, D], token counts [B, S], union of the regional streams' tokens [B, N] 0/1)."""
        regional = (torch.einsum("bcn,sc->bsn", soft.flatten(2), self.class_weights) >= self.threshold).to(patches.dtype)
        g = self.is_global.view(1, -1, 1)
        members = regional * (1.0 - g) + g  # the global stream: every token
        counts = members.sum(dim=-1)
        means = torch.bmm(members / counts.clamp(min=1.0).unsqueeze(-1), patches)
        union = ((regional * (1.0 - g)).sum(dim=1) > 0).to(patches.dtype)
        return means, counts, union

    def calibrated(self, means: torch.Tensor) -> torch.Tensor:
        """Stream means [B, S, D] -> calibrated stream probabilities [B, S]."""
        z = (means * self.weight).sum(dim=-1) + self.bias
        return torch.sigmoid(self.calib_scale * z + self.calib_shift)

    def vote(self, means: torch.Tensor, counts: torch.Tensor):
        """-> (logit [B]: log-odds of the unrounded weighted mean (what ranks and what the gate compares),
        vote [B]: the discretized weighted vote (the rule's answer), stream probabilities [B, S])."""
        p = self.calibrated(means)
        w = self.vote_weights * (counts > 0).to(p.dtype)  # a stream whose region is missing does not vote
        total = w.sum(dim=-1).clamp(min=1e-6)
        mean = (w * p).sum(dim=-1) / total
        # in whole steps: each stream's rounded level is an integer, the weighted mean a ratio of small integers
        # whose halves are exact; the 1/100-step nudge makes runtimes that divide by multiplying with a reciprocal
        # (or in float16) round those halves up as IEEE division does, and moves no other ratio across a boundary
        n = round(1.0 / self.step)
        levels = torch.floor(p * n + 0.5)
        vote = torch.floor((w * levels).sum(dim=-1) / total + 0.51) / n
        logit = torch.log(mean.clamp(1e-6, 1 - 1e-6)) - torch.log1p(-mean.clamp(1e-6, 1 - 1e-6))
        return logit, vote, p

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """The fit-probe input [B, S, D + 1] (stream means, counts) -> logit [B]."""
        return self.vote(feature[..., :-1], feature[..., -1])[0]


def discretized_vote(p, weights, step: float = 0.1):
    """The NTIRE rule in numpy, as a reference: p [B, S] stream probabilities (NaN: the stream did not vote),
    weights [S] -> [B]: round each to `step`, weighted mean, round again (halves up)."""
    import numpy as np

    p = np.asarray(p, np.float64)
    w = np.where(np.isnan(p), 0.0, np.asarray(weights, np.float64))
    n = round(1.0 / step)
    levels = np.floor(np.nan_to_num(p) * n + 0.5)
    return np.floor((w * levels).sum(-1) / w.sum(-1) + 0.5) / n
