"""distill-region-head: train the distilled rung's head (models/distilled.py) on the exact parser's token-level
soft labels. No human labels: any folder of aligned face crops works.

    crops -> exact detector: DINOv3 patch tokens [N, g*g, D] (inputs) and the parser's token soft map
             [N, C, g, g] (targets, the same map the exact rung thresholds)
          -> head trained with soft cross-entropy, per-token prior initialised to the mean target's log
          -> agreement of the region masks with exact on held-out crops

`python -m dfedge.train.distill` rebuilds the toy head shipped in dfedge/weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import IMAGE_SUFFIXES, read_crop, to_tensor
from ..eval.metrics import mask_agreement
from ..models.checkpoint import save_safetensors, sha256_file
from ..models.writing import atomic_write
from ..models.detector import Detector
from ..models.distilled import CONFIG_KEY, DistilledRegionHead, RegionHeadConfig, config_json

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST_FORMAT = "dfedge-region-head/1"


@dataclass(frozen=True)
class DistillSettings:
    steps: int = 1500
    batch: int = 64  # faces per step (every token of each)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    hidden: int = 256
    held_out: float = 0.1  # share of faces kept for the agreement check
    seed: int = 0


@dataclass
class TokenSet:
    tokens: torch.Tensor  # [N, g*g, D] DINOv3 patch tokens
    soft: torch.Tensor  # [N, g*g, C] exact parser's class distribution per token
    description: str


def face_images(spec: str) -> tuple[Iterator[np.ndarray], int, str]:
    """(uint8 [448, 448, 3] crops, count, description) of `toy[:N]` (toy world, train split) or a folder (searched
    recursively for images; labels, if any, are ignored)."""
    if spec == "toy" or spec.startswith("toy:"):
        from ..data.sources import ToySet

        parts = spec.split(":")
        try:
            count = int(parts[-1]) if len(parts) > 1 else 1000
        except ValueError:
            raise ValueError(f"'{spec}': use toy or toy:N") from None
        data = ToySet("train", count)
        return (data[i].image for i in range(count)), count, f"toy:train:{count} (images only)"
    root = Path(spec)
    if not root.is_dir():
        raise ValueError(f"{spec}: no such folder (or use toy, toy:N)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{spec}: no images ({', '.join(IMAGE_SUFFIXES)}) under this folder")
    return (read_crop(p) for p in files), len(files), f"{root} ({len(files)} crops)"


def collect(exact: Detector, images: Iterator[np.ndarray], count: int, description: str, batch: int = 8,
            progress: Callable[[int, int], None] | None = None) -> TokenSet:
    """Run the exact detector once over the crops: DINOv3 tokens and the parser's token soft map."""
    if exact.parser is None:
        raise ValueError("distillation needs the exact parser as teacher (region index 'exact')")
    tokens, soft, done, chunk = [], [], 0, []
    with torch.no_grad():
        for image in images:
            chunk.append(image)
            if len(chunk) == batch or done + len(chunk) == count:
                x = to_tensor(np.stack(chunk))
                patches, _ = exact.embed(x)
                s, _, _ = exact.parse(x)
                tokens.append(patches)
                soft.append(s.flatten(2).transpose(1, 2))
                done += len(chunk)
                chunk = []
                if progress:
                    progress(done, count)
    return TokenSet(torch.cat(tokens), torch.cat(soft), description)


def region_masks(soft: torch.Tensor, exact: Detector) -> np.ndarray:
    """[N, g*g, C] class distributions -> bool [N, g, g] region masks by the detector's membership rule."""
    g = exact.grid
    return exact.region_index(soft.transpose(1, 2).reshape(len(soft), -1, g, g)).reshape(-1, g, g).numpy() > 0.5


def train_head(data: TokenSet, label_set: str, settings: DistillSettings = DistillSettings(),
               log: Callable[[str], None] = print) -> tuple[DistilledRegionHead, torch.Tensor]:
    """Fit on `data`; returns (head, indices of the held-out faces)."""
    n, tokens_per_face, dim = data.tokens.shape
    grid = int(round(math.sqrt(tokens_per_face)))
    gen = torch.Generator().manual_seed(settings.seed)
    held, train = held_out_split(n, settings.held_out, gen)
    torch.manual_seed(settings.seed)
    head = DistilledRegionHead(RegionHeadConfig(label_set=label_set, embed_dim=dim, grid=grid, hidden=settings.hidden))
    with torch.no_grad():  # start from where each token's class usually is; the MLP learns the deviations
        head.prior.copy_(data.soft[train].mean(dim=0).clamp(min=1e-4).log())

    def soft_ce(pick: torch.Tensor) -> torch.Tensor:
        return -(data.soft[pick] * head.logits(data.tokens[pick]).log_softmax(dim=-1)).sum(dim=-1).mean()

    optimise(head, soft_ce, train, settings, gen, lambda step, loss, t: log(
        f"region head step {step:5d}/{settings.steps} soft CE {loss:.4f} ({t:.0f}s)"))
    return head.eval(), held


def held_out_split(n: int, share: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out, training) indices of n faces: a seeded permutation, `share` of it held out (at least one)."""
    order = torch.randperm(n, generator=gen)
    n_held = max(1, int(round(n * share))) if n > 1 else 0
    return order[:n_held], order[n_held:]


def optimise(module: torch.nn.Module, loss_of: Callable[[torch.Tensor], torch.Tensor], train: torch.Tensor, settings,
             gen: torch.Generator, log: Callable[[int, float, float], None]) -> None:
    """AdamW with a one-cycle schedule over settings.steps batches of settings.batch faces drawn from `train`;
    loss_of(indices) -> the loss; log(step, loss, seconds) every 250 steps and at the end. Leaves `module` in eval."""
    opt = torch.optim.AdamW(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.1)
    module.train()
    start = time.time()
    for step in range(settings.steps):
        loss = loss_of(train[torch.randint(len(train), (min(settings.batch, len(train)),), generator=gen)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == settings.steps - 1:
            log(step, loss.item(), time.time() - start)
    module.eval()


def agreement(head: DistilledRegionHead, data: TokenSet, faces: torch.Tensor, exact: Detector) -> dict:
    """Region-mask agreement of the head with the exact parser on `faces` (indices into `data`)."""
    with torch.no_grad():
        pred = head(data.tokens[faces]).flatten(2).transpose(1, 2)
        l1 = float((pred - data.soft[faces]).abs().sum(dim=-1).mean())
    m = mask_agreement(region_masks(data.soft[faces], exact), region_masks(pred, exact))
    return {"region": exact.region_index.region, "faces": int(len(faces)), **asdict(m), "mean_soft_l1": l1}


def source_sha(path) -> str | None:
    return sha256_file(path) if path else None


def save_head(head: DistilledRegionHead, path: Path, manifest: dict) -> dict:
    """safetensors (config + source hashes in its metadata) and the JSON training manifest beside it."""
    path = Path(path)
    meta = {CONFIG_KEY: config_json(head.cfg), "dinov3_sha256": manifest["sources"]["dinov3"]["sha256"] or "",
            "parser_sha256": manifest["sources"]["parser"]["sha256"] or ""}
    save_safetensors(path, {k: v.detach().contiguous() for k, v in head.state_dict().items()}, meta)
    manifest = dict(manifest, weights=path.name, weights_sha256=sha256_file(path))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return manifest


def distill(exact: Detector, faces: str, out: Path, sources: dict[str, str | None],
            settings: DistillSettings = DistillSettings(), log: Callable[[str], None] = print,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """The whole command: collect, train, check, save. `sources` maps dinov3/parser to the weight files used
    (None = seeded random weights). Returns the manifest."""
    images, count, description = face_images(faces)
    data = collect(exact, images, count, description, progress=progress)
    head, held = train_head(data, exact.label_set, settings, log)
    report = agreement(head, data, held, exact)
    log(f"held-out agreement with exact ({report['faces']} faces): tokens {report['token_agreement']:.4f}, "
        f"identical masks {report['exact_faces']:.3f}, IoU {report['mean_iou']:.3f}")
    manifest = {
        "format": MANIFEST_FORMAT,
        "config": json.loads(config_json(head.cfg)),
        "teacher": {"region_index": "exact", "label_set": exact.label_set, "crop_size": exact.cfg.crop_size,
                    "dinov3_input": exact.dinov3.cfg.img_size},
        "sources": {part: {"file": Path(f).name if f else None, "sha256": source_sha(f)} for part, f in sources.items()},
        "data": {"faces": faces, "description": description, "count": count, "held_out": int(len(held))},
        "training": dict(asdict(settings), loss="soft cross-entropy against the exact parser's token class distribution",
                         torch=torch.__version__, threads=torch.get_num_threads()),
        "agreement": report,
    }
    return save_head(head, out, manifest)


def build_toy_region_head(out_dir: Path = WEIGHTS_DIR, faces: str = "toy:1000", log: Callable[[str], None] = print) -> dict:
    """The shipped toy head, from the shipped toy DINOv3 and parser. Deterministic for a fixed thread count."""
    from ..models.factory import DetectorSpec, build_detector, shipped_file

    torch.set_num_threads(2)
    exact = build_detector(DetectorSpec(preset="toy"))
    sources = {part: str(shipped_file("toy", part)) for part in ("dinov3", "parser")}
    return distill(exact, faces, out_dir / "toy_region_head.safetensors", sources, log=log)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--faces", default="toy:1000")
    args = ap.parse_args()
    print(json.dumps(build_toy_region_head(args.out, args.faces)["agreement"], indent=2))
