"""The benchmark suite's smoke mode: every script runs and prints tables of finite numbers.

Speed is not tested here (figures on a shared CI machine mean nothing); this
only keeps ``benchmarks/`` from rotting. One subprocess runs
``benchmarks/run_all.py --smoke`` under the current ``KERAS_BACKEND``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OWN_PROCESS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import as modules

EXPECTED_TABLES = (
    "Training step, Table 1 model",
    "Ours / PyTorch reference",
    "Whole-volume inference",
    "Input pipeline vs training step",
    "Augmentation cost per batch",
    "Preparation and cache reads vs NIfTI decompression",
    "A short training's fixed cost",
    "A grid's next training",
)


def _tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Parse the Markdown tables printed by ``common.print_table``: title -> rows."""
    tables, title, header = {}, None, None
    for line in text.splitlines():
        if line.startswith("### "):
            title, header = line[4:].strip(), None
            tables[title] = []
        elif line.startswith("|") and title is not None:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|- "):
                tables[title].append(dict(zip(header, cells)))
    return tables


def _numbers(row: dict[str, str]) -> list[float]:
    found = []
    for cell in row.values():
        try:
            found.append(float(cell))
        except ValueError:
            continue
    return found


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--smoke", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_every_table_is_printed(smoke_run: tuple[str, dict]) -> None:
    stdout, _ = smoke_run
    titles = list(_tables(stdout))
    for expected in EXPECTED_TABLES:
        assert any(title.startswith(expected) for title in titles), (expected, titles)


def test_table_numbers_are_finite_and_rows_present(smoke_run: tuple[str, dict]) -> None:
    stdout, _ = smoke_run
    for title, rows in _tables(stdout).items():
        assert rows, f"table {title!r} has no rows"
        for row in rows:
            numbers = _numbers(row)
            assert numbers, (title, row)
            assert all(math.isfinite(n) for n in numbers), (title, row)


def test_json_rows_have_positive_rates(smoke_run: tuple[str, dict]) -> None:
    _, payload = smoke_run
    rows = payload["rows"]
    assert {row["benchmark"] for row in rows} == {
        "bench_train_step", "bench_inference", "bench_pipeline", "bench_augment", "bench_prepare",
        "bench_short_training", "bench_grid_training"}
    for row in rows:
        for key in ("ms/step", "volumes/s", "TFLOP/s", "s/volume", "cases/s", "ours/PyTorch"):
            if key in row:
                assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    steps = [row for row in rows if "params" in row]
    # shape: Table 1 has 13,522,721 parameters in both frameworks
    assert {row["params"] for row in steps} == {13_522_721}


def test_eager_optimizer_build_learns_the_same_weights(smoke_run: tuple[str, dict]) -> None:
    """training.train builds Adam's variables before the first step; that must only move work, not change it."""
    _, payload = smoke_run
    rows = [row for row in payload["rows"] if row["benchmark"] == "bench_short_training"]
    assert [row["optimizer variables"] for row in rows] == ["lazy (Keras default)", "eager (training.train)"]
    assert all(row["same weights"] is True for row in rows), rows


def test_a_kept_network_learns_what_a_new_one_would(smoke_run: tuple[str, dict]) -> None:
    """training.train keeps a network's traced steps when it is trained again; that must only save time."""
    _, payload = smoke_run
    rows = [row for row in payload["rows"] if row["benchmark"] == "bench_grid_training"]
    assert [row["each training"] for row in rows] == ["new network (compile + trace)",
                                                      "kept network (training.train again)"]
    assert all(row["same weights"] is True for row in rows), rows


def test_table1_flops_match_between_keras_and_torch(smoke_run: tuple[str, dict]) -> None:
    """Each framework's count walks its own layers; for the same network they must agree."""
    _, payload = smoke_run
    steps = [row for row in payload["rows"] if "fwd GFLOP" in row]
    assert len(steps) == 2, steps
    # shape: 16x16x16 smoke volume; 164,224 forward FLOPs per input voxel is the hand sum
    # of Table 1's 14 conv/transposed-conv layers (see benchmarks/RESULTS.md)
    for row in steps:
        assert row["fwd GFLOP"] == pytest.approx(164_224 * 16**3 / 1e9, rel=1e-12), row


@OWN_PROCESS
def test_scripts_switch_on_onednn_before_any_framework_import() -> None:
    # The step benchmark once timed TensorFlow without oneDNN because `common`
    # imported TensorFlow before tutorial_lib had set the switch.
    environment = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import common; "
            "common.keras_device(); import os; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**environment, "KERAS_BACKEND": "tensorflow"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "1"


def test_profile_tables_group_small_types_and_rank_operations() -> None:
    import collections

    import profile_step

    # shape: (layer path, op type) -> ms; 3 types, top=2 folds the smallest into "other"
    times = collections.Counter({("a/conv", "Conv3DBackpropFilterV2"): 60.0,
                                 ("b/conv", "Conv3DBackpropFilterV2"): 20.0,
                                 ("a/conv", "FusedConv3D"): 15.0, ("a/relu", "ReluGrad"): 5.0})
    type_rows, op_rows = profile_step.tables(times, top=2)
    assert [row["op type"] for row in type_rows] == ["Conv3DBackpropFilterV2", "FusedConv3D",
                                                    "(1 other types)"]
    assert [row["share %"] for row in type_rows] == pytest.approx([80.0, 15.0, 5.0])
    assert [(row["operation"], row["ms"]) for row in op_rows] == [("a/conv", 60.0), ("b/conv", 20.0)]


@OWN_PROCESS
def test_profile_step_smoke_finds_the_convolution_gradients(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "profile_step.py"), "--smoke", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=180, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    types = [row for row in rows if "operation" not in row]
    # shape: 16x16x16 smoke volume; every one of Table 1's 14 convolutions has a weight gradient
    assert any("Conv3DBackpropFilter" in row["op type"] for row in types)
    assert sum(row["share %"] for row in types) == pytest.approx(100.0)


@OWN_PROCESS
def test_train_loop_smoke_runs_chapter_03s_loop(tmp_path: Path) -> None:
    out = tmp_path / "loop.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train_loop.py"), "--smoke",
                           "--precision", "bfloat16", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["steps"] == 2 and row["s/step"] > 0 and row["peak memory (GB)"] > 0
    assert row["gpu run, projected (h)"] == pytest.approx(row["s/step"] * 192 * 50 / 3600)


def test_seed_spread_runs_the_a_a_test_at_3_and_6_seeds_per_arm_where_it_has_the_runs() -> None:
    import numpy as np
    import seed_spread

    rng = np.random.default_rng(0)
    seed_means = rng.normal(0.6, 0.03, size=(12, 1))  # one configuration: seed spread plus case spread
    scores = {"test": np.clip(seed_means + rng.normal(0, 0.15, size=(12, 20)), 0, 1),
              "fresh": np.clip(seed_means[:8] + rng.normal(0, 0.15, size=(8, 60)), 0, 1)}
    rows = seed_spread.a_a_rows("patch", scores)
    # 12 runs make arms of 3 and 6; 8 runs only arms of 3
    assert [(row["cases"], row["seeds per arm"]) for row in rows] == [("test (20)", 3), ("test (20)", 6),
                                                                       ("fresh (60)", 3)]
    for row in rows:
        assert 0 <= row["false verdicts"] <= 0.2 and row["median width"] > 0 and row["splits"] > 0


@pytest.mark.parametrize("run_seconds, workers, expected", [
    # shape: run times in grid order, workers -> wall time, each run going to the first free worker
    ([4, 1, 1, 1, 1], 2, 4.0),  # one worker takes the 4, the other the four 1s
    ([1, 1, 4], 2, 5.0),  # the 4 waits for the first worker to be free
    ([3, 2], 1, 5.0),  # one worker: the sum
    ([2], 8, 2.0),  # idle workers do not shorten a run
])
def test_the_gpu_projection_hands_each_run_to_the_first_free_worker(run_seconds, workers, expected):
    import bench_grid_workers

    assert bench_grid_workers.grid_wall_seconds(run_seconds, workers) == expected


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax",
                    reason="the script runs in the TensorFlow pass; tests/test_workers.py checks JAX's workers")
def test_grid_workers_smoke_gives_the_serial_grid_and_projects_the_gpu_grid(tiny_cache: Path) -> None:
    import bench_grid_workers

    serial, spread = bench_grid_workers.main(["--smoke", "--cache-dir", str(tiny_cache)])
    assert [row["grid"] for row in (serial, spread)] == ["serial, this process", "2 local workers"]
    assert serial["same records"] and serial["same weights"] and spread["wall seconds"] > 0
    from tutorial_lib.config import get_profile

    one, four, eight = bench_grid_workers.project_gpu_grid(tiny_cache)
    gpu = get_profile("gpu", "ablations")  # 10 configurations, and the A/A test's further baseline seeds
    assert one["runs"] == 10 * gpu["seeds"] + gpu["a_a_seeds"] - gpu["seeds"]
    assert one["hours"] > four["hours"] > eight["hours"] >= one["hours"] / 8
