"""Compare an artifact's scores with the full-precision reference on the same samples, decide the gate, and write
the report (report.md, report.json, roc.png, montage.png)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.degrade import apply, parse_spec
from ..device.errors import shown
from ..models.writing import atomic_write
from . import metrics
from .scores import Runner, Scores, check_same_samples, score_set


@dataclass(frozen=True)
class Budget:
    max_auc_drop: float = 0.005  # AUC as a fraction: 0.005 = 0.5 percentage points
    max_flip_rate: float | None = None  # share of decisions at the reference's threshold that may differ
    min_correlation: float | None = None  # smallest Pearson correlation of the two models' logits


@dataclass
class Comparison:
    samples: int
    scored: int  # samples the reference found the region in; AUCs are computed on these
    reference: metrics.BinaryMetrics
    artifact: metrics.BinaryMetrics
    delta_auc: float
    delta_auc_ci: tuple[float, float]
    delong: metrics.DeLong
    video: dict  # video-level (mean probability) AUCs, when any video has more than one frame
    agreement: metrics.Agreement
    masks: metrics.MaskAgreement
    no_region: dict
    passed: bool = True
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=float))


def compare(reference: Scores, artifact: Scores, budget: Budget = Budget(), n_boot: int = 1000, seed: int = 0) -> Comparison:
    check_same_samples(reference, artifact)
    keep = reference.scored
    y = reference.labels[keep].astype(int)
    ref_logit, art_logit = reference.logits[keep], artifact.logits[keep]
    for name, logits in (("reference", ref_logit), ("artifact", art_logit)):
        if not np.isfinite(logits).all():  # no metric of a NaN score means anything: refused, never passed
            raise ValueError(f"the {name} gave {int((~np.isfinite(logits)).sum())} non-finite scores (NaN/Inf)")
    thr = reference.threshold  # each model's decisions at its own threshold (scores that name none: the reference's)
    art_thr = artifact.threshold if "threshold" in artifact.header else thr
    ref_m, art_m = metrics.binary_metrics(y, ref_logit, thr), metrics.binary_metrics(y, art_logit, art_thr)
    delong = metrics.delong(y, ref_logit, art_logit)
    ci = metrics.bootstrap_ci(y, ref_logit, art_logit, n_boot=n_boot, seed=seed)
    video = {}
    vids = reference.video_ids[keep]
    if len(np.unique(vids)) < len(vids):
        _, vy, vref = metrics.video_level(vids, y, reference.probabilities[keep])
        _, _, vart = metrics.video_level(vids, y, artifact.probabilities[keep])
        video = {"videos": int(len(vy)), "reference_auc": metrics.binary_metrics(vy, vref, 0.5).auc,
                 "artifact_auc": metrics.binary_metrics(vy, vart, 0.5).auc}
    comp = Comparison(
        samples=len(reference), scored=int(keep.sum()), reference=ref_m, artifact=art_m,
        delta_auc=art_m.auc - ref_m.auc, delta_auc_ci=ci, delong=delong, video=video,
        agreement=metrics.score_agreement(ref_logit, art_logit, thr, art_thr),
        masks=metrics.mask_agreement(reference.token_masks, artifact.token_masks),
        no_region={"reference": int((~reference.scored).sum()), "artifact": int((~artifact.scored).sum())},
    )
    if -comp.delta_auc > budget.max_auc_drop:
        comp.reasons.append(f"AUC drop {-comp.delta_auc * 100:.2f} pp > budget {budget.max_auc_drop * 100:.2f} pp")
    if budget.max_flip_rate is not None and comp.agreement.flip_rate > budget.max_flip_rate:
        comp.reasons.append(f"decision flip rate {comp.agreement.flip_rate:.2%} > budget {budget.max_flip_rate:.2%}")
    if budget.min_correlation is not None and not comp.agreement.pearson >= budget.min_correlation:  # NaN fails
        comp.reasons.append(f"score correlation {comp.agreement.pearson:.3f} < {budget.min_correlation:.3f}")
    comp.passed = not comp.reasons
    return comp


def manifest_identity(manifest: dict) -> dict:
    """A bundle manifest's model, in the form of models.factory.identity: its weight files' SHA-256 (or their
    random-seed notes), head, region and region-index rung."""
    sources = manifest.get("sources") or {}
    return {"sources": {part: rec.get("sha256") or rec.get("note") for part, rec in sources.items()},
            "head": manifest.get("probe", {}).get("head"), "region": manifest.get("labels", {}).get("region"),
            "region_index": manifest.get("export_options", {}).get("region_index", "exact")}


def decisions(detector) -> dict:
    """What decides a verdict besides the threshold, as a reference records it (its scores header, `decisions`): the
    probe's plausibility guard and the face detector's settings (the row every bundle carries)."""
    from ..device.faces.mtcnn import ROW

    return json.loads(json.dumps({"guard": detector.probe.info.guard, "front_end": dict(ROW.settings)}))


def check_same_decisions(reference: dict | None, manifest: dict, artifact: Path, name: str) -> None:
    """Raise ValueError when a bundle's guard or face-detector settings are not the ones its reference recorded: the
    gate's AUC is computed on aligned crops, which neither touches, so an edited (and rehashed) bundle would pass it
    while deciding photos otherwise. A reference that records none (older files) is not compared."""
    if not reference:
        return
    have = {"guard": (manifest.get("probe") or {}).get("guard"),
            "front_end": (manifest.get("front_end") or {}).get("settings")}
    for key, what in (("guard", "plausibility guard (probe.guard)"), ("front_end", "face detector settings (front_end.settings)")):
        if key in reference and have[key] != reference[key]:  # a guard removed (None) differs too
            raise ValueError(f"{artifact}: its {what} differ from {name}'s: {shown(json.dumps(have[key], sort_keys=True))} "
                             f"vs {shown(json.dumps(reference[key], sort_keys=True))}: an edited bundle is not the model "
                             "validated")


def check_same_model(reference: dict | None, artifact: dict | None, names: tuple[str, str]) -> None:
    """Raise ValueError unless the reference and the artifact come from the same model: the same DINOv3, parser (when
    both have one) and probe files, head and region. The region-index rung may differ (a rung is validated against
    the exact reference): that is the point of the gate."""
    for identity, name in zip((reference, artifact), names):
        if not identity:
            raise ValueError(f"{name}: records no model identity (made before dfedge 0.4 or by hand): score it again "
                             "with dfedge reference, or validate a bundle")
    for key in ("head", "region"):
        if reference[key] != artifact[key]:
            raise ValueError(f"{names[1]} is another model than {names[0]}: {key} '{artifact[key]}', not '{reference[key]}'")
    ref, art = reference["sources"], artifact["sources"]
    for identity, name in zip((ref, art), names):  # a missing identity is a refusal, never a pass
        if not identity or not all(identity.values()):
            raise ValueError(f"{name}: records no weight identity (sources) for {', '.join(k for k, v in identity.items() if not v) or 'any part'}: "
                             "it cannot be shown to be the reference's model")
    for identity, name in zip((ref, art), names):  # every rung decides with the reference's probe: both name it
        if "probe" not in identity:
            raise ValueError(f"{name}: records no probe among its weight sources: it cannot be shown to be the reference's model")
    for part in sorted(set(ref) & set(art)):
        if ref[part] != art[part]:
            raise ValueError(f"{names[1]} is another model than {names[0]}: its {part} weights are {str(art[part])[:16]}…, "
                             f"the reference's {str(ref[part])[:16]}…")


def summary_rows(comp: Comparison) -> list[tuple[str, str, str]]:
    """(metric, reference, artifact) rows for the console table and report.md."""
    r, a = comp.reference, comp.artifact
    lo, hi = comp.delta_auc_ci
    rows = [
        ("frame-level AUC", f"{r.auc:.4f}", f"{a.auc:.4f}"),
        ("ΔAUC (95% bootstrap CI)", "", f"{comp.delta_auc * 100:+.2f} pp [{lo * 100:+.2f}, {hi * 100:+.2f}]"),
        ("DeLong p (AUCs equal)", "", f"{comp.delong.p_value:.4g}"),
        ("frame-level AP", f"{r.ap:.4f}", f"{a.ap:.4f}"),
        ("frame-level EER", f"{r.eer:.4f}", f"{a.eer:.4f}"),
        (f"accuracy at logit ≥ {r.threshold:.3f}", f"{r.accuracy:.4f}", f"{a.accuracy:.4f}"),
    ]
    if comp.video:
        rows.append((f"video-level AUC ({comp.video['videos']} videos, mean prob.)",
                     f"{comp.video['reference_auc']:.4f}", f"{comp.video['artifact_auc']:.4f}"))
    g, m = comp.agreement, comp.masks
    rows += [
        ("max / mean |Δlogit|", "", f"{g.max_abs:.3g} / {g.mean_abs:.3g}"),
        ("Pearson / Spearman", "", f"{g.pearson:.5f} / {g.spearman:.5f}"),
        ("decision flips", "", f"{g.flip_rate:.2%}"),
        ("token-mask agreement (tokens / exact faces)", "", f"{m.token_agreement:.4f} / {m.exact_faces:.4f}"),
        ("region-token count drift (mean / max)", "", f"{m.count_drift_mean:.3f} / {m.count_drift_max}"),
        ("faces without region", str(comp.no_region["reference"]), str(comp.no_region["artifact"])),
    ]
    return rows


def write_report(comp: Comparison, reference: Scores, artifact: Scores, out_dir: str | Path, title: str,
                 load_image=None, extra: dict | None = None, top: int = 6) -> dict[str, Path]:
    """report.md, report.json, roc.png and, when `load_image(sample_index)` can fetch crops, montage.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"roc": plot_roc(reference, artifact, out_dir / "roc.png")}
    if load_image is not None:
        files["montage"] = plot_montage(reference, artifact, load_image, out_dir / "montage.png", top)
    payload = {"title": title, "passed": comp.passed, "reasons": comp.reasons, "comparison": comp.to_json(),
               "reference": reference.header, "artifact": artifact.header, **(extra or {})}
    files["json"] = atomic_write(out_dir / "report.json", lambda t: t.write_text(json.dumps(payload, indent=2, default=float)))
    lines = [f"# {title}", "", f"**{'PASS' if comp.passed else 'FAIL'}**" + ("" if comp.passed else ": " + "; ".join(comp.reasons)),
             "", f"{comp.samples} samples, {comp.scored} with a region (AUCs on these); reference: "
             f"{reference.header.get('model', '?')} on {reference.header.get('device', {}).get('device', '?')}; "
             f"artifact: {artifact.header.get('model', '?')}", "", "| metric | reference | artifact |", "|---|---|---|"]
    lines += [f"| {m} | {r} | {a} |" for m, r, a in summary_rows(comp)]
    for section, text in (extra or {}).get("markdown", {}).items():
        lines += ["", f"## {section}", "", text]
    lines += ["", "![ROC](roc.png)"] + (["", "![most-changed samples](montage.png)"] if "montage" in files else [])
    files["md"] = atomic_write(out_dir / "report.md", lambda t: t.write_text("\n".join(lines) + "\n"))
    return files


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(reference: Scores, artifact: Scores, path: Path) -> Path:
    from sklearn.metrics import roc_curve

    plt = _figure()
    keep = reference.scored
    y = reference.labels[keep]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for name, s, style in (("reference", reference, "-"), ("artifact", artifact, "--")):
        fpr, tpr, _ = roc_curve(y, s.logits[keep])
        ax.plot(fpr, tpr, style, label=f"{name}")
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (frame level)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, format="png"))
    plt.close(fig)
    return path


def plot_montage(reference: Scores, artifact: Scores, load_image, path: Path, top: int) -> Path:
    """The samples whose logit moved most: crop, reference attribution, artifact attribution (per-token
    contributions to the logit, red = towards fake)."""
    plt = _figure()
    order = np.argsort(-np.abs(artifact.logits - reference.logits))[:top]
    fig, axes = plt.subplots(len(order), 3, figsize=(7.5, 2.5 * len(order)), dpi=100, squeeze=False)
    for row, i in zip(axes, order):
        image = load_image(int(i))
        for ax, (name, s) in zip(row, (("crop", None), ("reference", reference), ("artifact", artifact))):
            ax.imshow(image)
            if s is not None:
                c = s.contributions[i].astype(np.float32)
                lim = float(np.abs(c).max()) or 1.0
                ax.imshow(c, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.55, extent=(0, image.shape[1], image.shape[0], 0),
                          interpolation="nearest")
                ax.set_title(f"{name}: logit {s.logits[i]:+.3f}", fontsize=8)
            else:
                ax.set_title(f"{reference.ids[i][-28:]} (label {int(reference.labels[i])})", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, format="png"))
    plt.close(fig)
    return path


def degradation_report(reference: Runner, artifact: Runner, dataset, spec: str, threshold: float,
                       progress=None) -> dict:
    """Reference and artifact on each degraded copy of `dataset` (`spec`: data.degrade families, e.g.
    "jpeg:q=50,blur:s=1.5,compound"); each sample is degraded with its own seed, the same for both runners.
    `progress(n)` is called after every n samples scored (2 x len(dataset) per family)."""
    rows, records = ["| degradation | reference AUC | artifact AUC | ΔAUC | DeLong p | flips | max abs Δlogit |",
                     "|---|---|---|---|---|---|---|"], []
    for d in parse_spec(spec):
        transform = lambda image, i, d=d: apply(image, d, seed=i)  # noqa: E731 - one seed per sample, same for both
        r = score_set(reference, dataset, batch=8, transform=transform, progress=progress)
        a = score_set(artifact, dataset, transform=transform, progress=progress)
        r.header.update(threshold=threshold)
        a.header.update(threshold=threshold)
        c = compare(r, a, Budget(1.0))
        rows.append(f"| {d.label} | {c.reference.auc:.4f} | {c.artifact.auc:.4f} | {c.delta_auc * 100:+.2f} pp | "
                    f"{c.delong.p_value:.3g} | {c.agreement.flip_rate:.2%} | {c.agreement.max_abs:.3g} |")
        records.append({"degradation": d.label, "comparison": c.to_json()})
    return {"degradations": records, "markdown": {"degradations": "\n".join(rows)}}
