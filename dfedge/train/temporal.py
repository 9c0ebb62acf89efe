"""Fit SDR's temporal head (models/temporal.py) on clips of frames, with SDR's training ingredients as options.

SDR (Reduced Spatial Dependency, ICASSP 2025) trains the temporal transformer on several spatially perturbed views
of every frame's features, keeping what the views share (its mutual-information-guided integration), so the head
learns temporal cues rather than one frame's spatial layout. Here, on the region's DINOv3 tokens of every frame:

  views        dropout: channel dropout of the pooled feature; shuffle: a share of the region's tokens swapped for
               other tokens of the same frame; jitter: the region mask moved by one token (a crop jitter on the grid)
  consistency  each view's window representation pulled towards the clean window's (cosine, the clean one held
               fixed): the information the branches share
  contrastive  supervised contrastive loss over every view's representation (positives: the same class)
  cross-entropy on the clean input and on every view

Every ingredient is an option (TemporalSettings), so the ablation is one loop over settings
(benchmarks/temporal.py). Features are extracted once per set (the frozen frame encoder's tokens) and kept in
memory as float16: [clips, T, g*g, D].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from ..models.temporal import TemporalHead, TemporalInfo, make_temporal, pack
from .probe import choose_threshold

VIEWS = ("dropout", "shuffle", "jitter")


@dataclass(frozen=True)
class TemporalSettings:
    # SDR's spatially perturbed branches (empty: the clean input only). Not the shuffle view by default: swapping region
    # tokens for others of the frame makes real clips jump from frame to frame, the very cue the head must learn
    # (the ablation in docs/temporal.md: −24 pp with 32 training clips)
    views: tuple[str, ...] = ("dropout", "jitter")
    consistency: float = 0.2  # weight of the views' agreement term (0: off)
    contrastive: float = 0.2  # weight of the supervised contrastive term (0: off)
    steps: int = 300
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    dropout: float = 0.3  # channel dropout rate of the `dropout` view
    shuffle: float = 0.3  # share of region tokens swapped in the `shuffle` view
    temperature: float = 0.2  # of the contrastive term
    preset: str = "toy"
    seed: int = 0

    @classmethod
    def parse(cls, views: str, **settings) -> TemporalSettings:
        """The settings with `views` given as the command line does: comma-separated names, or none."""
        return cls(views=tuple(v.strip() for v in views.split(",") if v.strip() and v.strip() != "none"), **settings)

    def __post_init__(self) -> None:
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown:
            raise ValueError(f"unknown view(s) {', '.join(unknown)} (known: {', '.join(VIEWS)})")
        if (self.consistency or self.contrastive) and len(self.views) < 1:
            raise ValueError("the consistency and contrastive terms compare views: give at least one view")
        if self.steps < 1 or self.batch < 2 or not self.lr > 0:
            raise ValueError("steps >= 1, batch >= 2 and lr > 0")


@dataclass
class ClipTokens:
    """The frozen frame encoder's tokens of a set of clips."""

    patches: torch.Tensor  # float16 [C, T, N, D]
    mask: torch.Tensor  # float32 [C, T, N]: the region's tokens (0/1)
    labels: np.ndarray  # int [C], 1 = fake
    ids: list[str]  # video ids
    description: str = ""

    @property
    def valid(self) -> torch.Tensor:
        return (self.mask.sum(-1) > 0).float()  # [C, T]

    def features(self) -> torch.Tensor:
        return pooled(self.patches.float(), self.mask)


def pooled(patches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[..., N, D] tokens and [..., N] 0/1 mask -> the mask's mean token [..., D] (zeros for an empty mask): the
    frame encoder's `feature` output."""
    return (patches * mask.unsqueeze(-1)).sum(-2) / mask.sum(-1, keepdim=True).clamp(min=1.0)


def clip_tokens(detector, data, batch: int = 8, progress=None) -> ClipTokens:
    """Run the frame encoder's tokens and region mask over every frame of a video set (a LabelledSet whose samples
    carry video ids, frames of one video consecutive and equally many per video)."""
    patches, masks, labels, videos = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            samples = [data[i] for i in range(start, min(len(data), start + batch))]
            x = torch.from_numpy(np.stack([s.image for s in samples]).transpose(0, 3, 1, 2).astype(np.float32))
            t = detector.tokens(x)
            patches.append(t.patches.half())
            masks.append(t.mask.float())
            labels += [s.label for s in samples]
            videos += [s.video_id for s in samples]
            if progress is not None:
                progress(len(samples))
    order = list(dict.fromkeys(videos))
    per = len(videos) // len(order)
    if per * len(order) != len(videos) or any(videos[i] != order[i // per] for i in range(len(videos))):
        raise ValueError(f"{data.description}: frames must come video by video, equally many per video")
    p, m = torch.cat(patches), torch.cat(masks)
    return ClipTokens(p.reshape(len(order), per, *p.shape[1:]), m.reshape(len(order), per, -1),
                      np.array(labels[::per]), order, data.description)


def view(patches: torch.Tensor, mask: torch.Tensor, kind: str, s: TemporalSettings, g: torch.Generator) -> torch.Tensor:
    """One spatially perturbed view's frame features [B, T, D] from tokens [B, T, N, D] and the region mask [B, T, N]."""
    if kind == "dropout":
        keep = (torch.rand(patches.shape[:2] + patches.shape[-1:], generator=g) >= s.dropout).float() / (1 - s.dropout)
        return pooled(patches, mask) * keep
    if kind == "shuffle":  # a share of the region's tokens replaced by random tokens of the same frame
        n = patches.shape[2]
        other = torch.randint(0, n, mask.shape, generator=g)
        swap = (torch.rand(mask.shape, generator=g) < s.shuffle).float() * mask
        mixed = patches + swap.unsqueeze(-1) * (torch.gather(patches, 2, other.unsqueeze(-1).expand_as(patches)) - patches)
        return pooled(mixed, mask)
    side = int(round(mask.shape[-1] ** 0.5))  # jitter: the region moved by one token, the whole clip alike
    grid = mask.reshape(*mask.shape[:2], side, side)
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
    moved = torch.roll(grid, (dy, dx), dims=(2, 3)).reshape(mask.shape)
    moved = torch.where(moved.sum(-1, keepdim=True) > 0, moved, mask)  # a frame whose region left the grid keeps its own
    return pooled(patches, moved)


def sup_con(reps: list[torch.Tensor], labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over every view's window representation [B, W]: each one's
    positives are the other views and windows of its class. (Positives by clip, as SimCLR's, would reward telling
    identities apart: the spatial information SDR sets out to reduce.)"""
    z = F.normalize(torch.cat(reps), dim=1)
    y = labels.repeat(len(reps))
    eye = torch.eye(len(y), dtype=torch.bool)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    positive = (y[:, None] == y[None, :]) & ~eye
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -(log_p.masked_fill(~positive, 0.0).sum(1) / positive.sum(1).clamp(min=1)).mean()


def _loss(head: TemporalHead, patches, mask, y, s: TemporalSettings, g: torch.Generator) -> torch.Tensor:
    valid = (mask.sum(-1) > 0).float()
    inputs = [pack(pooled(patches, mask), valid)] + [pack(view(patches, mask, v, s, g), valid) for v in s.views]
    reps = [head.embedding(x)[0] for x in inputs]
    loss = sum(F.binary_cross_entropy_with_logits(head.classifier(r).reshape(-1), y) for r in reps) / len(reps)
    if s.views and s.consistency:  # what the views share, kept: each pulled to the clean window's (held fixed)
        anchor = reps[0].detach()
        loss = loss + s.consistency * sum(1 - F.cosine_similarity(r, anchor, dim=1).mean() for r in reps[1:]) / len(s.views)
    if s.views and s.contrastive:
        loss = loss + s.contrastive * sup_con(reps, y, s.temperature)
    return loss


def fit_temporal(train: ClipTokens, settings: TemporalSettings = TemporalSettings(), threshold: str = "eer",
                 log=lambda msg: None) -> TemporalHead:
    """Train a temporal head on `train` (its window = the clips' frame count) and set its threshold by `threshold`
    (eer, fpr:X) on the training clips."""
    s = settings
    if len(set(train.labels.tolist())) < 2:
        raise ValueError(f"{train.description}: fitting a temporal head needs real and fake clips")
    torch.manual_seed(s.seed)
    g = torch.Generator().manual_seed(s.seed)
    head = make_temporal(train.patches.shape[-1], s.preset, frames=train.patches.shape[1])
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps, pct_start=0.1)
    labels = torch.from_numpy(train.labels.astype(np.float32))
    for step in range(s.steps):
        idx = torch.randperm(len(labels), generator=g)[: s.batch]
        loss = _loss(head, train.patches[idx].float(), train.mask[idx], labels[idx], s, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == s.steps - 1:
            log(f"step {step}: loss {loss.item():.4f}")
    head.eval()
    logits = predict(head, train)
    record = dict(asdict(s), views=list(s.views), train_auc=float(roc_auc_score(train.labels, logits)), clips=len(labels),
                  threshold_rule=threshold)
    head.info = TemporalInfo(config=asdict(head.cfg), threshold=choose_threshold(logits, train.labels, threshold),
                             trained_on=train.description, training=record)
    return head


def predict(head: TemporalHead, clips: ClipTokens, batch: int = 64) -> np.ndarray:
    """One logit per clip (each clip is one window of the head's T frames)."""
    with torch.no_grad():
        x = pack(clips.features(), clips.valid)
        return torch.cat([head(x[i : i + batch]).logit for i in range(0, len(x), batch)]).numpy()


def frame_mean(detector, clips: ClipTokens) -> np.ndarray:
    """The per-frame detector's video score, for comparison: the mean probability over frames with a region of the
    probe's per-frame logit, as log-odds (the region head's probe on each frame's feature)."""
    with torch.no_grad():
        p = torch.sigmoid(detector.probe(clips.features().flatten(0, 1)).reshape(clips.mask.shape[:2]))
        v = clips.valid
        mean = ((p * v).sum(1) / v.sum(1).clamp(min=1)).clamp(1e-7, 1 - 1e-7)
        return torch.logit(mean).numpy()


def ablation(train: ClipTokens, val: ClipTokens, seeds: tuple[int, ...] = (0, 1, 2),
             base: TemporalSettings = TemporalSettings(views=VIEWS), log=lambda msg: None) -> list[dict]:
    """Val AUC of SDR's ingredients (`base`: all of them), added one at a time and each view removed from the whole,
    over `seeds`."""
    rows = {
        "cross-entropy only": replace(base, views=(), consistency=0.0, contrastive=0.0),
        "+ views (as augmentation)": replace(base, consistency=0.0, contrastive=0.0),
        "+ views + consistency": replace(base, contrastive=0.0),
        "+ views + contrastive": replace(base, consistency=0.0),
        "all (SDR)": base,
        "all − dropout view": replace(base, views=tuple(v for v in base.views if v != "dropout")),
        "all − shuffle view (the default)": replace(base, views=tuple(v for v in base.views if v != "shuffle")),
        "all − jitter view": replace(base, views=tuple(v for v in base.views if v != "jitter")),
    }
    out = []
    for name, settings in rows.items():
        aucs = [float(roc_auc_score(val.labels, predict(fit_temporal(train, replace(settings, seed=seed)), val))) for seed in seeds]
        log(f"{name}: {np.mean(aucs):.4f} ± {np.std(aucs):.4f}")
        out.append({"ingredients": name, "auc_mean": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "aucs": aucs})
    return out


def fit_from_sets(spec, data: str, val: str | None, settings: TemporalSettings, out, threshold: str = "eer",
                  log=lambda msg: None) -> list[tuple[str, str, str, str]]:
    """dfedge fit-temporal: frame features of `data` (and `val`) through the region head's frozen detector, fit, save
    to `out`; rows (model, clips, train AUC, held-out AUC) for the temporal head and the frame mean."""
    from ..data.sources import open_set
    from ..models.factory import build_detector
    from ..models.temporal import save_temporal

    det = build_detector(spec)
    sets = {"train": open_set(data)}
    val = val or ("toyvideo:val:160" if data.startswith("toyvideo") else None)
    if val:
        sets["val"] = open_set(val)
    clips = {}
    for name, dataset in sets.items():
        log(f"frame features of {dataset.description} ({len(dataset)} frames)")
        clips[name] = clip_tokens(det, dataset)
    head = fit_temporal(clips["train"], settings, threshold, log)
    save_temporal(head, out)

    def auc(name, scores):
        return f"{roc_auc_score(clips[name].labels, scores(clips[name])):.4f}" if name in clips else "-"

    n = f"{len(clips['train'].labels)}" + (f" / {len(clips['val'].labels)}" if "val" in clips else "")
    return [("temporal head (SDR)", n, auc("train", lambda c: predict(head, c)), auc("val", lambda c: predict(head, c))),
            ("frame mean (per-frame probe)", n, auc("train", lambda c: frame_mean(det, c)), auc("val", lambda c: frame_mean(det, c)))]
