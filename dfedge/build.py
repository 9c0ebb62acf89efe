"""The one pipeline: `dfedge build`, the main job, and its narrowed forms `dfedge export` and `dfedge quantize`.

For every region index x target x precision of the plan: export or quantize -> parity against the rung's own torch
graph -> gate (AUC drift and token-mask agreement against the torch FP32 reference of the exact detector, the
paper's) -> bundle; then bench every shipped bundle against torch FP32 eager in one run, and report. A bundle the
gate refuses is reported (❎) and not shipped; a step that fails is reported (❌) and the others go on. The exit
status (`outcome`) is 1 when a required rung (`BuildConfig.required`) did not ship or any step failed.

The three commands are one `BuildConfig` with a different `command` (config.py, with COMMANDS and a build's TOML
file): which precisions it plans, the names of its report files, and whether it replaces the whole set (build) or
only the bundles it planned (export, quantize). Everything is staged in `dist/.<name>.partial/` first, so `dist/<name>` never holds a half-written
bundle or a mix of an old and a new build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gc
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .allocator import fixed_mmap_threshold
from ._version import __version__
from .config import BuildConfig, folder_name
from .device.host import cpu_isa, cpu_model
from .device.timing import bundle_bytes
from .data.calibration import calibration_set
from .data.sources import open_set, toy_crops
from .distributed import make_engine
from .eval.gate import Gate, GateError, Validation, reference_batch
from .eval.metrics import binary_metrics
from .eval.scores import save_scores
from .eval.validate import Budget, decisions
from .eval.video import VideoGate
from .export.bundle import replace_folder, write_bundle
from .export.job import Job
from .models.factory import build_detector, identity, spec_gflops, weight_sources
from .models.heads import head as head_info
from .models.temporal import temporal_head
from .models.writing import atomic_write, temporary, track
from .runtimes import torch_runner
from .runtimes.benchmark import BenchRun, bench_set, reference_spec
from .runtimes.recipe import Recipe
from .targets import PRECISIONS, TARGETS

MARKS = {"ok": "✅", "gate": "❎", "error": "❌"}  # shipped · refused by the gate, not shipped · a step failed


@dataclass
class Row:
    """One bundle of the plan, as every command reports it."""

    region_index: str
    target: str
    precision: str
    folder: str
    status: str = "ok"  # MARKS
    reason: str = ""
    size_mb: float | None = None
    gflops: float | None = None
    max_abs_logit: float | None = None  # against the gate's reference on its split; ungated: the rung's torch graph on the parity crops
    mean_abs_logit: float | None = None
    mask_agreement: float | None = None
    auc: float | None = None
    delta_auc: float | None = None  # vs the exact torch FP32 reference
    video_delta_auc: float | None = None  # video bundles: the temporal head's video-level ΔAUC vs torch FP32
    p50_ms: float | None = None
    fps: float | None = None
    speedup: float | None = None  # torch eager p50 / p50
    bench_note: str = ""
    seconds: float = 0.0
    tool: str = ""
    conversion: dict | None = None  # what the converter did (the manifest's `conversion`), shipped or refused
    placement: str = "-"  # where the ops run and in which precision (the manifest's `placement`, in words)
    required: bool = False  # must ship for exit status 0 (BuildConfig.required)

    def shipped(self, manifest: dict) -> None:
        judged = manifest.get("gate") or manifest["parity"]
        self.size_mb = bundle_bytes(manifest) / 1e6
        self.max_abs_logit, self.mean_abs_logit = judged["max_abs_logit"], judged["mean_abs_logit"]
        self.mask_agreement = judged["mask_agreement"]
        self.auc, self.delta_auc = judged.get("auc"), judged.get("delta_auc")
        self.video_delta_auc = ((manifest.get("temporal") or {}).get("gate") or {}).get("delta_auc")
        self.conversion = manifest["conversion"]
        self.placement = placement_cell(manifest.get("placement"))
        self.tool = self.conversion.get("tool", "")

    def failed(self, e: BaseException) -> None:
        self.status = "gate" if isinstance(e, GateError) else "error"
        self.reason = str(e) if isinstance(e, GateError) else reason(e)
        self.conversion = getattr(e, "conversion", None)

    def cells(self, video: bool = False) -> list[str]:
        """The row's cells under `columns`; `video`: with the video-level ΔAUC column."""
        status = f"{MARKS[self.status]} {self.reason}".strip()
        latency = _fmt(self.p50_ms, ".1f") if self.p50_ms is not None else (self.bench_note or "-")
        return [self.region_index, self.target, self.precision, status, _fmt(self.size_mb, ".2f"),
                _fmt(self.gflops, ".2f"), _fmt(self.max_abs_logit, ".2e"), _fmt(self.mean_abs_logit, ".2e"),
                _fmt(self.mask_agreement, ".4f"), _fmt(self.auc, ".4f"),
                _fmt(None if self.delta_auc is None else self.delta_auc * 100, "+.2f"),
                *([_fmt(None if self.video_delta_auc is None else self.video_delta_auc * 100, "+.2f")] if video else []), latency, _fmt(self.fps, ".1f"),
                _fmt(self.speedup, ".2f"), self.placement]

    def accuracy_lines(self) -> list[str]:
        """What accuracy control did, for a mixed rung: the AUC of each model NNCF validated and the reverted ops."""
        q = self.conversion or {}
        if "reverted_to_float" not in q:
            return []
        aucs = q["accuracy"]["validated_auc"]
        steps = ["initial (FP32, mask-path weights INT8)", "fully quantized"] + [f"after step {i}" for i in range(1, len(aucs) - 1)]
        reverted = q["reverted_to_float"]
        lines = [f"{self.target} {self.precision}: torch FP32 AUC {q['accuracy']['reference_auc']:.4f}; NNCF validated "
                 + ", ".join(f"{step} {auc:.4f}" for step, auc in zip(steps, aucs))
                 + f". Reverted to float: {len(reverted)} of {q['quantized_int8']} INT8 ops"
                 + (":" if reverted else " (the fully quantized model was within NNCF's target).")]
        return lines + [f"  - `{op}`" for op in reverted]


COLUMNS = ["region index", "target", "precision", "status", "size MB", "GFLOPs", "max abs Δlogit", "mean abs Δlogit",
           "mask agr.", "AUC", "ΔAUC pp", "p50 ms", "FPS", "× torch", "placement"]


def placement_cell(placement: dict | None) -> str:
    """The manifest's placement in a few words: the share of GEMM/convolution FLOPs in the accelerated path, then
    the precisions those FLOPs run in, largest first ("100% XNNPACK delegate · int8 93%, float32 7%")."""
    if not placement:
        return "-"
    if placement.get("observed") is False:
        return "on the device (Core ML)"
    by_dtype: dict[str, float] = {}
    for where in placement["gemm_gflops_by_dtype"].values():
        for dtype, gf in where.items():
            by_dtype[dtype] = by_dtype.get(dtype, 0.0) + gf
    total = sum(by_dtype.values()) or 1.0
    share = placement.get("accelerated_flop_share")
    head = f"{share:.0%} {placement['accelerator'].split(' (')[0]}" if share is not None else placement["accelerator"]
    return head + " · " + ", ".join(f"{d} {gf / total:.0%}" for d, gf in sorted(by_dtype.items(), key=lambda kv: -kv[1]))


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def reason(e: BaseException) -> str:
    """One line for a failed step: the exception's type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def target_matrix(rows: list[dict]) -> str:
    """Targets × precisions (the target table's order) with each bundle's status and ΔAUC: the docs' matrix, made
    from a build record's rows (`build.json`), one region index at a time; '·' where the target has no such rung."""
    precisions = PRECISIONS
    found = {(r["target"], r["precision"]): r for r in rows}
    lines = ["| target | " + " | ".join(precisions) + " |", "|---|" + "---|" * len(precisions)]
    for name, target in TARGETS.items():
        cells = []
        for p in precisions:
            r = found.get((name, p))
            if p not in target.all_precisions:
                cells.append("·")
            elif r is None:
                cells.append("not built")
            else:
                delta = f" {r['delta_auc'] * 100:+.2f}" if r.get("delta_auc") is not None else ""
                cells.append(MARKS[r["status"]] + delta)
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def columns(rows: list[Row]) -> tuple[list[str], bool]:
    """The summary's columns, with the video-level ΔAUC after the ΔAUC when any row has one (video bundles)."""
    video = any(r.video_delta_auc is not None for r in rows)
    at = COLUMNS.index("ΔAUC pp") + 1
    return (COLUMNS[:at] + ["video ΔAUC pp"] + COLUMNS[at:] if video else COLUMNS), video


def markdown_table(rows: list[Row]) -> str:
    names, video = columns(rows)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    return "\n".join(lines + ["| " + " | ".join(r.cells(video)) + " |" for r in rows])


REASON_CHARS = 40  # of a status cell in the terminal's default table (report.md and --wide keep the whole reason)


def summary(rows: list[Row], wide: bool = False) -> tuple[list[str], list[list[str]]]:
    """The terminal's summary: columns and cells. `wide`: every column, as report.md has them; else the few that
    fit 100 columns: the bundle (its folder), the status with its reason cut to REASON_CHARS, size, ΔAUC (without
    a gate: the parity's max |Δlogit|; and the video ΔAUC of video bundles) and p50 latency."""
    names, video = columns(rows)
    if wide:
        return names, [r.cells(video) for r in rows]
    gated = any(r.delta_auc is not None for r in rows)  # else parity only (dfedge export): its logit error instead
    picked = ["size MB", "ΔAUC pp" if gated else "max abs Δlogit", *(["video ΔAUC pp"] if video else []), "p50 ms"]
    cells = []
    for row in rows:
        cell = dict(zip(names, row.cells(video)))
        status = cell["status"] if len(cell["status"]) <= REASON_CHARS else cell["status"][:REASON_CHARS - 1] + "…"
        if row.p50_ms is None and row.bench_note.startswith("bench "):  # "bench error: <why>": the why is in report.md
            cell["p50 ms"] = row.bench_note.split(":")[0]
        cells.append([row.folder, status, *(cell[n] for n in picked)])
    return ["bundle", "status", *picked], cells


def outcome(rows: list[Row]) -> tuple[int, str]:
    """The exit status of a build and the sentence saying why (report.md and the terminal): 1 when a required rung
    did not ship (❎ or ❌) or when any step failed (❌: a converter error or a parity failure is a bug to look
    at, required or not); 0 otherwise, however many rungs outside `require` the gate refused (❎)."""
    required = [r for r in rows if r.required]
    missing = [r.folder for r in required if r.status != "ok"]
    failed = [r.folder for r in rows if r.status == "error" and not r.required]
    refused = [r.folder for r in rows if r.status == "gate" and not r.required]
    code = 1 if missing or failed else 0
    why = ([f"required but not shipped: {', '.join(missing)}"] if missing else []) + (
        [f"a step failed (❌): {', '.join(failed)}"] if failed else [])
    if not why:
        why = ["every required rung shipped, no step failed"
               + (f"; refused by the gate, not required: {', '.join(refused)}" if refused else "")]
    listed = ", ".join(f"{r.folder} {MARKS[r.status]}" for r in required) or "none"
    return code, f"Required: {listed}. Exit status {code}: {'; '.join(why)}."


_HELD: set[Path] = set()  # the sets this process is writing (writing_set is re-entered by run_build under the CLI)


@contextlib.contextmanager
def writing_set(dist: Path, name: str):
    """Hold dist/NAME for one command, from its staging folder (and its converter log) to the rename: an exclusive
    lock on dist/.NAME.lock, removed at the end. A second build, export or quantize of the same set is refused in
    one line (ValueError) before it touches anything: otherwise it deletes the first one's staging folder and both
    fail, the loser's files replacing the winner's."""
    dist.mkdir(parents=True, exist_ok=True)
    path = (dist / f".{name}.lock").resolve()
    if path in _HELD:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:  # a build that just ended removed this lock file
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            raise ValueError(f"another build is writing {dist / name}: wait for it to end, or choose another --out "
                             "or --name") from None
        _HELD.add(path)
        with temporary(path):  # SIGTERM and Ctrl-C remove it too
            try:
                yield
            finally:
                _HELD.discard(path)
                path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def run_build(config: BuildConfig, log=lambda msg: None, advance=lambda n=1: None) -> tuple[list[Row], Path]:
    """Build every planned bundle; returns the rows of the summary and dist/<name> (held: writing_set)."""
    fixed_mmap_threshold()  # calibration's many large tensors otherwise fragment glibc's heap (allocator.py)
    plan = config.plan()
    name, dist = config.set_name, Path(config.dist)
    staging = dist / f".{name}.partial"  # bundles are written to staging/name, moved to dist/name at the end
    stage = staging / name
    with writing_set(dist, name):
        shutil.rmtree(staging, ignore_errors=True)  # (what a run killed with SIGKILL left)
        stage.mkdir(parents=True)
        track(staging)  # SIGTERM and Ctrl-C remove it (models.writing.terminate)
        try:
            rows = _build_all(config, plan, staging, log, advance)
            final = dist / name
            if config.kind.whole_set:
                replace_folder(stage, final)
            else:
                _merge(stage, final, rows)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return rows, final


def _build_all(config: BuildConfig, plan, staging: Path, log, advance) -> list[Row]:
    stage = staging / config.set_name
    required = config.required()
    exact = build_detector(config.reference_spec) if config.data or config.temporal else None  # the reference, once
    engine = make_engine(config.engine, config.address, config.workers)
    gate = _gate(config, exact, stage / f"{config.kind.prefix}reference.scores", log, engine)
    temporal, temporal_sources, video_gate = _temporal(config, exact, stage / f"{config.kind.prefix}reference-video.scores",
                                                       log, engine)
    parity_images = toy_crops(config.parity_samples)
    calib = (calibration_set(config.calib, config.calib_size, config.spec.region)
             if any(p in TARGETS[t].quantized for _, t, p in plan) else None)
    advance()
    rows: list[Row] = []
    for rung in dict.fromkeys(r for r, _, _ in plan):
        spec = config.rung_spec(rung)
        # one copy of the weights at a time: the reference, already scored, is the exact rung's detector or is let go
        if exact is None or spec != config.reference_spec:
            exact = None
        det, exact = (build_detector(spec) if exact is None else exact), None
        flops = spec_gflops(spec)["total"]
        sources = weight_sources(spec)
        options = {"preset": spec.preset, "head": spec.head, "region": spec.region, "dinov3_input": spec.dinov3_input,
                   "region_index": rung, "backbone": spec.backbone, "validation": config.data,
                   "parity_samples": config.parity_samples}
        steps = [step for step in plan if step[0] == rung]
        caches: dict[str, dict] = {}  # one conversion per target, shared by its precisions
        for i, (_, target, precision) in enumerate(steps):
            folder = folder_name(rung, target, precision)
            job = Job(det, TARGETS[target], precision, config.set_name, folder, sources, options, parity_images,
                      calib, gate, config.accuracy_iterations, temporal, temporal_sources, video_gate,
                      caches.setdefault(target, {}))
            rows.append(_run(job, staging, flops, log))
            rows[-1].required = folder in required
            if all(t != target for _, t, _ in steps[i + 1:]):
                caches.pop(target)  # its conversion (a second copy of the weights) is not needed again
            del job
            gc.collect()  # what of the rung sits in reference cycles (its runtime session, the converter's copies) goes now, not in the next rung
            advance()
        det = None
    bench = _bench(rows, stage, config, log, advance) if config.bench_runs > 0 else None
    _write_reports(stage, config, rows, gate, bench, calib)
    return rows


def _gate(config: BuildConfig, exact, scores: Path, log, engine) -> Gate | None:
    """The reference's scores on the validation split (written to `scores`), or None without a split. `engine`
    scores the split for the reference and for every rung (dfedge.distributed: on Ray)."""
    if config.data is None:
        return None
    spec = config.reference_spec
    log(f"reference: torch FP32 (exact region index, {spec.backbone} backbone) on {config.data}")
    validation = Validation.build(torch_runner(exact), exact.probe.info.threshold, open_set(config.data, spec.region),
                                  config.data, engine, Recipe("torch", spec=spec), reference_batch(spec_gflops(spec)["total"]))
    validation.reference.header.pop("problems", None)
    validation.reference.header["identity"] = identity(spec)  # so `dfedge validate` can check it is this model
    validation.reference.header["detector"] = dataclasses.asdict(spec)  # and rebuild it (validate --degrade)
    validation.reference.header["decisions"] = decisions(exact)  # and check a bundle's guard and face settings against it
    save_scores(scores, validation.reference)
    selects = head_info(spec.head).selects  # Top-K's selected tokens move with the logit: reported, not limited
    return Gate(validation, Budget(config.max_auc_drop), None if selects else config.min_mask_agreement, config.validation_pack,
                engine)


def _temporal(config: BuildConfig, exact, scores: Path, log, engine) -> tuple:
    """(temporal head, its sources, the video-level gate) of a video build: the head file checked against the
    frame encoder's feature width, and, when the build gates, the torch FP32 reference's video scores on
    `video_data` (written to `scores`). (None, {}, None) for a photo build."""
    if config.temporal is None:
        return None, {}, None
    spec = config.reference_spec
    head = temporal_head(None if config.temporal == "toy" else config.temporal, spec.preset, exact.dinov3.cfg.width,
                         config.temporal_sha256)
    sources = head.sources
    if config.data is None:
        return head, sources, None
    log(f"video reference: torch FP32 frame encoder + temporal head on {config.video_data}")
    gate = VideoGate.build(torch_runner(exact), torch_runner(head), open_set(config.video_data), Budget(config.max_auc_drop),
                           head.cfg.frames, head.info, engine, Recipe("torch", spec=spec))
    gate.reference.header.update(identity=identity(spec), detector=dataclasses.asdict(spec), temporal=sources)
    save_scores(scores, gate.reference)
    return head, sources, gate


def _run(job: Job, staging: Path, flops: float, log) -> Row:
    row = Row(job.options["region_index"], job.target.name, job.precision, job.folder, gflops=flops)
    start = time.time()
    log(f"{job.folder}: {'exporting' if job.precision in job.target.precisions else 'quantizing'}")
    try:
        _, manifest = write_bundle(job, staging, log)
    except GateError as e:
        row.failed(e)
    except Exception as e:  # noqa: BLE001 - a failing bundle never aborts the others; it is reported
        row.failed(e)
        traceback.print_exc()  # whole, to stderr: the command's log
    else:
        row.shipped(manifest)
    row.seconds = time.time() - start
    return row


def _bench(rows: list[Row], stage: Path, config: BuildConfig, log, advance) -> dict:
    """Every shipped bundle through its own bench.py, and torch FP32 eager once per region index (bench_set)."""
    shipped = [r for r in rows if r.status == "ok"]
    log(f"timing {len(shipped)} bundles ({config.bench_runs} runs each) and the torch reference")

    def reference(manifest: dict) -> dict | str:  # the model the bundles were made from, with its weight files
        return reference_spec(manifest, config.rung_spec(manifest["export_options"]["region_index"]))

    how = BenchRun(config.bench_runs, config.bench_warmup, config.threads)
    bench = bench_set([stage / r.folder for r in shipped], how, reference=reference, progress=lambda _: advance())
    for row, result in zip(shipped, bench["results"]):
        if result.get("status") == "ok":
            row.p50_ms, row.fps, row.speedup = result["latency_ms"]["p50"], result["fps"], result.get("speedup_vs_torch")
        elif result.get("status") == "unavailable" and not TARGETS[row.target].format.runs_here():
            row.bench_note = f"{TARGETS[row.target].format.predicts_where} only"
        else:
            row.bench_note = f"bench {result.get('status')}: {result.get('reason', '')}"[:60]
    return bench


def _write_reports(stage: Path, config: BuildConfig, rows: list[Row], gate: Gate | None, bench: dict | None,
                   calib) -> None:
    spec, kind = config.spec, config.kind
    weights = {part: rec.get("file") or rec.get("note") for part, rec in weight_sources(spec).items()}
    passed = sum(r.status == "ok" for r in rows)
    reference, ref_auc = "Parity only: no validation split (`--data`), so no AUC gate.", None
    if gate is not None:
        ref = gate.validation.reference
        ref_auc = binary_metrics(ref.labels[ref.scored], ref.logits[ref.scored], ref.threshold).auc
        reference = (f"Reference: torch FP32, exact region index, teacher backbone, on `{config.data}` ({len(ref)} crops, "
                     f"{int(ref.scored.sum())} with a region found), AUC {ref_auc:.4f}. Gate: ΔAUC ≥ "
                     f"−{config.max_auc_drop * 100:.2f} pp and token-mask agreement "
                     + (f"≥ {gate.min_mask_agreement}" if gate.min_mask_agreement is not None else
                        "reported (the head's mask is its Top-K selection, which moves with the logit)") + " against it.")
    latency = ("No benchmark." if bench is None else
               f"Latency: `bench.py` of each bundle in its own process, {config.bench_runs} runs after "
               f"{config.bench_warmup} warm-up, threads {config.threads or 'all'}; × torch = torch FP32 eager p50 / p50 "
               "on the same host in the same run.")
    lines = [
        f"# dfedge {config.command} `{config.set_name}`", "",
        f"{passed} of {len(rows)} bundles passed. {reference}", "",
        outcome(rows)[1], "",
        f"Host: {cpu_model()} ({', '.join(cpu_isa()) or 'ISA flags unknown'}), {os.cpu_count()} cores. The runtimes pick "
        "their kernels by the CPU's instruction set, so quantized rungs can be judged differently on another host.", "",
        "Every bundle first matches its own torch graph on toy crops (|Δlogit| / max(1, |logit|) ≤ 1e-4 fp32, ≤ 1e-2 "
        "fp16; token masks). ✅ shipped · ❎ refused by the gate (not shipped) · ❌ a step failed. |Δlogit| and mask "
        "agreement: against the reference on the validation split when gated, else against the rung's torch graph on "
        "the parity crops. GFLOPs: the fused graph per face at this preset.", "",
        latency, "",
        markdown_table(rows), "",
        "## Target matrix", "",
        "Status and ΔAUC pp of each target × precision (exact region index; · no such rung for the target):", "",
        target_matrix([dataclasses.asdict(r) for r in rows if r.region_index == "exact"]), "",
        "## Settings", "",
        f"- model: preset `{spec.preset}`, head `{spec.head}`, region `{spec.region}`, DINOv3 input {spec.dinov3_input}; "
        f"weights {json.dumps(weights)}",
        "- calibration (quantized rungs): " + (f"{calib.source}, {len(calib.images)} crops, sha256 {calib.sha256[:12]}…"
                                                 if calib else "none (no quantized rung planned)"),
        f"- dfedge {__version__}; files: `{kind.record}` (every row and the settings)"
        + (f", `{kind.prefix}reference.scores` (the reference's scores)" if gate else "")
        + (f", `{kind.prefix}bench.json` (`dfedge report merge` reads it)" if bench else ""), "",
        "## Run a bundle on a device", "",
        "Copy a bundle folder and run `python bench.py --label \"my device\"` (numpy and the runtime only); "
        "merge results with `dfedge report merge *.json`.",
    ]
    control = [line for r in rows for line in r.accuracy_lines()]
    if control:
        lines += ["", "## Accuracy control", "", *control, "",
                  "A shipped rung's manifest holds the same record: `conversion`."]
    failures = [r for r in rows if r.status != "ok"]
    if failures:
        lines += ["", "## Not shipped", ""] + [f"- `{r.folder}` {MARKS[r.status]}: {r.reason}" for r in failures]
    atomic_write(stage / kind.report, lambda t: t.write_text("\n".join(lines) + "\n"))
    record = {"schema": "dfedge-build/1", "command": config.command, "config": _jsonable(dataclasses.asdict(config)),
              "host": {"cpu": cpu_model(), "isa": cpu_isa(), "cores": os.cpu_count()},
              "calibration": calib.record() if calib else None, "reference_auc": ref_auc,
              "rows": [dataclasses.asdict(r) for r in rows]}
    atomic_write(stage / kind.record, lambda t: t.write_text(json.dumps(record, indent=2, default=str)))
    if bench is not None:
        atomic_write(stage / f"{kind.prefix}bench.json", lambda t: t.write_text(json.dumps(bench, indent=2)))


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _merge(stage: Path, final: Path, rows: list[Row]) -> None:
    """A narrowed build's set into dist/<name>: each shipped bundle replaces its namesake and one the gate refused
    removes it (never left shipped beside a report that refuses it); a failed step leaves an earlier bundle of that
    name as it was, and the set's other bundles and files stay."""
    final.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if row.status == "ok":
            replace_folder(stage / row.folder, final / row.folder)
        elif row.status == "gate":
            shutil.rmtree(final / row.folder, ignore_errors=True)
    for path in stage.iterdir():
        if path.is_file():
            path.replace(final / path.name)
