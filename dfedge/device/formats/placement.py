"""Where each op of a graph runs on this machine and in which precision, as the runtime itself reports it after
compiling the graph (each format's module reads its runtime's own view): one record shape for every runtime."""

from __future__ import annotations

import numpy as np


def dtype_name(name) -> str:
    """One spelling of an element type across runtimes: float32, float16, bfloat16, int8, int16, ..."""
    name = str(getattr(name, "__name__", name)).lower().replace("numpy.", "")
    return {"float": "float32", "f32": "float32", "fp32": "float32", "f16": "float16", "fp16": "float16",
            "bf16": "bfloat16", "i8": "int8", "u8": "uint8", "i16": "int16", "u16": "uint16", "i32": "int32"}.get(name, name)

def placement_report(runtime: str, accelerator: str, fallback: str, ops: list[tuple[bool, str, str, int]]) -> dict:
    """ops: (accelerated?, op type, precision of its inputs, FLOPs: 2 x multiply-adds of a GEMM/convolution, else 0)
    -> op counts and GFLOPs per path, the accelerated share of FLOPs, the fallback op types, GEMM GFLOPs by precision."""
    where = ("accelerated", "fallback")
    count = {w: 0 for w in where}
    flops = {w: 0 for w in where}
    dtypes: dict[str, dict[str, float]] = {w: {} for w in where}
    fallback_ops: dict[str, int] = {}
    for accelerated, kind, dtype, f in ops:
        w = where[not accelerated]
        count[w] += 1
        flops[w] += f
        if not accelerated:
            fallback_ops[kind] = fallback_ops.get(kind, 0) + 1
        if f:
            dtypes[w][dtype] = dtypes[w].get(dtype, 0) + f / 1e9
    total = sum(flops.values())
    return {"runtime": runtime, "accelerator": accelerator, "fallback": fallback,
            "ops": {**count, "total": sum(count.values())}, "gflops": {k: round(v / 1e9, 4) for k, v in flops.items()},
            "accelerated_flop_share": round(flops["accelerated"] / total, 4) if total else None,
            "fallback_ops": dict(sorted(fallback_ops.items(), key=lambda kv: -kv[1])),
            "gemm_gflops_by_dtype": {w: {k: round(v, 4) for k, v in d.items()} for w, d in dtypes.items()}}


def gemm_flops(kind: str, a: list, b: list, out: list) -> int:
    """2 x multiply-adds from logical shapes: a matrix product (a [..., K], or a batch: |a| x N covers both) or a
    convolution whose weight b has its output channels first ([O, I/groups, kh, kw] or [O, kh, kw, I]); a transposed
    one (ConvTranspose, Deconvolution, TRANSPOSE_CONV) takes b with its input channels first."""
    size = lambda shape: int(np.prod(shape, dtype=np.int64)) if shape else 0  # noqa: E731
    if not out or not a or ("conv" in kind.lower() and not b):
        return 0
    per = size(b) // max(size(b[:2] if len(b) == 5 else b[:1]), 1)  # OpenVINO's grouped weights: [G, O/G, I/G, kh, kw]
    if kind in ("ConvTranspose", "Deconvolution", "GroupDeconvolution", "TRANSPOSE_CONV"):
        return 2 * size(a) * per
    if "conv" in kind.lower():
        return 2 * size(out) * per
    return 2 * size(a) * int(out[-1])
