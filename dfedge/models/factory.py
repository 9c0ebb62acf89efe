"""Build a Detector from presets and user-supplied weight files: the one place CLI commands get a model from."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import dinov3 as dinov3_lib
from . import farl as farl_lib
from .checkpoint import CheckpointError, read_weights, sha256_file
from .detector import Detector, DetectorConfig
from .distilled import DistilledRegionHead, RegionHeadConfig, load_region_head
from .heads import feature_dim
from .ladder import rung
from .region import ProbeInfo, load_probe, make_probe
from .spec import BACKBONES, CROP_SIZE, DETECTOR_PRESETS, PINNED, DetectorSpec


WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def shipped_file(preset: str, part: str) -> Path | None:
    """The packaged weight file of a preset's part (dinov3, parser, probe, region_head), or None."""
    if not DETECTOR_PRESETS[preset].shipped:
        return None
    path = WEIGHTS_DIR / f"{preset}_{part}.safetensors"
    return path if path.is_file() else None


def source_record(path: str | Path | None, fallback: str) -> dict:
    """File name and SHA-256 of a weight file (a manifest's provenance), or `fallback` when there is none."""
    if path is None:
        return {"file": None, "sha256": None, "note": fallback}
    path = Path(path)
    return {"file": path.name, "sha256": sha256_file(path)}


def probe_file(spec: DetectorSpec) -> str | Path | None:
    """The probe file a detector of `spec` reads: the user's, else the preset's shipped one when it was fitted for
    the same head and region; None when there is none (then only `random_probe` builds a detector)."""
    if spec.probe:
        return spec.probe
    if not DETECTOR_PRESETS[spec.preset].shipped:
        return None
    for shipped in sorted(WEIGHTS_DIR.glob(f"{spec.preset}_probe*.safetensors")):  # toy_probe, toy_probe-topk, ...
        info = load_probe(shipped).info
        if (info.head, info.region) == (spec.head, spec.region):
            return shipped
    return None


def weight_files(spec: DetectorSpec) -> dict[str, str | Path | None]:
    """part -> the weight file the detector of `spec` is built from (None: seeded random weights)."""
    index = "region_head" if spec.region_index == "distilled" else "parser"
    files = {part: getattr(spec, part) or shipped_file(spec.preset, part) for part in (backbone_part(spec), index)}
    return {**files, "probe": probe_file(spec)}


def backbone_part(spec: DetectorSpec) -> str:
    """The weight part of the backbone the detector of `spec` runs: 'dinov3' (the teacher) or 'student'."""
    return "student" if spec.backbone == "student" else "dinov3"


def weight_sources(spec: DetectorSpec) -> dict:
    """A bundle's `sources`: file name and SHA-256 of each weight file the detector of `spec` is built from."""
    return {part: source_record(f, f"seeded random weights (preset {spec.preset}, seed {spec.seed})")
            for part, f in weight_files(spec).items()}


def random_parts(spec: DetectorSpec) -> list[str]:
    """The parts of the detector of `spec` that are seeded random weights, not a file: outputs say so."""
    return [part for part, f in weight_files(spec).items() if f is None]


def identity(spec: DetectorSpec) -> dict:
    """What makes two detectors the same model for the gate: the SHA-256 of each weight file (or its random-seed
    note), the head, the region and the region-index rung. Recorded in references and bundle manifests."""
    return {"sources": {part: rec["sha256"] or rec["note"] for part, rec in weight_sources(spec).items()},
            "head": spec.head, "region": spec.region, "region_index": spec.region_index, "backbone": spec.backbone}


def dinov3_config(spec: DetectorSpec) -> dinov3_lib.DinoV3Config:
    """The config of the backbone the detector of `spec` runs: the teacher's, or its student's (the preset's student
    shape, with an adapter to the teacher's width so the teacher's probe and region head read its tokens)."""
    preset = DETECTOR_PRESETS[spec.preset]
    teacher = replace(dinov3_lib.PRESETS[preset.dinov3], img_size=spec.dinov3_input)
    if spec.backbone == "teacher":
        return teacher
    return replace(dinov3_lib.PRESETS[preset.student], img_size=spec.dinov3_input, out_dim=teacher.embed_dim, sha256=None)


def parser_config(spec: DetectorSpec) -> farl_lib.FarlConfig:
    """The published parser's config (the rung's is `rung(spec.region_index).parser_config(...)` of it)."""
    cfg = farl_lib.PRESETS[DETECTOR_PRESETS[spec.preset].parser]
    return replace(cfg, label_set=spec.label_set) if spec.label_set else cfg


def region_head_config(spec: DetectorSpec, d_cfg: dinov3_lib.DinoV3Config) -> RegionHeadConfig:
    return RegionHeadConfig(label_set=parser_config(spec).label_set, embed_dim=d_cfg.width, grid=d_cfg.grid)


def build_region_head(spec: DetectorSpec, d_cfg: dinov3_lib.DinoV3Config) -> DistilledRegionHead:
    """The distilled rung's head: the given or shipped file (checked against the DINOv3 it reads), else seeded
    random weights (tiny/full without a file: for shapes, FLOPs and export tests only)."""
    path = spec.region_head or shipped_file(spec.preset, "region_head")
    if not path:
        return DistilledRegionHead(region_head_config(spec, d_cfg)).eval()
    head, meta = load_region_head(path, embed_dim=d_cfg.width, grid=d_cfg.grid, sha256=spec.region_head_sha256)
    if spec.label_set and head.cfg.label_set != spec.label_set:
        raise CheckpointError(f"{path}: head predicts '{head.cfg.label_set}' classes, not '{spec.label_set}'")
    recorded = meta.get("dinov3_sha256")
    teacher = teacher_sha256(spec)
    if teacher and recorded and teacher != recorded:
        raise CheckpointError(f"{path}: distilled on DINOv3 weights {recorded[:12]}…, not {teacher[:12]}… (the "
                              + ("student's teacher" if spec.backbone == "student" else str(spec.dinov3)) + "); distill a head for them")
    return head


def teacher_sha256(spec: DetectorSpec) -> str | None:
    """SHA-256 of the teacher DINOv3 weights the detector's tokens stand for: the --dinov3 file, or the one a
    student records it was distilled from (None when neither is known)."""
    if spec.backbone == "student":
        path = spec.student or shipped_file(spec.preset, "student")
        recorded = read_weights(path)[1].get("teacher_sha256") if path else None
        if spec.dinov3 and recorded and sha256_file(spec.dinov3) != recorded:
            raise CheckpointError(f"{path}: distilled from DINOv3 weights {recorded[:12]}…, not {spec.dinov3}")
        return recorded or None
    return sha256_file(spec.dinov3) if spec.dinov3 else None


def random_probe(dim: int, spec: DetectorSpec, label_set: str) -> torch.nn.Module:
    """A seeded random probe of the spec's head (its default shape): tests, shapes and timing only."""
    probe = make_probe(spec.head, dim, ProbeInfo(head=spec.head, region=spec.region, label_set=label_set,
                                                 fitted_on="random (seeded)"))
    with torch.no_grad():
        for name, p in probe.named_parameters():
            if name in ("weight", "salience_weight"):
                p.normal_(0.0, p.shape[-1] ** -0.5)
    return probe


def build_detector(spec: DetectorSpec | None = None) -> Detector:
    spec = spec or DetectorSpec()
    torch.manual_seed(spec.seed)
    d_cfg = dinov3_config(spec)
    for part in PINNED:  # a pin with nothing to pin is a mistake, not a pass
        if getattr(spec, f"{part}_sha256") and not weight_files(spec).get(part):
            raise ValueError(f"--{part.replace('_', '-')}-sha256 given, but this detector reads no {part.replace('_', ' ')} file")
    part = backbone_part(spec)
    dinov3_file = getattr(spec, part) or shipped_file(spec.preset, part)
    if dinov3_file:
        backbone = dinov3_lib.load_dinov3(dinov3_file, d_cfg, sha256=getattr(spec, f"{part}_sha256"), img_size=spec.dinov3_input)
        if backbone.cfg.width != d_cfg.width:
            raise CheckpointError(f"{dinov3_file}: gives {backbone.cfg.width}-wide tokens; the {spec.preset} teacher's are {d_cfg.width}")
        if spec.backbone == "student":
            teacher_sha256(spec)  # a student of other teacher weights than --dinov3 is refused
    else:
        backbone = dinov3_lib.DinoV3(d_cfg)
    parser, region_head = build_region_index(spec, d_cfg)
    dim = feature_dim(spec.head, backbone.cfg.width, parser.cfg.width if parser is not None else None)
    path = probe_file(spec)
    if path is None:
        if not (spec.random_probe or dinov3_file is None):  # (no DINOv3 file: the whole model is random, by request)
            raise ValueError(f"no probe for the '{spec.head}' head on the '{spec.region}' region: pass --probe (dfedge "
                             "fit-probe writes one), or --random-probe to score with seeded random weights (tests only)")
        label_set = parser.cfg.label_set if parser is not None else region_head.cfg.label_set
        probe, region = random_probe(dim, spec, label_set), spec.region
    else:
        probe = load_probe(path, dim=None, sha256=spec.probe_sha256)
        if probe.info.head != spec.head:
            raise ValueError(f"{path}: probe was fitted for the '{probe.info.head}' head, not '{spec.head}'")
        if probe.in_features != dim:
            raise ValueError(f"{path}: probe has {probe.in_features} inputs but the '{spec.head}' head gives {dim}")
        region = probe.info.region
    cfg = DetectorConfig(head=spec.head, region=region, region_index=spec.region_index)
    detector = Detector(backbone, parser, probe, cfg, region_head=region_head).eval()
    detector.random_parts = random_parts(spec)  # what outputs must say is not a trained model
    return detector


def build_region_index(spec: DetectorSpec, d_cfg: dinov3_lib.DinoV3Config) -> tuple[farl_lib.FarlParser | None, DistilledRegionHead | None]:
    """(parser, None) for the parser rungs, the rung's variant derived from the published weights once at load;
    (None, head) for the distilled rung."""
    r = rung(spec.region_index)
    if not r.uses_parser:
        return None, build_region_head(spec, d_cfg)
    parser_file = spec.parser or shipped_file(spec.preset, "parser")
    if parser_file:
        parser = farl_lib.load_parser(parser_file, label_set=spec.label_set, sha256=spec.parser_sha256, input_size=CROP_SIZE,
                                      trust_torchscript=spec.trust_torchscript, heads=spec.parser_heads)
    else:
        parser = farl_lib.FarlParser(parser_config(spec))
    cfg = r.parser_config(parser.cfg)
    return (parser if cfg == parser.cfg else farl_lib.derive_parser(parser, cfg)), None


def meta_detector(spec: DetectorSpec | None = None) -> Detector:
    """The detector's structure with no storage (for counting FLOPs and parameters of full-size graphs)."""
    spec = spec or DetectorSpec()
    r = rung(spec.region_index)
    with torch.device("meta"):
        d_cfg = dinov3_config(spec)
        backbone = dinov3_lib.DinoV3(d_cfg)
        parser = farl_lib.FarlParser(r.parser_config(parser_config(spec))) if r.uses_parser else None
        head = None if r.uses_parser else DistilledRegionHead(region_head_config(spec, d_cfg))
        dim = feature_dim(spec.head, backbone.cfg.width, parser.cfg.width if parser is not None else None)
        label_set = parser.cfg.label_set if parser is not None else head.cfg.label_set
        probe = make_probe(spec.head, dim, ProbeInfo(head=spec.head, region=spec.region, label_set=label_set))
    cfg = DetectorConfig(head=spec.head, region=spec.region, region_index=spec.region_index)
    return Detector(backbone, parser, probe, cfg, region_head=head).to("meta")


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


COMPONENTS = {
    "parser backbone": ("parser.backbone",),
    "parser head": ("parser.head",),
    "dinov3": ("dinov3",),
    "region head": ("region_index.head",),  # the distilled rung's head on DINOv3 tokens
}


def gflops(detector: Detector) -> dict[str, float]:
    """GFLOPs (2 per multiply-add, torch.utils.flop_counter) of one face, per component and in total.

    Runs on meta tensors when the detector is a meta model, so full-size graphs cost no compute.
    """
    device = next(detector.parameters()).device
    image = torch.zeros(1, 3, detector.cfg.crop_size, detector.cfg.crop_size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        detector(image)
    per_module = counter.get_flop_counts()
    total = counter.get_total_flops()
    root = type(detector).__name__
    out = {}
    for name, prefixes in COMPONENTS.items():
        out[name] = sum(sum(per_module.get(f"{root}.{p}", {}).values()) for p in prefixes) / 1e9
    out["region + resampling"] = total / 1e9 - sum(out.values())
    out["total"] = total / 1e9
    return out


@functools.lru_cache(maxsize=None)
def spec_gflops(spec: DetectorSpec) -> dict[str, float]:
    """gflops() of `spec`'s graph on meta tensors, counted once per process (about a second per full-size count)."""
    return gflops(meta_detector(spec))


def parameter_counts(detector: Detector) -> dict[str, int]:
    parser, head = detector.parser, detector.region_head
    return {
        "dinov3": count_parameters(detector.dinov3),
        "parser backbone": count_parameters(parser.backbone) if parser is not None else 0,
        "parser head": count_parameters(parser.head) if parser is not None else 0,
        "region head": count_parameters(head) if head is not None else 0,
        "probe": count_parameters(detector.probe),
        "total": count_parameters(detector),
    }


def describe(spec: DetectorSpec) -> list[tuple[str, str, int, float]]:
    """(component, config, parameters, GFLOPs per face) of the fused graph of `spec`, then its total; counted on
    meta tensors (no weights, no compute), so the full-size graph costs nothing."""
    det = meta_detector(spec)
    params, flops = parameter_counts(det), spec_gflops(spec)
    d, p = det.dinov3.cfg, det.parser.cfg
    rows = [
        ("dinov3", f"D={d.embed_dim} depth={d.depth} heads={d.num_heads} ffn={d.ffn_layer} in={d.img_size} grid={d.grid}"),
        ("parser backbone", f"ViT W={p.width} layers={p.layers} heads={p.heads} in={p.input_size} taps={list(p.output_indices)}"),
        ("parser head", f"UPerHead C={p.head_channels} classes={p.num_classes} ({p.label_set}) logits {p.logit_size}²"),
        ("region + resampling", f"head={det.cfg.head} region={det.cfg.region} warp={p.warp_factor}"),
    ]
    out = [(c, desc, params.get(c, params["probe"] if c.startswith("region") else 0), flops[c]) for c, desc in rows]
    return out + [("total", "", params["total"], flops["total"])]


LADDER_PARTS = ("parser backbone", "parser head", "dinov3", "region head", "region + resampling", "total")


def ladder_gflops(spec: DetectorSpec, rungs: list[str]) -> dict[str, dict[str, float]]:
    """GFLOPs per component (LADDER_PARTS) of `spec` at each region-index rung, on meta tensors."""
    return {r: dict(spec_gflops(replace(spec, region_index=r, region_head=None))) for r in rungs}


BACKBONE_COLUMNS = ("backbone", "region index", "backbone GFLOPs", "total GFLOPs", "× fewer than teacher exact")


def backbone_grid(spec: DetectorSpec, rungs: list[str]) -> list[tuple[str, ...]]:
    """Rows of BACKBONE_COLUMNS: GFLOPs per face of every backbone × region-index rung of `spec`'s preset."""
    exact = spec_gflops(replace(spec, backbone="teacher", region_index="exact", region_head=None))["total"]
    return [(b, r, f"{f['dinov3']:,.2f}", f"{f['total']:,.2f}", f"{exact / f['total']:.1f}×")
            for b in BACKBONES for r, f in ladder_gflops(replace(spec, backbone=b, student=None), rungs).items()]
