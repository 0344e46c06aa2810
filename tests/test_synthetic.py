"""Tests for tutorial_lib.synthetic: BraTS conventions, determinism, atomic writes.

Full-size cases cost seconds each, so the tests read the session's
``raw_dataset`` (conftest: 4 cases, seed 0) and generate at most one more.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from tutorial_lib import synthetic
from tutorial_lib.config import BRATS

SUFFIXES = (*BRATS.modalities, "seg")


def _load(case_dir):
    """All five volumes and their affines of one case folder."""
    images = {s: nib.load(case_dir / f"{case_dir.name}_{s}.nii.gz") for s in SUFFIXES}
    return {s: np.asanyarray(img.dataobj) for s, img in images.items()}, {s: img.affine for s, img in images.items()}


@pytest.fixture(scope="module")
def first_case(raw_dataset):
    return _load(raw_dataset / "Synth_0000")


@pytest.fixture(scope="module")
def regenerated():
    # The same seed as raw_dataset's first case: must reproduce it exactly.
    return synthetic.generate_case("Synth_0000", seed=synthetic.case_seed(0, 0))


def test_folder_layout(raw_dataset):
    names = sorted(p.name for p in raw_dataset.iterdir())
    assert names == synthetic.case_ids(4)
    for case_dir in raw_dataset.iterdir():
        assert sorted(p.name for p in case_dir.iterdir()) == sorted(f"{case_dir.name}_{s}.nii.gz" for s in SUFFIXES)
        assert synthetic.is_complete_case(case_dir)


def test_brats_conventions(first_case):
    arrays, affines = first_case
    for name in BRATS.modalities:
        # shape: (240, 240, 155) int16
        assert arrays[name].shape == BRATS.shape and arrays[name].dtype == np.int16
        assert arrays[name].min() >= 0
    assert arrays["seg"].dtype == np.uint8 and arrays["seg"].shape == BRATS.shape
    assert set(np.unique(arrays["seg"])) <= set(BRATS.labels)
    for suffix in SUFFIXES:
        np.testing.assert_array_equal(affines[suffix], affines["flair"])
    assert np.allclose(np.abs(np.diag(affines["flair"])[:3]), BRATS.spacing_mm)


def test_skull_stripped_and_tumour_inside_brain(raw_dataset):
    for case_dir in sorted(raw_dataset.iterdir()):
        arrays, _ = _load(case_dir)
        brains = [arrays[m] > 0 for m in BRATS.modalities]
        # Every modality is zero exactly outside one common brain mask.
        for brain in brains[1:]:
            np.testing.assert_array_equal(brain, brains[0])
        brain = brains[0]
        assert 0.9e6 < brain.sum() < 2.2e6  # 0.9-2.2 litres at 1 mm^3 per voxel
        assert not np.any(arrays["seg"][~brain])
        # Brain fits the cache's central 192 x 192 crop.
        border = (np.array(BRATS.shape[:2]) - BRATS.crop_shape[:2]) // 2
        assert not brain[: border[0]].any() and not brain[-border[0] :].any()
        assert not brain[:, : border[1]].any() and not brain[:, -border[1] :].any()


def test_tumour_volume_and_labels(raw_dataset):
    for case_dir in sorted(raw_dataset.iterdir()):
        seg = _load(case_dir)[0]["seg"]
        whole_cm3 = np.isin(seg, BRATS.regions["WT"]).sum() / 1000.0
        assert 5.0 <= whole_cm3 <= 200.0, case_dir.name
        assert (seg == 2).any(), f"{case_dir.name} has no edema"
        assert np.isin(seg, BRATS.regions["TC"]).any(), f"{case_dir.name} has no core"


def test_tumour_is_bright_on_flair(first_case):
    arrays, _ = first_case
    flair, seg = arrays["flair"].astype(float), arrays["seg"]
    brain = flair > 0
    assert np.median(flair[seg == 2]) > 1.2 * np.median(flair[brain & (seg == 0)])


def test_same_seed_gives_identical_arrays(first_case, regenerated):
    arrays, affines = first_case
    for name in BRATS.modalities:
        np.testing.assert_array_equal(regenerated.images[name], arrays[name])
    np.testing.assert_array_equal(regenerated.seg, arrays["seg"])
    np.testing.assert_allclose(regenerated.affine, affines["seg"])


def test_different_seed_gives_different_case(first_case, raw_dataset):
    other, _ = _load(raw_dataset / "Synth_0001")
    assert not np.array_equal(other["flair"], first_case[0]["flair"])
    assert not np.array_equal(other["seg"], first_case[0]["seg"])


@pytest.mark.parametrize(
    "seed, index, other",
    [(0, 0, (0, 1)), (0, 1, (1, 0)), (7, 3, (7, 4))],
)
def test_case_seed_is_stable_and_distinct(seed, index, other):
    assert synthetic.case_seed(seed, index) == synthetic.case_seed(seed, index)
    assert synthetic.case_seed(seed, index) != synthetic.case_seed(*other)


@pytest.mark.parametrize("call", [lambda: synthetic.case_seed(-1, 0), lambda: synthetic.case_ids(-1),
                                  lambda: synthetic.generate_case("x", seed=-3)])
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call()


def test_bad_case_id_and_workers(tmp_path):
    with pytest.raises(ValueError, match="plain folder name"):
        synthetic.write_case(tmp_path, f"a{os.sep}b", seed=0)
    with pytest.raises(ValueError, match="workers"):
        synthetic.make_dataset(tmp_path, 1, workers=0)


@pytest.fixture
def fast_generator(monkeypatch, regenerated):
    """Make generate_case instant (returns the regenerated case) and count calls."""
    calls = []

    def fake(case_id, *, seed):
        calls.append(case_id)
        return regenerated

    monkeypatch.setattr(synthetic, "generate_case", fake)
    return calls


def test_rerun_skips_complete_cases(raw_dataset, fast_generator):
    before = {p: p.stat().st_mtime_ns for p in raw_dataset.rglob("*.nii.gz")}
    synthetic.make_dataset(raw_dataset, 4, seed=0, progress=False)
    assert fast_generator == []
    assert {p: p.stat().st_mtime_ns for p in raw_dataset.rglob("*.nii.gz")} == before


def test_incomplete_folder_is_rewritten(tmp_path, fast_generator):
    partial = tmp_path / "Synth_0000"
    partial.mkdir()
    (partial / "Synth_0000_flair.nii.gz").write_bytes(b"truncated")
    synthetic.make_dataset(tmp_path, 1, seed=0, progress=False)
    assert fast_generator == ["Synth_0000"] and synthetic.is_complete_case(partial)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Synth_0000"]


def test_failed_write_leaves_nothing(tmp_path, fast_generator, monkeypatch):
    saved = []

    def failing_save(image, path):
        if saved:
            raise OSError("disk full")
        saved.append(path)
        nib.Nifti1Image.to_filename(image, path)

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        synthetic.write_case(tmp_path, "Synth_0009", seed=1)
    assert saved and list(tmp_path.iterdir()) == []
