"""ONNX Runtime: `.onnx` graphs, their session, and where each op runs (its per-node profile)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from .placement import dtype_name, gemm_flops, placement_report



def session_options(ort, options: dict, threads: int):
    """The bundle's runtime options as ONNX Runtime session options (graph_optimization_level by its enum name)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, options.get("graph_optimization_level", "ORT_ENABLE_ALL"))
    return so


def session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), session_options(ort, options, threads),
                                   providers=options.get("providers", ["CPUExecutionProvider"]))
    (source,), outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(outputs, session.run(None, {source: np.asarray(x, np.float32)})))


ONNX_GEMMS = {"MatMul": (0, 1), "Gemm": (0, 1), "FusedMatMul": (0, 1), "FusedGemm": (0, 1), "MatMulInteger": (0, 1),
              "MatMulIntegerToFloat": (0, 1), "DynamicQuantizeMatMul": (0, 1), "QLinearMatMul": (0, 3),
              "QGemm": (0, 3), "Conv": (0, 1), "FusedConv": (0, 1), "NhwcFusedConv": (0, 1), "ConvInteger": (0, 1),
              "QLinearConv": (0, 3), "ConvTranspose": (0, 1), "MatMulNBits": (0, 1)}


def placement(path: Path, options: dict, device: str) -> dict:
    """ONNX Runtime's profile of one run: every executed node with its execution provider and input types."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(ort, options, 0)
        so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / "ort")
        # prepacked weights vanish from the profile's operand lists; packing changes their layout, not the kernel
        so.add_session_config_entry("session.disable_prepacking", "1")
        session = ort.InferenceSession(str(path), so, providers=options.get("providers", ["CPUExecutionProvider"]))
        source = session.get_inputs()[0]
        session.run(None, {source.name: np.zeros([d if isinstance(d, int) else 1 for d in source.shape], np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
    preferred = session.get_providers()[0]
    ops = []
    for e in events:
        args = e.get("args", {})
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or "op_name" not in args:
            continue
        kind = args["op_name"]
        inputs = [next(iter(t.items())) for t in args.get("input_type_shape", [])]
        outputs = [next(iter(t.values())) for t in args.get("output_type_shape", [])]
        flops, dtype = 0, dtype_name(inputs[0][0]) if inputs else "none"
        if kind in ONNX_GEMMS and outputs and inputs:
            i, j = ONNX_GEMMS[kind]  # (the profile leaves some constant operands out: a product needs only a and out)
            flops = gemm_flops(kind, inputs[i][1], inputs[j][1] if len(inputs) > j else [], outputs[0])
        ops.append((args.get("provider") == preferred, kind, dtype, flops))
    return placement_report(f"onnxruntime {ort.__version__}", preferred,
                            "other execution providers (none when the CPU provider is the preferred one)", ops)


def accelerators() -> list[str]:
    """The execution providers this ONNX Runtime build has beyond the CPU's."""
    import onnxruntime as ort

    return [p for p in ort.get_available_providers() if p != "CPUExecutionProvider"]
