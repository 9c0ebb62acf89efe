"""CoreML rungs with coremltools.optimize on the FP16-compute ML program: per-channel INT8 weights and k-means
palettes (6-bit, 4-bit). Activation quantization (W8A8) needs `predict` for calibration: macOS only."""

from __future__ import annotations

from pathlib import Path

from ..export import coreml as coreml_export
from .calibration import Calibration


def quantize(detector, example, out_dir: Path, precision: str, metadata: dict, cache: dict | None,
             calib: Calibration, report: dict, accuracy=None) -> list[Path]:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    model = coreml_export.converted(detector, example, "fp16", cache)
    if precision == "int8-weights":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        model = cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=op))
        settings = {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel"}
    elif precision in ("palette6", "palette4"):
        nbits = int(precision[-1])
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits)
        model = cto.palettize_weights(model, cto.OptimizationConfig(global_config=op))
        settings = {"mode": "kmeans", "nbits": nbits, "granularity": "per_tensor"}
    else:
        raise ValueError(f"coreml has no quantized rung '{precision}' (W8A8 needs macOS for calibration)")
    report.update(tool=f"coremltools {ct.__version__} optimize", settings=dict(settings, compute="fp16"), calibration=None)
    return coreml_export.save(model, out_dir, metadata)
