"""--engine ray (dfedge/distributed.py) on a local 2-CPU Ray: the same scores as one process (same ids in the same
order, |Δlogit| ≤ 1e-6 for the torch reference), each sample exactly once with a worker killed mid-run, unreadable
media recorded without stopping the run, a re-run resuming from the shards, and the CLI commands (reference, score,
build's gate, validate) giving what they give without Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.data.sources import open_set, write_toy
from dfedge.distributed import EngineError, RayEngine, load_shards, make_engine
from dfedge.eval.scores import load_scores, score_set
from dfedge.eval.video import frame_mean_scores, frame_scores, temporal_scores
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.models.temporal import temporal_head
from dfedge.runtimes.recipe import Recipe
from dfedge.runtimes.reference import torch_runner
from dfedge.scoring import reference_scores

pytestmark = pytest.mark.heavy  # minutes of building or training: .ci/run's second command (-m heavy)

ray = pytest.importorskip("ray")
SPEC = DetectorSpec()
RECIPE = Recipe("torch", spec=SPEC)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with 2 CPUs and no GPU for the module (the kit joins it instead of starting its own)."""
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def run():
    return torch_runner(build_detector(SPEC))


def same(a, b, features: bool = False) -> None:
    """The Ray scores equal the one-process scores: ids and order, labels, logits within 1e-6, masks."""
    assert a.ids.tolist() == b.ids.tolist() and len(set(a.ids.tolist())) == len(a)
    assert a.video_ids.tolist() == b.video_ids.tolist() and np.array_equal(a.labels, b.labels)
    assert np.abs(a.logits - b.logits).max() <= 1e-6
    assert np.array_equal(a.token_masks, b.token_masks) and np.array_equal(a.region_tokens, b.region_tokens)
    if features:
        assert np.abs(a.features - b.features).max() <= 1e-6


def test_a_reference_stopped_by_ctrl_c_resumes_and_equals_one_process(tmp_path):
    """scoring.reference_scores (what `dfedge reference` runs) on 2 actors, stopped after its first finished batch,
    then run again: it resumes from the shards and gives the one-process reference (device auto: CPUs here)."""

    def stop(n):
        raise KeyboardInterrupt  # the user's Ctrl-C

    def bar(advance):
        return lambda count, device: contextlib.nullcontext(advance)

    engine = RayEngine(workers=2, partial=tmp_path / "partial")
    with pytest.raises(KeyboardInterrupt):
        reference_scores(SPEC, "toy:val:10", "auto", 2, bar(stop), engine)
    folder = next(p for p in (tmp_path / "partial").iterdir() if p.is_dir())
    kept = sorted({u for s in load_shards(folder) for u in s["unit"].tolist()})
    assert kept and len(kept) < 10 and not list(folder.glob(".*.tmp"))  # whole shards only
    got = reference_scores(SPEC, "toy:val:10", "auto", 2, bar(lambda n: None), engine)
    local = reference_scores(SPEC, "toy:val:10", "auto", 2, bar(lambda n: None))
    same(got, local)
    assert engine.last["resumed_units"] == len(kept) and engine.last["units"] == 10 and engine.last["duplicates"] == 0
    assert got.header["engine"]["workers"] == 2 and got.header["problems"] == [] == local.header["problems"]
    assert got.header["device"] == {"device": "cpu", "engine": "ray", "workers": 2} and local.header["device"]["device"] == "cpu"
    assert got.header["identity"] == local.header["identity"] and got.header["threshold"] == local.header["threshold"]
    assert not (tmp_path / "partial").exists()  # the shards are removed once the run is complete


def test_a_video_set_expanded_to_frames_gives_the_same_video_scores(run):
    """Units are whole clips (decoded once per clip in a worker); frames, features and both video-level scores equal."""
    data = open_set("toyvideo:val:4:6")
    engine = RayEngine(workers=2)
    frames, features = frame_scores(None, data, engine=engine, recipe=RECIPE)
    local, local_features = frame_scores(run, data)
    same(frames, local, features=True)
    assert engine.last["units"] == 4 and len(frames) == 24
    head = temporal_head(None, "toy", local_features.shape[1])
    t_ray = temporal_scores(frames, features, torch_runner(head), head.cfg.frames)
    t_local = temporal_scores(local, local_features, torch_runner(head), head.cfg.frames)
    assert t_ray.ids.tolist() == t_local.ids.tolist() and np.abs(t_ray.logits - t_local.logits).max() <= 1e-6
    assert np.abs(frame_mean_scores(frames).logits - frame_mean_scores(local).logits).max() <= 1e-6


def test_a_worker_killed_mid_run_is_replaced_and_every_sample_is_scored_once(run, tmp_path):
    """A folder of 8 crops, one of them not an image: a worker SIGKILLed after its first batch, the run finishes
    with each readable crop scored once, as one process scores them, and the bad one recorded as unreadable."""
    write_toy(tmp_path / "set", 8, "val")
    bad = sorted((tmp_path / "set" / "fake").iterdir())[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    engine = RayEngine(workers=2, partial=tmp_path / "partial")
    killed = []

    def kill_one(n):  # the driver's progress callback, after the first finished batch: SIGKILL the worker that made it
        if not killed:
            shard = load_shards(next(p for p in (tmp_path / "partial").iterdir() if p.is_dir()))[0]
            killed.append(int(shard["pid"][0]))
            os.kill(killed[0], signal.SIGKILL)

    got = engine(None, open_set(str(tmp_path / "set")), batch=1, recipe=RECIPE, progress=kill_one)
    assert killed and engine.last["duplicates"] == 0 and killed[0] in engine.last["worker_pids"]
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it is dead; the pool went on with a replacement
    [problem] = got.header["problems"]
    assert problem["kind"] == "unreadable" and str(bad) in problem["detail"]
    with pytest.raises(ValueError):  # one process stops at that file ...
        score_set(run, open_set(str(tmp_path / "set")))
    bad.unlink()  # ... and scores the others as the pool did
    same(got, score_set(run, open_set(str(tmp_path / "set"))))


def test_engine_settings_that_cannot_work_are_one_line():
    with pytest.raises(EngineError, match="--engine gpu"):
        make_engine("gpu")
    with pytest.raises(EngineError, match="--engine ray"):
        make_engine("local", workers=2)
    with pytest.raises(EngineError, match="--address 127.0.0.1:1: nothing answers there"):
        make_engine("ray", address="127.0.0.1:1")  # at once, not after Ray's minutes of retries
    with pytest.raises(EngineError, match="at least 1"):
        RayEngine(workers=0)
    with pytest.raises(EngineError, match="recipe"):
        RayEngine()(None, open_set("toy:val:4"))
    engine = RayEngine()  # the torch reference on device auto: the cluster's GPUs, here none, so CPUs
    recipe, gpus = engine.place(Recipe("torch", spec=SPEC, device="auto"))
    assert recipe.device == "cpu" and gpus == 0
    with pytest.raises(EngineError, match="--device cuda: the Ray cluster has no GPU"):
        engine.place(Recipe("torch", spec=SPEC, device="cuda"))


def test_the_cli_on_ray_gives_what_it_gives_without(tmp_path):
    """score and the build (its reference and gate) with --engine ray, then validate with and without it: the same
    records, reference scores and report as without Ray (one actor per pool here: two are tested above)."""
    cli = CliRunner()

    def invoke(*args):
        result = cli.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    write_toy(tmp_path / "faces", 4, "test")
    records = {}
    for engine in ("local", "ray"):
        invoke("score", "--aligned", tmp_path / "faces", "-o", tmp_path / f"{engine}.jsonl", "--engine", engine,
               *(["--workers", "1"] if engine == "ray" else []))
        records[engine] = [json.loads(line) for line in (tmp_path / f"{engine}.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records["ray"]] == [r["file"] for r in records["local"]] and len(records["ray"]) == 4
    assert all(abs(a["logit"] - b["logit"]) <= 1e-6 for a, b in zip(records["ray"], records["local"]) if a["status"] == "ok")

    dist = tmp_path / "dist"
    # (with the zero AUC budget: --max-auc-drop 0 is a budget, no drop at all, not "not given"; fp32 = torch)
    invoke("build", "--target", "onnx", "--precision", "fp32", "--data", "toy:val:12", "--bench-runs", "0", "--max-auc-drop", "0",
           "--validation-pack", "0", "--out", dist, "--name", "t", "--engine", "ray", "--workers", "1")
    gate = json.loads((dist / "t" / "onnx-fp32" / "manifest.json").read_text())["gate"]
    assert gate["passed"] and gate["data"] == "toy:val:12:mouth" and gate["budget"]["max_auc_drop"] == 0.0
    assert json.loads((dist / "t" / "build.json").read_text())["config"]["max_auc_drop"] == 0.0
    assert "ΔAUC ≥ −0.00 pp" in (dist / "t" / "report.md").read_text()
    invoke("reference", "--data", "toy:val:12", "--out", tmp_path / "local.scores")
    same(load_scores(dist / "t" / "reference.scores"), load_scores(tmp_path / "local.scores"))  # the build's, made on Ray
    reports = {}
    for engine in ("local", "ray"):
        invoke("validate", dist / "t" / "onnx-fp32", "--reference", dist / "t" / "reference.scores", "--out",
               tmp_path / engine, "--engine", engine, *(["--workers", "1"] if engine == "ray" else []))
        reports[engine] = json.loads((tmp_path / engine / "report.json").read_text())
    assert reports["ray"]["passed"] and reports["ray"]["comparison"] == reports["local"]["comparison"]
    assert reports["ray"]["comparison"]["delta_auc"] == pytest.approx(gate["delta_auc"])
    same(load_scores(tmp_path / "ray" / "artifact.scores"), load_scores(tmp_path / "local" / "artifact.scores"))


def test_without_ray_installed_the_local_path_runs_and_ray_is_one_line(tmp_path):
    """Ray is an optional extra: nothing imports it unless --engine ray is asked, and then its absence is one line."""
    code = ("import sys; sys.modules['ray'] = None; from typer.testing import CliRunner; from dfedge.cli import app; "
            "run = lambda *a: CliRunner().invoke(app, list(a)); "
            f"ok = run('reference', '--data', 'toy:val:4', '--out', r'{tmp_path / 'a.scores'}'); "
            "assert ok.exit_code == 0, ok.output; "
            f"no = run('reference', '--data', 'toy:val:4', '--out', r'{tmp_path / 'b.scores'}', '--engine', 'ray'); "
            "print(no.exit_code); print(no.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    code, *lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert code == "2" and len(lines) == 1 and 'pip install -e ".[distributed]"' in lines[0], out.stdout
    assert (tmp_path / "a.scores").is_file() and not (tmp_path / "b.scores").exists()
