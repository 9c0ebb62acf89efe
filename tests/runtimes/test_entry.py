"""A bundle's entry script (bench.py, from dfedge/device/entry.py) checks every file of the bundle with the standard
library before it imports anything of it: a changed module of its device package, or a module planted beside it
named like one it imports, never runs; and running it writes nothing into the bundle."""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bundle(onnx_bundle):
    return onnx_bundle


def run(bundle: Path, *args: str):
    return subprocess.run([sys.executable, "bench.py", "--runs", "1", "--warmup", "0", *args], cwd=bundle,
                          capture_output=True, text=True)


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def test_the_entry_script_runs_the_bundle_and_writes_nothing_into_it(bundle, tmp_path):
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    before = files(b)
    proc = run(b, "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "ok"
    assert files(b) == before  # no bytecode cache, no result file inside the bundle


def test_a_changed_module_of_the_device_package_never_runs(bundle, tmp_path):
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    marker = tmp_path / "ran"
    module = b / "dfedge_device" / "verdict.py"
    module.write_text(f"open({str(marker)!r}, 'w').write('x')\n" + module.read_text())
    proc = run(b, "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and "verdict.py: SHA-256 differs from the manifest" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not marker.exists()


@pytest.mark.parametrize("name", ["numpy.py", "json.py", "dfedge_device_x.py"])
def test_a_module_planted_beside_the_entry_script_never_runs(bundle, tmp_path, name):
    """The bundle's folder is first on sys.path when `python bench.py` runs: the entry script takes it off before
    its first import, and the planted file is refused as unlisted."""
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    marker = tmp_path / "ran"
    (b / name).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    proc = run(b, "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and f"{name}: not listed in the manifest" in proc.stderr
    assert not marker.exists()


def test_a_bytecode_cache_beside_a_module_is_never_read(bundle, tmp_path):
    """A .pyc planted where Python would look for one (dfedge_device/__pycache__/) never runs: the entry script
    refuses it as an unlisted file before it imports anything (issue 31, cause 2)."""
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    marker = tmp_path / "ran"
    evil = tmp_path / "evil"
    shutil.copytree(b / "dfedge_device", evil / "dfedge_device")
    head, tail = (b / "dfedge_device" / "verdict.py").read_text().split("from __future__ import annotations\n", 1)
    (evil / "dfedge_device" / "verdict.py").write_text(head + "from __future__ import annotations\n"
                                                       f"open({str(marker)!r}, 'w').write('x')\n" + tail)
    source = b / "dfedge_device" / "verdict.py"
    cache = b / "dfedge_device" / "__pycache__" / f"verdict.{sys.implementation.cache_tag}.pyc"
    cache.parent.mkdir()
    st = source.stat()
    py_compile.compile(str(evil / "dfedge_device" / "verdict.py"), cfile=str(cache), dfile=str(source))
    os.utime(evil / "dfedge_device" / "verdict.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    # a cache that claims the checked source's size and time: what Python's own loader would accept
    data = bytearray(cache.read_bytes())
    data[8:12] = int(st.st_mtime).to_bytes(4, "little")
    data[12:16] = (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    cache.write_bytes(bytes(data))
    plain = subprocess.run([sys.executable, "-c", "import dfedge_device.verdict"], cwd=b, capture_output=True, text=True)
    assert plain.returncode == 0 and marker.exists(), plain.stderr  # Python's own import would run it
    marker.unlink()
    proc = run(b, "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and "not listed in the manifest" in proc.stderr, proc.stderr
    assert not marker.exists()
