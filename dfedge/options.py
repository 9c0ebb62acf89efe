"""The command line's shared options, declared once: the model a command runs and the plan of a build. A command
names the ones it takes with `@takes(...)` and receives them as one `Options` value (`opts`); choices and help
come from the tables they are about (DETECTOR_PRESETS, HEADS, REGIONS, RUNGS, TARGETS).

The model options default to None: DetectorSpec holds the defaults (preset toy, head region, region mouth, DINOv3
input 224, region index exact), and a build's TOML file can set what the command line leaves out.
"""

from __future__ import annotations

import enum
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from .models.factory import DETECTOR_PRESETS, DetectorSpec
from .models.ladder import RUNGS
from .models.heads import HEADS
from .models.region import REGIONS
from .targets import EXPORTED, QUANTIZED, TARGETS


def _choice(name: str, values) -> type[enum.Enum]:
    """The allowed values of an option as a str Enum: typer validates them and lists them in --help."""
    return enum.Enum(name, {v: v for v in values}, type=str)


Preset = _choice("Preset", DETECTOR_PRESETS)
Head = _choice("Head", HEADS)
Region = _choice("Region", REGIONS)
Rung = _choice("Rung", RUNGS)
TargetName = _choice("TargetName", [*TARGETS, "all"])
Precision = _choice("Precision", [*EXPORTED, *QUANTIZED])


_RUNG_HELP = "docs/region-index.md"

OPTIONS: dict[str, tuple[object, object]] = {
    # the model
    "preset": (Annotated[Optional[Preset], typer.Option(
        help="Model preset: " + "; ".join(f"{k}: {p.description}" for k, p in DETECTOR_PRESETS.items()) + ".")], None),
    "dinov3": (Annotated[Optional[Path], typer.Option(
        "--dinov3", help="DINOv3 weights: official .pth, or safetensors (official or HF layout).")], None),
    "parser": (Annotated[Optional[Path], typer.Option(
        "--parser", help="FaRL parser: converted .safetensors or facer TorchScript .pt.")], None),
    "probe": (Annotated[Optional[Path], typer.Option("--probe", help="Probe .safetensors written by fit-probe.")], None),
    "head": (Annotated[Optional[Head], typer.Option(
        help="Head (default region, the paper's).")], None),
    "region": (Annotated[Optional[Region], typer.Option(
        help="Region whose tokens feed the probe (default mouth).")], None),
    "dinov3_input": (Annotated[Optional[int], typer.Option(
        help="DINOv3 input size: 224 (exact 2x area downsample of the crop, default) or 448.")], None),
    "region_index": (Annotated[Optional[Rung], typer.Option(
        "--region-index", help=f"Region-index rung ({_RUNG_HELP}); default exact.")], None),
    "region_head": (Annotated[Optional[Path], typer.Option(
        "--region-head", help="Distilled region head (.safetensors from distill-region-head); toy ships one.")], None),
    "random_weights": (Annotated[bool, typer.Option(
        "--random-weights", help="Allow a preset without weight files (seeded random weights): to size and time a graph.")], False),
    "batch": (Annotated[int, typer.Option(help="Crops per forward pass.")], 8),
    # the plan of dfedge build / export / quantize
    "targets": (Annotated[Optional[list[TargetName]], typer.Option(
        "--target", help="Target(s), repeatable; default all.")], None),
    "precisions": (Annotated[Optional[list[Precision]], typer.Option(
        "--precision", help="Precision(s), repeatable; default: every one the command builds (export: fp32, fp16; quantize: the rungs "
             "below fp16 of each target; build: all).")], None),
    "region_indexes": (Annotated[Optional[list[Rung]], typer.Option(
        "--region-index", help=f"Region-index rung(s), repeatable ({_RUNG_HELP}); default exact.")], None),
    "dist": (Annotated[Optional[Path], typer.Option("--out", help="dist folder; the set goes to OUT/NAME (default dist).")], None),
    "name": (Annotated[Optional[str], typer.Option(help="Bundle set name (default: the preset).")], None),
    "parity_samples": (Annotated[Optional[int], typer.Option(help="Toy-world crops the parity check runs on (default 4).")], None),
    # the gate and the benchmark (defaults: dfedge.build.BuildConfig and COMMANDS)
    "data": (Annotated[Optional[str], typer.Option(
        "--data", "--val", help="Labelled validation crops for the AUC gate: DIR, list, toy:SPLIT:N (default toy:val:200; "
        "export: none, parity only).")], None),
    "max_auc_drop": (Annotated[Optional[float], typer.Option(
        help="Largest allowed AUC drop vs torch FP32, as a fraction (default 0.005 = 0.5 pp).")], None),
    "min_mask_agreement": (Annotated[Optional[float], typer.Option(help="Smallest allowed token-mask agreement (default 0.99).")], None),
    "calib": (Annotated[Optional[str], typer.Option(help="Calibration crops for quantized rungs: DIR, list, toy (default).")], None),
    "calib_size": (Annotated[Optional[int], typer.Option(help="Calibration crops used (default 300; a warning below 100).")], None),
    "accuracy_iterations": (Annotated[Optional[int], typer.Option(help="Bound on NNCF accuracy-control iterations, mixed rung (default 3).")], None),
    "bench_runs": (Annotated[Optional[int], typer.Option(help="Timed runs per bundle, 0 for none (default: build 10, quantize 5).")], None),
    "threads": (Annotated[Optional[int], typer.Option(help="Runtime threads for the benchmark (default 0 = all cores).")], None),
}
MODEL = ("preset", "dinov3", "parser", "probe", "head", "region", "dinov3_input", "region_index", "region_head")
PLAN = ("targets", "precisions", "region_indexes", "dist", "name", "preset", "dinov3", "parser", "probe", "head",
        "region", "dinov3_input", "region_head", "random_weights", "parity_samples", "data")
GATE = ("max_auc_drop", "min_mask_agreement", "calib", "calib_size", "accuracy_iterations", "bench_runs", "threads")
SPEC_FIELDS = {f for f in DetectorSpec.__dataclass_fields__}


class Options(dict):
    """The shared options one command was given: name -> value (None: not given)."""

    def given(self) -> dict:
        return {k: v for k, v in self.items() if v is not None and v is not False}

    def spec(self, **fixed) -> DetectorSpec:
        """The DetectorSpec of the model options given (DetectorSpec's defaults for the others), and `fixed`."""
        values = {k: str(v) if isinstance(v, Path) else v for k, v in self.given().items() if k in SPEC_FIELDS}
        return DetectorSpec(**dict(values, **fixed))


def _plain(value):
    """Choices back to the strings the library takes."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, enum.Enum) else value


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
            return fn(*args, opts=Options({n: _plain(kwargs.pop(n)) for n in names}), **kwargs)

        command.__signature__ = inspect.signature(fn).replace(parameters=own + shared)
        return command

    return decorate
