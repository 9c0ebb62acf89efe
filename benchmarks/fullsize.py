"""Full-size fused graph (DINOv3 ViT-L/16 + FaRL ViT-B/16, seeded random weights) on this host, every CPU backend
(a script, not a test):

    python benchmarks/fullsize.py --runs 3 --calib 8 --out /tmp/fullsize.json
    python benchmarks/fullsize.py --region-index exact distilled --out /tmp/fullsize.json
    python benchmarks/fullsize.py --region-index distilled --backends torch openvino-fp32 openvino-bf16
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/fullsize.py --region-index distilled \
        --backends torch openvino-fp32 openvino-int8     # an AVX2-only CPU's kernels (oneDNN/MKL capped), recorded

Every region-index rung given (--region-index exact distilled ...) on every backend: torch eager FP32 (each rung's
reference), ONNX Runtime FP32 and static INT8, OpenVINO FP32, static INT8 (NNCF) and BF16 (inference precision),
LiteRT FP32 and static INT8 (XNNPACK), ExecuTorch FP32 and static INT8 (XNNPACK); the bf16 rows of targets without a
bf16 rung say why (dfedge.targets.BF16), and OpenVINO's says "not supported here" on CPUs without bfloat16.
ExecuTorch's Python runtime imports torch (its bindings take torch tensors): its rows say so (`torch_imported`).
Per row: convert time, size, load time, latency over --runs single-face runs (p50/p90/mean), the ratio to torch eager
FP32 of the same rung and to torch eager FP32 on the exact rung (always timed in the same run), the achieved rate and
the ratio to the roof of its precision (the rung's FLOPs / the host's GEMM rate measured in the same run: fp32 and
bf16 torch.matmul, int8 torch._int_mm), peak RSS, parity of the logit and the token mask with torch of the same rung
on the benchmark crop (the first toy:val crop), and the placement as the runtime reports it (bench.py --placement's
code). The 1-minute load average is recorded before and after every step.

Every step runs in its own subprocess (this file with --worker), one at a time, so each peak RSS and load time is
that step's alone and memory is returned between steps:
  * `export` builds the detector and writes a target's bundles (fp32, and the int8 rung from the same converted
    graph), then exits;
  * `run` opens one bundle with the runtime alone (dfedge.device.bundle.open_runner, the code every bundle
    ships as bench.py; torch is not imported) and times it;
  * `torch` builds the detector and times eager FP32; its outputs on the crop are the parity reference;
  * `roofline` counts FLOPs on a meta model and times a large fp32 GEMM (at the start and at the end; the faster
    is the peak).
A bundle is deleted as soon as it has been timed. A failing step is recorded with its reason; the rest go on.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH_NAME = "fullsize-bench"
# (backend label, target, precision); torch is the reference
BACKENDS = [
    ("torch eager FP32", "torch", "fp32"),
    ("ONNX Runtime FP32", "onnx", "fp32"),
    ("OpenVINO FP32", "openvino", "fp32"),
    ("OpenVINO INT8 (NNCF static)", "openvino", "int8"),
    ("OpenVINO BF16 (inference precision; AVX-512 BF16/AMX CPUs)", "openvino", "bf16"),
    ("LiteRT FP32 (XNNPACK)", "tflite", "fp32"),
    ("LiteRT INT8 (static, NNCF ranges; XNNPACK)", "tflite", "int8"),
    ("ExecuTorch FP32 (XNNPACK)", "executorch", "fp32"),
    ("ExecuTorch INT8 (XNNPACK, NNCF static)", "executorch", "int8"),
    ("ONNX Runtime BF16", "onnx", "bf16"),  # targets.BF16 says why a target has no bf16 rung; its row says so
    ("LiteRT BF16", "tflite", "bf16"),
    ("ExecuTorch BF16", "executorch", "bf16"),
]
PACKAGES = ["torch", "onnx", "onnxruntime", "openvino", "nncf", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
            "executorch", "numpy"]


def rung_spec(preset: str, rung: str):
    """The DetectorSpec of a rung: a region index (exact, distilled, ...), or BACKBONE:REGION_INDEX for the student
    backbone (student:distilled), seeded random weights throughout."""
    from dfedge.models.factory import DetectorSpec

    backbone, _, index = rung.rpartition(":")
    return DetectorSpec(preset=preset, region_index=index, backbone=backbone or "teacher")


def peak_rss_gb() -> float:
    from dfedge.device.host import peak_rss_mb  # VmHWM: ru_maxrss would include the parent's peak

    return peak_rss_mb() / 2**10


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float))


# ---------------------------------------------------------------------------------------------- workers


def worker_roofline(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    out = {"threads": torch.get_num_threads()}
    if not args.no_flops:
        from dfedge.models.factory import gflops, meta_detector

        out["gflops"] = {rung: gflops(meta_detector(rung_spec(args.preset, rung)))
                         for rung in dict.fromkeys(["exact", *args.rungs])}
    n = args.gemm_n

    def timed(gemm, a, b) -> list[float]:
        gemm(a, b)  # warm-up
        times = []
        for _ in range(args.gemm_reps):
            start = time.perf_counter()
            gemm(a, b)
            times.append(time.perf_counter() - start)
        return times

    a, b = torch.randn(n, n), torch.randn(n, n)
    times = timed(torch.matmul, a, b)
    flop = 2.0 * n**3
    out.update(gemm_n=n, gemm_reps=args.gemm_reps, gemm_s=times, gemm_gflops_best=flop / min(times) / 1e9,
               gemm_gflops_median=flop / float(np.median(times)) / 1e9)
    # the bf16 roof: torch's oneDNN GEMM (AMX or AVX-512 BF16 where the CPU has them)
    out.update(gemm_bf16_gflops_best=flop / min(timed(torch.matmul, a.bfloat16(), b.bfloat16())) / 1e9)
    a, b = (torch.randint(-128, 128, (n, n), dtype=torch.int8) for _ in range(2))  # the int8 roof: torch._int_mm
    try:
        out.update(gemm_int8_gops_best=flop / min(timed(torch._int_mm, a, b)) / 1e9)
    except RuntimeError as e:  # no int8 GEMM for this CPU in this torch build: the INT8 rows get no roof
        out.update(gemm_int8_gops_best=None, gemm_int8_note=str(e).splitlines()[0])
    return out


def fingerprint(module) -> str:
    """SHA-256 of every parameter and buffer: proves each process built the same seeded weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker_torch(args) -> dict:
    import torch

    from dfedge.models.detector import OUTPUT_NAMES
    from dfedge.models.factory import build_detector

    torch.set_num_threads(args.threads)
    crop = np.load(args.workdir / "crop.npy")
    start = time.perf_counter()
    det = build_detector(rung_spec(args.preset, args.worker_rung)).eval()
    load_s = time.perf_counter() - start
    fp = fingerprint(det)
    x = torch.from_numpy(crop)
    with torch.inference_mode():
        start = time.perf_counter()
        ref = det(x)  # the first call is a warm-up and gives the parity reference
        warm = [time.perf_counter() - start]
        for _ in range(args.warmup - 1):
            start = time.perf_counter()
            det(x)
            warm.append(time.perf_counter() - start)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            det(x)
            times.append(time.perf_counter() - start)
    np.savez(args.workdir / f"reference-{args.worker_rung}.npz", **{n: getattr(ref, n).numpy() for n in OUTPUT_NAMES})
    return {"load_s": load_s, "load_note": "build_detector (seeded random init), no file", "fingerprint": fp,
            "warmup_s": warm, "times_s": times, "region_tokens": int(ref.region_tokens.reshape(-1)[0]),
            "threads": torch.get_num_threads(), "peak_rss_gb": peak_rss_gb()}


def worker_export(args) -> dict:
    """Build the detector once and write the target's bundles: fp32 by the exporter, the int8 rung by the
    quantizer from the same converted graph (the jobs' shared cache), each into workdir/<target>-<precision>."""
    import torch

    from dfedge.export.job import Job
    from dfedge.models.factory import build_detector
    from dfedge.targets import TARGETS

    torch.set_num_threads(args.threads)
    target = TARGETS[args.target]
    crop = np.load(args.workdir / "crop.npy")
    start = time.perf_counter()
    det = build_detector(rung_spec(args.preset, args.worker_rung)).eval()
    result = {"build_s": time.perf_counter() - start, "fingerprint": fingerprint(det), "rungs": {}}
    cache: dict = {}
    for precision in args.precisions:
        out = args.workdir / f"{args.worker_rung}-{target.name}-{precision}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        report: dict = {}
        start = time.perf_counter()
        try:
            calib = None
            if precision in ("int8", "mixed"):  # the static rungs
                from dfedge.data.calibration import calibration_set

                calib = calibration_set(f"toy:train:{args.calib}", args.calib)
            job = Job(det, target, precision, BENCH_NAME, out.name, {}, {}, crop, calib, cache=cache)
            target.convert_for(precision)(job, out, report)  # the table's exporter or quantizer
            if "runtime_options" in report:  # a rung's own options (bf16): the run step applies them, as bundles do
                (out / "runtime_options.json").write_text(json.dumps(report["runtime_options"]))
            seconds = time.perf_counter() - start
            files = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}
            result["rungs"][precision] = {"status": "ok", "convert_s": seconds, "files": files,
                                          "size_mb": sum(files.values()) / 1e6,
                                          "report": json.loads(json.dumps(report, default=str))}
        except Exception as e:  # noqa: BLE001 - recorded, the other rung still runs
            import traceback

            traceback.print_exc()
            shutil.rmtree(out, ignore_errors=True)
            result["rungs"][precision] = {"status": "failed", "convert_s": time.perf_counter() - start,
                                          "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        print(f"{target.name}-{precision}: {result['rungs'][precision]['status']} "
              f"({result['rungs'][precision]['convert_s']:.0f} s, peak RSS so far {peak_rss_gb():.1f} GB)", flush=True)
        gc.collect()
    result["peak_rss_gb"] = peak_rss_gb()
    return result


def worker_run(args) -> dict:
    """Open a bundle with its runtime alone (no torch in this process) and time it."""
    from dfedge.device.bundle import open_runner

    crop = np.load(args.workdir / "crop.npy")
    bundle = args.workdir / f"{args.worker_rung}-{args.target}-{args.precision}"
    rss_before = peak_rss_gb()
    start = time.perf_counter()
    options = bundle / "runtime_options.json"
    run = open_runner(bundle, args.target, args.threads, options=json.loads(options.read_text()) if options.is_file() else None)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    out = run(crop)  # first call: warm-up, and the outputs for parity
    warm = [time.perf_counter() - start]
    for _ in range(args.warmup - 1):
        start = time.perf_counter()
        run(crop)
        warm.append(time.perf_counter() - start)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run(crop)
        times.append(time.perf_counter() - start)
    ref = np.load(args.workdir / f"reference-{args.worker_rung}.npz")
    mask_ref, mask_out = ref["token_mask"] > 0.5, np.asarray(out["token_mask"]) > 0.5
    rss = peak_rss_gb()  # before the placement run: ONNX Runtime's profiling session is a second copy
    where = None
    try:  # where the ops ran, in the runtime's own view with the same options (one more profiled run on ONNX Runtime)
        from dfedge.device.bundle import placement

        where = placement(bundle, args.target, json.loads(options.read_text()) if options.is_file() else None)
    except Exception as e:  # noqa: BLE001 - recorded; the timing stands without it
        where = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    return {"load_s": load_s, "warmup_s": warm, "times_s": times, "placement": where,
            "max_abs_logit": float(np.abs(np.asarray(out["logit"], np.float64) - ref["logit"].astype(np.float64)).max()),
            "logit": float(np.asarray(out["logit"]).reshape(-1)[0]),
            "mask_agreement": float((mask_ref == mask_out).mean()),
            "masks_identical": bool((mask_ref == mask_out).all()),
            "region_tokens": int(np.asarray(out["region_tokens"]).reshape(-1)[0]),
            "torch_imported": "torch" in sys.modules, "rss_before_load_gb": rss_before, "peak_rss_gb": rss}


WORKERS = {"roofline": worker_roofline, "torch": worker_torch, "export": worker_export, "run": worker_run}


# ---------------------------------------------------------------------------------------------- driver


def spawn(args, name: str, extra: list[str], timeout: float, rung: str) -> tuple[dict | None, str | None, float]:
    """Run one worker on one region-index rung in a fresh process; -> (its JSON, failure reason, wall seconds).
    Its output goes to a log."""
    result, log = args.workdir / f"{name}.json", args.workdir / f"{name}.log"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", extra[0], "--workdir", str(args.workdir),
           "--threads", str(args.threads), "--runs", str(args.runs), "--warmup", str(args.warmup),
           "--calib", str(args.calib), "--preset", args.preset, "--region-index", *args.rungs,
           "--worker-rung", rung, "--result", str(result), *extra[1:]]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    wall = time.perf_counter() - start
    args.step_loadavg = [load_before, os.getloadavg()[0]]  # 1-min load average before and after: how shared the host was
    if code == 0 and result.is_file():
        out = json.loads(result.read_text())
        print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {wall:.0f} s", flush=True)
        return out, None, wall
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln.lower()]
    if code == "timeout":
        reason = f"timed out after {timeout:.0f} s"
    elif isinstance(code, int) and code < 0:
        reason = f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
    else:
        reason = f"exit {code}: " + ((errors or lines or ["no output"])[-1][:300])
    print(f"[{time.strftime('%H:%M:%S')}] {name}: FAILED ({reason}); log {log}", flush=True)
    return None, reason, wall


def host_facts(threads: int) -> dict:
    from importlib import metadata

    from dfedge.device.host import cpu_model

    flags = set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    mem = None
    if Path("/proc/meminfo").is_file():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2**20
    commit = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip() or None
    import dfedge

    caps = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ}
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "mem_gb": mem, "isa_caps": caps or None,
            "simd": sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                                                     "avx512_bf16", "amx_tile", "f16c"}),
            "os": platform.platform(), "python": platform.python_version(), "versions": versions,
            "dfedge": dfedge.__file__, "git_commit": commit}


def fmt(value, spec: str, suffix: str = "") -> str:
    return "–" if value is None else format(value, spec) + suffix


def placement_cell(row: dict) -> str:
    """'1596/1847 ops on XNNPACK, 99.9 % of GEMM GFLOPs · f32' from the runtime's own placement report of the run
    (or, for ExecuTorch, the converter's report: its placement is fixed at lowering)."""
    where = row.get("placement") or (row.get("quantization") or {}).get("placement")
    if not where or "ops" not in where:
        return "–" if not where else f"({where.get('error', 'no report')})".replace("|", "/")
    share = where.get("accelerated_flop_share")
    dtypes = where.get("gemm_gflops_by_dtype", {}).get("accelerated", {})
    total = sum(dtypes.values()) or 1.0
    mix = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(dtypes.items(), key=lambda kv: -kv[1]) if v / total >= 0.005)
    return (f"{where['ops']['accelerated']}/{where['ops']['total']} ops on {where.get('accelerator', '?')}, "
            + ("–" if share is None else f"{100 * share:.1f} % of GEMM GFLOPs") + (f" · {mix}" if mix else ""))


def markdown(rows: list[dict]) -> str:
    columns = ["rung", "backend", "status", "convert s", "size MB", "load s", "p50 s", "p90 s", "× torch (same rung)",
               "faster than torch exact", "achieved GFLOP/s", "× roof (its precision)", "peak RSS run GB",
               "max \\|Δlogit\\|", "mask agreement", "placement (runtime's view)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        reason = r.get("reason", "")
        reason = reason if len(reason) <= 160 else reason[:160] + "…"  # the JSON keeps it whole
        status = {"ok": "ok", "unsupported": f"not supported here: {reason.removeprefix('none: ')}",
                  "skipped": f"skipped ({reason})"}.get(r["status"], f"❌ {reason}")
        mask = None if r.get("mask_agreement") is None else (
            "identical" if r.get("masks_identical") else f"{r['mask_agreement']:.4f}")
        reference = r["target"] == "torch" and r["status"] == "ok"
        lines.append("| " + " | ".join([
            r["rung"], r["backend"], status.replace("|", "/"), fmt(r.get("convert_s"), ".0f"), fmt(r.get("size_mb"), ".0f"),
            fmt(r.get("load_s"), ".1f"), fmt(r.get("p50_s"), ".3f"), fmt(r.get("p90_s"), ".3f"),
            fmt(r.get("vs_torch"), ".2f", "×"), fmt(r.get("speedup_vs_torch_exact"), ".1f", "×"),
            fmt(r.get("achieved_gflops"), ".0f"), fmt(r.get("vs_roofline"), ".2f", "×"), fmt(r.get("peak_rss_gb"), ".2f"),
            "reference" if reference else fmt(r.get("max_abs_logit"), ".1e"),
            "reference" if reference else (mask or "–"), placement_cell(r)]) + " |")
    return "\n".join(lines)


def latency_fields(times: list[float]) -> dict:
    t = np.asarray(times)
    return {"times_s": times, "p50_s": float(np.percentile(t, 50)), "p90_s": float(np.percentile(t, 90)),
            "mean_s": float(t.mean()), "min_s": float(t.min())}


def torch_row(args, rung: str, fingerprints: dict) -> dict:
    res, reason, wall = spawn(args, f"torch-{rung}", ["torch"], args.step_timeout, rung)
    row = {"rung": rung, "backend": "torch eager FP32", "target": "torch", "precision": "fp32"}
    if res is None:
        return dict(row, status="failed", reason=reason)
    fingerprints[f"torch-{rung}"] = res["fingerprint"]
    return dict(row, status="ok", load_s=res["load_s"], load_note=res["load_note"], warmup_s=res["warmup_s"][0],
                peak_rss_gb=res["peak_rss_gb"], region_tokens=res["region_tokens"], wall_s=wall,
                loadavg_1min=args.step_loadavg, **latency_fields(res["times_s"]))


def target_rows(args, rung: str, target: str, wanted: list, fingerprints: dict) -> list[dict]:
    """Export one target's precisions on one rung (one process), then time each bundle (one process each)."""
    from dfedge.targets import BF16

    rows, tried = [], []
    for label, t, precision in wanted:
        if t != target:
            continue
        row = {"rung": rung, "backend": label, "target": target, "precision": precision}
        rows.append(row)
        skip = f"{rung}:{target}-{precision}"
        if precision == "bf16" and not BF16[target].startswith("bf16"):  # the target has no bf16 rung at all
            row.update(status="unsupported", reason=BF16[target])
        elif skip in args.skip:
            row.update(status="skipped", reason=f"--skip {skip}")
        else:
            tried.append(precision)
    if not tried:
        return rows
    exp, reason, _ = spawn(args, f"export-{rung}-{target}", ["export", "--target", target, "--precisions", *tried],
                           args.step_timeout, rung)
    if exp is not None:
        fingerprints[f"export-{rung}-{target}"] = exp["fingerprint"]
    for row in rows:
        precision = row["precision"]
        if precision not in tried:
            continue
        bundle = args.workdir / f"{rung}-{target}-{precision}"
        if exp is None:
            row.update(status="failed", reason=f"export: {reason}")
            continue
        conv = exp["rungs"][precision]
        row.update(convert_s=conv["convert_s"], export_peak_rss_gb=exp["peak_rss_gb"], export_build_s=exp["build_s"])
        if conv["status"] != "ok":
            why = conv["reason"]
            row.update(status="unsupported" if "not supported here" in why else "failed",
                       reason=why.split("not supported here: ", 1)[-1] if "not supported here" in why else f"export: {why}")
            continue
        row.update(size_mb=conv["size_mb"], files=conv["files"], quantization=conv["report"] or None)
        if not (args.workdir / f"reference-{rung}.npz").is_file():
            row.update(status="failed", reason="no torch reference to compare with")
            continue
        res, reason, wall = spawn(args, f"run-{rung}-{target}-{precision}",
                                  ["run", "--target", target, "--precision", precision], args.step_timeout, rung)
        if not args.keep_bundles:
            shutil.rmtree(bundle, ignore_errors=True)
        if res is None:
            row.update(status="failed", reason=f"run: {reason}")
            continue
        row.update(status="ok", load_s=res["load_s"], warmup_s=res["warmup_s"][0], peak_rss_gb=res["peak_rss_gb"],
                   max_abs_logit=res["max_abs_logit"], mask_agreement=res["mask_agreement"],
                   masks_identical=res["masks_identical"], region_tokens=res["region_tokens"],
                   torch_imported=res["torch_imported"], placement=res.get("placement"), wall_s=wall,
                   loadavg_1min=args.step_loadavg, **latency_fields(res["times_s"]))
    for precision in tried:  # whatever is left of this target's bundles
        if not args.keep_bundles:
            shutil.rmtree(args.workdir / f"{rung}-{target}-{precision}", ignore_errors=True)
    return rows


def ratios(rows: list[dict], roof: dict, peak: float) -> None:
    """Each ok row against torch eager FP32 of its rung, torch eager FP32 on the exact rung (the baseline), and the
    roof of its precision: the rung's FLOPs / the host's GEMM rate in that precision (int8 rows: the int8 rate)."""
    exact = next((r["p50_s"] for r in rows if r["target"] == "torch" and r["rung"] == "exact" and r["status"] == "ok"), None)
    rates = {"bf16": roof.get("gemm_bf16_gflops_best"), "int8": roof.get("gemm_int8_gops_best"),
             "w8a16": None, "int8-weights": None}
    for r in rows:
        if r["status"] != "ok":
            continue
        torch_p50 = next((t["p50_s"] for t in rows if t["target"] == "torch" and t["rung"] == r["rung"]
                          and t["status"] == "ok"), None)
        gflop = roof["gflops"][r["rung"]]["total"]
        rate = rates.get(r["precision"], peak) or peak  # fp32, fp16 (f32 compute on these CPUs), weight-only: fp32 roof
        r.update(vs_torch=r["p50_s"] / torch_p50 if torch_p50 else None,
                 speedup_vs_torch_exact=exact / r["p50_s"] if exact else None,
                 achieved_gflops=gflop / r["p50_s"], roof_gflops=rate, vs_roofline=r["p50_s"] / (gflop / rate))


def driver(args) -> int:
    from dfedge.data.sources import ToySet

    keep_workdir = args.workdir is not None or args.keep_bundles
    args.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dfedge-fullsize-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    wanted = [b for b in BACKENDS if args.backends is None or b[1] in args.backends or f"{b[1]}-{b[2]}" in args.backends]
    crop = ToySet("val", 1)[0].image.transpose(2, 0, 1)[None].astype(np.float32)
    np.save(args.workdir / "crop.npy", crop)
    facts = host_facts(args.threads)
    facts["loadavg_start"] = os.getloadavg()
    print(json.dumps(facts, indent=1), flush=True)
    t_start = time.perf_counter()

    roof, reason, _ = spawn(args, "roofline-start", ["roofline"], args.step_timeout, args.rungs[0])
    if roof is None:
        print(f"roofline failed: {reason}", file=sys.stderr)
        return 2
    gemm = [roof["gemm_gflops_best"]]
    rows, fingerprints = [], {}
    # torch eager FP32 on the exact rung, always: the baseline of every "faster than torch exact" ratio
    rows.append(torch_row(args, "exact", fingerprints))
    for rung in args.rungs:
        if rung != "exact" and any(t == "torch" for _, t, _ in wanted):
            rows.append(torch_row(args, rung, fingerprints))
        for target in dict.fromkeys(t for _, t, _ in wanted if t != "torch"):
            rows += target_rows(args, rung, target, wanted, fingerprints)

    roof_end, _, _ = spawn(args, "roofline-end", ["roofline", "--no-flops"], args.step_timeout, args.rungs[0])
    if roof_end is not None:
        gemm.append(roof_end["gemm_gflops_best"])
    peak = max(gemm)
    ratios(rows, roof, peak)
    shipped = [r for r in rows if r["status"] == "ok" and r["target"] != "torch"]
    fastest = min(shipped, key=lambda r: r["p50_s"]) if shipped else None
    same_weights = all(len({v for k, v in fingerprints.items() if k.endswith(f"-{rung}")}) <= 1 for rung in args.rungs)
    facts["loadavg_end"] = os.getloadavg()
    table = markdown(rows)
    out = {
        "schema": "dfedge-fullsize-bench/2", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": facts,
        "settings": {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "calib": args.calib,
                     "crop": "ToySet('val', 1)[0]", "preset": f"{args.preset} (seeded random weights, seed 0)",
                     "rungs": args.rungs, "skip": args.skip,
                     "process_model": "one subprocess per step (export / run / torch / roofline)"},
        "flops": {"gflops": roof["gflops"], "source": "dfedge.models.factory.gflops(meta_detector(preset, rung))"},
        "roofline": {"gemm": f"torch.matmul {args.gemm_n}x{args.gemm_n}, {args.threads} threads",
                     "bf16_gemm_gflops": roof.get("gemm_bf16_gflops_best"),
                     "int8_gemm_gops": roof.get("gemm_int8_gops_best"),
                     "gemm_gflops_start": gemm[0], "gemm_gflops_end": gemm[1] if len(gemm) > 1 else None,
                     "peak_gflops": peak},
        "same_weights_everywhere": same_weights, "fingerprints": fingerprints,
        "fastest_shipped": None if fastest is None else {k: fastest.get(k) for k in (
            "rung", "backend", "target", "precision", "p50_s", "speedup_vs_torch_exact", "max_abs_logit")},
        "rows": rows, "table_markdown": table, "wall_s": time.perf_counter() - t_start,
    }
    if args.out:
        write_json(args.out, out)
    print()
    print(f"host: {facts['cpu']}, {facts['cores']} cores, {args.threads} threads; ISA {', '.join(facts['simd'])}"
          + (f" (capped: {facts['isa_caps']})" if facts["isa_caps"] else "") + "; "
          f"load average {facts['loadavg_start'][0]:.2f} at the start, {facts['loadavg_end'][0]:.2f} at the end")
    for rung in dict.fromkeys(["exact", *args.rungs]):
        g = roof["gflops"][rung]
        print(f"FLOPs per face, {rung}: {g['total']:.1f} GFLOP (" + ", ".join(f"{k} {v:.1f}" for k, v in g.items() if k != "total") + ")")
    print(f"GEMM roofs: fp32 {peak:.1f} GFLOP/s (start {gemm[0]:.1f}" + (f", end {gemm[1]:.1f}" if len(gemm) > 1 else "")
          + f"), bf16 {fmt(roof.get('gemm_bf16_gflops_best'), '.1f')}, int8 {fmt(roof.get('gemm_int8_gops_best'), '.1f')} GOP/s")
    if not same_weights:
        print("WARNING: the processes built different weights; parity is not meaningful", file=sys.stderr)
    print(table)
    if fastest:
        print(f"fastest shipped: {fastest['rung']} / {fastest['backend']}: {fastest['p50_s']:.3f} s, "
              f"{fmt(fastest.get('speedup_vs_torch_exact'), '.1f')}× faster than torch eager FP32 on the exact rung")
    if args.out:
        print(f"-> {args.out}")
    ok = all(r["status"] in ("ok", "unsupported", "skipped") for r in rows)
    if keep_workdir or not ok:
        print(f"logs and worker results: {args.workdir}")
    else:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed single-face runs per backend")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (the first gives the parity outputs)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every backend and the GEMM")
    ap.add_argument("--calib", type=int, default=8, help="toy:train crops for OpenVINO INT8 calibration")
    ap.add_argument("--out", type=Path, default=None, help="result JSON")
    ap.add_argument("--backends", nargs="+", default=None,
                    help="subset: torch onnx openvino tflite, or target-precision (e.g. openvino-int8)")
    ap.add_argument("--workdir", type=Path, default=None, help="bundles and logs (default: a temporary folder, removed)")
    ap.add_argument("--keep-bundles", action="store_true", help="do not delete each bundle once timed")
    ap.add_argument("--preset", default="full", help="detector preset (full; tiny for a quick smoke run)")
    ap.add_argument("--region-index", "--rungs", dest="rungs", nargs="+", default=["exact"],
                    help="region-index rungs, each on every backend (exact, lite-head, parser-224, distilled, or "
                         "student:distilled for the student backbone); ratios are against torch eager FP32 on the exact "
                         "rung, always timed in the same run")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="RUNG:TARGET-PRECISION steps to leave out (recorded as skipped), e.g. exact:onnx-int8")
    ap.add_argument("--worker-rung", default=None, help=argparse.SUPPRESS)  # a worker's rung
    ap.add_argument("--gemm-n", type=int, default=4096)
    ap.add_argument("--gemm-reps", type=int, default=5)
    ap.add_argument("--step-timeout", type=float, default=3600.0, help="seconds before one step is given up")
    # internal: one worker step
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    ap.add_argument("--precisions", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--no-flops", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.runs < 1 or args.warmup < 1:
        ap.error("--runs and --warmup must be >= 1")
    if args.worker:
        write_json(args.result, WORKERS[args.worker](args))
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
