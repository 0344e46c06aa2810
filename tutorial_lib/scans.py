"""Segment a scan from outside the course: any orientation and voxel size in, labels on its own grid out.

The course's networks learnt from the prepared cache: voxels in BraTS's
order (the affine of a BraTS file is diag(-1, -1, 1), so the axes run to the
patient's left, posterior and superior: LPS, not nibabel's canonical RAS),
1 mm apart, cropped to 192 x 192 x 160 around the brain, z-scored inside
it and block-averaged by the cache's factor (:mod:`tutorial_lib.ingest`).
A scan from another scanner or another tool rarely comes that way, and a
network shown a flipped or stretched brain fails without saying so.
:func:`segment_scan` therefore

1. reads the scan's modalities (NIfTI, one 3D volume each, on one grid),
2. resamples them onto a 1 mm LPS grid that covers the scan
   (:func:`training_grid`; linear interpolation through each file's affine
   by :func:`nibabel.processing.resample_from_to`, so a rotated or oblique
   scan is handled too),
3. crops, z-scores and down-samples like the cache,
4. predicts (patch by patch for a patch network), and
5. undoes steps 3 and 2 for the labels (nearest neighbour) and writes them
   with the scan's own affine, so they lie over the scan in any viewer.

A scan already in BraTS's space passes steps 2 and 5 unchanged.
Labels follow :mod:`tutorial_lib.inference`: a whole-tumour network writes
edema (2); a region network writes 2, 1 and 4.

``python data_scripts/segment_scan.py --model RUN_DIR --flair scan.nii.gz --out seg.nii.gz``
runs the same from a terminal.
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from tutorial_lib import inference, ingest
from tutorial_lib._files import DiskFullError, full_disk_error
from tutorial_lib.config import BRATS, get_profile

__all__ = ["TRAINING_AXES", "ScanError", "ScanWarning", "Network", "read_scan", "training_grid", "load_network",
           "segment_scan"]

# Axis codes of the training arrays: BraTS's affine diag(-1, -1, 1).
TRAINING_AXES = ("L", "P", "S")
# A skull-stripped brain holds about 1.0-1.8 litres; a head with skull and scalp, well over that.
_BRAIN_LITRES_AT_MOST = 2.5


class ScanError(ValueError):
    """A scan or network that cannot be segmented; the message names the file and the problem."""


class ScanWarning(UserWarning):
    """A scan that can be segmented but probably not well (for example, not skull-stripped)."""


def read_scan(paths: Mapping[str, str | os.PathLike]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read one NIfTI volume per modality; return float32 arrays and their shared affine.

    Raises
    ------
    ScanError
        For an unknown modality, a file that cannot be read, a header that
        claims more voxels than its file holds (refused before any memory is
        asked for), a 4D image, a volume holding NaN or inf, a blank (all-zero)
        volume, or modalities on different grids.

    Examples
    --------
    >>> images, affine = read_scan({"flair": "scan_flair.nii.gz"})  # doctest: +SKIP
    """
    import nibabel as nib

    images, affine, first = {}, None, None
    for modality, path in paths.items():
        if modality not in BRATS.modalities:
            raise ScanError(f"{path}: unknown modality {modality!r}; expected one of {list(BRATS.modalities)}")
        try:
            image = nib.load(str(path))
        except Exception as error:  # noqa: BLE001 - nibabel reports a bad file in many ways
            raise ScanError(f"{path}: cannot be read as NIfTI ({error})") from error
        _check_file_holds_its_voxels(image.header, Path(path))  # before a voxel is read, or memory asked for
        try:
            volume = np.asarray(image.dataobj, dtype=np.float32)
        except Exception as error:  # noqa: BLE001
            raise ScanError(f"{path}: cannot be read as NIfTI ({error})") from error
        if volume.ndim == 4 and volume.shape[3] == 1:
            volume = volume[..., 0]
        if volume.ndim != 3:
            raise ScanError(f"{path}: a {volume.ndim}D image of shape {volume.shape}; give one 3D volume per modality")
        bad = int(np.count_nonzero(~np.isfinite(volume)))
        if bad:
            raise ScanError(f"{path}: {bad} voxel(s) are NaN or infinite; fix or mask them first")
        if not volume.any():
            raise ScanError(f"{path}: every voxel is zero; a blank {modality} image cannot be segmented "
                            "(was it exported empty, or is it the wrong file?)")
        if affine is None:
            affine, first = image.affine, path
        elif volume.shape != next(iter(images.values())).shape or not np.allclose(image.affine, affine, atol=1e-3):
            raise ScanError(f"{path}: not on the grid of {first} (shape {volume.shape} vs "
                            f"{next(iter(images.values())).shape}, or another affine); register the modalities first")
        images[modality] = volume
    if not images:
        raise ScanError("no image given: pass at least the modalities the network needs")
    return images, np.asarray(affine, dtype=float)


def training_grid(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The 1 mm grid in :data:`TRAINING_AXES` order that covers a volume of ``shape`` with ``affine``.

    Examples
    --------
    >>> brats = np.diag([-1.0, -1.0, 1.0, 1.0]); brats[:3, 3] = (239, 239, 0)
    >>> grid, shape = training_grid(brats, (240, 240, 155))
    >>> np.array_equal(grid, brats), shape
    (True, (240, 240, 155))
    >>> training_grid(np.diag([1.2, 1.2, 3.0, 1.0]), (10, 10, 4))[1]   # RAS; centres span 10.8 x 10.8 x 9 mm
    (11, 11, 10)
    """
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)])
    world = (affine @ corners.T)[:3].T
    low, high = world.min(axis=0), world.max(axis=0)
    # L and P axes run against RAS world x and y, so voxel 0 sits at their high end.
    grid = np.diag([-1.0, -1.0, 1.0, 1.0])
    grid[:3, 3] = (high[0], high[1], low[2])
    size = tuple(int(n) for n in np.floor(high - low + 1e-3).astype(int) + 1)
    return grid, size


# Deflate packs at most about 1032 bytes into one: a .nii.gz cannot unpack to more than that many times its size.
_DEFLATE_MAX_RATIO = 1032


def _check_file_holds_its_voxels(header: Any, path: Path) -> None:
    """Refuse a header that claims more voxels than its file can hold (a damaged or hostile header)."""
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    size = path.stat().st_size
    holds = size * _DEFLATE_MAX_RATIO if path.name.endswith(".gz") else size
    if claimed + int(header.get_data_offset()) > holds:
        raise ScanError(f"{path}: its header claims {' × '.join(map(str, shape))} {dtype} voxels ({claimed:,} bytes) "
                        f"but the {size:,}-byte file holds at most {holds:,}; the header is damaged or the file "
                        "cut short")


class Network:
    """A trained network and what its inputs must look like.

    Attributes
    ----------
    model : keras.Model
    modalities : tuple of str
        Input channels, in order.
    downsample : int
        The cache's block factor the network was trained at.
    patch_shape : tuple of int or None
        Patch size for patch networks (sliding window), None for whole volumes.
    """

    def __init__(self, model: Any, modalities: tuple[str, ...], downsample: int, patch_shape: Any = None):
        self.model, self.modalities, self.downsample = model, tuple(modalities), int(downsample)
        self.patch_shape = None if patch_shape is None else tuple(patch_shape)


def load_network(path: str | os.PathLike, *, downsample: int | None = None,
                 modalities: tuple[str, ...] | None = None) -> Network:
    """Load a finished run folder's best network (or a ``.keras`` file) in Keras's safe mode.

    A run folder of :func:`tutorial_lib.experiments.cached_run` records its
    configuration, which gives the modalities, the patch shape and, through
    its profile, the down-sampling factor. For anything else pass
    ``downsample`` (and ``modalities`` unless the network takes 1 channel,
    FLAIR, or 4, all of them).

    Raises
    ------
    ScanError
        If the folder holds no finished network, the file cannot be loaded
        safely, or the inputs cannot be worked out.
    """
    import keras

    from tutorial_lib import losses, models, training  # noqa: F401 - registers the course's layers and losses

    path = Path(path)
    config: dict[str, Any] = {}
    if path.is_dir():
        if not (path / training.DONE_FILE).is_file() or not (path / training.BEST_FILE).is_file():
            raise ScanError(f"{path}: holds no finished network (no {training.DONE_FILE} and "
                            f"{training.BEST_FILE}); finish its training first")
        record = path / "record.json"
        config = json.loads(record.read_text())["config"] if record.is_file() else {}
        file = path / training.BEST_FILE
    else:
        file = path
    try:
        model = keras.saving.load_model(file, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - a missing file, a damaged zip or unsafe code
        raise ScanError(f"{file}: cannot be loaded as a Keras network in safe mode ({error})") from error
    channels = int(model.input_shape[-1])
    if modalities is None:
        named = config.get("modalities", "all" if channels == len(BRATS.modalities) else ("flair",))
        modalities = tuple(BRATS.modalities) if named == "all" else tuple(named)
    if len(modalities) != channels:
        raise ScanError(f"{file}: the network takes {channels} channel(s), not {list(modalities)}; "
                        "say which modalities with `modalities`")
    if downsample is None:
        if "profile" not in config:
            raise ScanError(f"{file}: no run record says how the cache was down-sampled; pass `downsample`")
        downsample = int(get_profile(config["profile"], "data")["downsample"])
    return Network(model, modalities, downsample, config.get("patch_shape"))


def _check_skull_stripped(volume: np.ndarray, affine: np.ndarray, path: Any) -> None:
    litres = np.count_nonzero(volume) * abs(np.linalg.det(affine[:3, :3])) / 1e6
    border = np.concatenate([face.ravel() for axis in range(3) for face in (np.take(volume, 0, axis),
                                                                             np.take(volume, -1, axis))])
    if litres > _BRAIN_LITRES_AT_MOST or np.count_nonzero(border) > 0.2 * border.size:
        warnings.warn(f"{path}: does not look skull-stripped ({litres:.1f} litres of non-zero voxels, "
                      f"{np.count_nonzero(border) / border.size:.0%} of the border); the networks learnt on "
                      "skull-stripped BraTS scans, so strip the skull first (e.g. with SynthStrip or HD-BET)",
                      ScanWarning, stacklevel=3)


def segment_scan(network: Network | str | os.PathLike | Sequence[Network | str | os.PathLike],
                 images: Mapping[str, str | os.PathLike], out_path: str | os.PathLike, *, threshold: float = 0.5,
                 overlap: float = 0.5, mirror: bool = False,
                 probabilities_path: str | os.PathLike | None = None) -> Path:
    """Segment one scan with a trained network and write BraTS labels on the scan's own grid.

    Parameters
    ----------
    network : Network or path, or a sequence of them
        From :func:`load_network`, or a finished run folder; several (seeds of
        one configuration) are an ensemble: their probabilities are averaged.
    images : mapping of str to path
        Modality name (``"flair"``, ``"t1"``, ``"t1ce"``, ``"t2"``) -> NIfTI
        file; at least the network's modalities, all on one grid, in any
        orientation and voxel size.
    out_path : path
        Label file to write (``.nii.gz``), atomically; same shape and affine
        as the scan.
    threshold, overlap : float, optional
        Probability threshold; overlap of the sliding window (patch networks).
    mirror : bool, optional
        Test-time mirroring: average over the 8 flips of the volume's axes
        (:func:`tutorial_lib.inference.mirror_average`), 8 times the work.
    probabilities_path : path, optional
        Also write the (averaged) probabilities there, float32, one channel
        per output (WT, or WT, TC and ET), on the scan's grid.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    ScanError
        For bad input (see :func:`read_scan`, :func:`load_network`) or a
        modality the network needs but was not given.
    DiskFullError
        If the disk holding ``out_path`` is full (an ``OSError``); nothing is
        written then.

    Examples
    --------
    >>> segment_scan("data/runs/patch_unet-0123", {"flair": "my_flair.nii.gz"}, "my_seg.nii.gz")  # doctest: +SKIP
    """
    networks = [item if isinstance(item, Network) else load_network(item)
                for item in (network if isinstance(network, (list, tuple)) else [network])]
    network = networks[0]
    if any((other.modalities, other.downsample) != (network.modalities, network.downsample) for other in networks):
        raise ScanError("the networks of an ensemble must take the same modalities at the same down-sampling, got "
                        + "; ".join(f"{list(other.modalities)} at {other.downsample}" for other in networks))
    missing = [m for m in network.modalities if m not in images]
    if missing:
        raise ScanError(f"the network needs {list(network.modalities)} but was not given {missing}")
    scan, affine = read_scan({m: images[m] for m in network.modalities})
    reference = next(iter(scan.values()))
    _check_skull_stripped(reference, affine, images[network.modalities[0]])
    grid, grid_shape = training_grid(affine, reference.shape)
    resampled = {m: np.asarray(resample_from_to(nib.Nifti1Image(volume, affine), (grid_shape, grid), order=1,
                                                mode="constant", cval=0.0).dataobj) for m, volume in scan.items()}
    brain = np.logical_or.reduce([volume != 0 for volume in resampled.values()])
    if not brain.any():
        raise ScanError(f"{images[network.modalities[0]]}: every voxel is zero in every modality")
    image, brain, geometry, _ = ingest.normalise_case(resampled, brain, network.modalities, network.downsample)
    probabilities = sum(inference.predict_image(member.model, image, brain=brain, patch_size=member.patch_shape,
                                                overlap=overlap, mirror=mirror) for member in networks)
    probabilities /= len(networks)
    labels = inference.labels_on_original_grid(probabilities > threshold, geometry)
    labels = np.asarray(resample_from_to(nib.Nifti1Image(labels, grid), (reference.shape, affine), order=0,
                                         mode="constant", cval=0.0).dataobj, np.uint8)
    if probabilities_path is not None:
        on_grid = inference.probabilities_on_original_grid(probabilities, geometry)
        on_scan = [np.asarray(resample_from_to(nib.Nifti1Image(channel, grid), (reference.shape, affine), order=1,
                                               mode="constant").dataobj, np.float32)
                   for channel in np.moveaxis(on_grid, -1, 0)]
        inference.save_volume(np.stack(on_scan, axis=-1), affine, Path(probabilities_path))
    out = Path(out_path)
    try:
        inference.save_volume(labels, affine, out)
    except DiskFullError as error:
        # About what the file takes: the labels (gzip-compressed for .nii.gz) after a 352-byte header.
        size = len(zlib.compress(labels.tobytes(), 6)) if out.name.endswith(".gz") else labels.nbytes
        raise full_disk_error(error, out.parent, needed=size + 352, purpose=out.name,
                              hint="free space there or write the labels to another disk") from error
    return out
