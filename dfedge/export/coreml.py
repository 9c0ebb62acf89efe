"""CoreML `.mlpackage` (ML program) via coremltools from `torch.export`, FP32 or FP16 compute.

CoreML predicts only on macOS; elsewhere the bundle's parity check runs the saved package's MIL program with the
kit's interpreter (dfedge/runtimes/mil.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..device.graphs import OUTPUTS
from ..models.detector import FP32_CONSTANTS
from ..device.formats import FORMATS
from .job import Job

FORMAT = FORMATS["coreml"]
MINIMUM_DEPLOYMENT_TARGET = "iOS17"  # macOS 14; mlprogram with fp16 compute and the ops this graph uses


def export(job: Job, out_dir: Path, report: dict) -> list[Path]:
    import coremltools as ct

    compute = "fp16" if job.precision == "fp16" else "fp32"
    report.update(tool=f"coremltools {ct.__version__} convert",
                  settings={"format": "mlprogram", "deployment_target": MINIMUM_DEPLOYMENT_TARGET, "compute": compute})
    return save(converted(job, compute), out_dir, job.metadata)


def converted(job: Job, compute: str):
    """An ML program (not loaded: no macOS needed) with FP32 or FP16 compute precision."""
    import coremltools as ct

    if "exported_program" not in job.cache:
        job.cache["exported_program"] = torch.export.export(job.detector, (job.example,)).run_decompositions({})
    return ct.convert(
        job.cache["exported_program"],
        inputs=[ct.TensorType(name=FORMAT.input_name, shape=tuple(job.example.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name=n) for n in OUTPUTS],
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
        compute_precision=_fp16_except([getattr(job.detector, n).numpy() for n in FP32_CONSTANTS])
        if compute == "fp16" else ct.precision.FLOAT32,
        skip_model_load=True,
    )


def export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, names: tuple[str, ...],
                 dynamic_hw: bool = False) -> list[Path]:
    """A small fp32 ML program (the face front end's nets): input `x` NCHW, outputs `names`; height and width free
    (even sides, 14 to 4096) when `dynamic_hw`."""
    import coremltools as ct

    dims = {"x": {2: 2 * torch.export.Dim("h", min=7, max=2048), 3: 2 * torch.export.Dim("w", min=7, max=2048)}}
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=dims if dynamic_hw else None)
    shape = tuple(example.shape)
    if dynamic_hw:
        shape = (*shape[:2], ct.RangeDim(14, 4096, shape[2]), ct.RangeDim(14, 4096, shape[3]))
    model = ct.convert(program.run_decompositions({}), inputs=[ct.TensorType(name="x", shape=shape, dtype=np.float32)],
                       outputs=[ct.TensorType(name=n) for n in names], convert_to="mlprogram",
                       minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
                       compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    model.save(str(path))
    return [path]


def save(model, out_dir: Path, metadata: dict[str, str]) -> list[Path]:
    model.user_defined_metadata.update(metadata)
    path = out_dir / FORMAT.model_file
    model.save(str(path))
    return [path]


def _fp16_except(keep: list[np.ndarray]):
    """FP16 compute, except (1) ops that apply a constant of `keep` (see detector.FP32_CONSTANTS), found by the
    constant's values since the converter fuses and renames them, (2) the transformers' residual adds and (3) the
    head after DINOv3's final norm (region pooling, probe: a few kFLOP). In fp16 the residual stream's rounding
    dominates (toy: |dlogit| 1.7e-2 all-fp16, 3.6e-3 with these islands); the blocks' matmuls, norms, attention
    and the whole parser stay fp16."""
    import coremltools as ct

    flat = [k.astype(np.float32).ravel() for k in keep]

    def residual_add(op) -> bool:
        x, y = op.inputs.get("x"), op.inputs.get("y")
        return (op.op_type == "add" and x is not None and y is not None and x.val is None and y.val is None
                and x.rank == 3 and tuple(x.shape) == tuple(y.shape))

    def applies_kept_constant(op) -> bool:
        for var in op.inputs.values():
            val = getattr(var, "val", None)
            if isinstance(val, np.ndarray) and val.dtype == np.float32:
                if any(val.size == k.size and np.array_equal(val.ravel(), k) for k in flat):
                    return True
        return False

    head: dict[int, set[int]] = {}  # block -> ids of ops from DINOv3's final norm on (region pooling, probe)

    def after_final_norm(op) -> bool:
        block = op.enclosing_block
        if id(block) not in head:
            ops = list(block.operations)
            last = max((i for i, o in enumerate(ops) if o.op_type == "layer_norm"), default=len(ops))
            head[id(block)] = {id(o) for o in ops[last:]}
        return id(op) in head[id(block)]

    return ct.transform.FP16ComputePrecision(
        op_selector=lambda op: not (applies_kept_constant(op) or residual_add(op) or after_final_norm(op)))
