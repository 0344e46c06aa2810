"""Tests for tutorial_lib.inference: sliding windows, label conversion, NIfTI write-back."""

from __future__ import annotations

import keras
import nibabel as nib
import numpy as np
import pytest

from tutorial_lib import experiments, models
from tutorial_lib.config import BRATS
from tutorial_lib.data import load_brain, load_case, load_manifest, load_split
from tutorial_lib.inference import (
    MIRRORINGS,
    PackedMasks,
    case_dice,
    downsampling_factor,
    evaluate_run,
    predict_case,
    predict_probabilities,
    predict_volume,
    predict_volume_2d,
    regions_to_labels,
    score_run,
    write_segmentation,
)
from tutorial_lib.ingest import downsample_label
from tutorial_lib.metrics import dice_coefficient, lesion_table

ET = BRATS.regions["ET"][0]
(NCR,) = set(BRATS.regions["TC"]) - set(BRATS.regions["ET"])
(ED,) = set(BRATS.regions["WT"]) - set(BRATS.regions["TC"])


def conv_model(kernel: int, channels: int = 1, classes: int = 1, seed: int = 0) -> keras.Model:
    """(batch, x, y, z, channels) -> (batch, x, y, z, classes) for any spatial size."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, None, channels))
    hidden = keras.layers.Conv3D(4, kernel, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv3D(classes, 1, activation="sigmoid")(hidden))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).normal(size=(20, 18, 11, 2)).astype("float32")  # shape: (x, y, z, C)


@pytest.mark.parametrize("blending", ["gaussian", "uniform"])
def test_pointwise_model_gives_identical_windows_and_full_volume(image, blending):
    model = conv_model(kernel=1, channels=2, classes=3)
    full = predict_volume(model, image)
    # Windows do not divide 20 x 18 x 11: the last window is shifted back to the edge.
    windows = predict_volume(model, image, patch_size=(8, 8, 8), overlap=0.5, batch_size=3, blending=blending)
    assert full.shape == windows.shape == (20, 18, 11, 3)  # shape: (x, y, z, K)
    np.testing.assert_allclose(windows, full, atol=1e-5)


def test_predict_volume_2d_stacks_the_axial_slices_and_masks_the_brain(image):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs))
    brain = np.zeros(image.shape[:3], bool)
    brain[2:15, 3:12, :] = True  # shape: (x, y, z)
    # 11 slices in batches of 4: the last batch is padded and must be cut off again.
    probabilities = predict_volume_2d(model, image, batch_size=4)
    assert probabilities.shape == (20, 18, 11, 1)  # shape: (x, y, z, K)
    for z in (0, 5, 10):
        one_slice = model.predict(image[None, :, :, z], verbose=0)[0]  # shape: (x, y, K)
        np.testing.assert_allclose(probabilities[:, :, z], one_slice, atol=1e-5)
    masked = predict_volume_2d(model, image, brain=brain, batch_size=4)
    np.testing.assert_array_equal(masked[~brain], 0.0)
    np.testing.assert_allclose(masked[brain], probabilities[brain], atol=1e-6)
    with pytest.raises(ValueError, match="brain mask shape"):
        predict_volume_2d(model, image, brain=brain[:-1])


def test_3x3x3_model_agrees_closely_away_from_window_borders(image):
    model = conv_model(kernel=3, channels=2)
    full = predict_volume(model, image)
    windows = predict_volume(model, image, patch_size=(10, 10, 8), overlap=0.5)
    # Only voxels at window borders miss context; Gaussian blending down-weights them.
    assert np.abs(windows - full).mean() < 0.01
    assert np.abs(windows - full).max() < 0.2


def test_volume_smaller_than_window_and_pad_multiple(image):
    model = conv_model(kernel=3, channels=2)
    small = image[:5, :6, :4]
    padded_window = predict_volume(model, small, patch_size=(8, 8, 8))
    padded_full = predict_volume(model, small, pad_multiple=8)
    assert padded_window.shape == padded_full.shape == (5, 6, 4, 1)
    np.testing.assert_allclose(padded_window, padded_full, atol=1e-5)  # both see the same zero padding


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"image": np.zeros((4, 4, 4))}, "x, y, z, channels"),
        ({"patch_size": (4, 4)}, "three positive"),
        ({"overlap": 1.0}, "overlap"),
        ({"blending": "max"}, "blending"),
    ],
)
def test_predict_volume_rejects_bad_arguments(arguments, message):
    call = {"image": np.zeros((4, 4, 4, 1), "float32"), "patch_size": (2, 2, 2)} | arguments
    with pytest.raises(ValueError, match=message):
        predict_volume(conv_model(kernel=1), call.pop("image"), **call)


@pytest.mark.parametrize(
    "channels, expected",
    [
        # (WT, TC, ET) of one voxel -> label
        ((1,), ED),  # WT-only predictions are edema
        ((0,), 0),
        ((1, 0, 0), ED),
        ((1, 1, 0), NCR),
        ((1, 1, 1), ET),
        ((0, 0, 0), 0),
    ],
)
def test_regions_to_labels_nests_wt_tc_et(channels, expected):
    mask = np.array(channels, bool).reshape(1, 1, 1, -1)  # shape: (1, 1, 1, K)
    assert regions_to_labels(mask)[0, 0, 0] == expected


def test_regions_to_labels_rejects_two_channels():
    with pytest.raises(ValueError, match="x, y, z, 3"):
        regions_to_labels(np.zeros((2, 2, 2, 2), bool))


def manifest_entry(downsample: int) -> dict:
    """Geometry as tutorial_lib.ingest writes it for a BraTS case (x 24..216, y 20..212, z 0..155 + 5)."""
    affine = np.array([[-1.0, 0, 0, 120], [0, -1, 0, 120], [0, 0, 1, -77], [0, 0, 0, 1]])
    return {
        "original_shape": list(BRATS.shape),
        "original_affine": affine.tolist(),
        "crop_box": [[24, 216], [20, 212], [0, 155]],
        "padding": [[0, 0], [0, 0], [0, 5]],
        "downsample": downsample,
        "shape": [n // downsample for n in BRATS.crop_shape],
    }


@pytest.mark.parametrize("downsample", [1, 4])
def test_write_segmentation_returns_to_the_original_grid(tmp_path, downsample):
    entry = manifest_entry(downsample)
    grid = tuple(entry["shape"])
    probabilities = np.zeros(grid + (3,), np.float32)  # shape: cache grid x (WT, TC, ET)
    # One coarse voxel block of tumour: WT everywhere in it, TC and ET inside.
    block = (slice(4, 6), slice(4, 6), slice(2, 4))
    probabilities[block + (0,)] = 0.9
    probabilities[block + (1,)] = 0.8
    probabilities[(4, 4, 2, 2)] = 0.7
    path = write_segmentation(probabilities, entry, tmp_path / "case.nii.gz")
    written = nib.load(path)
    labels = np.asarray(written.dataobj)
    assert labels.shape == BRATS.shape == (240, 240, 155)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(written.affine, np.array(entry["original_affine"]))
    assert set(np.unique(labels)) == {0, NCR, ET}
    # Voxel (4, 4, 2) of the cache grid starts at crop start + 4 * downsample.
    first = (24 + 4 * downsample, 20 + 4 * downsample, 2 * downsample)
    assert labels[first] == ET
    assert labels[23, 23, 0] == 0 and labels[:24].sum() == 0
    # 2 x 2 x 2 coarse voxels of tumour, each a downsample^3 block; one of them ET.
    assert np.count_nonzero(labels) == 8 * downsample**3
    assert np.count_nonzero(labels == ET) == downsample**3
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_write_segmentation_of_a_mask_and_shape_errors(tmp_path):
    entry = manifest_entry(4)
    mask = np.zeros(tuple(entry["shape"]), bool)  # shape: (48, 48, 40), WT only
    mask[0, 0, 39] = True  # in the depth padding: dropped
    mask[47, 47, 0] = True
    labels = np.asarray(nib.load(write_segmentation(mask, entry, tmp_path / "wt.nii.gz")).dataobj)
    assert set(np.unique(labels)) == {0, ED}
    assert np.count_nonzero(labels) == 4**3  # one coarse voxel -> one 4x4x4 block
    assert labels[212:216, 208:212, 0:4].all()
    with pytest.raises(ValueError, match="cache grid"):
        write_segmentation(np.zeros((10, 10, 10), bool), entry, tmp_path / "bad.nii.gz")


def test_predict_case_reads_the_cache_and_postprocesses(tiny_cache):
    case_id = load_split(tiny_cache)["test"][0]
    model = conv_model(kernel=1, channels=2)
    result = predict_case(model, tiny_cache, case_id, modalities=("t2", "flair"))
    image, _ = load_case(tiny_cache, case_id, modalities=("t2", "flair"), target=None)
    expected = predict_volume(model, image)
    assert result.probabilities.shape == image.shape[:3] + (1,)  # shape: (48, 48, 40, 1)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    np.testing.assert_array_equal(result.mask, expected > 0.5)
    emptied = predict_case(model, tiny_cache, case_id, modalities=("t2", "flair"), postprocess=np.zeros_like)
    assert not emptied.mask.any()
    with pytest.raises(FileNotFoundError, match="case_999"):
        predict_case(model, tiny_cache, "case_999")


def test_mirroring_averages_the_eight_flipped_predictions(tiny_cache):
    case_id = load_split(tiny_cache)["test"][0]
    model = conv_model(kernel=3, channels=1, seed=3)   # a 3 x 3 x 3 kernel is not symmetric: flips differ
    image, _ = load_case(tiny_cache, case_id, target=None)
    by_hand = np.mean([np.flip(predict_volume(model, np.ascontiguousarray(np.flip(image, axes))), axes)
                       for axes in MIRRORINGS], axis=0)
    mirrored = predict_probabilities(model, tiny_cache, [case_id], mirror=True)[case_id]
    plain = predict_probabilities(model, tiny_cache, [case_id])[case_id]
    assert len(MIRRORINGS) == 8 and mirrored.shape == plain.shape == image.shape[:3]
    np.testing.assert_allclose(mirrored, by_hand[..., 0], atol=1e-6)
    assert np.abs(mirrored - plain).max() > 1e-3
    pointwise = conv_model(kernel=1, channels=1)   # a 1 x 1 x 1 network gives every flip the same answer
    np.testing.assert_allclose(predict_probabilities(pointwise, tiny_cache, [case_id], mirror=True)[case_id],
                               predict_probabilities(pointwise, tiny_cache, [case_id])[case_id], atol=1e-6)


def test_a_slice_wise_network_is_mirrored_inside_the_brain(tiny_cache):
    case_id = load_split(tiny_cache)["test"][0]
    inputs = keras.Input((None, None, 1))
    hidden = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(hidden))
    mirrored = predict_case(model, tiny_cache, case_id, mirror=True).probabilities[..., 0]
    assert not mirrored[~load_brain(tiny_cache, case_id)].any()   # the brain mask flips with the scan


def test_evaluate_run_adds_the_lesion_wise_scores(tiny_cache):
    split = load_split(tiny_cache)
    case_ids = split["test"] + split["val"]
    model = everywhere_model(3)
    table = evaluate_run(model, tiny_cache, case_ids, spacing=(4.0, 4.0, 4.0), lesion_wise=True)
    truths = [load_case(tiny_cache, case_id, target="labels")[1] for case_id in case_ids]
    predictions = [regions_to_labels(np.ones(truth.shape[:3] + (1,), bool)) for truth in truths]
    expected = lesion_table(predictions, truths, case_ids=case_ids, spacing=(4.0, 4.0, 4.0), regions=["WT"])
    assert set(expected.columns) <= set(table.columns) and "dice_WT" in table
    np.testing.assert_allclose(table[expected.columns].to_numpy(float), expected.to_numpy(float))
    assert (table["tp_WT"] + table["fp_WT"] == 1).all()   # the whole grid is one predicted lesion


@pytest.mark.parametrize("target", ["wt", "regions"])
def test_cached_truth_written_back_matches_the_source_segmentation(tiny_cache, tmp_path, target):
    """Round trip: source _seg -> cache (crop, pad, down-sample) -> write_segmentation -> source grid."""
    case_id = load_split(tiny_cache)["train"][0]
    entry = load_manifest(tiny_cache)["cases"][case_id]
    _, truth = load_case(tiny_cache, case_id, target=target)  # shape: (48, 48, 40, K)
    written = nib.load(write_segmentation(truth, entry, tmp_path / f"{case_id}.nii.gz"))
    labels = np.asarray(written.dataobj)
    assert labels.shape == tuple(entry["original_shape"])  # the tiny sources are 48 x 48 x 32
    np.testing.assert_allclose(written.affine, np.array(entry["original_affine"]))
    # Cropping, padding and down-sampling the written file again gives back the cache exactly.
    window = labels[tuple(slice(start, stop) for start, stop in entry["crop_box"])]
    again = downsample_label(np.pad(window, entry["padding"]), entry["downsample"])
    _, cached_labels = load_case(tiny_cache, case_id, target="labels")
    if target == "wt":
        np.testing.assert_array_equal(again > 0, cached_labels > 0)
    else:
        np.testing.assert_array_equal(again, cached_labels)
    # And it lies on the source tumour (a shifted write-back would not).
    source = np.asarray(nib.load(tiny_cache.parent / "src" / entry["source_files"]["seg"]).dataobj)
    assert dice_coefficient(labels > 0, source > 0) > 0.6


def everywhere_model(rank: int) -> keras.Model:
    """Predicts tumour (probability 1) at every voxel: (batch, *spatial, 1) -> same shape."""
    inputs = keras.Input((None,) * rank + (1,))
    return keras.Model(inputs, keras.layers.Lambda(lambda x: keras.ops.ones_like(x))(inputs))


@pytest.mark.parametrize("rank", [2, 3])
def test_case_dice_scores_the_binarised_prediction_of_each_case(tiny_cache, rank):
    case_ids = load_split(tiny_cache)["train"][:2]
    scores = case_dice(everywhere_model(rank), tiny_cache, case_ids)
    assert list(scores) == case_ids
    for case_id in case_ids:
        truth = load_case(tiny_cache, case_id)[1][..., 0] > 0.5
        # A slice-wise (2D) network predicts only inside the brain; a 3D one everywhere on the grid.
        predicted = load_brain(tiny_cache, case_id) if rank == 2 else np.ones_like(truth)
        expected = 2 * (truth & predicted).sum() / (truth.sum() + predicted.sum())  # hand-computed Dice
        assert scores[case_id] == pytest.approx(expected)


def test_packed_masks_round_trip_at_an_eighth_of_the_memory() -> None:
    rng = np.random.default_rng(0)
    masks, originals = PackedMasks(), {}
    for case_id, shape in (("odd", (5, 7, 3)), ("full", (192, 192, 160)), ("empty", (4, 4, 4))):
        originals[case_id] = rng.random(shape) < (0.0 if case_id == "empty" else 0.3)
        masks[case_id] = originals[case_id]
    for case_id, original in originals.items():
        assert masks[case_id].dtype == bool and np.array_equal(masks[case_id], original), case_id
    assert list(masks) == ["odd", "full", "empty"]
    assert masks.nbytes <= sum(m.size for m in originals.values()) / 8 + 3  # one partial byte per mask
    del masks["odd"]
    assert len(masks) == 2
    with pytest.raises(ValueError, match="'probabilities' must be boolean"):
        masks["probabilities"] = rng.random((2, 2, 2))


@pytest.mark.parametrize(
    "network, factor",
    [
        (lambda: conv_model(kernel=3), 1),  # no pooling
        (lambda: models.unet((None, None, 1), filters=(2, 4)), 2),  # 2D, one pooling
        (lambda: models.unet((None, None, None, 1), filters=(2, 4, 8)), 4),
        (lambda: models.unet((None, None, None, 1), filters=(2, 4, 8, 16)), 8),
    ],
)
def test_downsampling_factor_counts_the_poolings(network, factor):
    assert downsampling_factor(network()) == factor


def test_whole_volume_prediction_pads_to_what_the_network_needs(image):
    # 20 x 18 x 11 does not divide by 4: without padding the U-Net's skips would not line up.
    unet = models.unet((None, None, None, 2), filters=(2, 4, 8))
    assert predict_volume(unet, image).shape == (20, 18, 11, 1)


def test_score_run_scores_the_kept_network_of_a_run(tiny_cache, tmp_path):
    keras.utils.set_random_seed(0)
    network = models.unet((None, None, None, 1), filters=(2, 4))
    config = {"run": "demo", "modalities": ["flair"]}
    folder = experiments.run_dir(config, root=tmp_path)
    folder.mkdir(parents=True)
    network.save(folder / "best.keras")
    case_ids = load_split(tiny_cache)["test"]
    expected = case_dice(network, tiny_cache, case_ids)
    assert score_run(folder, tiny_cache, case_ids) == pytest.approx(expected)
    assert not list(folder.glob("scores-*.json"))  # an unfinished run (no done.json) keeps nothing
    with pytest.raises(FileNotFoundError, match="best epoch"):
        score_run(tmp_path / "unfinished", tiny_cache, case_ids)


def test_a_finished_run_keeps_its_scores_and_scores_a_new_network_again(tiny_cache, tmp_path, monkeypatch):
    from tutorial_lib import inference

    keras.utils.set_random_seed(0)
    folder = tmp_path / "demo-run"
    folder.mkdir()
    models.unet((None, None, None, 1), filters=(2, 4)).save(folder / "best.keras")
    (folder / "done.json").write_text('{"epochs": 1}')
    case_ids = load_split(tiny_cache)["test"] + load_split(tiny_cache)["val"]
    scored = []
    original = inference.case_dice
    monkeypatch.setattr(inference, "case_dice", lambda model, cache, ids, **options: scored.append(list(ids))
                        or original(model, cache, ids, **options))
    first = score_run(folder, tiny_cache, case_ids[:1], modalities=["flair"])
    again = score_run(folder, tiny_cache, case_ids, modalities=["flair"])
    assert again[case_ids[0]] == first[case_ids[0]] and list(again) == case_ids
    assert scored == [case_ids[:1], case_ids[1:]]  # the second call predicted only the case it had not seen
    score_run(folder, tiny_cache, case_ids, modalities=["flair"])
    assert len(scored) == 2  # all read back
    models.unet((None, None, None, 1), filters=(2, 4)).save(folder / "best.keras")  # trained again
    score_run(folder, tiny_cache, case_ids, modalities=["flair"])
    assert scored[-1] == case_ids
