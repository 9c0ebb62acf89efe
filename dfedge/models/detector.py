"""The fused detector: one aligned face crop in, a fake/real logit and its explanation out, as one static graph.

    image [B, 3, 448, 448] float32, RGB, 0..255, NCHW (the 5-point aligned crop, ALIGN_TEMPLATE below)
      parser branch: /255 -> tanh warp (LaPa, constant matrices) -> FaRL -> logits [B, C, 112, 112]
                     -> softmax at 112 -> back to the crop frame and area-pooled to [B, C, g, g] (one constant
                     matrix per axis) -> region membership [B, g*g]
                     (cheaper rungs of the region index, models/ladder.py: lite-head fuses at 28, parser-224
                     feeds a 2x area-downsampled crop and fuses at 56, distilled replaces the whole branch by
                     a head on the DINOv3 patch tokens [B, g*g, D] -> [B, C, g, g])
      DINOv3 branch: exact 2x area downsample to 224 (or 448 as is) -> mean/std -> patch tokens [B, g*g, D]
      head:          masked mean of the region's tokens [B, D] -> linear probe -> logit [B] (models/heads.py and
                     pooling.py: the other heads pool differently: Top-K salience, a calibrated multi-region vote)

Outputs (DetectorOutput): logit [B], probability [B] (= sigmoid(logit), P(fake)), token_mask [B, g, g] (0/1),
region_tokens [B] (the count of token_mask; 0 means the region was not found and the score must not be used),
contributions [B, g, g] (w.x_t / |R| per region token: sum(contributions) + probe bias == logit), streams [B, S]
(each stream's probability: S = 1 and streams == probability but for the ensemble head), feature [B, D] (the
mean of the region's DINOv3 tokens, zeros without region tokens: what a video's temporal head reads per frame,
models/temporal.py; for the region head it is the probe's input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dinov3 import DinoV3
from .distilled import DistilledRegionHead
from .farl import FarlParser
from .heads import feature_dim, head
from .ladder import rung
from .pooling import Tokens, masked_mean_weights, region_mean
from .region import LinearProbe, RegionIndex
from .resample import apply_separable, area_matrix, as_buffer, unwarp_matrix, warp_matrix
from .spec import CROP_SIZE, check_head

# facer's LaPa alignment template (its `_standard_face_pts`: points/256 - 1, mapped with (size - 1)/2) for a
# 448 crop: left eye, right eye, nose tip, left mouth corner, right mouth corner, as (x, y) in pixels of the
# crop, "left" meaning image-left. The similarity transform from detected landmarks to these points makes the
# crop; every bundle carries them in its manifest.
_FACER_TEMPLATE_256 = np.array(
    [[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4], [292.0, 360.4]], dtype=np.float64
)


def align_template(crop_size: int = CROP_SIZE) -> np.ndarray:
    """[5, 2] template points (x, y) for a square crop of `crop_size` pixels."""
    return _FACER_TEMPLATE_256 / 256.0 * (crop_size - 1) / 2.0


ALIGN_TEMPLATE = align_template(CROP_SIZE)

# DINOv3 input normalisation. Rounded to fp16 they move every pixel of the DINOv3 input by the same amount, a bias
# no averaging removes (toy: |dlogit| 0.04 against 0.003 for all weights together), so fp16 exports keep these
# constants, and the ops that apply them, in fp32.
FP32_CONSTANTS = ("dino_scale", "dino_shift")
# The region math that quantizers must leave in float: every op of Detector's own forward (parser softmax, pooling
# to tokens, masked mean, sigmoid) plus these submodules (membership threshold, probe). Exporters name graph nodes
# after the module that made them, so the quantizers' ignored scopes are derived from this, not from node names.
FLOAT_SUBMODULES = ("region_index", "probe")


class DetectorOutput(NamedTuple):
    logit: torch.Tensor  # [B]
    probability: torch.Tensor  # [B]
    token_mask: torch.Tensor  # [B, g, g]
    region_tokens: torch.Tensor  # [B]
    contributions: torch.Tensor  # [B, g, g]
    streams: torch.Tensor  # [B, S]
    feature: torch.Tensor  # [B, D]


@dataclass(frozen=True)
class DetectorConfig:
    head: str = "region"  # models/heads.py: region (the paper) | cls | all | farl-region (ablations) | topk | ensemble
    region: str = "mouth"
    crop_size: int = CROP_SIZE
    region_index: str = "exact"  # exact | lite-head | parser-224 | distilled (models/ladder.py)

    def __post_init__(self) -> None:
        check_head(self.head, self.region_index)


class Detector(nn.Module):
    """`parser` runs the parser rungs (its config says which: input size, fusion size); the distilled rung has no
    parser and a `region_head` instead."""

    def __init__(self, dinov3: DinoV3, parser: FarlParser | None, probe: LinearProbe, cfg: DetectorConfig | None = None,
                 region_head: DistilledRegionHead | None = None) -> None:
        super().__init__()
        cfg = cfg or DetectorConfig()
        self.cfg = cfg
        s, d_in = cfg.crop_size, dinov3.cfg.img_size
        if s % d_in:
            raise ValueError(f"DINOv3 input {d_in} must divide the crop size {s} (224 or 448 for a 448 crop)")
        if rung(cfg.region_index).uses_parser != (parser is not None) or (parser is None) == (region_head is None):
            raise ValueError(f"the '{cfg.region_index}' region index needs "
                             + ("a parser and no region head" if rung(cfg.region_index).uses_parser else "a region head and no parser"))
        width = feature_dim(cfg.head, dinov3.cfg.width, parser.cfg.width if parser is not None else None)
        if probe.in_features != width:
            raise ValueError(f"probe reads {probe.in_features}-wide tokens; the '{cfg.head}' head gives {width}")
        labels = parser.cfg if parser is not None else region_head.cfg
        self.label_set, self.label_names = labels.label_set, labels.label_names
        self.dinov3, self.parser, self.probe = dinov3, parser, probe
        self.region_index = RegionIndex(self.label_set, cfg.region, head=region_head)
        self.grid = dinov3.cfg.grid
        self.downsample = s // d_in
        if region_head is not None:
            if (region_head.cfg.embed_dim, region_head.cfg.grid) != (dinov3.cfg.width, self.grid):
                raise ValueError(f"region head reads {region_head.cfg.embed_dim}-wide tokens on a {region_head.cfg.grid}² grid; "
                                 f"DINOv3 gives {dinov3.cfg.width} on {self.grid}²")
        else:
            self._parser_matrices(parser, s)
        mean, std = torch.tensor(dinov3.cfg.mean), torch.tensor(dinov3.cfg.std)
        self.register_buffer("dino_scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("dino_shift", (-mean / std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def _parser_matrices(self, parser: FarlParser, s: int) -> None:
        p_in, logit_size, wf = parser.cfg.input_size, parser.cfg.logit_size, parser.cfg.warp_factor
        if s % p_in:
            raise ValueError(f"the parser takes {p_in}px inputs, which does not divide the {s}px crop")
        if logit_size % self.grid:
            raise ValueError(f"parser logits ({logit_size}px) do not pool evenly onto the {self.grid}x{self.grid} token grid")
        # crop -> parser frame: exact area downsample to the parser's input (parser-224), then facer's tanh warp.
        to_parser = area_matrix(s, p_in) if p_in != s else None
        if wf > 0:
            to_parser = warp_matrix(p_in, wf) if to_parser is None else warp_matrix(p_in, wf) @ to_parser
        self.warp = to_parser is not None
        if self.warp:
            self.register_buffer("parser_warp", as_buffer(to_parser), persistent=False)  # [p_in, s]
        to_tokens = area_matrix(logit_size, self.grid)
        if wf > 0:
            to_tokens = to_tokens @ unwarp_matrix(logit_size, wf)
        self.register_buffer("to_tokens", as_buffer(to_tokens), persistent=False)  # [g, logit_size]
        # FaRL's own token grid, in the parser's (warped) frame, for the farl-region ablation head.
        self.register_buffer("to_farl_tokens", as_buffer(area_matrix(logit_size, parser.cfg.grid)), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.probe.in_features

    @property
    def region_head(self) -> DistilledRegionHead | None:
        return self.region_index.head

    def parse(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image -> (probabilities on the token grid [B, C, g, g], parser-frame probabilities [B, C, L, L] with L the
        parser's logit size (112 for exact), FaRL's last-block tokens [B, G*G, W])."""
        x = image * (1.0 / 255.0)
        if self.warp:
            x = apply_separable(x, self.parser_warp, self.parser_warp)
        pyramid, farl_tokens = self.parser.backbone(x)
        probs = self.parser.head(pyramid).softmax(dim=1)
        return apply_separable(probs, self.to_tokens, self.to_tokens), probs, farl_tokens

    def embed(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image -> (DINOv3 patch tokens [B, g*g, D], CLS [B, D])."""
        x = F.avg_pool2d(image, self.downsample) if self.downsample > 1 else image
        patches, cls, _ = self.dinov3(x * self.dino_scale + self.dino_shift)
        return patches, cls

    def tokens(self, image: torch.Tensor) -> Tokens:
        """image -> everything a head may read (models/pooling.Tokens)."""
        patches, cls = self.embed(image)
        probs = farl_tokens = None
        if self.region_index.head is not None:  # distilled: the index is read off DINOv3's own tokens
            soft = self.region_index.head(patches)
        else:
            soft, probs, farl_tokens = self.parse(image)
        mask = self.region_index(soft)
        weights, _ = masked_mean_weights(mask)
        return Tokens(patches, cls, mask, weights, probs, farl_tokens, soft)

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image -> (the probe's training input (models/pooling.Pool), token mask [B, g*g] of the tokens the verdict
        rests on, their count [B])."""
        t = self.tokens(image)
        h = head(self.cfg.head)
        mask = h.score(self, t).token_mask
        return h.pool(self, t), mask, mask.sum(dim=1)

    def forward(self, image: torch.Tensor) -> DetectorOutput:
        s = self.cfg.crop_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, s, s):
            raise ValueError(f"expected an aligned crop [B, 3, {s}, {s}], got {list(image.shape)}")
        t = self.tokens(image)
        scored = head(self.cfg.head).score(self, t)
        g = self.grid
        return DetectorOutput(
            logit=scored.logit,
            probability=scored.probability,
            token_mask=scored.token_mask.reshape(-1, g, g),
            region_tokens=scored.token_mask.sum(dim=1),
            contributions=scored.contributions.reshape(-1, g, g),
            streams=scored.streams,
            feature=region_mean(t),
        )
