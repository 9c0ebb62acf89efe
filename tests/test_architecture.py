"""The house rules of docs/architecture.md, read from the code's own imports and definitions: stages import only
downwards (models -> data -> eval -> train -> runtimes -> export -> quantize -> targets -> build, scoring, distributed -> cli), no module
imports itself back through others, the bundle's own code imports nothing of the kit, the CLI stays thin and no
function takes a long parameter list."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dfedge"
# The stages in the order imports may flow (a module may import its own stage and the ones before it). train is a
# side stage used by the CLI only; terminal.py and options.py are the CLI's own plumbing.
STAGES = ["_version", "models", "data", "eval", "train", "runtimes", "export", "quantize", "targets",
          ("build", "scoring", "distributed"), ("terminal", "options", "cli")]


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
    """dfedge modules that `name` imports anywhere in its file (lazy imports inside functions included)."""
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


def test_the_bundle_code_imports_nothing_of_the_kit():
    """runtimes/standalone.py ships in every bundle as bench.py, with models/frontend.py beside it as frontend.py:
    numpy, the standard library and the runtime, and bench.py the front end (its only import from the kit)."""
    assert imports("dfedge.runtimes.standalone", PACKAGE / "runtimes" / "standalone.py") == {"dfedge.models.frontend"}
    assert imports("dfedge.models.frontend", PACKAGE / "models" / "frontend.py") == set()


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
