"""The `dfedge` command line. Commands parse options, call the library and print; nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._version import __version__
from .options import BENCH, ENGINE, GATE, HEAD_FIT, MODEL, PLAN, SCORE, SUMMARY, WEIGHTS, Options, at_least_one, fraction, host_threads, metavar, takes, threshold_rule
from .terminal import (clean_up_on_termination, console, converter_output, err_console, print_summary, progress_bar,
                       quiet_converters, step_progress, table, user_errors)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Export, compress, validate and package the region-indexed deepfake detector.")

Data = Annotated[str, typer.Option(help="Labelled crops: DIR with real/ and fake/, a CSV/JSONL list, or toy:SPLIT:N.")]
Crops = Annotated[str, typer.Option(help="Aligned crops to distill on: a folder (searched recursively, labels ignored) or toy[:N].")]
Seed = Annotated[int, typer.Option(help="Seed of the split and the initialisation.")]


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context, version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    clean_up_on_termination(ctx)
    if version:  # alone: without a command (no_args_is_help covers no arguments at all)
        console.print(__version__)
        raise typer.Exit()


@app.command()
@takes("head", "dinov3_input")
def info(
    preset: Annotated[Optional[list[str]], typer.Option(metavar=metavar("preset"), help="Preset(s) to describe; default: all.")] = None,
    region_index: Annotated[Optional[list[str]], typer.Option("--region-index", metavar=metavar("region_index"), help="Region-index rung(s) for the ladder table; default: all.")] = None,
    opts: Options = None,
) -> None:
    """Configurations, parameter counts and GFLOPs of the fused graph per preset (counted on meta tensors), and
    GFLOPs per component for every rung of the region-index ladder."""
    from .models.factory import BACKBONE_COLUMNS, DETECTOR_PRESETS, LADDER_PARTS, backbone_grid, describe, ladder_gflops
    from .models.ladder import RUNGS, rung

    with user_errors():
        for name in preset or list(DETECTOR_PRESETS):
            spec = opts.spec(loads_weights=False, preset=name)  # (counted on meta tensors)
            rows = describe(spec)
            console.print(table(f"preset '{name}': {DETECTOR_PRESETS[name].description}",
                                ("component", "config", "parameters", "GFLOPs / face"),
                                [(c, d, f"{n / 1e6:,.2f} M", f"{f:,.2f}") for c, d, n, f in rows], ("component", "config")))
            flops = {c: f for c, _, _, f in rows}
            console.print(f"parser share of compute: {(flops['parser backbone'] + flops['parser head']) / flops['total']:.1%}\n")
            ladder = [(r, *(f"{f[p]:,.2f}" for p in LADDER_PARTS), f"{flops['total'] / f['total']:.1f}×", rung(r).description)
                      for r, f in ladder_gflops(spec, region_index or list(RUNGS)).items()]
            console.print(table(f"preset '{name}': region-index ladder, GFLOPs / face",
                                ("region index", *LADDER_PARTS, "× fewer than exact", "what runs"), ladder, ("region index", "what runs")))
            console.print(table(f"preset '{name}': backbone × region index, GFLOPs / face (student: "
                                f"{DETECTOR_PRESETS[name].student} + adapter)", BACKBONE_COLUMNS,
                                backbone_grid(spec, region_index or list(RUNGS)), BACKBONE_COLUMNS[:2]))


@app.command()
@takes(*MODEL, *SCORE, *ENGINE)
def score(
    paths: Annotated[list[Path], typer.Argument(help="Photos (JPEG, PNG, WebP, HEIC...), videos (mp4, mov, webm, mkv), folders of them, or aligned crops (--aligned).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write JSON lines here instead of stdout.")] = None,
    temporal: Annotated[bool, typer.Option("--temporal", help="A video's verdict from SDR's temporal head over windows of its frames (a video bundle's, or --temporal-head).")] = False,
    temporal_head: Annotated[Optional[Path], typer.Option(help="The torch model's temporal head (fit-temporal); default the preset's.")] = None,
    stride: Annotated[Optional[int], typer.Option(help="With --temporal: frames between window scores (default: the window; 1: sliding).")] = None,
    opts: Options = None,
) -> None:
    """One JSON line per face of a photo, per video, per aligned crop: status (ok, no_face, no_region,
    implausible_region, unreadable, model_error), reason, face box and landmarks, probability and decision (only
    when ok), region tokens and the top contributing tokens."""
    from .scoring import ScoreOptions, open_detector, random_weights, records, write_records

    with user_errors():
        settings = ScoreOptions(**{k: opts[k] for k in SCORE if k != "bundle"}, temporal=temporal, stride=stride)
        det = open_detector(*(opener := (opts["bundle"], opts.spec() if not opts["bundle"] else None, (temporal_head or True) if temporal else None)))
        if random := random_weights(det.manifest):
            err_console.print(f"[yellow]warning[/yellow]: seeded random {', '.join(random)}: not a detector's scores")
        write_records(records(opts.engine(output and output.with_name(output.name + ".partial")), opener, det, paths, settings), output, paths)


@app.command("fit-probe")
@takes(*WEIGHTS, "region", "region_index", "region_head", "batch", *HEAD_FIT)
def fit_probe_cmd(
    data: Annotated[str, typer.Option(help="Training set: toy[:split[:N]], a folder with real/ and fake/, or a CSV/JSONL list.")] = "toy",
    val: Annotated[Optional[str], typer.Option(help="Validation set (same forms); default toy:val for toy data.")] = None,
    head: Annotated[Optional[list[str]], typer.Option(metavar=metavar("head"), help="Head(s) to fit, repeatable (default region).")] = None,
    threshold: Annotated[str, typer.Option(callback=threshold_rule, help="Operating threshold rule: eer or fpr:0.05.")] = "eer",
    out: Annotated[Path, typer.Option(help="Probe file (.safetensors); several heads get -HEAD suffixes.")] = Path("probe.safetensors"),
    cache: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default ~/.cache/dfedge/features).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    opts: Options = None,
) -> None:
    """Fit a head's probe (logistic regression; topk and ensemble: docs/heads.md) and pick its operating threshold."""
    from .data.sources import open_set
    from .models.factory import build_detector
    from .train.probe import HeadSettings, check_classes, default_cache_dir, extract_features, fit_heads

    heads = head or ["region"]
    with user_errors():
        region = opts.spec(loads_weights=False, head=heads[0]).region
        train_set = open_set(data, region)
        check_classes(train_set.labels(), data)
        val_spec = val or (f"toy:val:400:{train_set.region}" if data.startswith("toy") else None)
        val_set = open_set(val_spec, region) if val_spec else None
        cache_dir = None if no_cache else (cache or default_cache_dir())

        def features(det, h, dataset):
            with progress_bar(f"features ({h}, {dataset.description})", len(dataset), absolute=True) as done:
                return extract_features(det, dataset, opts["batch"], cache_dir, lambda d, total: done(d))

        rows = fit_heads(lambda h: build_detector(opts.spec(head=h, random_probe=True)), heads, (train_set, val_set),
                         threshold, out, features, HeadSettings.from_options({k: opts[k] for k in HEAD_FIT}))
    console.print(table(f"probe fit: {train_set.description}" + (f", validated on {val_set.description}" if val_set else ""),
                        ("head", "region", "train AUC", "val AUC", "faces used", "no region", "threshold (logit)", "file"),
                        rows, ("head", "region", "file")))
    console.print(f"next: dfedge score PHOTO.jpg --probe {out if len(heads) == 1 else '<file>'}")


def run_plan(command: str, opts: Options, config: Path | None = None) -> None:
    """build, export and quantize: one BuildConfig (the TOML file's values, then the command line's), one pipeline,
    one table; exit 1 when a required rung did not ship or a step failed (build.outcome). What the converters print
    goes to dist/NAME.COMMAND.log while it runs, then into the set as COMMAND.log; a run that stops keeps it there."""
    from .build import run_build, writing_set
    from .config import make_config, read_config
    from .models.spec import require_weights

    with user_errors():
        random = {"random_probe": True} if opts["random_weights"] else {}  # a random model's probe is random too
        cfg = make_config({**(read_config(config) if config else {}), **random, **opts.given()}, command)
        plan, _ = cfg.plan(), cfg.required()  # both checked before any work
        for spec in [*map(cfg.rung_spec, cfg.region_indexes), *([cfg.reference_spec] if cfg.data else [])]:
            require_weights(spec, bool(opts["random_weights"]))  # the gate's reference: exact, on the teacher
        quiet_converters()
        log_path = Path(cfg.dist) / f"{cfg.set_name}.{command}.log"
        steps = 1 + len(plan) + (len(plan) + len(cfg.region_indexes) if cfg.bench_runs else 0)  # bench: bundles, references
        with writing_set(Path(cfg.dist), cfg.set_name):  # the set and its log: another command on them is refused
            try:
                with converter_output(log_path) as user, step_progress(command, steps, user) as (log, advance):
                    rows, final = run_build(cfg, log=log, advance=advance)
            except Exception:
                if log_path.is_file() and log_path.stat().st_size:  # (an empty one, say after a bad --data, is no use)
                    err_console.print(f"dfedge {command} stopped; converter output: {log_path}", highlight=False, soft_wrap=True)
                else:
                    log_path.unlink(missing_ok=True)
                raise
            log_path.replace(final / f"{command}.log")
    if code := print_summary(cfg, rows, final, bool(opts["wide"])):
        raise typer.Exit(code)


@app.command("export")
@takes(*PLAN, *SUMMARY)
def export_cmd(opts: Options = None) -> None:
    """Export the fused detector per target x fp32/fp16 into bundles, each checked for parity against torch: a
    build narrowed to the exported precisions, without a benchmark (and without the AUC gate unless --data)."""
    run_plan("export", opts)


@app.command()
@takes(*PLAN, *GATE, *SUMMARY)
def quantize(opts: Options = None) -> None:
    """Compress each target below fp16; a rung is shipped only if it passes the AUC-drift gate on --val: a build
    narrowed to the quantized rungs."""
    run_plan("quantize", opts)


@app.command()
@takes(*PLAN, *GATE, *SUMMARY)
def build(
    config: Annotated[Optional[Path], typer.Option(help="TOML build file (keys as these options, snake_case); options given here override it.")] = None,
    opts: Options = None,
) -> None:
    """The main job: export -> quantize -> validate -> bench -> package every target x precision (x region index);
    a summary table and dist/NAME/ with one folder per bundle and report.md. Exit 1 when a required rung (--require;
    default: each target's fp32) did not ship, or any step failed (❌)."""
    run_plan("build", opts, config)


@app.command()
@takes(*WEIGHTS, "probe", "head", "region", "random_probe", "batch", *ENGINE)
def reference(
    data: Data = "toy:test:200",
    out: Annotated[Path, typer.Option(help="Scores file to write (.scores, compressed npz + JSON header).")] = Path("reference.scores"),
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")] = "auto",
    temporal: Annotated[bool, typer.Option("--temporal", help="Video level: the temporal head's score per video (OUT) and the frame mean's (OUT-frame-mean.scores).")] = False,
    temporal_head: Annotated[Optional[Path], typer.Option(help="With --temporal: the head file (fit-temporal); default the preset's.")] = None,
    opts: Options = None,
) -> None:
    """Score a labelled set with the FP32 PyTorch detector: the reference every artifact is validated against."""
    from collections import Counter

    from .eval.scores import save_scores
    from .scoring import auc, reference_scores, video_reference

    with user_errors():
        bar, engine = lambda n, dev: progress_bar(f"reference on {dev}", n), opts.engine(out.with_name(out.name + ".partial"))  # noqa: E731
        if temporal:
            scores, mean = video_reference(opts.spec(), data, device, temporal_head, bar, engine)
            save_scores(out.with_name(f"{out.stem}-frame-mean.scores"), mean)
            console.print(f"video AUC: temporal head {auc(scores):.4f}, frame mean {auc(mean):.4f}")
        else:
            scores = reference_scores(opts.spec(), data, device, opts["batch"], bar, engine)
        save_scores(out, scores)
    console.print(f"{len(scores)} {'videos' if temporal else 'samples'} ({int(scores.scored.sum())} scored) -> {out}")
    if problems := scores.header["problems"]:  # bad media is reported, never silently dropped
        kinds = Counter(p["kind"] for p in problems)
        console.print(f"[yellow]{len(problems)} media problems[/yellow] (listed in the header): "
                      + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())))


@app.command()
@takes("degrade", *ENGINE)
def validate(
    artifact: Annotated[Path, typer.Argument(help="A bundle folder (scored with its runtime) or a .scores file.")],
    reference_scores: Annotated[Path, typer.Option("--reference", help="Scores written by `dfedge reference`.")],
    max_auc_drop: Annotated[float, typer.Option(callback=fraction, help="Largest allowed AUC drop, as a fraction (0.005 = 0.5 pp).")] = 0.005,
    max_flip_rate: Annotated[float, typer.Option(callback=fraction, help="Largest allowed share of decisions flipped at the reference's threshold.")] = 0.02,
    min_correlation: Annotated[float, typer.Option(callback=fraction, help="Smallest allowed Pearson correlation of the two models' logits.")] = 0.95,
    out: Annotated[Path, typer.Option(help="Report folder: report.md, report.json, roc.png, montage.png.")] = Path("validation"),
    threads: Annotated[int, typer.Option(callback=host_threads, help="Runtime threads (0 = runtime default).")] = 0,
    opts: Options = None,
) -> None:
    """Compare an artifact with the reference of the same model on the same samples; exit 1 over the AUC, flip or
    correlation budget; refused (exit 2) when the reference was made by another model."""
    from .data.degrade import parse_spec
    from .eval import validate as v
    from .eval.scores import load_scores
    from .models.factory import DetectorSpec, build_detector
    from .runtimes import torch_runner
    from .runtimes.reference import resolve_device
    from .scoring import artifact_scores, reference_data

    with user_errors():
        ref = load_scores(reference_scores)
        dataset = reference_data(ref)
        if (degrade := opts["degrade"]) and (not artifact.is_dir() or ref.header.get("level") == "video"):
            raise ValueError("--degrade needs a bundle folder and a per-face reference: degraded inputs are re-run face by face")
        art, runner = artifact_scores(artifact, ref, (str(reference_scores), str(artifact)), dataset, threads,
                                      lambda n, label: progress_bar(label, n), out / "artifact.scores", engine := opts.engine(out / "artifact.partial"))
        comp = v.compare(ref, art, v.Budget(max_auc_drop, max_flip_rate, min_correlation))
        extra = {}
        if degrade:
            if "detector" not in ref.header:
                raise ValueError(f"{reference_scores}: its header does not say which model made it (`dfedge reference` does)")
            reference_run = torch_runner(build_detector(DetectorSpec(**ref.header["detector"])), resolve_device("auto"))
            with progress_bar("degradations", 2 * len(dataset) * len(parse_spec(degrade))) as advance:
                extra = v.degradation_report(reference_run, runner, dataset, degrade, ref.threshold, progress=advance)
        title = f"validate {artifact}"
        v.write_report(comp, ref, art, out, title, load_image=(lambda i: dataset[i].image) if dataset is not None and "level" not in ref.header else None,
                     extra=extra)
    console.print(table(title, ("metric", "reference", "artifact"), v.summary_rows(comp), ("metric",)))
    if degrade:
        console.print(extra["markdown"]["degradations"])
    verdict = "[green]PASS[/green]" if comp.passed else "[red]FAIL[/red]: " + "; ".join(comp.reasons)
    console.print(f"{verdict}  (report: {out / 'report.md'})")
    if not comp.passed:
        raise typer.Exit(1)


@app.command()
@takes(*BENCH)
def bench(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders, or a dist/NAME folder of bundles.")],
    reference: Annotated[bool, typer.Option(help="Also time torch FP32 eager (the ratios' denominator).")] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write all results here (dfedge report merge reads it).")] = None,
    opts: Options = None,
) -> None:
    """Time bundles (each in its own process, through its own bench.py) against torch FP32 eager in the same run;
    with --image, a photo to verdicts through each bundle too."""
    from .runtimes.benchmark import COLUMNS, BenchRun, bench_set, find_bundles, reference_spec, table_rows
    from .device.files import write_json

    with user_errors():
        how = BenchRun(**dict(opts, threads=opts["threads"] or 0))
        paths = find_bundles(bundles)
        with progress_bar("bench", len(paths) + (1 if reference else 0)) as advance:
            result = bench_set(paths, how, reference_spec if reference else None, progress=lambda _: advance())
        if json_out:
            write_json(json_out, result)
    console.print(table(f"dfedge bench ({how.runs} runs after {how.warmup} warm-up, threads {how.threads or 'all'})", COLUMNS,
                        table_rows(result), COLUMNS[:4]), *([f"results: {json_out}"] if json_out else []))
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
    console.print(table(f"latency across devices ({len(results)} files)", COLUMNS,
                        [[cell(row, c) for c in COLUMNS] for row in rows], COLUMNS))
    console.print(f"wrote {files['markdown']}, {files['json']}, {files['chart']}")


@app.command("fit-temporal")
@takes(*WEIGHTS, "batch")
def fit_temporal_cmd(
    data: Annotated[str, typer.Option(help="Training clips: toyvideo:SPLIT:N[:T], or frames grouped by video (a list with video ids; equally many per video).")] = "toyvideo:train:320",
    val: Annotated[Optional[str], typer.Option(help="Held-out clips (same forms); default toyvideo:val:160 for toy data.")] = None,
    out: Annotated[Path, typer.Option(help="Temporal head file (.safetensors).")] = Path("temporal.safetensors"),
    views: Annotated[str, typer.Option(help="SDR's perturbed views, comma-separated: dropout, shuffle, jitter; 'none' for the clean input only.")] = "dropout,jitter",
    consistency: Annotated[float, typer.Option(help="Weight of the views' agreement with the clean window (0: off).")] = 0.2,
    contrastive: Annotated[float, typer.Option(help="Weight of the supervised contrastive term over the views (0: off).")] = 0.2,
    steps: Annotated[int, typer.Option(callback=at_least_one, help="Optimiser steps.")] = 300,
    opts: Options = None,
) -> None:
    """Fit SDR's temporal head on the frame encoder's per-frame region features (the region head's detector, frozen);
    report video-level AUC of the temporal head and of the frame mean on the held-out clips."""
    from .train.temporal import TemporalSettings, fit_from_sets

    with user_errors():
        settings = TemporalSettings.parse(views, consistency=consistency, contrastive=contrastive, steps=steps)
        rows = fit_from_sets(opts.spec(head="region"), data, val, settings, out, log=lambda m: err_console.print(m, highlight=False))
    console.print(table(f"temporal head: {data}", ("model", "clips", "video AUC (train)", "video AUC (held out)"), rows, ("model",)),
                  f"\nwrote {out}; next: dfedge build --temporal {out} (video bundles), dfedge score CLIP.mp4 --temporal --temporal-head {out}")


@app.command("make-toy")
@takes("region")
def make_toy(
    out: Annotated[Path, typer.Argument(help="Folder to write real/ and fake/ aligned crops (PNG) into.")],
    count: Annotated[int, typer.Option(callback=at_least_one, help="How many toy faces.")] = 16,
    split: Annotated[str, typer.Option(help="Toy split: train, val, test.")] = "test",
    video: Annotated[bool, typer.Option("--video", help="Toy clips instead (mp4, a talking face on a background; fakes' mouths inconsistent frame to frame).")] = False,
    opts: Options = None,
) -> None:
    """Write toy-world crops as an image folder (real/, fake/), the layout fit-probe and score read; or toy clips."""
    from .data.sources import write_toy

    with user_errors():
        counts = write_toy(out, count, split, opts.spec(loads_weights=False).region, video)
    console.print(f"wrote {counts['real']} real and {counts['fake']} fake toy {'clips' if video else 'crops'} to {out}/")
    console.print(f"next: dfedge score {out}/fake --temporal" if video else f"next: dfedge score --aligned {out}/fake")


@app.command("convert-parser")
def convert_parser_cmd(
    src: Annotated[Path, typer.Argument(help="facer TorchScript parser (.pt).")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors (a .json manifest is written beside it).")],
    label_set: Annotated[Optional[str], typer.Option(help="lapa or celebm; default: from the class count.")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Expected SHA-256 of SRC (all 64 hex digits).")] = None,
    trust_torchscript: Annotated[bool, typer.Option("--trust-torchscript", help="Read SRC with torch.jit.load, running its code.")] = False,
    parser_heads: Annotated[Optional[int], typer.Option(help="Attention heads of SRC's ViT, when SRC records none and matches no preset.")] = None,
) -> None:
    """Convert a facer TorchScript parser once, so later runs never deserialise TorchScript."""
    from .models.farl import convert_parser

    with user_errors():
        if dst.suffix != ".safetensors":
            raise ValueError(f"{dst}: output must end in .safetensors")
        manifest = convert_parser(src, dst, label_set, sha256, trust_torchscript, parser_heads)
    cfg = manifest["config"]
    console.print(f"wrote {dst} ({cfg['label_set']}, {len(manifest['label_names'])} classes, width {cfg['width']}, "
                  f"{cfg['layers']} layers, out_size {cfg['out_size']}) and {dst.with_suffix('.json')}\n"
                  f"next: dfedge score PHOTO.jpg --parser {dst} --dinov3 DINOV3.pth --probe PROBE.safetensors")


@app.command("distill-region-head")
@takes(*WEIGHTS)
def distill_region_head_cmd(
    faces: Crops = "toy:1000",
    out: Annotated[Path, typer.Option(help="Head file (.safetensors); the training manifest goes beside it as .json.")] = Path("region_head.safetensors"),
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1500,
    hidden: Annotated[int, typer.Option(help="Hidden width of the head (0 = linear).")] = 256,
    seed: Seed = 0,
    opts: Options = None,
) -> None:
    """Train the distilled region index: a small head on DINOv3 patch tokens, taught by the exact parser's
    token-level soft labels (no human labels). Then: dfedge score ... --region-index distilled --region-head OUT."""
    from .models.factory import build_detector, shipped_file
    from .train.distill import DistillSettings, distill

    with user_errors():
        if out.suffix != ".safetensors":
            raise ValueError(f"{out}: output must end in .safetensors")
        spec = opts.spec(head="region", region="mouth")
        exact = build_detector(spec)
        sources = {part: getattr(spec, part) or shipped_file(spec.preset, part) for part in ("dinov3", "parser")}
        manifest = distill(exact, faces, out, sources, DistillSettings(steps=steps, hidden=hidden, seed=seed),
                           log=lambda m: err_console.print(m, highlight=False))
    a = manifest["agreement"]
    console.print(f"wrote {out} and {out.with_suffix('.json')}: held-out {a['region']} masks vs exact on {a['faces']} "
                  f"faces: tokens {a['token_agreement']:.2%}, identical {a['exact_faces']:.1%}, IoU {a['mean_iou']:.3f}\n"
                  f"next: dfedge region-index-report --region-index distilled --region-head {out} --data LABELLED")


@app.command("distill-backbone")
@takes(*WEIGHTS)
def distill_backbone_cmd(
    faces: Crops = "toy:1000",
    out: Annotated[Path, typer.Option(help="Student file (.safetensors); the training manifest goes beside it as .json.")] = Path("student.safetensors"),
    data: Annotated[Optional[str], typer.Option(help="Labelled set on which teacher and student detectors are compared (AUC, DeLong p, masks), e.g. toy:val:200.")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Start from this official DINOv3 checkpoint of the student's shape (ViT-S/16 for full; strict keys); default: from scratch.")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 4000,
    seed: Seed = 0,
    opts: Options = None,
) -> None:
    """Train a student backbone: a smaller ViT of the DINOv3 architecture (ViT-S/16 for the full preset) with an
    adapter to the teacher's width, taught to reproduce the teacher's patch tokens and CLS on unlabelled crops, so
    the teacher's probe and region head read it as they are. Then: dfedge build --backbone student --student OUT."""
    from .train.student import StudentSettings, distill_backbone, summary

    with user_errors():
        manifest = distill_backbone(opts.spec(backbone="teacher", student=None), faces, out, data, init,
                                    StudentSettings(steps=steps, seed=seed), log=lambda m: err_console.print(m, highlight=False))
    console.print("\n".join(summary(manifest, out)), highlight=False)


@app.command("region-index-report")
@takes(*WEIGHTS, "probe", "region_head", "head", "region", "random_probe", "batch")
def region_index_report_cmd(
    data: Data = "toy:test:400",
    rung: Annotated[Optional[list[str]], typer.Option("--region-index", help="Rung(s) to compare with exact (repeatable); default: all.")] = None,
    out: Annotated[Path, typer.Option(help="Markdown report (a .json with the numbers is written beside it).")] = Path("region-index-report.md"),
    opts: Options = None,
) -> None:
    """Every region-index rung against exact on one labelled set: mask agreement, count drift, ΔAUC (DeLong),
    GFLOPs and latency, to choose a rung from measurements."""
    from .data.sources import open_set
    from .eval.region_report import COLUMNS, region_index_report, rows, write_report
    from .models.ladder import RUNGS
    from .runtimes.reference import torch_runner

    with user_errors():
        spec = opts.spec(region_head=None)
        dataset = open_set(data, spec.region)
        rungs = rung or list(RUNGS)
        head = str(opts["region_head"]) if opts["region_head"] else None
        with progress_bar(f"{len(rungs)} rungs on {data}", len(dataset) * len(set(rungs) | {"exact"})) as advance:
            reports = region_index_report(spec, rungs, dataset, torch_runner, head, opts["batch"],
                                          progress=lambda r, n: advance(n))
        write_report(reports, data, spec, out)
    console.print(table(f"region-index ladder vs exact on {data} ({spec.preset})", COLUMNS, rows(reports), ("rung",)))
    console.print(f"report: {out} (+ {out.with_suffix('.json')})")


if __name__ == "__main__":  # pragma: no cover
    app()
