"""ONNX via the dynamo exporter (opset 20: LayerNormalization stays one op), static shapes, ONNX Runtime."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..models.detector import FP32_CONSTANTS, OUTPUT_NAMES

OPSET = 20
EXTERNAL_DATA_BYTES = 1 << 30
INPUT_NAME = "image"


def export(detector: torch.nn.Module, example: torch.Tensor, out_dir: Path, precision: str, metadata: dict[str, str],
           cache: dict | None = None) -> list[Path]:
    """Write detector.onnx. `cache` (one dict per detector) keeps the fp32 graph so fp16 is derived, not re-traced."""
    import onnx

    model = converted(detector, example, out_dir, cache)
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # fp16 weights and compute inside; the image stays float32 in and the outputs float32 out.
        keep = [n.name for n in model.graph.node if set(n.input) & set(FP32_CONSTANTS)]
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
        topological_sort(model.graph)
        # the converter leaves value_info entries that contradict its own casts around kept nodes: re-infer them
        del model.graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return save(model, out_dir, metadata)


def converted(detector: torch.nn.Module, example: torch.Tensor, out_dir: Path, cache: dict | None = None):
    """A copy of the dynamo-exported fp32 ModelProto (traced once per cache)."""
    import onnx

    cache = {} if cache is None else cache
    if "onnx" not in cache:
        path = out_dir / "detector.onnx"
        program = torch.onnx.export(
            detector, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), verbose=False, external_data=_large(detector),
        )
        program.save(str(path))
        cache["onnx"] = onnx.load(str(path))
        for extra in out_dir.glob("detector.onnx*"):
            extra.unlink()
    return copy.deepcopy(cache["onnx"])


def _large(model) -> bool:
    """protobuf caps a file at 2 GiB: full-size graphs keep their weights in one external file beside it."""
    if isinstance(model, torch.nn.Module):
        return sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    return model.ByteSize() > EXTERNAL_DATA_BYTES


def save(model, out_dir: Path, metadata: dict[str, str]) -> list[Path]:
    import onnx

    path = out_dir / "detector.onnx"
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if _large(model):
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="detector.onnx.data", size_threshold=1024)
    else:
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return sorted(out_dir.glob("detector.onnx*"))


def topological_sort(graph) -> None:
    """Order nodes so every input is produced before use (the fp16 converter appends its casts at the end)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("ONNX graph has a cycle or an undefined input")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)


def load(bundle: Path, threads: int = 0):
    """The bundle's runner (dfedge.runtimes.standalone: the same code the bundle ships as bench.py)."""
    from ..runtimes.standalone import open_runner

    return open_runner(bundle, "onnx", threads)
