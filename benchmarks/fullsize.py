"""Full-size fused graph (DINOv3 ViT-L/16 + FaRL ViT-B/16, seeded random weights) on this host, every CPU backend
(a script, not a test):

    python benchmarks/fullsize.py --runs 3 --calib 8 --out /tmp/fullsize.json
    python benchmarks/fullsize.py --rung distilled --backends torch openvino-fp32 openvino-bf16

torch eager FP32 (the reference), ONNX Runtime FP32, OpenVINO FP32 and static INT8 (NNCF), LiteRT FP32 and
dynamic-range INT8 (int8 weights; XNNPACK), ExecuTorch FP32 and static INT8 (XNNPACK delegate; the share of ops and
GFLOPs it takes, from the exporter's placement report). ExecuTorch's Python runtime imports torch (its bindings take
torch tensors): its rows say so (`torch_imported`). Per backend: export/convert time, model size, load time, warm-up,
latency over --runs single-face runs (p50/p90/mean), ratio to torch eager measured in the same run, ratio to the
roofline (fused-graph FLOPs / the host's measured peak GEMM rate of the row's precision: fp32, bf16, int8 via
torch._int_mm), peak RSS, and parity of the logit and the
token mask with torch on the benchmark crop (the first toy:val crop).

Every step runs in its own subprocess (this file with --worker), one at a time, so each peak RSS and load time is
that step's alone and memory is returned between steps:
  * `export` builds the detector and writes a target's bundles (fp32, and the int8 rung from the same converted
    graph), then exits;
  * `run` opens one bundle with the runtime alone (dfedge.runtimes.standalone.open_runner, the code every bundle
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
    ("LiteRT INT8 (dynamic-range, int8 weights)", "tflite", "int8-weights"),
    ("ExecuTorch FP32 (XNNPACK)", "executorch", "fp32"),
    ("ExecuTorch INT8 (XNNPACK, NNCF static)", "executorch", "int8"),
]
PACKAGES = ["torch", "onnx", "onnxruntime", "openvino", "nncf", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
            "executorch", "numpy"]


def peak_rss_gb() -> float:
    from dfedge.runtimes.standalone import peak_rss_mb  # VmHWM: ru_maxrss would include the parent's peak

    return peak_rss_mb() / 2**10


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float))


# ---------------------------------------------------------------------------------------------- workers


def worker_roofline(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    out = {"threads": torch.get_num_threads()}
    if not args.no_flops:
        from dfedge.models.factory import DetectorSpec, gflops, meta_detector

        out["gflops"] = gflops(meta_detector(DetectorSpec(preset=args.preset, region_index=args.region_index)))
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
    from dfedge.models.factory import DetectorSpec, build_detector

    torch.set_num_threads(args.threads)
    crop = np.load(args.workdir / "crop.npy")
    start = time.perf_counter()
    det = build_detector(DetectorSpec(preset=args.preset, region_index=args.region_index)).eval()
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
    if args.region_index == args.rung:  # (the exact baseline of a cheaper rung is timed only)
        np.savez(args.workdir / "reference.npz", **{n: getattr(ref, n).numpy() for n in OUTPUT_NAMES})
    return {"load_s": load_s, "load_note": "build_detector (seeded random init), no file", "fingerprint": fp,
            "warmup_s": warm, "times_s": times, "region_tokens": int(ref.region_tokens.reshape(-1)[0]),
            "threads": torch.get_num_threads(), "peak_rss_gb": peak_rss_gb()}


def worker_export(args) -> dict:
    """Build the detector once and write the target's bundles: fp32 by the exporter, the int8 rung by the
    quantizer from the same converted graph (the jobs' shared cache), each into workdir/<target>-<precision>."""
    import torch

    from dfedge.export.job import Job
    from dfedge.models.factory import DetectorSpec, build_detector
    from dfedge.targets import TARGETS

    torch.set_num_threads(args.threads)
    target = TARGETS[args.target]
    crop = np.load(args.workdir / "crop.npy")
    start = time.perf_counter()
    det = build_detector(DetectorSpec(preset=args.preset, region_index=args.region_index)).eval()
    result = {"build_s": time.perf_counter() - start, "fingerprint": fingerprint(det), "rungs": {}}
    cache: dict = {}
    for precision in args.precisions:
        out = args.workdir / f"{target.name}-{precision}"
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
    from dfedge.runtimes.standalone import open_runner

    crop = np.load(args.workdir / "crop.npy")
    bundle = args.workdir / f"{args.target}-{args.precision}"
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
    ref = np.load(args.workdir / "reference.npz")
    mask_ref, mask_out = ref["token_mask"] > 0.5, np.asarray(out["token_mask"]) > 0.5
    return {"load_s": load_s, "warmup_s": warm, "times_s": times,
            "max_abs_logit": float(np.abs(np.asarray(out["logit"], np.float64) - ref["logit"].astype(np.float64)).max()),
            "logit": float(np.asarray(out["logit"]).reshape(-1)[0]),
            "mask_agreement": float((mask_ref == mask_out).mean()),
            "masks_identical": bool((mask_ref == mask_out).all()),
            "region_tokens": int(np.asarray(out["region_tokens"]).reshape(-1)[0]),
            "torch_imported": "torch" in sys.modules, "rss_before_load_gb": rss_before, "peak_rss_gb": peak_rss_gb()}


WORKERS = {"roofline": worker_roofline, "torch": worker_torch, "export": worker_export, "run": worker_run}


# ---------------------------------------------------------------------------------------------- driver


def spawn(args, name: str, extra: list[str], timeout: float,
          region_index: str | None = None) -> tuple[dict | None, str | None, float]:
    """Run one worker in a fresh process; -> (its JSON, failure reason, wall seconds). Its output goes to a log."""
    args.region_index = region_index or args.rung
    result, log = args.workdir / f"{name}.json", args.workdir / f"{name}.log"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", extra[0], "--workdir", str(args.workdir),
           "--threads", str(args.threads), "--runs", str(args.runs), "--warmup", str(args.warmup),
           "--calib", str(args.calib), "--preset", args.preset, "--region-index", args.region_index,
           "--rung", args.rung, "--result", str(result), *extra[1:]]
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

    from dfedge.runtimes.standalone import cpu_model

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

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "mem_gb": mem,
            "simd": sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                                                     "avx512_bf16", "amx_tile", "f16c"}),
            "os": platform.platform(), "python": platform.python_version(), "versions": versions,
            "dfedge": dfedge.__file__, "git_commit": commit}


def fmt(value, spec: str, suffix: str = "") -> str:
    return "–" if value is None else format(value, spec) + suffix


def placement_cell(report: dict | None) -> str:
    """'390/463 ops, 87.3 % of GFLOPs' from a converter's placement report (the targets that write one)."""
    where = (report or {}).get("placement")
    if not where:
        return "–"
    share = where.get("accelerated_flop_share")
    return (f"{where['ops']['accelerated']}/{where['ops']['total']} ops, "
            + ("–" if share is None else f"{100 * share:.1f} % of GFLOPs"))


def markdown(rows: list[dict]) -> str:
    columns = ["backend", "status", "convert s", "size MB", "load s", "warm-up s", "p50 s", "p90 s", "mean s",
               "× torch", "faster than torch exact", "× roofline", "peak RSS run GB", "peak RSS export GB", "max \\|Δlogit\\|", "mask agreement",
               "accelerated ops / GFLOP share"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        reason = r.get("reason", "")
        reason = reason if len(reason) <= 160 else reason[:160] + "…"  # the JSON keeps it whole
        status = "ok" if r["status"] == "ok" else f"❌ {reason}".replace("|", "/")
        mask = None if r.get("mask_agreement") is None else (
            "identical" if r.get("masks_identical") else f"{r['mask_agreement']:.4f}")
        lines.append("| " + " | ".join([
            r["backend"], status, fmt(r.get("convert_s"), ".0f"), fmt(r.get("size_mb"), ".1f"), fmt(r.get("load_s"), ".1f"),
            fmt(r.get("warmup_s"), ".1f"), fmt(r.get("p50_s"), ".2f"), fmt(r.get("p90_s"), ".2f"), fmt(r.get("mean_s"), ".2f"),
            fmt(r.get("vs_torch"), ".2f", "×"), fmt(r.get("speedup_vs_torch_exact"), ".1f", "×"), fmt(r.get("vs_roofline"), ".2f", "×"), fmt(r.get("peak_rss_gb"), ".2f"),
            fmt(r.get("export_peak_rss_gb"), ".2f"),
            "reference" if r["target"] == "torch" and r["status"] == "ok" else fmt(r.get("max_abs_logit"), ".1e"),
            "reference" if r["target"] == "torch" and r["status"] == "ok" else (mask or "–"),
            placement_cell(r.get("quantization"))]) + " |")
    return "\n".join(lines)


def latency_fields(times: list[float]) -> dict:
    t = np.asarray(times)
    return {"times_s": times, "p50_s": float(np.percentile(t, 50)), "p90_s": float(np.percentile(t, 90)),
            "mean_s": float(t.mean()), "min_s": float(t.min())}


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

    roof, reason, _ = spawn(args, "roofline-start", ["roofline"], args.step_timeout)
    if roof is None:
        print(f"roofline failed: {reason}", file=sys.stderr)
        return 2
    gemm = [roof["gemm_gflops_best"]]

    rows, fingerprints = [], {}
    ref = {}
    baseline_p50 = None
    if args.rung != "exact":  # torch eager FP32 on the exact rung: what every ratio is against
        base, reason, wall = spawn(args, "torch-exact", ["torch"], args.step_timeout, region_index="exact")
        row = {"backend": "torch eager FP32, exact rung (the baseline)", "target": "torch", "precision": "fp32",
               "rung": "exact"}
        if base is None:
            row.update(status="failed", reason=reason)
        else:
            baseline_p50 = float(np.percentile(base["times_s"], 50))
            row.update(status="ok", load_s=base["load_s"], warmup_s=base["warmup_s"][0], peak_rss_gb=base["peak_rss_gb"],
                       wall_s=wall, loadavg_1min=args.step_loadavg, **latency_fields(base["times_s"]))
        rows.append(row)
    for label, target, precision in wanted:
        if target != "torch":
            continue
        res, reason, wall = spawn(args, "torch", ["torch"], args.step_timeout)
        row = {"backend": label, "target": target, "precision": precision}
        if res is None:
            row.update(status="failed", reason=reason)
        else:
            fingerprints["torch"] = res["fingerprint"]
            ref = res
            row.update(status="ok", convert_s=None, size_mb=None, load_s=res["load_s"], load_note=res["load_note"],
                       warmup_s=res["warmup_s"][0], peak_rss_gb=res["peak_rss_gb"], region_tokens=res["region_tokens"],
                       wall_s=wall, loadavg_1min=args.step_loadavg, **latency_fields(res["times_s"]))
        rows.append(row)
    if not (args.workdir / "reference.npz").is_file():
        print("no torch reference (torch step not run or failed): parity columns will be empty", file=sys.stderr)

    targets = []
    for _, target, _ in wanted:
        if target != "torch" and target not in targets:
            targets.append(target)
    for target in targets:
        precisions = [p for _, t, p in wanted if t == target]
        exp, reason, wall = spawn(args, f"export-{target}", ["export", "--target", target, "--precisions", *precisions],
                                  args.step_timeout)
        if exp is not None:
            fingerprints[f"export-{target}"] = exp["fingerprint"]
        for label, t, precision in wanted:
            if t != target:
                continue
            row = {"backend": label, "target": target, "precision": precision}
            rows.append(row)
            if exp is None:
                row.update(status="failed", reason=f"export: {reason}")
                continue
            rung = exp["rungs"][precision]
            row.update(convert_s=rung["convert_s"], export_peak_rss_gb=exp["peak_rss_gb"], export_build_s=exp["build_s"])
            if rung["status"] != "ok":
                row.update(status="failed", reason=f"export: {rung['reason']}")
                continue
            row.update(size_mb=rung["size_mb"], files=rung["files"], quantization=rung["report"] or None)
            if not (args.workdir / "reference.npz").is_file():
                row.update(status="failed", reason="no torch reference to compare with")
                continue
            res, reason, wall = spawn(args, f"run-{target}-{precision}",
                                      ["run", "--target", target, "--precision", precision], args.step_timeout)
            if not args.keep_bundles:
                shutil.rmtree(args.workdir / f"{target}-{precision}", ignore_errors=True)
            if res is None:
                row.update(status="failed", reason=f"run: {reason}")
                continue
            row.update(status="ok", load_s=res["load_s"], warmup_s=res["warmup_s"][0], peak_rss_gb=res["peak_rss_gb"],
                       max_abs_logit=res["max_abs_logit"], mask_agreement=res["mask_agreement"],
                       masks_identical=res["masks_identical"], region_tokens=res["region_tokens"],
                       torch_imported=res["torch_imported"], wall_s=wall, loadavg_1min=args.step_loadavg,
                       **latency_fields(res["times_s"]))
        for precision in precisions:  # whatever is left of this target's bundles
            if not args.keep_bundles:
                shutil.rmtree(args.workdir / f"{target}-{precision}", ignore_errors=True)

    roof_end, _, _ = spawn(args, "roofline-end", ["roofline", "--no-flops"], args.step_timeout)
    if roof_end is not None:
        gemm.append(roof_end["gemm_gflops_best"])
    peak = max(gemm)
    total_gflop = roof["gflops"]["total"]
    roofline_s = total_gflop / peak
    torch_p50 = next((r["p50_s"] for r in rows if r["target"] == "torch" and r.get("rung") != "exact" and r["status"] == "ok"), None)
    exact_p50 = baseline_p50 or (torch_p50 if args.rung == "exact" else None)
    bf16_peak, int8_peak = roof.get("gemm_bf16_gflops_best"), roof.get("gemm_int8_gops_best")
    for r in rows:
        if r["status"] == "ok":
            r["vs_torch"] = r["p50_s"] / torch_p50 if torch_p50 else None  # time / torch eager FP32 of this rung
            r["speedup_vs_torch_exact"] = exact_p50 / r["p50_s"] if exact_p50 else None
            roof_s = {"bf16": total_gflop / bf16_peak if bf16_peak else None,
                      "int8": total_gflop / int8_peak if int8_peak else None}.get(r["precision"]) or roofline_s
            r["vs_roofline"] = r["p50_s"] / roof_s
            if r.get("rung") == "exact" and args.rung != "exact":
                r["vs_roofline"] = None  # the roofline is of the rung's FLOPs, not the baseline's
            r["achieved_gflops"] = total_gflop / r["p50_s"]
    same_weights = len(set(fingerprints.values())) <= 1
    facts["loadavg_end"] = os.getloadavg()
    table = markdown(rows)
    out = {
        "schema": "dfedge-fullsize-bench/1", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": facts,
        "settings": {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "calib": args.calib,
                     "crop": "ToySet('val', 1)[0]", "preset": f"{args.preset} (seeded random weights, seed 0)",
                     "process_model": "one subprocess per step (export / run / torch / roofline)"},
        "flops": {"gflops": roof["gflops"], "source": "dfedge.models.factory.gflops(meta_detector(full))"},
        "region_index": args.rung,
        "roofline": {"gemm": f"torch.matmul {args.gemm_n}x{args.gemm_n} fp32, {args.threads} threads",
                     "bf16_gemm_gflops": roof.get("gemm_bf16_gflops_best"),
                     "int8_gemm_gops": roof.get("gemm_int8_gops_best"),
                     "gemm_gflops_start": gemm[0], "gemm_gflops_end": gemm[1] if len(gemm) > 1 else None,
                     "peak_gflops": peak, "lower_bound_s": roofline_s},
        "same_weights_everywhere": same_weights, "fingerprints": fingerprints,
        "torch_reference": {"logit": float(np.load(args.workdir / "reference.npz")["logit"].reshape(-1)[0]),
                            "region_tokens": ref.get("region_tokens")} if (args.workdir / "reference.npz").is_file() else None,
        "rows": rows, "table_markdown": table, "wall_s": time.perf_counter() - t_start,
    }
    if args.out:
        write_json(args.out, out)
    print()
    print(f"host: {facts['cpu']}, {facts['cores']} cores, {args.threads} threads; SIMD {', '.join(facts['simd'])}")
    print(f"FLOPs per face: {total_gflop:.1f} GFLOP ("
          + ", ".join(f"{k} {v:.1f}" for k, v in roof["gflops"].items() if k != "total") + ")")
    print(f"peak fp32 GEMM: {peak:.1f} GFLOP/s (start {gemm[0]:.1f}"
          + (f", end {gemm[1]:.1f}" if len(gemm) > 1 else "") + f") -> roofline {roofline_s:.2f} s per face")
    if not same_weights:
        print("WARNING: the processes built different weights; parity is not meaningful", file=sys.stderr)
    print(table)
    if args.out:
        print(f"-> {args.out}")
    ok = all(r["status"] == "ok" for r in rows)
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
    ap.add_argument("--rung", "--region-index-rung", default="exact",
                    help="region-index rung of every backend (exact, lite-head, parser-224, distilled); ratios are "
                         "always against torch eager FP32 on the exact rung, timed in the same run")
    ap.add_argument("--region-index", default=None, help=argparse.SUPPRESS)  # a worker's rung
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
