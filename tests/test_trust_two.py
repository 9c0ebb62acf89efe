"""Issue 31, "trust, round two": each cause has a test named after its promise (docs/security.md maps them)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.data.sources import toy_photos

runner = CliRunner()


def sliver_png(path: Path, width: int = 20000, height: int = 2) -> Path:
    """A tiny PNG (a few hundred bytes) of an extreme aspect ratio: decoded and reduced, one side would be 0 px."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(3 * width) for _ in range(height)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_one_hostile_photo_never_costs_the_batch(tmp_path):
    """Cause 7: 20 photos with a 20000 x 2 PNG in the middle give 20 records, 19 of them scored, all in the file."""
    folder = tmp_path / "batch"
    folder.mkdir()
    photos = toy_photos(19)
    names = []
    for i in range(20):
        name = folder / f"p{i:02d}.png"
        if i == 10:
            sliver_png(name)
            assert name.stat().st_size < 1000
        else:
            Image.fromarray(photos[i - (i > 10)][:, :, :]).save(name)
        names.append(name)
    out = tmp_path / "batch.jsonl"
    result = runner.invoke(app, ["score", str(folder), "--faces", "largest", "--output", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in records] == [str(n) for n in names]
    assert records[10]["status"] in ("no_face", "unreadable") and records[10]["probability"] is None
    scored = [r for i, r in enumerate(records) if i != 10]  # each through the pipeline: a verdict of its own
    assert all(r["status"] not in ("unreadable", "model_error") for r in scored), [r["status"] for r in scored]
    assert sum(r["status"] == "ok" for r in scored) >= 15
    assert all((r["probability"] is not None) == (r["status"] == "ok") for r in records)


def test_a_sliver_image_decodes_to_at_least_one_pixel(tmp_path):
    """Cause 7 at its root: reduced to the decode limit, no side is 0 px (resize_area would divide by zero)."""
    from dfedge.device.image import read_image

    image, size, _ = read_image(sliver_png(tmp_path / "s.png"))
    assert size == (20000, 2) and image.shape == (1, 4000, 3)
    tall = tmp_path / "t.jpg"
    Image.fromarray(np.zeros((65500, 1, 3), np.uint8)).save(tall)
    image, size, _ = read_image(tall)
    assert size == (1, 65500) and min(image.shape[:2]) >= 1 and max(image.shape[:2]) <= 4096


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """One gated toy bundle with a validation pack (ONNX fp32 on toy:val:16) and its build's reference scores."""
    out = tmp_path_factory.mktemp("gated")
    result = runner.invoke(app, ["build", "--target", "onnx", "--precision", "fp32", "--data", "toy:val:16",
                                 "--validation-pack", "8", "--bench-runs", "0", "--out", str(out), "--name", "toy"])
    assert result.exit_code == 0, result.output
    return out / "toy" / "onnx-fp32", out / "toy" / "reference.scores"


def edited(bundle: Path, tmp_path: Path, edit) -> Path:
    """A copy of `bundle` whose manifest `edit(manifest)` changed (the manifest lists the other files, not itself:
    nothing to rehash, so verification passes and only the decision settings differ)."""
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def bench_validate(bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench.py", "--runs", "1", "--warmup", "0", "--validate", "--out",
                           str(tmp_path / "bench.json")], cwd=bundle, capture_output=True, text=True)


def set_threshold(value):
    return lambda m: m["probe"].update(threshold_logit=value)


@pytest.mark.heavy
def test_bench_validate_exits_1_over_the_bundles_budget(gated, tmp_path):
    """Cause 6: `bench.py --validate` applies the manifest's budgets (exit 1 over them), and a decision threshold
    other than the reference's fails it (cause 4, on the device)."""
    bundle, _ = gated
    ok = bench_validate(bundle, tmp_path)
    assert ok.returncode == 0, ok.stderr
    record = json.loads((tmp_path / "bench.json").read_text())["validation"]
    assert record["passed"] and record["reasons"] == []
    for edit, why in ((set_threshold(1e9), "decides at logit >= 1e+09"),
                      (lambda m: m["gate"]["budget"].update(max_auc_drop=-1.0), "AUC drop")):
        run = bench_validate(edited(bundle, tmp_path / why[:4].strip(), edit), tmp_path)
        assert run.returncode == 1, (run.stdout, run.stderr)
        assert "validation FAILED" in run.stderr and why in run.stderr, run.stderr
        assert "Traceback" not in run.stderr


@pytest.mark.heavy
def test_validate_refuses_a_bundle_whose_threshold_was_edited(gated, tmp_path):
    """Cause 4: `dfedge validate` judges the bundle's own decisions: an edited threshold is refused in one line."""
    bundle, reference = gated
    copy = edited(bundle, tmp_path, set_threshold(1e9))
    result = runner.invoke(app, ["validate", str(copy), "--reference", str(reference), "--out", str(tmp_path / "r")])
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "decides at logit >= 1e+09" in text and "Traceback" not in text, result.output


@pytest.mark.heavy
def test_a_missing_model_identity_is_a_refusal(gated, tmp_path):
    """Cause 5: a manifest without `sources` is not "the same model": validate refuses it."""
    bundle, reference = gated
    copy = edited(bundle, tmp_path, lambda m: m.pop("sources"))
    result = runner.invoke(app, ["validate", str(copy), "--reference", str(reference), "--out", str(tmp_path / "r")])
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "records no weight identity" in text, result.output


def test_flips_compare_each_models_decisions_at_its_own_threshold():
    """Cause 4 in the metric: the artifact's decisions are taken at its threshold, the reference's at its own."""
    from dfedge.eval.metrics import score_agreement

    ref = np.array([-2.0, -1.0, 1.0, 2.0])
    assert score_agreement(ref, ref, 0.0).flip_rate == 0.0
    assert score_agreement(ref, ref, 0.0, 1e9).flip_rate == 0.5


def test_a_planted_bytecode_cache_is_refused_not_run(onnx_bundle, tmp_path):
    """Cause 2: an unchecked-hash .pyc beside an untouched bench.py (what `import bench` would run) is an unlisted
    file: verification refuses it, and USAGE.md's way in (runpy) never reads a cache."""
    import py_compile

    from dfedge.device.errors import BundleError
    from dfedge.device.manifest import verify

    b = Path(shutil.copytree(onnx_bundle, tmp_path / "b"))
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    cache = b / "__pycache__" / f"bench.{sys.implementation.cache_tag}.pyc"
    cache.parent.mkdir()
    py_compile.compile(str(evil), cfile=str(cache), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    with pytest.raises(BundleError, match="bytecode cache"):
        verify(b)
    proc = subprocess.run([sys.executable, "-c", "import runpy; runpy.run_path('bench.py')['load']('.')"], cwd=b,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not listed in the manifest" in proc.stderr and not marker.exists(), proc.stderr
    assert "runpy.run_path" in (b / "USAGE.md").read_text()


def test_nothing_is_written_into_a_bundle_by_default(onnx_bundle, tmp_path):
    """Cause 8: `cd B && python bench.py` writes its result beside B, an --out inside B is refused in one line, and
    the kit's writers (dfedge validate --out B) refuse B too; B still verifies afterwards."""
    from dfedge.device.manifest import verify
    from dfedge.models.writing import atomic_write

    b = Path(shutil.copytree(onnx_bundle, tmp_path / "b"))
    proc = subprocess.run([sys.executable, "bench.py", "--runs", "1", "--warmup", "0"], cwd=b, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bench-b.json").is_file()
    inside = subprocess.run([sys.executable, "bench.py", "--runs", "1", "--out", "r.json"], cwd=b, capture_output=True, text=True)
    assert inside.returncode == 2 and "inside the bundle" in inside.stderr and len(inside.stderr.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="inside the bundle"):
        atomic_write(b / "report.md", lambda t: t.write_text("x"))
    verify(b)


def test_no_command_writes_over_its_inputs(tmp_path):
    """Cause 9: `dfedge reference --data list.csv --out list.csv` is refused in one line and the list is intact
    (one rule, in the kit's writer, for every command's inputs)."""
    from dfedge.data.synthetic import toy_sample

    rows = ["path,label"]
    for i in range(4):
        image = tmp_path / f"c{i}.png"
        Image.fromarray(toy_sample(i, "val").image).save(image)
        rows.append(f"{image},{i % 2}")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(rows) + "\n")
    before = listing.read_bytes()
    result = runner.invoke(app, ["reference", "--data", str(listing), "--out", str(listing)])
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "is one of this command's inputs" in text and "Traceback" not in text, result.output
    assert listing.read_bytes() == before


@pytest.mark.parametrize("edit, where", [
    (lambda m: m["probe"]["guard"].update(tokens=[-1e9, 1e9]), "/probe/guard/tokens"),
    (lambda m: m["probe"]["guard"].update(row=[9.0, 3.0]), "/probe/guard/row"),
    (lambda m: m["front_end"]["settings"].update(min_face=0), "/front_end/settings/min_face"),
    (lambda m: m["front_end"]["settings"].update(min_face=-20), "/front_end/settings/min_face"),
    (lambda m: m["front_end"].update(settings=[1, 2]), "/front_end/settings"),
])
def test_numbers_that_decide_a_verdict_are_checked_by_verify(onnx_bundle, tmp_path, edit, where):
    """Cause 4 (verify's part): a guard widened past the token grid or turned round, a smallest face of 0 or less,
    settings that are not an object: refused in one line naming the field, before anything opens."""
    from dfedge.device.errors import BundleError
    from dfedge.device.manifest import verify

    manifest = json.loads((onnx_bundle / "manifest.json").read_text())
    if manifest["probe"].get("guard") is None and "guard" in where:
        manifest["probe"]["guard"] = {"tokens": [0.0, 6.0], "row": [1.0, 10.0], "col": [1.0, 10.0]}
        bundle = edited(onnx_bundle, tmp_path, lambda m, g=manifest["probe"]["guard"]: (m["probe"].update(guard=dict(g)), edit(m)))
    else:
        bundle = edited(onnx_bundle, tmp_path, edit)
    with pytest.raises(BundleError, match=where.replace("/", "/")) as e:
        verify(bundle)
    assert "\n" not in str(e.value)


@pytest.mark.heavy
@pytest.mark.parametrize("edit, why", [
    (lambda m: m["probe"]["guard"]["tokens"].__setitem__(1, 196), "plausibility guard"),
    (lambda m: m["probe"].update(guard=None), "plausibility guard"),
    (lambda m: m["front_end"]["settings"].update(min_face=48), "face detector settings"),
])
def test_validate_refuses_a_bundle_whose_guard_or_face_settings_were_edited(gated, tmp_path, edit, why):
    """Cause 4: the reference records the guard and the face detector's settings it was made with; `dfedge validate`
    refuses a bundle that decides photos with others (the gate's crops touch neither, so its AUC could not see it)."""
    bundle, reference = gated
    result = runner.invoke(app, ["validate", str(bundle), "--reference", str(reference), "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    copy = edited(bundle, tmp_path, edit)
    result = runner.invoke(app, ["validate", str(copy), "--reference", str(reference), "--out", str(tmp_path / "r")])
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and why in text and "Traceback" not in text, result.output


@pytest.mark.parametrize("edit, named", [
    (lambda m: m["front_end"]["files"].update(pnet="../evil_pnet.onnx"), "../evil_pnet.onnx"),
    (lambda m: m.update(model_file="../evil_detector.onnx"), "../evil_detector.onnx"),
])
def test_every_file_the_manifest_names_is_a_verified_file(onnx_bundle, tmp_path, edit, named):
    """Cause 1: a file the manifest names anywhere (the model, a face net, the temporal head, the pack) pointing out of
    the bundle is refused before anything opens, by verify and by the entry script, in one line."""
    from dfedge.runtimes import BundleError, verify

    copy = edited(onnx_bundle, tmp_path, edit)
    (tmp_path / named.removeprefix("../")).write_bytes((onnx_bundle / "detector.onnx").read_bytes())  # it exists
    with pytest.raises(BundleError) as e:
        verify(copy)
    assert "\n" not in str(e.value) and ("not listed" in str(e.value) or "not allowed here" in str(e.value)), str(e.value)
    run = subprocess.run([sys.executable, "bench.py", "--runs", "1", "--out", str(tmp_path / "r.json")], cwd=copy,
                         capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr
