"""NumPy readers over the prepared cache.

The cache (written by :mod:`tutorial_lib.ingest`, layout in ``CONTRIBUTING.md``)
holds per case ``image.npy`` ``(x, y, z, 4)`` float16, ``label.npy`` ``(x, y, z)``
uint8 BraTS labels and ``brain.npy`` ``(x, y, z)`` bool. Arrays are opened with
``np.load(mmap_mode="r")``, so a reader touches only the voxels it returns and
never unpickles anything.

:func:`load_case` returns float32, channels-last arrays: image ``(x, y, z, C)``
and target ``(x, y, z, K)``, where ``C`` is the number of selected modalities
(FLAIR only, the paper's choice, by default) and ``K`` is 1 for ``target="wt"``
(whole tumour) or 3 for ``target="regions"`` (WT, TC, ET).

This module needs only NumPy: importing it starts no deep-learning backend.
The Keras readers that batch the cache for ``model.fit`` live in
:mod:`tutorial_lib.datasets`; the writers that make a cache, in :mod:`tutorial_lib.ingest` and
:mod:`tutorial_lib.course_data` (the course's own synthetic cases).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tutorial_lib.config import BRATS

__all__ = [
    "TARGETS",
    "NonFiniteDataError",
    "non_finite_count",
    "check_finite",
    "load_manifest",
    "load_split",
    "resolve_case_ids",
    "load_case",
    "load_brain",
    "target_prior",
    "open_array",
    "labels_to_target",
    "modality_indices",
    "data_root",
    "display_path",
]

# Target name -> BraTS regions stacked as channels.
TARGETS: Mapping[str, tuple[str, ...]] = {"wt": ("WT",), "regions": ("WT", "TC", "ET")}
_REPO = Path(__file__).resolve().parents[1]


class NonFiniteDataError(ValueError):
    """An image holds NaN or infinite values; the message names the file or array.

    Training on such a value does not fail by itself: a ReLU turns NaN into 0,
    so the loss stays finite while the first kernel becomes NaN.
    """


def non_finite_count(array: np.ndarray) -> int:
    """Number of NaN/inf values in ``array`` (0 for integer and boolean arrays).

    ``np.isfinite(...).all()`` screens the array in one vectorised pass (about
    3 % of reading a cached volume, see ``benchmarks/bench_finite_checks.py``);
    only a failing array pays for the exact count.

    Examples
    --------
    >>> non_finite_count(np.array([1.0, np.nan, np.inf], np.float16))
    2
    >>> non_finite_count(np.array([3, 4]))
    0
    """
    array = np.asarray(array)
    if array.dtype.kind not in "fc" or np.isfinite(array).all():
        return 0
    return int(np.count_nonzero(~np.isfinite(array)))


def check_finite(array: np.ndarray, where: Any, *, advice: str = "Prepare the case again or leave it out.") -> None:
    """Raise :class:`NonFiniteDataError` naming ``where`` and the first bad index if ``array`` holds NaN or inf.

    Examples
    --------
    >>> check_finite(np.array([[0.0, np.nan]]), "x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tutorial_lib.data.NonFiniteDataError: x: 1 non-finite value(s) (NaN or inf) of 2, the first at index [0, 1]; ...
    """
    bad = non_finite_count(array)
    if bad:
        array = np.asarray(array)
        first = np.argwhere(~np.isfinite(array))[0].tolist()
        raise NonFiniteDataError(
            f"{where}: {bad} non-finite value(s) (NaN or inf) of {array.size}, the first at index {first}; "
            f"training on them gives NaN weights. {advice}"
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; prepare the cache with data_scripts/prepare_brats.py "
            "or tutorial_lib.course_data.ensure_course_data(profile)"
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


def open_array(cache_dir: str | os.PathLike[str], case_id: str, name: str) -> np.ndarray:
    """Memory-map ``<cache>/cases/<case_id>/<name>.npy`` (``image``, ``label`` or ``brain``) read-only.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If it is not a plain ``.npy`` array (empty, truncated, pickled); the message names it.
    """
    path = Path(cache_dir) / "cases" / case_id / f"{name}.npy"
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as error:
        # np.load's own messages ("Object arrays cannot be loaded...") do not say which file.
        raise ValueError(f"{path}: not a readable .npy array ({error}); prepare the case again") from error


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
    NonFiniteDataError
        If the selected image channels hold NaN or inf (the message names the file).
    ValueError
        For unknown modalities or target.
    """
    cache_dir, channels = Path(cache_dir), modality_indices(modalities)
    if target not in (*TARGETS, "labels", None):
        raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}, 'labels' or None")
    if not (cache_dir / "cases" / case_id / "case.json").is_file():
        raise FileNotFoundError(f"{cache_dir / 'cases' / case_id}: case not in the cache")
    image = np.asarray(open_array(cache_dir, case_id, "image")[..., channels], dtype=np.float32)
    check_finite(image, cache_dir / "cases" / case_id / "image.npy")
    if target is None or not (cache_dir / "cases" / case_id / "label.npy").is_file():
        return image, None
    label = np.asarray(open_array(cache_dir, case_id, "label"))
    return image, label if target == "labels" else labels_to_target(label, target)


def load_brain(cache_dir: str | os.PathLike[str], case_id: str) -> np.ndarray:
    """Boolean brain mask ``(x, y, z)`` of a cached case."""
    return np.asarray(open_array(Path(cache_dir), case_id, "brain"))


def target_prior(cache_dir: str | os.PathLike[str], case_ids: str | Sequence[str] = "train", *,
                 target: str = "wt") -> np.ndarray:
    """Fraction of all voxels of ``case_ids`` that each channel of ``target`` covers: its prior.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(channels,)``: one value for ``"wt"``, WT, TC and ET for ``"regions"``.

    Examples
    --------
    >>> target_prior(cache, "train", target="regions")  # doctest: +SKIP
    array([0.0432, 0.0121, 0.0047])
    """
    totals, voxels = 0.0, 0
    for case_id in resolve_case_ids(cache_dir, case_ids):
        masks = load_case(cache_dir, case_id, target=target)[1]
        totals = totals + masks.reshape(-1, masks.shape[-1]).sum(axis=0, dtype=np.float64)
        voxels += int(np.prod(masks.shape[:-1]))
    return np.asarray(totals, dtype=np.float64) / voxels


def data_root() -> Path:
    """Folder for course data: ``$BRATS_COURSE_DATA`` if set, else ``<repo>/data``."""
    return Path(os.environ.get("BRATS_COURSE_DATA") or _REPO / "data")


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a page may show it: relative to the data root, never the machine's absolute path.

    Examples
    --------
    >>> display_path(data_root() / "cache" / "synthetic-n32-k4")
    '<data>/cache/synthetic-n32-k4'
    >>> display_path("/home/someone/brats/cache")
    '.../cache'
    """
    path = Path(path).resolve()
    try:
        return "<data>/" + path.relative_to(data_root().resolve()).as_posix()
    except ValueError:
        return f".../{path.name}"
