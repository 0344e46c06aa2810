"""Tests for tutorial_lib.scans and data_scripts/segment_scan.py: a synthetic case in other orientations and
voxel sizes comes back aligned with its own truth, and bad input is refused with the file's name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest
from conftest import OWN_PROCESS
from nibabel.processing import resample_from_to

from tutorial_lib import data, inference, scans
from tutorial_lib.metrics import dice_coefficient

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def flair_network(cache_dir, tmp_path_factory) -> Path:
    """A finished run folder whose network marks bright FLAIR (z > 1.5) as tumour: geometry, not learning, is tested."""
    inputs = keras.Input((None, None, None, 1))
    outputs = keras.layers.Conv3D(1, 1, activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs, name="bright_flair")
    model.layers[-1].set_weights([np.full((1, 1, 1, 1, 1), 8.0, "float32"), np.array([-12.0], "float32")])
    run = tmp_path_factory.mktemp("run")
    model.save(run / "best.keras")
    (run / "done.json").write_text(json.dumps({"epochs": 1}))
    config = {"run": "test", "profile": "ci", "modalities": ["flair"], "patch_shape": None}
    (run / "record.json").write_text(json.dumps({"config": config, "results": {}}))
    return run


@pytest.fixture(scope="module")
def case(raw_dataset, cache_dir, flair_network, tmp_path_factory) -> dict:
    """The case the bright-FLAIR network segments best, and its Dice through the course's own path.

    That path predicts the cached case and writes it back on the original grid
    (``inference.write_segmentation``); its Dice against the original labels is
    what a scan in any geometry should come close to.
    """
    model = scans.load_network(flair_network).model
    manifest = data.load_manifest(cache_dir)["cases"]
    case_id = max(inference.case_dice(model, cache_dir, list(manifest)).items(), key=lambda item: item[1])[0]
    files = {key: raw_dataset / path for key, path in manifest[case_id]["source_files"].items()}
    seg = nib.load(files["seg"])
    written = inference.write_segmentation(inference.predict_case(model, cache_dir, case_id).mask, manifest[case_id],
                                           tmp_path_factory.mktemp("cache_path") / "seg.nii.gz")
    cache_path_dice = dice_coefficient(np.asarray(nib.load(written).dataobj) > 0, np.asarray(seg.dataobj) > 0)
    return {"id": case_id, "cache_path_dice": cache_path_dice, "flair": nib.load(files["flair"]), "seg": seg}


def _reoriented(image: nib.Nifti1Image, flips: tuple[int, ...], order: tuple[int, int, int]) -> nib.Nifti1Image:
    """The same voxels, with axes flipped then permuted, and the affine that keeps them in place."""
    array, affine = np.asarray(image.dataobj), image.affine.copy()
    for axis in flips:
        array = np.flip(array, axis)
        affine = affine @ _flip_matrix(axis, image.shape[axis])
    permutation = np.eye(4)[list(order) + [3]].T  # new voxel axis j is old axis order[j]
    return nib.Nifti1Image(np.transpose(array, order).copy(), affine @ permutation)


def _flip_matrix(axis: int, size: int) -> np.ndarray:
    flip = np.eye(4)
    flip[axis, axis], flip[axis, 3] = -1, size - 1
    return flip


def _resampled(image: nib.Nifti1Image, zooms: tuple[float, float, float], order: int) -> nib.Nifti1Image:
    """``image`` on a grid of ``zooms`` mm in RAS order, resampled by nibabel here, apart from the code under test."""
    extent = np.abs(np.diag(image.affine)[:3]) * np.array(image.shape)
    shape = tuple(int(n) for n in np.floor(extent / zooms))
    corner = image.affine @ np.array([image.shape[0] - 1, image.shape[1] - 1, 0, 1.0])
    affine = np.diag(list(zooms) + [1.0])
    affine[:3, 3] = corner[:3]
    return resample_from_to(image, (shape, affine), order=order)


GEOMETRIES = {  # name -> transform of an image (BraTS: LPS, 1 mm)
    "BraTS LPS 1 mm": lambda image, order: image,
    "RAS (x and y flipped)": lambda image, order: _reoriented(image, (0, 1), (0, 1, 2)),
    "permuted axes (z, x, y)": lambda image, order: _reoriented(image, (), (2, 0, 1)),
    "0.9 mm isotropic, RAS": lambda image, order: _resampled(image, (0.9, 0.9, 0.9), order),
    "1.2 x 1.2 x 3 mm, RAS": lambda image, order: _resampled(image, (1.2, 1.2, 3.0), order),
}
# Dice against the transformed truth may fall this far below the same network's Dice through the cache
# (written back on the original grid): little where voxels are only flipped or swapped (the cache holds
# float16), more where thick slices must be interpolated.
# Measured: 0.886 through the cache; 0.886 as stored, mirrored and swapped; 0.884 at 0.9 mm; 0.873 at 3 mm.
TOLERANCE = {"BraTS LPS 1 mm": 0.005, "RAS (x and y flipped)": 0.005, "permuted axes (z, x, y)": 0.005,
             "0.9 mm isotropic, RAS": 0.02, "1.2 x 1.2 x 3 mm, RAS": 0.04}


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_a_scan_in_another_geometry_comes_back_on_its_own_grid_and_aligned(
        geometry, case, flair_network, tmp_path):
    flair, truth = GEOMETRIES[geometry](case["flair"], 1), GEOMETRIES[geometry](case["seg"], 0)
    nib.save(flair, tmp_path / "flair.nii.gz")
    out = scans.segment_scan(flair_network, {"flair": tmp_path / "flair.nii.gz"}, tmp_path / "seg.nii.gz")
    written = nib.load(out)
    assert written.shape == flair.shape and np.allclose(written.affine, flair.affine)
    assert written.get_data_dtype() == np.uint8
    dice = dice_coefficient(np.asarray(written.dataobj) > 0, np.asarray(truth.dataobj) > 0)
    assert case["cache_path_dice"] > 0.5  # the bright-FLAIR network does find this tumour
    assert dice >= case["cache_path_dice"] - TOLERANCE[geometry], (geometry, dice, case["cache_path_dice"])
    print(f"{geometry}: Dice {dice:.3f}, cache path {case['cache_path_dice']:.3f}")


def test_flips_and_swaps_move_the_labels_with_the_voxels(case, flair_network, tmp_path):
    nib.save(case["flair"], tmp_path / "brats.nii.gz")
    brats = np.asarray(nib.load(scans.segment_scan(flair_network, {"flair": tmp_path / "brats.nii.gz"},
                                                   tmp_path / "brats_seg.nii.gz")).dataobj)
    flipped = _reoriented(case["flair"], (0, 1), (2, 0, 1))
    nib.save(flipped, tmp_path / "other.nii.gz")
    other = scans.segment_scan(flair_network, {"flair": tmp_path / "other.nii.gz"}, tmp_path / "other_seg.nii.gz")
    expected = np.transpose(np.flip(brats, (0, 1)), (2, 0, 1))
    np.testing.assert_array_equal(np.asarray(nib.load(other).dataobj), expected)


def test_training_grid_of_a_brats_scan_is_the_scan_itself(case):
    grid, shape = scans.training_grid(case["flair"].affine, case["flair"].shape)
    assert shape == case["flair"].shape and np.allclose(grid, case["flair"].affine)
    assert nib.aff2axcodes(grid) == scans.TRAINING_AXES


def _write(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def test_bad_input_is_refused_in_one_line_naming_the_file(case, flair_network, tmp_path):
    flair = np.asarray(case["flair"].dataobj).astype(np.float32)
    good = _write(tmp_path / "good.nii.gz", flair, case["flair"].affine)
    nan = flair.copy()
    nan[100, 100, 70] = np.nan
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti file")
    cases = [  # (images, the file or thing the message must name, words it must contain)
        ({"flair": _write(tmp_path / "4d.nii.gz", np.stack([flair, flair], -1))}, "4d.nii.gz", "4D"),
        ({"flair": _write(tmp_path / "nan.nii.gz", nan, case["flair"].affine)}, "nan.nii.gz", "NaN"),
        ({"flair": garbage}, "garbage.nii.gz", "cannot be read"),
        ({"t2": good}, "flair", "not given"),
    ]
    for images, named, words in cases:
        with pytest.raises(scans.ScanError, match=words) as raised:
            scans.segment_scan(flair_network, images, tmp_path / "never.nii.gz")
        assert named in str(raised.value) and "\n" not in str(raised.value)
    network = scans.Network(scans.load_network(flair_network).model, ("flair", "t2"), 4)
    shifted = _write(tmp_path / "t2.nii.gz", flair[:-1], case["flair"].affine)
    with pytest.raises(scans.ScanError, match="not on the grid of"):
        scans.segment_scan(network, {"flair": good, "t2": shifted}, tmp_path / "never.nii.gz")
    assert not (tmp_path / "never.nii.gz").exists()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(scans.ScanError, match="unfinished: holds no finished network"):
        scans.load_network(unfinished)


def test_mirroring_ensembles_and_the_probability_map_keep_the_labels_in_place(case, flair_network, tmp_path):
    nib.save(case["flair"], tmp_path / "flair.nii.gz")
    images = {"flair": tmp_path / "flair.nii.gz"}
    plain = np.asarray(nib.load(scans.segment_scan(flair_network, images, tmp_path / "plain.nii.gz")).dataobj)
    # The network looks at one voxel, so every flip gives the same answer once flipped back: a flip
    # left undone would move the labels of this lopsided scan.
    mirrored = scans.segment_scan(flair_network, images, tmp_path / "mirrored.nii.gz", mirror=True,
                                  probabilities_path=tmp_path / "probabilities.nii.gz")
    assert np.array_equal(np.asarray(nib.load(mirrored).dataobj), plain) and plain.any()
    twice = scans.segment_scan([flair_network, flair_network], images, tmp_path / "ensemble.nii.gz")
    assert np.array_equal(np.asarray(nib.load(twice).dataobj), plain)  # the mean of two equal networks
    probabilities = nib.load(tmp_path / "probabilities.nii.gz")
    assert probabilities.shape == case["flair"].shape + (1,) and probabilities.get_data_dtype() == np.float32
    values = np.asarray(probabilities.dataobj)
    assert 0 <= values.min() and values.max() <= 1 and np.allclose(probabilities.affine, case["flair"].affine)
    assert np.array_equal(values[..., 0] > 0.5, plain > 0)  # BraTS's own grid: the labels are the thresholded map
    two_channels = scans.Network(scans.load_network(flair_network).model, ("flair", "t2"), 4)
    with pytest.raises(scans.ScanError, match="the networks of an ensemble must take the same modalities"):
        scans.segment_scan([flair_network, two_channels], images, tmp_path / "never.nii.gz")


def test_a_blank_modality_beside_good_ones_is_refused_by_name(case, flair_network, tmp_path):
    flair = np.asarray(case["flair"].dataobj).astype(np.float32)
    network = scans.Network(scans.load_network(flair_network).model, ("flair", "t2"), 4)
    images = {"flair": _write(tmp_path / "flair.nii.gz", flair, case["flair"].affine),
              "t2": _write(tmp_path / "blank_t2.nii.gz", np.zeros_like(flair), case["flair"].affine)}
    with pytest.raises(scans.ScanError, match=r"blank_t2\.nii\.gz: every voxel is zero; a blank t2 image"):
        scans.segment_scan(network, images, tmp_path / "never.nii.gz")
    assert not (tmp_path / "never.nii.gz").exists()


@pytest.mark.parametrize("suffix, holds", [(".nii", 352 + 64), (".nii.gz", None)])
def test_a_header_that_claims_more_than_its_file_holds_is_refused_before_reading(tmp_path, suffix, holds):
    # shape: a header claiming 4000^3 float32 voxels (256 GB) over 64 bytes of data
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 64  # the header, its 4-byte extension flag, a little data
    path = tmp_path / f"huge{suffix}"
    if suffix.endswith(".gz"):
        import gzip
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    size = path.stat().st_size
    holds = size * 1032 if holds is None else size  # deflate unpacks to at most ~1032 times its size
    with pytest.raises(scans.ScanError) as raised:
        scans.read_scan({"flair": path})
    message = str(raised.value)
    assert message.startswith(f"{path}: its header claims 4000 × 4000 × 4000 float32 voxels (256,000,000,000 bytes)")
    assert f"the {size:,}-byte file holds at most {holds:,}" in message and "\n" not in message


def test_a_scan_with_its_skull_gets_a_warning(case, flair_network, tmp_path):
    flair = np.asarray(case["flair"].dataobj).astype(np.float32)
    head = np.where(flair == 0, 30.0, flair)  # background and skull no longer zero
    path = _write(tmp_path / "head.nii.gz", head, case["flair"].affine)
    with pytest.warns(scans.ScanWarning, match="head.nii.gz: does not look skull-stripped"):
        scans.segment_scan(flair_network, {"flair": path}, tmp_path / "seg.nii.gz")


@OWN_PROCESS
def test_the_command_segments_a_scan_and_reports_bad_input(case, flair_network, tmp_path):
    nib.save(case["flair"], tmp_path / "flair.nii.gz")
    command = [sys.executable, str(REPO / "data_scripts" / "segment_scan.py"), "--model", str(flair_network),
               "--out", str(tmp_path / "seg.nii.gz")]
    done = subprocess.run(command + ["--flair", str(tmp_path / "flair.nii.gz")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote" in done.stdout and nib.load(tmp_path / "seg.nii.gz").shape == case["flair"].shape
    both = subprocess.run(command + ["--flair", str(tmp_path / "flair.nii.gz"), "--model", str(flair_network),
                                     "--tta", "--probabilities", str(tmp_path / "p.nii.gz")],
                          capture_output=True, text=True, timeout=300)
    assert both.returncode == 0 and both.stdout.count("network: ") == 2, both.stderr[-2000:]
    assert nib.load(tmp_path / "p.nii.gz").shape == case["flair"].shape + (1,)
    refused = subprocess.run(command + ["--t2", str(tmp_path / "flair.nii.gz")], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: the network needs")


@OWN_PROCESS
def test_the_module_imports_without_keras():
    # CONTRIBUTING.md's light-import promise: only load_network starts Keras.
    code = "import sys; from tutorial_lib import scans; assert 'keras' not in sys.modules, sorted(sys.modules)[:5]"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.fixture()
def small_scan(tmp_path) -> tuple[scans.Network, Path]:
    """A small FLAIR scan and a network that marks its bright voxels: enough to reach the writing of the labels."""
    from conftest import tiny_volumes

    images, _, affine = tiny_volumes(seed=2)
    nib.save(nib.Nifti1Image(images["flair"], affine), tmp_path / "flair.nii.gz")
    inputs = keras.Input((None, None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv3D(1, 1, activation="sigmoid")(inputs))
    model.layers[-1].set_weights([np.full((1, 1, 1, 1, 1), 8.0, "float32"), np.array([-12.0], "float32")])
    return scans.Network(model, ("flair",), 4), tmp_path / "flair.nii.gz"


def _full_disk_for_nifti(monkeypatch) -> None:
    """``nibabel.save`` as on a full disk: part of the file, then ENOSPC (what gzip's write raises)."""
    def torn(image, filename):
        Path(filename).write_bytes(b"\x1f\x8b" + bytes(100))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", torn)


def test_a_full_disk_says_so_and_writes_nothing(small_scan, tmp_path, monkeypatch):
    from test_files import needed_bytes

    network, flair = small_scan
    out = tmp_path / "out" / "seg.nii.gz"
    out.parent.mkdir()
    _full_disk_for_nifti(monkeypatch)
    with pytest.raises(scans.DiskFullError) as caught:
        scans.segment_scan(network, {"flair": flair}, out)
    message = str(caught.value)
    assert caught.value.errno == 28 and isinstance(caught.value, OSError)
    assert message.startswith(f"the disk holding {out.parent} is full: ")
    assert message.endswith(" needed for seg.nii.gz; free space there or write the labels to another disk")
    assert list(out.parent.iterdir()) == []  # neither the labels nor a temporary
    monkeypatch.undo()  # space freed
    written = scans.segment_scan(network, {"flair": flair}, out).stat().st_size
    assert written / 2 <= needed_bytes(message) <= written * 2  # "about": the estimate is the file's size


def test_the_command_reports_a_full_disk_in_one_line(small_scan, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "data_scripts"))
    import segment_scan

    network, flair = small_scan
    monkeypatch.setattr(scans, "load_network", lambda path, downsample=None: network)
    _full_disk_for_nifti(monkeypatch)
    status = segment_scan.main(["--model", str(tmp_path), "--flair", str(flair), "--out", str(tmp_path / "seg.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err[-1].startswith(f"error: the disk holding {tmp_path} is full: "), err
    assert not (tmp_path / "seg.nii.gz").exists()
