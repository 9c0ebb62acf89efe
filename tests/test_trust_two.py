"""Issue 31, "trust, round two": each cause has a test named after its promise (docs/security.md maps them)."""

from __future__ import annotations

import json
import zlib
import struct
from pathlib import Path

import numpy as np
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
