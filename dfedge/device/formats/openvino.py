"""OpenVINO: IR graphs (`.xml` + `.bin`), their compiled model, and where each op runs (its executed graph)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..schema import obj
from .placement import dtype_name, gemm_flops, placement_report

DEVICES = ("CPU", "GPU", "NPU", "AUTO")  # the devices a bundle's runtime_options may set properties for
# the properties a bundle may set: how a model computes, nothing that writes, reads or loads outside the bundle
HINTS = obj({"INFERENCE_PRECISION_HINT": {"enum": ["f32", "bf16", "f16"]},
             "PERFORMANCE_HINT": {"enum": ["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"]},
             "EXECUTION_MODE_HINT": {"enum": ["PERFORMANCE", "ACCURACY"]}})


def config(options: dict, threads: int, device: str) -> dict:
    """The bundle's runtime options for `device` ({"CPU": {...}}: OpenVINO's own property names) + the thread count.
    Without them OpenVINO picks its own inference precision (bfloat16 on a CPU with AVX-512 BF16 or AMX)."""
    config = dict(options.get(device.upper().split(".")[0], {}))
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), device, config(options, threads, device))
    request = compiled.create_infer_request()

    def run(x):
        result = request.infer({0: np.asarray(x, np.float32)})
        return {name: np.array(result[compiled.output(name)]) for name in names}

    return run


def placement(path: Path, options: dict, device: str) -> dict:
    """OpenVINO's executed graph (compiled with the bundle's runtime options): per layer its runtime precision and
    kernel; reference kernels (primitiveType ref*) are the slow fallback. Products that OpenVINO fuses into a
    Subgraph layer (its Snippets: the attention) count as one op without FLOPs: GFLOPs here are the GEMM layers'."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), device, config(options, 0, device))
    ops = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = {k: v.value for k, v in op.get_rt_info().items()}  # OVAny values
        kind = str(info["layerType"])
        if kind in ("Input", "Output", "Parameter", "Result", "Const", "Constant"):
            continue
        shapes = [list(op.get_input_partial_shape(i).to_shape()) if op.get_input_partial_shape(i).is_static else []
                  for i in range(op.get_input_size())]
        out = list(op.get_output_partial_shape(0).to_shape()) if op.get_output_size() and op.get_output_partial_shape(0).is_static else []
        flops = gemm_flops(kind, shapes[0], shapes[1], out) if kind in (
            "FullyConnected", "MatMul", "Convolution", "GroupConvolution", "Deconvolution", "GroupDeconvolution") and len(shapes) > 1 else 0
        primitive = str(info.get("primitiveType", ""))
        # the kernel's own suffix (brgemm_avx512_I8, gemm_mlas_f32) is what computes: runtimePrecision gives the
        # weights' type for decompressed FP16 weights run by f32 kernels
        suffix = primitive.rsplit("_", 1)[-1].lower()
        dtype = dtype_name(suffix if suffix in ("f32", "bf16", "f16", "i8", "u8") else str(info["runtimePrecision"]).lower())
        ops.append((not primitive.startswith("ref"), kind, dtype, flops))
    return placement_report(f"openvino {ov.__version__}", f"{device} plugin (optimised kernels)",
                            "reference kernels (primitiveType ref*)", ops)


def accelerators() -> list[str]:
    """The devices this OpenVINO sees beyond the CPU (GPU, NPU)."""
    import openvino as ov

    return [d for d in ov.Core().available_devices if d != "CPU"]
