"""Training-time augmentation's cost per batch, next to the training step it feeds.

Reads the patches of chapter 06's ``ci`` patch network (``patch_unet``:
24^3 patches of all four modalities, whole-tumour target, 2 patches per
case, batch 2, 90% centred on tumour) with ``tutorial_lib.datasets.PatchDataset``,
without augmentation and with the default ``tutorial_lib.augment.Augmentation``,
side by side in one run: one untimed pass over every case, then alternating
timed passes (``--steps``, 5 by default), each the mean time of
``dataset[i]`` over an epoch's batches for one reader thread, as Keras
consumes a ``PyDataset`` with ``workers=1``. Reported is the median over the
passes: the augmentation draws differ from batch to batch (a rotation or
scaling is drawn for about one patch in three), so a whole epoch's mean is
what training pays.

Beside it, one ``train_on_batch`` of that network
(``recipes.build_unet3d`` of chapter 06's ``ci`` configuration, Adam and
the ``dice_probability`` loss) on the same batches: the added reading time
as a share of the step says whether augmentation slows training down when
the reader runs in the training thread.

With ``--trainings N``, also N alternating pairs of whole trainings of that
network (``recipes.train_unet3d``: its epochs, with a validation pass after
each, in fresh run folders, seeds 10, 11, ...), without and with the
augmentation of the ``another_site`` profile group: what a chapter pays.

The cache is read from ``--cache``, or built in a temporary folder from
freshly generated cases (``--cases``, ``--downsample`` 4 as the ``ci``
profile) or given ones (``--raw``).

Examples
--------
::

    python benchmarks/bench_augment.py --cache data/cache/synthetic-n32-k4 --trainings 4
    python benchmarks/bench_augment.py --smoke
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

__all__ = ["measure_reads", "measure_step", "measure_trainings", "main"]


def _readers(cache_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    from tutorial_lib.augment import Augmentation
    from tutorial_lib.data import load_manifest
    from tutorial_lib.datasets import PatchDataset

    case_ids = sorted(load_manifest(cache_dir)["cases"])
    options = dict(patch_shape=config["patch_shape"], patches_per_case=config["patches_per_case"],
                   tumour_fraction=config["tumour_fraction"], modalities=config["modalities"],
                   target=config["target"], batch_size=config["batch_size"], shuffle=True, seed=0)
    return {"without": PatchDataset(cache_dir, case_ids, **options),
            "with": PatchDataset(cache_dir, case_ids, augmentation=Augmentation(), **options)}


def measure_reads(readers: dict[str, Any], *, passes: int) -> dict[str, float]:
    """Median over ``passes`` (after one untimed pass) of each reader's mean ms per ``dataset[i]``."""
    times: dict[str, list[float]] = {name: [] for name in readers}
    for index in range(passes + 1):
        for name, reader in readers.items():  # alternating, so a busy spell hits both
            start = time.perf_counter()
            for batch in range(len(reader)):
                reader[batch]
            if index:
                times[name].append(1000 * (time.perf_counter() - start) / len(reader))
            reader.on_epoch_end()
    return {name: statistics.median(values) for name, values in times.items()}


def measure_step(config: dict[str, Any], batches: list[tuple[Any, Any]], *, steps: int, warmup: int) -> float:
    """Median ms of one ``train_on_batch`` of the configuration's network, cycling through ``batches``."""
    import keras

    from tutorial_lib import losses, recipes

    keras.utils.set_random_seed(0)
    model = recipes.build_unet3d(config)
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]), loss=losses.dice_probability_loss)
    calls = iter(range(steps + warmup))

    def step() -> None:
        x, y = batches[next(calls) % len(batches)]
        float(model.train_on_batch(x, y))  # a Python float: waits until the step is done

    return 1000 * statistics.median(common.time_steps(step, steps=steps, warmup=warmup))


def measure_trainings(cache_dir: Path, config: dict[str, Any], *, pairs: int) -> dict[str, list[float]]:
    """Seconds of ``pairs`` alternating whole trainings of ``config`` without and with augmentation."""
    from tutorial_lib import recipes
    from tutorial_lib.config import get_profile

    augmentation = dict(get_profile("ci", "another_site")["augmentation"])
    seconds: dict[str, list[float]] = {"without": [], "with": []}
    for pair in range(pairs):
        for name, changes in (("without", {}), ("with", {"augmentation": augmentation})):
            run = {**config, "seed": 10 + pair, **changes}
            with tempfile.TemporaryDirectory(prefix="bench_augment_run_") as root:
                start = time.perf_counter()
                recipes.train_unet3d(run, Path(root) / "run", cache_dir=cache_dir)
                seconds[name].append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Time batch reads with and without augmentation and the train step; print the table."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="read this prepared cache")
    parser.add_argument("--raw", type=Path, default=None,
                        help="prepare this folder of BraTS-style cases instead of generating")
    parser.add_argument("--cases", type=int, default=None, help="cases to generate (default 4; 1 in --smoke)")
    parser.add_argument("--downsample", type=int, default=4, help="cache factor K when preparing (default 4)")
    parser.add_argument("--workers", type=int, default=1, help="processes for generation")
    parser.add_argument("--trainings", type=int, default=0,
                        help="also time this many pairs of whole trainings without and with augmentation")
    args = parser.parse_args(argv)
    common.apply_smoke_settings(args.smoke)
    common.apply_backend(args.backend)
    from tutorial_lib import recipes
    from tutorial_lib.config import get_profile
    from tutorial_lib.experiments import data_id

    with tempfile.TemporaryDirectory(prefix="bench_augment_") as tmp:
        cache, made = (args.cache, "existing cache") if args.cache else common.prepared_cache(
            Path(tmp), args.raw, cases=args.cases or (1 if args.smoke else 4), downsample=args.downsample,
            workers=args.workers)
        config = recipes.config("patch_unet", get_profile("ci", "patch_unet"), profile="ci", data=data_id(cache))
        readers = _readers(cache, config)
        read_ms = measure_reads(readers, passes=args.steps or (1 if args.smoke else 5))
        batches = [readers["with"][index] for index in range(len(readers["with"]))]
        step_ms = measure_step(config, batches, steps=2 if args.smoke else 20, warmup=2 if args.smoke else 5)
        trainings = measure_trainings(cache, config, pairs=args.trainings) if args.trainings else None
    added = read_ms["with"] - read_ms["without"]
    rows = [{"patch": tuple(config["patch_shape"]), "batch": config["batch_size"],
             "channels": batches[0][0].shape[-1], "read without (ms)": read_ms["without"],
             "read with (ms)": read_ms["with"], "added (ms)": added, "train step (ms)": step_ms,
             "added / step (%)": 100 * added / step_ms}]
    common.print_table(f"Augmentation cost per batch ({made}, keras/{common.active_backend()}, "
                       f"{len(readers['with'])} batches per pass)", rows)
    if trainings:
        without, with_ = (statistics.median(trainings[name]) for name in ("without", "with"))
        runs = {name: ", ".join(f"{value:.2f}" for value in values) for name, values in trainings.items()}
        common.print_table(f"Whole trainings ({config['epochs']} epochs, {args.trainings} alternating pairs)", [
            {"training": "without augmentation", "median s": without, "runs (s)": runs["without"]},
            {"training": "with augmentation", "median s": with_, "runs (s)": runs["with"]},
            {"training": "with / without", "median s": with_ / without, "runs (s)": ""}])
    if args.json:
        common.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
