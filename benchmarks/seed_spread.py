"""How much a recipe's test Dice depends on its seed, and whether the verdict rule keeps its promise.

Trains one configuration of a recipe with ``--seeds`` seeds (the configuration a
chapter trains, at the profile's sizes), scores every run on the chapter's test
cases and on ``--fresh`` further synthetic patients that no chapter uses, and
prints per recipe: the mean test Dice, its standard deviation over seeds, and
how many runs stalled or collapsed (``training.outcome``). For ``patch`` (chapter
05's baseline) it also runs the A/A test of ``verdicts.a_a_test`` at 3 and 6 seeds
per arm on both sets of cases. Runs live in the run cache, so chapters and this
script share them.

Recipes: ``patch`` (chapter 05's baseline), ``patch_unet`` (chapter 06's network),
``2d`` (chapter 04's Dice-loss arm), ``volume`` (chapter 03's whole-volume
network) and ``region`` (chapter 07's region-wise network; scored by the mean
Dice of WT, TC and ET).

Examples
--------
::

    python benchmarks/seed_spread.py --recipe patch --seeds 24 --fresh 60
    python benchmarks/seed_spread.py --recipe 2d volume region --seeds 8 --fresh 60
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import Any

import common
import numpy as np

RECIPES = ("patch", "patch_unet", "2d", "volume", "region")


def _configuration(recipe: str, profile: str, cache: Any, seed: int) -> tuple[dict[str, Any], Any]:
    """The chapter's configuration of ``recipe`` with ``seed``, and its training function."""
    from tutorial_lib import recipes
    from tutorial_lib.config import get_profile
    from tutorial_lib.experiments import data_id

    group, changes = {"patch": ("ablations", {}), "patch_unet": ("patch_unet", {}), "2d": ("losses", {}),
                      "region": ("patch_unet", dict(target="regions", run="region_unet", loss_reduction="channel")),
                      "volume": ("unet3d", {})}[recipe]
    config = recipes.config(group, get_profile(profile, group), profile=profile, data=data_id(cache), seed=seed,
                            **changes)
    return config, recipes.train


def _scores(config: dict[str, Any], cache: Any, case_ids: list[str]) -> np.ndarray:
    """Test Dice per case: whole tumour, or the mean of WT, TC and ET for a region network."""
    from tutorial_lib import data, experiments, inference, metrics, training

    if config.get("target") != "regions":
        return np.array(list(inference.score_run(config, cache, case_ids).values()))
    model = training.load_best(experiments.run_dir(config))
    means = []
    for case_id in case_ids:
        mask = inference.predict_case(model, cache, case_id, modalities=config["modalities"]).mask
        truth = data.load_case(cache, case_id, target="regions")[1] > 0.5
        means.append(np.mean([metrics.dice_coefficient(mask[..., k], truth[..., k]) for k in range(3)]))
    return np.array(means)


def measure(recipe: str, *, profile: str, seeds: int, fresh: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train and score ``seeds`` runs of ``recipe``; return its table row and the (seeds, cases) scores."""
    from tutorial_lib import data, experiments, training
    from tutorial_lib.config import get_profile
    from tutorial_lib.course_data import ensure_course_data

    cache = ensure_course_data(profile)
    n_cases = get_profile(profile)["n_cases"]
    more = ensure_course_data(profile, n_cases=n_cases + fresh) if fresh else None
    fresh_ids = [f"Synth_{index:04d}" for index in range(n_cases, n_cases + fresh)]
    test_ids = data.load_split(cache)["test"]
    scores: dict[str, list[np.ndarray]] = {"test": [], "fresh": []}
    outcomes, started = [], time.perf_counter()
    for seed in range(seeds):
        config, train = _configuration(recipe, profile, cache, seed)
        experiments.cached_run(config, functools.partial(train, cache_dir=cache))
        monitor = "val_volume_dice" if recipe == "2d" else "val_dice"
        outcomes.append(training.outcome(training.load_history(experiments.run_dir(config)), monitor=monitor))
        scores["test"].append(_scores(config, cache, test_ids))
        if fresh:
            scores["fresh"].append(_scores(config, more, fresh_ids))
        print(f"{recipe} seed {seed}: test {scores['test'][-1].mean():.3f}"
              + (f", fresh {scores['fresh'][-1].mean():.3f}" if fresh else "") + f" ({outcomes[-1]})", flush=True)
    arrays = {part: np.array(values) for part, values in scores.items() if values}
    row: dict[str, Any] = {"recipe": recipe, "profile": profile, "seeds": seeds}
    for part, values in arrays.items():
        means = values.mean(axis=1)
        row[f"{part} cases"] = values.shape[1]
        row[f"{part} Dice"] = round(float(means.mean()), 3)
        row[f"{part} seed SD"] = round(float(means.std(ddof=1)), 3)
    row["stalled"], row["collapsed"] = outcomes.count("stalled"), outcomes.count("collapsed")
    row["seconds (all)"] = round(time.perf_counter() - started)
    return row, arrays


def a_a_rows(recipe: str, arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The A/A test's false-verdict rate and median width at 3 and 6 seeds per arm, on each set of cases."""
    from tutorial_lib import verdicts

    rows = []
    for part, values in arrays.items():
        for per_arm in (3, 6):
            if values.shape[0] >= 2 * per_arm:
                result = verdicts.a_a_test(values, seeds_per_arm=per_arm)
                rows.append({"recipe": recipe, "cases": f"{part} ({values.shape[1]})", "seeds per arm": per_arm,
                             "false verdicts": round(result.false_verdicts, 3),
                             "median width": round(result.median_width, 3), "splits": result.splits})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", nargs="+", choices=RECIPES, default=["patch"])
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--fresh", type=int, default=60, help="further synthetic patients to score (0: none)")
    args = parser.parse_args(argv)
    rows, a_a = [], []
    for recipe in args.recipe:
        row, arrays = measure(recipe, profile=args.profile, seeds=args.seeds, fresh=args.fresh)
        rows.append(row)
        if recipe == "patch":
            a_a += a_a_rows(recipe, arrays)
    common.print_table("Seed spread per recipe", rows)
    if a_a:
        common.print_table("A/A test of verdicts.seed_case_difference_interval", a_a)
    return rows + a_a


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
