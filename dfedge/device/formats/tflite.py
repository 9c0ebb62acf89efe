"""LiteRT (TFLite): `.tflite` graphs, their interpreter (XNNPACK by default), and where each op runs (its execution plan after the delegate took its partitions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .placement import dtype_name, gemm_flops, placement_report



def _quantized(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float input for a full-integer LiteRT model (e.g. int16 in the w8a16 rung): by its scale and zero point."""
    if detail["dtype"] == np.float32:
        return x
    (scale, zero), info = detail["quantization"], np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantized(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale if np.issubdtype(y.dtype, np.integer) and scale else y


def session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path), num_threads=threads or None,
                              experimental_op_resolver_type=OpResolverType[options.get("op_resolver", "AUTO")])
    signature = interpreter.get_signature_list()["serving_default"]
    (source,) = signature["inputs"]  # `image` for the detector since dfedge names it; args_0 elsewhere
    # litert-torch names outputs output_0, output_1, ... in the order the module returns them
    outputs = sorted(signature["outputs"], key=lambda n: int(n.rsplit("_", 1)[-1]))
    runner = interpreter.get_signature_runner()  # it resizes a dynamic input (the face front end's P-Net) per call
    given, returned = runner.get_input_details()[source], runner.get_output_details()

    def run(x):
        out = runner(**{source: _quantized(np.ascontiguousarray(x, dtype=np.float32), given)})
        return {name: _dequantized(out[key], returned[key]) for name, key in zip(names, outputs)}

    return run


def placement(path: Path, options: dict, device: str) -> dict:
    """LiteRT's nodes after the XNNPACK delegate took its partitions: a DELEGATE node replaces the ops it runs (found
    by walking back from its outputs to its inputs); the rest run on LiteRT's built-in kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType[options.get("op_resolver", "AUTO")])
    interpreter.allocate_tensors()
    details = interpreter._get_ops_details()  # the interpreter's node list, delegate nodes included
    shapes = {t["index"]: list(t["shape"]) for t in interpreter.get_tensor_details()}
    producer = {int(o): d["index"] for d in details if d["op_name"] != "DELEGATE" for o in d["outputs"]}
    delegated: set[int] = set()
    for d in details:
        if d["op_name"] == "DELEGATE":
            boundary, todo = {int(i) for i in d["inputs"]}, [int(o) for o in d["outputs"]]
            while todo:
                node = producer.get(todo.pop())
                if node is not None and node not in delegated:
                    delegated.add(node)
                    todo += [int(i) for i in details[node]["inputs"] if int(i) not in boundary and i >= 0]
    ops = []
    for d in details:
        if d["op_name"] == "DELEGATE":
            continue
        inputs = [int(i) for i in d["inputs"] if i >= 0]
        flops = 0
        if d["op_name"] in ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and len(inputs) > 1:
            a, b = (inputs[2], inputs[1]) if d["op_name"] == "TRANSPOSE_CONV" else (inputs[0], inputs[1])
            w = shapes.get(b, [])
            if d["op_name"] == "TRANSPOSE_CONV":  # [O, kh, kw, I] -> input channels first
                w = w[-1:] + w[:-1]
            elif d["op_name"] == "DEPTHWISE_CONV_2D":  # [1, kh, kw, C] -> channels first: kh x kw per output
                w = w[-1:] + w[1:3]
            flops = gemm_flops(d["op_name"], shapes.get(a, []), w, shapes.get(int(d["outputs"][0]), []))
        first = 2 if d["op_name"] == "TRANSPOSE_CONV" else 0  # (its operand 0 is the output shape)
        dtype = dtype_name(d["operand_types"][first]) if len(d["operand_types"]) > first else "none"
        ops.append((d["index"] in delegated, d["op_name"], dtype, flops))
    return placement_report(f"ai-edge-litert {_version()}", "XNNPACK delegate", "LiteRT built-in kernels", ops)


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return None
