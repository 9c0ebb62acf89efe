"""Fixtures shared across test folders: one toy `dfedge build` that later tests read instead of rebuilding."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dfedge.cli import app

# fp32 and fp16 on every target, gated on a small validation split.
BUILD_ARGS = ["--precision", "fp32", "--precision", "fp16", "--data", "toy:val:40", "--bench-runs", "2", "--name", "toy"]


@pytest.fixture(scope="session")
def toy_build(tmp_path_factory):
    """(CliRunner result, dist/toy path) of one `dfedge build` on the shipped toy world."""
    out = tmp_path_factory.mktemp("dist")
    result = CliRunner().invoke(app, ["build", "--out", str(out), *BUILD_ARGS])
    return result, out / "toy"
