import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.models.farl import PRESETS, FarlParser

runner = CliRunner()


def write_crop(path, size=448, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_info_prints_parameter_counts_and_gflops():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "303.15 M" in result.output  # DINOv3 ViT-L/16
    assert "1,043.56" in result.output  # fused graph GFLOPs at full size
    assert "preset 'tiny'" in result.output
    assert "parser share of compute: 87.9%" in result.output


def test_score_aligned_writes_one_json_line_per_crop(tmp_path):
    paths = [write_crop(tmp_path / f"c{i}.png", seed=i) for i in range(2)]
    result = runner.invoke(app, ["score", "--aligned", *map(str, paths)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["file"] for r in lines] == [str(p) for p in paths] and all(r["kind"] == "crop" for r in lines)
    assert all({"probability", "logit", "decision", "region_tokens", "status", "reason"} <= set(r) for r in lines)


def test_score_records_a_wrong_size_crop_as_unreadable(tmp_path):
    good = write_crop(tmp_path / "good.png")
    bad = write_crop(tmp_path / "bad.png", size=300)
    result = runner.invoke(app, ["score", "--aligned", str(good), str(bad)])
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert first["status"] != "unreadable" and second["status"] == "unreadable"
    assert second["reason"] == f"{bad}: expected a 448x448 aligned face crop, got 300x300" and second["probability"] is None


def test_convert_parser_command(tmp_path):
    parser = FarlParser(PRESETS["tiny"])
    for seq, scale in zip(parser.head.head.psp_modules, parser.cfg.pool_scales):
        seq[0] = nn.AdaptiveAvgPool2d(scale)
    src = tmp_path / "facer_lapa_jit.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(parser).save(str(src))
    dst = tmp_path / "parser.safetensors"
    result = runner.invoke(app, ["convert-parser", str(src), str(dst)])
    assert result.exit_code == 0, result.output
    assert dst.exists() and dst.with_suffix(".json").exists()
    crop = write_crop(tmp_path / "c.png")
    result = runner.invoke(app, ["score", "--aligned", str(crop), "--parser", str(dst)])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, ["convert-parser", str(tmp_path / "missing.pt"), str(dst)])
    assert bad.exit_code == 2 and "missing.pt: no such file" in bad.output


def test_make_toy_then_score_offline(tmp_path):
    result = runner.invoke(app, ["make-toy", str(tmp_path / "faces"), "--count", "4"])
    assert result.exit_code == 0, result.output
    crops = sorted((tmp_path / "faces").glob("*/*.png"))
    assert len(crops) == 4
    result = runner.invoke(app, ["score", "--aligned", str(tmp_path / "faces")])  # a folder of crops
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(records) == 4 and all(r["status"] == "ok" and r["region_tokens"] > 0 for r in records)  # mouths found


@pytest.mark.heavy
def test_fit_probe_command_on_toy_data(tmp_path):
    out = tmp_path / "p.safetensors"
    result = runner.invoke(app, ["fit-probe", "--data", "toy:train:40", "--val", "toy:val:24", "--no-cache",
                                 "--head", "region", "--head", "cls", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p-region.safetensors").exists() and (tmp_path / "p-cls.safetensors").exists()
    assert "toy:train:40:mouth" in result.output


def test_info_prints_gflops_per_component_for_every_region_index_rung():
    result = runner.invoke(app, ["info", "--preset", "full"])
    assert result.exit_code == 0, result.output
    assert "region-index ladder" in result.output
    for rung in ("exact", "lite-head", "parser-224", "distilled"):
        assert rung in result.output
    assert "125.78" in result.output and "8.3×" in result.output  # distilled: DINOv3 + a 0.10 GFLOP head


def test_region_index_report_writes_markdown_and_json(tmp_path):
    out = tmp_path / "ladder.md"
    result = runner.invoke(app, ["region-index-report", "--data", "toy:test:8", "--region-index", "lite-head",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| exact | 100.00% |" in text and "| lite-head |" in text and "ΔAUC" in text
    record = json.loads(out.with_suffix(".json").read_text())
    assert [r["rung"] for r in record["rungs"]] == ["exact", "lite-head"]
    assert record["rungs"][1]["gflops_full"] < record["rungs"][0]["gflops_full"]


def test_export_reports_a_failing_converter_and_keeps_its_traceback(tmp_path, monkeypatch):
    import dataclasses

    from dfedge.targets import TARGETS

    def crashing(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setitem(TARGETS, "onnx", dataclasses.replace(TARGETS["onnx"], exporter=crashing))
    result = runner.invoke(app, ["export", "--target", "onnx", "--precision", "fp32", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "❌ RuntimeError: converter crashed" in result.output
    log = (tmp_path / "toy" / "export.log").read_text()
    assert "Traceback" in log and "RuntimeError: converter crashed" in log
    assert not (tmp_path / "toy" / "onnx-fp32").exists()


def test_a_distilled_export_needs_the_region_head_not_the_parser(tmp_path):
    """Without --data nothing runs the exact detector: a parser-free export of a preset without shipped weights asks
    for the DINOv3 weights and the region head only (here they are not readable, which is the next error)."""
    dinov3, head = tmp_path / "d.pth", tmp_path / "h.safetensors"
    dinov3.write_bytes(b"not weights")
    head.write_bytes(b"not weights")
    missing = runner.invoke(app, ["export", "--preset", "full", "--region-index", "distilled", "--dinov3", str(dinov3),
                                  "--target", "onnx", "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "pass --dinov3 and --region-head" in missing.output
    given = runner.invoke(app, ["export", "--preset", "full", "--region-index", "distilled", "--dinov3", str(dinov3),
                                "--region-head", str(head), "--target", "onnx", "--out", str(tmp_path)])
    assert given.exit_code == 2 and "--parser" not in given.output and "d.pth" in given.output
