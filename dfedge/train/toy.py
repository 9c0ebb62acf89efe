"""Train the toy world's tiny models from a seed: the FaRL-architecture parser (on exact toy label maps) and
the DINOv3-architecture backbone. `python -m dfedge.train.toy` rebuilds the shipped weights.

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

from ..data.blend import region_mask, self_blend
from ..data.synthetic import SPLITS, render_face
from ..models.checkpoint import save_safetensors
from ..models.detector import CROP_SIZE, Detector
from ..models.dinov3 import DinoV3, DinoV3Config, to_official
from ..models.dinov3 import PRESETS as DINOV3_PRESETS
from ..models.dinov3 import config_json as dinov3_config_json
from ..models.farl import PRESETS as FARL_PRESETS
from ..models.farl import FarlConfig, FarlParser, config_json
from ..models.region import LinearProbe
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
    # Small parts (lips, inner mouth, eyes) cover ~1 % of pixels each: weight classes by 1/sqrt(frequency).
    _, probe_target = parser_batch(list(range(10_000, 10_064)), "parser", warp, target_warp, cfg.num_classes)
    freq = probe_target.mean(dim=(0, 2, 3)).clamp(min=1e-4)
    class_weight = (freq.rsqrt() / freq.rsqrt().mean()).view(1, -1, 1, 1)
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


# A seeded random ViT's tokens do not separate self-blended mouths from real ones (measured: val AUC 0.51 for
# the mouth probe), so the toy backbone gets a short warm-up that makes its patch tokens sensitive to local
# blending artefacts: a linear per-token head predicts how much of each token was blended, on faces blended in
# a random region (eyes, brows, nose or mouth) or not at all. The CLS token is never supervised, and the
# probe's labels (mouth fakes) are never used.
WARMUP_REGIONS = ("mouth", "eyes", "brows", "nose")
POS_WEIGHT = torch.tensor(10.0)


def backbone_batch(indices: list[int], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [2B, 3, 448, 448] 0..255, blended fraction per token [2B, grid*grid]).

    Each face comes twice, as itself (nothing blended) and blended in a random region: the same positions carry
    both answers, so only the blending artefacts themselves, not where faces have parts, predict the target.
    """
    images, targets = [], []
    for i in indices:
        face = render_face(SPLITS["backbone"], i)
        rng = np.random.default_rng([SPLITS["backbone"], i, 1])
        region = WARMUP_REGIONS[int(rng.integers(len(WARMUP_REGIONS)))]
        fake, blend = self_blend(face.image, region_mask(face.labels, region), rng)
        images += [face.image, fake]
        targets += [np.zeros_like(blend), blend]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    cell = x.shape[-1] // grid
    y = F.avg_pool2d(torch.from_numpy(np.stack(targets))[:, None], cell).flatten(1)
    return x, y


def warmup_dinov3(
    cfg: DinoV3Config = TOY_DINOV3, steps: int = 250, batch: int = 12, lr: float = 1e-3, seed: int = 0,
    log: Callable[[str], None] = print,
) -> DinoV3:
    torch.manual_seed(seed)
    model = DinoV3(cfg).train()
    head = torch.nn.Linear(cfg.embed_dim, 1)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    down = CROP_SIZE // cfg.img_size
    start = time.time()
    for step in range(steps):
        x, target = backbone_batch(list(range(step * batch, (step + 1) * batch)), cfg.grid)
        x = F.avg_pool2d(x, down) if down > 1 else x
        patches, _, _ = model((x / 255.0 - mean) / std)
        # Blended tokens are a few percent of all tokens: weight them up so "nothing is blended" is not a minimum.
        loss = F.binary_cross_entropy_with_logits(head(patches)[..., 0], (target >= 0.2).float(), pos_weight=POS_WEIGHT)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == steps - 1:
            log(f"backbone step {step:4d}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
    return model.eval()


def save_parser(parser: FarlParser, path: Path, provenance: dict) -> None:
    save_safetensors(path, parser.state_dict(), {
        "dfedge_parser_config": config_json(parser.cfg),
        "label_names": list(parser.cfg.label_names),
        "provenance": provenance,
    })


def save_dinov3(model: DinoV3, path: Path, provenance: dict) -> None:
    save_safetensors(path, to_official(model), {"dfedge_dinov3_config": dinov3_config_json(model.cfg), "provenance": provenance})


def build_toy_weights(
    out_dir: Path = WEIGHTS_DIR, parser_steps: int = 400, backbone_steps: int = 250, log: Callable[[str], None] = print
) -> dict:
    """Train/seed the toy models and write them to `out_dir`. Deterministic for a fixed thread count."""
    torch.set_num_threads(2)
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {"script": "python -m dfedge.train.toy", "torch": torch.__version__, "threads": 2}
    parser = train_parser(steps=parser_steps, log=log)
    save_parser(parser, out_dir / "toy_parser.safetensors", dict(provenance, parser_steps=parser_steps))
    dinov3 = warmup_dinov3(steps=backbone_steps, log=log)
    save_dinov3(dinov3, out_dir / "toy_dinov3.safetensors", dict(provenance, backbone_steps=backbone_steps))
    return {"parser": str(out_dir / "toy_parser.safetensors"), "dinov3": str(out_dir / "toy_dinov3.safetensors")}


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--parser-steps", type=int, default=400)
    args = ap.parse_args()
    print(build_toy_weights(args.out, args.parser_steps))
