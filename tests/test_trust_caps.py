"""Issue 31, causes 12-14: what a parser archive may inflate to, how many workers and threads a run may start, and
a Ray run's end on SIGTERM (docs/security.md maps them)."""

from __future__ import annotations

import contextlib
import json
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
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.config import make_config, read_config
from dfedge.eval.scores import load_scores
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


def cpus() -> int:
    """This host's CPUs, as the tests count them: the affinity, within a cgroup v2 quota."""
    count = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        count = min(count, max(1, -(-int(quota) // int(period))))
    return count


def capped_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "capped" in line]


def test_threads_are_capped_to_what_the_host_has(onnx_bundle, tmp_path, caplog):
    """Cause 13: a thread count over this host's CPUs is capped to them, with one line, wherever it is read: bench.py's
    --threads (on the device), the kit's --threads, `threads` in a build file; a count that is not a whole number,
    or is negative, is refused in one line naming the option or key."""
    most = cpus()
    bench_py = [sys.executable, str(onnx_bundle / "bench.py"), "--runs", "1", "--warmup", "0"]
    out = tmp_path / "bench.json"
    run = subprocess.run([*bench_py, "--threads", "100000", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert capped_lines(run.stderr) == [f"--threads 100000 capped to {most}, the CPUs of this device"]
    assert json.loads(out.read_text())["threads"] == most
    for bad in ("1e23", "nan", "2.5", "-1"):
        run = subprocess.run([*bench_py, "--threads", bad, "--out", str(out)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and "--threads" in run.stderr.strip().splitlines()[-1], (bad, run.stderr)

    result = CliRunner().invoke(app, ["bench", str(onnx_bundle), "--threads", "100000", "--runs", "1", "--warmup", "0",
                                      "--no-reference", "--json", str(tmp_path / "kit.json")])
    assert result.exit_code == 0, result.output
    assert caplog.messages == [f"--threads 100000 capped to {most}, the CPUs of this host"]
    assert [r["threads"] for r in json.loads((tmp_path / "kit.json").read_text())["results"]] == [most]

    caplog.clear()
    toml = tmp_path / "build.toml"
    toml.write_text("threads = 100000\n")
    assert make_config(read_config(toml)).threads == most
    assert caplog.messages == [f"threads 100000 capped to {most}, the CPUs of this host"]
    for bad in ("1e23", "inf", "nan", "2.5", "-1", '"4"'):
        toml.write_text(f"threads = {bad}\n")
        with pytest.raises(ValueError, match=r"^threads = \S+: (expected int|must be at least 0)$"):
            make_config(read_config(toml))


def session(sid: int) -> list[int]:
    """The processes of session `sid` (a command started with start_new_session: everything it started, however
    deep, unless a process made its own session)."""
    out = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid:
                out.append(pid)
    return out


@contextlib.contextmanager
def dfedge_session(*args: str):
    """`dfedge ARGS` started in a session of its own (stderr piped): whatever happens, every process of the session
    is killed at the end (the command, and what it started: a local Ray's raylet, GCS, agents, actors)."""
    run = subprocess.Popen([sys.executable, "-m", "dfedge.cli", *args], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield run
    finally:
        for pid in session(run.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        run.wait(timeout=30)
        run.stderr.close()


@pytest.mark.heavy  # a local Ray: about 15 s on 2 cores
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="processes are listed from /proc")
def test_ray_workers_are_capped_to_what_the_cluster_has(tmp_path):
    """Cause 13: `--engine ray --workers 1000` starts one actor per CPU of the (local) Ray cluster, and says so in
    one line; the scores record the pool it ran."""
    pytest.importorskip("ray")
    out = tmp_path / "ref.scores"
    with dfedge_session("reference", "--data", "toy:val:8", "--engine", "ray", "--workers", "1000", "--out", str(out)) as run:
        _, stderr = run.communicate(timeout=120)  # 1000 actors never get there
    assert run.returncode == 0, stderr
    assert capped_lines(stderr) == [f"--workers 1000 capped to {cpus()}, one per CPU of the Ray cluster"]
    assert load_scores(out).header["engine"]["workers"] == cpus()


@pytest.mark.heavy  # a local Ray and a pool of two actors: about 15 s on 2 cores
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="processes are listed from /proc")
def test_sigterm_during_a_ray_run_exits_143_and_leaves_no_ray_process(tmp_path):
    """Cause 14: `dfedge reference --engine ray` sent SIGTERM once its pool has returned a batch exits 143 (the kit's
    clean-up ran, not Ray's abort) and no process of the run stays (raylet, GCS, agents, actors, nor a second Ray
    started by the run's threads as the first one stopped)."""
    pytest.importorskip("ray")
    out = tmp_path / "ref.scores"
    with dfedge_session("reference", "--data", "toy:val:40", "--engine", "ray", "--workers", "2", "--out", str(out)) as run:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("ref.scores.partial/*/shard-*.npz")):  # the pool is running: a batch is back
            assert run.poll() is None, run.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no batch back in 4 minutes"
            time.sleep(0.2)
        assert len(session(run.pid)) > 3  # the command, its raylet, GCS, actors ...
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 143, run.stderr.read()[-2000:]
        deadline = time.monotonic() + 15  # actors end a moment after their raylet
        while (left := session(run.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, [Path(f"/proc/{pid}/comm").read_text().strip() for pid in left]
        assert not out.exists()
