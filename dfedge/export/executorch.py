"""ExecuTorch: torch.export -> to_edge_transform_and_lower with the XNNPACK partitioner -> a `.pte` program, run by
ExecuTorch's runtime (the C++ runtime on a device; its Python bindings here). fp16 = the backbone and the parser in
float16 (XNNPACK's f16 kernels), the input normalisation and the region math in float32. What XNNPACK does not
take runs in ExecuTorch's portable kernels: the manifest's `placement` counts both, since a fallback is where a
delegated model loses its speed."""

from __future__ import annotations

import copy
import json
from importlib.metadata import version
from pathlib import Path

import torch

from ..device.faces.mtcnn import MAX_SIDE
from ..device.formats import FORMATS
from ..device.formats.placement import placement_report
from .job import Job, Outputs

FORMAT = FORMATS["executorch"]


class Half(torch.nn.Module):
    """`module` in float16 between float32 boundaries: its inputs are cast down, its outputs (tensors, or tuples and
    lists of them) cast back up."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module.half()

    def forward(self, *args):
        def cast(x, dtype):
            if isinstance(x, torch.Tensor):
                return x.to(dtype) if x.is_floating_point() else x
            if isinstance(x, (tuple, list)):
                return type(x)(cast(v, dtype) for v in x)
            return x

        return cast(self.module(*cast(args, torch.float16)), torch.float32)


def half_detector(detector: torch.nn.Module) -> torch.nn.Module:
    """A copy whose heavy compute runs in float16: DINOv3's attention and MLPs, and the whole parser. DINOv3's
    residual stream (norms, LayerScale, the adds) stays float32, as on CoreML, and so does its patch embedding
    (0.2 % of its FLOPs), the input normalisation (FP32_CONSTANTS) and the region math (FLOAT_SUBMODULES, the
    Detector's own ops). Toy logits against fp32, torch eager, 16 toy:val crops: 1.5e-2 with the whole DINOv3 in
    float16 (over the fp16 parity limit), 6.2e-3 with its residual stream float32, of which 5.9e-3 came from the
    patch embedding alone: fed the normalised pixels rounded to three digits."""
    det = copy.deepcopy(detector)
    for block in det.dinov3.blocks:
        block.attn, block.mlp = Half(block.attn), Half(block.mlp)
    if det.parser is not None:
        det.parser.backbone, det.parser.head = Half(det.parser.backbone), Half(det.parser.head)
    return det.eval()


METADATA_METHOD = "dfedge_metadata"


def _partitioner(delegate: str):
    """XNNPACK (CPU, every platform) or Core ML (Apple: Neural Engine, GPU, CPU; iOS 17 / macOS 14 like the coreml
    target). The Core ML delegate converts with coremltools and lowers on Linux; its .pte runs on Apple only."""
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    if delegate == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        specs = CoreMLBackend.generate_compile_specs(minimum_deployment_target=ct.target.iOS17)
        return CoreMLPartitioner(compile_specs=specs)
    raise ValueError(f"unknown ExecuTorch delegate {delegate!r} (known: {', '.join(DELEGATES)})")


DELEGATES = {"xnnpack": "XNNPACK delegate", "coreml": "Core ML delegate"}


def lower(program: torch.export.ExportedProgram, metadata: dict[str, str] | None = None, delegate: str = "xnnpack"):
    """The lowered edge program (before `to_executorch`); `metadata` goes into the program as a constant method
    returning its JSON as uint8 (a .pte has no metadata table; any ExecuTorch runtime can read this)."""
    from executorch.exir import to_edge_transform_and_lower

    constants = None
    if metadata:
        text = json.dumps(metadata, sort_keys=True).encode()
        constants = {METADATA_METHOD: torch.frombuffer(bytearray(text), dtype=torch.uint8).clone()}
    return to_edge_transform_and_lower(program, partitioner=[_partitioner(delegate)], constant_methods=constants)


def write(edge, path: Path, delegate: str = "xnnpack") -> dict:
    """The .pte of the lowered program; returns its placement, read before `to_executorch` turns ops into their
    out variants."""
    where = placement(edge, DELEGATES[delegate])
    path.write_bytes(edge.to_executorch().buffer)
    return where


GEMMS = ("aten.mm.default", "aten.bmm.default", "aten.addmm.default", "aten.linear.default", "aten.convolution.default")
LAYOUT = ("aten.permute_copy", "aten.t_copy", "aten.view_copy", "aten.expand_copy", "aten.squeeze_copy",
          "aten.unsqueeze_copy", "aten.clone", "aten._to_copy", "dim_order_ops.")
BOOKKEEPING = ("getitem", "dim_order_ops.", "quantized_decomposed.")  # layout and (de)quantize steps, not compute


def op_name(node) -> str:
    """'aten.mm.default' for an edge or aten op; the callable's name otherwise."""
    return getattr(node.target, "__name__", str(node.target))


def _flops(node) -> int:
    """2 x multiply-adds of a GEMM or a convolution node, from the shapes torch.export recorded; 0 for other ops
    (element-wise and normalisation ops are a few per element: about 1 % of a ViT's FLOPs)."""
    name, out = op_name(node), node.meta.get("val")
    if name not in GEMMS or not isinstance(out, torch.Tensor):
        return 0
    if name == "aten.convolution.default":
        return 2 * out.numel() * node.args[1].meta["val"][0].numel()
    a = node.args[1 if name == "aten.addmm.default" else 0].meta["val"]
    return 2 * out.numel() * a.shape[-1]


def _precision(node) -> str:
    """The precision a GEMM/convolution computes in: int8 when its activation and its weight both come through
    dequantize steps (the delegate runs them as int8 kernels), w8 when only the weight does, else the dtype."""
    def dequantized(arg) -> bool:
        while hasattr(arg, "op") and op_name(arg).startswith(LAYOUT) and arg.args:
            arg = arg.args[0]  # through transposes and views (linear is lowered to a permuted weight and an mm)
        return hasattr(arg, "op") and op_name(arg).startswith("quantized_decomposed.dequantize")

    first = 1 if op_name(node) == "aten.addmm.default" else 0  # addmm(bias, activation, weight)
    if dequantized(node.args[first + 1]):
        return "int8" if dequantized(node.args[first]) else "w8"
    return str(node.meta["val"].dtype).replace("torch.", "")


def placement(edge, accelerator: str = DELEGATES["xnnpack"]) -> dict:
    """Where the ops of the lowered program run: in the XNNPACK delegate or in ExecuTorch's portable kernels (op
    counts, GEMM/convolution GFLOPs, the fallback op types), and in which precision (GEMM/convolution GFLOPs by
    `_precision`; the quantize/dequantize steps are counted apart)."""
    from executorch.exir.lowered_backend_module import LoweredBackendModule

    ops: list[tuple[bool, str, str, int]] = []  # (delegated?, op, precision, FLOPs): device.formats.placement.placement_report's rows
    quantize_steps = {"accelerated": 0, "fallback": 0}

    def visit(gm, where: str) -> None:
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            name = op_name(node)
            if name == "executorch_call_delegate":
                lowered = getattr(gm, node.args[0].target)
                if isinstance(lowered, LoweredBackendModule):
                    visit(lowered.original_module.graph_module, "accelerated")
                continue
            if name.startswith(BOOKKEEPING):
                quantize_steps[where] += name.startswith("quantized_decomposed.")
                continue
            f = _flops(node)
            ops.append((where == "accelerated", name, _precision(node) if f else "", f))

    visit(edge.exported_program().graph_module, "fallback")
    report = placement_report(f"executorch {version('executorch')}", accelerator, "ExecuTorch portable kernels", ops)
    return dict(report, quantize_steps=quantize_steps)


def export(job: Job, out_dir: Path, report: dict) -> list[Path]:
    detector = half_detector(job.detector) if job.precision == "fp16" else job.detector
    program = torch.export.export(Outputs(detector).eval(), (job.example,), strict=False)
    where = write(lower(program, job.metadata), out_dir / FORMAT.model_file)
    settings = {"partitioner": "XnnpackPartitioner (defaults)", "static_shapes": True}
    if job.precision == "fp16":
        settings["fp16"] = ("DINOv3's attention and MLPs and the parser in float16; DINOv3's residual stream and patch "
                            "embedding, the input normalisation and the region math float32")
    report.update(tool=f"executorch {version('executorch')} (torch {torch.__version__})", settings=settings,
                  placement=where)
    return [out_dir / FORMAT.model_file]


def export_coreml(module: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str] | None = None) -> dict:
    """A .pte whose graph the Core ML delegate takes (coremltools converts each partition on this machine); returns
    its placement. ExecuTorch runs the delegate on Apple devices only (its Linux runtime has no Core ML backend), so
    it is not a bundle target: a bundle's parity must run where it is built."""
    program = torch.export.export(Outputs(module).eval(), (example,), strict=False)
    return write(lower(program, metadata, "coreml"), path, "coreml")


def export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, names: tuple[str, ...],
                 dynamic_hw: bool = False) -> list[Path]:
    """A small fp32 graph (the face front end's nets), NCHW input, outputs in the order of `names`; height and width
    free (even sides) when `dynamic_hw`, up to the detection copy's longest side (device.faces.mtcnn.MAX_SIDE): ExecuTorch
    plans memory for a dynamic shape's upper bound, so the bound is that and not more."""
    dims = ({2: 2 * torch.export.Dim("h", min=7, max=MAX_SIDE // 2), 3: 2 * torch.export.Dim("w", min=7, max=MAX_SIDE // 2)},)
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=dims if dynamic_hw else None, strict=False)
    write(lower(program), path)
    return [path]


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata `lower` stored in a .pte, read by ExecuTorch's runtime."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method(METADATA_METHOD)
    return json.loads(bytes(method.execute([])[0].numpy()).decode()) if method is not None else {}
