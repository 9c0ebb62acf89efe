"""`dfedge --help` and `dfedge score --help` answer at once: the command line's help reads the kit's tables (targets,
presets, heads, regions, rungs, a build's defaults) without importing torch, the converters, the runtimes or
scipy/scikit-learn. A property, checked in a fresh interpreter; the times are in docs/architecture.md."""

import json
import subprocess
import sys
from pathlib import Path

# what the help path must not import: torch (~2 s), scipy and scikit-learn (eval's metrics), the runtimes and
# converters (imported by the functions that use them), OpenCV and Ray
HEAVY = ("torch", "scipy", "sklearn", "onnxruntime", "openvino", "executorch", "coremltools", "nncf", "ai_edge_litert",
         "litert_torch", "cv2", "ray")
SCRIPT = """
import json, sys
from typer.testing import CliRunner
from dfedge.cli import app

for args in (["--help"], ["score", "--help"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "Usage" in result.output, result.output
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
"""


def test_help_imports_no_heavy_module():
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{SCRIPT}"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
