"""Tests for tutorial_lib.experiments: hashing, run folders, the one run cache and grids on it."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tutorial_lib import experiments
from tutorial_lib._files import DiskFullError, atomic_path
from tutorial_lib.experiments import RECORD_FILE, cached_run, config_hash, data_id, load_record, run_dir, run_grid


@pytest.mark.parametrize(
    "first, second, same",
    [
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),  # key order is irrelevant
        ({"filters": (16, 32)}, {"filters": [16, 32]}, True),  # tuples hash like lists
        ({"lr": np.float64(0.5)}, {"lr": 0.5}, True),  # NumPy scalars are plain numbers
        ({"lr": 1e-4}, {"lr": 1e-3}, False),
        ({"loss": "dice"}, {"loss": "dice", "epochs": 2}, False),
    ],
)
def test_config_hash_is_stable_and_discriminating(first, second, same):
    assert (config_hash(first) == config_hash(second)) is same
    assert len(config_hash(first)) == 16


def test_config_hash_rejects_non_json_values():
    with pytest.raises(ValueError, match="JSON"):
        config_hash({"model": object()})
    with pytest.raises(ValueError, match="dict"):
        config_hash([("a", 1)])


class CountingRun:
    """run_fn that records its calls and writes a file into its run folder."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, folder):
        self.calls.append(dict(config))
        (folder / "weights.txt").write_text("trained")
        return {"score": config["x"] ** 2}


def grid_configs():
    return [{"run": "demo", "x": 1, "filters": [8, 16]}, {"run": "demo", "x": 2, "filters": [8, 16]}]


def test_run_dir_names_the_kind_and_hashes_every_setting(tmp_path):
    config = {"run": "unet3d", "epochs": 2}
    assert run_dir(config, root=tmp_path) == tmp_path / f"unet3d-{config_hash(config)}"
    assert run_dir({**config, "epochs": 3}, root=tmp_path) != run_dir(config, root=tmp_path)
    for bad in ({"epochs": 2}, {"run": "../up"}, {"run": "Has Space"}):
        with pytest.raises(ValueError, match="'run' name"):
            run_dir(bad, root=tmp_path)


def test_run_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("BRATS_COURSE_RUNS", raising=False)
    monkeypatch.setenv("BRATS_COURSE_DATA", str(tmp_path / "data"))
    assert experiments.run_root() == tmp_path / "data" / "runs"
    monkeypatch.setenv("BRATS_COURSE_RUNS", str(tmp_path / "elsewhere"))
    assert experiments.run_root() == tmp_path / "elsewhere"
    assert run_dir({"run": "demo"}).parent == tmp_path / "elsewhere"


def test_data_id_tells_caches_with_one_name_apart(tmp_path):
    first, second = tmp_path / "a" / "cache", tmp_path / "b" / "cache"
    for folder, cases in ((first, {"x": {}}), (second, {"y": {}})):
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"version": 1, "cases": cases}))
    assert data_id(first).startswith("cache-") and data_id(first) != data_id(second)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        data_id(tmp_path)


def test_cached_run_records_once_and_reads_back(tmp_path):
    run = CountingRun()
    config = {"run": "demo", "x": 3}
    assert cached_run(config, run, root=tmp_path) == ({"config": config, "results": {"score": 9}}, False)
    assert cached_run(config, run, root=tmp_path)[1] is True and len(run.calls) == 1
    folder = run_dir(config, root=tmp_path)
    assert json.loads((folder / RECORD_FILE).read_text())["results"] == {"score": 9}
    assert load_record(config, root=tmp_path)["config"] == config


def test_half_finished_run_is_handed_its_folder_again(tmp_path):
    # A kill before the record is written leaves the folder; the next call resumes in it.
    config = {"run": "demo", "x": 2}
    folder = run_dir(config, root=tmp_path)
    folder.mkdir(parents=True)
    (folder / "backup.txt").write_text("epoch 3")
    seen = []
    record, from_cache = cached_run(config, lambda c, f: seen.append(sorted(p.name for p in f.iterdir())) or {"s": 1},
                                    root=tmp_path)
    assert seen == [["backup.txt"]] and from_cache is False and record["results"] == {"s": 1}


def test_force_starts_the_run_from_scratch(tmp_path):
    run = CountingRun()
    config = {"run": "demo", "x": 1}
    cached_run(config, run, root=tmp_path)
    (run_dir(config, root=tmp_path) / "stale.txt").write_text("old")
    cached_run(config, run, root=tmp_path, force=True)
    assert len(run.calls) == 2 and not (run_dir(config, root=tmp_path) / "stale.txt").exists()


def test_run_grid_caches_results_and_does_not_rerun(tmp_path):
    run = CountingRun()
    first = run_grid(grid_configs(), run, root=tmp_path)
    second = run_grid(grid_configs(), run, root=tmp_path)
    assert len(run.calls) == 2  # two configurations, each run once
    assert first["score"].tolist() == [1, 4] == second["score"].tolist()
    assert first["from_cache"].tolist() == [False, False] and second["from_cache"].tolist() == [True, True]
    assert second["filters"].iloc[0] == (8, 16)  # lists become tuples so the table can be grouped
    assert second["config_hash"].tolist() == [config_hash(c) for c in grid_configs()]


def test_unreadable_record_is_rerun_with_warning(tmp_path):
    run = CountingRun()
    config = {"run": "demo", "x": 1}
    folder = run_dir(config, root=tmp_path)
    folder.mkdir(parents=True)
    (folder / RECORD_FILE).write_text("{half written")
    with pytest.warns(UserWarning, match="unreadable"):
        table = run_grid([config], run, root=tmp_path)
    assert len(run.calls) == 1 and table["score"].tolist() == [1]
    assert json.loads((folder / RECORD_FILE).read_text())["results"] == {"score": 1}


@pytest.mark.parametrize(
    "result, message",
    [
        ("not a dict", "dict of results"),
        ({"x": 1.0}, "repeat configuration keys"),
        ({"model": object()}, "JSON"),
    ],
)
def test_run_grid_rejects_bad_results_without_recording(tmp_path, result, message):
    config = {"run": "demo", "x": 1}
    with pytest.raises(ValueError, match=message):
        run_grid([config], lambda config, folder: result, root=tmp_path)
    assert load_record(config, root=tmp_path) is None


# Two interpreters that ask for the same run at once: each appends to `calls` when it trains.
_RACER = """
import sys, time
from pathlib import Path
from tutorial_lib.experiments import cached_run
root, calls = Path(sys.argv[1]), Path(sys.argv[2])
def slow_square(config, folder):
    with calls.open("a") as log:
        log.write(f"trained in {folder.name}\\n")
    time.sleep(1.0)  # long enough for the other process to arrive while this one trains
    return {"y": config["x"] ** 2}
while not (root / "go").exists():
    time.sleep(0.01)
record, from_cache = cached_run({"run": "demo", "x": 3}, slow_square, root=root)
print(record["results"]["y"], from_cache)
"""


def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    calls = tmp_path / "calls.txt"
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), str(calls)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    (tmp_path / "go").touch()  # both start together, once both interpreters are up
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err[-2000:] for _, err in outputs]
    assert calls.read_text().count("trained") == 1, calls.read_text()
    assert sorted(out.strip() for out, _ in outputs) == ["9 False", "9 True"]  # one trained, one read
    assert not list(tmp_path.glob("*.lock")), "the lock file is left behind"


def _save_weights(config, folder):
    """A run that saves 80 kB of weights the way training does (through atomic_path) and a history."""
    with atomic_path(folder / "best.weights.npy", suffix=".npy") as temporary:
        np.save(temporary, np.zeros(10_000))
    (folder / "history.csv").write_text("epoch,loss\n0,1.0\n")
    return {"score": config["x"]}


@pytest.mark.parametrize("form", ["short write", "ENOSPC"])
def test_a_full_disk_during_a_run_says_what_a_run_of_its_kind_takes(tmp_path, monkeypatch, form):
    from test_files import FullDisk, needed_bytes

    cached_run({"run": "demo", "x": 1}, _save_weights, root=tmp_path)
    finished_bytes = sum(path.stat().st_size for path in run_dir({"run": "demo", "x": 1}, root=tmp_path).iterdir())
    FullDisk(monkeypatch, room=1000, form=form)
    config = {"run": "demo", "x": 2}
    folder = run_dir(config, root=tmp_path)
    with pytest.raises(DiskFullError) as caught:
        cached_run(config, _save_weights, root=tmp_path)
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert message.startswith(f"the disk holding {folder} is full: ")
    assert message.endswith(" needed for this demo run; free space there or point BRATS_COURSE_RUNS at another disk")
    assert needed_bytes(message) == pytest.approx(finished_bytes, rel=0.02)  # nothing of this run was kept
    assert load_record(config, root=tmp_path) is None and list(folder.iterdir()) == []  # no temporary either
    assert load_record({"run": "demo", "x": 1}, root=tmp_path)["results"] == {"score": 1}
    monkeypatch.undo()  # space freed
    assert cached_run(config, _save_weights, root=tmp_path) == ({"config": config, "results": {"score": 2}}, False)


def test_a_full_disk_in_the_first_run_of_its_kind_and_on_another_disk(tmp_path):
    config = {"run": "first", "x": 1}
    folder = run_dir(config, root=tmp_path)

    def full(config, out):  # as h5py reports it: errno, no file name
        raise OSError(errno.ENOSPC, "Can't synchronously write data (file write failed)")

    with pytest.raises(DiskFullError, match=f"^the disk holding {re.escape(str(folder))} is full "
                                            r"\(writing this first run\): [\d.]+ [kMG]?B free; free space"):
        cached_run(config, full, root=tmp_path)

    elsewhere = OSError(errno.ENOSPC, "No space left on device", "/mnt/scratch/features.npy")

    def fills_another_disk(config, out):
        raise elsewhere

    with pytest.raises(OSError) as caught:
        cached_run(config, fills_another_disk, root=tmp_path)
    assert caught.value is elsewhere  # that disk is not the run cache's: left as it was
    assert load_record(config, root=tmp_path) is None


def test_a_full_disk_while_writing_the_record_keeps_the_trained_run(tmp_path, monkeypatch):
    config = {"run": "demo", "x": 3}

    def no_room(path, payload, **kwargs):
        with atomic_path(path) as temporary:
            temporary.write_text("{")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(experiments, "write_json_atomic", no_room)
    with pytest.raises(DiskFullError, match="BRATS_COURSE_RUNS"):
        cached_run(config, _save_weights, root=tmp_path)
    folder = run_dir(config, root=tmp_path)
    assert sorted(path.name for path in folder.iterdir()) == ["best.weights.npy", "history.csv"]
