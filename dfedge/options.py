"""The command line's shared options, declared once: the model a command runs, the plan of a build, its gate and
benchmark. A command names the ones it takes with `@takes(...)` and receives them as one `Options` value (`opts`).

The choices shown in --help come from the tables they are about (CHOICES: DETECTOR_PRESETS, HEADS, REGIONS, RUNGS,
TARGETS); the library validates them, so a wrong value is one line naming it and the known ones (exit 2). Defaults
are the library's too: DetectorSpec's for the model (preset toy, head region, region mouth, DINOv3 input 224,
region index exact) and BuildConfig's / COMMANDS' for the plan, so a build's TOML file can set what the command
line leaves out (every option here defaults to None: not given). Every table and default is read from a module that
imports no torch (config, models.spec, heads, labels, ladder, targets), so --help answers at once
(tests/test_quick_cli.py).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import COMMANDS, BuildConfig
from .device.host import capped, cpus
from .device.image import MAX_PIXELS
from .models.heads import HEADS
from .models.labels import REGIONS
from .models.ladder import RUNGS
from .models.spec import BACKBONES, DETECTOR_PRESETS, DetectorSpec, require_weights
from .targets import PRECISIONS, TARGETS

CHOICES = {"preset": list(DETECTOR_PRESETS), "backbone": list(BACKBONES), "head": list(HEADS), "region": list(REGIONS), "region_index": list(RUNGS),
           "targets": [*TARGETS, "all"], "precisions": list(PRECISIONS)}


def metavar(name: str) -> str:
    """[a|b|c]: the choices of option `name` as --help shows them."""
    return "[" + "|".join(CHOICES[name]) + "]"


def _default(field: str) -> str:
    """A BuildConfig default as --help states it, with the commands that set their own."""
    value = {f.name: f.default for f in dataclasses.fields(BuildConfig)}[field]
    own = [f"{c} {d[field]}" for c, d in ((c, k.defaults) for c, k in COMMANDS.items()) if field in d]
    return f"default {value}" + (f"; {', '.join(own)}" if own else "")


def fraction(value: float | None) -> float | None:
    """A budget is a fraction from 0 to 1: NaN (which would pass everything) or a negative one (which would fail
    everything) is refused when the command line is read."""
    if value is not None and not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise typer.BadParameter(f"{value} is not a fraction from 0 to 1")
    return value


def threshold_rule(value: str) -> str:
    """fit-probe's --threshold, checked when the command line is read (train.probe.check_threshold_rule)."""
    from .train.probe import check_threshold_rule

    try:
        return check_threshold_rule(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def host_threads(value: int | None) -> int | None:
    """--threads: 0 (the runtime's default: all cores) up to this host's CPUs; more is capped, with one line
    (device.host.capped, the rule of every worker and thread count)."""
    if value is not None and value < 0:
        raise typer.BadParameter(f"{value}: must be at least 0")
    return None if value is None else capped("--threads", value, cpus(), "the CPUs of this host")


def at_least_one(value: int) -> int:
    if value < 1:
        raise typer.BadParameter(f"{value}: must be at least 1")
    return value


OPTIONS: dict[str, tuple[object, object]] = {
    # the model
    "preset": (Annotated[Optional[str], typer.Option(metavar=metavar("preset"), help="Model preset: " + "; ".join(
        f"{k}: {p.description}" for k, p in DETECTOR_PRESETS.items()) + ".")], None),
    "dinov3": (Annotated[Optional[Path], typer.Option(
        "--dinov3", help="DINOv3 weights: official .pth, or safetensors (official or HF layout).")], None),
    "backbone": (Annotated[Optional[str], typer.Option(
        metavar=metavar("backbone"), help="teacher: DINOv3 as published (default); student: the smaller ViT distilled "
        "from it by distill-backbone (--student; toy ships one), read by the same probe and region head.")], None),
    "student": (Annotated[Optional[Path], typer.Option(
        "--student", help="Student backbone (.safetensors from distill-backbone), with --backbone student.")], None),
    "student_sha256": (Annotated[Optional[str], typer.Option(help="Pin the student file: its full SHA-256.")], None),
    "parser": (Annotated[Optional[Path], typer.Option(
        "--parser", help="FaRL parser: converted .safetensors or facer TorchScript .pt.")], None),
    "parser_heads": (Annotated[Optional[int], typer.Option(
        help="Attention heads of the parser's ViT, for a file that records none and matches no preset's shape.")], None),
    "probe": (Annotated[Optional[Path], typer.Option("--probe", help="Probe .safetensors written by fit-probe.")], None),
    "head": (Annotated[Optional[str], typer.Option(metavar=metavar("head"), help="Head (default region, the paper's).")], None),
    "region": (Annotated[Optional[str], typer.Option(
        metavar=metavar("region"), help="Region whose tokens feed the probe (default mouth).")], None),
    "dinov3_input": (Annotated[Optional[int], typer.Option(
        help="DINOv3 input size: 224 (exact 2x area downsample of the crop, default) or 448.")], None),
    "region_index": (Annotated[Optional[str], typer.Option(
        "--region-index", metavar=metavar("region_index"), help="Region-index rung (docs/region-index.md); default exact.")], None),
    "region_head": (Annotated[Optional[Path], typer.Option(
        "--region-head", help="Distilled region head (.safetensors from distill-region-head); toy ships one.")], None),
    "dinov3_sha256": (Annotated[Optional[str], typer.Option(help="Pin the DINOv3 file: its full SHA-256 (64 hex digits).")], None),
    "parser_sha256": (Annotated[Optional[str], typer.Option(help="Pin the parser file: its full SHA-256.")], None),
    "probe_sha256": (Annotated[Optional[str], typer.Option(help="Pin the probe file: its full SHA-256.")], None),
    "region_head_sha256": (Annotated[Optional[str], typer.Option(help="Pin the distilled region head file: its full SHA-256.")], None),
    "trust_torchscript": (Annotated[bool, typer.Option(
        "--trust-torchscript", help="Read a TorchScript parser with torch.jit.load, which runs code inside the file "
        "(only for a file you trust; by default the kit reads its tensors as data).")], False),
    "random_probe": (Annotated[bool, typer.Option(
        "--random-probe", help="No probe for this head/region: score with a seeded random probe (tests only; said in every output).")], False),
    "random_weights": (Annotated[bool, typer.Option(
        "--random-weights", help="Allow a preset without weight files (seeded random weights): to size and time a graph.")], False),
    "batch": (Annotated[int, typer.Option(help="Crops per forward pass.")], 8),
    # fit-probe's head options (dfedge.train.probe.HeadSettings)
    "top_k": (Annotated[int, typer.Option(help="topk: responses kept per salience channel (LFM: 16); fixed in the probe and every graph.")], 16),
    "salience_channels": (Annotated[int, typer.Option(help="topk: salience channels (LFM: 64).")], 64),
    "rank_dropout": (Annotated[float, typer.Option(help="topk: rank-based linear dropout, the top slot's rate (training only; 0: off).")], 0.0),
    "random_k": (Annotated[bool, typer.Option("--random-k", help="topk: random-K sampling (training only).")], False),
    "vote_weights": (Annotated[Optional[str], typer.Option(help="ensemble: whole-number vote weights, one per stream (mouth,eyes,nose,skin,global), e.g. 2,1,1,1,2; default all 1.")], None),
    "vote_step": (Annotated[float, typer.Option(help="ensemble: the vote's rounding step (NTIRE: 0.1).")], 0.1),
    "calibration": (Annotated[str, typer.Option(metavar="[platt|temperature]", help="ensemble: per-stream calibration, fitted on a held-out quarter of --data.")], "platt"),
    # what dfedge score reads and writes (dfedge.scoring.ScoreOptions)
    "aligned": (Annotated[bool, typer.Option("--aligned", help="The inputs are 5-point aligned crops (no face detection).")], False),
    "faces": (Annotated[str, typer.Option(metavar="[all|largest]", help="Which faces of a photo get a record.")], "all"),
    "min_face": (Annotated[int, typer.Option(help="Smallest face side scored, in pixels.")], 20),
    "frames": (Annotated[int, typer.Option(help="Frames sampled uniformly per video (the Celeb-DF protocol: 32).")], 32),
    "fps": (Annotated[Optional[float], typer.Option(help="Sample videos at this rate instead.")], None),
    "track": (Annotated[str, typer.Option(metavar="[iou|largest]", help="How a video's face is followed: by overlap, or the largest in each frame.")], "iou"),
    "per_frame": (Annotated[bool, typer.Option("--per-frame", help="Keep each sampled frame's verdict in a video's record.")], False),
    "top": (Annotated[int, typer.Option(help="How many top-contributing tokens to list per face.")], 5),
    "save_vis": (Annotated[Optional[Path], typer.Option(help="Folder for one picture per face: box and landmarks, crop with mask and contributions.")], None),
    "max_pixels": (Annotated[int, typer.Option(help="A photo or a video frame that would decode to more pixels is refused, from its header, before decoding.")], MAX_PIXELS),
    "bundle": (Annotated[Optional[Path], typer.Option(help="Score with this bundle (its runtime and face front end) instead of the torch model.")], None),
    # the plan of dfedge build / export / quantize
    "targets": (Annotated[Optional[list[str]], typer.Option(
        "--target", metavar=metavar("targets"), help="Target(s), repeatable; default all.")], None),
    "precisions": (Annotated[Optional[list[str]], typer.Option(
        "--precision", metavar=metavar("precisions"),
        help="Precision(s), repeatable; default: every one the command builds (export: fp32, fp16; quantize: the rungs "
             "below fp16 of each target; build: all).")], None),
    "region_indexes": (Annotated[Optional[list[str]], typer.Option(
        "--region-index", metavar=metavar("region_index"),
        help="Region-index rung(s), repeatable (docs/region-index.md); default exact.")], None),
    "dist": (Annotated[Optional[Path], typer.Option("--out", help="dist folder; the set goes to OUT/NAME (default dist).")], None),
    "name": (Annotated[Optional[str], typer.Option(help="Bundle set name (default: the preset).")], None),
    "temporal": (Annotated[Optional[str], typer.Option(
        help="Video bundles: also ship SDR's temporal head (a fit-temporal file, or toy for the shipped one) as a second "
             "graph per bundle, gated at video level on --video-data (docs/temporal.md).")], None),
    "temporal_sha256": (Annotated[Optional[str], typer.Option(help="Pin the temporal head file: its full SHA-256.")], None),
    "video_data": (Annotated[Optional[str], typer.Option(
        help=f"With --temporal: the video set of the video-level gate, toyvideo:SPLIT:N, celebdf:ROOT or a list with video ids ({_default('video_data')}).")], None),
    "parity_samples": (Annotated[Optional[int], typer.Option(
        help=f"Toy-world crops the parity check runs on ({_default('parity_samples')}).")], None),
    # dfedge bench (dfedge.runtimes.benchmark.BenchRun)
    "runs": (Annotated[int, typer.Option(help="Timed single-face runs per bundle.")], 20),
    "warmup": (Annotated[int, typer.Option(help="Untimed warm-up runs.")], 3),
    "device": (Annotated[str, typer.Option(help="OpenVINO device: CPU, GPU, NPU, AUTO.")], "CPU"),
    "label": (Annotated[Optional[str], typer.Option(help="Device name for merged reports (default: host and CPU model).")], None),
    "image": (Annotated[Optional[Path], typer.Option(help="Also take this photo to verdicts through every bundle, timed per step (decode, detect, align, score).")], None),
    # who scores a set (dfedge.distributed)
    "engine": (Annotated[Optional[str], typer.Option(metavar="[local|ray]", help="Score the set in this process (local, "
        "default) or on a pool of Ray actors (ray; pip install -e \".\\[distributed]\"; docs/distributed.md).")], None),  # \[: rich markup
    "address": (Annotated[Optional[str], typer.Option(help="With --engine ray: the cluster to join (HOST:6379 of `ray start "
        "--head`, or auto); default: a local Ray with this host's cores.")], None),
    "workers": (Annotated[Optional[int], typer.Option(help="With --engine ray: actors in the pool, each loading the model "
        "once (default: one per CPU of the cluster; for the torch reference on a cluster with GPUs, one per GPU).")], None),
    "degrade": (Annotated[Optional[str], typer.Option(help="Also report per degradation family, e.g. jpeg:q=50,blur:s=1.5,"
        "compound; ntire = the NTIRE 2026 engine, each op then all (bundles only).")], None),
    # the gate and the benchmark
    "data": (Annotated[Optional[str], typer.Option(
        "--data", "--val", help=f"Labelled validation crops for the AUC gate: DIR, list, toy:SPLIT:N ({_default('data')}; "
        "None: parity only).")], None),
    "max_auc_drop": (Annotated[Optional[float], typer.Option(callback=fraction,
        help=f"Largest allowed AUC drop vs torch FP32, as a fraction ({_default('max_auc_drop')}).")], None),
    "min_mask_agreement": (Annotated[Optional[float], typer.Option(callback=fraction,
        help=f"Smallest allowed token-mask agreement ({_default('min_mask_agreement')}).")], None),
    "validation_pack": (Annotated[Optional[int], typer.Option(
        help=f"Crops of the validation split each gated bundle carries with their reference scores, for `bench.py "
             f"--validate` on a device ({_default('validation_pack')}; 0: none).")], None),
    "calib": (Annotated[Optional[str], typer.Option(help=f"Calibration crops for quantized rungs: DIR, list, toy ({_default('calib')}).")], None),
    "calib_size": (Annotated[Optional[int], typer.Option(help=f"Calibration crops used ({_default('calib_size')}; a warning below 100).")], None),
    "accuracy_iterations": (Annotated[Optional[int], typer.Option(
        help=f"Bound on NNCF accuracy-control iterations, mixed rung ({_default('accuracy_iterations')}).")], None),
    "bench_runs": (Annotated[Optional[int], typer.Option(help=f"Timed runs per bundle, 0 for none ({_default('bench_runs')}).")], None),
    "threads": (Annotated[Optional[int], typer.Option(callback=host_threads, help=f"Runtime threads for the benchmark ({_default('threads')} = all cores).")], None),
    # the exit status and the summary of dfedge build / export / quantize
    "require": (Annotated[Optional[list[str]], typer.Option(
        "--require", metavar="RUNG", help="A rung that must ship, named as its bundle folder (onnx-fp32, openvino-int8, "
        "onnx-fp32-lite-head), repeatable; all: every planned rung; none: only a failed step (❌) counts. Default: each "
        "planned target's fp32 (a target planned without fp32: its planned rungs). Exit 1 when a required rung does "
        "not ship or any step fails.")], None),
    "wide": (Annotated[bool, typer.Option("--wide", help="Show every column of the summary (the default few fit 100 "
        "columns; report.md has them all).")], False),
}
PINS = ("dinov3_sha256", "parser_sha256", "probe_sha256", "region_head_sha256", "student_sha256", "trust_torchscript")
WEIGHTS = ("preset", "dinov3", "parser", "parser_heads", "backbone", "student", "dinov3_input", *PINS, "random_weights")  # what any model is built from
HEAD_FIT = ("top_k", "salience_channels", "rank_dropout", "random_k", "vote_weights", "vote_step", "calibration")
MODEL = (*WEIGHTS, "probe", "head", "region", "region_index", "region_head", "random_probe")
PLAN = ("targets", "precisions", "region_indexes", "dist", "name", "preset", "dinov3", "parser", "parser_heads", "backbone", "student", "probe", "head",
        "region", "dinov3_input", "region_head", *PINS, "random_probe", "random_weights", "parity_samples", "data", "temporal",
        "temporal_sha256", "video_data", "engine", "address", "workers")
ENGINE = ("engine", "address", "workers")
SCORE = ("aligned", "faces", "min_face", "frames", "fps", "track", "per_frame", "top", "save_vis", "max_pixels", "bundle")
BENCH = ("runs", "warmup", "threads", "device", "label", "image")
SUMMARY = ("require", "wide")
GATE = ("max_auc_drop", "min_mask_agreement", "validation_pack", "calib", "calib_size", "accuracy_iterations", "bench_runs", "threads")
SPEC_FIELDS = {f.name for f in dataclasses.fields(DetectorSpec)}


class Options(dict):
    """The shared options one command was given: name -> value (None: not given)."""

    def given(self) -> dict:
        return {k: v for k, v in self.items() if v is not None and v is not False}

    def spec(self, loads_weights: bool = True, **fixed) -> DetectorSpec:
        """The DetectorSpec of the model options given (DetectorSpec's defaults for the others), and `fixed`. To load
        weights, a preset without weight files needs --random-weights (which makes the probe random too)."""
        values = {k: str(v) if isinstance(v, Path) else v for k, v in self.given().items() if k in SPEC_FIELDS}
        if self.get("random_weights"):
            values["random_probe"] = True
        spec = DetectorSpec(**dict(values, **fixed))
        if loads_weights:
            require_weights(spec, bool(self.get("random_weights")))
        return spec


    def engine(self, partial: Path | None = None):
        """The engine asked for (--engine, --address, --workers): eval.scores.score_set or a distributed.RayEngine
        keeping finished work under `partial` (a re-run with the same output resumes)."""
        from .distributed import make_engine

        return make_engine(self.get("engine"), self.get("address"), self.get("workers"), partial)


def takes(*names: str):
    """Add the shared options `names` to a command, collected into its `opts` parameter."""

    def decorate(fn):
        hints = typing.get_type_hints(fn, include_extras=True)  # typer reads __signature__ as given: resolve strings
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name != "opts"]
        shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=OPTIONS[n][0], default=OPTIONS[n][1])
                  for n in names]

        @functools.wraps(fn)
        def command(*args, **kwargs):
            return fn(*args, opts=Options({n: kwargs.pop(n) for n in names}), **kwargs)

        command.__signature__ = inspect.signature(fn).replace(parameters=own + shared)
        return command

    return decorate
