"""CoreML rungs with coremltools.optimize on the FP16-compute ML program: per-channel INT8 weights and k-means
palettes (6-bit, 4-bit). Activation quantization (W8A8) needs `predict` for calibration: macOS only."""

from __future__ import annotations

from pathlib import Path

from ..export import coreml as coreml_export
from ..export.job import Job


def quantize(job: Job, out_dir: Path, report: dict) -> list[Path]:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    model = coreml_export.converted(job, "fp16")
    if job.precision == "int8-weights":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        model = cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=op))
        settings = {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel"}
    elif job.precision in ("palette6", "palette4"):
        nbits = int(job.precision[-1])
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits)
        model = cto.palettize_weights(model, cto.OptimizationConfig(global_config=op))
        settings = {"mode": "kmeans", "nbits": nbits, "granularity": "per_tensor"}
    else:
        raise ValueError(f"coreml has no quantized rung '{job.precision}' (W8A8 needs macOS for calibration)")
    report.update(tool=f"coremltools {ct.__version__} optimize", settings=dict(settings, compute="fp16"), calibration=None)
    return coreml_export.save(model, out_dir, job.metadata)
