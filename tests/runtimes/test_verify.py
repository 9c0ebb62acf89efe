"""A bundle is verified, whole, before anything of it runs or loads: every file listed and hashed, nothing unlisted,
no path or link out of it, a manifest that matches its schema; one clear error otherwise, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import dfedge
from dfedge.cli import app
from dfedge.data.sources import toy_crops
from dfedge.export.bundle import file_hashes
from dfedge.runtimes import BundleError, verify
from dfedge.device.schema import MANIFEST_SCHEMA, schema_errors

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(onnx_bundle):
    return onnx_bundle


def copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "b"))


def edit(path: Path, change) -> None:
    """Apply `change` to the manifest in place; a change that returns a list replaces the manifest with it."""
    manifest = json.loads((path / "manifest.json").read_text())
    new = change(manifest)
    (path / "manifest.json").write_text(json.dumps(new if isinstance(new, list) else manifest))


def test_a_tampered_bench_py_never_runs(bundle, tmp_path):
    b = copy(bundle, tmp_path)
    marker = tmp_path / "ran"
    source = (b / "bench.py").read_text()
    at = source.index("\nimport ")  # first statement after the docstring and `from __future__`: runs on import
    (b / "bench.py").write_text(source[:at] + f"\nopen({str(marker)!r}, 'w').write('x')" + source[at:])
    result = CliRunner().invoke(app, ["bench", str(b), "--runs", "1", "--no-reference"])
    assert result.exit_code == 2 and "bench.py: SHA-256 differs" in result.output
    assert not marker.exists()


@pytest.mark.parametrize("case, change, message", [
    ("model entry removed", lambda m: m["files"].pop("detector.onnx"), "detector.onnx is not listed"),
    ("no files at all", lambda m: m.update(files={}), "/files: is empty"),
    ("files missing", lambda m: m.pop("files"), "/files: missing"),
    ("entry without sha256", lambda m: m["files"]["USAGE.md"].pop("sha256"), "/files/USAGE.md/sha256: missing"),
    ("manifest is a list", lambda m: [m], "/: must be object"),
    ("path out of the bundle", lambda m: m["files"].update({"../../etc/hostname": m["files"]["USAGE.md"]}), "not allowed here"),
    ("absolute path", lambda m: m["files"].update({"/etc/hostname": m["files"]["USAGE.md"]}), "not allowed here"),
    ("short hash", lambda m: m["files"]["USAGE.md"].update(sha256="abcd1234"), "sha256: 'abcd1234' is not allowed"),
    ("front end without files", lambda m: m.update(front_end={"": None}), "/front_end/files: missing"),  # hypothesis found it
    ("a key with a line break", lambda m: m["conversion"].update({"\n": None}), r"/conversion/\\n: not allowed here"),  # hypothesis (long profile) found it
])
def test_a_manifest_that_cannot_vouch_for_the_bundle_is_refused(bundle, tmp_path, case, change, message):
    b = copy(bundle, tmp_path)
    edit(b, change)
    with pytest.raises(BundleError, match=message) as err:
        dfedge.load(b)
    assert "\n" not in str(err.value)


def test_a_modified_model_with_its_entry_removed_does_not_load(bundle, tmp_path):
    """The attack the issue found: a changed detector.onnx and no manifest entry for it."""
    b = copy(bundle, tmp_path)
    with open(b / "detector.onnx", "ab") as f:
        f.write(b"\0")
    edit(b, lambda m: m["files"].pop("detector.onnx"))
    with pytest.raises(BundleError, match="detector.onnx is not listed"):
        dfedge.load(b)
    result = CliRunner().invoke(app, ["validate", str(b), "--reference", str(tmp_path / "none.scores")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_unlisted_files_and_links_are_refused(bundle, tmp_path):
    b = copy(bundle, tmp_path)
    (b / "extra.bin").write_bytes(b"?")
    with pytest.raises(BundleError, match="extra.bin: not listed in the manifest"):
        verify(b)
    (b / "extra.bin").unlink()
    (b / "USAGE.md").unlink()
    os.symlink("/etc/hostname", b / "USAGE.md")  # listed name, now a link out of the bundle
    with pytest.raises(BundleError, match="USAGE.md: a link, or a path out of the bundle"):
        verify(b)
    (b / "USAGE.md").unlink()
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "bench.cpython-311.pyc").write_bytes(b"cache")  # what `import bench` would write
    with pytest.raises(BundleError, match=r"bench.cpython-311.pyc: not listed in the manifest \(a bytecode cache"):
        verify(b)


def test_the_schema_is_written_down_once(bundle):
    doc = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
    assert doc == MANIFEST_SCHEMA
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert schema_errors(manifest, MANIFEST_SCHEMA) == []
    import jsonschema  # an independent validator agrees that the kit's own manifests are valid

    jsonschema.validate(manifest, doc)


values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=6)


@given(data=st.data())
def test_random_edits_of_a_bundle_are_refused_in_one_line_or_run_the_written_model(bundle, tmp_path_factory, data):
    """Replace one manifest value somewhere (any JSON type, non-finite numbers too), or flip one byte of one file:
    verify (or the load after it) raises BundleError in one line, or the edit changed nothing that matters (then the
    bundle is still the one that was written, and it computes exactly what it did)."""
    b = Path(shutil.copytree(bundle, tmp_path_factory.mktemp("fuzz") / "b"))
    manifest = json.loads((b / "manifest.json").read_text())
    if data.draw(st.booleans(), label="edit the manifest"):
        node, keys = manifest, []
        while isinstance(node, dict) and node and data.draw(st.booleans(), label="deeper"):
            key = data.draw(st.sampled_from(sorted(node)), label="key")
            keys.append(key)
            node = node[key]
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        new = data.draw(values, label="new value")
        if keys:
            target[keys[-1]] = new
        else:
            manifest = new
        (b / "manifest.json").write_text(json.dumps(manifest))
    else:
        rel = data.draw(st.sampled_from(sorted(manifest["files"])), label="file")
        raw = bytearray((b / rel).read_bytes())
        if raw:
            i = data.draw(st.integers(0, len(raw) - 1), label="byte")
            raw[i] ^= 0xFF
            (b / rel).write_bytes(bytes(raw))
    try:
        checked = verify(b)
        loaded = dfedge.load(b)
    except BundleError as e:
        assert "\n" not in str(e)
        return
    assert checked["files"] == file_hashes(b)  # accepted: every file is the one its entry describes
    # and the model that runs is the one written: its outputs on a crop are exactly the untouched bundle's (what the
    # manifest alone decides, the threshold, guard and front-end settings, the gate checks: dfedge validate, bench.py
    # --validate)
    crop = toy_crops(1)
    assert_same_outputs(loaded.run(crop), original_outputs(bundle, crop))


_ORIGINAL: dict[str, dict] = {}


def original_outputs(bundle: Path, crop: np.ndarray) -> dict:
    if str(bundle) not in _ORIGINAL:
        _ORIGINAL[str(bundle)] = dfedge.load(bundle).run(crop)
    return _ORIGINAL[str(bundle)]


def assert_same_outputs(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)
