"""Issue 31, causes 15-18: display matrices that are not rotations, manifest edits that must end in one line,
manifest fields with side effects, and the smaller ones (docs/security.md maps each test to its cause)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

IDENTITY = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)  # a display matrix as MP4 stores it (16.16, 2.30)
QUARTER = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # a phone's portrait video: turned 90 degrees clockwise
MIRROR = (-0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def tiny_video(path: Path, matrix: tuple[int, ...], width: int = 32, height: int = 16) -> Path:
    """Three frames of `width` x `height` in an MP4 whose track header carries `matrix` (its tkhd box patched in
    place: the movie header's identity matrix comes first, the track's last)."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(3):
            ramp = np.linspace(0, 200, width, dtype=np.uint8)[None, :, None] + np.uint8(20 * i)  # dark left, bright right
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.broadcast_to(ramp, (height, width, 3))), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    at = data.rindex(struct.pack(">9i", *IDENTITY))
    path.write_bytes(data[:at] + struct.pack(">9i", *matrix) + data[at + 36:])
    return path


class FrameShapes:
    """A stand-in detector for scoring._video: it records the shape of every frame it is given, and whether its
    dark side is on the left (as stored)."""

    def score_video(self, frames, track, temporal, stride):
        return {"per_frame": [], "shapes": [(f.shape, bool(f[:, :4].mean() < f[:, -4:].mean())) for _, f in frames]}


@pytest.mark.parametrize("matrix, shape, said", [
    ((0,) * 9, ((16, 32, 3), True), "is not a rotation"),
    (MIRROR, ((16, 32, 3), True), "is not a rotation"),
    (QUARTER, ((32, 16, 3), False), "turned 270 degrees"),  # the control: a real rotation still turns the frames
])
def test_a_display_matrix_that_is_not_a_rotation_leaves_frames_as_stored(tmp_path, matrix, shape, said):
    """Cause 15: a display matrix of zeros (FFmpeg: 270 degrees) or a mirror (180 degrees) is ignored: the frames are
    used as stored and the video's record says so in `conversions`."""
    from dfedge.scoring import ScoreOptions, _video

    video = tiny_video(tmp_path / "v.mp4", matrix)
    record = _video(FrameShapes(), video, ScoreOptions(frames=3))
    assert record["shapes"] and set(record["shapes"]) == {shape}
    assert any(said in note for note in record.get("conversions", [])), record


def test_only_quarter_turns_are_read_from_a_display_matrix():
    """Cause 15 at its root: the turn a display matrix asks for is read only from a rotation by a quarter turn
    (times a uniform scale); zeros, mirrors, shears, other angles and projective rows give None (frames as stored)."""
    from dfedge.data.media import display_rotation

    assert display_rotation(IDENTITY) == 0
    assert display_rotation(QUARTER) == 270  # FFmpeg: -90, turned clockwise
    assert display_rotation((0, -0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000)) == 90
    assert display_rotation((-0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000)) == 180
    assert display_rotation((0, 0x20000, 0, -0x20000, 0, 0, 0, 0, 0x40000000)) == 270  # scaled 2x
    c = round(0x10000 / 2 ** 0.5)
    for matrix in [(0,) * 9, MIRROR, (0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000),
                   (0x10000, 0x8000, 0, 0, 0x10000, 0, 0, 0, 0x40000000),  # a shear
                   (c, c, 0, -c, c, 0, 0, 0, 0x40000000),  # 45 degrees
                   (0x10000, 0, 1, 0, 0x10000, 0, 0, 0, 0x40000000),  # a projective row
                   (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0), (1, 2, 3)]:
        assert display_rotation(matrix) is None, matrix


def edited(bundle: Path, tmp_path: Path, edit, name: str = "b") -> Path:
    """A copy of `bundle` whose manifest `edit(manifest)` changed (the manifest lists the other files, not itself:
    nothing to rehash)."""
    copy = Path(shutil.copytree(bundle, tmp_path / name, symlinks=True))
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def link_loop(m):  # a listed path through two links that point at each other (the links are made by the test)
    m["files"]["loop_a/x"] = {"sha256": "0" * 64, "bytes": 1}


def nested(m):  # JSON nested 100,000 deep (written as text by the test)
    m["deep"] = "NESTED"


def settings(**values):
    return lambda m: m["front_end"]["settings"].update(values)


@pytest.mark.parametrize("edit, where", [
    (lambda m: m["probe"]["guard"].update(tokens="ab"), "/probe/guard/tokens"),
    (lambda m: m["front_end"].update(settings=[1, 2]), "/front_end/settings"),
    (lambda m: m.update(target="nonesuch"), "/target: 'nonesuch'"),
    (lambda m: m["front_end"].update(detector="nonesuch"), "/front_end/detector"),
    (link_loop, "loop_a/x: a link"),
    (nested, "not JSON"),
    (settings(min_face=0), "/front_end/settings/min_face"),
    (settings(min_face=1), "/front_end/settings/min_face"),  # below P-Net's window: a 12x enlarged pyramid
    (lambda m: m["alignment"]["template"][0].__setitem__(0, float("nan")), "/alignment/template/0/0"),
    (settings(factor=1.0), "/front_end/settings/factor"),  # a pyramid that never ends
    (settings(factor="x"), "/front_end/settings/factor"),
    (settings(thresholds="ab"), "/front_end/settings/thresholds"),
    (settings(colour="red"), "/front_end/settings/colour"),
], ids=["guard-ab", "settings-list", "unknown-target", "unknown-detector", "link-loop", "nested-100k", "min-face-0",
        "min-face-1", "nan-template", "factor-1", "factor-str", "thresholds-str", "unknown-setting"])
def test_every_manifest_edit_is_refused_by_verify_in_one_line(onnx_bundle, tmp_path, edit, where):
    """Cause 16: guard tokens "ab", settings as a list, an unknown target or face detector, a listed path through a
    link loop, JSON nested 100k deep, min_face 0, a NaN template, face-detector settings of the wrong type or
    range: `verify` (which dfedge.load, bench.py and every command run first) refuses each in one line naming it."""
    from dfedge.device.errors import BundleError
    from dfedge.device.manifest import verify

    bundle = edited(onnx_bundle, tmp_path, edit)
    if edit is link_loop:
        (bundle / "loop_a").symlink_to("loop_b")
        (bundle / "loop_b").symlink_to("loop_a")
    if edit is nested:
        text = (bundle / "manifest.json").read_text()
        (bundle / "manifest.json").write_text(text.replace('"NESTED"', "[" * 100_000 + "]" * 100_000))
    with pytest.raises(BundleError) as e:
        verify(bundle)
    assert where in str(e.value) and "\n" not in str(e.value), str(e.value)[:300]


def test_a_schema_1_manifest_edit_is_refused_in_one_line(tmp_path):
    """Cause 16 in the previous schema: its reader typed fewer fields, so a guard of "ab" or a token grid that is
    not two numbers ended in a TypeError inside verify."""
    from dfedge.device.errors import BundleError
    from dfedge.device.manifest import verify

    old = json.loads((Path(__file__).parent / "fixtures" / "bundle-v1" / "manifest.json").read_text())
    for i, (edit, where) in enumerate([(lambda m: m["probe"].update(guard={"tokens": "ab", "row": [1.0, 9.0], "col": [1.0, 9.0]}),
                                        "/probe/guard/tokens"),
                                       (lambda m: m["labels"].update(token_grid=7.5), "/labels/token_grid")]):
        manifest = json.loads(json.dumps(old))
        edit(manifest)
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match=where):
            verify(tmp_path / str(i))


def test_an_edited_manifest_is_one_line_from_bench_py_and_dfedge_load(onnx_bundle, tmp_path):
    """Cause 16 at the two ways into a bundle: a face detector's pyramid factor of 1 (which never ends) is refused by
    the entry script (exit 2, one line on stderr) and by dfedge.load, before any image is read."""
    import subprocess
    import sys

    import dfedge
    from dfedge.device.errors import BundleError

    bundle = edited(onnx_bundle, tmp_path, settings(factor=1.0))
    with pytest.raises(BundleError, match="/front_end/settings/factor"):
        dfedge.load(bundle)
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    proc = subprocess.run([sys.executable, "bench.py", "--runs", "1", "--warmup", "0", "--image", str(photo), "--out",
                           str(tmp_path / "r.json")], cwd=bundle, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "/front_end/settings/factor" in proc.stderr


def test_runtime_options_come_from_the_runtimes_allow_list(onnx_bundle, tmp_path):
    """Cause 17: a manifest's runtime_options may set only what its runtime's Format row allows: OpenVINO's
    CACHE_DIR (compiled blobs written outside the bundle) or an ONNX Runtime session option is refused by verify;
    the options the kit writes (each format's own, OpenVINO's bf16 hint) pass."""
    from dfedge.device.errors import BundleError
    from dfedge.device.formats import FORMATS
    from dfedge.device.manifest import verify
    from dfedge.device.schema import schema_errors

    refused = [
        ("ov", lambda m: m.update(target="openvino", runtime_options={"CPU": {"CACHE_DIR": str(tmp_path / "blobs")}}),
         "/runtime_options/CPU/CACHE_DIR"),
        ("ort", lambda m: m["runtime_options"].update(optimized_model_filepath=str(tmp_path / "x.onnx")),
         "/runtime_options/optimized_model_filepath"),
        ("ep", lambda m: m["runtime_options"].update(providers=[["TensorrtExecutionProvider", {"trt_engine_cache_path": "/"}]]),
         "/runtime_options/providers/0"),
    ]
    for name, edit, where in refused:
        with pytest.raises(BundleError, match=where):
            verify(edited(onnx_bundle, tmp_path, edit, name))
    for fmt in FORMATS.values():
        assert schema_errors(fmt.options, fmt.allowed_options) == [], fmt.name
    verify(edited(onnx_bundle, tmp_path, lambda m: m.update(
        target="openvino", runtime_options={"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}}), "bf16"))


def test_the_torch_reference_of_a_benchmark_is_the_bundles_verified_model(onnx_bundle, tmp_path, monkeypatch):
    """Cause 17: `dfedge bench` times as "torch" the model whose weights are the manifest's verified `sources`; a
    manifest whose export_options name another (preset full on a toy bundle: a random 1.9 GB model) gets no
    reference, and the torch row says why in one line."""
    from dfedge.runtimes import benchmark

    manifest = json.loads((onnx_bundle / "manifest.json").read_text())
    spec = benchmark.reference_spec(manifest)
    assert isinstance(spec, dict) and spec["preset"] == "toy"
    bundle = edited(onnx_bundle, tmp_path, lambda m: m["export_options"].update(preset="full"))
    timed = []
    monkeypatch.setattr(benchmark, "bench_bundle", lambda b, how: {"status": "ok", "bundle": b.name,
                                                                   "latency_ms": {"p50": 1.0}})
    monkeypatch.setattr(benchmark, "_run_json", lambda cmd, what: timed.append(cmd) or {"status": "ok"})
    result = benchmark.bench_set([bundle], benchmark.BenchRun(runs=1, warmup=0), benchmark.reference_spec)
    assert timed == [], "a torch model was timed from the manifest's free-form export options"
    (reference,) = result["references"]
    assert reference["status"] == "not timed" and "dinov3 weights" in reference["reason"], reference
    assert "\n" not in reference["reason"] and "speedup_vs_torch" not in result["results"][0]


def test_score_refuses_settings_that_would_end_the_batch_part_way(tmp_path):
    """Cause 18: `--fps nan` (or inf) and `--top -1` are refused in one line before anything is read (NaN passed
    the `<= 0` check and ended the batch part-way; -1 listed every token)."""
    from typer.testing import CliRunner

    from dfedge.cli import app

    video = tiny_video(tmp_path / "v.mp4", IDENTITY)
    for args, said in ((["--fps", "nan"], "--fps a positive number"), (["--fps", "inf"], "--fps a positive number"),
                       (["--top", "-1"], "--top must be at least 0")):
        result = CliRunner().invoke(app, ["score", str(video), *args])
        text = " ".join(result.output.replace("│", " ").split())
        assert result.exit_code == 2 and said in text and "Traceback" not in text, result.output


def test_an_echoed_input_is_at_most_80_characters(onnx_bundle, tmp_path):
    """Cause 18: a 10 MB TOML key or value (and a 10 MB manifest key) is echoed in at most 80 characters with an
    ellipsis, not as a 10 MB error line (device.errors.shown, the one rule)."""
    from typer.testing import CliRunner

    from dfedge.cli import app
    from dfedge.device.errors import BundleError
    from dfedge.device.manifest import verify

    key = "k" * 10_000_000
    toml = tmp_path / "b.toml"
    toml.write_text(f'{key} = 1\n')
    result = CliRunner().invoke(app, ["build", "--config", str(toml), "--out", str(tmp_path / "dist")])
    assert result.exit_code == 2 and "unknown key 'kkk" in result.output and len(result.output) < 2000, len(result.output)
    assert "k" * 80 not in result.output and "…" in result.output
    toml.write_text(f'preset = "{key}"\n')  # a value: echoed by the model's own check (DetectorSpec)
    result = CliRunner().invoke(app, ["build", "--config", str(toml), "--out", str(tmp_path / "dist")])
    assert result.exit_code == 2 and "unknown preset 'kkk" in result.output and len(result.output) < 2000, len(result.output)
    bundle = edited(onnx_bundle, tmp_path, lambda m: m["labels"].update({key: 1}))
    with pytest.raises(BundleError) as e:
        verify(bundle)
    assert "not allowed here" in str(e.value) and len(str(e.value)) < 400, len(str(e.value))


def test_a_second_build_of_the_same_set_is_refused_in_one_line(tmp_path):
    """Cause 18: while one build, export or quantize writes dist/NAME (it holds dist/.NAME.lock), a second on the same
    set is refused in one line before it touches anything: the first's set, log and staging folder stay as they are."""
    import fcntl
    import os

    from typer.testing import CliRunner

    from dfedge.cli import app

    dist = tmp_path / "dist"
    (dist / "toy").mkdir(parents=True)
    (dist / "toy" / "report.md").write_text("the winner's report")
    (dist / "toy.export.log").write_text("the winner's converter output")
    (dist / ".toy.partial" / "toy").mkdir(parents=True)
    fd = os.open(dist / ".toy.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as the running build holds it (another process: another open file)
    try:
        result = CliRunner().invoke(app, ["export", "--target", "onnx", "--precision", "fp32", "--out", str(dist)])
    finally:
        os.close(fd)
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and f"another build is writing {dist / 'toy'}" in text, result.output
    assert len(result.output.strip().splitlines()) <= 2 and "Traceback" not in result.output
    assert (dist / "toy" / "report.md").read_text() == "the winner's report"
    assert (dist / "toy.export.log").read_text() == "the winner's converter output"
    assert (dist / ".toy.partial" / "toy").is_dir()
