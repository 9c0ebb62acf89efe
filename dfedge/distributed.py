"""Scoring on Ray (`--engine ray`), for data sets that outgrow one process: the same Scores as eval.scores.score_set.

A set splits into units (LabelledSet.units: a sample, or a whole video for sets decoded a video at a time). The
unit numbers are read as a Ray Dataset and mapped by a pool of actors (`map_batches` with a class) that each open
the runner once from a recipe (runtimes.recipe.Recipe) and, per unit, decode, detect and align (LabelledSet.expand)
then score. Every finished batch the driver receives is written as one shard file (temporary name, then rename)
under `partial`; a re-run with the same partial folder skips the units its shards hold. Results are keyed by
(unit, item): a sample is kept once however often Ray retried its batch, and the rows are put back in set order,
so the Scores equal the one-process run's. Ray restarts an actor that dies and retries its batch (Ray Data's
defaults for actor pools: max_restarts -1, max_task_retries -1). A unit that cannot be read is a problem record.

Nothing here imports Ray until an engine runs: it is the optional extra `pip install -e ".[distributed]"`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import socket
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .allocator import fixed_mmap_threshold
from .device.host import capped, cpus as host_cpus
from .eval.scores import Scores, assemble, run_batch
from .models.writing import atomic_write, on_termination
from .models.spec import CROP_SIZE

ENGINES = ("local", "ray")
FREE_CPUS = 0.5  # left to Ray's own tasks: with every CPU held by actors, a 2-CPU Ray Data pipeline stalls


class EngineError(ValueError):
    """The engine cannot run as asked (Ray not installed, a cluster that cannot be joined, a bad setting)."""


def threads(count: int) -> None:
    """Each actor computes on its share of the CPUs: torch and the runtimes' own pools otherwise take every core."""
    os.environ["OMP_NUM_THREADS"] = str(count)
    fixed_mmap_threshold()  # an actor computes as the build does (allocator.py)
    try:
        import torch

        torch.set_num_threads(count)
    except ImportError:
        pass


class Worker:
    """A Ray actor's work: groups of consecutive units (group g: units g*size .. g*size+size-1 of `units`), each
    group's rows in one output (columns unit, item, pid and the subclass's). A unit yields at least one row."""

    def __init__(self, units: int, size: int, cpus: int) -> None:
        threads(cpus)
        self.units, self.size = units, size

    def group(self, g: int) -> range:
        return range(g * self.size, min(self.units, (g + 1) * self.size))

    def __call__(self, batch: dict) -> dict:
        rows = [row for g in np.asarray(batch["group"]).tolist() for row in self.rows(self.group(int(g)))]
        keys = rows[0].keys() if rows else ("unit", "item")
        return {k: np.concatenate([np.asarray(r[k]).reshape(1, *np.shape(r[k])) for r in rows]) if rows else np.zeros(0, np.int64)
                for k in keys} | ({"pid": np.full(len(rows), os.getpid(), np.int64)} if rows else {})

    def rows(self, units: range) -> list[dict]:
        raise NotImplementedError


class SampleWorker(Worker):
    """Opens the runner once; per group of units of a LabelledSet, its samples scored in batches of `batch` (across
    the group's units, as eval.scores.score_set batches them) and its problems, one row each."""

    def __init__(self, data, recipe, features: bool, batch: int, units: int, size: int, cpus: int) -> None:
        super().__init__(units, size, cpus)
        self.data, self.features, self.batch = data, features, batch
        self.run = recipe.open()

    def rows(self, units: range) -> list[dict]:
        rows, pending = [], []
        for unit in units:
            samples, problems = self.data.expand(unit)
            if not samples and not problems:
                problems = [{"unit": unit, "kind": "empty", "detail": "no samples"}]
            rows += [{"unit": unit, "item": -1 - k, "problem": json.dumps(p)} for k, p in enumerate(problems)]
            pending += [(unit, j, s) for j, s in enumerate(samples)]
        scored = []
        for start in range(0, len(pending), self.batch):
            chunk = pending[start : start + self.batch]
            out = run_batch(self.run, [s.image for _, _, s in chunk], self.features)
            scored += [{"unit": u, "item": j, "problem": "", "id": s.id, "video_id": s.video_id, "label": s.label,
                        **{k: v[i] for k, v in out.items()}} for i, (u, j, s) in enumerate(chunk)]
        if rows:  # problem rows carry zero outputs, so every row has the same columns
            blank = scored[0] if scored else self._blank()
            rows = [{**{k: np.zeros_like(v) if isinstance(v, np.ndarray) else v for k, v in blank.items()},
                     "id": "", "video_id": "", "label": 0, **r} for r in rows]
        return rows + scored

    def _blank(self) -> dict:
        out = run_batch(self.run, [np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)], self.features)
        return {"id": "", "video_id": "", "label": 0, **{k: v[0] for k, v in out.items()}}


@dataclass
class RayEngine:
    """An engine (eval.scores) on a Ray cluster: a local one with this host's cores, or the one at `address`."""

    address: str | None = None  # ray://HOST:10001 or HOST:6379 of `ray start --head`, or "auto"; None: a local Ray
    workers: int | None = None  # actors in the pool; default one per CPU (per GPU with gpus)
    gpus: float = 0.0  # GPUs per actor (the FP32 reference on GPU nodes)
    batch: int = 4  # units per actor call (and per shard)
    threads: int | None = None  # torch threads per actor; default its share of the CPUs
    partial: Path | None = None  # folder of finished shards, removed when a run completes (None: none kept)
    last: dict = field(default_factory=dict)  # what the last run did: units, resumed, workers, problems, duplicates

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise EngineError(f"--workers must be at least 1 (got {self.workers})")

    def __call__(self, run, data, batch: int = 1, progress=None, features: bool = False, recipe=None,
                 transform=None) -> Scores:
        if transform is not None:
            raise EngineError("degraded copies (--degrade) are scored in one process: leave out --engine ray")
        if recipe is None:
            raise EngineError("the Ray engine opens the model in its workers and was given no recipe for it")
        recipe, gpus = self.place(recipe)
        key = ["samples", getattr(data, "description", ""), recipe.key, features, batch]
        size = batch if getattr(data, "unit", "sample") == "sample" else 1  # a group = one batch of score_set's
        cols = self.map(data.units(), SampleWorker, dict(data=data, recipe=recipe, features=features, batch=batch),
                        key, progress, size, gpus)
        self.last["device"] = recipe.device
        ok = cols["problem"] == "" if cols else np.zeros(0, bool)
        problems = [json.loads(p) for p in cols["problem"][~ok]] if cols else []
        self.last["problems"] = problems
        if not ok.any():
            raise ValueError(f"{getattr(data, 'description', 'the data')}: no samples to score"
                             + (f" ({len(problems)} problems, first: {problems[0]})" if problems else ""))
        outputs = [k for k in cols if k not in ("unit", "item", "id", "video_id", "label", "problem", "pid")]
        scores = assemble(list(zip(cols["id"][ok], cols["video_id"][ok], cols["label"][ok].tolist())),
                          [{k: cols[k][ok] for k in outputs}], data)
        scores.header.update(engine=self.record(), problems=problems)
        return scores

    def place(self, recipe) -> tuple:
        """(the recipe as the actors run it, GPUs per actor). A torch model on device auto runs on the cluster's GPUs
        when it has some (one per actor unless `gpus` says otherwise; the driver needs none), else on CPUs; cuda
        needs them."""
        if recipe.kind != "torch" or recipe.device not in ("auto", "cuda"):
            return recipe, self.gpus
        if not start(self.address).cluster_resources().get("GPU", 0):
            if recipe.device == "cuda":
                raise EngineError("--device cuda: the Ray cluster has no GPU (use --device auto or cpu)")
            return dataclasses.replace(recipe, device="cpu"), self.gpus
        return dataclasses.replace(recipe, device="cuda"), self.gpus or 1.0

    def record(self) -> dict:
        """The engine as a scores header states it."""
        return {k: v for k, v in self.last.items() if k != "problems"}

    def map(self, units: int, worker, kwargs: dict, key: list, progress=None, size: int = 1,
            gpus: float | None = None) -> dict[str, np.ndarray]:
        """`worker` (a Worker class; kwargs its own) over units 0..units-1 in groups of `size` on the actor pool, each
        actor with `gpus` GPUs (default the engine's) -> the columns of every row, sorted by (unit, item), each
        (unit, item) once. progress(n): n more units done."""
        gpus = self.gpus if gpus is None else gpus
        ray = start(self.address)
        folder = None if self.partial is None else Path(self.partial) / hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]
        shards = load_shards(folder)
        done = set(np.concatenate([s["unit"] for s in shards]).tolist()) if shards else set()
        todo = [g for g in range(-(-units // size)) if any(u not in done for u in range(g * size, min(units, (g + 1) * size)))]
        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1))
        most = max(1, int(resources.get("GPU", 0) // gpus) if gpus else int(cpus))  # the pool the cluster holds
        held = f"the Ray cluster's GPUs at {gpus:g} per actor" if gpus else "one per CPU of the Ray cluster"
        workers = capped("--workers", self.workers, most, held) if self.workers else most
        # an actor's share of the CPUs, at most one node's, and as many torch threads (FREE_CPUS is a scheduling
        # reserve for Ray's light tasks, not a core left idle): fewer actors than CPUs get more threads each
        node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=cpus)
        per_actor = min(node, (cpus - FREE_CPUS) / workers if cpus > FREE_CPUS else cpus / workers)
        self.last = {"name": "ray", "address": self.address or "local", "workers": workers, "cpus_per_worker": round(per_actor, 3),
                     "gpus_per_worker": gpus, "units": units, "resumed_units": len(done), "ray": ray.__version__,
                     "driver": platform.node()}
        if folder is not None:
            atomic_write(folder / "run.json", lambda t: t.write_text(json.dumps(key, default=str)))
        if progress is not None and done:
            progress(len(done))
        if todo:
            ds = ray.data.from_items([{"group": g} for g in todo], override_num_blocks=len(todo))
            out = ds.map_batches(worker, fn_constructor_kwargs=dict(kwargs, units=units, size=size, cpus=self.threads or math.ceil(per_actor)),
                                 batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=per_actor,
                                 num_gpus=gpus or None, batch_format="numpy")
            try:
                for batch in out.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                    batch = {k: np.asarray(v) for k, v in batch.items()}
                    if not len(batch.get("unit", ())):
                        continue
                    shards.append(batch)
                    if folder is not None:
                        save_shard(folder, batch)
                    if progress is not None:
                        progress(len(np.unique(batch["unit"])))
            except Exception as e:  # a worker's own error (not a death: those are retried): one line, work kept
                kept = f"; the finished work is kept in {folder} for a re-run" if folder is not None else ""
                raise EngineError(f"the Ray run stopped: {_first_line(e)}{kept}") from None
        rows = merge(shards, self.last)
        if folder is not None:  # the caller has everything: the shards' job is done
            shutil.rmtree(folder, ignore_errors=True)
            if not any(Path(self.partial).iterdir()):
                Path(self.partial).rmdir()
        return rows


def _first_line(e: BaseException) -> str:
    """The innermost error's own line, not Ray's wrapping of it."""
    cause = getattr(e, "cause", None) or e
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return (lines[-1] if lines else type(cause).__name__)[:300]


def start(address: str | None):
    """Ray, joined to the cluster at `address` or started locally with this host's cores (once per process)."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data comes with the extra ray[data]
    except ImportError:
        raise EngineError("--engine ray needs Ray: pip install -e \".[distributed]\"") from None
    if not ray.is_initialized():
        # Ray's C++ core logs an error-level note per actor pool (ray-project/ray#53727, constructor arguments of
        # restartable actors): only its fatal errors reach the user's terminal, the rest is in Ray's log files
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        try:
            with _quiet_stderr(), _own_signal_handlers():
                ray.init(address=address, num_cpus=None if address else host_cpus(), include_dashboard=False,
                         log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as e:
            hint = ""
            if address not in (None, "auto") and not os.environ.get("RAY_AUTH_MODE"):  # Ray's clusters take a token by
                # default, and an explicit address sends none unless asked
                hint = ("; if the cluster uses Ray's token authentication (the default), set RAY_AUTH_MODE=token and "
                        "RAY_AUTH_TOKEN (`ray get-auth-token` on the head)")
            raise EngineError(f"--address {address}: cannot join a Ray cluster there ({str(e).splitlines()[0]}){hint}") from None
        if address is None:
            on_termination(_stop_local_ray)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # the kit's progress bar says how far the run is
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray


def _stop_local_ray() -> None:
    """Stop the Ray this process started (a terminating signal's exit would leave its processes running): as Ray's
    own exit does (ray.shutdown), but first with Ray's auto-init off, or the run's other threads (Ray Data's
    executor) start a new local Ray the moment this one is gone, and that one is left behind (ray 2.60)."""
    import ray
    from ray._private import auto_init_hook

    auto_init_hook.enable_auto_connect = False
    ray.shutdown()


@contextlib.contextmanager
def _own_signal_handlers():
    """SIGTERM and SIGINT keep the handlers they had before ray.init (the command line's clean-up, models.writing
    .terminate): ray.init replaces SIGTERM's twice, in Python (sys.exit(15)) and in its C++ core (a failure handler
    that aborts: the driver died by SIGABRT, its clean-up never ran)."""
    main = threading.current_thread() is threading.main_thread()
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: set outside Python, not ours to restore
                signal.signal(signum, handler)


@contextlib.contextmanager
def _quiet_stderr():
    """Ray's C++ core writes a line to file descriptor 2 as it starts (the log level it read); its failures still
    come as exceptions, which the caller turns into one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def save_shard(folder: Path, batch: dict) -> Path:
    """One received batch as shard-<first unit>-<hash>.npz, written whole or not at all."""
    digest = hashlib.sha256(np.ascontiguousarray(batch["unit"]).tobytes() + np.ascontiguousarray(batch["item"]).tobytes()).hexdigest()[:12]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: v.astype(str) if v.dtype == object else v for k, v in batch.items()})

    return atomic_write(folder / f"shard-{int(batch['unit'].min()) if len(batch['unit']) else 0:08d}-{digest}.npz", write)


def load_shards(folder: Path | None) -> list[dict]:
    """The shards a previous run of the same work left (an unreadable one is skipped: its units run again)."""
    if folder is None or not folder.is_dir():
        return []
    shards = []
    for path in sorted(folder.glob("shard-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                shards.append({k: z[k] for k in z.files})
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            continue
    return shards


def merge(shards: list[dict], last: dict) -> dict[str, np.ndarray]:
    """Rows of every shard in (unit, item) order, each (unit, item) once; last["duplicates"]: rows dropped."""
    if not shards:
        return {}
    cols = {k: np.concatenate([np.asarray(s[k]) for s in shards]) for k in shards[0]}
    for k, v in cols.items():
        if v.dtype == object:
            cols[k] = v.astype(str)
    order = np.lexsort((cols["item"], cols["unit"]))
    pairs = np.stack([cols["unit"][order], cols["item"][order]], 1)
    first = np.ones(len(order), bool)
    first[1:] = (pairs[1:] != pairs[:-1]).any(1)
    last["duplicates"] = int((~first).sum())
    last["worker_pids"] = sorted(set(cols["pid"].tolist())) if "pid" in cols else []
    return {k: v[order][first] for k, v in cols.items()}


def make_engine(name: str | None, address: str | None = None, workers: int | None = None, partial: Path | None = None):
    """The engine a command asked for: eval.scores.score_set (local, the default) or a RayEngine."""
    from .eval.scores import score_set

    name = name or "local"
    if name not in ENGINES:
        raise EngineError(f"--engine {name}: not one of {', '.join(ENGINES)}")
    if name == "local":
        if address is not None or workers is not None:
            raise EngineError("--address and --workers are for --engine ray")
        return score_set
    if address is not None:
        reachable(address)
    return RayEngine(address=address, workers=workers, partial=partial)


def reachable(address: str, timeout: float = 5.0) -> None:
    """HOST:PORT (or ray://HOST:PORT) answers a TCP connection within `timeout` s, else one line: Ray itself keeps
    retrying an address where nothing listens for minutes. Other forms (auto) are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise EngineError(f"--address {address}: nothing answers there ({e.strerror or e}); start the cluster with "
                          "`ray start --head` first (docs/distributed.md)") from None
