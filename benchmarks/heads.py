"""The heads compared where the manipulated region is unknown (not a test): the multi-region toy world's AUC per
manipulated region, and under the NTIRE 2026 degradation engine. Prints two markdown tables.

    python benchmarks/heads.py --train toy:train:800:mixed --test 400

Every head is fitted by fit-probe's own code (dfedge.train.probe.fit_probe, default settings) on the --train
faces, whose fakes are manipulated in the mouth, the eyes, the nose or the whole face (toy:…:mixed); the shipped
mouth probe (fitted on mouth fakes only) is a row of its own. Each test set holds the same toy:test faces, real
or fake alike, with every fake manipulated in the column's region. The ntire column degrades every test crop of
toy:test:N:mixed once with the whole engine (`ntire:only=all`, the crop's index as seed), torch FP32.
Backbone and parser run once per crop; each head then pools its own tokens.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dfedge.data.degrade import Degradation, apply
from dfedge.data.sources import ToySet, open_set
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.models.heads import HEADS
from dfedge.models.pooling import masked_mean_weights
from dfedge.runtimes.standalone import cpu_isa, cpu_model
from dfedge.train.probe import Features, fit_probe

# (row, head, region): region None = the head's default
ROWS = [("region (mouth)", "region", "mouth"), ("topk (all tokens)", "topk", None), ("ensemble", "ensemble", None),
        ("cls", "cls", None), ("all (mean of every token)", "all", None)]
COLUMNS = ("mouth", "eyes", "nose", "face", "mixed")


def features(dets: dict, dataset, transform=None, batch: int = 16) -> dict[str, Features]:
    """Every row's probe input for `dataset`, from one backbone and parser pass per crop."""
    out = {name: ([], []) for name in dets}
    labels = []
    first = next(iter(dets.values()))
    with torch.no_grad():
        for start in range(0, len(dataset), batch):
            samples = [dataset[i] for i in range(start, min(len(dataset), start + batch))]
            images = [s.image if transform is None else transform(s.image, start + j) for j, s in enumerate(samples)]
            t0 = first.tokens(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float())
            for name, det in dets.items():
                mask = det.region_index(t0.soft)
                t = t0._replace(mask=mask, weights=masked_mean_weights(mask)[0])
                h = HEADS[det.cfg.head]
                out[name][0].append(h.pool(det, t).numpy())
                out[name][1].append(h.score(det, t).token_mask.sum(1).numpy())
            labels += [s.label for s in samples]
    y = np.array(labels)
    return {name: Features(np.concatenate(f), y, np.concatenate(c).astype(np.float32), np.arange(len(y)).astype(str),
                           np.zeros((len(y), 2), np.float32)) for name, (f, c) in out.items()}


def auc(probe, feats: Features) -> float:
    with torch.no_grad():
        logits = probe(torch.from_numpy(feats.features)).numpy()
    return float(roc_auc_score(feats.labels, logits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="toy:train:800:mixed")
    ap.add_argument("--test", type=int, default=400, help="toy:test faces per column")
    args = ap.parse_args()
    start = time.time()
    dets = {name: build_detector(DetectorSpec(head=h, region=r, random_probe=True)) for name, h, r in ROWS}
    train = features(dets, open_set(args.train))
    probes = {}
    for name, h, _ in ROWS:
        probes[name] = fit_probe(train[name], h, dets[name].cfg.region, "lapa", fitted_on=args.train)[0]
    probes["region (mouth), shipped: fitted on mouth fakes"] = build_detector(DetectorSpec()).probe
    dets["region (mouth), shipped: fitted on mouth fakes"] = dets["region (mouth)"]
    cols = {c: features(dets, ToySet("test", args.test, c)) for c in COLUMNS}
    ntire = Degradation("ntire", {"only": "all"})
    cols["mixed, ntire engine"] = features(dets, ToySet("test", args.test, "mixed"), lambda im, i: apply(im, ntire, seed=i))
    print(f"{cpu_model()} ({', '.join(f for f in cpu_isa() if f.startswith(('avx', 'amx')))}), torch {torch.__version__}, "
          f"train {args.train}, test toy:test:{args.test}:REGION, {time.time() - start:.0f} s\n")
    print("| head | " + " | ".join(f"{c} fakes" for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name in probes:
        print(f"| {name} | " + " | ".join(f"{auc(probes[name], cols[c][name]):.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
