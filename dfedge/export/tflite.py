"""TFLite via litert-torch, run with the `ai_edge_litert` interpreter. NHWC float32 input (what mobile camera
pipelines hand over); fp16 = float16 weights written by ai-edge-quantizer (dequantized at load, f32 compute). The
manifest's key facts are stored in the flatbuffer's own `metadata` table, as LiteRT's tools read it."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from ..device.formats import FORMATS
from .job import Job, Outputs
from .rewrite import shifted_convs

FORMAT = FORMATS["tflite"]


def nhwc_example(job: Job) -> tuple[torch.Tensor]:
    """(the trace input [1, S, S, 3],): the job's example in the layout the model takes."""
    return (job.example.permute(0, 2, 3, 1).contiguous(),)


def fp32_model(job: Job, out_dir: Path) -> bytes:
    """The litert-torch conversion of the fp32 graph (once per job.cache), as flatbuffer bytes; its 3x3
    convolutions as nine shifted 1x1 ones (export.rewrite: XNNPACK runs those at GEMM speed)."""
    if "tflite" not in job.cache:
        import litert_torch

        path = out_dir / FORMAT.model_file
        with shifted_convs(job.detector) as count:
            litert_torch.convert(Outputs(job.detector, nhwc=True).eval(), nhwc_example(job)).export(str(path))
        job.cache["tflite_shifted_convs"] = count
        job.cache["tflite"] = path.read_bytes()
    return job.cache["tflite"]


def export(job: Job, out_dir: Path, report: dict) -> list[Path]:
    path = out_dir / FORMAT.model_file
    path.write_bytes(fp32_model(job, out_dir))
    settings = {"input_layout": FORMAT.input_layout,
                "convolutions": f"{job.cache['tflite_shifted_convs']} 3x3 convolutions as nine shifted 1x1 (XNNPACK speed)"}
    if job.precision == "fp16":
        from ai_edge_quantizer import quantizer, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        recipe = recipe_manager.RecipeManager()
        recipe.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                      algorithm_key=AlgorithmName.FLOAT_CASTING)
        quantizer.Quantizer(str(path), recipe.get_quantization_recipe()).quantize().export_model(str(path), overwrite=True)
        settings["fp16"] = f"float16 weights (ai-edge-quantizer {version('ai-edge-quantizer')} FLOAT_CASTING)"
    report.update(tool=f"litert-torch {version('litert-torch')} convert", settings=settings)
    return save(path, job.metadata)


def save(path: Path, metadata: dict[str, str]) -> list[Path]:
    """In place: name the signature's input as the format row does (litert-torch calls it args_0), and add
    `metadata` to the flatbuffer's metadata table (one entry and buffer per key, UTF-8)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    for signature in model.signatureDefs or []:
        if len(signature.inputs) != 1:
            raise ValueError(f"{path}: expected one input (the image), the signature has {len(signature.inputs)}")
        signature.inputs[0].name = FORMAT.input_name
    for buffer in model.buffers:  # read_model leaves memoryviews, which flatbuffers packs byte by byte in Python
        if isinstance(buffer.data, memoryview):  # (hours for a 1.9 GB model); an ndarray is packed in one copy
            buffer.data = np.frombuffer(buffer.data, np.uint8)
    model.metadata = [m for m in model.metadata or [] if not m.name.decode().startswith("dfedge.")]
    for key, value in sorted(metadata.items()):
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode(), np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, len(model.buffers) - 1
        model.metadata.append(entry)
    flatbuffer_utils.write_model(model, path)
    return [path]


def export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, names: tuple[str, ...],
                 dynamic_hw: bool = False) -> list[Path]:
    """A small fp32 graph (the face front end's nets), NCHW input, outputs in the order of `names`; height and width
    free (even sides) when `dynamic_hw`: the interpreter resizes the input per call."""
    import litert_torch

    dims = ({2: 2 * torch.export.Dim("h", min=7, max=4096), 3: 2 * torch.export.Dim("w", min=7, max=4096)},)
    litert_torch.convert(module.eval(), (example,), dynamic_shapes=dims if dynamic_hw else None).export(str(path))
    return [path]


def read_metadata(path: Path) -> dict[str, str]:
    """The flatbuffer's metadata table as text (LiteRT's own entries, such as min_runtime_version, included)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    return {m.name.decode(): bytes(model.buffers[m.buffer].data).rstrip(b"\0").decode(errors="replace")
            for m in model.metadata or []}
