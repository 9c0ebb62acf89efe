"""The `dfedge` command line. Commands parse options, call the library and print; nothing else."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Export, compress, validate and package the region-indexed deepfake detector.")
# ":train:" in "toy:train:40" must not become an emoji; piped output (CI logs) gets room for the wide tables
console = Console(emoji=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, emoji=False)

Preset = Annotated[str, typer.Option(help="Model preset: toy (shipped toy world, default), full (ViT-L/16 + FaRL-B), tiny.")]
Dinov3Path = Annotated[Optional[Path], typer.Option("--dinov3", help="DINOv3 weights: official .pth, or safetensors (official or HF layout).")]
ParserPath = Annotated[Optional[Path], typer.Option("--parser", help="FaRL parser: converted .safetensors or facer TorchScript .pt.")]
ProbePath = Annotated[Optional[Path], typer.Option("--probe", help="Probe .safetensors written by fit-probe.")]
Head = Annotated[str, typer.Option(help="region (the paper) | cls | all | farl-region.")]
Region = Annotated[str, typer.Option(help="Region whose tokens feed the probe (mouth, eyes, brows, nose, skin, hair, face).")]
Dinov3Input = Annotated[int, typer.Option(help="DINOv3 input size: 224 (exact 2x area downsample of the crop) or 448.")]
Sha = Annotated[Optional[str], typer.Option(help="Expected SHA-256 (full or >= 8 hex prefix).")]
RegionIndexOpt = Annotated[str, typer.Option("--region-index", help="Region-index rung: exact (FaRL as published), lite-head, parser-224, distilled (no FaRL; docs/region-index.md).")]
RegionHeadPath = Annotated[Optional[Path], typer.Option("--region-head", help="Distilled region head (.safetensors from distill-region-head); toy ships one.")]


@contextlib.contextmanager
def user_errors():
    """Bad input ends the command with one line on stderr and exit code 2, not a traceback."""
    from .data.images import ImageError
    from .models.checkpoint import CheckpointError

    try:
        yield
    except FileNotFoundError as e:
        err_console.print(f"[red]error:[/red] {e.filename}: no such file", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (CheckpointError, ImageError, ValueError) as e:
        err_console.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def detector_spec(preset: str, dinov3: Path | None, parser: Path | None, probe: Path | None, head: str, region: str,
                  dinov3_input: int, dinov3_sha256: str | None = None, parser_sha256: str | None = None,
                  region_index: str = "exact", region_head: Path | None = None):
    from .models.factory import DetectorSpec

    return DetectorSpec(
        preset=preset, dinov3=str(dinov3) if dinov3 else None, parser=str(parser) if parser else None,
        probe=str(probe) if probe else None, head=head, region=region, dinov3_input=dinov3_input,
        dinov3_sha256=dinov3_sha256, parser_sha256=parser_sha256, region_index=region_index,
        region_head=str(region_head) if region_head else None,
    )


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()


@app.command()
def info(
    preset: Annotated[Optional[list[str]], typer.Option(help="Preset(s) to describe; default: all.")] = None,
    head: Head = "region",
    dinov3_input: Dinov3Input = 224,
    region_index: Annotated[Optional[list[str]], typer.Option("--region-index", help="Region-index rung(s) for the ladder table; default: all.")] = None,
) -> None:
    """Configurations, parameter counts and GFLOPs of the fused graph per preset (counted on meta tensors), and
    GFLOPs per component for every rung of the region-index ladder."""
    from .models.factory import DETECTOR_PRESETS, DetectorSpec, gflops, meta_detector, parameter_counts
    from .models.ladder import RUNGS

    with user_errors():
        names = preset or list(DETECTOR_PRESETS)
        for name in names:
            spec = DetectorSpec(preset=name, head=head, dinov3_input=dinov3_input)
            det = meta_detector(spec)
            table = Table(title=f"preset '{name}': {DETECTOR_PRESETS[name].description}")
            table.add_column("component")
            table.add_column("config")
            table.add_column("parameters", justify="right")
            table.add_column("GFLOPs / face", justify="right")
            params, flops = parameter_counts(det), gflops(det)
            d, p = det.dinov3.cfg, det.parser.cfg
            rows = [
                ("dinov3", f"D={d.embed_dim} depth={d.depth} heads={d.num_heads} ffn={d.ffn_layer} in={d.img_size} grid={d.grid}"),
                ("parser backbone", f"ViT W={p.width} layers={p.layers} heads={p.heads} in={p.input_size} taps={list(p.output_indices)}"),
                ("parser head", f"UPerHead C={p.head_channels} classes={p.num_classes} ({p.label_set}) logits {p.logit_size}²"),
                ("region + resampling", f"head={det.cfg.head} region={det.cfg.region} warp={p.warp_factor}"),
            ]
            for comp, desc in rows:
                n = params.get(comp, params["probe"] if comp.startswith("region") else 0)
                table.add_row(comp, desc, f"{n / 1e6:,.2f} M", f"{flops[comp]:,.2f}")
            table.add_row("total", "", f"{params['total'] / 1e6:,.2f} M", f"{flops['total']:,.2f}", style="bold")
            console.print(table)
            share = (flops["parser backbone"] + flops["parser head"]) / flops["total"]
            console.print(f"parser share of compute: {share:.1%}\n")
            console.print(ladder_table(name, head, dinov3_input, region_index or list(RUNGS), flops["total"]))


def ladder_table(preset: str, head: str, dinov3_input: int, rungs: list[str], exact_total: float) -> Table:
    """GFLOPs per component of each region-index rung of a preset (meta tensors: no weights, no compute)."""
    from .models.factory import DetectorSpec, gflops, meta_detector
    from .models.ladder import rung

    table = Table(title=f"preset '{preset}': region-index ladder, GFLOPs / face")
    parts = ("parser backbone", "parser head", "dinov3", "region head", "region + resampling", "total")
    for col in ("region index", *parts, "× fewer than exact", "what runs"):
        table.add_column(col, justify="left" if col in ("region index", "what runs") else "right")
    for r in rungs:
        flops = gflops(meta_detector(DetectorSpec(preset=preset, head=head, dinov3_input=dinov3_input, region_index=r)))
        table.add_row(r, *(f"{flops[p]:,.2f}" for p in parts), f"{exact_total / flops['total']:.1f}×", rung(r).description)
    return table


@app.command()
def score(
    images: Annotated[list[Path], typer.Argument(help="Aligned 448x448 RGB face crops.")],
    preset: Preset = "toy",
    dinov3: Dinov3Path = None,
    parser: ParserPath = None,
    probe: ProbePath = None,
    head: Head = "region",
    region: Region = "mouth",
    dinov3_input: Dinov3Input = 224,
    region_index: RegionIndexOpt = "exact",
    region_head: RegionHeadPath = None,
    top: Annotated[int, typer.Option(help="How many top-contributing tokens to list.")] = 5,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write JSON lines here instead of stdout.")] = None,
) -> None:
    """Score aligned face crops: one JSON line each (probability of fake, logit, region tokens, top tokens)."""
    import torch

    from .data.images import read_crop, to_tensor
    from .models.factory import build_detector

    with user_errors():
        crops = [read_crop(p) for p in images]  # fail on a bad file before any work
        det = build_detector(detector_spec(preset, dinov3, parser, probe, head, region, dinov3_input,
                                           region_index=region_index, region_head=region_head))
        lines = []
        with torch.no_grad():
            for path, crop in zip(images, crops):
                out = det(to_tensor(crop))
                lines.append(json.dumps(score_record(str(path), out, det.probe.info.threshold, top)))
        text = "\n".join(lines) + "\n"
        if output:
            from .models.checkpoint import atomic_write

            atomic_write(output, lambda tmp: tmp.write_text(text))
        else:
            sys.stdout.write(text)


def score_record(name: str, out, threshold: float, top: int) -> dict:
    """One JSON-able result; a face without region tokens gets no score, only the reason."""
    count = int(out.region_tokens[0])
    record: dict = {"image": name, "region_tokens": count}
    if count == 0:
        record.update(status="no_region", probability=None, logit=None, decision=None, top_tokens=[])
        return record
    contrib = out.contributions[0]
    g = contrib.shape[-1]
    order = contrib.flatten().abs().argsort(descending=True)[: min(top, count)]
    logit = float(out.logit[0])
    record.update(
        status="ok",
        probability=float(out.probability[0]),
        logit=logit,
        decision="fake" if logit >= threshold else "real",
        top_tokens=[{"row": int(i) // g, "col": int(i) % g, "contribution": float(contrib.flatten()[i])} for i in order],
    )
    return record


@app.command("fit-probe")
def fit_probe_cmd(
    data: Annotated[str, typer.Option(help="Training set: toy[:split[:N]], a folder with real/ and fake/, or a CSV/JSONL list.")] = "toy",
    val: Annotated[Optional[str], typer.Option(help="Validation set (same forms); default toy:val for toy data.")] = None,
    head: Annotated[Optional[list[str]], typer.Option(help="Head(s) to fit: region, cls, all, farl-region (repeatable).")] = None,
    region: Region = "mouth",
    threshold: Annotated[str, typer.Option(help="Operating threshold rule: eer or fpr:0.05.")] = "eer",
    out: Annotated[Path, typer.Option(help="Probe file (.safetensors); several heads get -HEAD suffixes.")] = Path("probe.safetensors"),
    preset: Preset = "toy",
    dinov3: Dinov3Path = None,
    parser: ParserPath = None,
    dinov3_input: Dinov3Input = 224,
    region_index: RegionIndexOpt = "exact",
    region_head: RegionHeadPath = None,
    batch: Annotated[int, typer.Option(help="Faces per forward pass.")] = 8,
    cache: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default ~/.cache/dfedge/features).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
) -> None:
    """Fit a logistic-regression probe on region-pooled features and pick its operating threshold."""
    from rich.progress import Progress

    from .data.sources import open_set
    from .models.region import save_probe
    from .train.probe import check_classes, default_cache_dir, extract_features, fit_probe, probe_auc

    heads = head or ["region"]
    with user_errors():
        train_set = open_set(data, region)
        check_classes(train_set.labels(), data)
        val_spec = val or ("toy:val" if data.startswith("toy") else None)
        val_set = open_set(val_spec, region) if val_spec else None
        cache_dir = None if no_cache else (cache or default_cache_dir())
        table = Table(title=f"probe fit: {train_set.description}" + (f", validated on {val_set.description}" if val_set else ""))
        for col in ("head", "region", "train AUC", "val AUC", "faces used", "no region", "threshold (logit)", "file"):
            table.add_column(col)
        for h in heads:
            spec = detector_spec(preset, dinov3, parser, None, h, region, dinov3_input,
                                 region_index=region_index, region_head=region_head)
            from .models.factory import build_detector

            det = build_detector(spec)
            with Progress(console=err_console, transient=True) as bar:
                task = bar.add_task(f"features ({h}, {train_set.description})", total=len(train_set))
                feats = extract_features(det, train_set, batch, cache_dir, lambda d, t: bar.update(task, completed=d))
            probe, report = fit_probe(feats, h, det.region_index.region, det.label_set, threshold, train_set.description)
            val_auc = None
            if val_set is not None:
                with Progress(console=err_console, transient=True) as bar:
                    task = bar.add_task(f"features ({h}, {val_set.description})", total=len(val_set))
                    vfeats = extract_features(det, val_set, batch, cache_dir, lambda d, t: bar.update(task, completed=d))
                val_auc = probe_auc(probe, vfeats)
            path = out if len(heads) == 1 else out.with_name(f"{out.stem}-{h}{out.suffix}")
            save_probe(probe, path)
            table.add_row(h, region, f"{report.train_auc:.3f}", "-" if val_auc is None else f"{val_auc:.3f}",
                          str(report.used), str(report.no_region), f"{report.threshold:.3f} ({threshold})", str(path))
    console.print(table)
    console.print(f"next: dfedge score CROP.png --probe {out if len(heads) == 1 else '<file>'}")


@app.command("export")
def export_cmd(
    target: Annotated[list[str], typer.Option(help="onnx, openvino, coreml, tflite or all (repeatable).")] = ["all"],  # noqa: B006
    precision: Annotated[list[str], typer.Option(help="fp32 and/or fp16 (repeatable).")] = ["fp32", "fp16"],  # noqa: B006
    out: Annotated[Path, typer.Option(help="Bundles go to OUT/NAME/TARGET-PRECISION.")] = Path("dist"),
    name: Annotated[Optional[str], typer.Option(help="Bundle set name (default: the preset).")] = None,
    preset: Preset = "toy",
    dinov3: Dinov3Path = None,
    parser: ParserPath = None,
    probe: ProbePath = None,
    head: Head = "region",
    region: Region = "mouth",
    dinov3_input: Dinov3Input = 224,
    region_index: RegionIndexOpt = "exact",
    region_head: RegionHeadPath = None,
    parity_samples: Annotated[int, typer.Option(help="Toy-world crops the parity check runs on.")] = 4,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Allow a preset without weight files (seeded random weights), e.g. to size and time the full graph.")] = False,
) -> None:
    """Export the fused detector per target x precision into bundles, each checked for parity against torch."""
    import time
    import traceback


    from .export.bundle import toy_crops, weight_sources, write_bundle
    from .export.targets import resolve
    from .models.factory import build_detector

    with user_errors():
        targets = resolve(target)
        bad = [p for p in precision if p not in ("fp32", "fp16")]
        if bad:
            raise ValueError(f"unknown precision '{bad[0]}' for export (fp32, fp16; int8 and below: dfedge quantize)")
        spec = detector_spec(preset, dinov3, parser, probe, head, region, dinov3_input,
                             region_index=region_index, region_head=region_head)
        distilled = region_index == "distilled"
        check_weights(preset, dinov3, region_head if distilled else parser, random_weights,
                      "--region-head" if distilled else "--parser")
        det = build_detector(spec)
        sources = weight_sources(spec)
        images = toy_crops(parity_samples)
        options = {"preset": preset, "head": head, "region": det.region_index.region, "dinov3_input": dinov3_input,
                   "region_index": region_index, "opset": 20, "parity_samples": parity_samples}
    set_name = name or preset
    table = Table(title=f"export '{set_name}' -> {out / set_name}  (parity vs torch fp32 on {parity_samples} toy crops)")
    for col in ("target", "precision", "status", "size MB", "max |Δlogit|", "mean |Δlogit|", "mask agreement", "time s"):
        table.add_column(col)
    failed = 0
    log_path = out / set_name / "export.log"
    with converter_output(log_path) as user:
        for t in targets:
            cache: dict = {}  # the fp32 conversion, reused for fp16
            for p in precision:
                start = time.time()
                try:
                    path, manifest = write_bundle(det, t, p, out, set_name, sources, options, images,
                                                  log=lambda m: user.print(m, highlight=False), cache=cache)
                except Exception as e:  # noqa: BLE001 - one failing target never aborts the others
                    failed += 1
                    traceback.print_exc()  # whole, into the log
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    table.add_row(t.name, p, f"❌ {reason[:90]}", "-", "-", "-", "-", f"{time.time() - start:.0f}")
                    continue
                par = manifest["parity"]
                size = sum(f["bytes"] for f in manifest["files"].values()) / 1e6
                table.add_row(t.name, p, "✅", f"{size:.2f}", f"{par['max_abs_logit']:.2e}",
                              f"{par['mean_abs_logit']:.2e}", f"{par['mask_agreement']:.4f}", f"{time.time() - start:.0f}")
    console.print(table)
    console.print(f"converter output: {log_path}", highlight=False)
    if failed:
        raise typer.Exit(1)
    console.print(f"next: python -c \"import dfedge.export.bundle as b; print(b.verify('{out / set_name}/onnx-fp32')['parity'])\"")


Data = Annotated[str, typer.Option(help="Labelled crops: DIR with real/ and fake/, a CSV/JSONL list, or toy:SPLIT:N.")]


@app.command()
def reference(
    data: Data = "toy:test:200",
    out: Annotated[Path, typer.Option(help="Scores file to write (.scores, compressed npz + JSON header).")] = Path("reference.scores"),
    preset: Preset = "toy",
    dinov3: Dinov3Path = None,
    parser: ParserPath = None,
    probe: ProbePath = None,
    head: Head = "region",
    region: Region = "mouth",
    dinov3_input: Dinov3Input = 224,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")] = "auto",
    batch: Annotated[int, typer.Option(help="Crops per forward pass.")] = 8,
) -> None:
    """Score a labelled set with the FP32 PyTorch detector: the reference every artifact is validated against."""

    from .data.sources import open_set
    from .eval.scores import device_facts, resolve_device, save_scores, score_set, torch_runner
    from .models.factory import build_detector

    with user_errors():
        spec = detector_spec(preset, dinov3, parser, probe, head, region, dinov3_input)
        dataset = open_set(data, region)
        dev = resolve_device(device)
        det = build_detector(spec)
        with progress_bar(f"reference on {dev}", len(dataset)) as advance:
            scores = score_set(torch_runner(det, dev), dataset, batch=batch, progress=advance)
        problems = [dataclasses.asdict(p) for p in getattr(dataset, "problems", [])]
        scores.header.update(model="torch fp32", detector=asdict(spec), device=device_facts(dev), data=data,
                             threshold=float(det.probe.info.threshold), problems=problems)
        save_scores(out, scores)
        console.print(f"{len(scores)} samples ({int(scores.scored.sum())} with a region) -> {out}")
        if problems:  # bad media is reported, never silently dropped
            kinds: dict[str, int] = {}
            for p in problems:
                kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
            console.print(f"[yellow]{len(problems)} media problems[/yellow] (listed in the header): "
                          + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())))


@contextlib.contextmanager
def progress_bar(label: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n=1: progress.advance(task, n)


@app.command()
def validate(
    artifact: Annotated[Path, typer.Argument(help="A bundle folder (scored with its runtime) or a .scores file.")],
    reference_scores: Annotated[Path, typer.Option("--reference", help="Scores written by `dfedge reference`.")],
    max_auc_drop: Annotated[float, typer.Option(help="Largest allowed AUC drop, as a fraction (0.005 = 0.5 pp).")] = 0.005,
    max_flip_rate: Annotated[Optional[float], typer.Option(help="Largest allowed share of flipped decisions.")] = None,
    degrade: Annotated[Optional[str], typer.Option(help="Also report per degradation family, e.g. jpeg:q=50,blur:s=1.5,compound (bundles only).")] = None,
    out: Annotated[Path, typer.Option(help="Report folder: report.md, report.json, roc.png, montage.png.")] = Path("validation"),
    threads: Annotated[int, typer.Option(help="Runtime threads (0 = runtime default).")] = 0,
) -> None:
    """Compare an artifact with the reference on the same samples; exit 1 when the AUC/flip budget is exceeded."""
    from .eval.scores import load_scores
    from .eval.validate import Budget, compare, summary_rows, write_report

    with user_errors():
        ref = load_scores(reference_scores)
        dataset = reopen(ref)
        if artifact.is_dir():
            art, runner = score_bundle(artifact, dataset, threads)
            from .eval.scores import save_scores

            save_scores(out / "artifact.scores", art)
        elif degrade:
            raise ValueError("--degrade needs a bundle folder: a scores file cannot be re-run on degraded inputs")
        else:
            art = load_scores(artifact)
        comp = compare(ref, art, Budget(max_auc_drop, max_flip_rate))
        extra = {}
        if degrade:
            extra = degradation_report(ref, runner, dataset, degrade)
        title = f"validate {artifact}"
        write_report(comp, ref, art, out, title, load_image=(lambda i: dataset[i].image) if dataset is not None else None,
                     extra=extra)
        table = Table(title=title)
        for col in ("metric", "reference", "artifact"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for row in summary_rows(comp):
            table.add_row(*row)
        console.print(table)
        if degrade:
            console.print(extra["markdown"]["degradations"])
        verdict = "[green]PASS[/green]" if comp.passed else "[red]FAIL[/red]: " + "; ".join(comp.reasons)
        console.print(f"{verdict}  (report: {out / 'report.md'})")
    if not comp.passed:
        raise typer.Exit(1)


def reopen(ref):
    """The reference's labelled set, if it can still be opened here (for montage crops and re-scoring)."""
    from .data.sources import open_set

    spec = ref.header.get("data")
    region = ref.header.get("detector", {}).get("region", "mouth")
    try:
        return open_set(spec, region) if spec else None
    except ValueError:
        return None


def score_bundle(bundle: Path, dataset, threads: int):
    from .eval.scores import score_set
    from .runtimes import open_bundle

    if dataset is None:
        raise ValueError(f"{bundle}: the reference's data cannot be opened here, so the bundle cannot be scored on it")
    runner, manifest = open_bundle(bundle, threads)
    with progress_bar(f"{manifest['target']}-{manifest['precision']}", len(dataset)) as advance:
        scores = score_set(runner, dataset, progress=advance)
    scores.header.update(model=f"{manifest['target']}-{manifest['precision']} bundle {bundle}", data=dataset.description,
                         threshold=float(manifest["probe"]["threshold_logit"]) if "probe" in manifest else 0.0)
    return scores, runner


def degradation_report(ref, runner, dataset, spec: str) -> dict:
    """Reference (torch, rebuilt from the reference's recorded detector) and artifact on each degraded copy."""
    from .data.degrade import apply, parse_spec
    from .eval.scores import resolve_device, score_set, torch_runner
    from .eval.validate import Budget, compare
    from .models.factory import DetectorSpec, build_detector

    det = build_detector(DetectorSpec(**ref.header["detector"]))
    reference_run = torch_runner(det, resolve_device("auto"))
    rows, records = ["| degradation | reference AUC | artifact AUC | ΔAUC | DeLong p | flips | max abs Δlogit |",
                     "|---|---|---|---|---|---|---|"], []
    for d in parse_spec(spec):
        transform = lambda image, i, d=d: apply(image, d, seed=i)  # noqa: E731 - one seed per sample, same for both
        with progress_bar(d.label, 2 * len(dataset)) as advance:
            r = score_set(reference_run, dataset, batch=8, transform=transform, progress=advance)
            a = score_set(runner, dataset, transform=transform, progress=advance)
        r.header.update(threshold=ref.threshold)
        a.header.update(threshold=ref.threshold)
        c = compare(r, a, Budget(1.0))
        rows.append(f"| {d.label} | {c.reference.auc:.4f} | {c.artifact.auc:.4f} | {c.delta_auc * 100:+.2f} pp | "
                    f"{c.delong.p_value:.3g} | {c.agreement.flip_rate:.2%} | {c.agreement.max_abs:.3g} |")
        records.append({"degradation": d.label, "comparison": c.to_json()})
    return {"degradations": records, "markdown": {"degradations": "\n".join(rows)}}


@app.command()
def quantize(
    target: Annotated[list[str], typer.Option(help="onnx, openvino, coreml, tflite or all (repeatable).")] = ["all"],  # noqa: B006
    precision: Annotated[Optional[list[str]], typer.Option(help="Rungs (repeatable): int8, int8-weights, int4-weights, mixed, palette6, palette4; default: every rung of each target.")] = None,
    calib: Annotated[str, typer.Option(help="Calibration crops: DIR, list file, toy or toy:SPLIT:N.")] = "toy",
    calib_size: Annotated[int, typer.Option(help="Calibration crops used (a warning below 100).")] = 300,
    val: Annotated[str, typer.Option(help="Validation split for the AUC gate (labelled crops).")] = "toy:val:200",
    max_auc_drop: Annotated[float, typer.Option(help="Largest allowed AUC drop vs torch FP32, as a fraction (0.005 = 0.5 pp).")] = 0.005,
    min_mask_agreement: Annotated[float, typer.Option(help="Smallest allowed token-mask agreement.")] = 0.99,
    accuracy_iterations: Annotated[int, typer.Option(help="Bound on NNCF accuracy-control iterations (mixed rung).")] = 3,
    out: Annotated[Path, typer.Option(help="Bundles go to OUT/NAME/TARGET-PRECISION.")] = Path("dist"),
    name: Annotated[Optional[str], typer.Option(help="Bundle set name (default: the preset).")] = None,
    preset: Preset = "toy",
    dinov3: Dinov3Path = None,
    parser: ParserPath = None,
    probe: ProbePath = None,
    region: Region = "mouth",
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Allow a preset without weight files.")] = False,
) -> None:
    """Compress each target below fp16; a rung is shipped only if it passes the AUC-drift gate on --val."""
    from .export.targets import resolve
    from .quantize.ladder import run_ladder

    with user_errors():
        targets = resolve(target)
        rungs = [(t, p) for t in targets for p in (precision or t.quantized) if p in t.quantized]
        unknown = sorted({p for p in precision or [] if not any(p in t.quantized for t in targets)})
        if unknown:
            raise ValueError(f"no selected target has the rung '{unknown[0]}' (see docs/export.md)")
        spec = detector_spec(preset, dinov3, parser, probe, "region", region, 224)
        check_weights(preset, dinov3, parser, random_weights)
        quiet_converters()
        log_path = out / (name or preset) / "quantize.log"
        try:
            with converter_output(log_path) as user:
                results = run_ladder(spec, rungs, out, name or preset, calib, calib_size, val, max_auc_drop,
                                     min_mask_agreement, accuracy_iterations, log=lambda m: user.print(m, highlight=False))
        finally:
            err_console.print(f"converter output: {log_path}", highlight=False)
    table = Table(title=f"quantize '{name or preset}' -> {out / (name or preset)}  (gate: ΔAUC ≥ -{max_auc_drop * 100:.2f} pp "
                        f"on {val}, mask agreement ≥ {min_mask_agreement})")
    for col in ("target", "precision", "status", "size MB", "max |Δlogit|", "mean |Δlogit|", "mask agr.", "AUC", "ΔAUC pp",
                "p50 ms", "tool"):
        table.add_column(col)
    for r in results:
        table.add_row(*r.row())
    console.print(table)
    for r in results:
        for line in r.accuracy_lines():
            console.print(line, highlight=False, markup=False)
    console.print(f"report: {out / (name or preset) / 'quantize-report.md'}")
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


@app.command()
def build(
    config: Annotated[Optional[Path], typer.Option(help="TOML build file (keys as these options, snake_case); options given here override it.")] = None,
    target: Annotated[Optional[list[str]], typer.Option(help="onnx, openvino, coreml, tflite or all (repeatable; default all).")] = None,
    precision: Annotated[Optional[list[str]], typer.Option(help="fp32, fp16 or a quantized rung (repeatable; default: every precision of each target).")] = None,
    region_index: Annotated[Optional[list[str]], typer.Option("--region-index", help="Region-index rung(s) (repeatable; default exact): exact, lite-head, parser-224, distilled.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="dist folder; the set goes to OUT/NAME (default dist).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Bundle set name (default: the preset).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Model preset: toy (shipped toy world, default), full, tiny.")] = None,
    dinov3: Dinov3Path = None,
    parser: ParserPath = None,
    probe: ProbePath = None,
    region_head: RegionHeadPath = None,
    calib: Annotated[Optional[str], typer.Option(help="Calibration crops for quantized rungs: DIR, list, toy (default).")] = None,
    calib_size: Annotated[Optional[int], typer.Option(help="Calibration crops used (default 300).")] = None,
    data: Annotated[Optional[str], typer.Option(help="Labelled validation crops for every gate (default toy:val:200).")] = None,
    max_auc_drop: Annotated[Optional[float], typer.Option(help="Largest allowed AUC drop vs torch FP32 (default 0.005 = 0.5 pp).")] = None,
    bench_runs: Annotated[Optional[int], typer.Option(help="Timed runs per bundle (default 10).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Runtime threads for the benchmark (default 0 = all cores).")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Allow a preset without weight files (timing and size only).")] = False,
) -> None:
    """The main job: export -> quantize -> validate -> bench -> package every target x precision (x region index);
    a summary table and dist/NAME/ with one folder per bundle and report.md. Exit 1 unless every bundle passed."""
    from .build import make_config, read_config, run_build

    quiet_converters()
    with user_errors():
        values = read_config(config) if config else {}
        given = {"targets": target, "precisions": precision, "region_indexes": region_index, "dist": out, "name": name,
                 "preset": preset, "dinov3": dinov3, "parser": parser, "probe": probe, "region_head": region_head,
                 "calib": calib, "calib_size": calib_size, "data": data, "max_auc_drop": max_auc_drop,
                 "bench_runs": bench_runs, "threads": threads}
        cfg = make_config({**values, **{k: v for k, v in given.items() if v}})
        spec = cfg.spec
        check_weights(spec.preset, spec.dinov3, spec.parser, random_weights)
        plan = cfg.plan()
        log_path = Path(cfg.dist) / f".{cfg.set_name}.build.log"
        try:
            with converter_output(log_path) as user, build_progress(len(plan) * 2 + 1, user) as (log, advance):
                rows, final = run_build(cfg, log=log, advance=advance)
        except Exception:
            err_console.print(f"converter output: {log_path}", highlight=False)
            raise
        log_path.replace(final / "build.log")
    from .build import COLUMNS

    table = Table(title=f"dfedge build '{cfg.set_name}' -> {final}  (gate: ΔAUC ≥ -{cfg.max_auc_drop * 100:.2f} pp on "
                        f"{cfg.data}; × torch = torch FP32 eager p50 / p50)")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("region index", "target", "precision", "status") else "right")
    for row in rows:
        table.add_row(*row.cells())
    console.print(table)
    failed = [r for r in rows if r.status != "ok"]
    console.print(f"{len(rows) - len(failed)}/{len(rows)} bundles passed; report: {final / 'report.md'}; "
                  f"converter output: {final / 'build.log'}")
    if failed:
        raise typer.Exit(1)


def quiet_converters() -> None:
    """NNCF logs every op it skips at INFO; the build's own log and summary say what happened. torchao (imported
    by the TFLite INT8 path) warns at import that its CUDA kernels do not load: meaningless on a CPU build."""
    import logging

    import nncf  # it sets its logger's level when imported: set ours after that

    nncf.set_log_level(logging.WARNING)
    logging.getLogger("torchao").setLevel(logging.ERROR)


@contextlib.contextmanager
def converter_output(path: Path):
    """Everything the converters print while a command runs (C++ logs, progress bars, warnings) goes to `path`;
    yields a Console on the user's stderr for the command's own progress. Redirected at the file descriptors 1 and
    2, not sys.stdout: LiteRT, OpenVINO and absl write from C++ straight to them."""
    import os
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    user = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    shown, ours = warnings.showwarning, str(Path(__file__).parent)

    def show(message, category, filename, lineno, file=None, line=None):  # the kit's own warnings stay visible
        if str(filename).startswith(ours):
            user.write(f"warning: {message}\n")
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        with open(path, "w", buffering=1, encoding="utf-8", errors="replace") as log:
            streams = sys.stdout, sys.stderr
            for fd in saved:
                os.dup2(log.fileno(), fd)
            sys.stdout = sys.stderr = log  # Python-level prints and tracebacks too, wherever sys.std* pointed
            try:
                yield Console(file=user, emoji=False)
            finally:
                log.flush()
                sys.stdout, sys.stderr = streams
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
    finally:
        warnings.showwarning = shown
        user.close()
        for copy in saved.values():
            os.close(copy)


@contextlib.contextmanager
def build_progress(total: int, console: Console):
    """(log, advance): log lines print above one progress bar over all steps."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("build"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=console, transient=True) as progress:
        task = progress.add_task("", total=total)

        def log(message: str) -> None:
            progress.console.print(message, highlight=False)
            progress.update(task, description=message[:60])

        yield log, lambda n=1: progress.advance(task, n)


@app.command()
def bench(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders, or a dist/NAME folder of bundles.")],
    runs: Annotated[int, typer.Option(help="Timed single-face runs per bundle.")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs.")] = 3,
    threads: Annotated[int, typer.Option(help="Threads for every runtime and torch (0 = all cores).")] = 0,
    device: Annotated[str, typer.Option(help="OpenVINO device: CPU, GPU, NPU, AUTO.")] = "CPU",
    label: Annotated[Optional[str], typer.Option(help="Device name for merged reports (default: host and CPU model).")] = None,
    reference: Annotated[bool, typer.Option(help="Also time torch FP32 eager (the ratios' denominator).")] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write all results here (dfedge report merge reads it).")] = None,
) -> None:
    """Time bundles (each in its own process, through its own bench.py) against torch FP32 eager in the same run."""
    from .runtimes.bench import bench_set, find_bundles
    from .runtimes.standalone import write_json

    with user_errors():
        if runs < 1 or warmup < 0:
            raise ValueError("--runs must be >= 1 and --warmup >= 0")
        paths = find_bundles(bundles)
        with progress_bar("bench", len(paths) + (1 if reference else 0)) as advance:
            result = bench_set(paths, runs, warmup, threads, device, label, reference, progress=lambda _: advance())
    table = Table(title=f"dfedge bench ({runs} runs after {warmup} warm-up, threads {threads or 'all'})")
    for col in ("bundle", "target", "precision", "status", "size MB", "load s", "p50 ms", "p90 ms", "p99 ms", "FPS",
                "peak RSS MB", "× torch"):
        table.add_column(col, justify="left" if col in ("bundle", "target", "precision", "status") else "right")
    for r in result["results"] + result["references"]:
        lat = r.get("latency_ms") or {}
        f = lambda v, spec=".1f": "-" if v is None else format(v, spec)  # noqa: E731
        table.add_row(r.get("bundle", "?"), r.get("target", "?"), r.get("precision", "?"),
                      "ok" if r.get("status") == "ok" else f"{r.get('status')}: {r.get('reason', '')}"[:70],
                      f(r.get("size_mb"), ".2f"), f(r.get("load_s"), ".2f"), f(lat.get("p50")), f(lat.get("p90")),
                      f(lat.get("p99")), f(r.get("fps")), f(r.get("peak_rss_mb"), ".0f"), f(r.get("speedup_vs_torch"), ".2f"))
    console.print(table)
    if json_out:
        write_json(json_out, result)
        console.print(f"results: {json_out}")
    if any(r.get("status") == "error" for r in result["results"]):
        raise typer.Exit(1)


report_app = typer.Typer(no_args_is_help=True, help="Combine results.")
app.add_typer(report_app, name="report")


@report_app.command("merge")
def report_merge(
    results: Annotated[list[Path], typer.Argument(help="Result JSONs of bench.py or dfedge bench --json, from any devices.")],
    out: Annotated[Path, typer.Option(help="Folder for merged.md, merged.json and latency.png.")] = Path("bench-report"),
) -> None:
    """One table (device x target x precision) and a latency chart from many devices' bench results."""
    from .runtimes.report import COLUMNS, cell, merge

    with user_errors():
        rows, files = merge(results, out)
    table = Table(title=f"latency across devices ({len(results)} files)")
    for col in COLUMNS:
        table.add_column(col)
    for row in rows:
        table.add_row(*(cell(row, c) for c in COLUMNS))
    console.print(table)
    console.print(f"wrote {files['markdown']}, {files['json']}, {files['chart']}")


def check_weights(preset: str, dinov3, index_file, random_weights: bool, flag: str = "--parser") -> None:
    from .models.factory import DETECTOR_PRESETS

    if not DETECTOR_PRESETS[preset].shipped and not (dinov3 and index_file) and not random_weights:
        raise ValueError(f"preset '{preset}' has no weights: pass --dinov3 and {flag}, or --random-weights")


@app.command("make-toy")
def make_toy(
    out: Annotated[Path, typer.Argument(help="Folder to write real/ and fake/ aligned crops (PNG) into.")],
    count: Annotated[int, typer.Option(help="How many toy faces.")] = 16,
    split: Annotated[str, typer.Option(help="Toy split: train, val, test.")] = "test",
    region: Region = "mouth",
) -> None:
    """Write toy-world crops as an image folder (real/, fake/), the layout fit-probe and score read."""
    from PIL import Image

    from .data.synthetic import toy_sample
    from .models.checkpoint import atomic_write

    with user_errors():
        counts = {"real": 0, "fake": 0}
        for i in range(count):
            s = toy_sample(i, split, region)
            kind = "fake" if s.fake else "real"
            counts[kind] += 1
            path = out / kind / f"toy-{split}-{i:05d}.png"
            atomic_write(path, lambda tmp: Image.fromarray(s.image).save(tmp, format="PNG"))
    console.print(f"wrote {counts['real']} real and {counts['fake']} fake toy crops to {out}/")
    console.print(f"next: dfedge score {out}/fake/*.png")


@app.command("convert-parser")
def convert_parser_cmd(
    src: Annotated[Path, typer.Argument(help="facer TorchScript parser (.pt).")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors (a .json manifest is written beside it).")],
    label_set: Annotated[Optional[str], typer.Option(help="lapa or celebm; default: from the class count.")] = None,
    sha256: Sha = None,
) -> None:
    """Convert a facer TorchScript parser once, so later runs never deserialise TorchScript."""
    from .models.farl import convert_parser

    with user_errors():
        if dst.suffix != ".safetensors":
            raise ValueError(f"{dst}: output must end in .safetensors")
        manifest = convert_parser(src, dst, label_set=label_set, sha256=sha256)
    cfg = manifest["config"]
    console.print(
        f"wrote {dst} ({cfg['label_set']}, {len(manifest['label_names'])} classes, width {cfg['width']}, "
        f"{cfg['layers']} layers, out_size {cfg['out_size']}) and {dst.with_suffix('.json')}"
    )
    console.print(f"next: dfedge score CROP.png --parser {dst} --dinov3 DINOV3.pth --probe PROBE.safetensors")


@app.command("distill-region-head")
def distill_region_head_cmd(
    faces: Annotated[str, typer.Option(help="Aligned crops to distill on: a folder (searched recursively, labels ignored) or toy[:N].")] = "toy:1000",
    out: Annotated[Path, typer.Option(help="Head file (.safetensors); the training manifest goes beside it as .json.")] = Path("region_head.safetensors"),
    preset: Preset = "toy",
    dinov3: Dinov3Path = None,
    parser: ParserPath = None,
    dinov3_input: Dinov3Input = 224,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1500,
    hidden: Annotated[int, typer.Option(help="Hidden width of the head (0 = linear).")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the split and the initialisation.")] = 0,
) -> None:
    """Train the distilled region index: a small head on DINOv3 patch tokens, taught by the exact parser's
    token-level soft labels (no human labels). Then: dfedge score ... --region-index distilled --region-head OUT."""
    from .models.factory import build_detector, shipped_file
    from .train.distill import DistillSettings, distill

    with user_errors():
        if out.suffix != ".safetensors":
            raise ValueError(f"{out}: output must end in .safetensors")
        spec = detector_spec(preset, dinov3, parser, None, "region", "mouth", dinov3_input)
        exact = build_detector(spec)
        sources = {part: getattr(spec, part) or shipped_file(preset, part) for part in ("dinov3", "parser")}
        manifest = distill(exact, faces, out, sources, DistillSettings(steps=steps, hidden=hidden, seed=seed),
                           log=lambda m: err_console.print(m, highlight=False))
    a = manifest["agreement"]
    console.print(f"wrote {out} and {out.with_suffix('.json')}: held-out {a['region']} masks vs exact on {a['faces']} "
                  f"faces: tokens {a['token_agreement']:.2%}, identical {a['exact_faces']:.1%}, IoU {a['mean_iou']:.3f}")
    console.print(f"next: dfedge region-index-report --region-index distilled --region-head {out} --data LABELLED")


@app.command("region-index-report")
def region_index_report_cmd(
    data: Data = "toy:test:400",
    rung: Annotated[Optional[list[str]], typer.Option("--region-index", help="Rung(s) to compare with exact (repeatable); default: all.")] = None,
    out: Annotated[Path, typer.Option(help="Markdown report (a .json with the numbers is written beside it).")] = Path("region-index-report.md"),
    preset: Preset = "toy",
    dinov3: Dinov3Path = None,
    parser: ParserPath = None,
    probe: ProbePath = None,
    region_head: RegionHeadPath = None,
    head: Head = "region",
    region: Region = "mouth",
    dinov3_input: Dinov3Input = 224,
    batch: Annotated[int, typer.Option(help="Crops per forward pass.")] = 8,
) -> None:
    """Every region-index rung against exact on one labelled set: mask agreement, count drift, ΔAUC (DeLong),
    GFLOPs and latency, to choose a rung from measurements."""
    from .data.sources import open_set
    from .models.ladder import RUNGS
    from .train.region_report import COLUMNS, region_index_report, rows, write_report

    with user_errors():
        spec = detector_spec(preset, dinov3, parser, probe, head, region, dinov3_input)
        dataset = open_set(data, region)
        rungs = rung or list(RUNGS)
        with progress_bar(f"{len(rungs)} rungs on {data}", len(dataset) * len(set(rungs) | {"exact"})) as advance:
            reports = region_index_report(spec, rungs, dataset, str(region_head) if region_head else None, batch,
                                          progress=lambda r, n: advance(n))
        write_report(reports, data, spec, out)
    table = Table(title=f"region-index ladder vs exact on {data} ({preset})")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "rung" else "right")
    for row in rows(reports):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {out} (+ {out.with_suffix('.json')})")


def run() -> None:  # pragma: no cover - console entry alias
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
