"""The manifest schema is the one truth of what a bundle records: every manifest key the kit's code reads is
declared in it, and the manifests the kit writes, of every target, validate against it with
`additionalProperties: false` (checked by an independent validator, jsonschema, too)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jsonschema
import pytest

from dfedge.device.schema import MANIFEST_SCHEMA, schema_errors
from dfedge.targets import TARGETS

PACKAGE = Path(__file__).resolve().parents[1] / "dfedge"
# `manifest` means a bundle's manifest everywhere but in training files (their own JSON records) and the CLI's
# convert-parser / distill commands, which print those records
NOT_BUNDLE_MANIFESTS = ("train/", "cli.py")


def _key(node) -> str | None:
    """The constant key of `x["key"]` or `x.get("key", ...)`, else None."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return node.args[0].value
    return None


def _base(node):
    return node.value if isinstance(node, ast.Subscript) else node.func.value


def _is_manifest(node) -> bool:
    return (isinstance(node, ast.Name) and node.id == "manifest") or (isinstance(node, ast.Attribute) and node.attr == "manifest")


def _chain(node) -> tuple[object, list[str]]:
    """(root expression, keys from the root) of x["a"].get("b")[...]; through `x or {}` too."""
    keys, cur = [], node
    while _key(cur) is not None:
        keys.append(_key(cur))
        cur = _base(cur)
        if isinstance(cur, ast.BoolOp):  # (manifest.get("front_end") or {})
            cur = cur.values[0]
    return cur, list(reversed(keys))


def read_paths() -> set[tuple[str, ...]]:
    """Every key path read off a variable (or attribute) named `manifest`, or off a name a function bound to a part
    of it: manifest["probe"].get("guard") -> ("probe", "guard"); probe = manifest.get("probe", {}); probe["rule"]
    -> ("probe", "rule")."""
    paths = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(NOT_BUNDLE_MANIFESTS):
            continue
        tree = ast.parse(path.read_text())
        for scope in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            aliases: dict[str, tuple[str, ...]] = {}
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    value = node.value.values[0] if isinstance(node.value, ast.BoolOp) else node.value
                    root, keys = _chain(value)
                    if keys and _is_manifest(root):
                        aliases[node.targets[0].id] = tuple(keys)
            for node in ast.walk(scope):
                if _key(node) is None:
                    continue
                root, keys = _chain(node)
                if _is_manifest(root):
                    paths.add(tuple(keys))
                elif isinstance(root, ast.Name) and root.id in aliases:
                    paths.add(aliases[root.id] + tuple(keys))
    return paths


def declared(schema: dict, keys: tuple[str, ...]) -> bool:
    if not keys:
        return True
    branches = schema.get("anyOf")
    if branches:
        return any(declared(b, keys) for b in branches)
    props = schema.get("properties", {})
    if keys[0] in props:
        return declared(props[keys[0]], keys[1:])
    extra = schema.get("additionalProperties", True)
    if schema.get("patternProperties") or isinstance(extra, dict):
        return declared(extra if isinstance(extra, dict) else next(iter(schema["patternProperties"].values())), keys[1:])
    return schema.get("type") == "object" and extra is True and not props  # an outside tool's own record


def test_every_manifest_key_the_code_reads_is_declared():
    paths = read_paths()
    assert len(paths) > 20 and ("probe", "threshold_logit") in paths  # the scan finds the reads
    missing = sorted(".".join(p) for p in paths if not declared(MANIFEST_SCHEMA, p))
    assert not missing, missing


def test_the_scan_sees_an_undeclared_read():
    assert not declared(MANIFEST_SCHEMA, ("probe", "no_such_key"))
    assert not declared(MANIFEST_SCHEMA, ("no_such_section",))
    assert declared(MANIFEST_SCHEMA, ("conversion", "settings", "opset"))  # a converter's own record


@pytest.fixture(scope="module")
def manifests(toy_build):
    result, dist = toy_build
    assert result.exit_code == 0, result.output
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(dist.glob("*/manifest.json"))}


def test_real_manifests_of_every_target_validate_against_the_strict_schema(manifests):
    assert {m["target"] for m in manifests.values()} == set(TARGETS)
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    for folder, manifest in manifests.items():
        assert schema_errors(manifest, MANIFEST_SCHEMA) == [], folder
        assert not list(validator.iter_errors(manifest)), folder


@pytest.mark.parametrize("where", [(), ("probe",), ("front_end",), ("input",), ("alignment",), ("gate",),
                                   ("validation_pack",), ("outputs", "logit")])
def test_an_undeclared_key_at_any_level_the_kit_owns_is_refused(manifests, where):
    manifest = json.loads(json.dumps(next(iter(manifests.values()))))
    node = manifest
    for key in where:
        node = node[key]
    node["surprise"] = 1
    assert any("surprise: not allowed here" in e for e in schema_errors(manifest, MANIFEST_SCHEMA))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, MANIFEST_SCHEMA)
