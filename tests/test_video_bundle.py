"""Video bundles end to end: `dfedge build --temporal` ships the frame encoder and SDR's temporal head as two graphs
with parity and a video-level gate; the bundle's bench.py streams a clip with numpy + its runtime only; `dfedge score
--temporal` and `dfedge validate` work on it at video level."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.data.toyvideo import toy_clip, write_clip
from dfedge.runtimes import verify

pytestmark = pytest.mark.heavy  # minutes of building or training: .ci/run's second command (-m heavy)

VIDEO_DATA = "toyvideo:val:8"


@pytest.fixture(scope="module")
def video_build(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    result = CliRunner().invoke(app, ["build", "--target", "onnx", "--precision", "fp32",
                                      "--temporal", "toy", "--video-data", VIDEO_DATA, "--data", "toy:val:40",
                                      "--bench-runs", "0", "--out", str(dist)])
    return result, dist / "toy"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    c = toy_clip(1, "test", frames=20)
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", c.frames, seed=3), c


def test_video_bundles_ship_two_graphs_with_parity_and_a_video_gate(video_build):
    result, dist = video_build
    assert result.exit_code == 0, result.output
    for folder in ("onnx-fp32",):
        manifest = verify(dist / folder)
        t = manifest["temporal"]
        assert t["file"] in manifest["files"] and t["frames"] == 16 and t["feature_dim"] == 96
        assert t["parity"]["ok"] and t["parity"]["max_abs_logit"] <= 1e-4
        gate = t["gate"]
        assert gate["level"] == "video" and gate["passed"] and gate["videos"] == 8 and abs(gate["delta_auc"]) <= 0.005
        assert manifest["outputs"]["feature"]["shape"] == [1, 96]
    rows = json.loads((dist / "build.json").read_text())["rows"]
    assert all(r["video_delta_auc"] is not None for r in rows)
    reference = np.load(dist / "reference-video.scores")
    assert len(reference["ids"]) == 8 and json.loads(str(reference["header"]))["aggregation"] == "temporal"
    assert "video ΔAUC pp" in (dist / "report.md").read_text()


def test_bench_streams_a_clip_with_numpy_and_the_runtime_only(video_build, clip, tmp_path):
    """bench.py runs in a process that cannot import dfedge or torch (a device has neither)."""
    _, dist = video_build
    path, _ = clip
    bundle = dist / "onnx-fp32"
    out = tmp_path / "bench.json"
    guard = ("import sys, runpy; sys.modules['dfedge'] = None; sys.modules['torch'] = None; "
             f"sys.argv = ['bench.py', '--video', {str(path)!r}, '--runs', '1', '--warmup', '0', '--stride', '4', "
             f"'--out', {str(out)!r}]; runpy.run_path({str(bundle / 'bench.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", guard], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    video = json.loads(out.read_text())["video"]
    assert video["frames"] == 20 and video["window"] == 16 and video["stride"] == 4
    # a window once 16 frames are buffered, then every 4 frames: frames 15 and 19 close one each
    assert [(w["first_frame"], w["last_frame"]) for w in video["windows"]] == [(0, 15), (4, 19)]
    assert set(video["per_frame_ms"]) == {"decode_ms", "detect_ms", "align_ms", "encode_ms", "total_ms"}
    assert video["per_window_ms"] > 0 and video["status"] == "ok" and video["aggregation"] == "temporal"
    assert video["usable_frames"] >= 16 and video["frame_mean"]["status"] == "ok"


def test_score_temporal_matches_between_torch_and_the_bundle(video_build, clip):
    _, dist = video_build
    path, _ = clip
    records = []
    for extra in ([], ["--bundle", str(dist / "onnx-fp32")]):
        result = CliRunner().invoke(app, ["score", str(path), "--temporal", *extra])
        assert result.exit_code == 0, result.output
        records.append(json.loads(result.output.strip().splitlines()[-1]))
    torch_rec, bundle_rec = records
    assert torch_rec["aggregation"] == bundle_rec["aggregation"] == "temporal"
    assert torch_rec["status"] == bundle_rec["status"] == "ok" and len(torch_rec["windows"]) == 2  # 20 frames: a window and the tail
    assert abs(torch_rec["logit"] - bundle_rec["logit"]) < 1e-3
    assert torch_rec["frame_mean"]["probability"] == pytest.approx(bundle_rec["frame_mean"]["probability"], abs=1e-4)


def test_score_temporal_needs_a_temporal_head(tmp_path, clip):
    path, _ = clip
    result = CliRunner().invoke(app, ["score", str(path), "--temporal", "--temporal-head", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 2 and "missing.safetensors" in result.output


def test_validate_gates_a_video_bundle_at_video_level(video_build, tmp_path):
    _, dist = video_build
    result = CliRunner().invoke(app, ["validate", str(dist / "onnx-fp32"), "--reference", str(dist / "reference-video.scores"),
                                      "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["comparison"]["samples"] == 8 and "PASS" in result.output
    # a photo bundle (the same one without its temporal section) cannot be gated on video-level temporal scores
    photo = tmp_path / "photo"
    shutil.copytree(dist / "onnx-fp32", photo)
    manifest = json.loads((photo / "manifest.json").read_text())
    del manifest["temporal"]
    (photo / "manifest.json").write_text(json.dumps(manifest))
    refused = CliRunner().invoke(app, ["validate", str(photo), "--reference", str(dist / "reference-video.scores"),
                                       "--out", str(tmp_path / "w")])
    assert refused.exit_code == 2 and "has no temporal head" in refused.output


def test_bench_refuses_a_bad_clip_in_one_line(video_build, tmp_path):
    _, dist = video_build
    bench = dist / "onnx-fp32" / "bench.py"
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 20)
    for clip, says in ((tmp_path / "missing.mp4", "missing.mp4"), (tmp_path / "broken.mp4", "broken.mp4")):
        proc = subprocess.run([sys.executable, str(bench), "--video", str(clip), "--runs", "1", "--warmup", "0",
                               "--out", str(tmp_path / "b.json")], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().startswith("error: ") and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.json").exists()  # nothing half-written
    proc = subprocess.run([sys.executable, str(bench), "--video", str(tmp_path / "broken.mp4"), "--stride", "17",
                           "--runs", "1", "--warmup", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "stride 17 must be between 1 and the window's 16 frames" in proc.stderr


def test_validate_refuses_a_reference_of_another_temporal_head(video_build, tmp_path):
    from dfedge.eval.scores import load_scores, save_scores

    _, dist = video_build
    ref = load_scores(dist / "reference-video.scores")
    ref.header["temporal"] = dict(ref.header["temporal"], sha256="0" * 64)
    save_scores(tmp_path / "other.scores", ref)
    result = CliRunner().invoke(app, ["validate", str(dist / "onnx-fp32"), "--reference", str(tmp_path / "other.scores"),
                                      "--out", str(tmp_path / "v")])
    assert result.exit_code == 2 and "another temporal head" in result.output


def test_a_temporal_head_outside_the_bundle_never_runs(video_build, clip, tmp_path):
    """Trust cause 1: `temporal.file` pointing out of the bundle (to a model that exists there) is refused before
    anything opens, by verify, dfedge.load and bench.py --video, in one line."""
    import dfedge
    from dfedge.runtimes import BundleError

    _, dist = video_build
    copy = shutil.copytree(dist / "onnx-fp32", tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    shutil.copyfile(copy / manifest["temporal"]["file"], tmp_path / "evil_temporal.onnx")
    manifest["temporal"]["file"] = "../evil_temporal.onnx"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for opens in (verify, dfedge.load):
        with pytest.raises(BundleError) as e:
            opens(copy)
        assert "\n" not in str(e.value) and "evil_temporal.onnx" in str(e.value), str(e.value)
    proc = subprocess.run([sys.executable, "bench.py", "--video", str(clip[0]), "--runs", "1", "--warmup", "0",
                           "--out", str(tmp_path / "b.json")], capture_output=True, text=True, cwd=copy)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
