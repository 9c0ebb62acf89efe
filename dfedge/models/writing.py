"""Writing files so that nothing is left half-written: atomic writes, and the temporary paths a terminating signal
removes (the command line's SIGTERM/SIGINT handler, `terminate`). Without torch: the command line installs the
handler before it imports any model code."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from ..device.files import outside_bundles

_TEMPORARY: dict[str, None] = {}  # what is being written (files, bundle and build folders), removed on SIGTERM
_STOPS: list = []  # what a terminating signal stops before the command exits (the processes of a local Ray)
_SIGNAL = {"critical": 0, "pending": 0}  # inside uninterrupted(): how deep, and a signal that arrived meanwhile


@contextlib.contextmanager
def temporary(path: str | Path):
    """Register `path` (a file or folder being written) for the duration: a terminating signal removes it."""
    key = str(path)
    _TEMPORARY[key] = None
    try:
        yield Path(path)
    finally:
        _TEMPORARY.pop(key, None)


def track(path: str | Path) -> None:
    """Register `path` until the process ends (a folder kept across jobs): a terminating signal removes it."""
    _TEMPORARY[str(path)] = None


def on_termination(stop) -> None:
    """Call `stop()` when a terminating signal ends the command (`terminate`), before its temporary paths are removed:
    for what os._exit would leave running, such as the processes of a Ray this process started."""
    _STOPS.append(stop)


@contextlib.contextmanager
def uninterrupted():
    """A few renames that must all happen or none (replacing a folder): a signal waits for their end."""
    _SIGNAL["critical"] += 1
    try:
        yield
    finally:
        _SIGNAL["critical"] -= 1
        if not _SIGNAL["critical"] and _SIGNAL["pending"]:
            terminate(_SIGNAL["pending"])


def terminate(signum: int, frame=None) -> None:
    """The SIGTERM/SIGINT handler of the command line: stop what `on_termination` names, remove every registered
    temporary path, then exit 128 + the signal. It exits at once (os._exit) rather than raising through the torch or
    converter code that may be running, which can crash half-way; every write the kit makes goes through temporary()
    or is atomic."""
    if _SIGNAL["critical"]:
        _SIGNAL["pending"] = signum
        return
    for stop in _STOPS:
        with contextlib.suppress(Exception):  # the exit and the clean-up happen whatever one stop raises
            stop()
    for key in list(_TEMPORARY):
        if os.path.isdir(key) and not os.path.islink(key):
            shutil.rmtree(key, ignore_errors=True)
        elif os.path.lexists(key):
            os.unlink(key)
    os._exit(128 + signum)


_INPUTS: set[Path] = set()  # the files the running command has read as its inputs (lists, scores)
_COMMAND = [False]  # a CLI command is running (library calls outside one track nothing)


def reading(path: str | Path) -> Path:
    """Note `path` as one of the running command's inputs: none of its outputs may replace it (atomic_write)."""
    if _COMMAND[0]:
        _INPUTS.add(Path(path).resolve())
    return Path(path)


def command_inputs(running: bool) -> None:
    """A CLI command starts (True) or ends (False): its inputs are tracked from its start and forgotten at its end."""
    _INPUTS.clear()
    _COMMAND[0] = running


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path`, so a failure leaves nothing behind. An error of the
    file system names `path`, the user's, not the temporary file."""
    path = outside_bundles(path)  # nothing the kit writes lands in a bundle (it would fail its verification)
    if path.resolve() in _INPUTS:
        raise ValueError(f"{path}: is one of this command's inputs; write the output elsewhere")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    _TEMPORARY[tmp] = None
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file should look like any other
        os.replace(tmp, path)
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from None
    finally:
        _TEMPORARY.pop(tmp, None)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
