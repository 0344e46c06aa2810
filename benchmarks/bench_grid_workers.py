"""Chapter 05's grid of trainings: one after another in this process, and on a local cluster of Dask workers.

The chapter's ten ablation configurations (its cell "ABLATIONS"), each with
the profile's seeds, are trained twice into two fresh run roots: serially
(``experiments.run_grid`` without an executor) and on ``--workers`` worker
processes (``workers.grid_client``). The script prints both wall times, the
speed-up, and whether the two runs ended in the same records (timings aside)
and the same values in the saved weights, bit for bit.

It then projects the ``gpu`` profile's grid (whole 192 x 192 x 160 volumes,
real BraTS's 285 cases) onto 1, 4 and 8 GPUs: each run's cost is its
network's training FLOPs (``costs.forward_flops``, three forward passes a
step) at an A100's bfloat16 peak times the share chapter 03 assumes, and the
runs go to the first free GPU in grid order (:func:`grid_wall_seconds`).
No GPU measured these: validation passes and the input pipeline come on top.

Examples
--------
::

    python benchmarks/bench_grid_workers.py                 # ci: 10 configurations x 3 seeds, 2 workers
    taskset -c 0,1 python benchmarks/bench_grid_workers.py  # as on CI's 2 cores
    python benchmarks/bench_grid_workers.py --smoke         # 2 configurations x 1 seed, 1 epoch
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import tempfile
import time
from pathlib import Path
from typing import Any

import common

__all__ = ["ablation_grid", "project_gpu_grid", "main"]

GPU_COUNTS = (1, 4, 8)
# The share of a data-sheet peak a 3D U-Net step reaches: chapter 03's assumption, until a GPU measures it.
UTILISATION = 0.3
# Result keys that time a run: they differ between any two runs.
TIMING_KEYS = ("seconds", "epoch_cpu_seconds")
# Chapter 05's ablations, one change each from its baseline (notebooks/05_ablations.ipynb, "ABLATIONS").
ABLATION_CHANGES = ({}, {"kernel_size": 5}, {"skips": "none"}, {"upsampling": "nearest"}, {"filters": "wide"},
                    {"dropout": 0.2}, {"dropout": 0.5}, {"activation": "leaky_relu"}, {"convs_per_level": 1},
                    {"optimizer": "sgd", "learning_rate": "10x"})


def ablation_grid(profile: str, cache_dir: Path, *, seeds: int, epochs: int | None = None) -> list[dict[str, Any]]:
    """Chapter 05's configurations of ``profile``, each with seeds ``0 .. seeds - 1``."""
    from tutorial_lib import recipes
    from tutorial_lib.config import get_profile
    from tutorial_lib.experiments import data_id

    settings = get_profile(profile, "ablations")
    resolved = {"wide": list(settings["wide_filters"]), "10x": 10 * settings["learning_rate"]}
    configs = []
    for changes in ABLATION_CHANGES:
        changes = {key: resolved.get(value, value) if isinstance(value, str) else value
                   for key, value in changes.items()}
        for seed in range(seeds):
            configs.append(recipes.config("ablations", settings, profile=profile, data=data_id(cache_dir), seed=seed,
                                          **({"epochs": epochs} if epochs else {}), **changes))
    return configs


def grid_wall_seconds(run_seconds: list[float], workers: int) -> float:
    """Wall time of a grid whose runs take ``run_seconds``, each given in turn to the first free worker.

    That is how the scheduler hands out a grid's equal-priority tasks; start-up
    costs and shared file systems come on top.

    Examples
    --------
    >>> grid_wall_seconds([4, 1, 1, 1, 1], 2)  # one worker takes the 4, the other the four 1s
    4.0
    >>> grid_wall_seconds([1, 1, 4], 2)
    5.0
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    free_at = [0.0] * workers
    for seconds in run_seconds:
        heapq.heappush(free_at, heapq.heappop(free_at) + float(seconds))
    return max(free_at)


def project_gpu_grid(cache_dir: Path, *, gpu: str = "A100") -> list[dict[str, Any]]:
    """Chapter 05's ``gpu`` grid, its A/A seeds included, projected onto ``GPU_COUNTS`` GPUs of class ``gpu``."""
    import math

    from tutorial_lib import costs, ingest, recipes
    from tutorial_lib.config import get_profile
    from tutorial_lib.experiments import config_hash

    settings = get_profile("gpu", "ablations")
    configs = ablation_grid("gpu", cache_dir, seeds=settings["seeds"])
    baseline = configs[0]
    configs += [{**baseline, "seed": seed} for seed in range(settings["seeds"], settings["a_a_seeds"])]
    steps = math.ceil(ingest.split_sizes(settings["n_cases"])[0] * settings["patches_per_case"]
                      / settings["batch_size"])
    speed = costs.REFERENCE_GPUS[gpu].peak_tflops * 1e12 * UTILISATION
    flops = {}  # per architecture: the seeds of one configuration cost the same
    for config in configs:
        architecture = config_hash({**config, "seed": 0})
        if architecture not in flops:
            model = recipes.build_unet3d(config, spatial_shape=(192, 192, 160))
            flops[architecture] = costs.TRAINING_FLOPS_PER_FORWARD * costs.forward_flops(
                model, batch_size=settings["batch_size"])
    run_seconds = [flops[config_hash({**config, "seed": 0})] * steps * config["epochs"] / speed
                   for config in configs]
    return [{"GPUs": count, "runs": len(configs), "hours": grid_wall_seconds(run_seconds, count) / 3600,
             "median run (h)": sorted(run_seconds)[len(run_seconds) // 2] / 3600} for count in GPU_COUNTS]


def _weights_digest(run_folder: Path) -> str:
    """A hash of the values of the run's saved weights (an HDF5 file's bytes also hold its write times)."""
    import h5py

    digest = hashlib.sha256()
    for path in sorted(run_folder.glob("*.weights.h5")):
        with h5py.File(path, "r") as weights:
            weights.visititems(lambda name, item: digest.update(name.encode() + item[()].tobytes())
                               if isinstance(item, h5py.Dataset) else None)
    return digest.hexdigest()


def _untimed(results: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in results.items() if key not in TIMING_KEYS}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="ci", help="run profile of the grid (default: ci)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default: 2)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="a prepared cache to train on (default: the profile's synthetic data)")
    args = parser.parse_args(argv)
    common.apply_backend(args.backend)
    from tutorial_lib import _kernel, course_data, experiments, recipes, workers
    from tutorial_lib.config import get_profile

    threads = get_profile(args.profile, "execution")["threads"]
    _kernel.use_threads(threads)  # as open_chapter does, so this process trains what a worker trains
    cache_dir = Path(args.cache_dir or course_data.ensure_course_data(args.profile)).resolve()
    seeds = 1 if args.smoke else get_profile(args.profile, "ablations")["seeds"]
    configs = ablation_grid(args.profile, cache_dir, seeds=seeds, epochs=1 if args.smoke else None)
    if args.smoke:
        configs = configs[:2]
    run_fn = functools.partial(recipes.train, cache_dir=cache_dir)
    rows, tables = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_workers_") as tmp:
        for name, workers_count in (("serial, this process", 1), (f"{args.workers} local workers", args.workers)):
            root = Path(tmp) / f"runs-{workers_count}"
            started = time.perf_counter()
            client = workers.grid_client(workers_count, threads=threads, scheduler="")
            try:
                tables[name] = experiments.run_grid(configs, run_fn, root=root, executor=client, description=name)
            finally:
                if client is not None:
                    client.shutdown()  # its cluster too
            seconds = time.perf_counter() - started
            digests = [_weights_digest(experiments.run_dir(config, root=root)) for config in configs]
            records = [_untimed(experiments.load_record(config, root=root)["results"]) for config in configs]
            rows.append({"grid": name, "runs": len(configs), "seconds": seconds, "digests": digests,
                         "records": records})
    serial, parallel = rows
    same_records = serial["records"] == parallel["records"]
    same_weights = serial["digests"] == parallel["digests"]
    table = [{"grid": row["grid"], "runs": row["runs"], "wall seconds": row["seconds"],
              "speed-up": serial["seconds"] / row["seconds"]} for row in rows]
    common.print_table(f"Chapter 05's {args.profile} grid ({common.active_backend()})", table)
    print(f"\nsame records (timings aside): {same_records}; same weights: {same_weights}")
    projection = project_gpu_grid(cache_dir)
    common.print_table(f"Chapter 05's gpu grid projected on A100s at {UTILISATION:.0%} of the bfloat16 peak "
                       "(steps only)", projection)
    if args.json:
        common.write_json(args.json, table)
    return [{**row, "same records": same_records, "same weights": same_weights} for row in table]


if __name__ == "__main__":
    main()
