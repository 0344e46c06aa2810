"""A grid on worker processes: the serial grid's records, a killed worker resumed, one training per configuration.

The grids here run on a real local Dask cluster of two worker processes
(``workers.grid_client``), started once for the module.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
import sys
import threading
import time

import cloudpickle
import pytest
from conftest import recipe_config

from tutorial_lib import experiments, recipes, workers

# The workers cannot import this test module: its run functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    client = workers.grid_client(2, threads=1, scheduler="")
    yield client
    client.shutdown()


def _weights(folder):
    """The values of a run's saved weights (the HDF5 file's bytes also hold its write times)."""
    import h5py

    values = {}
    with h5py.File(folder / "final.weights.h5", "r") as weights:
        weights.visititems(lambda name, item: values.update({name: item[()].tobytes()})
                           if isinstance(item, h5py.Dataset) else None)
    return values


def test_two_workers_train_the_networks_and_records_of_the_serial_grid(client, tiny_cache, tmp_path):
    from tutorial_lib import _kernel

    _kernel.use_threads(1)  # what open_chapter does under ci, and what the workers run with
    configs = [recipe_config("ablations", tiny_cache, filters=[2, 4], epochs=1, patch_shape=[8, 8, 8],
                                     seed=seed) for seed in (0, 1, 2)]
    run_fn = functools.partial(recipes.train, cache_dir=tiny_cache)
    serial = experiments.run_grid(configs, run_fn, root=tmp_path / "serial")
    spread = experiments.run_grid(configs, run_fn, root=tmp_path / "spread", executor=client)
    timings = ["seconds", "epoch_cpu_seconds"]
    assert spread.drop(columns=timings).equals(serial.drop(columns=timings))  # same rows, same order, same values
    assert spread["seed"].tolist() == [0, 1, 2] and not spread["from_cache"].any()
    for config in configs:
        assert (_weights(experiments.run_dir(config, root=tmp_path / "spread"))
                == _weights(experiments.run_dir(config, root=tmp_path / "serial")))
    assert os.getpid() not in set(client.run(os.getpid).values())  # trained elsewhere
    assert set(client.run(os.environ.get, "TF_NUM_INTRAOP_THREADS").values()) == {"1"}  # the profile's threads


def _dies_once(config, folder):
    """A training that saves one epoch, then dies with its worker the first time; the second time it resumes."""
    saved = folder / "epochs.txt"
    done = int(saved.read_text()) if saved.exists() else 0
    saved.write_text(str(done + 1))  # epoch 1 (or 2) is saved, as training.train saves its backup
    if done == 0:
        os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-training, holding the run's lock
    return {"epochs": done + 1, "resumed_at": done, "worker": os.getpid()}


def test_a_worker_killed_mid_training_is_replaced_and_the_grid_resumes_the_run(client, tmp_path):
    configs = [{"run": "demo", "x": 1}, {"run": "demo", "x": 2}]
    before = set(client.run(os.getpid).values())
    table = experiments.run_grid(configs, _dies_once, root=tmp_path, executor=client)
    assert table["epochs"].tolist() == [2, 2] and table["resumed_at"].tolist() == [1, 1]  # each went on from epoch 1
    assert all(experiments.load_record(config, root=tmp_path) for config in configs)
    assert not list(tmp_path.glob("*.lock")), "a killed worker's lock is left behind"
    assert before - set(client.run(os.getpid).values()), "no worker was replaced"


def _slow_square(config, folder, *, calls):
    with open(calls, "a") as log:
        log.write(f"{config['x']}\n")
    time.sleep(1.5)  # long enough for the other grid to ask for the same run meanwhile
    return {"y": config["x"] ** 2}


def test_two_grids_asking_for_one_configuration_at_once_train_it_once(client, tmp_path):
    calls = tmp_path / "calls.txt"
    run_fn = functools.partial(_slow_square, calls=str(calls))
    grids = {"first": [{"run": "demo", "x": 3}, {"run": "demo", "x": 4}],
             "second": [{"run": "demo", "x": 3}, {"run": "demo", "x": 5}]}
    tables = {}

    def run(name):
        tables[name] = experiments.run_grid(grids[name], run_fn, root=tmp_path / "runs", executor=client)

    threads = [threading.Thread(target=run, args=(name,)) for name in grids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(calls.read_text().split()) == ["3", "4", "5"]  # x = 3 trained once for both grids
    assert tables["first"]["y"].tolist() == [9, 16] and tables["second"]["y"].tolist() == [9, 25]
    assert sorted([tables["first"]["from_cache"][0], tables["second"]["from_cache"][0]]) == [False, True]


def _square(config, folder):
    return {"y": config["x"] ** 2, "worker": os.getpid()}


def test_any_concurrent_futures_executor_of_processes_will_do(tmp_path):
    configs = [{"run": "demo", "x": x} for x in (3, 1, 2)]
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        table = experiments.run_grid(configs, _square, root=tmp_path, executor=pool)
    assert table["y"].tolist() == [9, 1, 4] and os.getpid() not in set(table["worker"])


def test_a_failed_run_stops_the_grid_with_its_error_and_records_nothing(client, tmp_path):
    with pytest.raises(ValueError, match="dict of results"):
        experiments.run_grid([{"run": "demo", "x": 1}], lambda config, folder: 7, root=tmp_path, executor=client)
    assert experiments.load_record({"run": "demo", "x": 1}, root=tmp_path) is None


def test_a_scheduler_address_wins_over_local_workers(client, monkeypatch):
    monkeypatch.setenv(workers.SCHEDULER_VARIABLE, client.scheduler.address)
    connected = workers.grid_client(1)
    try:
        assert connected.scheduler.address == client.scheduler.address
        assert len(connected.scheduler_info()["workers"]) == 2
    finally:
        connected.close()  # the scheduler and its workers are someone else's: left running


@pytest.mark.parametrize("workers_asked, visible, expected", [
    (1, None, None),  # one worker: the chapter's own process
    ("gpus", "", None),  # no GPU: the chapter's own process
    ("gpus", "-1", None),
])
def test_one_worker_or_no_gpu_trains_in_the_chapters_process(monkeypatch, workers_asked, visible, expected):
    monkeypatch.delenv(workers.SCHEDULER_VARIABLE, raising=False)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert workers.grid_client(workers_asked) is expected


@pytest.mark.parametrize("visible, expected", [("", []), ("-1", []), ("0", ["0"]), ("2, 3", ["2", "3"])])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert workers.visible_gpus() == expected


def test_each_worker_gets_its_thread_count_and_one_gpu(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert workers.worker_environment(4, threads=None, gpu="3").items() >= {
        "TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "4", "CUDA_VISIBLE_DEVICES": "3"}.items()
    assert workers.worker_environment(4, threads=1)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in workers.worker_environment(2, threads=1)


@pytest.mark.parametrize("asked", [0, -1, "all", 2.5, True])
def test_a_bad_worker_count_names_what_is_allowed(asked):
    with pytest.raises(ValueError, match="count of at least 1 or 'gpus'"):
        workers.grid_client(asked, scheduler="")


def _seeded_draw_after_a_while():
    import random

    random.seed(0)
    time.sleep(3)  # a worker's heartbeats come about once a second
    return random.random()


def test_a_workers_own_threads_leave_pythons_random_generator_to_the_training(client):
    import random

    # Keras seeds a new layer's initial weights from this generator: nothing else may draw from it meanwhile.
    assert client.submit(_seeded_draw_after_a_while, pure=False).result() == random.Random(0).random()
