"""NumPy readers over the prepared cache, and the course's one-call data set-up.

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
:mod:`tutorial_lib.datasets`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tutorial_lib._files import directory_lock
from tutorial_lib.config import BRATS, get_profile

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
    "synthetic_raw_dir",
    "is_course_synthetic",
    "ensure_course_data",
    "ensure_appearance_data",
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


def _cache_ready(cache: Path, n_cases: int, downsample: int) -> bool:
    try:
        manifest, _ = load_manifest(cache), load_split(cache)
    except (FileNotFoundError, ValueError):
        return False
    return manifest["downsample"] == downsample and len(manifest["cases"]) >= n_cases


def synthetic_raw_dir(n_cases: int) -> Path:
    """Folder of the generated NIfTI cases of a synthetic set of ``n_cases``, before preparation.

    Examples
    --------
    >>> display_path(synthetic_raw_dir(32))
    '<data>/synthetic/n32'
    """
    return data_root() / "synthetic" / f"n{int(n_cases)}"


def is_course_synthetic(manifest: Mapping[str, Any]) -> bool:
    """True when every case of ``manifest`` was prepared from :func:`synthetic_raw_dir` of its size.

    That folder only ever holds what :func:`ensure_course_data` generated (dataset seed 0), so
    such a cache is the course's own synthetic data, and case ``i`` is the patient of seed
    ``synthetic.case_seed(0, i)``. Folders are compared by their last two parts, so a moved data
    root still counts.

    Examples
    --------
    >>> is_course_synthetic({"cases": {"Synth_0000": {"source": "/elsewhere/data/synthetic/n1"}}})
    True
    >>> is_course_synthetic({"cases": {"Brats17_2013_0_1": {"source": "/downloads/BraTS2017"}}})
    False
    """
    cases = manifest["cases"]
    expected = synthetic_raw_dir(len(cases)).parts[-2:]
    return bool(cases) and all(Path(entry["source"]).parts[-2:] == expected for entry in cases.values())


def ensure_course_data(
    profile: str | Mapping[str, Any],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> Path:
    """Return the prepared synthetic cache of a run profile, making it if missing.

    Generates ``n_cases`` BraTS-like cases (:func:`tutorial_lib.synthetic.make_dataset`,
    seed 0) under :func:`synthetic_raw_dir` and prepares them at the
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
    with directory_lock(root / ".course-data.lock"):
        if not _cache_ready(cache, n_cases, downsample):
            raw = synthetic_raw_dir(n_cases)
            synthetic.make_dataset(raw, n_cases, seed=0, workers=workers)
            report = ingest.prepare_dataset(raw, cache, downsample=downsample, workers=workers, seed=0)
            if not report.ok:
                raise RuntimeError(f"preparing the synthetic data failed:\n{report.summary()}")
    return cache


def ensure_appearance_data(
    course_cache: str | os.PathLike[str],
    appearance: str,
    case_ids: Sequence[str],
    *,
    workers: int | None = None,
) -> Path:
    """The course's synthetic cases ``case_ids`` seen by another scanner, prepared like the course's.

    The same patients (each case keeps its seed, so anatomy and tumour are
    unchanged) rendered with :data:`tutorial_lib.synthetic.APPEARANCES`
    ``[appearance]``, written as NIfTI under ``synthetic_raw_dir(n)-<appearance>``
    and prepared at the course cache's down-sampling into
    ``<course cache>-<appearance>``. Cases already there are kept, so asking
    for the test cases and later for the training cases fills one folder.

    Parameters
    ----------
    course_cache : path
        The course's synthetic cache (:func:`ensure_course_data`).
    appearance : str
        ``"varied"`` or ``"second_site"`` (``"course"`` is the course cache itself).
    case_ids : sequence of str
        Cases of the course cache to render, e.g. ``load_split(course_cache)["test"]``.
    workers : int, optional
        Processes for generation and preparation (default: up to 4 CPUs).

    Returns
    -------
    Path
        A cache whose manifest holds at least ``case_ids``.

    Raises
    ------
    ValueError
        If ``course_cache`` is not a synthetic cache or ``case_ids`` are not its cases.
    RuntimeError
        If a case could not be prepared.

    Examples
    --------
    >>> site = ensure_appearance_data(cache, "second_site", load_split(cache)["test"])  # doctest: +SKIP
    """
    from tutorial_lib import ingest, synthetic

    course_cache = Path(course_cache)
    manifest = load_manifest(course_cache)
    names = sorted(manifest["cases"])
    if not is_course_synthetic(manifest):  # only there does a case's name give its patient's seed
        raise ValueError(f"{display_path(course_cache)} is not a course synthetic cache (made by "
                         "ensure_course_data); real scans have no twin at another site")
    unknown = sorted(set(case_ids) - set(names))
    if unknown:
        raise ValueError(f"not cases of {display_path(course_cache)}: {unknown[:5]}")
    cache = course_cache.with_name(f"{course_cache.name}-{appearance}")
    if _cache_ready(cache, 0, manifest["downsample"]) and set(case_ids) <= set(load_manifest(cache)["cases"]):
        return cache
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with directory_lock(data_root() / f".{appearance}-data.lock"):
        raw = synthetic_raw_dir(len(names)).with_name(f"n{len(names)}-{appearance}")
        synthetic.make_dataset(raw, len(names), seed=0, workers=workers, appearance=appearance,
                               only=list(case_ids))
        report = ingest.prepare_dataset(raw, cache, downsample=manifest["downsample"], workers=workers, seed=0)
        if not report.ok:
            raise RuntimeError(f"preparing the {appearance} cases failed:\n{report.summary()}")
    return cache
