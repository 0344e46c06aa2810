"""Tests of tutorial_lib.datasets: the three PyDataset readers over a tiny prepared cache."""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest

from tutorial_lib.augment import Augmentation
from tutorial_lib.config import BRATS
from tutorial_lib.data import NonFiniteDataError, labels_to_target, load_case, load_manifest, open_array
from tutorial_lib.datasets import PatchDataset, SliceDataset, VolumeDataset

GRID = (48, 48, 40)  # tiny_cache: crop grid 192 x 192 x 160 down-sampled by 4


def test_volume_dataset(tiny_cache):
    dataset = VolumeDataset(tiny_cache, "train", modalities=("flair", "t2"), batch_size=2)
    assert len(dataset) == 2  # 3 training cases, last batch holds one
    x, y = dataset[0]
    assert (x.shape, y.shape, x.dtype, y.dtype) == ((2, *GRID, 2), (2, *GRID, 1), np.float32, np.float32)
    assert dataset[1][0].shape == (1, *GRID, 2)
    with pytest.raises(IndexError):
        dataset[2]
    inference = VolumeDataset(tiny_cache, "unlabelled", target=None)
    assert inference[0].shape == (1, *GRID, 1)
    with pytest.raises(ValueError, match="without labels"):
        VolumeDataset(tiny_cache, "unlabelled")
    with pytest.raises(ValueError, match="unknown split"):
        VolumeDataset(tiny_cache, "training")


def test_shuffling_is_seeded_and_changes_per_epoch(tiny_cache):
    ids = ["Tiny_0", "Tiny_1", "Tiny_2", "Tiny_3", "Tiny_4"]
    first = VolumeDataset(tiny_cache, ids, shuffle=True, seed=3)
    second = VolumeDataset(tiny_cache, ids, shuffle=True, seed=3)
    orders = []
    for _ in range(3):
        assert first._order.tolist() == second._order.tolist()
        orders.append(first._order.tolist())
        first.on_epoch_end(), second.on_epoch_end()
    assert len({tuple(order) for order in orders}) > 1
    assert VolumeDataset(tiny_cache, ids)._order.tolist() == [0, 1, 2, 3, 4]


def test_slice_dataset_counts_and_shapes(tiny_cache):
    meta = load_manifest(tiny_cache)["cases"]["Tiny_0"]
    brain, tumour = meta["brain_slices"], meta["tumour_slices"]
    plain = SliceDataset(tiny_cache, ["Tiny_0"], batch_size=4)
    assert len(plain.items) == len(brain)
    doubled = SliceDataset(tiny_cache, ["Tiny_0"], batch_size=4, oversample_tumour=3)
    assert len(doubled.items) == len(brain) + 2 * len(tumour)
    every_other = SliceDataset(tiny_cache, ["Tiny_0"], slice_step=2, brain_only=False)
    assert [z for _, z in every_other.items] == list(range(0, GRID[2], 2))
    x, y = SliceDataset(tiny_cache, "train", modalities="all", target="regions", batch_size=4)[0]
    assert (x.shape, y.shape, x.dtype) == ((4, 48, 48, 4), (4, 48, 48, 3), np.float32)
    image, target = load_case(tiny_cache, "Tiny_0")
    z = tumour[0]
    x, y = SliceDataset(tiny_cache, ["Tiny_0"], brain_only=False, batch_size=GRID[2])[0]
    np.testing.assert_array_equal(x[z], image[:, :, z]), np.testing.assert_array_equal(y[z], target[:, :, z])


def test_patch_dataset(tiny_cache):
    kwargs = dict(patch_shape=(16, 16, 8), patches_per_case=2, batch_size=3, seed=5)
    patches = PatchDataset(tiny_cache, "train", tumour_fraction=1.0, **kwargs)
    assert len(patches) == 2  # 3 cases x 2 patches in batches of 3
    x, y = patches[0]
    assert (x.shape, y.shape, x.dtype) == ((3, 16, 16, 8, 1), (3, 16, 16, 8, 1), np.float32)
    assert all(y[i].sum() > 0 for i in range(3)), "tumour-centred patches must contain tumour"
    again = PatchDataset(tiny_cache, "train", tumour_fraction=1.0, **kwargs)[0]
    np.testing.assert_array_equal(again[0], x)
    background = PatchDataset(tiny_cache, "train", tumour_fraction=0.0, **kwargs)[0][0]
    assert np.count_nonzero(background) > 0, "random patches are centred inside the brain"
    with pytest.raises(ValueError, match="patch_shape"):
        PatchDataset(tiny_cache, "train", patch_shape=(64, 16, 16))


def _patches_before_augmentation(reader: PatchDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``index`` as PatchDataset drew it before augmentation existed (its corner and window, verbatim)."""
    images, labels = [], []
    for slot, case_id in enumerate(reader._batch_items(index)):
        rng = np.random.default_rng([reader.seed, reader.epoch, index, slot])
        label = np.asarray(open_array(reader.cache_dir, case_id, "label"))
        candidates = np.empty(0)
        if reader.enhancing_fraction and rng.random() < reader.enhancing_fraction:
            candidates = np.flatnonzero(np.isin(label, BRATS.regions["ET"]))
        if candidates.size == 0:
            candidates = np.flatnonzero(label) if rng.random() < reader.tumour_fraction else np.empty(0)
        if candidates.size == 0:
            candidates = np.flatnonzero(open_array(reader.cache_dir, case_id, "brain"))
        grid, patch = np.array(label.shape), np.array(reader.patch_shape)
        centre = np.array(np.unravel_index(rng.choice(candidates), label.shape))
        start = np.clip(centre - patch // 2, 0, grid - patch)
        window = tuple(slice(s, s + p) for s, p in zip(start, reader.patch_shape))
        images.append(open_array(reader.cache_dir, case_id, "image")[window])
        labels.append(label[window])
    x = np.stack([np.asarray(image[..., reader.channels], np.float32) for image in images])
    return x, labels_to_target(np.stack(labels), reader.target)


@pytest.mark.parametrize("options", [
    dict(patch_shape=(16, 16, 8), batch_size=3, seed=5),
    dict(patch_shape=(24, 24, 24), patches_per_case=2, batch_size=2, modalities="all", shuffle=True,
         tumour_fraction=0.9),
    dict(patch_shape=(4, 4, 4), patches_per_case=4, batch_size=12, seed=3, target="regions",
         modalities=("t1ce", "flair"), enhancing_fraction=0.5),
])
def test_patch_dataset_without_augmentation_reads_as_before(tiny_cache, options):
    for reader in (PatchDataset(tiny_cache, "train", **options),
                   PatchDataset(tiny_cache, "train", augmentation=None, **options)):
        for epoch in (0, 3):
            reader.set_epoch(epoch)
            for index in range(len(reader)):
                x, y = reader[index]
                expected_x, expected_y = _patches_before_augmentation(reader, index)
                assert x.dtype == expected_x.dtype and y.dtype == expected_y.dtype
                assert x.tobytes() == expected_x.tobytes() and y.tobytes() == expected_y.tobytes()


def test_patch_dataset_centres_a_share_on_enhancing_tumour(tiny_cache):
    kwargs = dict(patch_shape=(4, 4, 4), patches_per_case=4, batch_size=12, seed=3, target="regions")
    plain = PatchDataset(tiny_cache, "train", tumour_fraction=0.5, **kwargs)[0]
    unchanged = PatchDataset(tiny_cache, "train", tumour_fraction=0.5, enhancing_fraction=0.0, **kwargs)[0]
    np.testing.assert_array_equal(unchanged[0], plain[0])  # 0 draws nothing: every patch as before
    reader = PatchDataset(tiny_cache, "train", tumour_fraction=0.0, enhancing_fraction=1.0, **kwargs)
    enhancing = reader[0][1]
    # A patch of a case with enhancing tumour (channel 2) is centred on it; the others fall back to the brain.
    has_et = [load_case(tiny_cache, case_id, target="regions")[1][..., 2].any() for case_id in reader._batch_items(0)]
    assert any(has_et)
    assert [bool(patch[..., 2].any()) for patch in enhancing] == has_et
    assert plain[1][..., 2].sum() < enhancing[..., 2].sum()
    with pytest.raises(ValueError, match="enhancing_fraction"):
        PatchDataset(tiny_cache, "train", enhancing_fraction=1.5)


def test_readers_train_a_keras_model(tiny_cache):
    model = keras.Sequential([keras.Input((48, 48, 1)),
                              keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(SliceDataset(tiny_cache, "train", batch_size=16, slice_step=4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    model3d = keras.Sequential([keras.Input((16, 16, 8, 1)), keras.layers.Conv3D(1, 3, padding="same")])
    model3d.compile(optimizer="sgd", loss="mse")
    model3d.fit(PatchDataset(tiny_cache, "train", patch_shape=(16, 16, 8), batch_size=2), epochs=1, verbose=0)


@pytest.fixture
def nan_cache(tiny_cache, tmp_path):
    """A copy of the tiny cache whose Tiny_1 image holds one NaN (FLAIR) and one inf (T2)."""
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache, cache)
    path = cache / "cases" / "Tiny_1" / "image.npy"
    image = np.load(path)
    image[10, 11, 12, 0], image[1, 2, 3, 3] = np.nan, np.inf
    np.save(path, image)
    return cache


@pytest.mark.parametrize("reader, options", [
    (VolumeDataset, {}),
    (SliceDataset, {"brain_only": False}),
    (PatchDataset, {"patch_shape": (48, 48, 40)}),  # the whole grid: the NaN is always inside
])
def test_readers_refuse_non_finite_images_naming_the_file(nan_cache, reader, options):
    dataset = reader(nan_cache, ["Tiny_0", "Tiny_1"], batch_size=2 if reader is not SliceDataset else 80,
                     **options)
    with pytest.raises(NonFiniteDataError, match=r"Tiny_1/image.npy: 1 non-finite value"):
        dataset[0]
    clean = reader(nan_cache, ["Tiny_1"], modalities=("t1",), **options)
    assert np.isfinite(clean[0][0]).all()  # other channels of the same case are fine
    with pytest.raises(NonFiniteDataError, match=r"Tiny_1/image.npy: [12] non-finite"):  # slices hold one
        reader(nan_cache, ["Tiny_1"], modalities="all", **options)[0]


def test_augmented_patches_are_screened_too(nan_cache):
    rotate_and_darken = Augmentation.only(rotation_probability=1.0, gamma_probability=1.0)
    reader = PatchDataset(nan_cache, ["Tiny_0", "Tiny_1"], patch_shape=(48, 48, 40), batch_size=2,
                          augmentation=rotate_and_darken)
    with pytest.raises(NonFiniteDataError, match=r"Tiny_1/image.npy: \d+ non-finite"):
        reader[0]  # interpolation and gamma spread the NaN; the case is still named


def test_load_case_refuses_non_finite_images(nan_cache):
    with pytest.raises(NonFiniteDataError, match=r"Tiny_1/image.npy: 1 non-finite"):
        load_case(nan_cache, "Tiny_1")
    assert np.isfinite(load_case(nan_cache, "Tiny_0")[0]).all()


def test_set_epoch_gives_the_order_of_an_uninterrupted_reader(tiny_cache):
    ids = ["Tiny_0", "Tiny_1", "Tiny_2", "Tiny_3", "Tiny_4"]
    running = VolumeDataset(tiny_cache, ids, shuffle=True, seed=3)
    orders = []
    for _ in range(3):
        orders.append(running._order.tolist())
        running.on_epoch_end()
    resumed = VolumeDataset(tiny_cache, ids, shuffle=True, seed=3)
    resumed.set_epoch(2)
    assert resumed._order.tolist() == orders[2]
    with pytest.raises(ValueError, match="epoch"):
        resumed.set_epoch(-1)
