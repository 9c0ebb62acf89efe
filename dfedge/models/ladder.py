"""The region-index ladder: cheaper ways to decide which DINOv3 tokens are the region, one table.

At full size the FaRL parser is ~88 % of the fused graph (its UPerHead runs 768-channel 3x3 convolutions at
112^2), and all it decides is which of 14x14 tokens are mouth. Each rung is an ordinary static graph with the
detector's outputs; the factory builds it, `dfedge info` counts it, `dfedge region-index-report` measures it
against `exact` on labelled faces.

  exact       the FaRL parser as published: 448 input, UPerHead fused at 112^2 (the reference)
  lite-head   the same weights; the pyramid levels finer than 56^2 area-pooled to it (exactly: a pooled 2x2
              stride-2 transposed conv is a 1x1 conv) and the UPerHead fused at 56^2. No retraining.
  parser-224  the same weights fed an exact 2x area downsample of the crop (224), positional embedding
              resized once at load; pyramid [56, 28, 14, 7], head fused at 56^2
  distilled   no FaRL at run time: a small head on DINOv3's own patch tokens predicts each token's class
              distribution, trained on the exact parser's token soft labels (`dfedge distill-region-head`)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# lite-head fusion size at a 448 crop, measured on toy:val:48 against exact: fused at 56 the mouth masks keep
# IoU 0.93 (83 % of faces identical) for 522 full-size GFLOPs; at 28, IoU 0.63 (46 % identical) for 361. 28 buys
# 1.4x less compute for a mask that is no longer the parser's, and the distilled rung is cheaper still, so 56.
LITE_FUSE_FRACTION = 2  # fuse at (4 x grid) / 2: 56 at 448


@dataclass(frozen=True)
class Rung:
    name: str
    uses_parser: bool
    description: str

    def parser_config(self, cfg):
        """The parser config this rung runs (a models.farl.FarlConfig), from the published one (None-safe only for
        parser rungs). (This module imports no model code: the command line's --region-index choices read RUNGS.)"""
        if self.name == "lite-head":
            return replace(cfg, fuse_size=4 * cfg.grid // LITE_FUSE_FRACTION)
        if self.name == "parser-224":
            return replace(cfg, input_size=cfg.input_size // 2)
        return cfg


RUNGS: dict[str, Rung] = {
    r.name: r
    for r in (
        Rung("exact", True, "FaRL parser as published (448 input, head at 112²): the reference"),
        Rung("lite-head", True, "same weights, 112² pyramid level area-pooled (exactly), head fused at 56²"),
        Rung("parser-224", True, "same weights fed a 224 crop (positional embedding resized at load), head at 56²"),
        Rung("distilled", False, "no FaRL: a small head on DINOv3's patch tokens, distilled from exact"),
    )
}


def rung(name: str) -> Rung:
    if name not in RUNGS:
        raise ValueError(f"unknown region index '{name}' (known: {', '.join(RUNGS)})")
    return RUNGS[name]
