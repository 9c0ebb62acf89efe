"""What decides which detector is built, as plain values: the presets, the backbones, `DetectorSpec` and its checks
(pins, head and region-index rung, region, input size). Without torch: the command line's --preset and --backbone
choices and help read these tables, and a spec is checked before any model code is imported; models/factory.py
builds the detector a spec names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..device.errors import shown
from .heads import head as head_info
from .labels import REGIONS
from .ladder import rung

CROP_SIZE = 448  # the aligned crop's side, in pixels: the detector's input (models/detector.py)
PIN = re.compile(r"^[0-9a-f]{64}$")


def check_pin(value: str | None, what: str = "SHA-256 pin") -> str | None:
    """A pin is a full SHA-256, 64 hex digits (a prefix pins nothing a forger cannot match); None: no pin."""
    if value is None:
        return None
    pin = str(value).strip().lower()
    if not PIN.match(pin):
        raise ValueError(f"{what} {shown(repr(value))} is not a SHA-256: give all 64 hex digits (sha256sum FILE)")
    return pin


def check_head(name: str, region_index: str) -> None:
    """A known head and a known region-index rung that computes the tokens the head reads."""
    uses_parser = rung(region_index).uses_parser
    if head_info(name).reads == "farl" and not uses_parser:
        raise ValueError(f"the {name} head reads FaRL tokens; the '{region_index}' region index runs no FaRL")


@dataclass(frozen=True)
class DetectorPreset:
    dinov3: str  # a key of dinov3.PRESETS
    parser: str  # a key of farl.PRESETS
    description: str
    shipped: bool = False  # weights ship in dfedge/weights as toy_{dinov3,parser,probe,region_head,student}.safetensors
    student: str = "vits16"  # a key of dinov3.PRESETS: the shape of --backbone student (distill-backbone)


DETECTOR_PRESETS: dict[str, DetectorPreset] = {
    "toy": DetectorPreset("toy", "toy", "the toy world: tiny real architectures, trained, shipped (the default)", True,
                          "toy-student"),
    "full": DetectorPreset("vitl16", "farl-b-lapa", "DINOv3 ViT-L/16 + FaRL ViT-B/16 LaPa parser (the paper's model)"),
    "tiny": DetectorPreset("tiny", "tiny", "the same architectures at test size, seeded random weights", student="tiny-student"),
}
BACKBONES = ("teacher", "student")  # DINOv3 as published, or the smaller ViT distilled from it (distill-backbone)


@dataclass(frozen=True)
class DetectorSpec:
    """Everything that decides which detector is built. Paths override the preset's random weights."""

    preset: str = "toy"
    dinov3: str | None = None
    parser: str | None = None
    probe: str | None = None
    head: str = "region"
    region: str | None = None  # None: the head's default (mouth; all for topk, face for the ensemble)
    label_set: str | None = None
    dinov3_input: int = 224
    dinov3_sha256: str | None = None
    parser_sha256: str | None = None
    parser_heads: int | None = None  # the parser's attention heads, for a file that records none (--parser-heads)
    seed: int = 0
    region_index: str = "exact"  # exact | lite-head | parser-224 | distilled (models/ladder.py)
    region_head: str | None = None  # the distilled rung's head (distill-region-head); toy ships one
    probe_sha256: str | None = None
    region_head_sha256: str | None = None  # pins: full SHA-256s of the files used (given or shipped)
    trust_torchscript: bool = False  # read a TorchScript parser with torch.jit.load (runs its code)
    random_probe: bool = False  # no probe for this head and region: score with a seeded random one (said in outputs)
    backbone: str = "teacher"  # teacher | student (BACKBONES)
    student: str | None = None  # the student's file (distill-backbone); toy ships one
    student_sha256: str | None = None

    def __post_init__(self) -> None:
        for part in PINNED:
            check_pin(getattr(self, f"{part}_sha256"), f"--{part.replace('_', '-')}-sha256")
        if self.preset not in DETECTOR_PRESETS:
            raise ValueError(f"unknown preset {shown(repr(self.preset))} (known: {', '.join(DETECTOR_PRESETS)})")
        check_head(self.head, self.region_index)
        if self.region is None:
            object.__setattr__(self, "region", head_info(self.head).default_region)
        if self.region not in REGIONS:
            raise ValueError(f"unknown region {shown(repr(self.region))} (known: {', '.join(REGIONS)})")
        if self.region_head and self.region_index != "distilled":
            raise ValueError(f"a region head file is read by the distilled region index, not by {shown(repr(self.region_index))}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {shown(repr(self.backbone))} (known: {', '.join(BACKBONES)})")
        if self.student and self.backbone != "student":
            raise ValueError("a student file is read by --backbone student only")
        if self.dinov3_input not in (CROP_SIZE // 2, CROP_SIZE):
            raise ValueError(f"DINOv3 input must be {CROP_SIZE // 2} or {CROP_SIZE}, got {self.dinov3_input}")


PINNED = ("dinov3", "parser", "probe", "region_head", "student")  # the weight files a DetectorSpec can pin


def require_weights(spec: DetectorSpec, random_weights: bool = False) -> None:
    """A preset that ships no weights needs the user's files, unless seeded random weights are asked for (to size
    and time a graph): a full-size detector with random weights must never be scored by mistake."""
    if DETECTOR_PRESETS[spec.preset].shipped or random_weights:
        return
    index, flag = ("region_head", "--region-head") if spec.region_index == "distilled" else ("parser", "--parser")
    backbone, bflag = ("student", "--student") if spec.backbone == "student" else ("dinov3", "--dinov3")
    if not (getattr(spec, backbone) and getattr(spec, index)):
        raise ValueError(f"preset '{spec.preset}' has no weights: pass {bflag} and {flag}, or --random-weights")
