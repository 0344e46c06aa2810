"""Named training recipes that more than one chapter runs.

:func:`config` builds a run configuration (a plain, hashable dictionary, see
:mod:`tutorial_lib.experiments`) from a profile group's sizes, and :func:`train`
trains it into its run folder and returns the numbers the chapters tabulate.
A chapter calls both through its :class:`~tutorial_lib.chapters.Chapter`
(``chapter.config``, ``chapter.train``). Since the configuration names the run
folder, a chapter that describes the same network as another (chapter 07
reusing chapter 06's) finds it trained. The configuration's ``run`` says which
recipe trains it:

* ``"baseline_2d"``, ``"losses"``: :func:`train_unet2d`, a 2D U-Net on axial
  FLAIR slices, its best epoch chosen by the Dice of whole validation volumes
  (chapters 02 and 04);
* ``"unet3d"``: :func:`train_volume_unet3d`, chapter 03's whole-volume
  network, trained again with other seeds for its comparison with 2D;
* any other (``"ablations"``, ``"patch_unet"``, ``"region_unet"``):
  :func:`train_unet3d`, a 3D U-Net on whole volumes or tumour-centred patches,
  validated on whole volumes (chapter 05's ablations, the patch network of
  chapters 06 to 08).

Every recipe starts its networks at the prior
(:func:`tutorial_lib.models.start_at_prior`) and lowers the learning rate
along a cosine (:class:`tutorial_lib.training.CosineDecay`), unless a
configuration says otherwise (``output_bias="zero"``, ``schedule="constant"``):
together they keep the seed from deciding whether, and how well, a run learns.

Every configuration carries ``data`` (:func:`tutorial_lib.experiments.data_id`
of the cache) and ``profile``, so runs on different data never mix; the
training functions take the cache folder itself as ``cache_dir``. A recipe
trains; it never makes data (:mod:`tutorial_lib.course_data` does).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np

from tutorial_lib import augment, datasets, inference, losses, models, training
from tutorial_lib.course_data import ensure_appearance_data
from tutorial_lib.data import TARGETS, load_manifest, load_split, modality_indices, target_prior

__all__ = [
    "config",
    "train",
    "train_unet2d",
    "train_volume_unet3d",
    "train_unet3d",
    "build_unet3d",
]

# Validation metric of the 2D recipe: Keras' per-slice val_dice rewards empty slices.
VOLUME_DICE = "val_volume_dice"
_2D_RUNS = ("baseline_2d", "losses")

# The last few networks the recipes trained, by architecture, and one loss object per loss
# setting: training.train then keeps a network's traced training step. A grid trains one
# architecture once per seed, learning rate or loss (chapter 02 alternates two), and
# tracing costs a small network about a second of its few (benchmarks/bench_grid_training.py).
_KEPT_NETWORKS = 4
_kept_networks: dict[str, keras.Model] = {}
_loss_objects: dict[str, Any] = {}


def _fresh_network(architecture: dict[str, Any], build: Any) -> keras.Model:
    """``build()``'s seeded initial state, in a kept network of this ``architecture`` if there is one."""
    model = build()
    key = json.dumps(architecture, sort_keys=True)
    kept = _kept_networks.pop(key, None)
    if kept is None:
        kept = model
    else:  # variables, not weights: a dropout layer's random-seed state is copied too
        for kept_variable, variable in zip(kept.variables, model.variables, strict=True):
            kept_variable.assign(variable)
    _kept_networks[key] = kept  # the most recently used last
    while len(_kept_networks) > _KEPT_NETWORKS:
        del _kept_networks[next(iter(_kept_networks))]
    return kept


def _loss(name: str, **options: Any) -> Any:
    key = json.dumps([name, options], sort_keys=True)
    return _loss_objects.setdefault(key, losses.get_loss(name, **options))


def _volume_dice(model: keras.Model, cache_dir: str | os.PathLike, case_ids: list[str]) -> Any:
    """Keras' LambdaCallback that puts the mean whole-volume Dice of ``case_ids`` into the epoch's logs.

    It runs before :func:`tutorial_lib.training.train`'s logger and checkpoint,
    so the value is written to ``history.csv`` and can choose the best epoch.
    """
    def log(epoch: int, logs: dict) -> None:
        logs[VOLUME_DICE] = float(np.mean(list(inference.case_dice(model, cache_dir, case_ids).values())))
    return keras.callbacks.LambdaCallback(on_epoch_end=log)


def _epoch_cpu_seconds() -> Any:
    """Keras' LambdaCallback that logs the CPU seconds this process spent on each epoch (``epoch_cpu_seconds``).

    CPU time rather than wall-clock, so that chapters running side by side
    (``scripts/build_course.py --jobs``) slow each other's figure far less
    (not at all would be too strong: two cores share caches).
    """
    started = {}
    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.update(at=time.process_time()),
        on_epoch_end=lambda epoch, logs: logs.update(epoch_cpu_seconds=time.process_time() - started["at"]))


def config(group: str, sizes: Mapping[str, Any], *, profile: str, data: str, **changes: Any) -> dict[str, Any]:
    """The run configuration of profile group ``group``, sized by its resolved settings ``sizes``.

    ``"baseline_2d"`` and ``"losses"`` give a 2D U-Net (``epochs``,
    ``batch_size``, ``slice_step``, ``filters`` and ``learning_rate`` of
    ``sizes``); ``"unet3d"`` chapter 03's whole-volume network (its
    ``mixed_precision``: bfloat16 where a GPU is found and float32 otherwise
    when ``None``); ``"ablations"`` and ``"patch_unet"`` a 3D U-Net on whole
    volumes or patches (``patch_shape`` ``None``: whole volumes). Every recipe
    follows the study's final choices where they were clear (3x3x3 kernels,
    transposed convolutions, ReLU, Adam, the Dice loss on probabilities pooled
    over the batch), starts at the prior (``output_bias="prior"``,
    :func:`tutorial_lib.models.start_at_prior`; ``"zero"``: bias 0 and random
    output weights) and lowers the learning rate along a cosine
    (``schedule="cosine"``; ``"constant"``). The 3D U-Net's further switches:
    ``loss_reduction`` (``"channel"``: one Dice per region,
    :mod:`tutorial_lib.losses`), ``enhancing_fraction`` (of the patches
    centred on enhancing tumour), ``augmentation`` (the settings of a
    :class:`tutorial_lib.augment.Augmentation`) and ``train_appearance``
    (``"varied"``: the training patients as the varied generator draws them,
    :func:`tutorial_lib.course_data.ensure_appearance_data`).

    Parameters
    ----------
    group : str
        The profile group whose network this is.
    sizes : mapping
        That group's settings (``chapter.settings_of(group)``).
    profile, data : str
        The profile's name and :func:`tutorial_lib.experiments.data_id` of the
        cache: both part of the configuration, so runs on other data never mix.
    **changes
        Single keys to replace (``loss``, ``seed``, ``run`` ...).

    Raises
    ------
    ValueError
        For an unknown group or configuration key.

    Examples
    --------
    >>> from tutorial_lib.config import get_profile
    >>> sizes = get_profile("ci", "ablations")
    >>> config("ablations", sizes, profile="ci", data="d", kernel_size=5)["kernel_size"]
    5
    >>> config("ablations", sizes, profile="ci", data="d", kernel=5)
    Traceback (most recent call last):
    ValueError: not a configuration key: ['kernel']; ...
    """
    if group not in (*_2D_RUNS, "unet3d") and "patch_shape" not in sizes:
        raise ValueError(f"profile group {group!r} has no recipe; the recipes' groups are "
                         f"{sorted(_2D_RUNS)}, 'unet3d', 'ablations' and 'patch_unet'")
    common = dict(run=group, data=data, profile=profile, epochs=sizes["epochs"], filters=list(sizes["filters"]),
                  batch_size=sizes["batch_size"], learning_rate=sizes["learning_rate"], schedule="cosine",
                  kernel_initializer="he_normal")
    if group in _2D_RUNS:
        base = dict(common, slice_step=sizes["slice_step"], oversample_tumour=2, dropout=0.0,
                    loss="dice_probability", loss_options={}, output_bias="prior", seed=0)
    elif group == "unet3d":
        precision = sizes["mixed_precision"] or ("bfloat16" if training.gpu_available() else None)
        base = dict(common, precision=precision, backend=keras.backend.backend(), seed=0)
    else:
        base = dict(common, modalities=sizes.get("modalities", "all"), target="wt", kernel_size=3,
                    convs_per_level=2, skips="all", upsampling="transpose", dropout=0.0, activation="relu",
                    residual=False, optimizer="adam", patch_shape=sizes["patch_shape"],
                    patches_per_case=sizes["patches_per_case"], tumour_fraction=0.9, enhancing_fraction=0.0,
                    loss_reduction="batch", output_bias="prior", augmentation=None, train_appearance="course",
                    seed=0)
    return _merge(base, changes)


def train(config: dict[str, Any], run_dir: Path, *, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Train ``config`` with the recipe its ``run`` names (module docstring); a ``run_fn`` for ``run_grid``."""
    if config["run"] in _2D_RUNS:
        return train_unet2d(config, run_dir, cache_dir=cache_dir)
    if config["run"] == "unet3d":
        return train_volume_unet3d(config, run_dir, cache_dir=cache_dir)
    return train_unet3d(config, run_dir, cache_dir=cache_dir)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    # Tuples become lists so that a configuration hashes and reads back the same from JSON.
    unknown = sorted(set(changes) - set(base))
    if unknown:
        raise ValueError(f"not a configuration key: {unknown}; valid keys are {sorted(base)}")
    return {**base, **{key: list(value) if isinstance(value, tuple) else value for key, value in changes.items()}}


def train_unet2d(config: dict[str, Any], run_dir: Path, *, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Train the 2D U-Net of ``config`` on training slices; a ``run_fn`` for :func:`~tutorial_lib.experiments.run_grid`.

    Returns
    -------
    dict
        ``parameters``, ``seconds`` (of this call), ``val_volume_dice`` (the
        best epoch's mean whole-volume validation Dice) and ``val_slice_dice``
        (Keras' per-slice mean at that epoch).
    """
    keras.utils.set_random_seed(config["seed"])
    architecture = dict(input_shape=tuple(load_manifest(cache_dir)["shape"])[:2] + (1,), filters=config["filters"],
                        dropout=config["dropout"], kernel_initializer=config["kernel_initializer"])
    model = _fresh_network(architecture, lambda: _start(models.unet(**architecture), config, cache_dir, "wt"))
    slices = dict(batch_size=config["batch_size"], slice_step=config["slice_step"], seed=config["seed"])
    train_slices = datasets.SliceDataset(cache_dir, "train", shuffle=True,
                                         oversample_tumour=config["oversample_tumour"], **slices)
    val_slices = datasets.SliceDataset(cache_dir, "val", **slices)
    start = time.perf_counter()
    history = training.train(
        model, train_slices, val_slices, out_dir=run_dir, epochs=config["epochs"],
        loss=_loss(config["loss"], **config["loss_options"]), learning_rate=config["learning_rate"],
        schedule=config["schedule"],
        seed=config["seed"], verbose=0, monitor=VOLUME_DICE,
        callbacks=[_volume_dice(model, cache_dir, val_slices.case_ids)])
    best = int(np.argmax(history.history[VOLUME_DICE]))
    return {"parameters": model.count_params(), "seconds": time.perf_counter() - start,
            VOLUME_DICE: history.history[VOLUME_DICE][best], "val_slice_dice": history.history["val_dice"][best]}


def train_volume_unet3d(config: dict[str, Any], run_dir: Path, *, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Train chapter 03's whole-volume 3D U-Net of ``config``: its section 3, for any seed.

    The study's recipe on whole FLAIR volumes: one convolution per level, every
    skip, the prior start (:func:`tutorial_lib.models.start_at_prior`), the Dice
    loss on probabilities and Adam; a ``run_fn`` for
    :func:`~tutorial_lib.experiments.run_grid`.

    Returns
    -------
    dict
        ``parameters``, ``seconds`` (of this call) and ``best_val_dice``.
    """
    keras.utils.set_random_seed(config["seed"])
    grid = tuple(load_manifest(cache_dir)["shape"])
    with training.precision_scope(config["precision"]):
        model = models.unet(grid + (1,), filters=config["filters"], convs_per_level=1,
                            kernel_initializer=config["kernel_initializer"])
    models.start_at_prior(model, target_prior(cache_dir, "train", target="wt"))
    train_volumes = datasets.VolumeDataset(cache_dir, "train", batch_size=config["batch_size"], shuffle=True,
                                           seed=config["seed"])
    val_volumes = datasets.VolumeDataset(cache_dir, "val", batch_size=config["batch_size"])
    start = time.perf_counter()
    history = training.train(model, train_volumes, val_volumes, out_dir=run_dir, epochs=config["epochs"],
                             loss="dice_probability", optimizer="adam", learning_rate=config["learning_rate"],
                             schedule=config["schedule"], mixed_precision=config["precision"],
                             seed=config["seed"], verbose=0).history
    return {"parameters": model.count_params(), "seconds": time.perf_counter() - start,
            "best_val_dice": max(history["val_dice"])}


def train_unet3d(config: dict[str, Any], run_dir: Path, *, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Train the 3D U-Net of ``config``; a ``run_fn`` for :func:`~tutorial_lib.experiments.run_grid`.

    Returns
    -------
    dict
        ``parameters``, ``seconds`` (of this call), ``best_val_dice`` (the kept
        epoch), ``val_dice``, ``train_dice``, ``train_loss`` and
        ``epoch_cpu_seconds`` (the last epoch: the cost of training this network
        once it runs, without the fixed cost of starting a training).
    """
    keras.utils.set_random_seed(config["seed"])
    model = _fresh_network(_unet3d_architecture(config),
                           lambda: _start(build_unet3d(config), config, cache_dir, config["target"]))
    common = dict(modalities=config["modalities"], target=config["target"], batch_size=config["batch_size"],
                  seed=config["seed"])
    train_cases = load_split(cache_dir)["train"]
    train_cache = cache_dir if config["train_appearance"] == "course" else ensure_appearance_data(
        cache_dir, config["train_appearance"], train_cases, make=False)
    if config["patch_shape"] is None:
        if config["augmentation"] is not None:
            raise ValueError("augmentation applies to patch training; set patch_shape or augmentation=None")
        train_data = datasets.VolumeDataset(train_cache, train_cases, shuffle=True, **common)
    else:
        augmentation = None
        if config["augmentation"] is not None:
            augmentation = augment.Augmentation.from_settings(config["augmentation"])
        train_data = datasets.PatchDataset(train_cache, train_cases, patch_shape=config["patch_shape"],
                                           patches_per_case=config["patches_per_case"],
                                           tumour_fraction=config["tumour_fraction"],
                                           enhancing_fraction=config["enhancing_fraction"],
                                           augmentation=augmentation, shuffle=True, **common)
    val_data = datasets.VolumeDataset(cache_dir, "val", modalities=config["modalities"], target=config["target"])
    start = time.perf_counter()
    history = training.train(model, train_data, val_data, out_dir=run_dir, epochs=config["epochs"],
                             loss=_loss("dice_probability", reduction=config["loss_reduction"]),
                             optimizer=config["optimizer"], learning_rate=config["learning_rate"],
                             schedule=config["schedule"],
                             seed=config["seed"], verbose=0, callbacks=[_epoch_cpu_seconds()]).history
    return {"parameters": model.count_params(), "seconds": time.perf_counter() - start,
            "best_val_dice": max(history["val_dice"]), "val_dice": history["val_dice"][-1],
            "train_dice": history["dice"][-1], "train_loss": history["loss"][-1],
            "epoch_cpu_seconds": history["epoch_cpu_seconds"][-1]}


def build_unet3d(config: dict[str, Any], *, spatial_shape: tuple[int, int, int] | None = None) -> keras.Model:
    """The fully convolutional 3D U-Net of ``config``: any input size, so patches and volumes alike.

    ``spatial_shape`` fixes the input's ``(x, y, z)``, for counting what one
    input of that size costs (:func:`tutorial_lib.costs.forward_flops`).
    """
    architecture = _unet3d_architecture(config)
    if spatial_shape is not None:
        architecture["input_shape"] = (*spatial_shape, architecture["input_shape"][-1])
    return models.unet(**architecture)


def _unet3d_architecture(config: dict[str, Any]) -> dict[str, Any]:
    options = {key: config[key] for key in ("filters", "kernel_size", "convs_per_level", "skips",
                                            "upsampling", "dropout", "activation", "residual",
                                            "kernel_initializer")}
    channels = len(modality_indices(config["modalities"]))
    return dict(input_shape=(None, None, None, channels), num_classes=len(TARGETS[config["target"]]), **options)


def _start(model: keras.Model, config: dict[str, Any], cache_dir: str | os.PathLike, target: str) -> keras.Model:
    if config["output_bias"] not in ("zero", "prior"):
        raise ValueError(f"output_bias must be 'zero' or 'prior', got {config['output_bias']!r}")
    if config["output_bias"] == "prior":
        models.start_at_prior(model, target_prior(cache_dir, "train", target=target))
    return model
