"""ONNX rungs: static INT8 (QDQ, NNCF transformer preset), INT8 weight-only (NNCF), and w8a16 (ONNX Runtime's
QDQ quantizer: int8 weights, 16-bit activations, the format NPU execution providers such as QNN run natively)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from ..export import onnx as onnx_export
from ..export.job import Job
from .scope import onnx_float_nodes


def w8a16(job: Job, model, float_nodes: list[str], out_dir: Path):
    """ONNX Runtime's static QDQ quantizer with 16-bit activations (NNCF writes 8-bit only); the region math stays
    float. On a CPU, ONNX Runtime runs these Q/DQ pairs around float kernels: the rung is for NPU providers."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.items = iter(job.calibration.items())

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {onnx_export.FORMAT.input_name: x}

    source, target = out_dir / "w8a16-float.onnx", out_dir / "w8a16-quantized.onnx"
    try:
        large = onnx_export._large(model)
        onnx.save(model, str(source), save_as_external_data=large)
        quantize_static(str(source), str(target), Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt16, weight_type=QuantType.QInt8, nodes_to_exclude=float_nodes,
                        extra_options={"UseQDQContribOps": True, "WeightSymmetric": True},
                        use_external_data_format=large)
        return onnx.load(str(target))
    finally:
        for f in out_dir.glob("w8a16-*"):
            f.unlink()


def quantize(job: Job, out_dir: Path, report: dict) -> list[Path]:
    import nncf

    model = onnx_export.converted(job, out_dir)
    float_nodes = onnx_float_nodes(model)
    scope = nncf.IgnoredScope(names=float_nodes, validate=False)
    if job.precision == "int8":
        from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,
                                                           OverflowFix)

        calib = job.calibration
        # NNCF 3.4's ONNX SmoothQuant fails on this graph (a None shape in its MatMul pass): transformer preset without
        # it; 7-bit weights everywhere, as for OpenVINO (quantize/openvino.py: INT8 on CPUs without VNNI saturates)
        off = AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1),
                                             overflow_fix=OverflowFix.ENABLE)
        model = nncf.quantize(model, nncf.Dataset(calib.items(), lambda x: {onnx_export.FORMAT.input_name: x}),
                              model_type=nncf.ModelType.TRANSFORMER, ignored_scope=scope,
                              subset_size=len(calib.images), advanced_parameters=off)
        report.update(tool=f"nncf {nncf.__version__} quantize",
                      settings={"model_type": "TRANSFORMER", "format": "QDQ", "smooth_quant": False, "overflow_fix": "enable"},
                      calibration=calib.record())
    elif job.precision == "int8-weights":
        # ONNX Runtime rejects the per-channel DequantizeLinear NNCF writes for (transposed) conv weights: MatMul/Gemm only
        scope = nncf.IgnoredScope(names=float_nodes, types=["Conv", "ConvTranspose"], validate=False)
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=scope)
        report.update(tool=f"nncf {nncf.__version__} compress_weights", settings={"mode": "INT8_ASYM", "ops": "MatMul/Gemm"},
                      calibration=None)
    elif job.precision == "w8a16":
        model = w8a16(job, model, float_nodes, out_dir)
        report.update(tool=f"onnxruntime {version('onnxruntime')} quantize_static",
                      settings={"format": "QDQ", "weights": "int8 per-channel symmetric", "activations": "uint16",
                                "ops": "com.microsoft Q/DQ (16-bit needs them below opset 21)", "calibration": "MinMax"},
                      calibration=job.calibration.record())
    else:
        raise ValueError(f"onnx has no quantized rung '{job.precision}'")
    report["float_nodes"] = len(float_nodes)
    return onnx_export.save(model, out_dir, job.metadata)
