"""Import a BraTS download (folder or archive) into the memory-mappable cache.

The source layouts (BraTS 2017-2021, BraTS 2023+, MSD Task01), safe archive
extraction and per-case validation live in :mod:`tutorial_lib.sources`.

Each case is validated, cropped, normalised and optionally down-sampled:

* **crop** -- the paper's 192 x 192 in-plane "pseudo bounding box": a fixed
  window centred on the 240 x 240 slice, shifted (as little as possible) so
  that it contains the brain's bounding box. Depth keeps all 155 slices and
  is zero-padded at the top to 160, so that four 2x poolings divide it.
  Axes shorter than the crop are zero-padded at their end. The window and the
  padding are stored per case, so a prediction can be put back.
* **normalise** -- each modality is z-scored with the mean and standard
  deviation of the brain inside the crop window (brain: voxels where any
  modality is non-zero); voxels outside the brain are 0. The statistics are
  kept in the manifest.
* **down-sample by K** -- images: mean of each K x K x K block; brain mask:
  a block is brain if any voxel in it is; labels: each nested region
  (WT, TC, ET) is down-sampled by majority (at least half the block), and the
  innermost region that holds gives the label. Every region's coarse mask is
  thus its own majority vote, and the regions stay nested.

The cache layout is described in ``CONTRIBUTING.md``. Arrays are channels-last:
``image.npy`` is ``(x, y, z, 4)`` float16 in ``BRATS.modalities`` order.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm  # text, never a widget: the built book keeps no kernel to draw one

from tutorial_lib._files import atomic_dir, directory_lock, full_disk_error, write_json_atomic
from tutorial_lib.config import BRATS
from tutorial_lib.sources import (
    MAX_CASE_BYTES,
    MAX_MEMBER_BYTES,
    CaseError,
    CaseSource,
    case_of_member,
    detect_layout,
    extract_members,
    find_cases,
    read_case,
)

__all__ = [
    "PrepareReport",
    "crop_box",
    "downsample_image",
    "downsample_mask",
    "downsample_label",
    "zscore_in_brain",
    "normalise_case",
    "split_sizes",
    "split_cases",
    "prepare_dataset",
]

logger = logging.getLogger(__name__)

# Paper split for its 285 labelled cases: 240 train+val (20 % val), 45 test.
_PAPER_CASES, _PAPER_TEST, _VAL_FRACTION = 285, 45, 0.2


@dataclass
class PrepareReport:
    """Outcome of :func:`prepare_dataset`.

    Attributes
    ----------
    out_dir : Path
        The cache folder.
    layout : str
        Detected source layout.
    prepared, skipped : list of str
        Cases written by this run / already complete from an earlier one.
    failed : dict of str to str
        Case id -> message naming the file(s) and problem(s).
    rejected_members : dict of str to str
        Unsafe archive member -> reason it was not extracted.
    damaged_members : dict of str to str
        ``"<archive name>:<member>"`` -> why it could not be extracted
        (truncated, bad CRC, beyond the decompression limits).
    warnings : dict of str to str
        Case id -> note on a prepared case (for example an empty label or
        modality, or an id already prepared from another source).
    not_attempted : dict of str to str
        Case id -> why it was not prepared: once a case finds the disk full
        (its ``failed`` message says how much space the remaining cases
        need), the cases not yet started are left for a later run.
    """

    out_dir: Path
    layout: str
    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rejected_members: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    damaged_members: dict[str, str] = field(default_factory=dict)
    not_attempted: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every case was prepared and no archive member was refused or damaged."""
        return not (self.failed or self.rejected_members or self.damaged_members or self.not_attempted)

    def summary(self) -> str:
        """One-paragraph human-readable summary, listing every problem."""
        lines = [
            f"{self.layout}: {len(self.prepared)} prepared, {len(self.skipped)} already done, "
            f"{len(self.failed)} failed, {len(self.rejected_members)} archive member(s) refused"
            + (f", {len(self.damaged_members)} damaged" if self.damaged_members else "")
            + (f", {len(self.not_attempted)} not attempted" if self.not_attempted else "")
            + f" -> {self.out_dir}"
        ]
        lines += [f"  FAILED {case}: {message}" for case, message in sorted(self.failed.items())]
        for why in sorted(set(self.not_attempted.values())):
            cases = sorted(case for case, reason in self.not_attempted.items() if reason == why)
            lines.append(f"  NOT ATTEMPTED {', '.join(cases)}: {why}")
        lines += [f"  REFUSED {name}: {why}" for name, why in sorted(self.rejected_members.items())]
        lines += [f"  DAMAGED {name}: {why}" for name, why in sorted(self.damaged_members.items())]
        lines += [f"  note {case}: {message}" for case, message in sorted(self.warnings.items())]
        return "\n".join(lines)




# ----------------------------------------------------------------------------- geometry


def _axis_window(low: int, high: int, size: int, crop: int) -> tuple[int, int, int]:
    if size <= crop:
        return 0, size, crop - size
    start = (size - crop) // 2
    if high - low <= crop:
        start = min(max(start, high - crop), low)
    else:
        start = (low + high) // 2 - crop // 2
    start = min(max(start, 0), size - crop)
    return start, start + crop, 0


def crop_box(
    brain: np.ndarray, *, crop_shape: tuple[int, int, int] = BRATS.crop_shape
) -> tuple[list[list[int]], list[list[int]]]:
    """Crop window and end padding that map a volume onto ``crop_shape``.

    Along each axis longer than the crop, the window starts centred and moves
    as little as needed to contain the brain's extent (if that extent is longer
    than the crop, the window is centred on it). Shorter axes are kept whole
    and zero-padded at their end.

    Parameters
    ----------
    brain : np.ndarray
        Boolean brain mask ``(x, y, z)`` on the original grid.
    crop_shape : tuple of int, optional
        Target grid, ``BRATS.crop_shape`` (192, 192, 160) by default.

    Returns
    -------
    box : list of [start, stop]
        Per-axis window in original voxel indices.
    padding : list of [before, after]
        Per-axis zero padding applied after cropping (``before`` is always 0).

    Examples
    --------
    >>> brain = np.zeros((240, 240, 155), bool); brain[30:200, 10:190, 5:150] = True
    >>> crop_box(brain)
    ([[24, 216], [10, 202], [0, 155]], [[0, 0], [0, 0], [0, 5]])
    """
    if brain.ndim != 3 or not brain.any():
        raise ValueError(f"brain mask must be a non-empty 3D array, got shape {brain.shape}")
    box, padding = [], []
    for axis, crop in enumerate(crop_shape):
        present = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        start, stop, pad = _axis_window(int(present[0]), int(present[-1]) + 1, brain.shape[axis], crop)
        box.append([start, stop])
        padding.append([0, pad])
    return box, padding


def _apply_crop(volume: np.ndarray, box: list[list[int]], padding: list[list[int]]) -> np.ndarray:
    window = volume[tuple(slice(start, stop) for start, stop in box)]
    out = np.zeros([stop - start + pad for (start, stop), (_, pad) in zip(box, padding)], volume.dtype)
    out[tuple(slice(0, n) for n in window.shape)] = window
    return out


def _blocks(array: np.ndarray, factor: int) -> np.ndarray:
    x, y, z = array.shape[:3]
    if x % factor or y % factor or z % factor:
        raise ValueError(f"grid {array.shape[:3]} is not divisible by the down-sampling factor {factor}")
    return array.reshape(x // factor, factor, y // factor, factor, z // factor, factor, *array.shape[3:])


def downsample_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of ``(x, y, z[, channels])`` over ``factor``-sized cubes, as float32."""
    if factor == 1:
        return image.astype(np.float32, copy=False)
    return _blocks(image.astype(np.float32, copy=False), factor).mean(axis=(1, 3, 5))


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Block "any" of a boolean ``(x, y, z)`` mask: a coarse voxel is set if any fine one is."""
    return mask if factor == 1 else _blocks(mask, factor).any(axis=(1, 3, 5))


def downsample_label(label: np.ndarray, factor: int) -> np.ndarray:
    """Down-sample a BraTS label volume ``(x, y, z)`` region by region.

    Each nested region (WT, then TC, then ET) is set where at least half of
    the block belongs to it; the innermost region that is set decides the
    label. So each region's coarse mask is its own majority vote, which keeps
    small but solid structures (a compact enhancing core) and drops only
    structures thinner than half a block.

    Examples
    --------
    >>> label = np.zeros((2, 2, 2), np.uint8); label[0] = 4   # half the block ET
    >>> int(downsample_label(label, 2)[0, 0, 0])
    4
    """
    if factor == 1:
        return label
    out = np.zeros(tuple(n // factor for n in label.shape), np.uint8)
    for region, value in BRATS.region_labels.items():  # outermost first, inner ones overwrite
        lookup = np.zeros(256, np.float32)
        lookup[list(BRATS.regions[region])] = 1.0
        out[_blocks(lookup[label], factor).mean(axis=(1, 3, 5)) >= 0.5] = value
    return out


# ----------------------------------------------------------------------------- one case


def zscore_in_brain(
    volume: np.ndarray, brain: np.ndarray, *, in_place: bool = False
) -> tuple[np.ndarray, float, float]:
    """Z-score ``volume`` with the mean and standard deviation of its brain voxels; 0 outside.

    Scanners give arbitrary intensity units; after this every modality of every case is
    in "standard deviations from the brain's mean". A brain of one constant value (a
    blank modality) has no spread to divide by and becomes 0.

    Parameters
    ----------
    volume : numpy.ndarray
        Intensities ``(x, y, z)``.
    brain : numpy.ndarray
        Boolean mask of the same shape, not empty.
    in_place : bool, optional
        Overwrite ``volume`` (float) instead of returning a float32 copy; preparing a
        full-size case does, to halve its peak memory.

    Returns
    -------
    z : numpy.ndarray
        The z-scored volume.
    mean, std : float
        The brain's statistics (``std`` is 1.0 where the brain is constant).

    Raises
    ------
    ValueError
        If the shapes differ, ``brain`` is not boolean, or it is empty.

    Examples
    --------
    >>> z, mean, std = zscore_in_brain(np.array([1.0, 3.0, 9.0]), np.array([True, True, False]))
    >>> z.tolist(), mean, std
    ([-1.0, 1.0, 0.0], 2.0, 1.0)
    """
    brain = np.asarray(brain)
    if brain.dtype != bool or volume.shape != brain.shape:
        raise ValueError(f"brain must be a boolean mask of the volume's shape {volume.shape}, "
                         f"got {brain.dtype} {brain.shape}")
    if not brain.any():
        raise ValueError("brain mask is empty; cannot z-score")
    values = volume[brain]
    mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
    std = std if std > 1e-6 else 1.0  # a constant modality becomes 0 instead of dividing by 0
    z = volume if in_place else volume.astype(np.float32)
    z -= mean
    z /= std
    z[~brain] = 0.0
    return z, mean, std


def _volumes_cm3(label: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    counts = np.bincount(label.ravel(), minlength=256)
    return {str(value): float(counts[value] * voxel_mm3 / 1000.0) for value in BRATS.labels if value}


def _blank_modalities(case: CaseSource, images: dict[str, np.ndarray]) -> list[str]:
    """Notes for modalities whose every voxel is zero (a failed export): z-scored they are all 0."""
    return [
        f"{case.files.get(m, case.files.get('image'))}: every voxel of {m} is zero; "
        "it is kept as zeros, so leave it out of `modalities` when training"
        for m in BRATS.modalities if not images[m].any()
    ]


def normalise_case(
    images: dict[str, np.ndarray], brain: np.ndarray, modalities: Sequence[str], downsample: int, *,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], dict[str, dict[str, float]]]:
    """The cache's preparation of one case's 1 mm volumes: crop, z-score in the brain, block-average.

    Parameters
    ----------
    images : dict of str to numpy.ndarray
        Float volumes ``(x, y, z)`` by modality; each one used is removed from
        the dict, which halves the peak memory of a full-size case.
    brain : numpy.ndarray
        Non-empty boolean brain mask on the same grid.
    modalities : sequence of str
        The channels to prepare, in order.
    downsample : int
        Block size.
    dtype : optional
        Of the returned image (the cache stores float16).

    Returns
    -------
    image : numpy.ndarray
        ``(x, y, z, len(modalities))`` on the cache grid.
    brain : numpy.ndarray
        The brain mask on the cache grid.
    geometry : dict
        ``original_shape``, ``crop_box``, ``padding`` and ``downsample``: what
        :func:`tutorial_lib.inference.write_segmentation` undoes.
    stats : dict
        The z-score's ``mean`` and ``std`` per modality.

    Examples
    --------
    >>> flair = np.zeros((8, 8, 8), np.float32); flair[2:6, 2:6, 2:6] = np.arange(1, 65).reshape(4, 4, 4)
    >>> image, brain, geometry, _ = normalise_case({"flair": flair}, flair != 0, ["flair"], 4)
    >>> image.shape, brain.shape, geometry["crop_box"]
    ((48, 48, 40, 1), (48, 48, 40), [[0, 8], [0, 8], [0, 8]])
    """
    box, padding = crop_box(brain)
    original_shape, brain = list(brain.shape), _apply_crop(brain, box, padding)
    image, stats = np.empty([n // downsample for n in brain.shape] + [len(modalities)], dtype), {}
    for channel, modality in enumerate(modalities):
        volume = _apply_crop(images.pop(modality), box, padding)
        _, mean, std = zscore_in_brain(volume, brain, in_place=True)
        stats[modality] = {"mean": mean, "std": std}
        image[..., channel] = downsample_image(volume, downsample)
    geometry = {"original_shape": original_shape, "crop_box": box, "padding": padding, "downsample": downsample}
    return image, downsample_mask(brain, downsample), geometry, stats


def _process(case: CaseSource, root: Path, downsample: int) -> tuple[dict[str, np.ndarray], dict]:
    images, label, affine, notes = read_case(case)
    brain = np.logical_or.reduce([images[m] != 0 for m in BRATS.modalities])
    if not brain.any():
        raise CaseError(f"{next(iter(case.files.values()))}: every image voxel is zero in every modality")
    notes = notes + _blank_modalities(case, images)
    image, brain, geometry, stats = normalise_case(images, brain, BRATS.modalities, downsample, dtype=np.float16)
    arrays = {"image": image, "brain": brain}
    if label is not None:
        arrays["label"] = downsample_label(_apply_crop(label, geometry["crop_box"], geometry["padding"]), downsample)
    details = {  # in the manifest's key order, which data_id hashes
        "original_shape": geometry["original_shape"],
        "original_affine": affine.tolist(),
        "crop_box": geometry["crop_box"],
        "padding": geometry["padding"],
        "downsample": downsample,
        "normalisation": stats,
        "notes": notes,
    }
    return arrays, _case_meta(case, root, arrays, label, details)


def _case_meta(
    case: CaseSource, root: Path, arrays: dict[str, np.ndarray], label: np.ndarray | None, details: dict
) -> dict[str, Any]:
    """The case's manifest entry (also stored as ``cases/<id>/case.json``)."""
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(details["original_affine"])[:3, :3])))
    meta: dict[str, Any] = {
        "case_id": case.case_id,
        "layout": case.layout,
        "labelled": label is not None,
        "source_files": {key: Path(path).relative_to(root).as_posix() for key, path in case.files.items()},
        **details,
        "voxel_volume_mm3": voxel_mm3,
        "shape": list(arrays["brain"].shape),
        "brain_slices": np.flatnonzero(arrays["brain"].any(axis=(0, 1))).tolist(),
    }
    if label is not None:
        meta["tumour_volumes_cm3"] = _volumes_cm3(label, voxel_mm3)
        meta["empty_label"] = not label.any()
        meta["tumour_slices"] = np.flatnonzero(arrays["label"].any(axis=(0, 1))).tolist()
    return meta


def _write_case(cases_dir: Path, case_id: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write into ``.tmp-<id>-*`` and rename, so a case folder is complete or absent."""
    with atomic_dir(cases_dir / case_id) as tmp:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        write_json_atomic(tmp / "case.json", meta)


# In a worker process: the event the parent sets once a case found the disk full (see _run_cases).
_DISK_FULL: Any = None


def _init_worker(disk_full: Any) -> None:
    global _DISK_FULL
    _DISK_FULL = disk_full


def _disk_was_full() -> bool:
    return _DISK_FULL is not None and _DISK_FULL.is_set()


def _prepare_one(
    case: CaseSource, root: Path, cases_dir: Path, downsample: int, source: str = ""
) -> tuple[str, str, str]:
    """Worker: returns (case_id, "prepared" | "failed" | "disk full" | "not attempted", message)."""
    if _disk_was_full():
        return case.case_id, "not attempted", ""
    try:
        arrays, meta = _process(case, root, downsample)
        meta["source"] = source  # so a later import of the same id from elsewhere is noticed
        if _disk_was_full():  # found full while this case was being read
            return case.case_id, "not attempted", ""
        _write_case(cases_dir, case.case_id, arrays, meta)
        return case.case_id, "prepared", "; ".join(meta["notes"])
    except CaseError as error:
        return case.case_id, "failed", str(error)
    except Exception as error:  # noqa: BLE001 - one broken case must not stop the import
        if full_disk_error(error, cases_dir) is not None:  # but a full disk does: see _run_cases
            return case.case_id, "disk full", str(error)
        return case.case_id, "failed", f"{type(error).__name__}: {error}"


# ----------------------------------------------------------------------------- split


def split_sizes(n_cases: int, *, test_cases: int | None = None) -> tuple[int, int, int]:
    """Train, validation and test sizes for ``n_cases`` labelled cases.

    The paper's 285 cases give 240 for training (20 % of them, 48, for
    validation) and 45 for testing. Other counts keep the proportions, rounding
    halves up: ``test = round(n * 45 / 285)``, ``val = round(0.2 * (n - test))``.
    ``test_cases`` sets the test share instead; the rest is split as before.
    (The synthetic ``ci`` data hold more test cases than the study's share:
    a test case costs only inference, and verdicts need many, see
    :mod:`tutorial_lib.verdicts`.)

    Examples
    --------
    >>> split_sizes(285)
    (192, 48, 45)
    >>> split_sizes(16)
    (10, 3, 3)
    >>> split_sizes(47, test_cases=20)
    (22, 5, 20)
    """
    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases}")
    if test_cases is not None and not 0 <= test_cases <= n_cases:
        raise ValueError(f"test_cases must lie between 0 and n_cases ({n_cases}), got {test_cases}")
    test = math.floor(n_cases * _PAPER_TEST / _PAPER_CASES + 0.5) if test_cases is None else test_cases
    val = math.floor(_VAL_FRACTION * (n_cases - test) + 0.5)
    return n_cases - test - val, val, test


def split_cases(case_ids: Iterable[str], *, seed: int, test_cases: int | None = None) -> dict[str, list[str]]:
    """Seeded train/val/test split with the sizes of :func:`split_sizes`.

    The result depends only on the set of ids, the seed and ``test_cases``, not their order.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.
    """
    ids = sorted(set(case_ids))
    train, val, _ = split_sizes(len(ids), test_cases=test_cases)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    parts = {"train": order[:train], "val": order[train : train + val], "test": order[train + val :]}
    return {name: sorted(part) for name, part in parts.items()}


# ----------------------------------------------------------------------------- dataset


def _source_root(src: Path, out_dir: Path, report: PrepareReport, limits: tuple[int, int]) -> Path:
    """Folder to read cases from: ``src`` or a new ``out_dir/.extract-*`` (the caller deletes it)."""
    if src.is_dir():
        return src
    target = Path(tempfile.mkdtemp(prefix=f".extract-{src.name}-", dir=out_dir))
    refused, damaged = extract_members(src, target, max_member_bytes=limits[0], max_case_bytes=limits[1])
    report.rejected_members.update(refused)
    report.damaged_members.update({f"{src.name}:{name}": why for name, why in damaged.items()})
    for name, why in damaged.items():
        logger.warning("%s: member %s not extracted: %s", src, name, why)
    return target


def _finished_cases(cases_dir: Path) -> dict[str, dict]:
    finished = {}
    for case_json in sorted(cases_dir.glob("*/case.json")):
        if not case_json.parent.name.startswith("."):
            finished[case_json.parent.name] = json.loads(case_json.read_text())
    return finished


def _clean_leftovers(out_dir: Path) -> None:
    """Remove temporary files and folders of an interrupted run (the lock is held)."""
    cases_dir = out_dir / "cases"
    for pattern in (".extract-*", ".manifest.json.*", ".split.json.*"):
        for leftover in out_dir.glob(pattern):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    for leftover in cases_dir.glob(".tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    for folder in cases_dir.iterdir() if cases_dir.is_dir() else []:
        if folder.is_dir() and not (folder / "case.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)


def _check_downsample(downsample: int, finished: dict[str, dict], out_dir: Path) -> None:
    if not isinstance(downsample, int) or downsample < 1 or any(n % downsample for n in BRATS.crop_shape):
        raise ValueError(
            f"downsample must be a positive integer dividing {BRATS.crop_shape}, got {downsample!r}"
        )
    earlier = {meta["downsample"] for meta in finished.values()} - {downsample}
    if earlier:
        raise ValueError(
            f"{out_dir} holds cases prepared with downsample {sorted(earlier)}; use another --out"
        )


def _write_index(out_dir: Path, downsample: int, seed: int, test_cases: int | None) -> None:
    cases = _finished_cases(out_dir / "cases")
    labelled = [case_id for case_id, meta in cases.items() if meta["labelled"]]
    shape = [n // downsample for n in BRATS.crop_shape]
    write_json_atomic(
        out_dir / "manifest.json",
        {"version": 1, "downsample": downsample, "modalities": list(BRATS.modalities), "shape": shape,
         "cases": cases},
    )
    unlabelled = sorted(set(cases) - set(labelled))
    split = {"seed": seed, **split_cases(labelled, seed=seed, test_cases=test_cases), "unlabelled": unlabelled}
    write_json_atomic(out_dir / "split.json", split)


def _case_bytes(downsample: int) -> int:
    """Bytes of one prepared case's arrays (float16 image, brain, label) with their .npy headers."""
    return math.prod(n // downsample for n in BRATS.crop_shape) * (2 * len(BRATS.modalities) + 2) + 3 * 128


def _full_disk_outcome(result: tuple[str, str, str], full: list[str], remaining: int, cases_dir: Path,
                       downsample: int) -> tuple[str, str, str]:
    """``result`` as reported: the first "disk full" (noted in ``full``) says what the ``remaining`` cases need."""
    case_id, status, message = result
    if status == "disk full" and not full:
        full.append(case_id)
        error = full_disk_error(
            OSError(errno.ENOSPC, message), cases_dir, needed=remaining * _case_bytes(downsample),
            purpose=f"the {remaining} remaining case(s)",
            hint="free space there or point BRATS_COURSE_DATA (or --out) at another disk")
        return case_id, "failed", str(error)
    if status in ("disk full", "not attempted"):  # a case in flight found it too / one never started
        reason = f"the disk holding {cases_dir} is full (see case {full[0]})"
        return case_id, "failed" if status == "disk full" else status, reason
    return result


def _run_cases(todo: list[CaseSource], root: Path, cases_dir: Path, downsample: int, workers: int,
               progress: bool, source: str) -> Iterator[tuple[str, str, str]]:
    """Prepare ``todo``; yields (case_id, "prepared" | "failed" | "not attempted", message).

    The first case that finds the disk full stops the run: the cases not
    started yet are not attempted (queued ones are cancelled, and workers skip
    the ones they already took), those in flight end either way, and every
    case already written stays.
    """
    bar = tqdm(total=len(todo), desc="preparing cases", unit="case", disable=not progress)
    full: list[str] = []  # the case that found the disk full first
    if workers == 1:
        for done, case in enumerate(todo):
            result = (case.case_id, "not attempted", "") if full else _prepare_one(
                case, root, cases_dir, downsample, source)
            yield _full_disk_outcome(result, full, len(todo) - done, cases_dir, downsample)
            bar.update()
    else:
        # "spawn": forking a process that already runs TensorFlow/JAX threads can deadlock.
        context = multiprocessing.get_context("spawn")
        disk_full = context.Event()
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                 initargs=(disk_full,)) as pool:
            futures = {pool.submit(_prepare_one, case, root, cases_dir, downsample, source): case for case in todo}
            for done, future in enumerate(as_completed(futures)):
                result = (futures[future].case_id, "not attempted", "") if future.cancelled() else future.result()
                outcome = _full_disk_outcome(result, full, len(todo) - done, cases_dir, downsample)
                if full and not disk_full.is_set():
                    disk_full.set()
                    for pending in futures:
                        pending.cancel()  # only those no worker has taken yet; the others check disk_full
                yield outcome
                bar.update()
    bar.close()


def prepare_dataset(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    downsample: int = 1,
    workers: int = 1,
    seed: int = 0,
    test_cases: int | None = None,
    progress: bool = True,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_case_bytes: int = MAX_CASE_BYTES,
) -> PrepareReport:
    """Validate, crop, normalise and cache every case of a BraTS download.

    Finished cases in ``out_dir`` are skipped, so an interrupted run resumes;
    a failing case is reported and the others are still prepared, except
    after a full disk: the case that found it fails with a message naming
    the folder, its free space and what the remaining cases need, and the
    cases not started are reported in ``not_attempted``. The manifest and
    split are rebuilt from all finished cases at the end.

    Parameters
    ----------
    src : path
        Folder or .zip/.tar[.gz] archive in one of :data:`tutorial_lib.sources.LAYOUTS`.
    out_dir : path
        Cache folder (see ``CONTRIBUTING.md`` for its layout).
    downsample : int, optional
        Block size K; the cache grid is ``BRATS.crop_shape // K``.
    workers : int, optional
        Worker processes (1 runs in this process).
    seed : int, optional
        Seed of the train/val/test split.
    test_cases : int, optional
        Size of the test split; default the study's share (:func:`split_sizes`).
    progress : bool, optional
        Show a tqdm progress bar.
    max_member_bytes, max_case_bytes : int, optional
        Decompression bounds for an archive's members and for all members of
        one case; a member beyond them is reported in ``damaged_members``.

    Returns
    -------
    PrepareReport
        Prepared, skipped and failed cases, refused and damaged archive
        members; ``report.ok`` is False if anything failed. A damaged archive
        (an interrupted download) still yields every case complete in it, and
        no extracted file is left in ``out_dir`` afterwards.

    Raises
    ------
    ValueError
        For a bad ``downsample``/``workers``, an unrecognised source, or an
        ``out_dir`` prepared earlier with another ``downsample``.

    Examples
    --------
    >>> report = prepare_dataset("BraTS17_Training.zip", "data/cache/brats17")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    src, out_dir = Path(src).expanduser(), Path(out_dir).expanduser()
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if not src.exists():
        # Checked before the lock, so a mistyped --src leaves nothing behind.
        raise FileNotFoundError(f"{src}: no such file or folder")
    with directory_lock(out_dir / ".lock"):
        _clean_leftovers(out_dir)
        finished = _finished_cases(out_dir / "cases")
        _check_downsample(downsample, finished, out_dir)
        report = PrepareReport(out_dir, "unknown")
        root = src
        try:
            # Extract first: listing a .tar.gz would decompress the whole archive once more.
            root = _source_root(src, out_dir, report, (max_member_bytes, max_case_bytes))
            report.layout = detect_layout(root)
            todo = _todo(find_cases(root, report.layout), finished, str(src.resolve()), report)
            results = _run_cases(todo, root, out_dir / "cases", downsample, workers, progress, str(src.resolve()))
            _collect(results, report)
            _blame_damage(report)
            _write_index(out_dir, downsample, seed, test_cases)
        finally:
            if root != src:
                shutil.rmtree(root, ignore_errors=True)
    return report


def _todo(cases: list[CaseSource], finished: dict[str, dict], source: str, report: PrepareReport) -> list[CaseSource]:
    """Cases to prepare; finished ones are skipped (noting another source), broken ones failed."""
    todo = []
    for case in cases:
        if case.case_id in finished:
            report.skipped.append(case.case_id)
            earlier = finished[case.case_id].get("source")
            if earlier and earlier != source:
                report.warnings[case.case_id] = (
                    f"already prepared from {earlier}; kept, and not read again from {source}. "
                    f"Delete {report.out_dir / 'cases' / case.case_id} to prepare it from this source"
                )
        elif case.problems:
            report.failed[case.case_id] = "; ".join(case.problems)
        else:
            todo.append(case)
    return todo


def _blame_damage(report: PrepareReport) -> None:
    """Say in a failed case's message which of its files the archive could not deliver."""
    for key, why in report.damaged_members.items():
        member = key.split(":", 1)[1]
        case_id = case_of_member(member)
        if case_id in report.failed:
            report.failed[case_id] += f"; {member} is damaged in the archive ({why})"


def _collect(results: Iterable[tuple[str, str, str]], report: PrepareReport) -> None:
    for case_id, status, message in results:
        if status == "failed":
            report.failed[case_id] = message
            logger.warning("case %s failed: %s", case_id, message)
        elif status == "not attempted":
            report.not_attempted[case_id] = message
        else:
            report.prepared.append(case_id)
            if message:
                report.warnings[case_id] = message
                logger.info("case %s: %s", case_id, message)
    report.prepared.sort()
    if report.not_attempted:
        logger.warning("%d case(s) not attempted: %s", len(report.not_attempted),
                       next(iter(report.not_attempted.values())))
