"""ExecuTorch rungs. int8: static INT8 (8-bit weights per channel, 8-bit activations) annotated by ExecuTorch's
XNNPACKQuantizer with the region math left float, its ranges computed by NNCF (`quantize_pt2e` on the
torch.export graph, as the TFLite int8 rung), lowered to the XNNPACK delegate's int8 kernels."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from ..export import executorch as executorch_export
from ..export.job import Job, Outputs

RECIPES = {"int8": "XNNPACKQuantizer symmetric per-channel static INT8 (NNCF ranges), region math float"}


def region_float_quantizer():
    """ExecuTorch's XNNPACK quantizer (static, symmetric, per-channel weights) that leaves the region math
    (detector.FLOAT_SUBMODULES and the Detector's own ops) unannotated: it stays float, in the portable kernels."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    from .scope import fx_is_float

    class RegionFloatQuantizer(XNNPACKQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if annotation is not None:  # a 0-d operand (a scalar constant) quantized breaks XNNPACK's layout pass
                    for source in [n for n in annotation.input_qspec_map if _scalar(n)]:
                        annotation.input_qspec_map.pop(source)
                if node.op == "call_function" and fx_is_float(node, root="detector"):
                    node.meta.pop("quantization_annotation", None)  # its consumers may still quantize what it gives
                if "conv_transpose" in str(node.target):  # XNNPACK has no per-channel INT8 deconvolution: float,
                    node.meta.pop("quantization_annotation", None)  # still delegated (the parser neck's upsampling)
            return model

    return RegionFloatQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


def _scalar(node) -> bool:
    return getattr(node.meta.get("val"), "ndim", None) == 0


def quantize(job: Job, out_dir: Path, report: dict) -> list[Path]:
    import nncf
    import torch
    from nncf.experimental.torch.fx import quantize_pt2e

    if job.precision not in RECIPES:
        raise ValueError(f"executorch has no quantized rung '{job.precision}'")
    calib = job.calibration
    wrapped = Outputs(job.detector).eval()
    graph = torch.export.export(wrapped, (job.example,), strict=False).module()
    data = nncf.Dataset([torch.from_numpy(x) for x in calib.items()])
    with torch.no_grad():
        quantized = quantize_pt2e(graph, region_float_quantizer(), data, subset_size=len(calib.images), fold_quantize=True)
    edge = executorch_export.lower(torch.export.export(quantized, (job.example,), strict=False), job.metadata)
    path = out_dir / executorch_export.FORMAT.model_file
    where = executorch_export.write(edge, path)
    report.update(tool=f"nncf {nncf.__version__} quantize_pt2e + executorch {version('executorch')} XNNPACKQuantizer",
                  settings={"recipe": RECIPES[job.precision]}, calibration=calib.record(),
                  float_region_math="detector.FLOAT_SUBMODULES and the Detector's own ops left unannotated",
                  placement=where)
    return [path]
