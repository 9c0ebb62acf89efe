"""SDR's temporal head against the frame mean on the toy video world, and the ablation of SDR's training ingredients
(not a test). Prints markdown tables.

    python benchmarks/temporal.py --train 320 --val 160 --seeds 0 1 2

The frozen toy detector (region head, mouth) runs once per frame of toyvideo:train:N and toyvideo:val:M (16 frames
per clip); every row then fits a temporal head with fit-temporal's own code (dfedge.train.temporal.fit_temporal) on
the train clips' tokens and is judged by its video-level AUC on the held-out val clips, mean ± std over seeds. The
frame mean is the shipped mouth probe's per-frame probability averaged over a clip's frames with a region (the kit's
video verdict without --temporal); the single-frame AUC is that probe on every val frame alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dfedge.data.sources import open_set
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.device.host import cpu_isa, cpu_model
from dfedge.train.temporal import VIEWS, ClipTokens, TemporalSettings, ablation, clip_tokens, frame_mean


def tokens(det, spec: str, cache: Path | None) -> ClipTokens:
    path = cache / f"{spec.replace(':', '_')}.pt" if cache else None
    if path is not None and path.is_file():
        return ClipTokens(**torch.load(path, weights_only=False))
    clips = clip_tokens(det, open_set(spec))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(vars(clips), path)
    return clips


def subset(clips: ClipTokens, n: int) -> ClipTokens:
    return ClipTokens(clips.patches[:n], clips.mask[:n], clips.labels[:n], clips.ids[:n], f"{clips.description} (first {n})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=320, help="training clips")
    ap.add_argument("--val", type=int, default=160, help="held-out clips")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--subsets", type=int, nargs="+", default=[32, 320],
                    help="ablation columns: fit on the first N training clips (the same held-out clips for all)")
    ap.add_argument("--cache", type=Path, default=None, help="keep the extracted tokens here (a .pt per set) and reuse them")
    args = ap.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    det = build_detector(DetectorSpec())
    train, val = (tokens(det, f"toyvideo:{split}:{n}:{args.frames}", args.cache)
                  for split, n in (("train", args.train), ("val", args.val)))
    extracted = time.time() - start
    with torch.no_grad():
        p = det.probe(val.features().flatten(0, 1)).numpy()
    frame_labels = np.repeat(val.labels, val.mask.shape[1])
    ok = val.valid.flatten().numpy() > 0
    print(f"host: {cpu_model()} ({', '.join(cpu_isa())}); features {extracted:.0f} s for "
          f"{(args.train + args.val) * args.frames} frames; {int(ok.sum())}/{ok.size} val frames with a mouth\n")
    print("| video-level score | held-out AUC |\n|---|---|")
    print(f"| single frame (shipped mouth probe, every frame alone) | {roc_auc_score(frame_labels[ok], p[ok]):.4f} |")
    print(f"| frame mean (shipped mouth probe, mean over a clip's frames) | {roc_auc_score(val.labels, frame_mean(det, val)):.4f} |")
    columns = {n: ablation(subset(train, n), val, tuple(args.seeds), TemporalSettings(steps=args.steps, views=VIEWS)) for n in args.subsets}
    best = next(r for r in columns[max(columns)] if r["ingredients"] == "all (SDR)")
    print(f"| temporal head (SDR, all ingredients, {max(columns)} training clips; mean of {len(args.seeds)} seeds) | "
          f"{best['auc_mean']:.4f} |\n")
    print(f"SDR ingredients: held-out AUC of the temporal head ({args.steps} steps), mean ± std over seeds "
          f"{', '.join(map(str, args.seeds))}, by training clips\n")
    print("| ingredients | " + " | ".join(f"{n} clips" for n in columns) + " |\n|---|" + "---|" * len(columns))
    for i, r in enumerate(columns[max(columns)]):
        print(f"| {r['ingredients']} | " + " | ".join(f"{c[i]['auc_mean']:.4f} ± {c[i]['auc_std']:.4f}" for c in columns.values()) + " |")
    print(f"\ntotal {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
