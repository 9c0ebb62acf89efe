"""`dfedge build`, the main job: export -> quantize -> validate -> bench -> package, for every region index x
target x precision, into `dist/<name>/` with one folder per bundle, report.md, build.json and bench.json.

Every bundle passes the same gate against the torch FP32 reference of the exact detector (the paper's): parity
with its own torch graph, then AUC drift and token-mask agreement on the validation data. A bundle the gate
refuses is reported (❎) and not shipped; a step that fails is reported (❌) and the others go on. The set is
assembled in `dist/.<name>.partial/` and renamed into place at the end, so `dist/<name>` never holds a mix of
an old and a new build.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import traceback
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .export.targets import TARGETS, resolve
from .models.factory import DetectorSpec

MARKS = {"ok": "✅", "gate": "❎", "error": "❌"}


@dataclass
class BuildConfig:
    spec: DetectorSpec = field(default_factory=DetectorSpec)
    name: str | None = None  # default: the preset
    dist: Path = Path("dist")
    targets: tuple[str, ...] = ("all",)
    precisions: tuple[str, ...] = ()  # empty: every precision and quantized rung of each target (targets.TARGETS)
    region_indexes: tuple[str, ...] = ("exact",)
    region_head: str | None = None  # the distilled rung's head file (default: the preset's shipped one)
    calib: str = "toy"
    calib_size: int = 300
    data: str = "toy:val:200"
    max_auc_drop: float = 0.005
    min_mask_agreement: float = 0.99
    accuracy_iterations: int = 3
    parity_samples: int = 4
    bench_runs: int = 10
    bench_warmup: int = 2
    threads: int = 0

    @property
    def set_name(self) -> str:
        return self.name or self.spec.preset

    def plan(self) -> list[tuple[str, str, str]]:
        """(region index, target, precision) of every requested bundle, in build order."""
        targets = resolve(list(self.targets))
        known = {p for t in targets for p in t.precisions + t.quantized}
        unknown = [p for p in self.precisions if p not in known]
        if unknown:
            raise ValueError(f"no selected target has the precision '{unknown[0]}' (known: {', '.join(sorted(known))})")
        from .models.ladder import RUNGS

        bad = [r for r in self.region_indexes if r not in RUNGS]
        if bad:
            raise ValueError(f"unknown region index '{bad[0]}' (known: {', '.join(RUNGS)})")
        return [(r, t.name, p) for r in self.region_indexes for t in targets
                for p in t.precisions + t.quantized if not self.precisions or p in self.precisions]


SPEC_KEYS = {f.name for f in dataclasses.fields(DetectorSpec)} - {"region_index", "region_head"}  # per rung
CONFIG_KEYS = {f.name for f in dataclasses.fields(BuildConfig)} - {"spec"}


def read_config(path: Path) -> dict:
    """A TOML build file: BuildConfig fields and DetectorSpec fields at the top level (see docs/build.md)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - SPEC_KEYS - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key '{unknown[0]}' (build keys: {', '.join(sorted(CONFIG_KEYS))}; "
                         f"model keys: {', '.join(sorted(SPEC_KEYS))})")
    return data


def make_config(values: dict) -> BuildConfig:
    """BuildConfig from flat key/values (config file merged with command-line options; None = not given)."""
    values = {k: v for k, v in values.items() if v is not None}
    spec = DetectorSpec(**{k: str(v) if isinstance(v, Path) else v for k, v in values.items() if k in SPEC_KEYS})
    cfg = {k: str(v) if k == "region_head" else v for k, v in values.items() if k in CONFIG_KEYS}
    for key in ("targets", "precisions", "region_indexes"):
        if key in cfg:
            cfg[key] = tuple([cfg[key]] if isinstance(cfg[key], str) else cfg[key])
    if "dist" in cfg:
        cfg["dist"] = Path(cfg["dist"])
    return BuildConfig(spec=spec, **cfg)


@dataclass
class Row:
    region_index: str
    target: str
    precision: str
    status: str = "ok"  # ok ✅ | gate ❎ (refused, not shipped) | error ❌ (a step failed)
    reason: str = ""
    folder: str | None = None
    size_mb: float | None = None
    gflops: float | None = None
    max_abs_logit: float | None = None  # parity against the rung's own torch graph
    auc: float | None = None
    delta_auc: float | None = None  # vs the exact torch FP32 reference
    mask_agreement: float | None = None
    p50_ms: float | None = None
    fps: float | None = None
    speedup: float | None = None  # torch eager p50 / p50
    bench_note: str = ""
    seconds: float = 0.0

    def cells(self) -> list[str]:
        status = f"{MARKS[self.status]} {self.reason}".strip()
        latency = _fmt(self.p50_ms, ".1f") if self.p50_ms is not None else (self.bench_note or "-")
        return [self.region_index, self.target, self.precision, status, _fmt(self.size_mb, ".2f"),
                _fmt(self.gflops, ".2f"), _fmt(self.auc, ".4f"),
                _fmt(None if self.delta_auc is None else self.delta_auc * 100, "+.2f"), latency, _fmt(self.fps, ".1f"),
                _fmt(self.speedup, ".2f")]


COLUMNS = ["region index", "target", "precision", "status", "size MB", "GFLOPs", "AUC", "ΔAUC pp", "p50 ms", "FPS",
           "× torch"]


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def run_build(config: BuildConfig, log=lambda msg: None, advance=lambda n=1: None) -> tuple[list[Row], Path]:
    """Build every planned bundle; returns the rows of the summary and dist/<name>."""
    plan = config.plan()
    name, dist = config.set_name, Path(config.dist)
    staging = dist / f".{name}.partial"  # bundles are written to staging/name, renamed to dist/name at the end
    stage = staging / name
    shutil.rmtree(staging, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        rows = _build_all(config, plan, staging, stage, log, advance)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = dist / name
    _replace(stage, final)
    shutil.rmtree(staging, ignore_errors=True)
    return rows, final


def _build_all(config: BuildConfig, plan, staging: Path, stage: Path, log, advance) -> list[Row]:
    from .data.sources import open_set
    from .eval.scores import save_scores
    from .eval.validate import Budget
    from .export.bundle import GateError, toy_crops, weight_sources, write_bundle
    from .models.factory import build_detector, gflops, meta_detector
    from .quantize.calibration import calibration_set
    from .quantize.ladder import Validation, gate, write_rung
    from .runtimes.bench import bench_bundle, bench_reference

    name = stage.name
    exact = config.spec  # region_index "exact": the paper's detector, the reference of every gate
    log(f"reference: torch FP32 (exact region index) on {config.data}")
    validation = Validation.build(build_detector(exact), open_set(config.data, config.spec.region), config.data)
    save_scores(stage / "reference.scores", validation.reference)
    budget = Budget(config.max_auc_drop)
    parity_images = toy_crops(config.parity_samples)
    needs_calib = any(p in TARGETS[t].quantized for _, t, p in plan)
    calib = calibration_set(config.calib, config.calib_size, config.spec.region) if needs_calib else None
    advance()

    rows: list[Row] = []
    for rung in dict.fromkeys(r for r, _, _ in plan):
        spec = dataclasses.replace(config.spec, region_index=rung,
                                   region_head=config.region_head if rung == "distilled" else None)
        det = build_detector(spec)
        flops = gflops(meta_detector(spec))["total"]
        sources = weight_sources(spec)
        options = {"preset": spec.preset, "head": spec.head, "region": spec.region, "dinov3_input": spec.dinov3_input,
                   "region_index": rung, "validation": config.data, "parity_samples": config.parity_samples}
        caches: dict[str, dict] = {}
        for r, target_name, precision in plan:
            if r != rung:
                continue
            target = TARGETS[target_name]
            folder = f"{target.name}-{precision}" + ("" if rung == "exact" else f"-{rung}")
            row = Row(rung, target.name, precision, folder=folder, gflops=flops)
            start = time.time()
            log(f"{folder}: {'exporting' if precision in target.precisions else 'quantizing'}")
            the_gate = _gate_fn(gate, validation, budget, config.min_mask_agreement)
            try:
                if precision in target.precisions:
                    _, manifest = write_bundle(det, target, precision, staging, name, sources, options, parity_images,
                                               log=log, cache=caches.setdefault(target.name, {}), gate=the_gate,
                                               folder=folder)
                else:
                    _, manifest = write_rung(det, target, precision, staging, name, sources, options, parity_images,
                                             calib, validation, budget, config.min_mask_agreement,
                                             config.accuracy_iterations, log, caches.setdefault(target.name, {}),
                                             folder=folder)
            except GateError as e:
                row.status, row.reason = "gate", str(e)
            except Exception as e:  # noqa: BLE001 - a failing bundle never aborts the others; it is reported
                row.status, row.reason = "error", _reason(e)
                traceback.print_exc()  # whole, to stderr: the CLI's build.log
            else:
                g = manifest["gate"]
                row.size_mb = sum(f["bytes"] for f in manifest["files"].values()) / 1e6
                row.max_abs_logit = manifest["parity"]["max_abs_logit"]
                row.auc, row.delta_auc, row.mask_agreement = g["auc"], g["delta_auc"], g["mask_agreement"]
            row.seconds = time.time() - start
            rows.append(row)
            advance()

    bench = _bench(rows, stage, config, log, advance, bench_bundle, bench_reference)
    _write_reports(stage, config, rows, validation, bench)
    return rows


def _gate_fn(gate, validation, budget, min_mask):
    return lambda runner: gate(validation, budget, min_mask, runner)


def _bench(rows: list[Row], stage: Path, config: BuildConfig, log, advance, bench_bundle, bench_reference) -> dict:
    """Time every shipped bundle in its own process, and torch FP32 eager once per region index."""
    from .runtimes.bench import SET_SCHEMA, reference_spec
    from .runtimes.standalone import verify

    results, references = [], {}
    for row in rows:
        if row.status != "ok":
            continue
        log(f"{row.folder}: timing ({config.bench_runs} runs)")
        result = bench_bundle(stage / row.folder, config.bench_runs, config.bench_warmup, config.threads)
        results.append(result)
        if row.region_index not in references:
            spec = dict(reference_spec(verify(stage / row.folder)), **_weights(config, row.region_index))
            log(f"torch fp32 {row.region_index}: timing the reference")
            references[row.region_index] = bench_reference(spec, config.bench_runs, config.bench_warmup, config.threads)
        ref = references[row.region_index]
        if result.get("status") == "ok":
            row.p50_ms, row.fps = result["latency_ms"]["p50"], result["fps"]
            if ref.get("status") == "ok":
                row.speedup = result["speedup_vs_torch"] = ref["latency_ms"]["p50"] / row.p50_ms
        else:
            row.bench_note = "macOS only" if row.target == "coreml" and result.get("status") == "unavailable" \
                else f"bench {result.get('status')}: {result.get('reason', '')}"[:60]
        advance()
    return {"schema": SET_SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "references": list(references.values()), "results": results}


def _weights(config: BuildConfig, rung: str) -> dict:
    """The reference process times the same weights the bundles were made from."""
    out = {k: getattr(config.spec, k) for k in ("dinov3", "parser", "probe") if getattr(config.spec, k)}
    if rung == "distilled" and config.region_head:
        out["region_head"] = config.region_head
    return out


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(r.cells()) + " |" for r in rows])


def _write_reports(stage: Path, config: BuildConfig, rows: list[Row], validation, bench: dict) -> None:
    from . import __version__
    from .eval.metrics import binary_metrics
    from .export.bundle import weight_sources
    from .models.checkpoint import atomic_write

    ref = validation.reference
    scored = int(ref.scored.sum())
    ref_auc = binary_metrics(ref.labels[ref.scored], ref.logits[ref.scored], ref.threshold).auc
    spec = config.spec
    weights = {part: rec.get("file") or rec.get("note") for part, rec in weight_sources(spec).items()}
    passed = sum(r.status == "ok" for r in rows)
    lines = [
        f"# dfedge build `{config.set_name}`", "",
        f"{passed} of {len(rows)} bundles passed. Reference: torch FP32, exact region index, on `{config.data}` "
        f"({len(ref)} crops, {scored} with a region found), AUC {ref_auc:.4f}.", "",
        f"Gate per bundle: parity with its own torch graph (|Δlogit| / max(1, |logit|) ≤ 1e-4 fp32, ≤ 1e-2 fp16), then "
        f"ΔAUC ≥ −{config.max_auc_drop * 100:.2f} pp and token-mask agreement ≥ {config.min_mask_agreement} against "
        f"the reference. ✅ shipped · ❎ refused by the gate (not shipped) · ❌ a step failed.", "",
        f"Latency: `bench.py` of each bundle in its own process, {config.bench_runs} runs after "
        f"{config.bench_warmup} warm-up, threads {config.threads or 'all'}; × torch = torch FP32 eager p50 / p50 on "
        f"the same host in the same run. GFLOPs: the fused graph per face at this preset.", "",
        markdown_table(rows), "",
        "## Settings", "",
        f"- model: preset `{spec.preset}`, head `{spec.head}`, region `{spec.region}`, DINOv3 input {spec.dinov3_input}; "
        f"weights {json.dumps(weights)}",
        f"- calibration (quantized rungs): `{config.calib}`, {config.calib_size} crops",
        f"- dfedge {__version__}; files: `reference.scores` (the reference's scores), `build.json`, `bench.json` "
        "(`dfedge report merge` reads it)", "",
        "## Run a bundle on a device", "",
        "Copy a bundle folder and run `python bench.py --label \"my device\"` (numpy and the runtime only); "
        "merge results with `dfedge report merge *.json`.",
    ]
    failures = [r for r in rows if r.status != "ok"]
    if failures:
        lines += ["", "## Not shipped", ""] + [f"- `{r.folder}` {MARKS[r.status]}: {r.reason}" for r in failures]
    atomic_write(stage / "report.md", lambda t: t.write_text("\n".join(lines) + "\n"))
    record = {"schema": "dfedge-build/1", "config": _jsonable(dataclasses.asdict(config)), "reference_auc": ref_auc,
              "rows": [dataclasses.asdict(r) for r in rows]}
    atomic_write(stage / "build.json", lambda t: t.write_text(json.dumps(record, indent=2, default=str)))
    atomic_write(stage / "bench.json", lambda t: t.write_text(json.dumps(bench, indent=2)))


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _replace(stage: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    stage.rename(final)
    shutil.rmtree(old, ignore_errors=True)
