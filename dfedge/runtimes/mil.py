"""A MIL interpreter: runs a saved CoreML ML program's `main` function with torch ops, where CoreML cannot predict.

CoreML predicts only on macOS. Elsewhere a bundle's `.mlpackage` is checked by executing its MIL program here: the
program and weights are read back from the package on disk, so the check covers what the converter wrote, not what
it was given. coremltools ships no executor of its own outside macOS, which is why this one exists. It covers the
ops this detector converts to; an op without a rule is refused by name (`UnsupportedMilOp`), never guessed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F



class UnsupportedMilOp(RuntimeError):
    """The program uses an op (or an op mode) the interpreter has no rule for: parity cannot be checked here."""


def _pad_mode(op_vals: dict) -> str:
    return str(op_vals.get("pad_type", "valid"))


def _conv_padding(vals: dict, kernel: tuple[int, ...]):
    pad_type = _pad_mode(vals)
    if pad_type == "custom":
        pad = [int(p) for p in vals["pad"]]
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(kernel))]
    if pad_type == "same":
        return [((k - 1) // 2, k // 2) for k in kernel]
    return [(0, 0) for _ in kernel]


def _conv(vals: dict) -> torch.Tensor:
    x, w = vals["x"], vals["weight"]
    strides = [int(s) for s in vals.get("strides", [1, 1])]
    dilations = [int(d) for d in vals.get("dilations", [1, 1])]
    pads = _conv_padding(vals, tuple(w.shape[2:]))
    x = F.pad(x, [p for pair in reversed(pads) for p in pair])
    return F.conv2d(x, w, vals.get("bias"), stride=strides, dilation=dilations, groups=int(vals.get("groups", 1)))


def _conv_transpose(vals: dict) -> torch.Tensor:
    x, w = vals["x"], vals["weight"]  # MIL keeps torch's layout here: [C_in, C_out / groups, kH, kW]
    strides = [int(s) for s in vals.get("strides", [1, 1])]
    pads = _conv_padding(vals, tuple(w.shape[2:]))
    out = F.conv_transpose2d(x, w, vals.get("bias"), stride=strides, groups=int(vals.get("groups", 1)))
    (t, b), (l, r) = pads
    return out[..., t : out.shape[-2] - b, l : out.shape[-1] - r]


def _pool(vals: dict, kind: str) -> torch.Tensor:
    kernel = [int(k) for k in vals["kernel_sizes"]]
    strides = [int(s) for s in vals["strides"]]
    pads = _conv_padding(vals, tuple(kernel))
    x = F.pad(vals["x"], [p for pair in reversed(pads) for p in pair], value=-math.inf if kind == "max" else 0.0)
    ceil = bool(vals.get("ceil_mode", False))  # a last, partial window where the stride leaves one (MTCNN's pools)
    if kind == "max":
        return F.max_pool2d(x, kernel, strides, ceil_mode=ceil)
    return F.avg_pool2d(x, kernel, strides, ceil_mode=ceil,
                        count_include_pad=not bool(vals.get("exclude_padding_from_average", False)))


def _axes(vals: dict, x: torch.Tensor) -> list[int]:
    axes = vals.get("axes")
    return list(range(x.ndim)) if axes is None else [int(a) for a in np.atleast_1d(axes)]


def _reduce(fn):
    def run(vals):
        x = vals["x"]
        return fn(x, dim=_axes(vals, x), keepdim=bool(vals.get("keep_dims", False)))
    return run


def _slice_by_index(vals: dict) -> torch.Tensor:
    x = vals["x"]
    begin, end = [int(v) for v in vals["begin"]], [int(v) for v in vals["end"]]
    stride = [int(v) for v in vals.get("stride", [1] * x.ndim)]
    begin_mask = [bool(v) for v in vals.get("begin_mask", [False] * x.ndim)]
    end_mask = [bool(v) for v in vals.get("end_mask", [False] * x.ndim)]
    squeeze = [bool(v) for v in vals.get("squeeze_mask", [False] * x.ndim)]
    index = []
    for d in range(x.ndim):
        b = None if begin_mask[d] else begin[d]
        e = None if end_mask[d] else end[d]
        index.append(b if squeeze[d] else slice(b, e, stride[d]))
    return x[tuple(index)]


def _resize_bilinear(vals: dict) -> torch.Tensor:
    x = vals["x"]
    size = (int(vals["target_size_height"]), int(vals["target_size_width"]))
    mode = str(vals.get("sampling_mode", "DEFAULT"))
    if mode not in ("DEFAULT", "STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "UNALIGN_CORNERS", "HALF_PIXEL"):
        raise UnsupportedMilOp(f"resize_bilinear sampling_mode {mode}")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"))


def _upsample_bilinear(vals: dict) -> torch.Tensor:
    x = vals["x"]
    sh, sw = float(vals.get("scale_factor_height", 1)), float(vals.get("scale_factor_width", 1))
    size = (int(round(x.shape[-2] * sh)), int(round(x.shape[-1] * sw)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=bool(vals.get("align_corners", False)))


def _layer_norm(vals: dict) -> torch.Tensor:
    x = vals["x"]
    axes = _axes(vals, x)
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + float(vals.get("epsilon", 1e-5)))
    if vals.get("gamma") is not None:
        y = y * vals["gamma"]
    if vals.get("beta") is not None:
        y = y + vals["beta"]
    return y


def _batch_norm(vals: dict) -> torch.Tensor:
    return F.batch_norm(vals["x"], vals["mean"], vals["variance"], vals.get("gamma"), vals.get("beta"),
                        training=False, eps=float(vals.get("epsilon", 1e-5)))


def _gelu(vals: dict) -> torch.Tensor:
    mode = str(vals.get("mode", "EXACT"))
    return F.gelu(vals["x"], approximate="tanh" if mode == "TANH_APPROXIMATION" else "none") if mode != "SIGMOID_APPROXIMATION" \
        else vals["x"] * torch.sigmoid(1.702 * vals["x"])


def _matmul(vals: dict) -> torch.Tensor:
    x, y = vals["x"], vals["y"]
    if bool(vals.get("transpose_x", False)):
        x = x.transpose(-1, -2)
    if bool(vals.get("transpose_y", False)):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def _cast(vals: dict) -> torch.Tensor:
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "int32": torch.int32, "bool": torch.bool, "int16": torch.int16}
    return vals["x"].to(dtypes[str(vals["dtype"])])


def _prelu(vals: dict) -> torch.Tensor:
    """max(x, 0) + alpha * min(x, 0), alpha per channel (axis 1)."""
    x = vals["x"]
    alpha = vals["alpha"].reshape(1, -1, *([1] * (x.ndim - 2)))
    return torch.where(x >= 0, x, x * alpha)


def _topk(vals: dict):
    """MIL topk: (values, indices) of the k largest (smallest with ascending) along `axis`."""
    x = vals["x"]
    values, index = torch.topk(x, int(vals.get("k", 1)), dim=int(vals.get("axis", -1)),
                               largest=not bool(vals.get("ascending", False)), sorted=True)
    dtype = str(vals.get("output_indices_dtype", "int32"))
    return values, index.to(torch.int32 if dtype == "int32" else torch.int16 if dtype == "int16" else torch.uint16)


def _binary(fn):
    return lambda vals: fn(vals["x"], vals["y"])


OPS = {
    "add": _binary(torch.add), "sub": _binary(torch.sub), "mul": _binary(torch.mul), "real_div": _binary(torch.div),
    "pow": _binary(torch.pow), "maximum": _binary(torch.maximum), "minimum": _binary(torch.minimum),
    "greater_equal": _binary(torch.ge), "greater": _binary(torch.gt), "less": _binary(torch.lt),
    "less_equal": _binary(torch.le), "equal": _binary(torch.eq), "logical_and": _binary(torch.logical_and),
    "floor_div": _binary(torch.floor_divide),
    "sqrt": lambda v: torch.sqrt(v["x"]), "rsqrt": lambda v: torch.rsqrt(v["x"] + float(v.get("epsilon", 1e-12))),
    "exp": lambda v: torch.exp(v["x"]), "floor": lambda v: torch.floor(v["x"]),
    "log": lambda v: torch.log(v["x"] + float(v.get("epsilon", 1e-45))), "topk": _topk, "tanh": lambda v: torch.tanh(v["x"]), "erf": lambda v: torch.erf(v["x"]),
    "sigmoid": lambda v: torch.sigmoid(v["x"]), "relu": lambda v: F.relu(v["x"]), "silu": lambda v: F.silu(v["x"]),
    "abs": lambda v: v["x"].abs(), "neg": lambda v: -v["x"], "inverse": lambda v: 1.0 / (v["x"] + float(v.get("epsilon", 1e-4))),
    "gelu": _gelu, "prelu": _prelu, "softmax": lambda v: torch.softmax(v["x"], dim=int(v.get("axis", -1))),
    "clip": lambda v: torch.clamp(v["x"], float(v["alpha"]), float(v["beta"])),
    "linear": lambda v: F.linear(v["x"], v["weight"], v.get("bias")), "matmul": _matmul,
    "conv": _conv, "conv_transpose": _conv_transpose,
    "max_pool": lambda v: _pool(v, "max"), "avg_pool": lambda v: _pool(v, "avg"),
    "layer_norm": _layer_norm, "batch_norm": _batch_norm,
    "reshape": lambda v: v["x"].reshape([int(s) for s in v["shape"]]),
    "transpose": lambda v: v["x"].permute([int(p) for p in v["perm"]]),
    "concat": lambda v: torch.cat(list(v["values"]), dim=int(v["axis"])),
    "expand_dims": lambda v: _expand_dims(v["x"], [int(a) for a in np.atleast_1d(v["axes"])]),
    "squeeze": lambda v: v["x"].squeeze() if v.get("axes") is None else _squeeze(v["x"], [int(a) for a in np.atleast_1d(v["axes"])]),
    "tile": lambda v: v["x"].repeat([int(r) for r in v["reps"]]),
    "slice_by_index": _slice_by_index,
    "reduce_sum": _reduce(torch.sum), "reduce_mean": _reduce(torch.mean),
    "reduce_max": _reduce(lambda x, dim, keepdim: torch.amax(x, dim=dim, keepdim=keepdim)),
    "resize_bilinear": _resize_bilinear, "upsample_bilinear": _upsample_bilinear,
    "select": lambda v: torch.where(v["cond"].bool(), v["a"], v["b"]),
    "cast": _cast, "identity": lambda v: v["x"],
}


def _expand_dims(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    for a in sorted(a if a >= 0 else a + x.ndim + len(axes) for a in axes):
        x = x.unsqueeze(a)
    return x


def _squeeze(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    for a in sorted((a if a >= 0 else a + x.ndim for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


def _tensors(vals: dict) -> list[torch.Tensor]:
    flat = [t for v in vals.values() for t in (v if isinstance(v, list) else [v])]
    return [t for t in flat if isinstance(t, torch.Tensor)]


def _to(value, dtype: torch.dtype):
    if isinstance(value, list):
        return [_to(v, dtype) for v in value]
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.float32):
        return value.to(dtype)
    return value


class MilInterpreter:
    """Executes the `main` function of a saved ML program with torch ops (fp16 tensors stored in fp16)."""

    def __init__(self, package: Path) -> None:
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load

        spec = ct.utils.load_spec(str(package))
        weights = Path(package) / "Data" / "com.apple.CoreML" / "weights"
        self.program = load(spec, spec.specificationVersion, file_weights_dir=str(weights))
        self.function = self.program.functions["main"]
        self.output_names = [v.name for v in self.function.outputs]
        unknown = sorted({op.op_type for op in self.function.operations if not op.op_type.startswith("constexpr_")}
                         - set(OPS) - {"const"})
        if unknown:
            raise UnsupportedMilOp(f"{package}: MIL ops without an interpreter rule: {', '.join(unknown)}")
        self._dense: dict[str, torch.Tensor] = {}  # densified constexpr weights, decoded once

    def _value(self, var, env: dict):
        if isinstance(var, (list, tuple)):
            return [self._value(v, env) for v in var]
        if var.name in env:
            return env[var.name]
        val = var.val
        if isinstance(val, (np.ndarray, np.generic)):
            arr = np.array(val)
            return torch.from_numpy(arr) if arr.dtype.kind in "fiub" else arr  # strings stay numpy
        return val

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, object] = {}
        for name, var in self.function.inputs.items():
            env[var.name] = torch.from_numpy(np.asarray(inputs[name], dtype=np.float32))
        with torch.no_grad():
            for op in self.function.operations:
                if op.op_type == "const":
                    continue
                if op.op_type.startswith("constexpr_"):  # compressed weights: coremltools' own decoder densifies them
                    name = op.outputs[0].name
                    if name not in self._dense:
                        dense = op.outputs[0].val if op.outputs[0].val is not None else op.materialized_val_inference()
                        self._dense[name] = torch.from_numpy(np.array(dense))
                    env[name] = self._dense[name]
                    continue
                vals = {k: self._value(v, env) for k, v in op.inputs.items()}
                half = op.op_type != "cast" and any(t.dtype == torch.float16 for t in _tensors(vals))
                if half:  # fp16 storage, fp32 arithmetic inside an op (as GPU/ANE kernels accumulate); CPU fp16 GEMM is slow
                    vals = {k: _to(v, torch.float32) for k, v in vals.items()}
                out = OPS[op.op_type](vals)
                outs = out if isinstance(out, (list, tuple)) else [out]
                if half:
                    outs = [_to(o, torch.float16) for o in outs]
                for var, value in zip(op.outputs, outs):
                    env[var.name] = value
        outputs = {v.name: self._value(v, env) for v in self.function.outputs}  # (a constant output: its value)
        return {name: outputs[name].float().numpy() if isinstance(outputs[name], torch.Tensor) else np.asarray(outputs[name])
                for name in self.output_names}


def mil_session(path: Path, names: tuple[str, ...]):
    """An opener (dfedge.device.bundle.Opener) for a saved ML program: run(x) -> {output name: array}, on this
    interpreter."""
    interpreter = MilInterpreter(Path(path))
    (source,) = list(interpreter.function.inputs)
    return lambda x: interpreter.run({source: x})


MIL_RUNTIME = "MIL interpreter (dfedge)"
# the kit's interpreters, by the name a format row gives (Format.interpreter): (opener, runtime name)
INTERPRETERS = {"mil": (mil_session, MIL_RUNTIME)}
