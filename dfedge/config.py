"""The settings of `dfedge build`, `dfedge export` and `dfedge quantize`, without torch: `BuildConfig`, the three
commands (COMMANDS), a build's TOML file and the checks of every value, and the plan they make. The command line's
--help states these defaults, and reads them here at once; build.py runs the plan.

The three commands are one `BuildConfig` with a different `command`: which precisions it plans, the names of its
report files, whether it replaces the whole set (build) or only the bundles it planned (export, quantize), and the
settings it defaults differently.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .device.errors import shown
from .device.host import capped, cpus
from .distributed import ENGINES
from .models.ladder import RUNGS
from .models.spec import DetectorSpec
from .targets import resolve


@dataclass(frozen=True)
class Command:
    """What a command builds: which precisions of a row it plans, and how its set lands in dist/<name>."""

    kinds: str  # all | exported | quantized: the precisions of each target it may plan
    prefix: str  # of the set-level files it writes (report.md, reference.scores, bench.json), so none overwrites another's
    record: str  # JSON record file
    whole_set: bool  # True: dist/<name> is replaced by this set; False: only the planned bundles are replaced
    defaults: dict = field(default_factory=dict)  # BuildConfig values of this command where the command line gives none

    def precisions(self, target) -> tuple[str, ...]:
        return {"all": target.all_precisions, "exported": target.precisions, "quantized": target.quantized}[self.kinds]

    @property
    def report(self) -> str:
        return f"{self.prefix}report.md"


COMMANDS = {"build": Command("all", "", "build.json", True),
            "export": Command("exported", "export-", "export.json", False, {"data": None, "bench_runs": 0}),
            "quantize": Command("quantized", "quantize-", "quantize.json", False, {"bench_runs": 5, "bench_warmup": 1})}


@dataclass
class BuildConfig:
    spec: DetectorSpec = field(default_factory=DetectorSpec)
    name: str | None = None  # default: the preset
    dist: Path = Path("dist")
    targets: tuple[str, ...] = ("all",)
    precisions: tuple[str, ...] = ()  # empty: every precision of each target that the command builds
    region_indexes: tuple[str, ...] = ("exact",)
    region_head: str | None = None  # the distilled rung's head file (default: the preset's shipped one)
    calib: str = "toy"
    calib_size: int = 300
    data: str | None = "toy:val:200"  # the gate's validation split; None: parity only (dfedge export)
    max_auc_drop: float = 0.005
    min_mask_agreement: float = 0.99
    validation_pack: int = 32  # crops per bundle (0: none), with the reference's scores: bench.py --validate
    accuracy_iterations: int = 3
    parity_samples: int = 4
    bench_runs: int = 10  # 0: no benchmark
    bench_warmup: int = 2
    threads: int = 0
    temporal: str | None = None  # SDR's temporal head file (fit-temporal), or "toy" for the shipped one: video bundles
    temporal_sha256: str | None = None
    video_data: str = "toyvideo:val:48"  # with a temporal head: the video set of its video-level gate
    engine: str = "local"  # who scores the gate's sets: local (this process) or ray (dfedge.distributed)
    address: str | None = None  # with engine ray: the cluster to join (default: a local Ray with this host's cores)
    workers: int | None = None  # with engine ray: actors in the pool (default: one per CPU)
    require: tuple[str, ...] | None = None  # rungs that must ship (folder names, "all", "none"); None: REQUIRED_BY_DEFAULT
    command: str = "build"

    @property
    def set_name(self) -> str:
        return self.name or self.spec.preset

    @property
    def kind(self) -> Command:
        return COMMANDS[self.command]

    def plan(self) -> list[tuple[str, str, str]]:
        """(region index, target, precision) of every requested bundle, in build order."""
        targets = resolve(list(self.targets))
        known = {p for t in targets for p in self.kind.precisions(t)}
        unknown = [p for p in self.precisions if p not in known]
        if unknown:
            raise ValueError(f"no selected target has the precision '{unknown[0]}' for dfedge {self.command} "
                             f"(known: {', '.join(sorted(known))})")
        bad = [r for r in self.region_indexes if r not in RUNGS]
        if bad:
            raise ValueError(f"unknown region index '{bad[0]}' (known: {', '.join(RUNGS)})")
        return [(r, t.name, p) for r in self.region_indexes for t in targets
                for p in self.kind.precisions(t) if not self.precisions or p in self.precisions]

    def required(self) -> set[str]:
        """The folders of the rungs that must ship for exit status 0 (`require`), checked against the plan: by default
        the fp32 rung of every planned target (per region index), or all of a target's planned rungs when its fp32
        is not planned (dfedge quantize); "all": every planned rung; "none": no rung (only a failed step counts)."""
        folders = [folder_name(*step) for step in self.plan()]
        if self.require is None:
            groups: dict[tuple[str, str], list[str]] = {}
            for rung, target, precision in self.plan():
                groups.setdefault((rung, target), []).append(precision)
            return {folder_name(r, t, p) for (r, t), ps in groups.items() for p in ps if "fp32" not in ps or p == "fp32"}
        unknown = [n for n in self.require if n not in folders and n not in ("all", "none")]
        if unknown:
            raise ValueError(f"require '{unknown[0]}': not a rung this dfedge {self.command} plans (planned: "
                             f"{', '.join(folders)}; or all, none)")
        return set(folders) if "all" in self.require else set(self.require) - {"none"}

    @property
    def reference_spec(self) -> DetectorSpec:
        """The gate's reference: torch FP32 of the exact region index on the teacher backbone. A student backbone is
        a compression rung like the others: its bundles are gated against the teacher it was distilled from."""
        return dataclasses.replace(self.spec, region_index="exact", region_head=None, region_head_sha256=None,
                                   backbone="teacher", student=None, student_sha256=None)

    def rung_spec(self, rung: str) -> DetectorSpec:
        """The spec of one rung: the distilled one reads the region head (and its pin), the others the parser."""
        distilled = rung == "distilled"
        return dataclasses.replace(self.spec, region_index=rung, region_head=self.region_head if distilled else None,
                                   region_head_sha256=self.spec.region_head_sha256 if distilled else None,
                                   parser_sha256=None if distilled else self.spec.parser_sha256)


SPEC_KEYS = {f.name for f in dataclasses.fields(DetectorSpec)} - {"region_index", "region_head"}  # per rung
CONFIG_KEYS = {f.name for f in dataclasses.fields(BuildConfig)} - {"spec", "command"}


def read_config(path: Path) -> dict:
    """A TOML build file: BuildConfig fields and DetectorSpec fields at the top level (see docs/build.md)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, unreadable, not text
        raise ValueError(f"{path}: cannot read it as a TOML file ({getattr(e, 'strerror', None) or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - SPEC_KEYS - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key {shown(repr(unknown[0]))} (build keys: {', '.join(sorted(CONFIG_KEYS))}; "
                         f"model keys: {', '.join(sorted(SPEC_KEYS))})")
    return data


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # = the manifest schema's `name`: one folder inside --out
FRACTIONS = ("max_auc_drop", "min_mask_agreement")  # budgets: from 0 to 1 (NaN or negative would pass or fail all)
AT_LEAST = {"calib_size": 1, "validation_pack": 0, "parity_samples": 1, "accuracy_iterations": 0, "bench_runs": 0, "bench_warmup": 0,
            "threads": 0, "seed": 0, "workers": 1}
_LISTS = ("targets", "precisions", "region_indexes", "require")


def check_values(values: dict) -> None:
    """The types and ranges of a build's settings, from a TOML file or the command line: one line naming the key."""
    hints = {**typing.get_type_hints(DetectorSpec), **typing.get_type_hints(BuildConfig)}
    for key, value in values.items():
        if key in _LISTS:
            ok = isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
            kind = "a name or a list of names"
        else:
            hint = hints[key]
            kinds = tuple(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
            kinds = tuple(str if t is Path else t for t in kinds)
            ok = isinstance(value, (*kinds, Path)) if str in kinds else isinstance(value, kinds)
            if bool not in kinds and isinstance(value, bool):
                ok = False
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            kind = " or ".join(t.__name__ for t in kinds)
        if not ok:
            raise ValueError(f"{key} = {shown(repr(value))}: expected {kind}")
        if key in FRACTIONS and not 0.0 <= value <= 1.0:  # NaN fails both
            raise ValueError(f"{key} = {shown(repr(value))}: a budget is a fraction from 0 to 1")
        if key in AT_LEAST and value < AT_LEAST[key]:
            raise ValueError(f"{key} = {shown(repr(value))}: must be at least {AT_LEAST[key]}")
        if key == "validation_pack" and value == 1:
            raise ValueError("validation_pack = 1: 0 (none) or at least 2 (its AUC needs a fake and a real)")
        if key == "engine" and value not in ENGINES:
            raise ValueError(f"engine = {shown(repr(value))}: one of {', '.join(ENGINES)}")
        if key == "name" and not NAME.match(value):
            raise ValueError(f"name = {shown(repr(value))}: letters, digits, '.', '_' and '-' only (one folder inside --out)")


def make_config(values: dict, command: str = "build") -> BuildConfig:
    """BuildConfig from flat key/values (config file merged with command-line options; None = not given), each
    checked (check_values) first."""
    values = {k: v for k, v in values.items() if v is not None}
    check_values({k: v for k, v in values.items() if k in SPEC_KEYS | CONFIG_KEYS})
    if "threads" in values:  # (workers are capped where the cluster is known: distributed.RayEngine)
        values["threads"] = capped("threads", values["threads"], cpus(), "the CPUs of this host")
    spec = DetectorSpec(**{k: str(v) if isinstance(v, Path) else v for k, v in values.items() if k in SPEC_KEYS})
    cfg = {k: str(v) if k == "region_head" else v for k, v in values.items() if k in CONFIG_KEYS}
    for key in _LISTS:
        if key in cfg:
            cfg[key] = tuple([cfg[key]] if isinstance(cfg[key], str) else cfg[key])
    if "dist" in cfg:
        cfg["dist"] = Path(cfg["dist"])
        if cfg["dist"].exists() and not cfg["dist"].is_dir():
            raise ValueError(f"{cfg['dist']}: --out is a file, not a folder")
    return BuildConfig(spec=spec, command=command, **{**COMMANDS[command].defaults, **cfg})


def folder_name(rung: str, target: str, precision: str) -> str:
    """A bundle's folder in dist/<name>, and its rung's name for `require`: TARGET-PRECISION, then -REGION_INDEX
    unless exact (onnx-fp32, openvino-int8, onnx-fp32-lite-head)."""
    return f"{target}-{precision}" + ("" if rung == "exact" else f"-{rung}")
