"""Reading weight files safely and checking them against an expected layout.

Every failure is a `CheckpointError` whose message is one line naming the file and the problem, so the CLI can
print it as is.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..device.files import sha256_file  # noqa: F401 - the one hash of a file, used by the kit through here
from .spec import check_pin
from .writing import atomic_write


class CheckpointError(ValueError):
    """A weight file is unreadable, unsafe, or does not match the model it is loaded into."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_sha256(path: str | Path, expected: str | None) -> str:
    """Return the file's SHA-256; raise if it differs from `expected` (a full 64-hex digest; None: no pin)."""
    expected = check_pin(expected)
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    digest = sha256_file(path)
    if expected and digest != expected:
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


_STORAGE_DTYPES = {  # the storage classes a TorchScript pickle names, by the dtype of their elements
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class ScriptObject:
    """A TorchScript object as data: its class name and the attributes its pickle holds. Nothing of its code runs:
    a scripted `__setstate__` becomes a `state` that is not a dict, which the reader refuses."""

    qualname = "?"

    def __setstate__(self, state) -> None:
        self.__dict__["_state"] = state


def _tensor(storage, offset, size, stride, *_):
    return torch.empty(0, dtype=storage[1]).set_(storage[0], offset, size, stride)


class _ArchiveUnpickler(pickle.Unpickler):
    """Reads a TorchScript archive's data.pkl as plain data. Python's pickle would import and call whatever the
    file names; torch.jit.load would run the archive's scripted code (`__setstate__`): this allows tensors, lists
    and the archive's own classes as inert ScriptObjects, and refuses anything else by name."""

    _BUILDERS = {  # torch.jit._pickle's list/tag helpers, as the identity they are on data
        "build_intlist": list, "build_doublelist": list, "build_boollist": list, "build_tensorlist": list,
        "build_complexlist": list, "restore_type_tag": lambda value, _tag: value,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: Path, budget: list[int]) -> None:
        super().__init__(file)
        self.archive, self.prefix, self.path, self.classes, self.budget = archive, prefix, path, {}, budget
        self.storages: dict[str, torch.UntypedStorage] = {}  # a storage several tensors share is read once

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            qualname = f"{module}.{name}"
            return self.classes.setdefault(qualname, type(name, (ScriptObject,), {"qualname": qualname}))
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _tensor
        if module == "torch.jit._pickle" and name in self._BUILDERS:
            return self._BUILDERS[name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return dict
        raise CheckpointError(f"{self.path}: the archive needs {module}.{name}, which is not TorchScript data "
                              "(pass --trust-torchscript to run the file with torch.jit.load)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise CheckpointError(f"{self.path}: unknown persistent reference {str(pid)[:60]}")
        _, dtype, key, _location, numel = pid
        name = f"{self.prefix}data/{key}"
        nbytes = int(numel) * torch.empty(0, dtype=dtype).element_size()
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: storage {key} is missing from the archive") from None
        if info.file_size != nbytes:  # checked against the archive's directory before reading a byte of it
            raise CheckpointError(f"{self.path}: storage {key} holds {info.file_size} bytes, its tensor needs {nbytes}")
        if name not in self.storages:
            raw = _inflate(self.archive, info, self.budget, self.path)
            self.storages[name] = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
        return self.storages[name], dtype


_STEP = 1 << 20  # inflate 1 MiB at a time: zlib never holds more than one step beyond what is kept


def check_archive_size(archive: zipfile.ZipFile, max_bytes: int, path: Path) -> None:
    """Refuse an archive whose directory declares more than `max_bytes` inflated, all entries together, or an
    entry compressed other than stored (what PyTorch writes) or deflated (bz2 and lzma inflate unbounded)."""
    declared = 0
    for info in archive.infolist():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{path}: {info.filename} is compressed with zip method {info.compress_type}, "
                                  "not stored or deflated")
        declared += info.file_size
    if declared > max_bytes:
        raise CheckpointError(f"{path}: the archive declares {declared:,} bytes inflated, over the {max_bytes:,} "
                              "its largest model can need")


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list[int], path: Path) -> bytearray:
    """One entry's bytes, inflated a step at a time and counted against `budget[0]` (the bytes the archive may still
    inflate to): a zip can lie about sizes, so what is inflated is counted, not what the directory says. zipfile
    stops at the declared size and then checks the CRC."""
    out = bytearray()
    with archive.open(info) as f:
        while chunk := f.read(min(_STEP, budget[0] - len(out) + 1)):
            out += chunk
            if len(out) > budget[0]:
                raise CheckpointError(f"{path}: {info.filename} inflates past the archive's bound")
    budget[0] -= len(out)
    return out


def read_torchscript(path: str | Path, max_bytes: int) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """(tensors, attributes) of a TorchScript archive's module tree, read as data without running any of its code:
    tensor attributes by dotted name (what `state_dict()` would give) and the other plain attributes likewise
    (e.g. `out_size`, `backbone.output_indices`). A plain `torch.save` state_dict is refused here with what it is.
    `max_bytes`: the most the whole archive may inflate to (what the largest model it may hold needs), checked
    against the zip's directory before anything is inflated and counted while inflating."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive_size(archive, max_bytes, path)
            names = archive.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pkl:
                raise CheckpointError(f"{path}: not a PyTorch archive (no data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            if not any(n.startswith(prefix + "code/") for n in names):
                raise CheckpointError(f"{path}: a torch.save checkpoint, not a TorchScript archive")
            budget = [max_bytes]
            data = io.BytesIO(_inflate(archive, archive.getinfo(pkl[0]), budget, path))
            root = _ArchiveUnpickler(data, archive, prefix, path, budget).load()
    except (zipfile.BadZipFile, EOFError, OSError, pickle.UnpicklingError, RuntimeError, ValueError, TypeError,
            IndexError, KeyError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable TorchScript archive (truncated or corrupt): {_first_line(e)}") from None
    tensors, attributes = {}, {}

    def walk(obj: ScriptObject, prefix: str) -> None:
        state = obj.__dict__.get("_state")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: {obj.qualname} restores its state with its own code (a scripted "
                                  "__setstate__); the kit will not run it (pass --trust-torchscript to)")
        for key, value in state.items():
            if isinstance(value, ScriptObject):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, torch.Tensor):
                tensors[prefix + key] = value
            elif key not in ("training", "_is_full_backward_hook"):
                attributes[prefix + key] = value

    if not isinstance(root, ScriptObject):
        raise CheckpointError(f"{path}: the archive holds a {type(root).__name__}, not a module")
    walk(root, "")
    return tensors, attributes


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


def config_from_metadata(cls, meta: Mapping[str, str], key: str, path: str | Path):
    """The config dataclass `cls` a kit-written file records as JSON under metadata `key` (lists become tuples);
    an unknown field, a wrong type or a bad value is a CheckpointError naming the file, never a traceback."""
    try:
        fields = json.loads(meta[key])
        if not isinstance(fields, dict):
            raise ValueError(f"expected an object, found {type(fields).__name__}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: bad '{key}' metadata: {_first_line(e)}") from None


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


def save_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, object]) -> Path:
    """Atomically write tensors with JSON-able metadata (non-string values are JSON-encoded)."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
