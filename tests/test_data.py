"""Tests of tutorial_lib.data: cache loaders, targets and light imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tutorial_lib.data import (
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
