"""Tests for tutorial_lib.synthetic: BraTS conventions, determinism, atomic writes.

Full-size cases cost seconds each, so the tests read the session's
``raw_dataset`` (conftest: 4 cases, seed 0) and generate the first case again,
and at the second site three times (as it is, without noise, and without noise
or bias field: the differences measure what the site adds).
"""

from __future__ import annotations

import dataclasses
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

    def fake(case_id, *, seed, appearance="course"):
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


# --- appearances: one patient, several scanners ------------------------------------------------

COURSE_TISSUE, COURSE_TUMOUR = synthetic._TISSUE_LOOK, synthetic._TUMOUR_LOOK


def _with(modality, part, value):
    """The course's look-ups with one value replaced (part: a tissue index 1-3 or a tumour part)."""
    tissue = {m: list(v) for m, v in COURSE_TISSUE.items()}
    tumour = {m: dict(v) for m, v in COURSE_TUMOUR.items()}
    if isinstance(part, int):
        tissue[modality][part] = value
    else:
        tumour[modality][part] = value
    return tissue, tumour


@pytest.mark.parametrize("change, plausible", [
    (None, True),
    (("t2", 1, 0.3), False),           # CSF darker than grey matter on T2
    (("flair", "edema", 0.55), False),  # the lesion no brighter than grey matter on FLAIR
    (("t1ce", "enhancing", 0.7), False),  # the rim below white matter on T1ce
    (("t1", 3, 0.5), False),           # white matter darker than grey on T1
    (("t1", "necrosis", 0.6), False),  # a necrotic core brighter than grey matter on T1
    (("t2", "edema", 0.40), False),    # edema darker than white matter on T2
    (("t1", 3, 0.9), True),            # more grey/white contrast on T1 breaks nothing
])
def test_look_is_plausible_checks_each_rule(change, plausible):
    looks = (COURSE_TISSUE, COURSE_TUMOUR) if change is None else _with(*change)
    assert synthetic.look_is_plausible(*looks) is plausible


def test_every_appearance_draws_plausible_looks_and_only_the_varied_one_varies():
    course = synthetic._case_looks(synthetic.APPEARANCES["course"], None, 0.95)
    assert course == ({m: tuple(v) for m, v in COURSE_TISSUE.items()}, COURSE_TUMOUR)
    drawn = [synthetic._case_looks(synthetic.APPEARANCES["varied"], np.random.default_rng(s), 0.8) for s in range(200)]
    assert all(synthetic.look_is_plausible(*looks) for looks in drawn)
    t1_white = np.array([tissue["t1"][3] for tissue, _ in drawn])
    # exp(+-0.15): every draw within 14 % below to 16 % above the course's 0.80, and they differ
    assert 0.80 * np.exp(-0.15) <= t1_white.min() < t1_white.max() <= 0.80 * np.exp(0.15)
    # the second site keeps the course's look-up: its contrasts change through the relaxation curves alone
    second = synthetic._case_looks(synthetic.APPEARANCES["second_site"], None, 0.95)
    assert second == course


def test_the_second_site_relaxation_is_a_3t_scanners_and_keeps_every_contrast_rule():
    t1_factor, t2_factor = synthetic.APPEARANCES["second_site"].relaxation
    # 3.0 T against 1.5 T: T1 14-30 % longer, T2 12-19 % shorter (Lu et al. 2005)
    assert 1.14 <= t1_factor <= 1.30 and 0.81 <= t2_factor <= 0.88

    def curved(modality, values):
        array = np.array(values, np.float32)
        return synthetic._relaxation_curve(modality, array, (t1_factor, t2_factor)).tolist()

    tissue = {m: curved(m, v) for m, v in COURSE_TISSUE.items()}
    tumour = {m: dict(zip(parts, curved(m, list(parts.values())))) for m, parts in COURSE_TUMOUR.items()}
    assert synthetic.look_is_plausible(tissue, tumour)
    # one increasing curve per modality: every pair of look-up values keeps its order
    for m in COURSE_TISSUE:
        before = [*COURSE_TISSUE[m], *COURSE_TUMOUR[m].values()]
        after = [*tissue[m], *tumour[m].values()]
        assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable")), m
    # T2 decay at a fixed TE: the T2 look-up goes to the power 1 / t2_factor (a darker white matter relative to CSF)
    np.testing.assert_allclose(tissue["t2"][3] / tissue["t2"][1], COURSE_TISSUE["t2"][3] ** (1 / t2_factor), rtol=1e-5)


@pytest.mark.parametrize("options, message", [
    (dict(noise="poisson"), "noise must be"),
    (dict(contrast_jitter=0.8), "contrast_jitter"),
    (dict(slice_thickness_mm=0), "slice_thickness_mm"),
    (dict(look_scale={("pd", "grey"): 1.1}), "look_scale"),
    (dict(bias_range=(0.4, 0.2)), "bias_range"),
    (dict(relaxation=(3.0, 1.0)), "relaxation"),
])
def test_appearance_rejects_bad_settings(options, message):
    with pytest.raises(ValueError, match=message):
        synthetic.Appearance(**options)


def test_an_unknown_appearance_name_is_refused():
    with pytest.raises(ValueError, match="unknown appearance 'scanner_b'"):
        synthetic.generate_case("x", seed=0, appearance="scanner_b")


@pytest.mark.parametrize("signal, thickness, slabs", [
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 3, [1.0, 1.0]),
    ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 3, [1.0, 4.0]),
    ([0.0, 3.0, 6.0, 9.0], 3, [3.0, 9.0]),  # a last slab of one slice
])
def test_thick_slices_average_slabs_and_thin_slices_interpolate_back(signal, thickness, slabs):
    volume = np.array(signal, np.float32).reshape(1, 1, -1)
    thick = synthetic._thick_slices(volume, thickness)
    np.testing.assert_allclose(thick[0, 0], slabs)
    thin = synthetic._thin_slices(thick, thickness, len(signal))[0, 0]
    assert thin.shape == (len(signal),)
    if len(set(signal)) == 1:  # a constant stays constant
        np.testing.assert_allclose(thin, signal)
    else:  # a ramp comes back as a ramp through the slab centres, flat beyond them
        centres = np.minimum(np.arange(len(slabs)) * thickness + (thickness - 1) / 2, len(signal) - 1)
        np.testing.assert_allclose(thin, np.interp(np.arange(len(signal)), centres, slabs), rtol=1e-6)


@pytest.fixture(scope="module")
def second_site():
    """Case 0 at the second site: as it is, without noise, and without noise or bias field."""
    site = synthetic.APPEARANCES["second_site"]
    quiet = dataclasses.replace(site, noise_range=(0.0, 0.0))
    variants = {"scan": site, "no noise": quiet,
                "no noise, no field": dataclasses.replace(quiet, bias_range=(0.0, 0.0))}
    return {name: synthetic.generate_case("Synth_0000", seed=synthetic.case_seed(0, 0), appearance=appearance)
            for name, appearance in variants.items()}


def test_the_second_site_scans_the_same_patient_with_thick_slices(regenerated, second_site):
    first_case, elsewhere = regenerated, second_site["scan"]
    np.testing.assert_array_equal(elsewhere.seg, first_case.seg)
    np.testing.assert_array_equal(elsewhere.affine, first_case.affine)
    np.testing.assert_array_equal(elsewhere.brain, first_case.brain)
    brain = first_case.brain

    def slice_to_slice(image):  # mean change between neighbouring slices, relative to the mean
        values = image.astype(np.float32)
        both = brain[:, :, 1:] & brain[:, :, :-1]
        return np.abs(np.diff(values, axis=2))[both].mean() / values[brain].mean()

    for name in BRATS.modalities:
        assert not np.array_equal(elsewhere.images[name], first_case.images[name])
        # 3 mm slabs interpolated to 1 mm change less from one slice to the next
        assert slice_to_slice(elsewhere.images[name]) < slice_to_slice(first_case.images[name])


def _correlation_along_z(volume, brain, lag):
    """Correlation of ``volume`` between brain voxels ``lag`` slices apart."""
    both = brain[:, :, lag:] & brain[:, :, :-lag]
    return np.corrcoef(volume[:, :, lag:][both], volume[:, :, :-lag][both])[0, 1]


def test_the_second_site_renders_noise_field_and_slices_within_the_documented_ranges(second_site):
    scan, quiet, flat = (second_site[k] for k in ("scan", "no noise", "no noise, no field"))
    brain = scan.brain
    for name in BRATS.modalities:
        clean = quiet.images[name].astype(np.float32)
        noise = scan.images[name].astype(np.float32) - clean
        # noise: 1-9 % of a bright tissue (BrainWeb's range runs 0-9 %); the 90th percentile stands for it
        relative = noise[brain].std() / np.percentile(clean[brain], 90)
        assert 0.01 < relative < 0.09, (name, relative)

        # slices: the noise was drawn on 3 mm slabs, so neighbouring 1 mm slices share most of it,
        # while slices two slabs (6 mm) apart share none
        near, far = (_correlation_along_z(noise, brain, lag) for lag in (1, 6))
        assert near > 0.7 and abs(far) < 0.05, (name, near, far)

        # bias field: the scan over the same scan without it; its 1st-99th percentile span over the brain,
        # relative to its middle, is BrainWeb's "percent INU" (20 %: 0.9-1.1), documented as about 20-40 %
        field = clean[brain] / np.maximum(flat.images[name][brain].astype(np.float32), 1.0)
        low, high = np.percentile(field, [1, 99])
        assert 0.15 < (high - low) / ((high + low) / 2) < 0.45, (name, low, high)
