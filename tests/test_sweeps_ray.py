"""Sweeps on a Ray instance started by the test (2 CPUs, two announced GPUs, no dashboard,
200 MB object store): the same tables as the local runner, a worker process killed mid-run,
and GPU placement (each actor gets its own GPU id and ``CUDA_VISIBLE_DEVICES``; the GPUs are
announced, not real, so the models stay on the CPU here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interp_toolkit.sweeps import LocalRunner, RayRunner, run_sweep
from interp_toolkit.sweeps.store import RUN_COLUMNS

if os.environ.get("CI"):
    import ray  # noqa: F401  (under CI a missing Ray is a failure, not a skip)
else:
    pytest.importorskip("ray")

pytestmark = pytest.mark.slow

MODELS = ["tiny-random-gpt2", "tiny-random-llama"]
INPUTS = [("p0", "the cat sat on the warm mat"), ("p1", "a dog ran in the park today"),
          ("p2", "x"), ("p3", "we ate bread and soft cheese")]
TRACE_CFG = {"sizes": [0.05, 0.3], "unigram": "none"}
INTER_CFG = {"n": 4}


@pytest.fixture(scope="module")
def ray_runner():
    here = str(Path(__file__).parent)
    root = str(Path(__file__).parent.parent)
    old = os.environ.get("PYTHONPATH")
    # workers inherit this environment: they import the package and sweep_support from here
    os.environ["PYTHONPATH"] = os.pathsep.join([root, here] + ([old] if old else []))
    runner = RayRunner(num_cpus=2, object_store_mb=200, local_gpus=2, threads_per_worker=1)
    runner.start()
    yield runner
    runner.close()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """Everything but the run's own columns (timings, host, versions), one row per key."""
    drop = [c for c in table.columns if c in RUN_COLUMNS or c.startswith("time_") or c.endswith("_s")]
    return table.drop(columns=drop).sort_values("key").reset_index(drop=True)


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = comparable(a), comparable(b)
    assert list(a.columns) == list(b.columns) and list(a["key"]) == list(b["key"])
    for col in a.columns:
        for x, y in zip(a[col], b[col]):
            if isinstance(x, (list, np.ndarray)):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=col)
            elif isinstance(x, float) and np.isnan(x):
                assert isinstance(y, float) and np.isnan(y), col
            else:
                assert x == y, col


@pytest.mark.parametrize("analysis,config", [("trace", TRACE_CFG), ("interactions", INTER_CFG)])
def test_ray_table_equals_local(tmp_path, ray_runner, analysis, config):
    local = run_sweep(analysis, INPUTS, MODELS, tmp_path / "local", config=config, progress=False)
    remote = run_sweep(analysis, INPUTS, MODELS, tmp_path / "ray", config=config, runner=ray_runner,
                       progress=False)
    assert remote.n_run == len(INPUTS) * len(MODELS) and len(remote.table) == remote.n_run
    assert_same_table(local.table, remote.table)


def test_killed_worker_retried_every_item_once(tmp_path, ray_runner):
    import sweep_support  # noqa: F401  (registers the analysis that kills its worker once)

    marker = tmp_path / "crashed"
    options = {"marker": str(marker), "crash_on": "p1"}
    run = run_sweep("interactions-crash-once", INPUTS, MODELS, tmp_path / "ray", config=INTER_CFG,
                    options=options, runner=ray_runner, progress=False)
    assert marker.exists()  # a worker process did die (its pid is in the marker)
    assert int(marker.read_text()) != os.getpid()
    t = run.table
    assert len(t) == len(INPUTS) * len(MODELS) and t["key"].is_unique
    assert sorted(zip(t["model"], t["input_id"])) == sorted((m, i) for m in MODELS for i, _ in INPUTS)
    # numbers equal to the local runner's (keys differ only by the analysis name)
    local = run_sweep("interactions", INPUTS, MODELS, tmp_path / "local", config=INTER_CFG, progress=False).table
    cols = ["model", "input_id", "target", "v", "i_and", "i_or", "l1"]
    a = t[cols].sort_values(["model", "input_id"]).reset_index(drop=True)
    b = local[cols].sort_values(["model", "input_id"]).reset_index(drop=True)
    for col in cols:
        for x, y in zip(a[col], b[col]):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=col)
    # the store holds one file per item: a rerun has nothing left to do
    again = run_sweep("interactions-crash-once", INPUTS, MODELS, tmp_path / "ray", config=INTER_CFG,
                      options=options, runner=ray_runner, progress=False)
    assert again.n_run == 0 and again.n_skipped == len(t)



def test_workers_that_cannot_fit_are_refused(tmp_path, ray_runner):
    """More workers than the cluster has CPUs would wait for ever: a clear error, nothing written."""
    import ray

    from interp_toolkit.sweeps import RunnerError

    runner = RayRunner(threads_per_worker=int(ray.cluster_resources()["CPU"]) + 1)
    with pytest.raises(RunnerError, match="the cluster has"):
        run_sweep("interactions", INPUTS, MODELS[:1], tmp_path / "s", config=INTER_CFG, runner=runner, progress=False)
    runner.close()
    assert not list((tmp_path / "s" / "rows").glob("*"))


def test_gpu_placement_one_gpu_per_actor(tmp_path, ray_runner):
    """The cluster announces GPUs, so each actor asks for one: Ray gives each its own id and
    sets ``CUDA_VISIBLE_DEVICES`` to it before the model loads."""
    import torch

    assert ray_runner._actor_options()["num_gpus"] == 1
    run_sweep("lens", INPUTS[:1], MODELS, tmp_path / "s", runner=ray_runner, progress=False)
    places = ray_runner.placements()
    assert sorted(places) == sorted(MODELS)
    ids = []
    for model, group in places.items():
        assert len(group) == 1 and len(group[0]["gpu_ids"]) == 1, group
        ids.append(group[0]["gpu_ids"][0])
        assert group[0]["cuda_visible_devices"] == group[0]["gpu_ids"][0]
        assert group[0]["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
        assert group[0]["pid"] != os.getpid()
    assert len(set(ids)) == len(MODELS)  # two actors never share one GPU
