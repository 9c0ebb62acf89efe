"""A bundle's manifest: read it, check it against the schema, check every file it lists (and that it lists every
file there is), and read bundles of the previous schema. Nothing of a bundle is used before `verify` returned."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import BundleError, shown
from .faces import detectors
from .files import ENTRY_FILE, LEGACY_FRONT_END_FILE, MANIFEST, PACKAGE_DIR, sha256_file
from .formats import FORMATS
from .schema import BUNDLE_SCHEMA, BUNDLE_SCHEMA_V1, MANIFEST_SCHEMA, SCHEMA_V1, schema_errors

SCHEMAS = {BUNDLE_SCHEMA: MANIFEST_SCHEMA, BUNDLE_SCHEMA_V1: SCHEMA_V1}


def upgrade(manifest: dict) -> dict:
    """A schema-1 manifest as schema 2 reads: its face front end named by its detector row, its code as it was (bench.py
    beside frontend.py; the kit opens such bundles with its own code, never theirs)."""
    if manifest.get("schema") != BUNDLE_SCHEMA_V1:
        return manifest
    out = dict(manifest)
    if out.get("front_end"):
        front = {k: v for k, v in out["front_end"].items() if k != "code"}
        out["front_end"] = dict(front, detector="mtcnn", title=str(front.get("detector", "MTCNN")))
    out["code"] = {"entry": ENTRY_FILE, "package": LEGACY_FRONT_END_FILE}
    return out


def named_files(manifest: dict) -> list[str]:
    """Every file the manifest names outside `files` (the model, the code, the face nets, the temporal head, the
    validation pack): each must be one of the listed, verified files."""
    code = manifest.get("code") or {}
    names = [manifest["model_file"], code.get("entry", ENTRY_FILE)]
    if manifest.get("schema") == BUNDLE_SCHEMA:
        names.append(f"{code.get('package', PACKAGE_DIR)}/__init__.py")
    front = manifest.get("front_end") or {}
    if front:
        names += list(front["files"].values()) + ([LEGACY_FRONT_END_FILE] if manifest.get("schema") == BUNDLE_SCHEMA_V1 else [])
    for section in ("temporal", "validation_pack"):
        if isinstance(manifest.get(section), dict) and manifest[section].get("file"):
            names.append(manifest[section]["file"])
    return names


def _present(bundle: Path) -> set[str]:
    """Every file in the bundle but the manifest, as '/'-separated relative paths (symbolic links included, not
    followed). A bytecode cache (`__pycache__/*.pyc`) is a file like any other: unlisted, it is refused (Python would
    run it in place of its checked source)."""
    out = set()
    for path in bundle.rglob("*"):
        rel = path.relative_to(bundle).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        if rel == MANIFEST:
            continue
        out.add(rel)
    return out


def decision_errors(manifest: dict) -> list[str]:
    """What the schema's types cannot say about the numbers that decide a verdict and the settings that open the
    bundle: the guard's bounds ordered and inside the token grid; the target one of the formats here, its runtime
    options among those its row allows (`Format.allowed_options`); the face detector one of the table's, its
    settings as its row allows (`DetectorRow.settings_schema`). `manifest`: schema 2, or schema 1 upgraded."""
    errors = []
    grid = (manifest.get("labels") or {}).get("token_grid") or [None, None]
    guard = (manifest.get("probe") or {}).get("guard") or {}
    side = grid[0] if isinstance(grid[0], int) else None
    for name, top in (("tokens", side * side if side else None), ("row", side), ("col", side)):
        if name in guard:
            lo, hi = guard[name]
            if not (0 <= lo <= hi and (top is None or hi <= top)):
                errors.append(f"/probe/guard/{name}: {[lo, hi]} is not an ordered range inside the token grid"
                              + (f" (0 to {top})" if top else ""))
    target = manifest.get("target")
    if target not in FORMATS:
        errors.append(f"/target: {shown(repr(target))} is not a target this package opens (known: {', '.join(FORMATS)})")
    elif "runtime_options" in manifest:
        errors += schema_errors(manifest["runtime_options"], FORMATS[target].allowed_options, "/runtime_options")
    front = manifest.get("front_end") or {}
    if front:
        row = detectors().get(front.get("detector"))
        if row is None:
            errors.append(f"/front_end/detector: {shown(repr(front.get('detector')))} is not a face detector this package runs "
                          f"(known: {', '.join(detectors())})")
        else:
            errors += schema_errors(front.get("settings", {}), row.settings_schema, "/front_end/settings")
    return errors


def read(bundle: str | Path) -> dict:
    """The manifest as JSON, checked against the schema it names; one line naming the problem otherwise."""
    path = Path(bundle) / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise BundleError(f"{bundle}: no {MANIFEST}, not a dfedge bundle")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"{path}: not JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: not a valid manifest: /: must be object, not {type(manifest).__name__}")
    if not isinstance(manifest.get("schema"), str) or manifest["schema"] not in SCHEMAS:
        raise BundleError(f"{path}: schema {shown(repr(manifest.get('schema')))}, expected {BUNDLE_SCHEMA!r} (or {BUNDLE_SCHEMA_V1!r})")
    errors = schema_errors(manifest, SCHEMAS[manifest["schema"]]) or decision_errors(upgrade(manifest))
    if errors:
        raise BundleError(f"{path}: not a valid manifest: {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    return manifest


def verify(bundle: str | Path) -> dict:
    """The whole bundle, before any of it is used: the manifest matches its schema; it lists every file in the bundle
    and nothing else, each a regular file inside the bundle (no link, no path out of it); every file it names (the
    model, the code, the face nets, the temporal head, the validation pack) is among them; every size and SHA-256
    matches. Raises BundleError naming the first problem, in one line; returns the manifest (schema 1: upgraded)."""
    bundle = Path(bundle)
    manifest = read(bundle)
    path = bundle / MANIFEST
    files = manifest["files"]
    for name in named_files(manifest):  # a package (.mlpackage) is listed file by file
        if not isinstance(name, str) or (name not in files and not any(rel.startswith(name + "/") for rel in files)):
            raise BundleError(f"{path}: {name} is not listed: the bundle's files cannot be checked")
    root = bundle.resolve()
    for rel in files:
        file = bundle / rel
        try:
            inside = not file.is_symlink() and file.resolve().is_relative_to(root)
        except (OSError, RuntimeError):  # a link loop on the way
            inside = False
        if not inside:
            raise BundleError(f"{file}: a link, or a path out of the bundle")
    extra = sorted(_present(bundle) - set(files))
    if extra:
        cache = " (a bytecode cache: delete it; load bench.py with runpy.run_path, see USAGE.md)" if extra[0].endswith(".pyc") else ""
        raise BundleError(f"{bundle / extra[0]}: not listed in the manifest{cache}" + (f" (and {len(extra) - 1} more files)" if len(extra) > 1 else ""))
    for rel, entry in files.items():
        file = bundle / rel
        if not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing")
        if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            raise BundleError(f"{file}: SHA-256 differs from the manifest (file changed or corrupt)")
    return upgrade(manifest)
