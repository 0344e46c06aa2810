"""Tests for tutorial_lib.recipes: the shared configurations and their trainings on a tiny cache."""

from __future__ import annotations

import functools
import os

import keras
import numpy as np
import pytest
from conftest import copy_as_course_cache, recipe_config

from tutorial_lib import data, datasets, experiments, models, recipes, training
from tutorial_lib.config import get_profile
from tutorial_lib.course_data import ensure_appearance_data


def test_configurations_take_their_sizes_from_the_profile_group(tiny_cache):
    losses = get_profile("ci", "losses")
    config = recipe_config("losses", tiny_cache, loss="cosine")
    assert config["run"] == "losses" and config["loss"] == "cosine"
    assert (config["epochs"], config["filters"]) == (losses["epochs"], list(losses["filters"]))
    assert config["data"] == experiments.data_id(tiny_cache)
    ablations = recipe_config("ablations", tiny_cache, kernel_size=5, filters=(2, 4))
    assert ablations["kernel_size"] == 5 and ablations["filters"] == [2, 4]  # tuples stored as lists
    assert ablations["patch_shape"] == get_profile("ci", "ablations")["patch_shape"]
    with pytest.raises(ValueError, match="not a configuration key: \\['kernel'\\]"):
        recipe_config("ablations", tiny_cache, kernel=5)


def test_chapters_06_and_07_describe_one_patch_network(tiny_cache):
    # Chapter 06 asks with defaults, chapter 07's "all four, WT" arm spells them out.
    chapter06 = recipe_config("patch_unet", tiny_cache, learning_rate=3e-3, seed=0)
    chapter07 = recipe_config("patch_unet", tiny_cache, modalities="all", target="wt", residual=False,
                                          learning_rate=3e-3, seed=0)
    assert experiments.run_dir(chapter06) == experiments.run_dir(chapter07)
    assert chapter06["run"] == "patch_unet"
    assert chapter06["patch_shape"] == get_profile("ci", "patch_unet")["patch_shape"]
    flair = recipe_config("patch_unet", tiny_cache, modalities=["flair"])
    assert experiments.run_dir(flair) != experiments.run_dir(chapter06)


def test_train_unet3d_records_once_and_resumes_nothing_twice(tiny_cache, tmp_path):
    config = recipe_config("ablations", tiny_cache, filters=[2, 4], epochs=2,
                                   patch_shape=[16, 16, 8], patches_per_case=1, target="regions")
    run = functools.partial(recipes.train, cache_dir=tiny_cache)
    record, from_cache = experiments.cached_run(config, run, root=tmp_path)
    results = record["results"]
    assert not from_cache and set(results) == {"parameters", "seconds", "best_val_dice", "val_dice", "train_dice",
                                               "train_loss", "epoch_cpu_seconds"}
    assert 0 < results["epoch_cpu_seconds"] < results["seconds"] * os.cpu_count()
    history = training.load_history(experiments.run_dir(config, root=tmp_path))
    assert len(history) == 2 and results["best_val_dice"] == pytest.approx(history["val_dice"].max())
    model = training.load_best(experiments.run_dir(config, root=tmp_path))
    assert model.output_shape == (None, None, None, None, 3)  # three region channels
    assert experiments.cached_run(config, run, root=tmp_path) == (record, True)


def test_chapter07_switches_start_at_the_prior_and_score_each_region(tiny_cache, tmp_path):
    config = recipe_config("ablations", tiny_cache, filters=[2, 4], epochs=1, patch_shape=[8, 8, 8],
                                   target="regions", output_bias="prior", loss_reduction="channel",
                                   enhancing_fraction=0.5)
    record, _ = experiments.cached_run(config, functools.partial(recipes.train, cache_dir=tiny_cache),
                                       root=tmp_path)
    assert record["results"]["train_loss"] >= -1.0  # a mean of per-region Dice losses
    prior = data.target_prior(tiny_cache, "train", target="regions")
    assert prior.shape == (3,) and prior[0] > prior[1] > prior[2] > 0  # nested: WT > TC > ET
    with pytest.raises(ValueError, match="output_bias"):
        recipes.train_unet3d({**config, "output_bias": "mean"}, tmp_path / "bad", cache_dir=tiny_cache)


def test_chapter08_arms_train_augmented_and_on_the_varied_patients(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BRATS_COURSE_DATA", str(tmp_path / "data"))
    course = copy_as_course_cache(cache_dir, tmp_path / "data")
    settings = dict(filters=[2, 4], epochs=1, patch_shape=[16, 16, 8], patches_per_case=1)
    plain = recipe_config("patch_unet", course, **settings)
    assert plain["augmentation"] is None and plain["train_appearance"] == "course"
    both = recipe_config("patch_unet", course, augmentation=dict(get_profile("ci", "another_site")["augmentation"]),
                                     train_appearance="varied", **settings)
    assert experiments.run_dir(both) != experiments.run_dir(plain)
    train = functools.partial(recipes.train, cache_dir=course)
    with pytest.raises(FileNotFoundError, match="ensure_appearance_data"):  # a recipe trains; it makes no data
        train(both, tmp_path / "early")
    varied_cache = ensure_appearance_data(course, "varied", data.load_split(course)["train"], workers=1)
    record, _ = experiments.cached_run(both, train, root=tmp_path / "runs")
    assert 0.0 <= record["results"]["best_val_dice"] <= 1.0
    varied = data.load_manifest(varied_cache)["cases"]
    assert sorted(varied) == data.load_split(course)["train"]  # the training patients, drawn again; no others
    with pytest.raises(ValueError, match="augmentation applies to patch training"):
        recipes.train_unet3d({**both, "patch_shape": None}, tmp_path / "bad", cache_dir=course)


def test_target_prior_is_the_share_of_voxels_per_channel(tiny_cache):
    ids = data.load_split(tiny_cache)["train"]
    masks = [data.load_case(tiny_cache, case_id, target="regions")[1] for case_id in ids]
    expected = np.sum([m.sum(axis=(0, 1, 2)) for m in masks], axis=0) / (len(ids) * np.prod(masks[0].shape[:3]))
    np.testing.assert_allclose(data.target_prior(tiny_cache, "train", target="regions"), expected)


def test_train_unet2d_keeps_the_epoch_with_the_best_volume_dice(tiny_cache, tmp_path):
    config = recipe_config("losses", tiny_cache, filters=[2, 4], epochs=2, slice_step=2)
    record, _ = experiments.cached_run(config, functools.partial(recipes.train, cache_dir=tiny_cache),
                                       root=tmp_path)
    history = training.load_history(experiments.run_dir(config, root=tmp_path))
    assert "val_volume_dice" in history  # logged by the callback, before the history is committed
    best = int(np.argmax(history["val_volume_dice"].to_numpy()))
    assert record["results"]["val_volume_dice"] == pytest.approx(history["val_volume_dice"].iloc[best])
    assert record["results"]["val_slice_dice"] == pytest.approx(history["val_dice"].iloc[best])


@pytest.mark.parametrize("recipe", ["2d", "3d"])
def test_the_next_seed_trains_in_the_kept_network_and_learns_what_a_new_one_would(tiny_cache, tmp_path, recipe):
    if recipe == "2d":  # dropout: its random-seed state is part of what a new network starts with
        configs = [recipe_config("losses", tiny_cache, filters=[2, 4], epochs=2, slice_step=2,
                                         dropout=0.5, seed=seed) for seed in (0, 1)]
        run = functools.partial(recipes.train, cache_dir=tiny_cache)
    else:
        configs = [recipe_config("ablations", tiny_cache, filters=[2, 4], epochs=2,
                                         patch_shape=[8, 8, 8], output_bias="prior", seed=seed) for seed in (0, 1)]
        run = functools.partial(recipes.train, cache_dir=tiny_cache)
    recipes._kept_networks.clear()
    experiments.cached_run(configs[0], run, root=tmp_path / "kept")
    (kept_network,) = recipes._kept_networks.values()
    kept, _ = experiments.cached_run(configs[1], run, root=tmp_path / "kept")
    assert list(recipes._kept_networks.values()) == [kept_network]
    recipes._kept_networks.clear()
    new, _ = experiments.cached_run(configs[1], run, root=tmp_path / "new")
    assert list(recipes._kept_networks.values()) != [kept_network]
    for results in (kept["results"], new["results"]):  # all but the times
        for timed in ("seconds", "epoch_cpu_seconds"):
            results.pop(timed, None)
    assert kept == new


def test_a_few_architectures_are_kept_the_most_recently_used_last(tiny_cache):
    recipes._kept_networks.clear()
    built = [recipes._fresh_network({"width": width}, lambda w=width: keras.Sequential(name=f"w{w}"))
             for width in (1, 2, 3, 4, 1, 5)]
    assert built[4] is built[0]  # width 1 again: the kept network
    assert [model.name for model in recipes._kept_networks.values()] == ["w3", "w4", "w1", "w5"]  # w2 dropped


def test_a_configurations_run_names_its_recipe(tiny_cache, monkeypatch):
    called = []
    for name in ("train_unet2d", "train_volume_unet3d", "train_unet3d"):
        monkeypatch.setattr(recipes, name, lambda config, run_dir, *, cache_dir, name=name: called.append(name))
    for run in ("baseline_2d", "losses", "unet3d", "ablations", "patch_unet", "region_unet"):
        recipes.train({"run": run}, tiny_cache, cache_dir=tiny_cache)
    assert called == ["train_unet2d"] * 2 + ["train_volume_unet3d"] + ["train_unet3d"] * 3
    with pytest.raises(ValueError, match="has no recipe"):
        recipe_config("another_site", tiny_cache)


def test_every_recipe_starts_at_the_prior_and_decays_its_learning_rate(tiny_cache):
    configs = [recipe_config("losses", tiny_cache), recipe_config("ablations", tiny_cache),
               recipe_config("patch_unet", tiny_cache), recipe_config("unet3d", tiny_cache)]
    assert all(config["schedule"] == "cosine" for config in configs)
    assert all(config.get("output_bias", "prior") == "prior" for config in configs)  # the volume recipe always does


def test_train_volume_unet3d_is_chapter03s_training_written_out(tiny_cache, tmp_path):
    # Chapter 03 trains its first seed by hand (section 3) and the others with the recipe: the same network.
    config = recipe_config("unet3d", tiny_cache, epochs=2, filters=[2, 4], batch_size=2, seed=3)
    record, _ = experiments.cached_run(config, functools.partial(recipes.train, cache_dir=tiny_cache),
                                       root=tmp_path / "recipe")
    assert set(record["results"]) == {"parameters", "seconds", "best_val_dice"}
    tumour_fraction = float(data.target_prior(tiny_cache, "train", target="wt")[0])
    keras.utils.set_random_seed(3)
    model = models.unet(tuple(data.load_manifest(tiny_cache)["shape"]) + (1,), filters=[2, 4], convs_per_level=1)
    model.layers[-1].bias.assign(np.full((1,), np.log(tumour_fraction / (1 - tumour_fraction)), "float32"))
    model.layers[-1].kernel.assign(np.zeros(model.layers[-1].kernel.shape, "float32"))
    training.train(model, datasets.VolumeDataset(tiny_cache, "train", batch_size=2, shuffle=True, seed=3),
                   datasets.VolumeDataset(tiny_cache, "val", batch_size=2), out_dir=tmp_path / "hand", epochs=2,
                   loss="dice_probability", optimizer="adam", learning_rate=config["learning_rate"],
                   schedule="cosine", mixed_precision=config["precision"], seed=3, verbose=0)
    by_recipe = training.load_best(experiments.run_dir(config, root=tmp_path / "recipe")).get_weights()
    for a, b in zip(by_recipe, training.load_best(tmp_path / "hand").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
