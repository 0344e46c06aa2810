"""Tests of tutorial_lib.ingest on tiny cases written in each source layout."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tutorial_lib import ingest
from tutorial_lib.ingest import (
    crop_box,
    downsample_image,
    downsample_label,
    downsample_mask,
    prepare_dataset,
    split_cases,
    split_sizes,
)
from tutorial_lib.sources import CaseError, read_nifti

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_scripts"))
import prepare_brats  # noqa: E402
from conftest import OWN_PROCESS, tiny_volumes  # noqa: E402


def _prepare(src, out, **kwargs):
    return prepare_dataset(src, out, progress=False, **kwargs)


def _no_leftovers(out: Path) -> None:
    cases = out / "cases"
    assert not list(cases.glob(".tmp-*")), "temporary case folders left behind"
    for folder in cases.iterdir():
        assert (folder / "case.json").is_file(), f"incomplete case folder {folder}"


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", ["brats2017", "brats2023", "msd"])
def test_prepare_each_layout_maps_labels_to_brats(tmp_path, tiny_case_writer, layout):
    # Training and validation releases side by side (MSD: imagesTr and imagesTs).
    tiny_case_writer(tmp_path / "src" / "train", "Case_1", layout=layout, seed=3)
    tiny_case_writer(tmp_path / "src" / "valid", "Case_2", layout=layout, seed=4, labelled=False)
    report = _prepare(tmp_path / "src", tmp_path / "cache")
    assert report.ok, report.summary()
    assert (report.layout, report.prepared) == (layout, ["Case_1", "Case_2"])
    case = tmp_path / "cache" / "cases" / "Case_1"
    image, label = np.load(case / "image.npy"), np.load(case / "label.npy")
    brain = np.load(case / "brain.npy")
    # shape: image (192, 192, 160, 4) float16, label and brain (192, 192, 160)
    assert (image.shape, image.dtype) == ((192, 192, 160, 4), np.float16)
    assert (label.dtype, brain.dtype) == (np.uint8, np.bool_)
    images, expected, _ = tiny_volumes(3)
    # 48 x 48 x 32 lies whole in the window [0, 48) and is padded at the end.
    np.testing.assert_array_equal(label[:48, :48, :32], expected)
    assert label[48:].sum() == 0 and label[:, :, 32:].sum() == 0
    flair = image[:48, :48, :32, 0].astype(np.float64)
    inside = images["t1"] != 0
    assert abs(flair[inside].mean()) < 1e-2 and abs(flair[inside].std() - 1) < 1e-2
    assert np.all(flair[~inside] == 0)
    assert not (tmp_path / "cache" / "cases" / "Case_2" / "label.npy").exists()
    split = json.loads((tmp_path / "cache" / "split.json").read_text())
    assert split["unlabelled"] == ["Case_2"] and split["train"] == ["Case_1"]


def test_manifest_records_geometry_and_volumes(tmp_path, tiny_case_writer):
    tiny_case_writer(tmp_path / "src", "Case_1", layout="msd", seed=1)
    _prepare(tmp_path / "src", tmp_path / "cache", downsample=4)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    entry = manifest["cases"]["Case_1"]
    _, label, affine = tiny_volumes(1)
    assert (manifest["downsample"], manifest["shape"]) == (4, [48, 48, 40])
    assert entry["source_files"] == {"image": "imagesTr/Case_1.nii.gz", "seg": "labelsTr/Case_1.nii.gz"}
    assert entry["original_shape"] == [48, 48, 32]
    np.testing.assert_allclose(entry["original_affine"], affine)
    assert entry["crop_box"] == [[0, 48], [0, 48], [0, 32]]
    assert entry["padding"] == [[0, 144], [0, 144], [0, 128]]
    # 1 mm voxels: volume in cm^3 is the voxel count / 1000.
    for value in (1, 2, 4):
        assert entry["tumour_volumes_cm3"][str(value)] == pytest.approx((label == value).sum() / 1000)


def test_prepare_from_zip_and_tar_archives(tmp_path, tiny_case_writer):
    for index in range(2):
        tiny_case_writer(tmp_path / "src", f"Case_{index}", seed=index)
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as zipped:
        for path in sorted((tmp_path / "src").rglob("*.nii.gz")):
            zipped.write(path, f"Training/{path.relative_to(tmp_path / 'src')}")
    with tarfile.open(tmp_path / "src.tar", "w") as tar:
        tar.add(tmp_path / "src", arcname="Training")
    for archive in ("src.zip", "src.tar"):
        out = tmp_path / f"cache-{archive}"
        report = _prepare(tmp_path / archive, out, downsample=4)
        assert report.ok and report.prepared == ["Case_0", "Case_1"]
        assert not list(out.glob(".extract-*")), "extracted files should be removed"


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "shape, brain_box, expected_box, expected_padding",
    [
        # centred window [24, 216) already holds the brain
        ((240, 240, 155), ((30, 200), (30, 200), (5, 150)), [[24, 216], [24, 216], [0, 155]], [0, 0, 5]),
        # brain starts at 10: window shifts left to start there
        ((240, 240, 155), ((10, 190), (40, 230), (0, 155)), [[10, 202], [38, 230], [0, 155]], [0, 0, 5]),
        # brain wider than the window: centred on the brain, clipped to the grid
        ((240, 240, 155), ((0, 230), (20, 220), (0, 155)), [[19, 211], [24, 216], [0, 155]], [0, 0, 5]),
        # axes shorter than the crop are padded at their end
        ((100, 200, 170), ((0, 100), (0, 200), (0, 170)), [[0, 100], [4, 196], [5, 165]], [92, 0, 0]),
    ],
)
def test_crop_box(shape, brain_box, expected_box, expected_padding):
    brain = np.zeros(shape, bool)
    brain[tuple(slice(*bounds) for bounds in brain_box)] = True
    box, padding = crop_box(brain)
    assert box == expected_box
    assert padding == [[0, pad] for pad in expected_padding]


ZSCORE_CASES = [
    # shape: (2, 2) volume, brain mask -> z-scored volume (brain 1, 3: mean 2, std 1)
    ([[1.0, 3.0], [9.0, 100.0]], [[True, True], [False, False]], [[-1.0, 1.0], [0.0, 0.0]]),
    # a constant brain (a blank modality) has no spread: it becomes 0, not NaN
    ([[5.0, 5.0], [5.0, 7.0]], [[True, True], [True, False]], [[0.0, 0.0], [0.0, 0.0]]),
]


@pytest.mark.parametrize("volume, brain, expected", ZSCORE_CASES)
def test_zscore_in_brain(volume, brain, expected):
    volume = np.array(volume, np.float32)
    z, _, _ = ingest.zscore_in_brain(volume, np.array(brain))
    np.testing.assert_allclose(z, expected)
    assert z is not volume and z.dtype == np.float32
    z, _, _ = ingest.zscore_in_brain(volume, np.array(brain), in_place=True)
    assert z is volume


@pytest.mark.parametrize("brain, words", [(np.zeros(3, bool), "empty"), (np.ones(3), "boolean"),
                                          (np.ones(2, bool), "shape")])
def test_zscore_in_brain_refuses_bad_masks(brain, words):
    with pytest.raises(ValueError, match=words):
        ingest.zscore_in_brain(np.ones(3, np.float32), brain)


def test_downsampling_rules():
    image = np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1)  # shape: (2, 2, 2, 1)
    assert downsample_image(image, 2).tolist() == [[[[3.5]]]]
    mask = np.zeros((2, 2, 2), bool)
    mask[0, 0, 0] = True
    assert downsample_mask(mask, 2).tolist() == [[[True]]]
    # (labels in one 2x2x2 block, expected coarse label)
    cases = [
        ([0] * 5 + [2] * 3, 0),  # 3/8 tumour: background
        ([0] * 4 + [2] * 4, 2),  # half tumour, all edema: edema
        ([0] * 4 + [2, 2, 1, 4], 2),  # WT 4/8, TC 2/8: edema
        ([2] * 4 + [1, 1, 4, 4], 1),  # TC 4/8, ET 2/8: core
        ([0] * 2 + [2] * 2 + [4] * 4, 4),  # ET 4/8 although 1/4 of the block is background
    ]
    for values, expected in cases:
        label = np.array(values, np.uint8).reshape(2, 2, 2)
        assert downsample_label(label, 2).tolist() == [[[expected]]], values


# ----------------------------------------------------------------------------- split


@pytest.mark.parametrize(
    "n_cases, expected",
    [(285, (192, 48, 45)), (16, (10, 3, 3)), (40, (27, 7, 6)), (4, (2, 1, 1)), (1, (1, 0, 0)), (0, (0, 0, 0))],
)
def test_split_sizes(n_cases, expected):
    assert split_sizes(n_cases) == expected


@pytest.mark.parametrize(
    "n_cases, test_cases, expected",
    # shape: test given, val = round(0.2 * (n - test)), train the rest
    [(55, 28, (22, 5, 28)), (55, 0, (44, 11, 0)), (10, 10, (0, 0, 10)), (285, 45, (192, 48, 45))],
)
def test_split_sizes_with_a_test_count(n_cases, test_cases, expected):
    assert split_sizes(n_cases, test_cases=test_cases) == expected


@pytest.mark.parametrize("test_cases", [-1, 11])
def test_split_sizes_rejects_a_test_count_outside_the_cases(test_cases):
    with pytest.raises(ValueError, match="test_cases"):
        split_sizes(10, test_cases=test_cases)


def test_split_cases_with_a_test_count_keeps_the_cases_and_the_seed():
    ids = [f"case_{i:02d}" for i in range(55)]
    split = split_cases(ids, seed=0, test_cases=28)
    assert [len(split[part]) for part in ("train", "val", "test")] == [22, 5, 28]
    assert sorted(split["train"] + split["val"] + split["test"]) == ids


def test_split_cases_is_seeded_disjoint_and_order_free():
    ids = [f"Brats17_{index:03d}" for index in range(285)]
    split = split_cases(ids, seed=0)
    assert [len(split[name]) for name in ("train", "val", "test")] == [192, 48, 45]
    assert sorted(split["train"] + split["val"] + split["test"]) == ids
    assert split_cases(list(reversed(ids)), seed=0) == split
    assert split_cases(ids, seed=1)["test"] != split["test"]


# ----------------------------------------------------------------------------- bad input


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _break_crc(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the CRC32 sits in the gzip trailer's first four bytes
    path.write_bytes(bytes(raw))


def _resave(path: Path, transform) -> None:
    image = nib.load(str(path))
    array, affine = transform(np.asanyarray(image.dataobj), image.affine.copy())
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _nan_voxels(array, affine):
    array = array.astype(np.float32)
    array[10, 10, 10] = np.nan
    return array, affine


def _shifted(array, affine):
    affine[0, 3] += 2.0
    return array, affine


BAD_INPUTS = [
    # (layout, file key to damage, damage, words expected in the message)
    ("brats2017", "t1", _truncate, ["Bad_t1.nii.gz", "cannot be decoded"]),
    ("brats2017", "t2", _break_crc, ["Bad_t2.nii.gz", "CRC"]),
    ("brats2017", "t1ce", lambda path: path.unlink(), ["missing modality t1ce", "Bad_t1ce.nii.gz"]),
    # like BraTS 2020 case 355, whose label file carries another name
    ("brats2017", "seg", lambda path: path.rename(path.with_name("W39_Segm.nii")), ["no Bad_seg.nii.gz"]),
    ("brats2017", "t2", lambda p: _resave(p, lambda a, f: (a[:, :, :30], f)), ["Bad_t2.nii.gz", "shape"]),
    ("brats2017", "seg", lambda p: _resave(p, _shifted), ["Bad_seg.nii.gz", "affine differs"]),
    ("brats2017", "flair", lambda p: _resave(p, _nan_voxels), ["Bad_flair.nii.gz", "1 non-finite"]),
    ("brats2017", "seg", lambda p: _resave(p, lambda a, f: (np.where(a == 4, 3, a), f)),
     ["Bad_seg.nii.gz", "unexpected label value(s) [3]", "0, 1, 2, 4"]),
    # BraTS 2023 declares ET = 3; a 4 is not silently taken for ET
    ("brats2023", "seg", lambda p: _resave(p, lambda a, f: (np.where(a == 3, 4, a), f)),
     ["Bad-seg.nii.gz", "unexpected label value(s) [4]", "0, 1, 2, 3"]),
    ("brats2017", "seg", lambda p: _resave(p, lambda a, f: (a.astype(np.float32) / 2, f)),
     ["Bad_seg.nii.gz", "non-integer"]),
    ("msd", "image", lambda p: _resave(p, lambda a, f: (a[..., :3], f)), ["Bad.nii.gz", "4 channels"]),
    ("brats2017", "t1", lambda p: p.write_bytes(b""), ["Bad_t1.nii.gz", "empty file (0 bytes)"]),
    ("brats2017", "t2", lambda p: p.write_bytes(gzip.compress(b"tiny")), ["Bad_t2.nii.gz", "too short"]),
]


@pytest.mark.parametrize("layout, key, damage, words", BAD_INPUTS)
def test_bad_case_is_reported_and_others_prepared(tmp_path, tiny_case_writer, layout, key, damage, words):
    tiny_case_writer(tmp_path / "src", "Good", layout=layout, seed=1)
    damage(tiny_case_writer(tmp_path / "src", "Bad", layout=layout, seed=2)[key])
    report = _prepare(tmp_path / "src", tmp_path / "cache", downsample=4)
    assert report.prepared == ["Good"] and list(report.failed) == ["Bad"]
    for word in words:
        assert word in report.failed["Bad"], report.failed["Bad"]
    assert not (tmp_path / "cache" / "cases" / "Bad").exists()
    _no_leftovers(tmp_path / "cache")
    assert list(json.loads((tmp_path / "cache" / "manifest.json").read_text())["cases"]) == ["Good"]


def test_empty_label_is_prepared_with_a_note(tmp_path, tiny_case_writer):
    seg = tiny_case_writer(tmp_path / "src", "Empty", seed=1)["seg"]
    _resave(seg, lambda array, affine: (np.zeros_like(array), affine))
    report = _prepare(tmp_path / "src", tmp_path / "cache", downsample=4)
    assert report.ok and "label is empty" in report.warnings["Empty"]
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["cases"]["Empty"]["empty_label"] is True


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def test_unsafe_tar_members_are_refused(tmp_path, tiny_case_writer):
    paths = tiny_case_writer(tmp_path / "src", "Good", seed=1)
    flair = paths["flair"].read_bytes()
    archive = tmp_path / "download.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "Good", arcname="data/Good")
        _add_bytes(tar, "../escape_flair.nii.gz", flair)
        _add_bytes(tar, "data/../../escape2_flair.nii.gz", flair)
        _add_bytes(tar, str(tmp_path / "absolute_flair.nii.gz"), flair)
        _add_link(tar, "data/Evil/Evil_flair.nii.gz", "/etc/passwd", tarfile.SYMTYPE)
        _add_link(tar, "data/Evil/Evil_t1.nii.gz", "data/Good/Good_t1.nii.gz", tarfile.LNKTYPE)
    out = tmp_path / "out" / "cache"
    report = _prepare(archive, out, downsample=4)
    assert report.prepared == ["Good"]
    refused = report.rejected_members
    assert sorted(refused) == sorted([
        "../escape_flair.nii.gz", "data/../../escape2_flair.nii.gz", str(tmp_path / "absolute_flair.nii.gz"),
        "data/Evil/Evil_flair.nii.gz", "data/Evil/Evil_t1.nii.gz",
    ])
    assert "absolute" in refused[str(tmp_path / "absolute_flair.nii.gz")]
    assert "link" in refused["data/Evil/Evil_flair.nii.gz"] and ".." in refused["../escape_flair.nii.gz"]
    assert not (tmp_path / "out" / "escape_flair.nii.gz").exists()
    assert not (tmp_path / "escape2_flair.nii.gz").exists()
    assert not report.ok


def test_unsafe_zip_members_are_refused(tmp_path, tiny_case_writer):
    paths = tiny_case_writer(tmp_path / "src", "Good", seed=1)
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in paths.values():
            zipped.write(path, f"Good/{path.name}")
        zipped.writestr("../escape_flair.nii.gz", paths["flair"].read_bytes())
        zipped.writestr("/abs/abs_flair.nii.gz", paths["flair"].read_bytes())
        link = zipfile.ZipInfo("Evil/Evil_flair.nii.gz")
        link.external_attr = (0o120777 << 16)  # a symbolic link
        zipped.writestr(link, "/etc/passwd")
    report = _prepare(archive, tmp_path / "out", downsample=4)
    assert report.prepared == ["Good"]
    assert "symbolic link" in report.rejected_members["Evil/Evil_flair.nii.gz"]
    assert ".." in report.rejected_members["../escape_flair.nii.gz"]
    assert "absolute" in report.rejected_members["/abs/abs_flair.nii.gz"]
    assert not (tmp_path / "escape_flair.nii.gz").exists()


# ----------------------------------------------------------------------------- resume and CLI


def test_interrupted_run_resumes(tmp_path, tiny_case_writer, monkeypatch):
    for index in range(3):
        tiny_case_writer(tmp_path / "src", f"Case_{index}", seed=index)
    out = tmp_path / "cache"
    write_case, calls = ingest._write_case, []

    def interrupted(cases_dir, case_id, arrays, meta):
        calls.append(case_id)
        if len(calls) == 2:  # die half-way through the second case's files
            np.save(cases_dir / ".tmp-partial.npy", arrays["image"])
            raise KeyboardInterrupt
        write_case(cases_dir, case_id, arrays, meta)

    monkeypatch.setattr(ingest, "_write_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _prepare(tmp_path / "src", out, downsample=4)
    assert [p.name for p in (out / "cases").iterdir() if not p.name.startswith(".")] == ["Case_0"]
    (out / "cases" / ".tmp-Case_1-stale").mkdir()  # as left by a killed worker
    (out / "cases" / "Case_2").mkdir()  # a folder without case.json is incomplete
    monkeypatch.setattr(ingest, "_write_case", write_case)
    stamp = (out / "cases" / "Case_0" / "image.npy").stat().st_mtime_ns
    report = _prepare(tmp_path / "src", out, downsample=4)
    assert (report.skipped, report.prepared) == (["Case_0"], ["Case_1", "Case_2"])
    assert (out / "cases" / "Case_0" / "image.npy").stat().st_mtime_ns == stamp
    assert not list((out / "cases").glob(".tmp-*"))
    _no_leftovers(out)
    again = _prepare(tmp_path / "src", out, downsample=4)
    assert (again.skipped, again.prepared) == (["Case_0", "Case_1", "Case_2"], [])
    with pytest.raises(ValueError, match="downsample"):
        _prepare(tmp_path / "src", out, downsample=2)


def test_parallel_workers_match_single_process(tmp_path, tiny_case_writer):
    for index in range(2):
        tiny_case_writer(tmp_path / "src", f"Case_{index}", seed=index)
    _prepare(tmp_path / "src", tmp_path / "one", downsample=4, workers=1)
    _prepare(tmp_path / "src", tmp_path / "two", downsample=4, workers=2)
    for name in ("image", "label", "brain"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "one" / "cases" / "Case_1" / f"{name}.npy"),
            np.load(tmp_path / "two" / "cases" / "Case_1" / f"{name}.npy"),
        )


def test_cli_exit_status_and_message(tmp_path, tiny_case_writer, capsys):
    tiny_case_writer(tmp_path / "src", "Good", seed=1)
    arguments = ["--src", str(tmp_path / "src"), "--out", str(tmp_path / "cache"), "--downsample", "4"]
    assert prepare_brats.main(arguments) == 0
    paths = tiny_case_writer(tmp_path / "src", "Bad", seed=2)
    with gzip.open(paths["t1"], "wb") as handle:
        handle.write(b"not a nifti file")
    assert prepare_brats.main(arguments) == 1
    captured = capsys.readouterr()
    assert "1 case(s) failed" in captured.err and "Bad_t1.nii.gz" in captured.out
    assert prepare_brats.main(["--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2


# ----------------------------------------------------------------------------- faults (issue 10)


def _no_temporaries(out: Path) -> None:
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert hidden == [], f"left behind in {out}: {hidden}"


def _three_cases(tmp_path, tiny_case_writer) -> list[Path]:
    for index in range(3):
        tiny_case_writer(tmp_path / "src", f"Case_{index}", seed=index)
    return sorted((tmp_path / "src").rglob("*.nii.gz"))


def test_truncated_tar_gz_prepares_the_complete_cases(tmp_path, tiny_case_writer):
    files = _three_cases(tmp_path, tiny_case_writer)
    archive = tmp_path / "download.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in files:  # Case_0's five files first, Case_2's last
            tar.add(path, arcname=f"Training/{path.relative_to(tmp_path / 'src')}")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 3 // 4])  # an interrupted download
    out = tmp_path / "cache"
    report = _prepare(archive, out, downsample=4)
    assert "Case_0" in report.prepared and "Case_2" in report.failed and not report.ok
    ((name, why),) = report.damaged_members.items()
    damaged_case = name.split("/")[1]
    if damaged_case in report.failed:  # the failed case's message names its damaged file
        assert "is damaged in the archive" in report.failed[damaged_case]
    assert name.startswith("download.tar.gz:Training/Case_") and "truncated" in why, (name, why)
    assert "DAMAGED download.tar.gz:" in report.summary()
    _no_temporaries(out)
    again = _prepare(archive, out, downsample=4)  # a rerun skips, reports again, leaves nothing
    assert "Case_0" in again.skipped and again.damaged_members == report.damaged_members
    _no_temporaries(out)


def _zip(files, src: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in files:
            zipped.write(path, f"Training/{path.relative_to(src)}")


def test_zip_member_with_bad_data_is_reported_and_the_others_prepared(tmp_path, tiny_case_writer):
    files = _three_cases(tmp_path, tiny_case_writer)
    archive = tmp_path / "download.zip"
    _zip(files, tmp_path / "src", archive)
    with zipfile.ZipFile(archive) as zipped:
        info = zipped.getinfo("Training/Case_1/Case_1_t1.nii.gz")
    raw = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF  # one flipped byte in the compressed data
    archive.write_bytes(bytes(raw))
    report = _prepare(archive, tmp_path / "cache", downsample=4)
    assert report.prepared == ["Case_0", "Case_2"] and list(report.failed) == ["Case_1"]
    assert list(report.damaged_members) == ["download.zip:Training/Case_1/Case_1_t1.nii.gz"]
    assert "damaged" in report.damaged_members["download.zip:Training/Case_1/Case_1_t1.nii.gz"]
    assert "Case_1_t1.nii.gz is damaged in the archive" in report.failed["Case_1"]
    _no_temporaries(tmp_path / "cache")


def test_truncated_zip_is_read_from_its_local_headers(tmp_path, tiny_case_writer):
    files = _three_cases(tmp_path, tiny_case_writer)
    archive = tmp_path / "download.zip"
    _zip(files, tmp_path / "src", archive)
    with zipfile.ZipFile(archive) as zipped:
        cut = zipped.getinfo("Training/Case_2/Case_2_seg.nii.gz").header_offset + 100
    archive.write_bytes(archive.read_bytes()[:cut])  # no central directory any more
    report = _prepare(archive, tmp_path / "cache", downsample=4)
    assert report.prepared == ["Case_0", "Case_1"] and list(report.failed) == ["Case_2"]
    assert "truncated" in report.damaged_members["download.zip:(central directory)"]
    assert "download.zip:Training/Case_2/Case_2_seg.nii.gz" in report.damaged_members
    _no_temporaries(tmp_path / "cache")


@pytest.mark.parametrize("limits, words", [
    ({"max_member_bytes": 20_000}, "per-member limit"),
    ({"max_case_bytes": 60_000}, "per-case limit"),
])
def test_decompression_is_bounded_per_member_and_per_case(tmp_path, tiny_case_writer, limits, words):
    paths = tiny_case_writer(tmp_path / "src", "Big", seed=1)  # images ~24 kB each, the label 1 kB
    archive = tmp_path / "download.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname="data")
    report = _prepare(archive, tmp_path / "cache", downsample=4, **limits)
    assert report.prepared == [] and report.damaged_members
    assert any(words in why for why in report.damaged_members.values()), report.damaged_members
    _no_temporaries(tmp_path / "cache")
    with pytest.raises(CaseError, match=r"Big_flair.nii.gz.*more than 1000 bytes"):
        read_nifti(paths["flair"], max_bytes=1000)


def test_no_lock_or_temporary_outlives_a_run(tmp_path, tiny_case_writer):
    out = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _prepare(tmp_path / "nowhere", out)
    assert not out.exists()  # not even a .lock
    tiny_case_writer(tmp_path / "src", "Good", seed=1)
    out.mkdir()
    (out / ".manifest.json.x1y2z3.tmp").write_text("{")  # as a kill during the manifest write leaves
    (out / ".extract-download.zip-abc").mkdir()  # and a kill during an extraction
    report = _prepare(tmp_path / "src", out, downsample=4)
    assert report.ok
    _no_temporaries(out)


def test_blank_modality_is_prepared_with_a_warning(tmp_path, tiny_case_writer):
    paths = tiny_case_writer(tmp_path / "src", "Blank", seed=1)
    _resave(paths["t1"], lambda array, affine: (np.zeros_like(array), affine))
    report = _prepare(tmp_path / "src", tmp_path / "cache", downsample=4)
    assert report.prepared == ["Blank"]
    assert "Blank_t1.nii.gz: every voxel of t1 is zero" in report.warnings["Blank"]


def test_same_id_from_another_source_is_reported(tmp_path, tiny_case_writer):
    tiny_case_writer(tmp_path / "first", "Case_1", seed=1)
    tiny_case_writer(tmp_path / "second", "Case_1", seed=2)
    _prepare(tmp_path / "first", tmp_path / "cache", downsample=4)
    assert _prepare(tmp_path / "first", tmp_path / "cache", downsample=4).warnings == {}
    report = _prepare(tmp_path / "second", tmp_path / "cache", downsample=4)
    assert report.skipped == ["Case_1"]
    assert "already prepared from" in report.warnings["Case_1"] and "first" in report.warnings["Case_1"]


def test_cli_reports_damage_and_ctrl_c_in_one_line(tmp_path, tiny_case_writer, capsys, monkeypatch):
    files = _three_cases(tmp_path, tiny_case_writer)
    _zip(files, tmp_path / "src", tmp_path / "download.zip")
    (tmp_path / "download.zip").write_bytes((tmp_path / "download.zip").read_bytes()[:-200])
    arguments = ["--src", str(tmp_path / "download.zip"), "--out", str(tmp_path / "cache"), "--downsample", "4"]
    assert prepare_brats.main(arguments) == 1
    assert "damaged" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_brats, "prepare_dataset", interrupted)
    assert prepare_brats.main(arguments) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted: 3 finished case(s) kept" in err


def test_directory_lock_serialises_and_leaves_no_file(tmp_path):
    import threading
    import time

    from tutorial_lib._files import directory_lock

    lock, events = tmp_path / "out" / ".lock", []

    def hold(name):
        with directory_lock(lock):
            events.append(f"{name} in")
            time.sleep(0.2)
            events.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(name,)) for name in "ab"]
    threads[0].start()
    time.sleep(0.05)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert events == ["a in", "a out", "b in", "b out"]
    assert not lock.exists()


# ----------------------------------------------------------------------------- full disk


def _attempted(disk) -> list[str]:
    """Case ids whose arrays ``numpy.save`` was asked to write (into ``.tmp-<id>-*``), in order."""
    cases = [path.parent.name[len(".tmp-"):].rsplit("-", 1)[0] for path in disk.saved]
    return list(dict.fromkeys(cases))


_CASE_BYTES = 48 * 48 * 40 * (4 * 2 + 1 + 1)  # float16 image, brain and label arrays at downsample 4


@pytest.mark.parametrize("form", ["short write", "ENOSPC"])
def test_a_full_disk_stops_preparation_and_says_what_the_rest_needs(tmp_path, tiny_case_writer, monkeypatch, form):
    from test_files import FullDisk, needed_bytes

    for index in range(5):
        tiny_case_writer(tmp_path / "src", f"Case_{index}", seed=index)
    out = tmp_path / "cache"
    disk = FullDisk(monkeypatch, room=2 * _CASE_BYTES + 100_000, form=form)  # two cases fit
    report = _prepare(tmp_path / "src", out, downsample=4)
    assert _attempted(disk) == ["Case_0", "Case_1", "Case_2"]  # none after the one that found the disk full
    assert (report.prepared, list(report.failed)) == (["Case_0", "Case_1"], ["Case_2"])
    message = report.failed["Case_2"]
    assert message.startswith(f"the disk holding {out / 'cases'} is full: ")
    assert message.endswith(" needed for the 3 remaining case(s); free space there or point BRATS_COURSE_DATA "
                            "(or --out) at another disk")
    case_bytes = sum(path.stat().st_size for path in (out / "cases" / "Case_0").iterdir())
    assert needed_bytes(message) == pytest.approx(3 * case_bytes, rel=0.02)
    reason = f"the disk holding {out / 'cases'} is full (see case Case_2)"
    assert report.not_attempted == {"Case_3": reason, "Case_4": reason} and not report.ok
    assert f"NOT ATTEMPTED Case_3, Case_4: {reason}" in report.summary()
    assert "1 failed" in report.summary() and "2 not attempted" in report.summary()
    _no_leftovers(out)  # the torn case left nothing
    assert sorted(json.loads((out / "manifest.json").read_text())["cases"]) == ["Case_0", "Case_1"]
    for case in ("Case_0", "Case_1"):
        assert np.load(out / "cases" / case / "image.npy").shape == (48, 48, 40, 4)
    monkeypatch.undo()  # space freed: the next run prepares the rest
    again = _prepare(tmp_path / "src", out, downsample=4)
    assert (again.skipped, again.prepared, again.ok) == (["Case_0", "Case_1"], ["Case_2", "Case_3", "Case_4"], True)


class _ThreadPool(ThreadPoolExecutor):
    """ingest's worker pool in threads of this process, so that the patched ``numpy.save`` applies in them."""

    def __init__(self, max_workers, mp_context, initializer, initargs):
        super().__init__(max_workers=max_workers, initializer=initializer, initargs=initargs)


def test_parallel_workers_stop_once_a_case_finds_the_disk_full(tmp_path, tiny_case_writer, monkeypatch):
    from test_files import FullDisk

    for index in range(8):
        tiny_case_writer(tmp_path / "src", f"Case_{index}", seed=index)
    monkeypatch.setattr(ingest, "ProcessPoolExecutor", _ThreadPool)
    monkeypatch.setattr(ingest, "_DISK_FULL", None)  # the initializer sets it; restored afterwards
    disk, process = FullDisk(monkeypatch, room=2 * _CASE_BYTES + 100_000), ingest._process

    def slow_read(case, root, downsample):  # reading a real case takes longer than the parent takes to react
        result = process(case, root, downsample)
        if disk.room == 0:
            ingest._DISK_FULL.wait(10)
        return result

    monkeypatch.setattr(ingest, "_process", slow_read)
    report = _prepare(tmp_path / "src", tmp_path / "cache", downsample=4, workers=2)
    cases = {f"Case_{index}" for index in range(8)}
    assert set(report.prepared) | set(report.failed) | set(report.not_attempted) == cases
    assert set(_attempted(disk)) == set(report.prepared) | set(report.failed)
    assert len(report.prepared) <= 2 and 1 <= len(report.failed) <= 2  # at most the cases in flight fail
    first = [message for message in report.failed.values() if "remaining case(s)" in message]
    assert len(first) == 1 and first[0].startswith(f"the disk holding {tmp_path / 'cache' / 'cases'} is full: ")
    assert len(report.not_attempted) >= 4 and "NOT ATTEMPTED" in report.summary()
    _no_leftovers(tmp_path / "cache")
    for case in report.prepared:
        assert np.load(tmp_path / "cache" / "cases" / case / "label.npy").shape == (48, 48, 40)


# A real full disk: a 6 MB tmpfs mounted in a user namespace of its own (where the kernel allows one).
_ON_A_SMALL_DISK = """
import json, os, sys
from pathlib import Path
import numpy as np
from tutorial_lib.ingest import prepare_dataset
if __name__ == "__main__":
    out = Path(sys.argv[2]) / "cache"
    report = prepare_dataset(sys.argv[1], out, downsample=4, workers=2, progress=False)
    for case in report.prepared:
        np.load(out / "cases" / case / "image.npy")
    print(json.dumps({"prepared": report.prepared, "failed": report.failed, "not_attempted": report.not_attempted,
                      "left": sorted(os.listdir(out / "cases"))}))
"""


@OWN_PROCESS
def test_preparing_onto_a_real_full_disk_with_worker_processes(tmp_path, tiny_case_writer):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["unshare", "--map-root-user", "--mount", "sh", "-c", f"mount -t tmpfs -o size=6m tmpfs {disk} && "
             + '"$0" "$@"', sys.executable, "-c", "import sys; sys.exit(0)"]
    try:
        if subprocess.run(mount, capture_output=True, timeout=60).returncode:
            pytest.skip("no user namespace to mount a small file system in")
    except FileNotFoundError:
        pytest.skip("no unshare command")
    for index in range(12):
        tiny_case_writer(tmp_path / "src", f"Case_{index:02d}", seed=index)
    script = tmp_path / "prepare.py"
    script.write_text(_ON_A_SMALL_DISK)
    done = subprocess.run(mount[:-2] + [str(script), str(tmp_path / "src"), str(disk)], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    everything = {f"Case_{index:02d}" for index in range(12)}
    assert set(result["prepared"]) | set(result["failed"]) | set(result["not_attempted"]) == everything
    assert result["prepared"] and result["not_attempted"] and 1 <= len(result["failed"]) <= 2
    first = [message for message in result["failed"].values() if "remaining case(s)" in message]
    assert len(first) == 1 and first[0].startswith(f"the disk holding {disk / 'cache' / 'cases'} is full: "), first
    assert result["left"] == sorted(result["prepared"])  # no temporary folder, no half case
