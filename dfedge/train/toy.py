"""Make the toy world's tiny models from a seed: the FaRL-architecture parser (trained on exact toy label maps),
the DINOv3-architecture backbone (seeded) and the mouth probe (fit-probe's own code on the "train" split).
`python -m dfedge.train.toy` rebuilds the shipped weights in dfedge/weights.

The parser learns in its own input frame: toy crops go through the same constant tanh warp the detector
applies, and the targets are the exact label maps, area-pooled to the 112^2 logit grid and warped the same way
(soft targets, so boundaries are learned as fractions, exactly what the token pooling later averages).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthetic import SPLITS, render_face
from ..models.checkpoint import save_safetensors
from ..models.detector import Detector
from ..models.dinov3 import DinoV3, DinoV3Config, to_official
from ..models.dinov3 import PRESETS as DINOV3_PRESETS
from ..models.dinov3 import config_json as dinov3_config_json
from ..models.farl import PRESETS as FARL_PRESETS
from ..models.farl import FarlConfig, FarlParser, config_json
from ..models.resample import apply_separable, as_buffer, warp_matrix

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

# The toy world's architectures: the real ones at toy size (FaRL patch 16 at 448, DINOv3 patch 16 at 224).
TOY_PARSER = FARL_PRESETS["toy"]
TOY_DINOV3 = DINOV3_PRESETS["toy"]


def one_hot_labels(labels: np.ndarray, classes: int) -> torch.Tensor:
    """uint8 [B, H, W] -> float32 [B, C, H, W]."""
    return F.one_hot(torch.from_numpy(labels).long(), classes).permute(0, 3, 1, 2).float()


def token_truth(labels: np.ndarray, detector: Detector) -> torch.Tensor:
    """Ground-truth region membership [B, g*g]: exact label maps area-pooled onto the token grid, same rule."""
    onehot = one_hot_labels(labels, detector.parser.cfg.num_classes)
    soft = F.avg_pool2d(onehot, detector.cfg.crop_size // detector.grid)
    return detector.region_index(soft)


def parser_batch(indices: list[int], split: str, warp: torch.Tensor | None, target_warp: torch.Tensor | None, classes: int):
    """(parser inputs [B, 3, 448, 448] in [0, 1], in the parser's frame; soft targets [B, C, 112, 112])."""
    faces = [render_face(SPLITS[split], i) for i in indices]
    x = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2).float() / 255.0
    target = F.avg_pool2d(one_hot_labels(np.stack([f.labels for f in faces]), classes), 4)
    if warp is not None:
        x = apply_separable(x, warp, warp)
        target = apply_separable(target, target_warp, target_warp)
        target = target / target.sum(dim=1, keepdim=True).clamp(min=1e-6)  # the warp's zero padding never bites here
    return x, target


def train_parser(
    cfg: FarlConfig = TOY_PARSER, steps: int = 400, batch: int = 8, lr: float = 2e-3, seed: int = 0,
    log: Callable[[str], None] = print,
) -> FarlParser:
    torch.manual_seed(seed)
    parser = FarlParser(cfg).train()
    warp = as_buffer(warp_matrix(cfg.input_size, cfg.warp_factor)) if cfg.warp_factor > 0 else None
    target_warp = as_buffer(warp_matrix(cfg.logit_size, cfg.warp_factor)) if cfg.warp_factor > 0 else None
    # Small parts (lips, inner mouth, eyes) cover ~1 % of pixels each: weight classes by frequency^-1/4. (At
    # frequency^-1/2 the parser over-states the mouth by ~0.1 of probability on every token: measured.)
    _, probe_target = parser_batch(list(range(10_000, 10_064)), "parser", warp, target_warp, cfg.num_classes)
    freq = probe_target.mean(dim=(0, 2, 3)).clamp(min=1e-4)
    w = freq.pow(-0.25)
    class_weight = (w / w.mean()).view(1, -1, 1, 1)
    opt = torch.optim.AdamW(parser.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.time()
    for step in range(steps):
        x, target = parser_batch(list(range(step * batch, (step + 1) * batch)), "parser", warp, target_warp, cfg.num_classes)
        logits = parser(x)
        loss = -(class_weight * target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == steps - 1:
            log(f"parser step {step:4d}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
    return parser.eval()


def mouth_iou(detector: Detector, split: str = "val", count: int = 64, batch: int = 16) -> float:
    """Token-level IoU of the detector's region mask against the ground truth, pooled over `count` faces."""
    inter = union = 0.0
    with torch.no_grad():
        for start in range(0, count, batch):
            faces = [render_face(SPLITS[split], i) for i in range(start, min(count, start + batch))]
            image = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2).float()
            soft, _, _ = detector.parse(image)
            pred = detector.region_index(soft).bool()
            truth = token_truth(np.stack([f.labels for f in faces]), detector).bool()
            inter += (pred & truth).sum().item()
            union += (pred | truth).sum().item()
    return inter / max(union, 1.0)


def seeded_dinov3(cfg: DinoV3Config = TOY_DINOV3, seed: int = 0) -> DinoV3:
    """The toy backbone: DINOv3's architecture with seeded random weights. Its tokens are random features of
    their patches, which is enough for the toy generator's mouth signature (see data/synthetic.py)."""
    torch.manual_seed(seed)
    return DinoV3(cfg).eval()


def save_parser(parser: FarlParser, path: Path, provenance: dict) -> None:
    save_safetensors(path, parser.state_dict(), {
        "dfedge_parser_config": config_json(parser.cfg),
        "label_names": list(parser.cfg.label_names),
        "provenance": provenance,
    })


def save_dinov3(model: DinoV3, path: Path, provenance: dict) -> None:
    save_safetensors(path, to_official(model), {"dfedge_dinov3_config": dinov3_config_json(model.cfg), "provenance": provenance})


def build_toy_weights(out_dir: Path = WEIGHTS_DIR, parser_steps: int = 400, log: Callable[[str], None] = print) -> dict:
    """Train/seed the toy models and write them to `out_dir`. Deterministic for a fixed thread count."""
    torch.set_num_threads(2)
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {"script": "python -m dfedge.train.toy", "torch": torch.__version__, "threads": 2}
    parser = train_parser(steps=parser_steps, log=log)
    save_parser(parser, out_dir / "toy_parser.safetensors", dict(provenance, parser_steps=parser_steps))
    dinov3 = seeded_dinov3()
    save_dinov3(dinov3, out_dir / "toy_dinov3.safetensors", dict(provenance, init="seeded random, seed 0"))
    files = {part: out_dir / f"toy_{part}.safetensors" for part in ("dinov3", "parser", "probe")}

    from ..data.sources import ToySet
    from ..models.factory import DetectorSpec, build_detector
    from ..models.region import save_probe
    from .probe import extract_features, fit_probe, probe_auc

    spec = DetectorSpec(preset="tiny", dinov3=str(files["dinov3"]), parser=str(files["parser"]), random_probe=True)  # (features)
    detector = build_detector(spec)
    log(f"mouth IoU on toy:val (token level): {mouth_iou(detector, 'val', 64):.3f}")
    train_set = ToySet("train", PROBE_TRAIN_COUNT)
    probe, report = fit_probe(extract_features(detector, train_set), "region", "mouth", "lapa", "eer", train_set.description)
    val_auc = probe_auc(probe, extract_features(detector, ToySet("val", 400)))
    log(f"mouth probe: train AUC {report.train_auc:.3f}, toy:val AUC {val_auc:.3f}, threshold {report.threshold:.3f}")
    save_probe(probe, files["probe"])
    return {k: str(v) for k, v in files.items()}


PROBE_TRAIN_COUNT = 800


def build_toy_head_probes(out_dir: Path = WEIGHTS_DIR, log: Callable[[str], None] = print) -> dict:
    """The shipped toy probes of the topk head (every token) and the ensemble, fitted by fit-probe's code on the
    multi-region toy world (fakes manipulated in the mouth, eyes, nose or whole face): toy_probe-HEAD.safetensors."""
    from ..data.sources import ToySet
    from ..models.factory import DetectorSpec, build_detector
    from ..models.region import save_probe
    from .probe import extract_features, fit_probe, probe_auc

    files = {}
    for head in ("topk", "ensemble"):
        detector = build_detector(DetectorSpec(head=head, random_probe=True))
        train_set = ToySet("train", PROBE_TRAIN_COUNT, "mixed")
        probe, report = fit_probe(extract_features(detector, train_set), head, detector.cfg.region, "lapa", "eer",
                                  train_set.description)
        val_auc = probe_auc(probe, extract_features(detector, ToySet("val", 400, "mixed")))
        log(f"{head} probe: train AUC {report.train_auc:.3f}, toy:val:400:mixed AUC {val_auc:.3f}")
        files[head] = out_dir / f"toy_probe-{head}.safetensors"
        save_probe(probe, files[head])
    return {k: str(v) for k, v in files.items()}


TEMPORAL_TRAIN_CLIPS, TEMPORAL_VAL_CLIPS = 320, 160


def build_toy_temporal(out_dir: Path = WEIGHTS_DIR, log: Callable[[str], None] = print) -> str:
    """The shipped toy temporal head (SDR, every ingredient on): fit-temporal's own code on toyvideo:train:320,
    judged on toyvideo:val:160 against the frame mean: toy_temporal.safetensors."""
    from ..models.factory import DetectorSpec
    from .temporal import TemporalSettings, fit_from_sets

    path = out_dir / "toy_temporal.safetensors"
    rows = fit_from_sets(DetectorSpec(), f"toyvideo:train:{TEMPORAL_TRAIN_CLIPS}", f"toyvideo:val:{TEMPORAL_VAL_CLIPS}",
                         TemporalSettings(), path, log=log)
    for row in rows:
        log(" | ".join(row))
    return str(path)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--parser-steps", type=int, default=400)
    ap.add_argument("--heads", action="store_true", help="only the topk and ensemble probes, on the shipped models")
    ap.add_argument("--temporal", action="store_true", help="only the temporal head (SDR), on the shipped models")
    args = ap.parse_args()
    if args.temporal:
        print(build_toy_temporal(args.out))
    else:
        print(build_toy_head_probes(args.out) if args.heads else build_toy_weights(args.out, args.parser_steps))
