"""Tests of tutorial_lib.data: cache loaders, targets, light imports and the course data set-up."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import copy_as_course_cache

from tutorial_lib import data
from tutorial_lib.data import (
    ensure_course_data,
    labels_to_target,
    load_case,
    load_manifest,
    load_split,
    open_array,
)

GRID = (48, 48, 40)  # tiny_cache: crop grid 192 x 192 x 160 down-sampled by 4


def test_manifest_and_split(tiny_cache):
    manifest, split = load_manifest(tiny_cache), load_split(tiny_cache)
    assert manifest["shape"] == list(GRID) and manifest["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert [len(split[name]) for name in ("train", "val", "test", "unlabelled")] == [3, 1, 1, 1]
    assert split["unlabelled"] == ["Tiny_5"]


def test_missing_cache_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    "label, target, expected",
    [
        ([0, 1, 2, 4], "wt", [[0], [1], [1], [1]]),  # shape: (4, 1)
        ([0, 1, 2, 4], "regions", [[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]]),  # shape: (4, 3)
    ],
)
def test_labels_to_target(label, target, expected):
    for dtype in (np.uint8, np.int64):  # lookup-table and np.isin paths
        result = labels_to_target(np.array(label, dtype), target)
        assert result.dtype == np.float32 and result.tolist() == expected


def test_labels_to_target_rejects_unknown_target():
    with pytest.raises(ValueError, match="unknown target"):
        labels_to_target(np.zeros(3, np.uint8), "tc")


def test_load_case_shapes_and_modality_selection(tiny_cache):
    full, labels = load_case(tiny_cache, "Tiny_0", modalities="all", target="labels")
    assert (full.shape, full.dtype, labels.shape, labels.dtype) == (GRID + (4,), np.float32, GRID, np.uint8)
    image, target = load_case(tiny_cache, "Tiny_0")  # FLAIR, whole tumour
    assert image.shape == GRID + (1,) and target.shape == GRID + (1,)
    np.testing.assert_array_equal(image[..., 0], full[..., 0])
    swapped, regions = load_case(tiny_cache, "Tiny_0", modalities=("t1ce", "flair"), target="regions")
    np.testing.assert_array_equal(swapped, full[..., [2, 0]])
    assert regions.shape == GRID + (3,)
    np.testing.assert_array_equal(regions[..., 0], target[..., 0])
    np.testing.assert_array_equal(regions[..., 2], labels == 4)
    assert load_case(tiny_cache, "Tiny_5")[1] is None  # unlabelled
    with pytest.raises(ValueError, match="unknown modalities"):
        load_case(tiny_cache, "Tiny_0", modalities=("dwi",))
    with pytest.raises(FileNotFoundError, match="Nope"):
        load_case(tiny_cache, "Nope")


def test_synthetic_cache_fixture(cache_dir):
    manifest = load_manifest(cache_dir)
    split = load_split(cache_dir)
    assert len(manifest["cases"]) == 4 and [len(split[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    case_id = split["train"][0]
    image, labels = load_case(cache_dir, case_id, modalities="all", target="labels")
    assert image.shape == GRID + (4,) and set(np.unique(labels).tolist()) <= {0, 1, 2, 4}
    assert labels.any(), "synthetic cases carry a tumour"
    entry = manifest["cases"][case_id]
    assert entry["original_shape"] == [240, 240, 155] and entry["padding"][2] == [0, 5]


def test_ensure_course_data_generates_once(tmp_path, monkeypatch, tiny_case_writer):
    calls = []

    def fake_make_dataset(out_dir, n_cases, *, seed=0, workers=1, **kwargs):
        calls.append(n_cases)
        for index in range(n_cases):
            tiny_case_writer(out_dir, f"Synth_{index:04d}", seed=index)

    from tutorial_lib import synthetic

    monkeypatch.setattr(synthetic, "make_dataset", fake_make_dataset)
    monkeypatch.setenv("BRATS_COURSE_DATA", str(tmp_path))
    profile = {"n_cases": 3, "downsample": 4}
    cache = ensure_course_data(profile, workers=1)
    assert cache == tmp_path / "cache" / "synthetic-n3-k4"
    assert len(load_manifest(cache)["cases"]) == 3 and calls == [3]
    assert ensure_course_data(profile, workers=1) == cache and calls == [3]  # second call: nothing to do
    (cache / "split.json").unlink()  # an interrupted earlier run is completed, not redone
    assert ensure_course_data(profile, workers=1) == cache and (cache / "split.json").is_file()
    assert data.data_root() == tmp_path


def test_appearance_data_scans_the_course_patients_again(cache_dir, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("BRATS_COURSE_DATA", str(tmp_path / "data"))
    course = copy_as_course_cache(cache_dir, tmp_path / "data")
    test_cases = load_split(course)["test"]
    site = data.ensure_appearance_data(course, "second_site", test_cases, workers=1)
    assert site == tmp_path / "data" / "cache" / "synthetic-n4-k4-second_site"
    assert sorted(load_manifest(site)["cases"]) == test_cases
    for case_id in test_cases:  # the same patient (truth and brain), another scanner (image)
        for name in ("label", "brain"):
            np.testing.assert_array_equal(open_array(site, case_id, name), open_array(course, case_id, name))
        assert not np.array_equal(open_array(site, case_id, "image"), open_array(course, case_id, "image"))
    written = (site / "manifest.json").stat().st_mtime_ns
    assert data.ensure_appearance_data(course, "second_site", test_cases) == site
    assert (site / "manifest.json").stat().st_mtime_ns == written  # nothing made twice
    with pytest.raises(ValueError, match="not cases of"):
        data.ensure_appearance_data(course, "second_site", ["Synth_0009"])
    with pytest.raises(ValueError, match="not a course synthetic cache"):
        data.ensure_appearance_data(tiny_cache, "second_site", ["Tiny_0"])
    with pytest.raises(ValueError, match="not a course synthetic cache"):  # the same cases from elsewhere:
        data.ensure_appearance_data(cache_dir, "second_site", test_cases)  # their seeds are not known


def test_numpy_readers_import_without_a_deep_learning_backend():
    # The library's light-import promise (CONTRIBUTING.md): reading a case never starts Keras.
    code = ("import sys; from tutorial_lib import baseline, config, data, experiments, ingest, metrics, "
            "postprocess, selfcheck, sources, synthetic; "
            "print(sorted(name for name in ('keras', 'tensorflow', 'jax', 'torch') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.parametrize("content", [
    b"",  # a zero-byte file
    b"\x93NUMPY\x01\x00",  # a truncated header
    None,  # a pickled object array
])
def test_unreadable_arrays_name_the_file(tiny_cache, tmp_path, content):
    import shutil

    from tutorial_lib.data import open_array

    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache / "cases" / "Tiny_0", cache / "cases" / "Tiny_0")
    path = cache / "cases" / "Tiny_0" / "label.npy"
    if content is None:
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"Tiny_0/label.npy: not a readable .npy array"):
        open_array(cache, "Tiny_0", "label")


@pytest.mark.parametrize("array, expected", [
    (np.array([1.0, 2.0], np.float32), 0),
    (np.array([np.nan, np.inf, -np.inf, 0.0], np.float16), 3),
    (np.array([60000.0, 60000.0], np.float16), 0),  # large but finite: no false alarm
    (np.full(4, 3e38, np.float32), 0),
    (np.array([1, 2], np.uint8), 0),
])
def test_non_finite_count(array, expected):
    from tutorial_lib.data import non_finite_count

    assert non_finite_count(array) == expected
