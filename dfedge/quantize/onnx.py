"""ONNX rungs through NNCF: static INT8 (QDQ, transformer preset) and INT8 weight-only."""

from __future__ import annotations

from pathlib import Path

from ..export import onnx as onnx_export
from ..export.job import Job
from .scope import onnx_float_nodes


def quantize(job: Job, out_dir: Path, report: dict) -> list[Path]:
    import nncf

    model = onnx_export.converted(job, out_dir)
    float_nodes = onnx_float_nodes(model)
    scope = nncf.IgnoredScope(names=float_nodes, validate=False)
    if job.precision == "int8":
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        calib = job.calibration
        # NNCF 3.4's ONNX SmoothQuant fails on this graph (a None shape in its MatMul pass): transformer preset without it
        off = AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))
        model = nncf.quantize(model, nncf.Dataset(calib.items(), lambda x: {onnx_export.FORMAT.input_name: x}),
                              model_type=nncf.ModelType.TRANSFORMER, ignored_scope=scope,
                              subset_size=len(calib.images), advanced_parameters=off)
        report.update(tool=f"nncf {nncf.__version__} quantize",
                      settings={"model_type": "TRANSFORMER", "format": "QDQ", "smooth_quant": False},
                      calibration=calib.record())
    elif job.precision == "int8-weights":
        # ONNX Runtime rejects the per-channel DequantizeLinear NNCF writes for (transposed) conv weights: MatMul/Gemm only
        scope = nncf.IgnoredScope(names=float_nodes, types=["Conv", "ConvTranspose"], validate=False)
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=scope)
        report.update(tool=f"nncf {nncf.__version__} compress_weights", settings={"mode": "INT8_ASYM", "ops": "MatMul/Gemm"},
                      calibration=None)
    else:
        raise ValueError(f"onnx has no quantized rung '{job.precision}'")
    report["float_nodes"] = len(float_nodes)
    return onnx_export.save(model, out_dir, job.metadata)
