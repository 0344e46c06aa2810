"""Readers over the prepared cache, and the course's one-call data set-up.

The cache (written by :mod:`tutorial_lib.ingest`, layout in ``CONTRIBUTING.md``)
holds per case ``image.npy`` ``(x, y, z, 4)`` float16, ``label.npy`` ``(x, y, z)``
uint8 BraTS labels and ``brain.npy`` ``(x, y, z)`` bool. Arrays are opened with
``np.load(mmap_mode="r")``, so a reader touches only the voxels it returns and
never unpickles anything.

Everything returned is float32 and channels-last:

* :func:`load_case` -> image ``(x, y, z, C)`` and target ``(x, y, z, K)``;
* :class:`VolumeDataset` -> batches ``(b, x, y, z, C)`` and ``(b, x, y, z, K)``;
* :class:`SliceDataset` -> axial slices ``(b, x, y, C)`` and ``(b, x, y, K)``;
* :class:`PatchDataset` -> random patches ``(b, px, py, pz, C)`` and ``(b, px, py, pz, K)``.

``C`` is the number of selected modalities (FLAIR only, the paper's choice, by
default). ``K`` is 1 for ``target="wt"`` (whole tumour) and 3 for
``target="regions"`` (WT, TC, ET, the BraTS evaluation regions).

The readers are ``keras.utils.PyDataset`` subclasses, so ``model.fit`` takes
them on every Keras backend; extra keyword arguments (``workers``,
``use_multiprocessing``, ``max_queue_size``) go to ``PyDataset``. Shuffling and
random patches depend only on ``seed``, the epoch and the batch index, so runs
repeat exactly whatever the number of workers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from tutorial_lib.config import BRATS, get_profile

__all__ = [
    "TARGETS",
    "load_manifest",
    "load_split",
    "resolve_case_ids",
    "load_case",
    "load_brain",
    "labels_to_target",
    "modality_indices",
    "VolumeDataset",
    "SliceDataset",
    "PatchDataset",
    "data_root",
    "ensure_course_data",
]

# Target name -> BraTS regions stacked as channels.
TARGETS: Mapping[str, tuple[str, ...]] = {"wt": ("WT",), "regions": ("WT", "TC", "ET")}
_REPO = Path(__file__).resolve().parents[1]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; prepare the cache with data_scripts/prepare_brats.py "
            "or tutorial_lib.data.ensure_course_data(profile)"
        )
    return json.loads(path.read_text())


def load_manifest(cache_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``<cache>/manifest.json``.

    Returns
    -------
    dict
        ``{"version", "downsample", "modalities", "shape", "cases": {id: entry}}``;
        each entry has ``source_files``, ``original_shape``, ``original_affine``,
        ``crop_box``, ``padding``, ``shape``, ``labelled``, ``brain_slices`` and,
        for labelled cases, ``tumour_volumes_cm3`` and ``tumour_slices``.

    Raises
    ------
    FileNotFoundError
        If the manifest does not exist.
    ValueError
        If it has an unknown version.
    """
    manifest = _read_json(Path(cache_dir) / "manifest.json")
    if manifest.get("version") != 1:
        raise ValueError(f"{Path(cache_dir) / 'manifest.json'}: unknown version {manifest.get('version')!r}")
    return manifest


def load_split(cache_dir: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read ``<cache>/split.json``: ``{"seed", "train", "val", "test", "unlabelled"}``."""
    return _read_json(Path(cache_dir) / "split.json")


def resolve_case_ids(cache_dir: str | os.PathLike[str], case_ids: str | Sequence[str]) -> list[str]:
    """Turn a split name (``"train"``, ``"val"``, ``"test"``, ``"unlabelled"``) or a list into ids.

    Raises
    ------
    ValueError
        If the split name is unknown, the list is empty or names a case not in the cache.
    """
    if isinstance(case_ids, str):
        split = load_split(cache_dir)
        names = [key for key in split if key != "seed"]
        if case_ids not in names:
            raise ValueError(f"unknown split {case_ids!r}; choose one of {names} or pass a list of ids")
        case_ids = split[case_ids]
    known = load_manifest(cache_dir)["cases"]
    unknown = [case_id for case_id in case_ids if case_id not in known]
    if unknown:
        raise ValueError(f"{cache_dir}: cases not in the cache: {unknown[:5]}")
    if not case_ids:
        raise ValueError(f"{cache_dir}: no cases selected")
    return list(case_ids)


def modality_indices(modalities: str | Sequence[str]) -> list[int]:
    """Channel indices of modality names in the cache (``"all"`` for all four).

    Examples
    --------
    >>> modality_indices(("flair", "t1ce"))
    [0, 2]
    """
    if modalities == "all":
        return list(range(len(BRATS.modalities)))
    names = [modalities] if isinstance(modalities, str) else list(modalities)
    unknown = [name for name in names if name not in BRATS.modalities]
    if unknown or not names:
        raise ValueError(f"unknown modalities {unknown or names}; choose from {BRATS.modalities} or 'all'")
    return [BRATS.modalities.index(name) for name in names]


def labels_to_target(label: np.ndarray, target: str = "wt") -> np.ndarray:
    """Turn BraTS labels into float32 region masks, one channel per region.

    Parameters
    ----------
    label : np.ndarray
        BraTS labels of any shape, e.g. ``(x, y, z)`` or ``(b, x, y)``.
    target : {"wt", "regions"}
        ``"wt"``: whole tumour, 1 channel; ``"regions"``: WT, TC, ET, 3 channels.

    Returns
    -------
    np.ndarray
        float32 of shape ``label.shape + (K,)``.

    Raises
    ------
    ValueError
        If ``target`` is unknown.

    Examples
    --------
    >>> labels_to_target(np.array([0, 1, 2, 4]), "regions").tolist()  # shape: (4, 3)
    [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}")
    label = np.asarray(label)
    if label.dtype != np.uint8:
        masks = [np.isin(label, BRATS.regions[name]) for name in TARGETS[target]]
        return np.stack(masks, axis=-1).astype(np.float32)
    # A lookup table is several times faster than np.isin on the cache's uint8 labels.
    lookup = np.zeros((256, len(TARGETS[target])), np.float32)
    for channel, name in enumerate(TARGETS[target]):
        lookup[list(BRATS.regions[name]), channel] = 1.0
    return lookup[label]


def _open(cache_dir: Path, case_id: str, name: str) -> np.ndarray:
    return np.load(cache_dir / "cases" / case_id / f"{name}.npy", mmap_mode="r", allow_pickle=False)


def load_case(
    cache_dir: str | os.PathLike[str],
    case_id: str,
    *,
    modalities: str | Sequence[str] = ("flair",),
    target: str | None = "wt",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load one cached case into memory.

    Parameters
    ----------
    cache_dir : path
        Prepared cache.
    case_id : str
        Case identifier (see :func:`load_split`).
    modalities : str or sequence of str, optional
        Names from ``BRATS.modalities`` or ``"all"``; FLAIR only by default.
    target : {"wt", "regions", "labels", None}, optional
        ``"wt"``/``"regions"``: float32 ``(x, y, z, K)`` masks (see
        :func:`labels_to_target`); ``"labels"``: the uint8 ``(x, y, z)`` BraTS
        labels; ``None``: no target.

    Returns
    -------
    image : np.ndarray
        float32 ``(x, y, z, C)``.
    target : np.ndarray or None
        As chosen above; None also for unlabelled cases.

    Raises
    ------
    FileNotFoundError
        If the case is not in the cache.
    ValueError
        For unknown modalities or target.
    """
    cache_dir, channels = Path(cache_dir), modality_indices(modalities)
    if target not in (*TARGETS, "labels", None):
        raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}, 'labels' or None")
    if not (cache_dir / "cases" / case_id / "case.json").is_file():
        raise FileNotFoundError(f"{cache_dir / 'cases' / case_id}: case not in the cache")
    image = np.asarray(_open(cache_dir, case_id, "image")[..., channels], dtype=np.float32)
    if target is None or not (cache_dir / "cases" / case_id / "label.npy").is_file():
        return image, None
    label = np.asarray(_open(cache_dir, case_id, "label"))
    return image, label if target == "labels" else labels_to_target(label, target)


def load_brain(cache_dir: str | os.PathLike[str], case_id: str) -> np.ndarray:
    """Boolean brain mask ``(x, y, z)`` of a cached case."""
    return np.asarray(_open(Path(cache_dir), case_id, "brain"))


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
        self.epoch += 1
        self._order = self._permutation()

    def _batch_items(self, index: int) -> list[Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        positions = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return [self.items[position] for position in positions]

    def _image(self, case_id: str) -> np.ndarray:
        return _open(self.cache_dir, case_id, "image")

    def _pair(self, images: list[np.ndarray], labels: list[np.ndarray]) -> Any:
        x = np.stack([np.asarray(image[..., self.channels], np.float32) for image in images])
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
        labels = [] if self.target is None else [_open(self.cache_dir, i, "label") for i in ids]
        return self._pair([self._image(case_id) for case_id in ids], labels)


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
        labels = [_open(self.cache_dir, case_id, "label")[:, :, z] for case_id, z in items]
        return self._pair(images, labels)


class PatchDataset(_CacheDataset):
    """Random 3D patches: ``x`` ``(b, px, py, pz, C)``, ``y`` ``(b, px, py, pz, K)`` float32.

    A fraction of the patches is centred on a random tumour voxel, the rest on
    a random brain voxel; the window is then shifted to lie inside the volume.
    Patch positions depend only on ``seed``, the epoch and the batch index.

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

    Examples
    --------
    >>> patches = PatchDataset(cache, "train", patch_shape=(32, 32, 32), batch_size=4)  # doctest: +SKIP
    >>> patches[0][1].shape  # doctest: +SKIP
    (4, 32, 32, 32, 1)
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        case_ids: str | Sequence[str] = "train",
        *,
        patch_shape: Sequence[int] = (32, 32, 32),
        patches_per_case: int = 1,
        tumour_fraction: float = 0.5,
        modalities: str | Sequence[str] = ("flair",),
        target: str = "wt",
        batch_size: int = 2,
        shuffle: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(patches_per_case, int) or patches_per_case < 1:
            raise ValueError(f"patches_per_case must be a positive integer, got {patches_per_case!r}")
        if not 0.0 <= tumour_fraction <= 1.0:
            raise ValueError(f"tumour_fraction must lie in [0, 1], got {tumour_fraction}")
        if target is None:
            raise ValueError("PatchDataset needs a target ('wt' or 'regions')")
        self.patch_shape = tuple(int(n) for n in patch_shape)
        self.patches_per_case, self.tumour_fraction = patches_per_case, tumour_fraction
        super().__init__(cache_dir, case_ids, modalities=modalities, target=target,
                         batch_size=batch_size, shuffle=shuffle, seed=seed, **kwargs)
        if len(self.patch_shape) != 3 or any(p < 1 or p > g for p, g in zip(self.patch_shape, self.grid)):
            raise ValueError(
                f"patch_shape must be 3 positive sizes within the grid {self.grid}, got {patch_shape}"
            )

    def _items(self) -> list[str]:
        return [case_id for case_id in self.case_ids for _ in range(self.patches_per_case)]

    def _corner(self, rng: np.random.Generator, case_id: str, label: np.ndarray) -> np.ndarray:
        candidates = np.flatnonzero(label) if rng.random() < self.tumour_fraction else np.empty(0)
        if candidates.size == 0:
            candidates = np.flatnonzero(_open(self.cache_dir, case_id, "brain"))
        grid, patch = np.array(label.shape), np.array(self.patch_shape)
        centre = np.array(np.unravel_index(rng.choice(candidates), label.shape))
        return np.clip(centre - patch // 2, 0, grid - patch)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for slot, case_id in enumerate(self._batch_items(index)):
            rng = np.random.default_rng([self.seed, self.epoch, index, slot])
            label = _open(self.cache_dir, case_id, "label")
            start = self._corner(rng, case_id, np.asarray(label))
            window = tuple(slice(s, s + p) for s, p in zip(start, self.patch_shape))
            images.append(self._image(case_id)[window])
            labels.append(label[window])
        return self._pair(images, labels)


def data_root() -> Path:
    """Folder for course data: ``$BRATS_COURSE_DATA`` if set, else ``<repo>/data``."""
    return Path(os.environ.get("BRATS_COURSE_DATA") or _REPO / "data")


def _cache_ready(cache: Path, n_cases: int, downsample: int) -> bool:
    try:
        manifest, _ = load_manifest(cache), load_split(cache)
    except (FileNotFoundError, ValueError):
        return False
    return manifest["downsample"] == downsample and len(manifest["cases"]) >= n_cases


def ensure_course_data(
    profile: str | Mapping[str, Any],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> Path:
    """Return the prepared synthetic cache of a run profile, making it if missing.

    Generates ``n_cases`` BraTS-like cases (:func:`tutorial_lib.synthetic.make_dataset`,
    seed 0) under ``<data_root>/synthetic/n<N>`` and prepares them at the
    profile's ``downsample`` into ``<data_root>/cache/synthetic-n<N>-k<K>``.
    Both steps skip finished cases, and a lock file makes concurrent calls wait
    for each other, so calling this again (or from several notebooks) is cheap
    and safe.

    Parameters
    ----------
    profile : str or mapping
        Profile name (``"ci"``, ``"laptop"``, ``"gpu"``) or a settings dict from
        :func:`tutorial_lib.config.get_profile`; uses ``n_cases`` and ``downsample``.
    cache_dir : path, optional
        Where to put the cache instead of the default.
    workers : int, optional
        Processes for generation and preparation (default: up to 4 CPUs).

    Returns
    -------
    Path
        The cache folder, ready for :func:`load_split` and the readers.

    Raises
    ------
    RuntimeError
        If some synthetic case could not be prepared.

    Examples
    --------
    >>> cache = ensure_course_data("ci")  # doctest: +SKIP
    >>> load_manifest(cache)["shape"]  # doctest: +SKIP
    [48, 48, 40]
    """
    from tutorial_lib import ingest, synthetic

    settings = get_profile(profile) if isinstance(profile, str) else dict(profile)
    n_cases, downsample = int(settings["n_cases"]), int(settings["downsample"])
    root = data_root()
    default = root / "cache" / f"synthetic-n{n_cases}-k{downsample}"
    cache = Path(cache_dir) if cache_dir is not None else default
    if _cache_ready(cache, n_cases, downsample):
        return cache
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ingest.directory_lock(root / ".course-data.lock"):
        if not _cache_ready(cache, n_cases, downsample):
            raw = root / "synthetic" / f"n{n_cases}"
            synthetic.make_dataset(raw, n_cases, seed=0, workers=workers)
            report = ingest.prepare_dataset(raw, cache, downsample=downsample, workers=workers, seed=0)
            if not report.ok:
                raise RuntimeError(f"preparing the synthetic data failed:\n{report.summary()}")
    return cache
