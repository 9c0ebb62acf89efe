"""The names of a bundle's files and the small file helpers every part of the device package shares."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
ENTRY_FILE = "bench.py"  # the bundle's entry script (a copy of entry.py): verifies, then runs cli.main
PACKAGE_DIR = "dfedge_device"  # this package, copied whole into every bundle
VALIDATION_FILE = "validation.npz"  # the validation pack: aligned crops, labels, the torch FP32 reference's scores
LEGACY_FRONT_END_FILE = "frontend.py"  # bundles of manifest schema 1 carried the front end as one file beside bench.py


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_around(path: str | Path) -> Path | None:
    """The bundle (a folder with a manifest) that `path` is in, or None: a file written there is one the manifest
    does not list, and the bundle then fails its verification."""
    here = Path(path).resolve()
    return next((folder for folder in (here, *here.parents) if (folder / MANIFEST).is_file()), None)


def outside_bundles(path: str | Path) -> Path:
    """`path` as given, unless it is inside a bundle: then ValueError naming both, in one line."""
    bundle = bundle_around(Path(path).parent)
    if bundle is not None:
        raise ValueError(f"{path}: inside the bundle {bundle}, which would then fail its verification: write it "
                         "outside the bundle")
    return Path(path)


def write_json(path: Path, obj: dict) -> None:
    """Atomic: a temporary file beside the target, renamed into place (removed if anything fails)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
