"""Reading weight files safely and checking them against an expected layout.

Every failure is a `CheckpointError` whose message is one line naming the file and the problem, so the CLI can
print it as is.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file


class CheckpointError(ValueError):
    """A weight file is unreadable, unsafe, or does not match the model it is loaded into."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: str | Path, expected: str | None) -> str:
    """Return the file's SHA-256; raise if `expected` (a full digest or a prefix of >= 8 hex digits) differs."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    digest = sha256_file(path)
    if expected:
        expected = expected.lower().strip()
        if len(expected) < 8 or not digest.startswith(expected):
            raise CheckpointError(f"{path}: SHA-256 {digest} does not match the pinned {expected}")
    return digest


def read_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a plain state_dict from a `.pth` without executing pickle code (`weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to unpickle (not a plain tensor state_dict): {_first_line(e)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: unreadable PyTorch checkpoint (truncated or corrupt): {_first_line(e)}") from None
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a plain state_dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (tensors, metadata) of a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file (truncated or corrupt): {_first_line(e)}") from None


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read `.safetensors` (with its metadata) or a `.pth`/`.pt` state_dict (no metadata)."""
    if str(path).endswith(".safetensors"):
        return read_safetensors(path)
    return read_torch_state_dict(path), {}


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str | Path
) -> None:
    """Strict layout check: the same key set, the same shapes, finite values. Raises on the first problem."""
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]

    def more(keys: list[str]) -> str:
        return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""

    if missing:
        raise CheckpointError(f"{source}: missing key '{missing[0]}'{more(missing)}")
    if extra:
        raise CheckpointError(f"{source}: unexpected key '{extra[0]}'{more(extra)}")
    for key, shape in expected.items():
        got = tuple(state_dict[key].shape)
        if got != tuple(shape):
            raise CheckpointError(f"{source}: key '{key}' has shape {list(got)}, expected {list(shape)}")
        t = state_dict[key]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: key '{key}' holds non-finite values")


def expected_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path`, so a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file should look like any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, object]) -> Path:
    """Atomically write tensors with JSON-able metadata (non-string values are JSON-encoded)."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
