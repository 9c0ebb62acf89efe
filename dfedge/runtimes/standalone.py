"""Open, check and time one dfedge bundle with nothing but numpy and the bundle's own runtime installed.

Every bundle carries a copy of this file as `bench.py`:

    python bench.py [--runs 20] [--warmup 3] [--threads N] [--device CPU] [--label "Pixel 8"] [--out result.json]

writes one JSON (schema dfedge-bench/1: latency percentiles, load time, peak RSS, file size, device facts) that
`dfedge report merge` combines across devices. The kit opens bundles through this same module
(dfedge.runtimes.load), so the code a bundle ships is the code the kit's parity tests run. Standard library,
numpy and the one runtime only: no dfedge import may appear here.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FRONTEND = []  # the face front end's module, loaded on first use (after the bundle is verified)


def front_end():
    """models/frontend.py: the kit's module, or inside a bundle the copy beside this file, loaded by its path (not
    by name: an app's own `frontend` module must not stand in) and only when first needed, so a bundle's code runs
    after `verify` has checked it."""
    if not _FRONTEND:
        if __package__:  # dfedge.runtimes
            from ..models import frontend as module
        else:  # bench.py, run or imported from its bundle: the verified source itself, never a bytecode cache
            import types

            source = Path(__file__).with_name(FRONT_END_FILE)
            module = types.ModuleType("dfedge_bundle_frontend")
            module.__file__ = str(source)
            sys.modules[module.__name__] = module  # (its dataclasses look their module up there)
            exec(compile(source.read_text(), str(source), "exec"), module.__dict__)
        _FRONTEND.append(module)
    return _FRONTEND[0]

BUNDLE_SCHEMA = "dfedge-bundle/1"
BENCH_FILE, FRONT_END_FILE = "bench.py", "frontend.py"  # this file, and models/frontend.py, in every bundle
VALIDATION_FILE = "validation.npz"  # the validation pack: aligned crops, labels, the torch FP32 reference's scores
RESULT_SCHEMA = "dfedge-bench/1"
MANIFEST = "manifest.json"
INPUT_NAME = "image"
OUTPUTS = ("logit", "probability", "token_mask", "region_tokens", "contributions", "streams", "feature")  # = models.detector.OUTPUT_NAMES, the graphs' output order
TEMPORAL_OUTPUTS = ("logit", "probability", "valid_frames")  # = models.temporal.OUTPUT_NAMES


class BundleError(ValueError):
    """A folder that is not an intact dfedge bundle."""


class RuntimeUnavailable(RuntimeError):
    """The bundle's runtime cannot predict on this machine (e.g. CoreML off macOS)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_FILE = {"type": "object", "required": ["sha256", "bytes"], "additionalProperties": False,
         "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "bytes": {"type": "integer", "minimum": 0}}}
_POINT = {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}
# The bundle manifest's schema (JSON Schema, the subset `schema_errors` reads): the one description of the format,
# shipped in every bundle with this file and written to docs/manifest.schema.json (a test keeps it the same).
MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dfedge bundle manifest",
    "type": "object",
    "required": ["schema", "name", "target", "precision", "model_file", "input", "alignment", "outputs", "labels",
                 "probe", "files"],
    "properties": {
        "schema": {"const": BUNDLE_SCHEMA},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "target": {"type": "string"},
        "precision": {"type": "string"},
        "model_file": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]*$"},
        "input": {"type": "object", "required": ["name", "shape", "layout"],
                  "properties": {"name": {"type": "string"}, "layout": {"enum": ["NCHW", "NHWC"]},
                                 "shape": {"type": "array", "minItems": 4, "maxItems": 4, "items": {"type": "integer", "minimum": 1}}}},
        "alignment": {"type": "object", "required": ["crop_size", "template"],
                      "properties": {"crop_size": {"type": "integer", "minimum": 1},
                                     "template": {"type": "array", "minItems": 5, "maxItems": 5, "items": _POINT}}},
        "outputs": {"type": "object"},
        "labels": {"type": "object", "required": ["region"], "properties": {"region": {"type": "string"}}},
        "probe": {"type": "object", "required": ["threshold_logit"],
                  "properties": {"threshold_logit": {"type": "number"}, "guard": {"type": ["object", "null"]}}},
        "random_weights": {"type": "array", "items": {"type": "string"}},
        "runtime_options": {"type": "object"},
        "temporal": {"type": ["object", "null"], "required": ["file", "frames", "feature_dim", "threshold_logit"],
                     "properties": {"file": {"type": "string"}, "frames": {"type": "integer", "minimum": 1},
                                    "feature_dim": {"type": "integer", "minimum": 1}, "threshold_logit": {"type": "number"},
                                    "min_valid": {"type": "integer", "minimum": 1}}},
        "front_end": {"type": ["object", "null"], "required": ["files"],
                      "properties": {"files": {"type": "object", "required": ["pnet", "rnet", "onet"],
                                               "additionalProperties": {"type": "string"}}}},
        "files": {"type": "object", "minProperties": 1, "additionalProperties": False,
                  "patternProperties": {"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$": _FILE}},
    },
}
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool,
          "null": type(None)}


def schema_errors(value, schema: dict, where: str = "") -> list[str]:
    """What in `value` breaks `schema`, as "where: problem" lines. A JSON Schema validator of the keywords
    MANIFEST_SCHEMA uses, written here because bench.py runs with numpy and the runtime only (no jsonschema)."""
    import re

    if "const" in schema and value != schema["const"]:
        return [f"{where or '/'}: must be {schema['const']!r}, not {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where or '/'}: must be one of {schema['enum']}, not {value!r}"]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool)) for t in types)
        if not ok:
            return [f"{where or '/'}: must be {' or '.join(types)}, not {type(value).__name__}"]
    errors = []
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where or '/'}: {value!r} is not allowed here")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < schema.get("minimum", value):
        errors.append(f"{where or '/'}: must be at least {schema['minimum']}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{where or '/'}: has {len(value)} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{where}/{i}")
    if isinstance(value, dict):
        errors += [f"{where}/{k}: missing" for k in schema.get("required", []) if k not in value]
        if len(value) < schema.get("minProperties", 0):
            errors.append(f"{where or '/'}: is empty")
        for key, item in value.items():
            if key in schema.get("properties", {}):
                errors += schema_errors(item, schema["properties"][key], f"{where}/{key}")
                continue
            matched = [s for p, s in schema.get("patternProperties", {}).items() if re.search(p, key)]
            extra = schema.get("additionalProperties", True)
            if matched:
                errors += schema_errors(item, matched[0], f"{where}/{key}")
            elif extra is False:
                errors.append(f"{where}/{key}: not allowed here")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{where}/{key}")
    return errors


def _present(bundle: Path) -> set[str]:
    """Every file in the bundle but the manifest, as '/'-separated relative paths (symbolic links included, not
    followed); Python's bytecode cache (`__pycache__/*.pyc`, written when bench.py is imported) is ignored: the kit
    never loads from it."""
    out = set()
    for path in bundle.rglob("*"):
        rel = path.relative_to(bundle).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        if rel == MANIFEST or (path.parent.name == "__pycache__" and path.suffix == ".pyc" and not path.is_symlink()):
            continue
        out.add(rel)
    return out


def verify(bundle: str | Path) -> dict:
    """The whole bundle, before any of it is used: the manifest matches MANIFEST_SCHEMA; it lists every file in the
    bundle and nothing else, each a regular file inside the bundle (no link, no path out of it); the model, the face
    front end's files, bench.py and frontend.py are among them; every size and SHA-256 matches. Raises BundleError
    naming the first problem, in one line; returns the manifest."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise BundleError(f"{bundle}: no {MANIFEST}, not a dfedge bundle")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not JSON ({e})") from None
    if isinstance(manifest, dict) and manifest.get("schema") != BUNDLE_SCHEMA:
        raise BundleError(f"{path}: schema {manifest.get('schema')!r}, expected {BUNDLE_SCHEMA!r}")
    errors = schema_errors(manifest, MANIFEST_SCHEMA)
    if errors:
        raise BundleError(f"{path}: not a valid manifest: {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    files = manifest["files"]
    needed = [manifest["model_file"], BENCH_FILE] + ([FRONT_END_FILE, *manifest["front_end"]["files"].values()]
                                                   if manifest.get("front_end") else [])
    for name in needed:  # a package (.mlpackage) is listed file by file
        if name not in files and not any(rel.startswith(name + "/") for rel in files):
            raise BundleError(f"{path}: {name} is not listed: the bundle's files cannot be checked")
    root = bundle.resolve()
    for rel in files:
        file = bundle / rel
        if file.is_symlink() or not file.resolve().is_relative_to(root):
            raise BundleError(f"{file}: a link, or a path out of the bundle")
    extra = sorted(_present(bundle) - set(files))
    if extra:
        raise BundleError(f"{bundle / extra[0]}: not listed in the manifest" + (f" (and {len(extra) - 1} more files)" if len(extra) > 1 else ""))
    for rel, entry in files.items():
        file = bundle / rel
        if not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing")
        if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            raise BundleError(f"{file}: SHA-256 differs from the manifest (file changed or corrupt)")
    return manifest


def _onnx_options(ort, options: dict, threads: int):
    """The bundle's runtime options as ONNX Runtime session options (graph_optimization_level by its enum name)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, options.get("graph_optimization_level", "ORT_ENABLE_ALL"))
    return so


def _onnx_session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), _onnx_options(ort, options, threads),
                                   providers=options.get("providers", ["CPUExecutionProvider"]))
    (source,), outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(outputs, session.run(None, {source: np.asarray(x, np.float32)})))


def _openvino_config(options: dict, threads: int, device: str) -> dict:
    """The bundle's runtime options for `device` ({"CPU": {...}}: OpenVINO's own property names) + the thread count.
    Without them OpenVINO picks its own inference precision (bfloat16 on a CPU with AVX-512 BF16 or AMX)."""
    config = dict(options.get(device.upper().split(".")[0], {}))
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _openvino_session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), device, _openvino_config(options, threads, device))
    request = compiled.create_infer_request()

    def run(x):
        result = request.infer({0: np.asarray(x, np.float32)})
        return {name: np.array(result[compiled.output(name)]) for name in names}

    return run


def _quantized(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float input for a full-integer LiteRT model (e.g. int16 in the w8a16 rung): by its scale and zero point."""
    if detail["dtype"] == np.float32:
        return x
    (scale, zero), info = detail["quantization"], np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantized(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale if np.issubdtype(y.dtype, np.integer) and scale else y


def _tflite_session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
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


def _executorch_session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
    # ExecuTorch's Python runtime is built on torch: it takes and returns torch tensors (its C++ runtime on a device
    # needs no torch). torch is imported here, by the runtime's API, and by nothing else in a bundle.
    import torch
    from executorch.runtime import Runtime

    if threads:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)  # the XNNPACK delegate's threads (the runtime's own API)
    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(x):
        outputs = method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        return {name: out.numpy() for name, out in zip(names, outputs)}

    return run


def _coreml_session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
    if platform.system() != "Darwin":
        raise RuntimeUnavailable(f"{path.parent}: CoreML predicts only on macOS (this is {platform.system()}); "
                                 "copy the bundle to a Mac, or check it here with `dfedge validate`")
    import coremltools as ct  # pragma: no cover - CI is Linux

    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[options.get("compute_units", "ALL")])  # pragma: no cover
    source = model.get_spec().description.input[0].name  # pragma: no cover
    return lambda x: {k: np.asarray(v) for k, v in model.predict({source: np.asarray(x, np.float32)}).items()}  # pragma: no cover


# Where each op of a bundle runs on this machine and in which precision, as the runtime itself reports it after
# compiling the graph: ONNX Runtime's per-node profile, OpenVINO's executed graph, LiteRT's execution plan after the
# XNNPACK delegate took its partitions (ExecuTorch's is fixed when the .pte is lowered: the manifest has it).


def _dtype(name) -> str:
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


def _gemm_flops(kind: str, a: list, b: list, out: list) -> int:
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


ONNX_GEMMS = {"MatMul": (0, 1), "Gemm": (0, 1), "FusedMatMul": (0, 1), "FusedGemm": (0, 1), "MatMulInteger": (0, 1),
              "MatMulIntegerToFloat": (0, 1), "DynamicQuantizeMatMul": (0, 1), "QLinearMatMul": (0, 3),
              "QGemm": (0, 3), "Conv": (0, 1), "FusedConv": (0, 1), "NhwcFusedConv": (0, 1), "ConvInteger": (0, 1),
              "QLinearConv": (0, 3), "ConvTranspose": (0, 1), "MatMulNBits": (0, 1)}


def _onnx_placement(path: Path, options: dict, device: str) -> dict:
    """ONNX Runtime's profile of one run: every executed node with its execution provider and input types."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = _onnx_options(ort, options, 0)
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
        flops, dtype = 0, _dtype(inputs[0][0]) if inputs else "none"
        if kind in ONNX_GEMMS and outputs and inputs:
            i, j = ONNX_GEMMS[kind]  # (the profile leaves some constant operands out: a product needs only a and out)
            flops = _gemm_flops(kind, inputs[i][1], inputs[j][1] if len(inputs) > j else [], outputs[0])
        ops.append((args.get("provider") == preferred, kind, dtype, flops))
    return placement_report(f"onnxruntime {ort.__version__}", preferred,
                            "other execution providers (none when the CPU provider is the preferred one)", ops)


def _openvino_placement(path: Path, options: dict, device: str) -> dict:
    """OpenVINO's executed graph (compiled with the bundle's runtime options): per layer its runtime precision and
    kernel; reference kernels (primitiveType ref*) are the slow fallback. Products that OpenVINO fuses into a
    Subgraph layer (its Snippets: the attention) count as one op without FLOPs: GFLOPs here are the GEMM layers'."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), device, _openvino_config(options, 0, device))
    ops = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = {k: v.value for k, v in op.get_rt_info().items()}  # OVAny values
        kind = str(info["layerType"])
        if kind in ("Input", "Output", "Parameter", "Result", "Const", "Constant"):
            continue
        shapes = [list(op.get_input_partial_shape(i).to_shape()) if op.get_input_partial_shape(i).is_static else []
                  for i in range(op.get_input_size())]
        out = list(op.get_output_partial_shape(0).to_shape()) if op.get_output_size() and op.get_output_partial_shape(0).is_static else []
        flops = _gemm_flops(kind, shapes[0], shapes[1], out) if kind in (
            "FullyConnected", "MatMul", "Convolution", "GroupConvolution", "Deconvolution", "GroupDeconvolution") and len(shapes) > 1 else 0
        primitive = str(info.get("primitiveType", ""))
        # the kernel's own suffix (brgemm_avx512_I8, gemm_mlas_f32) is what computes: runtimePrecision gives the
        # weights' type for decompressed FP16 weights run by f32 kernels
        suffix = primitive.rsplit("_", 1)[-1].lower()
        dtype = _dtype(suffix if suffix in ("f32", "bf16", "f16", "i8", "u8") else str(info["runtimePrecision"]).lower())
        ops.append((not primitive.startswith("ref"), kind, dtype, flops))
    return placement_report(f"openvino {ov.__version__}", f"{device} plugin (optimised kernels)",
                            "reference kernels (primitiveType ref*)", ops)


def _tflite_placement(path: Path, options: dict, device: str) -> dict:
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
            flops = _gemm_flops(d["op_name"], shapes.get(a, []), w, shapes.get(int(d["outputs"][0]), []))
        first = 2 if d["op_name"] == "TRANSPOSE_CONV" else 0  # (its operand 0 is the output shape)
        dtype = _dtype(d["operand_types"][first]) if len(d["operand_types"]) > first else "none"
        ops.append((d["index"] in delegated, d["op_name"], dtype, flops))
    return placement_report(f"ai-edge-litert {runtime_version('tflite')}", "XNNPACK delegate", "LiteRT built-in kernels", ops)


@dataclass(frozen=True)
class Format:
    """The bundle-format half of a target's row: what a device needs to open the bundle. The other half (exporter,
    quantizer, precisions) is in dfedge/targets.py, which reads these rows; they live here because this file ships
    inside every bundle and imports nothing of dfedge but the face front end beside it."""

    name: str
    model_file: str  # the detector's file (or package folder); its suffix is every graph file's of this format
    input_layout: str  # of the detector graph's input; runners take NCHW and transpose when needed
    runtime: str  # what predicts, in words (manifest "runtime")
    package: str  # the runtime's pip distribution (its version goes into bench results)
    session: Callable[[Path, tuple, int, str, dict], Callable]  # (graph file, output names, threads, device, options) -> run(x) -> {name: array}
    options: dict  # the runtime options the kit validates with: the manifest's runtime_options, applied by the sessions
    placement: Callable[[Path, dict, str], dict] | None = None  # (model file, options, device) -> where each op runs on this machine
    input_name: str = INPUT_NAME

    def graph_file(self, stem: str) -> str:
        """The file name of another graph of this format (the face front end's nets), e.g. face_pnet.onnx."""
        return stem + self.model_file[self.model_file.index("."):]


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", "detector.onnx", "NCHW", "onnxruntime", "onnxruntime", _onnx_session,
               {"providers": ["CPUExecutionProvider"], "graph_optimization_level": "ORT_ENABLE_ALL"}, _onnx_placement),
        # f32 on CPU: FP16-compressed weights decompressed, no bfloat16 (OpenVINO's default on AVX-512 BF16/AMX CPUs)
        Format("openvino", "detector.xml", "NCHW", "openvino", "openvino", _openvino_session,
               {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}, _openvino_placement),
        Format("coreml", "detector.mlpackage", "NCHW", "coremltools (macOS predict; MIL interpreter elsewhere)",
               "coremltools", _coreml_session, {"compute_units": "ALL"}),
        # AUTO: the interpreter's built-in kernels with the XNNPACK delegate applied by default
        Format("tflite", "detector.tflite", "NHWC", "ai_edge_litert", "ai-edge-litert", _tflite_session,
               {"op_resolver": "AUTO"}, _tflite_placement),
        Format("executorch", "detector.pte", "NCHW", "executorch (XNNPACK delegate; its Python runtime runs on torch)",
               "executorch", _executorch_session, {}),
    )
}


def _format(bundle, target: str) -> Format:
    if target not in FORMATS:
        raise BundleError(f"{bundle}: unknown target {target!r} in the manifest (known: {', '.join(FORMATS)})")
    return FORMATS[target]


def detector_runner(run, fmt: Format):
    """run on the graph's own layout -> run on NCHW crops float32 [1, 3, S, S]."""
    if fmt.input_layout == "NHWC":
        return lambda x: run(np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1)))
    return run


def runtime_options(manifest: dict) -> dict:
    """The runtime options the bundle was validated with (bundles before they were recorded: the format's)."""
    return manifest.get("runtime_options", FORMATS[manifest["target"]].options)


def open_runner(bundle: str | Path, target: str, threads: int = 0, device: str = "CPU", options: dict | None = None):
    """-> run(images float32 [1, 3, S, S] RGB 0-255) -> {output name: array}, whatever the graph's own layout.
    options: the manifest's runtime_options (default: the format's, which the kit validates with)."""
    fmt = _format(bundle, target)
    options = fmt.options if options is None else options
    try:
        return detector_runner(fmt.session(Path(bundle) / fmt.model_file, OUTPUTS, threads, device, options), fmt)
    except (KeyError, AttributeError, TypeError, RuntimeError) as e:
        # options the runtime cannot take (a name it does not know, a property it refuses): one line, not a traceback;
        # a model that does not load with the format's own options is the converter's error and propagates
        if isinstance(e, RuntimeUnavailable) or (isinstance(e, RuntimeError) and options == fmt.options):
            raise
        raise BundleError(f"{Path(bundle) / MANIFEST}: runtime_options {json.dumps(options)} not accepted by "
                          f"{fmt.package}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def placement(bundle: str | Path, target: str, options: dict | None = None, device: str = "CPU") -> dict | None:
    """Where each op of the bundle's detector runs on this machine and in which precision, as its runtime reports it
    with the bundle's options; None for formats whose placement is fixed at conversion or not observable here."""
    fmt = _format(bundle, target)
    if fmt.placement is None:
        return None
    options = fmt.options if options is None else options
    return dict(fmt.placement(Path(bundle) / fmt.model_file, options, device), options=options, cpu=cpu_model(), isa=cpu_isa())


FACE_NETS = {"pnet": ("prob", "offsets"), "rnet": ("prob", "offsets"), "onet": ("prob", "offsets", "landmarks")}


def face_nets(sessions: dict) -> tuple:
    """{net: run(x) -> {name: array}} -> (pnet, rnet, onet) as frontend.detect_faces calls them. R-Net and O-Net are
    exported with batch 1: their crops go one at a time."""

    def one_by_one(net):
        def call(x):
            outs = [sessions[net](x[i : i + 1]) for i in range(len(x))]
            return tuple(np.concatenate([o[name] for o in outs]) for name in FACE_NETS[net])

        return call

    return (lambda x: tuple(sessions["pnet"](x)[n] for n in FACE_NETS["pnet"]), one_by_one("rnet"), one_by_one("onet"))


def open_face_nets(bundle: str | Path, manifest: dict, threads: int = 0, device: str = "CPU") -> tuple | None:
    """The bundle's face front end as (pnet, rnet, onet), or None for a bundle without one."""
    files = (manifest.get("front_end") or {}).get("files")
    if not files:
        return None
    fmt = _format(bundle, manifest.get("target"))
    return face_nets({net: fmt.session(Path(bundle) / files[net], names, threads, device, runtime_options(manifest)) for net, names in FACE_NETS.items()})


def open_temporal(bundle: str | Path, manifest: dict, threads: int = 0, device: str = "CPU"):
    """The bundle's temporal head (SDR, a video bundle's second graph) as run(frames [1, T, D + 1]) -> {logit,
    probability, valid_frames}, or None for a bundle without one."""
    temporal = manifest.get("temporal")
    if not temporal:
        return None
    fmt = _format(bundle, manifest.get("target"))
    return fmt.session(Path(bundle) / temporal["file"], TEMPORAL_OUTPUTS, threads, device, runtime_options(manifest))


def stream(temporal, manifest: dict, stride: int | None = None):
    """A frontend.Stream over the bundle's temporal graph `temporal` (open_temporal), with the manifest's window,
    feature width, threshold and minimum of usable frames; `stride` frames between scores (default: the window)."""
    t = manifest["temporal"]
    return front_end().Stream(temporal, int(t["frames"]), int(t["feature_dim"]), float(t["threshold_logit"]),
                              int(t.get("min_valid", 1)), stride)


def scorer(run, manifest: dict, nets: tuple | None = None):
    """The bundle's frontend.Scorer: photo (any size) or crop -> verdicts, with the manifest's threshold, guard,
    alignment template and front-end settings."""
    probe, front, frontend = manifest.get("probe", {}), manifest.get("front_end") or {}, front_end()
    return frontend.Scorer(run, float(probe.get("threshold_logit", 0.0)),
                           np.asarray(manifest["alignment"]["template"], np.float64),
                           int(manifest["alignment"]["crop_size"]), probe.get("guard"),
                           manifest.get("labels", {}).get("region", "region"), nets,
                           int(front.get("settings", {}).get("min_face", frontend.MIN_FACE)))


def demo_crop(size: int, seed: int = 0) -> np.ndarray:
    """A fixed uint8 RGB crop [size, size, 3]: the graph is static, so latency does not depend on its content."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def to_input(crop: np.ndarray) -> np.ndarray:
    """uint8 HWC crop -> float32 [1, 3, H, W] 0-255, the graphs' input."""
    return crop.transpose(2, 0, 1)[None].astype(np.float32)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with mid-ranks for ties. Written here, not sklearn.metrics.roc_auc_score
    (the kit's own metric): this file runs on devices that have numpy and the runtime only."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(labels) == 1
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if not n1 or not n0:
        raise ValueError("an AUC needs both classes")
    order = np.argsort(scores, kind="mergesort")
    _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def validate(run, threshold: float, bundle: str | Path) -> dict:
    """Score the bundle's validation pack with `run` on this device: AUC against the pack's labels beside the torch
    FP32 reference's (stored in the pack), decision flips and token-mask agreement against the reference."""
    path = Path(bundle) / VALIDATION_FILE
    if not path.is_file():
        raise BundleError(f"{path}: no validation pack in this bundle (build it with --validation-pack N)")
    try:
        with np.load(path, allow_pickle=False) as pack:
            images, labels = pack["images"], pack["labels"]
            ref_logits, ref_masks = pack["logits"].astype(np.float64), pack["token_masks"]
    except Exception as e:  # noqa: BLE001 - whatever np.load raises (zip, zlib, format): the pack is unreadable
        raise BundleError(f"{path}: not a readable validation pack ({type(e).__name__}: {e})") from e
    if len(set(np.asarray(labels).tolist())) < 2 or len(images) != len(ref_logits) or ref_masks.ndim != 3:
        raise BundleError(f"{path}: a validation pack needs fakes and reals, one reference score and mask per crop")
    logits, masks = np.empty(len(images)), np.empty(ref_masks.shape, bool)
    for i, crop in enumerate(images):
        out = run(to_input(crop))
        logits[i] = float(np.ravel(out["logit"])[0])
        mask = np.asarray(out["token_mask"])
        if mask.size != ref_masks[i].size:
            raise BundleError(f"{path}: its token masks are {ref_masks.shape[1:]}, the model's {mask.shape}")
        masks[i] = mask.reshape(ref_masks.shape[1:]) > 0.5
    reference_auc, device_auc = auc(labels, ref_logits), auc(labels, logits)
    return {"crops": int(len(images)), "reference_auc": reference_auc, "auc": device_auc,
            "delta_auc": device_auc - reference_auc,
            "flip_rate": float(np.mean((logits >= threshold) != (ref_logits >= threshold))),
            "mask_agreement": float(np.mean(masks == ref_masks)), "max_abs_logit": float(np.max(np.abs(logits - ref_logits)))}


def peak_rss_mb() -> float | None:
    """This process's peak resident memory. Linux: VmHWM, because ru_maxrss carries the parent's peak across
    fork + exec (a bundle timed from a 250 MB parent would report 250 MB whatever it used)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 2**10  # bytes on macOS, KiB elsewhere


def cpu_model() -> str:
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":  # pragma: no cover
        import subprocess

        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        return out.stdout.strip() or platform.processor()
    return platform.processor() or platform.machine()


# The instruction-set extensions that decide which kernels the runtimes pick (INT8 dot products, BF16/FP16 math,
# matrix tiles): the same bundle can decide differently on hosts that differ in these, so every result names them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve", "bf16")


def cpu_isa() -> list[str]:
    """The ISA_FLAGS this CPU reports (Linux /proc/cpuinfo flags or ARM Features); empty elsewhere."""
    if not Path("/proc/cpuinfo").is_file():
        return []
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.lower().startswith(("flags", "features")):
            have = set(line.split(":", 1)[1].split())
            return [f for f in ISA_FLAGS if f in have]
    return []


def runtime_version(target: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(FORMATS[target].package if target in FORMATS else target)
    except metadata.PackageNotFoundError:
        return None


def accelerators(target: str) -> list[str]:
    """Devices the runtime itself reports beyond the CPU (OpenVINO GPU/NPU, ORT execution providers)."""
    try:
        if target == "openvino":
            import openvino as ov

            return [d for d in ov.Core().available_devices if d != "CPU"]
        if target == "onnx":
            import onnxruntime as ort

            return [p for p in ort.get_available_providers() if p != "CPUExecutionProvider"]
    except Exception:  # noqa: BLE001 - device facts are best effort
        return []
    return []


def device_facts(target: str, label: str | None = None) -> dict:
    return {"label": label or f"{platform.node()} ({cpu_model()})", "host": platform.node(), "cpu": cpu_model(),
            "isa": cpu_isa(), "cores": os.cpu_count(), "os": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "runtime": FORMATS[target].package if target in FORMATS else target,
            "runtime_version": runtime_version(target), "accelerators": accelerators(target)}


def time_runner(run, x: np.ndarray, warmup: int, runs: int) -> dict:
    """Warm-up, then `runs` timed single-crop calls: latency percentiles (ms) and throughput."""
    start = time.perf_counter()
    for _ in range(warmup):
        run(x)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1e3)
    t = np.asarray(times)
    return {"warmup_runs": warmup, "warmup_s": warmup_s, "runs": runs,
            "latency_ms": {"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)),
                           "p99": float(np.percentile(t, 99)), "mean": float(t.mean()), "min": float(t.min())},
            "fps": float(1e3 / t.mean())}


def bundle_bytes(manifest: dict) -> int:
    """A bundle's size: the bytes of every file its manifest lists but the validation pack (test data an app need not
    ship: 32 toy crops are 17 MB, four times a toy INT8 model)."""
    return int(sum(f["bytes"] for name, f in manifest["files"].items() if name != VALIDATION_FILE))


def load(bundle: str | Path, threads: int = 0, device: str = "CPU"):
    """Verify a bundle and open its model and face front end: a frontend.Scorer (score_image, score_crop,
    score_video) on the bundle's runtime."""
    manifest = verify(bundle)
    run = open_runner(bundle, manifest["target"], threads, device, runtime_options(manifest))
    return scorer(run, manifest, open_face_nets(bundle, manifest, threads, device))


def read_image(path: str | Path) -> np.ndarray:
    """uint8 RGB [H, W, 3]: a .npy array as is; any other file as the kit reads photos (frontend.read_image: Pillow,
    EXIF orientation, at most 4096 px long)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            image = np.load(path, allow_pickle=False)
        else:
            image, _, _ = front_end().read_image(path)
    except ImportError:
        raise BundleError(f"{path}: reading this format needs Pillow (pip install pillow); a .npy RGB array does "
                          "not") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BundleError(f"{path}: expected an RGB image uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    return image


def time_photo(score, path: Path, runs: int) -> dict:
    """A photo through the bundle: median ms of decode, detect, align and score (all faces), and the verdicts."""
    frontend = front_end()
    times: dict[str, list[float]] = {"decode": [], "detect": [], "align": [], "score": []}
    for _ in range(runs):
        start = time.perf_counter()
        image = read_image(path)
        times["decode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        faces = score.faces(image)
        times["detect"].append(time.perf_counter() - start)
        start = time.perf_counter()
        crops = [frontend.align(image, f.landmarks, score.template, score.crop_size) for f in faces]
        times["align"].append(time.perf_counter() - start)
        start = time.perf_counter()
        verdicts = [score.score_crop(c) for c in crops]
        times["score"].append(time.perf_counter() - start)
    for face, verdict in zip(faces, verdicts):
        verdict.face = face
    records = [v.record() for v in verdicts] or [frontend.no_face(score.min_face).record()]
    return {"image": path.name, "size": [image.shape[1], image.shape[0]], "faces": len(faces), "runs": runs,
            **{f"{k}_ms": float(np.median(v)) * 1e3 for k, v in times.items()}, "verdicts": records}


def read_video(path: Path):
    """(index, uint8 RGB frame) one at a time, as they decode: a .npy array [T, H, W, 3] as is; a video file with
    PyAV or, without it, OpenCV (a bundle needs one of them for video files, and nothing else)."""
    if path.suffix.lower() == ".npy":
        clip = np.load(path, allow_pickle=False, mmap_mode="r")
        if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[3] != 3:
            raise BundleError(f"{path}: expected RGB frames uint8 [T, H, W, 3], got {clip.dtype} {list(clip.shape)}")
        yield from ((i, np.asarray(f)) for i, f in enumerate(clip))
        return
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise BundleError(f"{path}: no video stream")
                for i, frame in enumerate(container.decode(container.streams.video[0])):
                    yield i, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise BundleError(f"{path}: {str(e).splitlines()[0]}") from None
        return
    try:
        import cv2
    except ImportError:
        raise BundleError(f"{path}: decoding video needs PyAV or OpenCV (pip install av); a .npy [T, H, W, 3] "
                          "array does not") from None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BundleError(f"{path}: OpenCV cannot open this video")
    i = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        yield i, np.ascontiguousarray(bgr[..., ::-1])
        i += 1
    capture.release()


def time_video(score, flow, path: Path, max_frames: int | None = None) -> dict:
    """A video through the bundle as a camera would feed it, one frame at a time: decode, detect (following one
    face), align, the frame encoder, and the temporal head on every window `flow` (a frontend.Stream) closes; the
    median ms of each per frame and per window, the windows' verdicts and the video's."""
    frontend = front_end()
    steps = ("decode", "detect", "align", "encode")
    times: dict[str, list[float]] = {k: [] for k in steps}
    records, windows, last, frames = [], [], None, read_video(path)
    while max_frames is None or len(records) < max_frames:
        start = time.perf_counter()
        item = next(frames, None)
        if item is None:
            break
        index, image = item
        t1 = time.perf_counter()
        face = frontend.follow(score.faces(image), last, "iou")
        t2 = time.perf_counter()
        crop = frontend.align(image, face.landmarks, score.template, score.crop_size) if face else None
        t3 = time.perf_counter()
        verdict = score.score_crop(crop) if face else frontend.Verdict("no_face", "no face followed in this frame")
        verdict.face, last = face, face or last
        t4 = time.perf_counter()
        for k, (a, b) in zip(steps, ((start, t1), (t1, t2), (t2, t3), (t3, t4))):
            times[k].append(b - a)
        records.append((index, verdict))
        windows += flow.push(index, verdict)
    if not records:
        raise BundleError(f"{path}: no frame decodes")
    windows += flow.flush()
    video = frontend.video_record(records, score.threshold, windows)
    video.pop("per_frame")
    per_frame = {f"{k}_ms": float(np.median(v)) * 1e3 for k, v in times.items()}
    return {"video": path.name, "frames": len(records), "window": flow.frames, "stride": flow.stride,
            "per_frame_ms": dict(per_frame, total_ms=sum(per_frame.values())),
            "per_window_ms": float(np.median(flow.window_ms)) if flow.window_ms else None, **video}


def bench(bundle: Path, runs: int, warmup: int, threads: int, device: str, label: str | None,
          media: dict | None = None, also: tuple[str, ...] = ()) -> dict:
    """Model latency on a fixed crop; `media` "image": a photo -> verdict split into decode, detect, align, score;
    "video": (clip, stride), the clip streamed through the frame encoder and the temporal head; `also` "validate":
    accuracy on this device from the bundle's validation pack (`validate`); "placement": where its ops run here."""
    image, video = (media or {}).get("image"), (media or {}).get("video")
    start = time.perf_counter()
    manifest = verify(bundle)
    target = manifest["target"]
    result = {"schema": RESULT_SCHEMA, "bundle": bundle.resolve().name, "name": manifest.get("name"),
              "target": target, "precision": manifest.get("precision"),
              "region_index": manifest.get("export_options", {}).get("region_index", "exact"),
              "size_mb": bundle_bytes(manifest) / 1e6, "threads": threads or os.cpu_count(), "device": device,
              "facts": device_facts(target, label), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        run = open_runner(bundle, target, threads, device, runtime_options(manifest))
    except RuntimeUnavailable as e:
        return dict(result, status="unavailable", reason=str(e))
    result["load_s"] = time.perf_counter() - start
    x = to_input(demo_crop(int(manifest["alignment"]["crop_size"])))
    result.update(time_runner(run, x, warmup, runs))
    if "placement" in also:  # where the ops run on this device, as its runtime reports it (None: fixed at conversion, or not observable)
        result["placement"] = placement(bundle, target, runtime_options(manifest), device) or manifest.get("placement")
    if "validate" in also:
        result["validation"] = dict(validate(run, float(manifest["probe"]["threshold_logit"]), bundle),
                                    host=manifest.get("validation_pack", {}).get("host"))
    if image is not None:
        result["photo"] = time_photo(scorer(run, manifest, open_face_nets(bundle, manifest, threads, device)), image, runs)
        result["photo"]["random_weights"] = manifest.get("random_weights", [])  # verdicts of a random model say so
    if video is not None:
        temporal = open_temporal(bundle, manifest, threads, device)
        if temporal is None:
            raise BundleError(f"{bundle}: this bundle has no temporal head (build it with --temporal) to score a video")
        flow = stream(temporal, manifest, video[1])
        result["video"] = time_video(scorer(run, manifest, open_face_nets(bundle, manifest, threads, device)), flow, video[0])
        result["video"]["random_weights"] = manifest.get("random_weights", [])
    return dict(result, status="ok", peak_rss_mb=peak_rss_mb())


def write_json(path: Path, obj: dict) -> None:
    """Atomic: a temporary file beside the target, renamed into place (removed if anything fails)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time this dfedge bundle on this device (numpy + its runtime only).")
    ap.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent, help="bundle folder (default: this file's)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0 = the runtime's default (all cores)")
    ap.add_argument("--device", default="CPU", help="OpenVINO device name: CPU, GPU, NPU, AUTO")
    ap.add_argument("--label", default=None, help="device name in merged reports (default: host and CPU model)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default: bench-<bundle>.json here)")
    ap.add_argument("--image", type=Path, default=None,
                    help="also score this photo (.npy RGB array, or JPEG/PNG/... with Pillow): verdicts and the time of "
                         "decode, detect, align and score")
    ap.add_argument("--video", type=Path, default=None,
                    help="also stream this video (mp4/mov/webm with PyAV or OpenCV, or a .npy [T, H, W, 3] RGB array) through "
                         "the bundle frame by frame, as a camera would: the temporal head scores every window (video bundles)")
    ap.add_argument("--stride", type=int, default=None,
                    help="with --video: frames between window scores (default: the window, one score per T frames; 1: sliding)")
    ap.add_argument("--validate", action="store_true",
                    help="also score the bundle's validation pack on this device: ΔAUC, flip rate and token-mask agreement "
                         "against the torch FP32 reference")
    ap.add_argument("--placement", action="store_true",
                    help="also record where each op runs on this device and in which precision, as the runtime reports it")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be >= 1 and --warmup >= 0")
    try:
        result = bench(args.bundle, args.runs, args.warmup, args.threads, args.device, args.label,
                       {"image": args.image, "video": (args.video, args.stride) if args.video else None},
                       tuple(k for k in ("validate", "placement") if getattr(args, k)))
    except (BundleError, ValueError) as e:  # an unusable bundle or photo (e.g. a bundle without a face front end)
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or Path(f"bench-{result['bundle']}.json")
    write_json(out, result)
    if result["status"] != "ok":
        print(f"not run: {result['reason']}", file=sys.stderr)
        return 3
    lat = result["latency_ms"]
    print(f"{result['bundle']}: {result['target']} {result['precision']}  p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  "
          f"{result['fps']:.1f} FPS  load {result['load_s']:.2f} s  -> {out}")
    if "validation" in result:
        v = result["validation"]
        print(f"validation pack ({v['crops']} crops) on this device: AUC {v['auc']:.4f} (torch FP32 {v['reference_auc']:.4f}, "
              f"Δ {v['delta_auc'] * 100:+.2f} pp), flips {v['flip_rate']:.2%}, token masks {v['mask_agreement']:.2%}"
              + (f"; the kit's own host: Δ {v['host']['delta_auc'] * 100:+.2f} pp" if v.get("host") else ""))
    if "photo" in result:
        photo = result["photo"]
        print(f"{photo['image']}: {photo['faces']} face(s); decode {photo['decode_ms']:.1f} ms, detect "
              f"{photo['detect_ms']:.1f} ms, align {photo['align_ms']:.1f} ms, score {photo['score_ms']:.1f} ms")
        if photo["random_weights"]:
            print(f"warning: seeded random {', '.join(photo['random_weights'])}: not a detector's verdicts", file=sys.stderr)
        for verdict in photo["verdicts"]:
            print(json.dumps(verdict))
    if "video" in result:
        v = result["video"]
        print(f"{v['video']}: {v['frames']} frames, {len(v['windows'])} window(s) of {v['window']}; per frame: decode "
              f"{v['per_frame_ms']['decode_ms']:.1f} ms, detect {v['per_frame_ms']['detect_ms']:.1f} ms, align "
              f"{v['per_frame_ms']['align_ms']:.1f} ms, encode {v['per_frame_ms']['encode_ms']:.1f} ms; per window: "
              + (f"{v['per_window_ms']:.2f} ms" if v["per_window_ms"] is not None else "none scored"))
        if v["random_weights"]:
            print(f"warning: seeded random {', '.join(v['random_weights'])}: not a detector's verdicts", file=sys.stderr)
        for w in v["windows"]:
            print(json.dumps(w))
        print(json.dumps({k: v[k] for k in ("status", "reason", "probability", "logit", "decision", "frame_mean")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
