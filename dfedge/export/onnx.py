"""ONNX via the dynamo exporter (opset 20: LayerNormalization stays one op), static shapes, ONNX Runtime."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..device.graphs import OUTPUTS
from ..models.detector import FP32_CONSTANTS
from ..device.formats import FORMATS
from .job import Job
from .row import ONNX_OPSET as OPSET

FORMAT = FORMATS["onnx"]
EXTERNAL_DATA_BYTES = 1 << 30


def export(job: Job, out_dir: Path, report: dict) -> list[Path]:
    """The fp32 graph (traced once per job.cache) or its fp16 derivative."""
    import onnx

    model = converted(job, out_dir)
    settings = {"opset": OPSET, "dynamo": True, "static_shapes": True}
    if job.precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # fp16 weights and compute inside; the image stays float32 in and the outputs float32 out.
        keep = [n.name for n in model.graph.node if set(n.input) & set(FP32_CONSTANTS)]
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
        topological_sort(model.graph)
        # the converter leaves value_info entries that contradict its own casts around kept nodes: re-infer them
        del model.graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        settings["fp16"] = "onnxruntime float16 converter, float32 input/outputs and input normalisation"
    report.update(tool=f"torch.onnx (torch {torch.__version__})", settings=settings)
    return save(model, out_dir, job.metadata)


def converted(job: Job, out_dir: Path):
    """A copy of the dynamo-exported fp32 ModelProto (traced once per job.cache)."""
    import onnx

    if "onnx" not in job.cache:
        path = out_dir / FORMAT.model_file
        program = torch.onnx.export(
            job.detector, (job.example,), dynamo=True, opset_version=OPSET, input_names=[FORMAT.input_name],
            output_names=list(OUTPUTS), verbose=False, external_data=_large(job.detector),
        )
        program.save(str(path))
        job.cache["onnx"] = onnx.load(str(path))
        for extra in out_dir.glob(f"{FORMAT.model_file}*"):
            extra.unlink()
    return copy.deepcopy(job.cache["onnx"])


def _large(model) -> bool:
    """protobuf caps a file at 2 GiB: full-size graphs keep their weights in one external file beside it."""
    if isinstance(model, torch.nn.Module):
        return sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    return model.ByteSize() > EXTERNAL_DATA_BYTES


def save(model, out_dir: Path, metadata: dict[str, str]) -> list[Path]:
    import onnx

    path = out_dir / FORMAT.model_file
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if _large(model):
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{FORMAT.model_file}.data", size_threshold=1024)
    else:
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return sorted(out_dir.glob(f"{FORMAT.model_file}*"))


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


def export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, names: tuple[str, ...],
                 dynamic_hw: bool = False) -> list[Path]:
    """A small fp32 graph (the face front end's nets): input `x` NCHW, outputs `names`; height and width free (even
    sides: ceil-mode pooling then never pads) when `dynamic_hw`."""
    import onnx

    dims = {"x": {2: 2 * torch.export.Dim("h", min=7, max=4096), 3: 2 * torch.export.Dim("w", min=7, max=4096)}}
    program = torch.onnx.export(module.eval(), (example,), dynamo=True, input_names=["x"], output_names=list(names),
                                dynamic_shapes=dims if dynamic_hw else None, verbose=False)
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return [path]
