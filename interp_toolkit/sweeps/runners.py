"""Runners: who executes the work items of a sweep. Both stream rows into one ``SweepStore``.

``LocalRunner`` (default): in this process, one model at a time, a tqdm bar.
``RayRunner``: on a Ray cluster (``address``) or a Ray instance it starts on this machine; one
actor per model (``workers_per_model`` of them) loads the model once and is fed items; rows
come back to this process, which writes them. An actor whose process dies is restarted by Ray
(model loaded again) and its unfinished items are retried; rows are keyed, so an item that ran
twice is stored once.

Both use ``run_item``: work function → row with the item's identity columns added.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from typing import Callable, Protocol, Sequence

from ..core import dumps
from .items import WorkItem, canonical, package_versions
from .registry import Analysis, ItemOutput


class RunnerError(RuntimeError):
    """The runner cannot start (Ray missing, cluster unreachable) or gave up."""


Write = Callable[[dict, dict], object]


def run_item(analysis: Analysis, adapter, item: WorkItem, state, versions: dict) -> tuple[dict, dict]:
    """One item through the analysis' work function: ``(row, artefacts)``.

    Exceptions listed in ``analysis.bad_input`` become a row with ``error`` set; anything
    else propagates (a bug or an environment failure must stop the sweep, not be recorded).
    """
    t0 = time.perf_counter()
    artefacts: dict = {}
    try:
        out = analysis.work(adapter, item, state)
        if isinstance(out, ItemOutput):
            out, artefacts = out.row, dict(out.artefacts)
        row = dict(out)
        row.setdefault("error", None)
    except analysis.bad_input as exc:
        row = {"error": f"{type(exc).__name__}: {exc}"}
    row.update({"key": item.key, "analysis": item.analysis, "input_id": item.input_id, "index": item.index,
                "text": item.text, "model": item.model, "config": canonical(item.config), "seed": item.seed,
                "model_meta": dumps(adapter.meta), "versions": json.dumps(versions, sort_keys=True),
                "seconds": time.perf_counter() - t0, "host": socket.gethostname()})
    return row, artefacts


def load_adapter(model: str, load: dict):
    """The model ``model`` with the load options (device, dtype, backend, allow_download)."""
    import contextlib

    from ..adapter import as_adapter
    from ..models import load_model
    from ..models.offline import hf_offline

    load = dict(load)
    offline = contextlib.nullcontext() if load.pop("allow_download", False) else hf_offline()
    with offline:
        return as_adapter(load_model(model, progress=False, **load))


class Runner(Protocol):
    name: str

    def start(self) -> None:
        """Connect / check; raise RunnerError before anything is written."""

    def run(self, analysis: Analysis, items: Sequence[WorkItem], inputs: list, write: Write, *,
            load: dict, progress: bool, deadline: float | None) -> int:
        """Run the items, calling ``write(row, artefacts)`` for each; returns rows written."""

    def close(self) -> None: ...


def _bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not progress)


def _by_model(items: Sequence[WorkItem]) -> dict[str, list[WorkItem]]:
    groups: dict[str, list[WorkItem]] = {}
    for it in items:
        groups.setdefault(it.model, []).append(it)
    return groups


class LocalRunner:
    """In-process: one model loaded at a time (or taken from ``models``: name → loaded model)."""

    name = "local"

    def __init__(self, models: dict | None = None):
        self.models = dict(models or {})

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, analysis, items, inputs, write, *, load, progress=True, deadline=None) -> int:
        from ..adapter import as_adapter

        versions = package_versions()
        n = 0
        with _bar(len(items), progress, f"sweep {analysis.name} (local)") as bar:
            for model, group in _by_model(items).items():
                adapter = as_adapter(self.models[model]) if model in self.models else load_adapter(model, load)
                state = analysis.prepare(adapter, group[0].config, inputs) if analysis.prepare else None
                for item in group:
                    if deadline is not None and time.monotonic() > deadline:
                        return n
                    write(*run_item(analysis, adapter, item, state, versions))
                    n += 1
                    bar.set_postfix(model=model)
                    bar.update(1)
                del adapter
        return n


# ---------------------------------------------------------------------- Ray
def _import_ray():
    try:
        import ray
    except ImportError:
        raise RunnerError("the ray runner needs Ray: pip install 'interp_toolkit[sweeps]' (or pip install ray)") from None
    return ray


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (RunnerError) when ``host:port`` (or ``ray://host:port``) does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RunnerError(f"Ray address {address!r} is not host:port, ray://host:port or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RunnerError(f"cannot reach the Ray cluster at {address}: {exc}") from None


class _Worker:
    """A Ray actor: loads one model once, then runs the items it is given (of any analysis;
    the per-model state of each (analysis, config) is prepared on first use)."""

    def __init__(self, model: str, load: dict, threads: int):
        import torch

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        self.adapter = load_adapter(model, load)
        self.versions = package_versions()
        self.states: dict = {}

    def run(self, analysis: Analysis, item: WorkItem, inputs_box: list):
        k = (analysis.name, canonical(item.config))
        if k not in self.states:
            import ray

            inputs = ray.get(inputs_box[0])  # boxed: fetched only when needed
            self.states[k] = analysis.prepare(self.adapter, item.config, inputs) if analysis.prepare else None
        return run_item(analysis, self.adapter, item, self.states[k], self.versions)

    def pid(self) -> int:
        return os.getpid()

    def placement(self) -> dict:
        """Where this actor runs: pid, host, the GPU ids Ray gave it, ``CUDA_VISIBLE_DEVICES``
        (which Ray sets from those ids) and the device its model is on."""
        import ray

        return {"pid": os.getpid(), "host": socket.gethostname(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": str(self.adapter.device)}


class RayRunner:
    """Items on Ray actors, one model per actor; actors live until ``close()`` (a runner
    used for several sweeps loads each model once).

    Args:
        address: a cluster (``host:port``, ``ray://host:port``, ``auto``); None starts a Ray
            instance on this machine (or uses one already initialised in this process).
        num_cpus, object_store_mb: size of a Ray instance started here (small by default).
        local_gpus: GPUs a Ray instance started here announces (None: the ones Ray detects).
        threads_per_worker: torch threads and CPUs reserved per actor.
        memory_mb: memory reserved per actor (Ray schedules on it; None: no reservation).
        num_gpus: GPUs per actor; None: 1 when the cluster has GPUs, else 0.
        workers_per_model: actors per model (each loads the model once).
        max_restarts: how often a dead actor is restarted (its items retried) before giving up.
        in_flight: items queued per actor (keeps it busy while a row travels back).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = 2, object_store_mb: int = 200,
                 local_gpus: int | None = None, threads_per_worker: int = 1, memory_mb: int | None = None, num_gpus: float | None = None,
                 workers_per_model: int = 1, max_restarts: int = 3, in_flight: int = 2):
        if workers_per_model < 1 or in_flight < 1 or threads_per_worker < 1:
            raise ValueError("workers_per_model, in_flight and threads_per_worker must be >= 1")
        self.address, self.num_cpus, self.object_store_mb = address, num_cpus, object_store_mb
        self.local_gpus = local_gpus
        self.threads, self.memory_mb, self.num_gpus = threads_per_worker, memory_mb, num_gpus
        self.workers_per_model, self.max_restarts, self.in_flight = workers_per_model, max_restarts, in_flight
        self._started_here = False
        self._ray = None
        self._actors: dict[tuple, list] = {}

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self) -> None:
        if self._ray is not None:
            return
        if self.address:
            check_address(self.address)
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except (ConnectionError, RuntimeError) as exc:
                    raise RunnerError(f"cannot connect to the Ray cluster at {self.address}: {exc}") from None
            else:
                ray.init(num_cpus=self.num_cpus, num_gpus=self.local_gpus, include_dashboard=False,
                         object_store_memory=self.object_store_mb * 1024 ** 2, log_to_driver=False)
            self._started_here = True
        self._ray = ray

    def release(self) -> None:
        """Kill this runner's actors (their CPUs, GPUs and memory go back to the cluster)."""
        for group in self._actors.values():
            for a in group:
                self._ray.kill(a)
        self._actors.clear()

    def close(self) -> None:
        """Kill this runner's actors; shut Ray down if this runner started it."""
        if self._ray is None:
            return
        self.release()
        if self._started_here:
            self._ray.shutdown()
            self._started_here = False
        self._ray = None

    def _actor_options(self) -> dict:
        gpus = self.num_gpus
        if gpus is None:
            gpus = 1 if self._ray.cluster_resources().get("GPU", 0) > 0 else 0
        opts = {"num_cpus": self.threads, "num_gpus": gpus, "max_restarts": self.max_restarts,
                "max_task_retries": self.max_restarts}
        if self.memory_mb:
            opts["memory"] = int(self.memory_mb * 1024 ** 2)
        return opts

    def _check_fits(self, new_models: list) -> None:
        """Refuse actors the cluster can never hold (they would wait for ever); warn when they
        must wait for resources that other work holds now."""
        if not new_models:
            return
        opts = self._actor_options()
        n = len(new_models) * self.workers_per_model
        for res, per in (("CPU", opts["num_cpus"]), ("GPU", opts["num_gpus"])):
            need = n * per
            total = self._ray.cluster_resources().get(res, 0)
            if need > total:
                raise RunnerError(f"{n} Ray workers need {need:g} {res}s ({len(new_models)} models × "
                                  f"{self.workers_per_model} workers × {per:g}); the cluster has {total:g}. "
                                  "Lower --workers-per-model / --threads-per-worker / --num-gpus, or add nodes")
            free = self._ray.available_resources().get(res, 0)
            if need > free:
                import warnings

                warnings.warn(f"{n} Ray workers need {need:g} {res}s but {free:g} are free now: they start "
                              "when other work releases them", RuntimeWarning, stacklevel=3)

    def actors(self, model: str, load: dict) -> list:
        """The actors of ``model`` (started on first use)."""
        k = (model, json.dumps(load, sort_keys=True, default=str))
        if k not in self._actors:
            cls = self._ray.remote(_Worker).options(**self._actor_options())
            self._actors[k] = [cls.remote(model, dict(load), self.threads) for _ in range(self.workers_per_model)]
        return self._actors[k]

    def placements(self) -> dict[str, list[dict]]:
        """``model → [actor placement]`` for every started actor (see ``_Worker.placement``)."""
        return {k[0]: self._ray.get([a.placement.remote() for a in group]) for k, group in self._actors.items()}

    def run(self, analysis, items, inputs, write, *, load, progress=True, deadline=None) -> int:
        ray = self._ray
        if ray is None:
            raise RunnerError("RayRunner.start() first")
        groups = _by_model(items)
        self._check_fits([m for m in groups if (m, json.dumps(load, sort_keys=True, default=str)) not in self._actors])
        box = [ray.put(list(inputs))]
        queues: dict[object, deque] = {}
        for model, group in groups.items():
            shared = deque(group)  # the actors of one model pull from one queue
            for a in self.actors(model, load):
                queues[a] = shared
        pending: dict = {}

        def feed(actor) -> None:
            q = queues[actor]
            if q and (deadline is None or time.monotonic() < deadline):
                item = q.popleft()
                pending[actor.run.remote(analysis, item, box)] = (actor, item)

        for a in queues:
            for _ in range(self.in_flight):
                feed(a)
        n = 0
        with _bar(len(items), progress, f"sweep {analysis.name} (ray)") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                actor, item = pending.pop(done[0])
                try:
                    row, artefacts = ray.get(done[0])
                except ray.exceptions.RayActorError as exc:
                    self._cancel(pending)
                    raise RunnerError(f"the worker for {item.model} died more than {self.max_restarts} times "
                                      f"(last on input {item.input_id!r}); rows written so far are kept — "
                                      f"rerun to resume: {exc}") from None
                except ray.exceptions.RayTaskError as exc:
                    self._cancel(pending)
                    raise exc.as_instanceof_cause() from None
                write(row, artefacts)
                n += 1
                bar.set_postfix(model=item.model)
                bar.update(1)
                feed(actor)
        return n

    def _cancel(self, pending: dict) -> None:
        for ref in pending:
            self._ray.cancel(ref)
        pending.clear()


RUNNERS = {"local": LocalRunner, "ray": RayRunner}


def make_runner(name: str, **kwargs):
    if name not in RUNNERS:
        raise ValueError(f"unknown runner {name!r}; choose {', '.join(RUNNERS)}")
    return RUNNERS[name](**kwargs)
