"""Issue 31, causes 12-14: what a parser archive may inflate to, how many workers and threads a run may start, and
a Ray run's end on SIGTERM (docs/security.md maps them)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn

from dfedge.models import farl
from dfedge.models.checkpoint import CheckpointError


class Weights(nn.Module):
    def __init__(self, numel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(numel))


def deflated_archive(numel: int, path: Path, inflated: int = 0) -> Path:
    """A TorchScript archive of one zero tensor, every entry deflated. `inflated`: the storage's deflate stream
    holds that many zero bytes instead, while the zip's directory (both headers) keeps the tensor's size and CRC."""
    plain = path.with_suffix(".stored")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Weights(numel)).save(str(plain))
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            storage = info.filename.endswith("/data/0")
            dst.writestr(info.filename, bytes(inflated) if storage and inflated else src.read(info))
    if inflated:  # crc at +14 / +16 and size at +22 / +24 of the local / central header
        raw, size = bytearray(path.read_bytes()), numel * 4
        fields = zlib.crc32(bytes(size)).to_bytes(4, "little"), size.to_bytes(4, "little")
        with zipfile.ZipFile(path) as zf:
            local = next(i for i in zf.infolist() if i.filename.endswith("/data/0")).header_offset
        central = raw.index(b"PK\x01\x02")
        while int.from_bytes(raw[central + 42: central + 46], "little") != local:  # the entry's central record
            central = raw.index(b"PK\x01\x02", central + 4)
        for header, crc_at, size_at in ((local, 14, 22), (central, 16, 24)):
            raw[header + crc_at: header + crc_at + 4], raw[header + size_at: header + size_at + 4] = fields
        path.write_bytes(bytes(raw))
    plain.unlink()
    return path


def refusal_and_peak(call) -> tuple[str, int]:
    """The CheckpointError `call` raises, and the most bytes Python held (zlib's output included) until then."""
    tracemalloc.start()
    try:
        call()
    except CheckpointError as e:
        return str(e), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    raise AssertionError("not refused")


def test_a_parser_archive_never_inflates_past_what_the_largest_parser_needs(tmp_path, monkeypatch):
    """Cause 12: a parser archive is bounded by the largest parser the kit reads (here the tiny preset alone, 3.4 MB):
    32 MB of zeros (32 KB deflated) is refused from the zip's directory before anything is inflated, and a storage
    whose deflate stream holds 32 MB where the directory says 16 bytes is inflated no further than 16 bytes."""
    monkeypatch.setattr(farl, "PRESETS", {"tiny": farl.PRESETS["tiny"]})
    honest = deflated_archive(8 << 20, tmp_path / "honest.pt")
    lying = deflated_archive(4, tmp_path / "lying.pt", inflated=32 << 20)
    assert honest.stat().st_size < 200_000 and lying.stat().st_size < 200_000
    farl.expected_shapes(farl.PRESETS["tiny"])  # torch's first meta-device model imports sympy: not the archive's cost
    for path, refusal in ((honest, "declares 33,5.* bytes inflated, over the 3,4.* its largest model can need"),
                          (lying, "not a FaRL face-parser state_dict")):
        message, peak = refusal_and_peak(lambda path=path: farl.load_parser(path))
        assert peak < 4 << 20, f"{path.name}: {peak:,} bytes held"
        assert re.search(refusal, message) and "\n" not in message, message


def session(sid: int) -> list[int]:
    """The processes of session `sid` (a command started with start_new_session: everything it started, however
    deep, unless a process made its own session)."""
    out = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid:
                out.append(pid)
    return out


@pytest.mark.heavy  # a local Ray and a pool of two actors: about 15 s on 2 cores
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="processes are listed from /proc")
def test_sigterm_during_a_ray_run_exits_143_and_leaves_no_ray_process(tmp_path):
    """Cause 14: `dfedge reference --engine ray` sent SIGTERM once its pool has returned a batch exits 143 (the kit's
    clean-up ran, not Ray's abort) and no process of the run stays (raylet, GCS, agents, actors, nor a second Ray
    started by the run's threads as the first one stopped)."""
    pytest.importorskip("ray")
    out = tmp_path / "ref.scores"
    run = subprocess.Popen([sys.executable, "-m", "dfedge.cli", "reference", "--data", "toy:val:40", "--engine", "ray",
                            "--workers", "2", "--out", str(out)], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("ref.scores.partial/*/shard-*.npz")):  # the pool is running: a batch is back
            assert run.poll() is None, run.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no batch back in 4 minutes"
            time.sleep(0.2)
        assert len(session(run.pid)) > 3  # the command, its raylet, GCS, actors ...
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 143, run.stderr.read().decode()[-2000:]
        deadline = time.monotonic() + 15  # actors end a moment after their raylet
        while (left := session(run.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, [Path(f"/proc/{pid}/comm").read_text().strip() for pid in left]
        assert not out.exists()
    finally:  # whatever failed above, nothing of this run stays behind
        for pid in session(run.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        run.wait(timeout=30)
        run.stderr.close()
