"""Keras readers over the prepared cache: whole volumes, axial slices, random patches.

These are ``keras.utils.PyDataset`` subclasses, so ``model.fit`` takes them on
every Keras backend; extra keyword arguments (``workers``,
``use_multiprocessing``, ``max_queue_size``) go to ``PyDataset``. They live
apart from :mod:`tutorial_lib.data` so that reading a case with NumPy never
starts a deep-learning backend.

Everything returned is float32 and channels-last:

* :class:`VolumeDataset` -> batches ``(b, x, y, z, C)`` and ``(b, x, y, z, K)``;
* :class:`SliceDataset` -> axial slices ``(b, x, y, C)`` and ``(b, x, y, K)``;
* :class:`PatchDataset` -> random patches ``(b, px, py, pz, C)`` and ``(b, px, py, pz, K)``.

``C`` is the number of selected modalities (FLAIR only, the paper's choice, by
default). ``K`` is 1 for ``target="wt"`` (whole tumour) and 3 for
``target="regions"`` (WT, TC, ET). Shuffling and random patches depend only on
``seed``, the epoch and the batch index, so runs repeat exactly whatever the
number of workers, and a resumed run continues the same sequence
(``set_epoch``). :class:`PatchDataset` can also augment its patches
(``augmentation=``, a :class:`tutorial_lib.augment.Augmentation`): random
rotation, scaling, flips and intensity changes, drawn from their own random
stream so that the patch positions stay those of the unaugmented reader and a
batch is still a function of ``seed``, the epoch and its index. Every batch
is checked for NaN and inf (one vectorised pass); a bad case raises
:class:`tutorial_lib.data.NonFiniteDataError` naming its file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from tutorial_lib.augment import Augmentation, intensity, spatial_patch
from tutorial_lib.config import BRATS
from tutorial_lib.data import (
    TARGETS,
    check_finite,
    labels_to_target,
    load_manifest,
    modality_indices,
    non_finite_count,
    open_array,
    resolve_case_ids,
)

__all__ = ["VolumeDataset", "SliceDataset", "PatchDataset"]


class _CacheDataset(keras.utils.PyDataset):
    """Shared batching, shuffling and reading for the three readers."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        case_ids: str | Sequence[str],
        *,
        modalities: str | Sequence[str],
        target: str | None,
        batch_size: int,
        shuffle: bool,
        seed: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if target is not None and target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}")
        self.cache_dir = Path(cache_dir)
        self.case_ids = resolve_case_ids(cache_dir, case_ids)
        self.channels = modality_indices(modalities)
        self.target, self.batch_size, self.shuffle, self.seed = target, batch_size, shuffle, seed
        manifest = load_manifest(cache_dir)
        self.grid = tuple(manifest["shape"])
        self.cases = {case_id: manifest["cases"][case_id] for case_id in self.case_ids}
        if target is not None:
            unlabelled = [case_id for case_id, meta in self.cases.items() if not meta["labelled"]]
            if unlabelled:
                raise ValueError(f"cases without labels need target=None: {unlabelled[:5]}")
        self.epoch = 0
        self.items = self._items()
        self._order = self._permutation()

    def _items(self) -> list[Any]:
        return list(self.case_ids)

    def _permutation(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.items))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.items))

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle (and draw patches) as for ``epoch``; :func:`tutorial_lib.training.train` calls it on resume.

        Orders depend only on ``seed`` and the epoch, so a run resumed at epoch
        ``k`` visits the cases as an uninterrupted run does from epoch ``k``.
        """
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch
        self._order = self._permutation()

    def _batch_items(self, index: int) -> list[Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        positions = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return [self.items[position] for position in positions]

    def _image(self, case_id: str) -> np.ndarray:
        return open_array(self.cache_dir, case_id, "image")

    def _pair(self, ids: list[str], images: list[np.ndarray], labels: list[np.ndarray], *,
              selected: bool = False) -> Any:
        """Stack a batch (``selected``: the images hold only ``self.channels`` already), screened for NaN and inf."""
        x = np.stack([np.asarray(image if selected else image[..., self.channels], np.float32) for image in images])
        # One pass screens the whole batch; the case is looked for only when it fails.
        if non_finite_count(x):
            for case_id, image in zip(ids, x):
                check_finite(image, self.cache_dir / "cases" / case_id / "image.npy")
        return x if self.target is None else (x, labels_to_target(np.stack(labels), self.target))


class VolumeDataset(_CacheDataset):
    """Whole cached volumes: ``x`` ``(b, x, y, z, C)``, ``y`` ``(b, x, y, z, K)`` float32.

    Parameters
    ----------
    cache_dir : path
        Prepared cache.
    case_ids : str or sequence of str, optional
        A split name (``"train"``, ``"val"``, ``"test"``, ``"unlabelled"``) or a list of ids.
    modalities : str or sequence of str, optional
        Names from ``BRATS.modalities`` or ``"all"``; FLAIR only by default.
    target : {"wt", "regions", None}, optional
        Whole tumour (K=1), three regions (K=3), or None to yield ``x`` only (inference).
    batch_size : int, optional
        Volumes per batch (the last batch may be smaller).
    shuffle : bool, optional
        Reshuffle the cases every epoch.
    seed : int, optional
        Seed of the shuffling.
    **kwargs
        Passed to ``keras.utils.PyDataset`` (``workers``, ``use_multiprocessing``).

    Examples
    --------
    >>> train = VolumeDataset(cache, "train", batch_size=2, shuffle=True)  # doctest: +SKIP
    >>> x, y = train[0]; x.shape, y.shape  # doctest: +SKIP
    ((2, 48, 48, 40, 1), (2, 48, 48, 40, 1))
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        case_ids: str | Sequence[str] = "train",
        *,
        modalities: str | Sequence[str] = ("flair",),
        target: str | None = "wt",
        batch_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(cache_dir, case_ids, modalities=modalities, target=target,
                         batch_size=batch_size, shuffle=shuffle, seed=seed, **kwargs)

    def __getitem__(self, index: int) -> Any:
        ids = self._batch_items(index)
        labels = [] if self.target is None else [open_array(self.cache_dir, i, "label") for i in ids]
        return self._pair(ids, [self._image(case_id) for case_id in ids], labels)


class SliceDataset(_CacheDataset):
    """Axial slices: ``x`` ``(b, x, y, C)``, ``y`` ``(b, x, y, K)`` float32.

    Parameters
    ----------
    cache_dir, case_ids, modalities, target, batch_size, shuffle, seed, **kwargs
        As for :class:`VolumeDataset` (``target`` may not be None).
    slice_step : int, optional
        Keep every ``slice_step``-th slice (sub-sampling along z).
    brain_only : bool, optional
        Skip slices without any brain voxel (padding, skull cap).
    oversample_tumour : int, optional
        How many times each kept slice containing tumour appears per epoch;
        2 or more counters the rarity of tumour slices.

    Examples
    --------
    >>> slices = SliceDataset(cache, "train", batch_size=8, oversample_tumour=2)  # doctest: +SKIP
    >>> slices[0][0].shape  # doctest: +SKIP
    (8, 48, 48, 1)
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        case_ids: str | Sequence[str] = "train",
        *,
        modalities: str | Sequence[str] = ("flair",),
        target: str = "wt",
        batch_size: int = 8,
        shuffle: bool = False,
        seed: int = 0,
        slice_step: int = 1,
        brain_only: bool = True,
        oversample_tumour: int = 1,
        **kwargs: Any,
    ) -> None:
        for name, value in (("slice_step", slice_step), ("oversample_tumour", oversample_tumour)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if target is None:
            raise ValueError("SliceDataset needs a target ('wt' or 'regions')")
        self.slice_step, self.brain_only, self.oversample_tumour = slice_step, brain_only, oversample_tumour
        super().__init__(cache_dir, case_ids, modalities=modalities, target=target,
                         batch_size=batch_size, shuffle=shuffle, seed=seed, **kwargs)

    def _items(self) -> list[tuple[str, int]]:
        items = []
        for case_id, meta in self.cases.items():
            depth = meta["shape"][2]
            kept = meta["brain_slices"] if self.brain_only else range(depth)
            tumour = set(meta["tumour_slices"])
            for z in kept:
                if z % self.slice_step == 0:
                    items += [(case_id, z)] * (self.oversample_tumour if z in tumour else 1)
        if not items:
            raise ValueError(f"{self.cache_dir}: no slices selected for {self.case_ids[:5]}")
        return items

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        items = self._batch_items(index)
        images = [self._image(case_id)[:, :, z] for case_id, z in items]
        labels = [open_array(self.cache_dir, case_id, "label")[:, :, z] for case_id, z in items]
        return self._pair([case_id for case_id, _ in items], images, labels)


class PatchDataset(_CacheDataset):
    """Random 3D patches: ``x`` ``(b, px, py, pz, C)``, ``y`` ``(b, px, py, pz, K)`` float32.

    A fraction of the patches is centred on a random tumour voxel, the rest on
    a random brain voxel; the window is then shifted to lie inside the volume.
    Patch positions depend only on ``seed``, the epoch and the batch index.

    With an ``augmentation`` each patch is then cut rotated, scaled and
    mirrored around the same centre, and its intensities changed
    (:func:`tutorial_lib.augment.spatial_patch`, :func:`tutorial_lib.augment.intensity`).
    These draws come from a second random stream per patch,
    ``default_rng([seed, epoch, index, slot, 1])``, so the centres are those
    drawn without augmentation, and a batch is still a pure function of
    ``seed``, the epoch and its index (``set_epoch`` resumes it exactly).
    Without one (``None``, the default) the batches are exactly those of the
    reader before augmentation existed.

    Parameters
    ----------
    cache_dir, case_ids, modalities, target, batch_size, shuffle, seed, **kwargs
        As for :class:`VolumeDataset` (``target`` may not be None).
    patch_shape : tuple of int, optional
        ``(px, py, pz)``, at most the cache grid.
    patches_per_case : int, optional
        Patches drawn from each case per epoch.
    tumour_fraction : float, optional
        Probability that a patch is centred on tumour (cases without tumour
        always use a brain voxel).
    augmentation : Augmentation, optional
        Random transforms of each training patch; ``None`` (default) for none.
        Use it for training readers only: validation should see the data as it is.
    enhancing_fraction : float, optional
        Probability that a patch is centred on enhancing tumour, the smallest
        region, before ``tumour_fraction`` is asked (a case without enhancing
        tumour falls back to it). 0 leaves the draws, and so every patch, as
        without the option.

    Examples
    --------
    >>> patches = PatchDataset(cache, "train", patch_shape=(32, 32, 32), batch_size=4)  # doctest: +SKIP
    >>> patches[0][1].shape  # doctest: +SKIP
    (4, 32, 32, 32, 1)
    >>> augmented = PatchDataset(cache, "train", augmentation=Augmentation(), shuffle=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        case_ids: str | Sequence[str] = "train",
        *,
        patch_shape: Sequence[int] = (32, 32, 32),
        patches_per_case: int = 1,
        tumour_fraction: float = 0.5,
        enhancing_fraction: float = 0.0,
        modalities: str | Sequence[str] = ("flair",),
        target: str = "wt",
        batch_size: int = 2,
        shuffle: bool = False,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        **kwargs: Any,
    ) -> None:
        if augmentation is not None and not isinstance(augmentation, Augmentation):
            raise TypeError(f"augmentation must be an Augmentation or None, got {type(augmentation).__name__} "
                            "(build one from a dict with Augmentation.from_settings)")
        if not isinstance(patches_per_case, int) or patches_per_case < 1:
            raise ValueError(f"patches_per_case must be a positive integer, got {patches_per_case!r}")
        for name, fraction in (("tumour_fraction", tumour_fraction), ("enhancing_fraction", enhancing_fraction)):
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {fraction}")
        if target is None:
            raise ValueError("PatchDataset needs a target ('wt' or 'regions')")
        self.patch_shape = tuple(int(n) for n in patch_shape)
        self.patches_per_case, self.tumour_fraction = patches_per_case, tumour_fraction
        self.enhancing_fraction, self.augmentation = enhancing_fraction, augmentation
        super().__init__(cache_dir, case_ids, modalities=modalities, target=target,
                         batch_size=batch_size, shuffle=shuffle, seed=seed, **kwargs)
        if len(self.patch_shape) != 3 or any(p < 1 or p > g for p, g in zip(self.patch_shape, self.grid)):
            raise ValueError(
                f"patch_shape must be 3 positive sizes within the grid {self.grid}, got {patch_shape}"
            )

    def _items(self) -> list[str]:
        return [case_id for case_id in self.case_ids for _ in range(self.patches_per_case)]

    def _centre(self, rng: np.random.Generator, case_id: str, label: np.ndarray) -> np.ndarray:
        candidates = np.empty(0)
        if self.enhancing_fraction and rng.random() < self.enhancing_fraction:
            candidates = np.flatnonzero(np.isin(label, BRATS.regions["ET"]))
        if candidates.size == 0:
            candidates = np.flatnonzero(label) if rng.random() < self.tumour_fraction else np.empty(0)
        if candidates.size == 0:
            candidates = np.flatnonzero(open_array(self.cache_dir, case_id, "brain"))
        return np.array(np.unravel_index(rng.choice(candidates), label.shape))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels, ids = [], [], self._batch_items(index)
        grid, patch = np.array(self.grid), np.array(self.patch_shape)
        for slot, case_id in enumerate(ids):
            rng = np.random.default_rng([self.seed, self.epoch, index, slot])
            label = open_array(self.cache_dir, case_id, "label")
            centre = self._centre(rng, case_id, np.asarray(label))
            if self.augmentation is None:
                start = np.clip(centre - patch // 2, 0, grid - patch)
                window = tuple(slice(s, s + p) for s, p in zip(start, self.patch_shape))
                images.append(self._image(case_id)[window][..., self.channels])
                labels.append(label[window])
                continue
            augment_rng = np.random.default_rng([self.seed, self.epoch, index, slot, 1])
            image, label = spatial_patch(augment_rng, self._image(case_id), label, centre, self.patch_shape,
                                         self.augmentation, channels=self.channels)
            images.append(intensity(augment_rng, image, self.augmentation))
            labels.append(label)
        return self._pair(ids, images, labels, selected=True)
