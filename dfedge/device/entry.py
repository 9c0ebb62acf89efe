"""This dfedge bundle's entry script (bench.py): it checks every file of the bundle against manifest.json's sizes and
SHA-256 — with the standard library only, before it imports anything of the bundle — then runs the bundle's own
device package (dfedge_device/, one of the files it checked) from its path, never from a bytecode cache:

    python bench.py [--image photo.jpg] [--video clip.mp4] [--validate] [--runs 20] [--out result.json]

or, in Python: `bench = runpy.run_path("B/bench.py"); det = bench["load"]("B")` -> a Pipeline (score_image,
score_video, crops). Not `import bench`: Python would read or write a bytecode cache inside the bundle, which the
check refuses (an unlisted file) like any other.
"""

import sys

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
# the bundle's folder is not a place to import from: a file in it named like a module would run before the check
sys.path[:] = [p for p in sys.path if p not in ("", ".", _HERE)]
sys.dont_write_bytecode = True  # nothing written into the bundle

import hashlib  # noqa: E402 - after the path is cleaned
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

MANIFEST, PACKAGE = "manifest.json", "dfedge_device"


def _check(bundle: str) -> dict:
    """Every listed file has its size and SHA-256, every file there is listed, none is a link: else one line, exit 2."""
    def refuse(problem):
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)

    path = os.path.join(bundle, MANIFEST)
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
        files = manifest["files"]
        listed = set(files)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        refuse(f"{path}: not a readable dfedge manifest ({type(e).__name__})")
    root = os.path.realpath(bundle)
    for top, dirs, names in os.walk(bundle):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            rel = os.path.relpath(os.path.join(top, name), bundle).replace(os.sep, "/")
            if rel != MANIFEST and rel not in listed:  # a bytecode cache too: it would run instead of its source
                refuse(f"{os.path.join(bundle, rel)}: not listed in the manifest")
    for rel, entry in files.items():
        file = os.path.join(bundle, rel)
        if os.path.islink(file) or not os.path.realpath(file).startswith(root + os.sep) or not os.path.isfile(file):
            refuse(f"{file}: missing, a link, or a path out of the bundle")
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if os.path.getsize(file) != entry.get("bytes") or digest.hexdigest() != entry.get("sha256"):
            refuse(f"{file}: SHA-256 differs from the manifest (file changed or corrupt)")
    if f"{PACKAGE}/__init__.py" not in listed:
        refuse(f"{path}: {PACKAGE}/ is not listed: the bundle's code cannot be checked")
    return manifest


def package(bundle: str = _HERE):
    """The bundle's device package, imported from its checked files under a name of its own."""
    manifest = _check(bundle)
    name = f"{PACKAGE}_{manifest['files'][PACKAGE + '/__init__.py']['sha256'][:16]}"
    if name not in sys.modules:
        sys.pycache_prefix = tempfile.mkdtemp(prefix="dfedge-pycache-")  # never a .pyc from inside the bundle
        init = os.path.join(bundle, PACKAGE, "__init__.py")
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[os.path.dirname(init)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load(bundle: str = _HERE, threads: int = 0, device: str = "CPU"):
    """Check this bundle, then open `bundle` with its code: a Pipeline (score_image, score_video, and aligned crops
    in: a Result) on the bundle's runtime."""
    if os.path.realpath(bundle) != os.path.realpath(_HERE):
        _check(bundle)
    return importlib.import_module(package().__name__ + ".pipeline").load(bundle, threads, device)


if __name__ == "__main__":
    from pathlib import Path

    cli = importlib.import_module(package().__name__ + ".cli")
    sys.exit(cli.main(home=Path(_HERE).resolve()))
