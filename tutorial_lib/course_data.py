"""The course's own data: BraTS-like synthetic cases, generated and prepared once per profile.

A chapter needs a prepared cache (:mod:`tutorial_lib.data` reads it). Without a
BraTS download the course makes one: :func:`ensure_course_data` generates the
profile's cases (:func:`tutorial_lib.synthetic.make_dataset`, dataset seed 0) and
prepares them with :func:`tutorial_lib.ingest.prepare_dataset`, exactly as real scans
are prepared. :func:`ensure_appearance_data` draws the same patients as another
scanner would see them (chapter 08). Both skip what is already there and wait for
each other through a lock file, so every notebook may call them.

This module writes; :mod:`tutorial_lib.data` only reads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from tutorial_lib import ingest, synthetic
from tutorial_lib._files import directory_lock
from tutorial_lib.config import get_profile
from tutorial_lib.data import data_root, display_path, load_manifest, load_split

__all__ = [
    "synthetic_raw_dir",
    "is_course_synthetic",
    "ensure_course_data",
    "ensure_appearance_data",
]


def _cache_ready(cache: Path, n_cases: int, downsample: int, test_cases: int | None = None) -> bool:
    try:
        manifest, split = load_manifest(cache), load_split(cache)
    except (FileNotFoundError, ValueError):
        return False
    return (manifest["downsample"] == downsample and len(manifest["cases"]) >= n_cases
            and (test_cases is None or len(split["test"]) == test_cases))


def _workers(workers: int | None) -> int:
    return workers or max(1, min(4, os.cpu_count() or 1))


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
    n_cases: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> Path:
    """Return the prepared synthetic cache of a run profile, making it if missing.

    Generates the profile's ``n_cases`` BraTS-like cases (seed 0) under
    :func:`synthetic_raw_dir` and prepares them at its ``downsample`` into
    ``<data_root>/cache/synthetic-n<N>-k<K>``, with the profile's ``test_cases``
    in the test split (the study's share where it sets none). Both steps skip finished cases, and
    a lock file makes concurrent calls wait for each other, so calling this again
    (or from several notebooks) is cheap and safe.

    Parameters
    ----------
    profile : {"ci", "laptop", "gpu", "dry-run"} or mapping
        Run profile (:data:`tutorial_lib.config.PROFILES`), or its resolved
        ``"data"`` settings (:func:`tutorial_lib.chapters.open_chapter` passes
        those): ``n_cases``, ``downsample`` and ``test_cases``.
    n_cases : int, optional
        Make this many cases instead of the profile's number; they are split
        in the study's proportions.
    cache_dir : path, optional
        Where to put the cache instead of the default.
    workers : int, optional
        Processes for generation and preparation (default: up to 4 CPUs).

    Returns
    -------
    Path
        The cache folder, ready for :func:`tutorial_lib.data.load_split` and the readers.

    Raises
    ------
    ValueError
        For an unknown profile.
    RuntimeError
        If some synthetic case could not be prepared.

    Examples
    --------
    >>> cache = ensure_course_data("ci")  # doctest: +SKIP
    >>> load_manifest(cache)["shape"]  # doctest: +SKIP
    [48, 48, 40]
    """
    settings = get_profile(profile) if isinstance(profile, str) else profile
    test_cases = settings["test_cases"] if n_cases is None else None
    n_cases, downsample = int(n_cases or settings["n_cases"]), int(settings["downsample"])
    root = data_root()
    cache = Path(cache_dir) if cache_dir is not None else root / "cache" / f"synthetic-n{n_cases}-k{downsample}"
    if _cache_ready(cache, n_cases, downsample, test_cases):
        return cache
    with directory_lock(root / ".course-data.lock"):
        if not _cache_ready(cache, n_cases, downsample, test_cases):
            raw = synthetic_raw_dir(n_cases)
            synthetic.make_dataset(raw, n_cases, seed=0, workers=_workers(workers))
            report = ingest.prepare_dataset(raw, cache, downsample=downsample, workers=_workers(workers), seed=0,
                                            test_cases=test_cases)
            if not report.ok:
                raise RuntimeError(f"preparing the synthetic data failed:\n{report.summary()}")
    return cache


def _appearance_folder(appearance: str) -> str:
    """``<appearance>-<digest of its values>``: the folder suffix of one appearance's cases."""
    if appearance not in synthetic.APPEARANCES:
        raise ValueError(f"unknown appearance {appearance!r}; choose one of {sorted(synthetic.APPEARANCES)}")
    digest = hashlib.sha256(repr(synthetic.APPEARANCES[appearance]).encode()).hexdigest()[:8]
    return f"{appearance}-{digest}"


def ensure_appearance_data(
    course_cache: str | os.PathLike[str],
    appearance: str,
    case_ids: Sequence[str],
    *,
    workers: int | None = None,
    make: bool = True,
) -> Path:
    """The course's synthetic cases ``case_ids`` seen by another scanner, prepared like the course's.

    The same patients (each case keeps its seed, so anatomy and tumour are
    unchanged) rendered with :data:`tutorial_lib.synthetic.APPEARANCES`
    ``[appearance]``, written as NIfTI under ``synthetic_raw_dir(n)-<appearance>-<digest>``
    and prepared at the course cache's down-sampling into
    ``<course cache>-<appearance>-<digest>``, where the digest follows the
    appearance's values: a changed appearance gets new folders instead of the
    old images. Cases already there are kept, so asking for the test cases
    and later for the training cases fills one folder.

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
    make : bool, optional
        ``False``: only find them (a training recipe reads data, it never makes it).

    Returns
    -------
    Path
        A cache whose manifest holds at least ``case_ids``.

    Raises
    ------
    ValueError
        If ``course_cache`` is not a synthetic cache or ``case_ids`` are not its cases.
    FileNotFoundError
        With ``make=False``, if those cases were not prepared yet: the message says which call makes them.
    RuntimeError
        If a case could not be prepared.

    Examples
    --------
    >>> site = ensure_appearance_data(cache, "second_site", load_split(cache)["test"])  # doctest: +SKIP
    """
    course_cache = Path(course_cache)
    manifest = load_manifest(course_cache)
    names = sorted(manifest["cases"])
    if not is_course_synthetic(manifest):  # only there does a case's name give its patient's seed
        raise ValueError(f"{display_path(course_cache)} is not a course synthetic cache (made by "
                         "ensure_course_data); real scans have no twin at another site")
    unknown = sorted(set(case_ids) - set(names))
    if unknown:
        raise ValueError(f"not cases of {display_path(course_cache)}: {unknown[:5]}")
    folder = _appearance_folder(appearance)
    cache = course_cache.with_name(f"{course_cache.name}-{folder}")
    if _cache_ready(cache, 0, manifest["downsample"]) and set(case_ids) <= set(load_manifest(cache)["cases"]):
        return cache
    if not make:
        raise FileNotFoundError(f"{display_path(cache)} lacks cases asked for at appearance {appearance!r}; make "
                                f"them first: course_data.ensure_appearance_data(cache_dir, {appearance!r}, case_ids)")
    with directory_lock(data_root() / f".{appearance}-data.lock"):
        raw = synthetic_raw_dir(len(names)).with_name(f"n{len(names)}-{folder}")
        synthetic.make_dataset(raw, len(names), seed=0, workers=_workers(workers), appearance=appearance,
                               only=list(case_ids))
        report = ingest.prepare_dataset(raw, cache, downsample=manifest["downsample"], workers=_workers(workers),
                                        seed=0)
        if not report.ok:
            raise RuntimeError(f"preparing the {appearance} cases failed:\n{report.summary()}")
    return cache

