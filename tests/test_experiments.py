"""Tests for tutorial_lib.experiments: hashing, cached grids, stored histories."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tutorial_lib.experiments import config_hash, history_to_dict, load_history, load_record, run_grid


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
    """run_fn that records its calls and returns a made-up history."""

    def __init__(self):
        self.calls = []

    def __call__(self, config):
        self.calls.append(dict(config))
        losses = [1.0 / (epoch + config["x"]) for epoch in range(3)]
        return {"score": config["x"] ** 2, "history": {"loss": losses}}


def test_run_grid_caches_results_and_does_not_rerun(tmp_path):
    configs = [{"x": 1, "filters": [8, 16]}, {"x": 2, "filters": [8, 16]}]
    run = CountingRun()
    first = run_grid(configs, run, cache_dir=tmp_path)
    second = run_grid(configs, run, cache_dir=tmp_path)
    # Two configs, run once each: the second grid is served from disk.
    assert len(run.calls) == 2
    assert first["score"].tolist() == [1, 4] == second["score"].tolist()
    assert first["from_cache"].tolist() == [False, False]
    assert second["from_cache"].tolist() == [True, True]
    assert sorted(path.stem for path in tmp_path.glob("*.json")) == sorted(config_hash(c) for c in configs)
    # Lists become tuples so the table can be grouped by them.
    assert second["filters"].iloc[0] == (8, 16)
    assert "history" not in second.columns


def test_run_grid_only_runs_new_configs_and_force_reruns(tmp_path):
    run = CountingRun()
    run_grid([{"x": 1}], run, cache_dir=tmp_path)
    table = run_grid([{"x": 1}, {"x": 3}], run, cache_dir=tmp_path)
    assert [call["x"] for call in run.calls] == [1, 3]
    assert table["from_cache"].tolist() == [True, False]
    run_grid([{"x": 1}], run, cache_dir=tmp_path, force=True)
    assert [call["x"] for call in run.calls] == [1, 3, 1]


def test_history_is_stored_and_loaded_for_plotting(tmp_path):
    run_grid([{"x": 2}], CountingRun(), cache_dir=tmp_path)
    history = load_history({"x": 2}, cache_dir=tmp_path)
    # shape: 3 epochs x 1 metric; loss = 1 / (epoch + 2)
    assert history.shape == (3, 1)
    np.testing.assert_allclose(history["loss"], [1 / 2, 1 / 3, 1 / 4])
    record = load_record({"x": 2}, cache_dir=tmp_path)
    assert record["config"] == {"x": 2} and record["results"] == {"score": 4}


def test_unreadable_cache_file_is_rerun_with_warning(tmp_path):
    run = CountingRun()
    (tmp_path / f"{config_hash({'x': 1})}.json").write_text("{half written")
    with pytest.warns(UserWarning, match="unreadable"):
        table = run_grid([{"x": 1}], run, cache_dir=tmp_path)
    assert len(run.calls) == 1 and table["score"].tolist() == [1]
    assert json.loads((tmp_path / f"{config_hash({'x': 1})}.json").read_text())["results"] == {"score": 1}


@pytest.mark.parametrize(
    "result, message",
    [
        ("not a dict", "dict of results"),
        ({"x": 1.0}, "repeat configuration keys"),
        ({"model": object()}, "JSON"),
    ],
)
def test_run_grid_rejects_bad_results_without_writing(tmp_path, result, message):
    with pytest.raises(ValueError, match=message):
        run_grid([{"x": 1}], lambda config: result, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_history_to_dict_accepts_frames_dicts_and_keras_like_objects():
    frame = pd.DataFrame({"epoch": [0, 1], "loss": [0.5, 0.25]})

    class FakeHistory:
        history = {"loss": [np.float32(0.5), 0.25]}

    expected = {"loss": [0.5, 0.25]}
    assert history_to_dict(frame) == expected
    assert history_to_dict(FakeHistory()) == expected
    assert history_to_dict({"loss": (0.5, 0.25)}) == expected
    with pytest.raises(ValueError, match="History"):
        history_to_dict([0.5, 0.25])
