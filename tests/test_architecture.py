"""The house rules of docs/architecture.md, read from the code's own imports and definitions: stages import only
downwards (device -> models -> data -> eval -> train -> runtimes -> export -> quantize -> targets -> config, build,
scoring, distributed -> cli), no module imports itself back through others, the device package (what every bundle runs)
imports nothing outside itself but the standard library, numpy and the runtimes, no module outside a target's own
asks which target it is, the CLI stays thin and no function takes a long parameter list."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dfedge"
# The stages in the order imports may flow (a module may import its own stage and the ones before it). train is a
# side stage used by the CLI only; terminal.py and options.py are the CLI's own plumbing.
STAGES = [("_version", "allocator"), "device", "models", "data", "eval", "train", "runtimes", "export", "quantize", "targets",
          ("config", "build", "scoring", "distributed"), ("terminal", "options", "cli")]


def stage(module: str) -> int:
    first = module.split(".")[1]
    return next(i for i, s in enumerate(STAGES) if first == s or first in s)


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """dfedge modules that `name` imports anywhere in its file (lazy imports inside functions included, and the
    modules it names in a string: a table row's `models.lazy.Lazy("dfedge.…", name)` imports it when first called)."""
    known, package = modules(), name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dfedge")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("dfedge"):
                subs = {f"{base}.{a.name}" for a in node.names}
                found |= {s for s in subs if s in known} or {base}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("dfedge."):
            found.add(node.value)
    return {m for m in found if m in known and m != name}


def test_imports_flow_one_way_and_never_in_a_circle():
    graph = {name: imports(name, path) for name, path in modules().items()}
    faces = {"dfedge"}  # the package's face hands on load/Detector/Result; nothing inside imports it
    upward = [f"{a} -> {b}" for a, deps in graph.items() if a not in faces for b in deps
              if b in faces or stage(b) > stage(a)]
    assert not upward, upward

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    circles = [c for c in (cycle_from(m) for m in graph) if c]
    assert not circles, circles[0]


# What the device package may import besides itself and the standard library: numpy at module level; inside the
# function that needs it, a runtime (a bundle needs one) or an input decoder (Pillow for photos, PyAV or OpenCV for
# video files: a device that passes arrays needs none of them).
DEVICE_MODULE_LEVEL = {"numpy"}
DEVICE_LAZY = {"onnxruntime", "openvino", "ai_edge_litert", "executorch", "torch", "coremltools", "PIL", "av", "cv2"}


def test_the_device_package_imports_only_itself_numpy_and_runtimes():
    """dfedge/device/ is copied whole into every bundle: its modules import each other relatively, the standard
    library and numpy at module level, and a runtime or an input decoder only inside the function that uses it."""
    bad = []
    for path in sorted((PACKAGE / "device").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                depth = len(path.relative_to(PACKAGE / "device").parts)  # 1: device/x.py, 2: device/faces/x.py
                if node.level > depth:
                    bad.append(f"{path.name}: from {'.' * node.level}{node.module or ''} leaves the package")
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                root = name.split(".")[0]
                if root in sys.stdlib_module_names or root == "__future__":
                    continue
                allowed = DEVICE_MODULE_LEVEL | (set() if node in top else DEVICE_LAZY)
                if root not in allowed:
                    bad.append(f"{path.relative_to(PACKAGE)}: import {name}" + (" at module level" if node in top else ""))
    assert not bad, bad
    assert not imports("dfedge.device", PACKAGE / "device" / "__init__.py")


def test_no_module_asks_which_target_it_is():
    """A target's capabilities are fields of its row: no comparison with a target's name (`target == "onnx"`, `in
    ("onnx", ...)`) outside that target's own modules (export/<name>.py, quantize/<name>.py,
    device/formats/<name>.py), which may compare what they like."""
    from dfedge.targets import TARGETS

    names = set(TARGETS)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name in ("export", "quantize", "formats") and path.stem in names:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            for op, right in zip(node.ops, node.comparators):
                if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                    continue
                values = [right] + ([node.left] if isinstance(op, (ast.Eq, ast.NotEq)) else [])
                consts = {c.value for v in values for c in ([v] + list(getattr(v, "elts", [])))
                          if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                if consts & names:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {sorted(consts & names)}")
    assert not found, found


def test_the_cli_is_thin_and_no_function_takes_a_long_parameter_list():
    assert len((PACKAGE / "cli.py").read_text().splitlines()) <= 450
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
                if len(names) > 8:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({len(names)})")
    assert not long, long
