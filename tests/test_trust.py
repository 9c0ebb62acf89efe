"""The hostile and careless inputs of issue 17, through the command line: no silent wrong score, no data loss, a
bounded cost, and one clear line (exit 2) instead of a traceback. docs/security.md maps each case to its test."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.data.synthetic import toy_sample
from dfedge.models.factory import DetectorSpec, build_detector, shipped_file
from dfedge.models.region import save_probe

runner = CliRunner()


def crop(path: Path, index: int = 0) -> Path:
    Image.fromarray(toy_sample(index, "test").image).save(path)
    return path


def one_line_error(result, *fragments: str) -> None:
    """Exit 2, no traceback, the message containing every fragment (a usage error's box unwrapped)."""
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in text and all(f in text for f in fragments), text


def records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.strip().splitlines() if line.startswith("{")]


# --- no silent wrong score -------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", [["--region", "eyes"], ["--head", "cls"]])
def test_no_random_probe_scores_unless_asked(tmp_path, option):
    c = crop(tmp_path / "c.png")
    one_line_error(runner.invoke(app, ["score", "--aligned", str(c), *option]), "no probe for the", "--random-probe")
    asked = runner.invoke(app, ["score", "--aligned", str(c), *option, "--random-probe"])
    assert asked.exit_code == 0, asked.output
    assert all(r["random_weights"] == ["probe"] for r in records(asked)) and "seeded random probe" in asked.output


def test_the_shipped_model_says_nothing_is_random(tmp_path):
    result = runner.invoke(app, ["score", "--aligned", str(crop(tmp_path / "c.png"))])
    assert result.exit_code == 0 and "random_weights" not in records(result)[0]


def test_a_probe_with_nan_is_refused(tmp_path):
    probe = build_detector(DetectorSpec()).probe
    with torch.no_grad():
        probe.bias.fill_(float("nan"))
    save_probe(probe, tmp_path / "nan.safetensors")
    result = runner.invoke(app, ["score", "--aligned", str(crop(tmp_path / "c.png")), "--probe", str(tmp_path / "nan.safetensors")])
    one_line_error(result, "nan.safetensors: the probe holds NaN or infinite values")


def test_the_tiny_preset_needs_and_states_random_weights(tmp_path):
    c = crop(tmp_path / "c.png")
    one_line_error(runner.invoke(app, ["score", "--aligned", str(c), "--preset", "tiny"]), "--random-weights")
    result = runner.invoke(app, ["score", "--aligned", str(c), "--preset", "tiny", "--random-weights"])
    assert result.exit_code == 0, result.output
    assert records(result)[0]["random_weights"] == ["dinov3", "parser", "probe"] and "seeded random" in result.output


def test_fit_probe_rate_and_make_toy_count_are_checked_first(tmp_path):
    out = tmp_path / "p.safetensors"
    result = runner.invoke(app, ["fit-probe", "--data", "toy:train:8", "--threshold", "fpr:2", "--out", str(out)])
    one_line_error(result, "fpr:X with X a false-positive rate between 0 and 1")
    assert not out.exists()
    one_line_error(runner.invoke(app, ["make-toy", str(tmp_path / "toy"), "--count", "-5"]), "must be at least 1")
    assert not (tmp_path / "toy").exists()


# --- pins ----------------------------------------------------------------------------------------------------------


def test_pins_are_full_sha256s_on_every_command(tmp_path):
    from dfedge.models.checkpoint import sha256_file

    c = crop(tmp_path / "c.png")
    real = sha256_file(shipped_file("toy", "dinov3"))
    ok = runner.invoke(app, ["score", "--aligned", str(c), "--dinov3-sha256", real, "--probe-sha256",
                             sha256_file(shipped_file("toy", "probe"))])
    assert ok.exit_code == 0, ok.output
    one_line_error(runner.invoke(app, ["score", "--aligned", str(c), "--dinov3-sha256", real[:8]]), "all 64 hex digits")
    one_line_error(runner.invoke(app, ["score", "--aligned", str(c), "--parser-sha256", "0" * 64]),
                   "toy_parser.safetensors: SHA-256", "does not match the pinned")
    one_line_error(runner.invoke(app, ["score", "--aligned", str(c), "--region-head-sha256", "0" * 64]),
                   "--region-head-sha256 given, but this detector reads no region head file")
    config = tmp_path / "build.toml"
    config.write_text(f'dinov3_sha256 = "{real[:12]}"\n')
    one_line_error(runner.invoke(app, ["build", "--config", str(config), "--out", str(tmp_path / "d")]), "all 64 hex digits")
    for command in (["export"], ["reference"], ["fit-probe"], ["distill-region-head"], ["region-index-report"]):
        help_text = runner.invoke(app, [*command, "--help"], terminal_width=200).output
        assert "--dinov3-sha256" in help_text and "--parser-sha256" in help_text, command


# --- data loss and cost --------------------------------------------------------------------------------------------


def test_an_output_never_replaces_an_input(tmp_path):
    c = crop(tmp_path / "x.png")
    before = c.read_bytes()
    one_line_error(runner.invoke(app, ["score", "--aligned", str(c), "-o", str(c)]), "x.png: is one of the inputs")
    one_line_error(runner.invoke(app, ["score", "--aligned", str(tmp_path), "-o", str(c)]), "is one of the inputs")
    assert c.read_bytes() == before


def png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR chunk, then a truncated IDAT: what a header-only check reads (decoding it fails)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)[:20])


def test_image_size_is_checked_from_the_header(tmp_path):
    big, bomb = tmp_path / "big.png", tmp_path / "bomb.png"
    big.write_bytes(png_header(12000, 12000))
    bomb.write_bytes(png_header(20000, 20000))
    result = runner.invoke(app, ["score", str(big), str(bomb)])
    assert result.exit_code == 0, result.output
    first, second = records(result)
    assert first["status"] == "unreadable" and "12000x12000 pixels to decode, over the limit of 64 MP" in first["reason"]
    assert second["status"] == "unreadable" and "more pixels than Pillow opens" in second["reason"]
    small = tmp_path / "small.png"
    Image.new("RGB", (1200, 1000)).save(small)
    limited = records(runner.invoke(app, ["score", str(small), "--max-pixels", "1000000"]))[0]
    assert limited["status"] == "unreadable" and "1200x1000 pixels to decode, over the limit of 1 MP" in limited["reason"]


def test_fifos_and_devices_are_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["score", str(fifo), "/dev/zero"])
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in records(result)] == ["unreadable", "unreadable"]
    assert all("not a regular file" in r["reason"] for r in records(result))


def test_records_stream_input_by_input(tmp_path, capsys):
    """Each record is written before the next input is read: the second file, deleted once the first record is
    out, is seen as missing."""
    from dfedge.runtimes import from_torch
    from dfedge.scoring import ScoreOptions, score_paths, write_records

    a, b = crop(tmp_path / "a.png", 0), crop(tmp_path / "b.png", 1)

    def watched():
        records = score_paths(from_torch(build_detector(DetectorSpec())), [a, b], ScoreOptions(aligned=True))
        yield next(records)
        assert capsys.readouterr().out.count("\n") == 1, "the first record was not written before the next input"
        b.unlink()
        yield from records

    write_records(watched(), None, [a, b])
    assert json.loads(capsys.readouterr().out)["status"] == "unreadable"


def test_names_stay_inside_out_and_settings_are_checked(tmp_path):
    out = tmp_path / "dist"
    one_line_error(runner.invoke(app, ["export", "--name", "../../x", "--out", str(out)]), "name = '../../x'")
    one_line_error(runner.invoke(app, ["export", "--parity-samples", "0", "--out", str(out)]), "parity_samples = 0: must be at least 1")
    one_line_error(runner.invoke(app, ["build", "--max-auc-drop", "-1", "--out", str(out)]), "is not a fraction from 0 to 1")
    one_line_error(runner.invoke(app, ["build", "--validation-pack", "-1", "--out", str(out)]), "validation_pack = -1: must be at least 0")
    (tmp_path / "file").write_text("x")
    one_line_error(runner.invoke(app, ["export", "--out", str(tmp_path / "file")]), "file: --out is a file, not a folder")
    config = tmp_path / "build.toml"
    config.write_text("targets = 5\n")
    one_line_error(runner.invoke(app, ["build", "--config", str(config), "--out", str(out)]), "targets = 5: expected a name or a list of names")
    one_line_error(runner.invoke(app, ["build", "--config", str(tmp_path), "--out", str(out)]), "cannot read it as a TOML file")
    assert not out.exists() and not (tmp_path.parent / "x").exists()


def test_output_paths_errors_name_the_users_path(tmp_path):
    c = crop(tmp_path / "c.png")
    (tmp_path / "folder").mkdir()
    one_line_error(runner.invoke(app, ["score", "--aligned", str(c), "-o", str(tmp_path / "folder")]),
                   "folder: is a folder, not a file")
    (tmp_path / "plain").write_text("x")
    result = runner.invoke(app, ["score", "--aligned", str(c), "-o", str(tmp_path / "plain" / "out.jsonl")])
    one_line_error(result, str(tmp_path / "plain" / "out.jsonl"))
    assert ".tmp" not in result.output


def test_unknown_probe_metadata_is_one_line(tmp_path):
    from dfedge.models.checkpoint import read_safetensors, save_safetensors

    tensors, meta = read_safetensors(shipped_file("toy", "probe"))
    info = json.loads(meta["dfedge_probe"])
    save_safetensors(tmp_path / "p.safetensors", tensors, {"dfedge_probe": json.dumps(dict(info, colour="red"))})
    result = runner.invoke(app, ["score", "--aligned", str(crop(tmp_path / "c.png")), "--probe", str(tmp_path / "p.safetensors")])
    one_line_error(result, "p.safetensors: bad 'dfedge_probe' metadata", "colour")


def test_sigterm_removes_every_temporary_folder(tmp_path):
    """`dfedge export` killed with SIGTERM while converting: its staging folder (the bundles' temporary folders
    inside) is gone, and nothing was shipped."""
    out = tmp_path / "dist"
    proc = subprocess.Popen([sys.executable, "-m", "dfedge.cli", "export", "--target", "onnx", "--precision", "fp32",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".toy.partial/toy/.onnx-fp32.*")):
        time.sleep(0.05)
    assert list(out.glob(".toy.partial/toy/.onnx-fp32.*")), "the export never reached its bundle's temporary folder"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    left = [p.relative_to(out).as_posix() for p in out.rglob("*")]
    assert not [p for p in left if p.startswith(".") or "/." in p] and not (out / "toy").exists(), left
