"""Source layouts of BraTS downloads: find, extract safely, read and validate cases.

Three layouts are recognised from their file names (:data:`LAYOUTS`):

``brats2017``
    BraTS 2017-2021: ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]``,
    labels {0, 1, 2, 4}.
``brats2023``
    BraTS 2023 and later: ``<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``,
    labels {0, 1, 2, 3} with enhancing tumour 3, mapped to 4.
``msd``
    Medical Segmentation Decathlon Task01: 4D ``imagesTr/<case>.nii.gz``
    (channels FLAIR, T1w, t1gd, T2w) and ``labelsTr/<case>.nii.gz`` with
    1 edema, 2 non-enhancing tumour, 3 enhancing tumour, mapped to 2, 1, 4.

Label values are checked against the set the detected release declares; a
value outside it fails the case instead of being guessed at. Archives are
extracted member by member, refusing any that would land outside the target
(``..``, absolute paths, links); a damaged member (an interrupted download:
truncated stream, bad CRC) or one decompressing beyond :data:`MAX_MEMBER_BYTES`
(or its case beyond :data:`MAX_CASE_BYTES`) is reported and the other members
are still extracted. :func:`read_case` decodes every file fully,
so a truncated or corrupt ``.nii.gz`` is caught, and reports each problem
with the file it concerns. :mod:`tutorial_lib.ingest` turns the validated
arrays into the cache. The extraction and bounded decompression themselves
are plumbing, in :mod:`tutorial_lib._archives`; this module tells them which
files a release needs and which case each belongs to.
"""

from __future__ import annotations

import gzip
import os
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping

import nibabel as nib
import numpy as np

from tutorial_lib import _archives
from tutorial_lib._archives import ArchiveDamage
from tutorial_lib.config import BRATS

__all__ = [
    "Layout",
    "LAYOUTS",
    "CaseSource",
    "CaseError",
    "detect_layout",
    "find_cases",
    "case_of_member",
    "read_nifti",
    "read_case",
    "extract_members",
    "ArchiveDamage",
    "MAX_MEMBER_BYTES",
    "MAX_CASE_BYTES",
]

# BraTS label values by meaning: edema, necrotic core, enhancing tumour.
_ED, _NCR, _ET = (BRATS.region_labels[region] for region in ("WT", "TC", "ET"))
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MSD_DIRS = {"imagesTr": True, "imagesTs": False}  # folder -> has labels in labelsTr
_AFFINE_TOLERANCE_MM = 1e-3
# Decompression bounds. The largest legitimate file, an MSD 4D float64 image, is 286 MB
# (a BraTS volume 9-71 MB); anything far beyond is a damaged or hostile archive.
MAX_MEMBER_BYTES = 512 * 2**20
MAX_CASE_BYTES = 1024 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER_BYTES = 348


@dataclass(frozen=True)
class Layout:
    """How one BraTS release names its files and labels.

    Attributes
    ----------
    name : str
        Short name used in reports and the manifest.
    description : str
        Human-readable naming scheme.
    pattern : re.Pattern or None
        File-name pattern with groups ``case`` and ``key`` (None for MSD).
    keys : mapping of str to str
        File-name key -> cache modality name (``"seg"`` is the label).
    label_map : mapping of int to int
        Release label value -> BraTS label value; other values are errors.
    """

    name: str
    description: str
    pattern: re.Pattern[str] | None
    keys: Mapping[str, str]
    label_map: Mapping[int, int]


LAYOUTS: dict[str, Layout] = {
    "brats2017": Layout(
        "brats2017",
        "BraTS 2017-2021: <case>_flair/_t1/_t1ce/_t2/_seg.nii.gz",
        re.compile(r"^(?P<case>.+)_(?P<key>flair|t1ce|t1|t2|seg)\.nii(?:\.gz)?$", re.I),
        {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"},
        {0: 0, 1: _NCR, 2: _ED, 4: _ET},
    ),
    "brats2023": Layout(
        "brats2023",
        "BraTS 2023+: <case>-t2f/-t1n/-t1c/-t2w/-seg.nii.gz (enhancing tumour 3)",
        re.compile(r"^(?P<case>.+)-(?P<key>t2f|t1n|t1c|t2w|seg)\.nii(?:\.gz)?$", re.I),
        {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2"},
        {0: 0, 1: _NCR, 2: _ED, 3: _ET},
    ),
    "msd": Layout(
        "msd",
        "Medical Segmentation Decathlon Task01: 4D imagesTr/<case>.nii.gz + labelsTr/",
        None,
        # Channel order of the 4D images: FLAIR, T1w, t1gd, T2w.
        {"0": "flair", "1": "t1", "2": "t1ce", "3": "t2"},
        {0: 0, 1: _ED, 2: _NCR, 3: _ET},
    ),
}


class CaseError(ValueError):
    """A case cannot be prepared; the message names the file(s) and problem(s)."""


@dataclass
class CaseSource:
    """The files of one case as found in the source.

    Attributes
    ----------
    case_id : str
        Case identifier (folder name in the cache).
    layout : str
        Key of :data:`LAYOUTS`.
    files : dict of str to Path
        ``BRATS.modalities`` names (or ``"image"`` for a 4D MSD file) and
        ``"seg"`` for the label, when there is one.
    problems : list of str
        Problems found while collecting the files (missing, duplicated).
    """

    case_id: str
    layout: str
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """Whether the case has a label file."""
        return "seg" in self.files


# ----------------------------------------------------------------------------- discovery


def _is_hidden(path: PurePosixPath) -> bool:
    # macOS archives carry "._name" resource forks and __MACOSX folders.
    return any(part.startswith(".") or part == "__MACOSX" for part in path.parts)


def _layout_of(path: PurePosixPath) -> str | None:
    if _is_hidden(path) or not _NIFTI.search(path.name):
        return None
    if path.parent.name in (*_MSD_DIRS, "labelsTr"):
        return "msd"
    for name, layout in LAYOUTS.items():
        if layout.pattern is not None and layout.pattern.match(path.name):
            return name
    return None


def _member_names(src: Path) -> list[PurePosixPath]:
    if src.is_dir():
        return [PurePosixPath(p.relative_to(src).as_posix()) for p in src.rglob("*") if p.is_file()]
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as archive:
            return [PurePosixPath(name) for name in archive.namelist()]
    if tarfile.is_tarfile(src):
        with tarfile.open(src) as archive:
            return [PurePosixPath(name) for name in archive.getnames()]
    raise ValueError(f"{src}: not a folder, .zip or .tar[.gz] archive")


def detect_layout(src: str | os.PathLike[str]) -> str:
    """Name the BraTS release layout of a folder or archive from its file names.

    Parameters
    ----------
    src : path
        Folder, ``.zip`` or ``.tar[.gz|.bz2|.xz]`` archive.

    Returns
    -------
    str
        A key of :data:`LAYOUTS`: ``"brats2017"``, ``"brats2023"`` or ``"msd"``.

    Raises
    ------
    FileNotFoundError
        If ``src`` does not exist.
    ValueError
        If no recognised NIfTI file is found, or files of several layouts are mixed.

    Examples
    --------
    >>> detect_layout("~/Downloads/MICCAI_BraTS17_Data_Training")  # doctest: +SKIP
    'brats2017'
    """
    src = Path(src).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    votes: dict[str, int] = {}
    for name in _member_names(src):
        layout = _layout_of(name)
        if layout is not None:
            votes[layout] = votes.get(layout, 0) + 1
    if not votes:
        expected = "; ".join(layout.description for layout in LAYOUTS.values())
        raise ValueError(f"{src}: no BraTS-style NIfTI files found. Expected one of: {expected}")
    if len(votes) > 1:
        raise ValueError(
            f"{src}: files of several layouts are mixed ({votes}); prepare each release on its own"
        )
    return next(iter(votes))


def _add_file(case: CaseSource, key: str, path: Path) -> None:
    if key in case.files:
        case.problems.append(f"{path}: second file for {key!r} (first: {case.files[key]})")
    else:
        case.files[key] = path


def _named_cases(root: Path, layout: Layout) -> dict[str, CaseSource]:
    cases: dict[str, CaseSource] = {}
    folders: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        match = layout.pattern.match(path.name) if layout.pattern else None
        if match is None or _is_hidden(PurePosixPath(path.relative_to(root).as_posix())):
            continue
        case = cases.setdefault(match["case"], CaseSource(match["case"], layout.name))
        key = match["key"].lower()
        _add_file(case, layout.keys.get(key, key), path)
        folders.setdefault(case.case_id, path.parent)
    # A release folder is labelled or not as a whole; one missing _seg is a broken case.
    labelled_groups = {folders[case.case_id].parent for case in cases.values() if case.labelled}
    for case in cases.values():
        folder = folders[case.case_id]
        separator = "_" if layout.name == "brats2017" else "-"
        for file_key, modality in layout.keys.items():
            if modality not in case.files:
                example = f"{case.case_id}{separator}{file_key}.nii.gz"
                case.problems.append(f"{folder}: missing modality {modality} ({example})")
        if not case.labelled and folder.parent in labelled_groups:
            case.problems.append(
                f"{folder}: no {case.case_id}{separator}seg.nii.gz, although the other cases "
                f"in {folder.parent} have one"
            )
    return cases


def _msd_cases(root: Path) -> dict[str, CaseSource]:
    cases: dict[str, CaseSource] = {}
    for path in sorted(root.rglob("*")):
        relative = PurePosixPath(path.relative_to(root).as_posix())
        if _layout_of(relative) != "msd":
            continue
        case_id = _NIFTI.sub("", path.name)
        case = cases.setdefault(case_id, CaseSource(case_id, "msd"))
        if path.parent.name == "labelsTr":
            _add_file(case, "seg", path)
            continue
        _add_file(case, "image", path)
        label = path.parent.parent / "labelsTr" / path.name
        if _MSD_DIRS[path.parent.name] and not label.is_file():
            case.problems.append(f"{label}: missing label file for training image {path}")
    for case in cases.values():
        if "image" not in case.files:
            case.problems.append(f"{case.files['seg']}: label without an image in imagesTr")
    return cases


def find_cases(root: str | os.PathLike[str], layout: str) -> list[CaseSource]:
    """Collect the files of every case under ``root`` for a given layout.

    Parameters
    ----------
    root : path
        Extracted source folder.
    layout : str
        Key of :data:`LAYOUTS` (see :func:`detect_layout`).

    Returns
    -------
    list of CaseSource
        Sorted by case id; cases with missing or duplicated files carry
        ``problems`` and are reported as failed by :func:`prepare_dataset`.

    Raises
    ------
    ValueError
        If ``layout`` is unknown.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    root = Path(root)
    cases = _msd_cases(root) if layout == "msd" else _named_cases(root, LAYOUTS[layout])
    for case in cases.values():
        if not _CASE_ID.match(case.case_id):
            case.problems.append(f"case id {case.case_id!r} is not usable as a folder name")
    return [cases[case_id] for case_id in sorted(cases)]


def case_of_member(name: str) -> str:
    """The case id an archive member's file name belongs to (its name without a NIfTI suffix otherwise).

    Examples
    --------
    >>> case_of_member("Training/Brats17_2013_2_1/Brats17_2013_2_1_t1ce.nii.gz")
    'Brats17_2013_2_1'
    """
    base = PurePosixPath(name).name
    for layout in LAYOUTS.values():
        match = layout.pattern.match(base) if layout.pattern else None
        if match:
            return match["case"]
    return _NIFTI.sub("", base)


# ----------------------------------------------------------------------------- reading


def read_nifti(
    path: str | os.PathLike[str], *, as_float: bool = True, max_bytes: int = MAX_MEMBER_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole NIfTI file, checking the gzip stream's CRC and length.

    Parameters
    ----------
    path : path
        ``.nii`` or ``.nii.gz`` file.
    as_float : bool, optional
        Return float32 (scaling applied); False keeps the stored dtype when
        the file has no scaling (labels).
    max_bytes : int, optional
        Refuse a ``.nii.gz`` that decompresses to more bytes than this.

    Returns
    -------
    data : np.ndarray
        Array with the file's shape.
    affine : np.ndarray
        ``(4, 4)`` voxel-to-world matrix.

    Raises
    ------
    CaseError
        If the file is empty, cannot be read or decoded completely (truncated,
        bad CRC) or decompresses beyond ``max_bytes``; the message names the file.
    """
    raw = _read_bytes(Path(path), max_bytes)
    try:
        # NIfTI-1 and NIfTI-2 share the file name; nibabel's own sniffing of the header tells them apart.
        image_class = nib.Nifti2Image if nib.Nifti2Header.may_contain_header(raw) else nib.Nifti1Image
        image = image_class.from_bytes(raw)
        data = image.get_fdata(dtype=np.float32) if as_float else np.asanyarray(image.dataobj)
        return np.asarray(data), np.asarray(image.affine, float)
    except Exception as error:  # noqa: BLE001 - any decoding failure is reported per file
        raise CaseError(f"{path}: cannot be decoded ({type(error).__name__}: {error})") from error




def _squeeze(data: np.ndarray, ndim: int) -> np.ndarray:
    while data.ndim > ndim and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def _read_images(case: CaseSource, problems: list[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Images by modality and {modality: (path, affine)}; problems appended."""
    images, where = {}, {}
    paths = {"image": case.files["image"]} if case.layout == "msd" else case.files
    for key, path in paths.items():
        if key == "seg":
            continue
        try:
            data, affine = read_nifti(path)
        except CaseError as error:
            problems.append(str(error))
            continue
        if case.layout == "msd":
            if data.ndim != 4 or data.shape[-1] != len(BRATS.modalities):
                problems.append(f"{path}: expected a 4D image with 4 channels, got shape {data.shape}")
                continue
            for channel, modality in LAYOUTS["msd"].keys.items():
                images[modality], where[modality] = data[..., int(channel)], (path, affine)
        else:
            images[key], where[key] = _squeeze(data, 3), (path, affine)
    return images, where


def _check_images(images: dict[str, np.ndarray], where: dict, problems: list[str]) -> None:
    for modality, data in images.items():
        path = where[modality][0]
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            problems.append(f"{path}: {bad} non-finite voxel(s) (NaN or inf) in {modality}")
        if data.ndim != 3:
            problems.append(f"{path}: expected a 3D volume, got shape {data.shape}")


def _check_geometry(arrays: dict[str, tuple[Path, tuple, np.ndarray]], problems: list[str]) -> None:
    """All entries (path, shape, affine) must agree with the first one."""
    (ref_path, ref_shape, ref_affine), *others = arrays.values()
    for path, shape, affine in others:
        if shape != ref_shape:
            problems.append(f"{path}: shape {shape} differs from {ref_path} {ref_shape}")
        elif not np.allclose(affine, ref_affine, atol=_AFFINE_TOLERANCE_MM):
            problems.append(f"{path}: affine differs from {ref_path}")


def _label_counts(data: np.ndarray, path: Path, declared: str, problems: list[str]) -> np.ndarray | None:
    """Voxel count per label value 0-255, or None (problem appended) for bad values."""
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            problems.append(f"{path}: non-finite label values (NaN or inf)")
            return None
        if np.any(np.mod(data, 1)):
            problems.append(f"{path}: non-integer label values (labels must be {declared})")
            return None
    low, high = data.min(), data.max()
    if low < 0 or high > 255:
        outside = np.unique(data[(data < 0) | (data > 255)])[:5].tolist()
        problems.append(f"{path}: unexpected label value(s) {outside}; labels must be {declared}")
        return None
    return np.bincount(data.astype(np.uint8, copy=False).ravel(), minlength=256)


def _map_label(data: np.ndarray, path: Path, layout: Layout, problems: list[str]) -> np.ndarray | None:
    """BraTS uint8 labels from a release's labels, or None (problem appended)."""
    declared = ", ".join(str(value) for value in sorted(layout.label_map))
    counts = _label_counts(data, path, declared, problems)
    if counts is None:
        return None
    unexpected = sorted(set(np.flatnonzero(counts).tolist()) - set(layout.label_map))
    if unexpected:
        problems.append(f"{path}: unexpected label value(s) {unexpected}; {layout.name} declares {declared}")
        return None
    table = np.zeros(256, np.uint8)
    for source, target in layout.label_map.items():
        table[source] = target
    return table[data.astype(np.uint8, copy=False)]


def _read_label(case: CaseSource, geometry: dict, problems: list[str]) -> np.ndarray | None:
    path = case.files["seg"]
    try:
        data, affine = read_nifti(path, as_float=False)
    except CaseError as error:
        problems.append(str(error))
        return None
    data = _squeeze(data, 3)
    geometry["seg"] = (path, data.shape, affine)
    return _map_label(data, path, LAYOUTS[case.layout], problems)


def read_case(case: CaseSource) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray, list[str]]:
    """Validated 3D images by modality, BraTS label or None, affine, notes; raises CaseError."""
    problems = list(case.problems)
    if problems:
        raise CaseError("; ".join(problems))
    images, where = _read_images(case, problems)
    _check_images(images, where, problems)
    geometry = {m: (where[m][0], images[m].shape, where[m][1]) for m in BRATS.modalities if m in images}
    label = _read_label(case, geometry, problems) if case.labelled else None
    if geometry:
        _check_geometry(geometry, problems)
    if problems:
        raise CaseError("; ".join(problems))
    notes = [] if label is None or label.any() else [f"{case.files['seg']}: label is empty (no tumour)"]
    return images, label, next(iter(geometry.values()))[2], notes


# ----------------------------------------------------------------------------- archives and compressed files
# The mechanism is in _archives; what is BraTS about it (which files, which case) is here.


def _wanted(name: str) -> bool:
    path = PurePosixPath(name)
    return not _is_hidden(path) and bool(_NIFTI.search(path.name) or path.name.endswith(".json"))


def extract_members(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_case_bytes: int = MAX_CASE_BYTES,
) -> tuple[dict[str, str], dict[str, str]]:
    """Safely extract the NIfTI (and JSON) files of a download; return who was refused or damaged.

    Nothing is written outside ``target``. Hidden files (``._name``,
    ``__MACOSX``) and other files are skipped. A damaged member leaves no
    file behind; the members before it (a .tar.gz) or all the others (a
    .zip) are extracted. A zip whose central directory is missing (a
    truncated download) is read from its local headers.

    Parameters
    ----------
    archive : path
        The downloaded ``.zip`` or ``.tar[.gz|.bz2|.xz]`` archive.
    target : path
        Folder to extract into (created if needed).
    max_member_bytes, max_case_bytes : int, optional
        Refuse a member that decompresses beyond ``max_member_bytes``, or whose
        case (:func:`case_of_member`) does beyond ``max_case_bytes``.

    Returns
    -------
    refused : dict of str to str
        Unsafe members (absolute paths, ``..`` components, links, special
        files) -> reason.
    damaged : dict of str to str
        Members that could not be read completely (truncated, bad CRC) or
        broke a bound -> reason.

    Raises
    ------
    ValueError
        If ``archive`` is neither a zip nor a tar archive, or a limit is not positive.
    """
    return _archives.extract_members(
        archive, target, wanted=_wanted, case_of=case_of_member,
        max_member_bytes=max_member_bytes, max_case_bytes=max_case_bytes,
    )


def _read_bytes(path: Path, limit: int) -> bytes:
    """The decoded bytes of a ``.nii[.gz]`` file; CaseError naming it on any problem."""
    try:
        with open(path, "rb") as handle:
            if not (magic := handle.read(2)):
                raise CaseError(f"{path}: empty file (0 bytes); was a copy or download interrupted?")
            handle.seek(0)
            raw = _archives.gunzip(handle, limit=limit) if magic == _GZIP_MAGIC else handle.read()
    except CaseError:
        raise
    except ArchiveDamage as error:
        raise CaseError(f"{path}: cannot be decoded ({error}, the max_bytes bound)") from error
    except (gzip.BadGzipFile, zlib.error) as error:
        check = "CRC/length check failed" if re.search("CRC|length", str(error)) else "corrupt compressed data"
        raise CaseError(f"{path}: cannot be decoded ({check}: {error})") from error
    except EOFError as error:
        interrupted = "was a copy or download interrupted?"
        raise CaseError(f"{path}: cannot be decoded (truncated: {error}); {interrupted}") from error
    except Exception as error:  # noqa: BLE001 - any reading failure is reported per file
        raise CaseError(f"{path}: cannot be decoded ({type(error).__name__}: {error})") from error
    if len(raw) < _NIFTI_HEADER_BYTES:
        raise CaseError(f"{path}: {len(raw)} bytes, too short for a NIfTI header ({_NIFTI_HEADER_BYTES})")
    return raw
