"""Bundles written before the device package (manifest schema 1: bench.py beside frontend.py) still open and score
in the kit, as they did: the kit reads their manifest through the schema-1 reader and runs them with its own code,
never theirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

import dfedge
from dfedge.data.sources import ToySet
from dfedge.device.files import sha256_file
from dfedge.runtimes import BundleError, verify

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "bundle-v1"


def old_layout(bundle: Path, out: Path) -> Path:
    """`bundle` (schema 2) laid out as schema 1: the old bench.py and frontend.py instead of the device package,
    the manifest in the old shape (no `code`, the face detector named in words, `front_end.code`), rehashed."""
    out.mkdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    for rel in manifest["files"]:
        if not rel.startswith("dfedge_device/") and rel != "bench.py":
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / rel, out / rel)
    for name in ("bench.py", "frontend.py"):
        shutil.copyfile(OLD / name, out / name)
    old = json.loads((OLD / "manifest.json").read_text())
    manifest.pop("code")
    manifest["schema"] = old["schema"]
    front = manifest["front_end"]
    front.pop("title")
    front.update(detector=old["front_end"]["detector"], code=old["front_end"]["code"])
    manifest["files"] = {p.relative_to(out).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(out.rglob("*")) if p.is_file()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return out


def test_the_old_layout_is_the_one_the_old_kit_wrote(onnx_bundle, tmp_path):
    made = json.loads((old_layout(onnx_bundle, tmp_path / "v1") / "manifest.json").read_text())
    old = json.loads((OLD / "manifest.json").read_text())
    assert set(made) == set(old) and set(made["front_end"]) == set(old["front_end"])
    assert {k for k in old["files"] if not k.startswith(("detector.", "face_"))} == {"USAGE.md", "bench.py", "frontend.py"}


def test_a_bundle_from_the_old_layout_still_opens_and_scores(onnx_bundle, tmp_path):
    v1 = old_layout(onnx_bundle, tmp_path / "v1")
    manifest = verify(v1)
    assert manifest["schema"] == "dfedge-bundle/1" and manifest["front_end"]["detector"] == "mtcnn"
    new, old = dfedge.load(onnx_bundle), dfedge.load(v1)
    toy = ToySet("test", 4)
    crops = np.stack([toy[i].image for i in range(4)])
    a, b = new(crops), old(crops)
    np.testing.assert_array_equal(a.raw["logit"], b.raw["logit"])
    assert list(a.status) == list(b.status)
    photo = skdata.astronaut()
    assert [v.record() for v in old.score_image(photo)] == [v.record() for v in new.score_image(photo)]


def test_an_old_bundle_is_checked_as_strictly(onnx_bundle, tmp_path):
    v1 = old_layout(onnx_bundle, tmp_path / "v1")
    with open(v1 / "frontend.py", "a") as f:
        f.write("\n# changed\n")
    with pytest.raises(BundleError, match="frontend.py: SHA-256 differs"):
        dfedge.load(v1)
