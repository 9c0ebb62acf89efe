"""Fixtures shared across test folders: one toy `dfedge build` that later tests read instead of rebuilding; how
pytest-xdist shares the test files between its workers."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from typer.testing import CliRunner

from dfedge.allocator import fixed_mmap_threshold
from dfedge.cli import app
from dfedge.data.sources import toy_crops
from dfedge.export.job import Job
from dfedge.targets import TARGETS

fixed_mmap_threshold()  # the tests' builds and calibrations run in this process as `dfedge build` runs them

# The property-based suites (hypothesis): a bounded number of examples in the default run (seconds); the "long"
# profile (HYPOTHESIS_PROFILE=long pytest tests/models/test_image_input.py tests/runtimes/test_verify.py) tries
# fifty times as many. Examples are not timed (deadline=None): the two shared cores make durations noisy.
settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# fp32 and fp16 on every target, gated on a small validation split; validation packs of 8 crops (1 MB each).
BUILD_ARGS = ["--precision", "fp32", "--precision", "fp16", "--data", "toy:val:40", "--bench-runs", "1", "--validation-pack", "8",
              "--name", "toy"]


@pytest.fixture(scope="session")
def toy_build(tmp_path_factory):
    """(CliRunner result, dist/toy path) of one `dfedge build` on the shipped toy world."""
    out = tmp_path_factory.mktemp("dist")
    result = CliRunner().invoke(app, ["build", "--out", str(out), *BUILD_ARGS])
    return result, out / "toy"


@pytest.fixture(scope="session")
def onnx_bundle(tmp_path_factory):
    """One ungated toy bundle (ONNX fp32, the face nets, the device package): for tests that need a bundle, not a
    build's gate or its other targets (about 20 s, against toy_build's minutes)."""
    out = tmp_path_factory.mktemp("onnx-bundle")
    result = CliRunner().invoke(app, ["export", "--out", str(out), "--target", "onnx", "--precision", "fp32", "--name", "toy"])
    assert result.exit_code == 0, result.output
    return out / "toy" / "onnx-fp32"


@pytest.fixture(scope="session")
def make_job():
    """make_job(detector, target, precision="fp32", **Job fields) -> the Job of one bundle, as the build makes it:
    set "toy", folder TARGET-PRECISION, no sources or options, one toy val crop for parity, no gate."""

    def make(detector, target: str, precision: str = "fp32", **fields) -> Job:
        fields = {"name": "toy", "folder": f"{target}-{precision}", "sources": {}, "options": {},
                  "parity_images": toy_crops(1), **fields}
        return Job(detector, TARGETS[target], precision, **fields)

    return make


INTEGER_GEMMS = {"QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm",
                 "QLinearConv", "ConvInteger"}


@pytest.fixture
def onnxruntime_view(tmp_path):
    """check(model, placement) -> the integer GEMM kernels ONNX Runtime fused: checks a placement report against the
    graph ONNX Runtime executes (its optimised model, written with the bundle's runtime options): one profiled op
    per node, and integer GEMM GFLOPs exactly when it fused integer GEMM kernels."""
    import onnx
    import onnxruntime as ort

    from dfedge.device.formats import FORMATS
    from dfedge.device.formats.onnx import session_options

    def check(model, placement: dict) -> set[str]:
        so = session_options(ort, FORMATS["onnx"].options, 0)
        so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
        ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        nodes = onnx.load(str(tmp_path / "optimised.onnx")).graph.node
        assert placement["ops"]["total"] == len(nodes) and placement["ops"]["fallback"] == 0
        integer = {n.op_type for n in nodes} & INTEGER_GEMMS
        dtypes = set(placement["gemm_gflops_by_dtype"]["accelerated"])
        assert bool(integer) == bool(dtypes & {"int8", "uint8"}), (integer, dtypes)
        return integer

    return check


@pytest.fixture
def delegation(monkeypatch):
    """Every program the kit's ExecuTorch exporter lowers in the test, as {"placement": what the manifest records,
    "counts": {op type: (in delegated graphs, outside)}}: ExecuTorch's own devtools report of the same program, read
    at the same moment (before `to_executorch` rewrites it)."""
    from executorch.devtools.backend_debug import get_delegation_info

    from dfedge.export import executorch as ee

    seen: list[dict] = []

    def placement(edge, *args, real=ee.placement):
        table = get_delegation_info(edge.exported_program().graph_module).get_operator_delegation_dataframe()
        counts = {r.op_type: (r.occurrences_in_delegated_graphs, r.occurrences_in_non_delegated_graphs)
                  for r in table.itertuples() if r.op_type != "Total"}
        seen.append({"placement": real(edge, *args), "counts": counts})
        return seen[-1]["placement"]

    monkeypatch.setattr(ee, "placement", placement)
    return seen


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """pytest-xdist groups: every test that reads the session's toy build runs on one worker (it is built once);
    the others by file (module and session fixtures of a file are not computed twice). A test that reads the toy
    build is heavy (the build takes minutes): it runs in .ci/run's second command (-m 'heavy and not slow and not fullsize')."""
    root = config.rootpath / "tests"
    for item in items:
        if "toy_build" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.heavy)
        group = "toy_build" if "toy_build" in getattr(item, "fixturenames", ()) else item.path.relative_to(root).as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one torch thread each
        import torch

        torch.set_num_threads(1)
