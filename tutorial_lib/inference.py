"""Predict whole cases and write them back as BraTS-style NIfTI files.

Prediction works on the cache grid (cropped, padded, possibly down-sampled;
see ``CONTRIBUTING.md``), either on the full volume at once or, when memory
is short, on overlapping patches whose predictions are blended.
:func:`write_segmentation` then undoes down-sampling, depth padding and the
crop, and writes a ``uint8`` label map on the original 240 x 240 x 155 grid
with the source affine, ready for the official BraTS evaluation.

Label convention of the written file (values from ``config.BRATS``):

* one output channel (whole tumour only) is written as the label that
  belongs to WT but not to TC, i.e. edema (2), so an evaluator scores WT
  correctly and reads TC and ET as "nothing predicted";
* three output channels (WT, TC, ET, in ``BRATS.regions`` order) are nested
  back into labels: WT -> edema (2), then TC -> necrotic/non-enhancing
  core (1), then ET -> enhancing tumour (4), each overwriting the previous.

Volumes are channels-last: an image is ``(x, y, z, channels)`` and the
probabilities ``(x, y, z, K)``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tutorial_lib._files import atomic_path, write_json_atomic
from tutorial_lib.config import BRATS
from tutorial_lib.data import load_brain, load_case
from tutorial_lib.metrics import case_table, dice_coefficient, lesion_table, region_masks

__all__ = [
    "CasePrediction", "downsampling_factor", "predict_volume", "predict_volume_2d", "predict_case", "case_dice",
    "score_run", "evaluate_run", "predict_masks", "predict_probabilities",
    "regions_to_labels", "labels_on_original_grid", "probabilities_on_original_grid", "save_volume",
    "write_segmentation", "MIRRORINGS", "mirror_average", "predict_image", "PackedMasks",
]


def _gaussian_weights(patch_size: Sequence[int], sigma_fraction: float = 0.125) -> np.ndarray:
    """Patch weights peaking at the centre, where a patch sees the most context."""
    axes = []
    for size in patch_size:
        coordinates = np.arange(size) - (size - 1) / 2.0
        axes.append(np.exp(-0.5 * (coordinates / max(size * sigma_fraction, 1e-6)) ** 2))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weights /= weights.max()
    # Corners must keep some weight or voxels covered only there divide by ~0.
    return np.maximum(weights, 1e-3).astype(np.float32)


def _window_starts(length: int, patch: int, step: int) -> list[int]:
    starts = list(range(0, length - patch + 1, step))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def _pad_to(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    padding = [(0, max(target - size, 0)) for size, target in zip(image.shape[:3], shape)]
    return np.pad(image, padding + [(0, 0)]) if any(after for _, after in padding) else image


def _predict_batches(model: Any, patches: np.ndarray, batch_size: int) -> np.ndarray:
    """Predict in batches of exactly ``batch_size`` (the last one zero-filled).

    A constant batch shape lets JAX and XLA compile the model once.
    """
    outputs = []
    for start in range(0, len(patches), batch_size):
        batch = patches[start : start + batch_size]
        missing = batch_size - len(batch)
        if missing:
            batch = np.concatenate([batch, np.zeros((missing,) + batch.shape[1:], batch.dtype)])
        prediction = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
        outputs.append(prediction[: len(prediction) - missing])
    return np.concatenate(outputs)


def _check_volume_arguments(image: np.ndarray, patch_size: Any, overlap: float, batch_size: int) -> None:
    if image.ndim != 4:
        raise ValueError(f"image must be (x, y, z, channels), got shape {image.shape}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if patch_size is not None and (len(patch_size) != 3 or min(patch_size) < 1):
        raise ValueError(f"patch_size must be three positive sizes (x, y, z), got {patch_size}")


def downsampling_factor(model: Any) -> int:
    """How many times the model's poolings shrink the first spatial axis: a side must be a multiple of it.

    A U-Net of ``levels`` levels pools ``levels - 1`` times by 2, so its input
    sides must divide by ``2 ** (levels - 1)``. A callable without layers gives 1.

    Examples
    --------
    >>> from tutorial_lib import models
    >>> downsampling_factor(models.unet((16, 16, 16, 1), filters=(2, 4, 8)))
    4
    """
    factor = 1
    for layer in getattr(model, "layers", ()):
        if "Pooling" in type(layer).__name__ and hasattr(layer, "strides"):
            factor *= int(layer.strides[0])
    return factor


def predict_volume(
    model: Any,
    image: np.ndarray,
    *,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    batch_size: int = 1,
    blending: str = "gaussian",
    pad_multiple: int | None = None,
) -> np.ndarray:
    """Probabilities for one volume, whole or by overlapping sliding windows.

    Parameters
    ----------
    model : keras.Model
        Maps ``(batch, x, y, z, C)`` to ``(batch, x, y, z, K)`` probabilities.
    image : numpy.ndarray
        One volume, shape ``(x, y, z, C)``.
    patch_size : tuple of int, optional
        ``(px, py, pz)`` window for sliding-window prediction; ``None``
        predicts the whole volume in one call. A volume smaller than the
        window is zero-padded.
    overlap : float, optional
        Fraction of a window shared with its neighbour along each axis.
    batch_size : int, optional
        Windows per model call.
    blending : {"gaussian", "uniform"}, optional
        Weighting of overlapping windows: Gaussian trusts window centres,
        which see more context, over their borders.
    pad_multiple : int, optional
        Zero-pad each spatial axis of the (whole) volume to a multiple of
        this, then crop the output back; ``None``: what the model's poolings
        need (:func:`downsampling_factor`, ``2 ** (levels - 1)`` for a U-Net).

    Returns
    -------
    numpy.ndarray
        float32 probabilities, shape ``(x, y, z, K)``.

    Raises
    ------
    ValueError
        For a wrongly shaped image or invalid options.

    Examples
    --------
    >>> probabilities = predict_volume(model, image, patch_size=(32, 32, 32))  # doctest: +SKIP
    """
    image = np.asarray(image, dtype=np.float32)
    _check_volume_arguments(image, patch_size, overlap, batch_size)
    if blending not in ("gaussian", "uniform"):
        raise ValueError(f"blending must be 'gaussian' or 'uniform', got {blending!r}")
    shape = image.shape[:3]
    if patch_size is None:
        pad_multiple = downsampling_factor(model) if pad_multiple is None else pad_multiple
        padded_shape = [-(-size // pad_multiple) * pad_multiple for size in shape]
        output = _predict_batches(model, _pad_to(image, padded_shape)[None], 1)[0]
        return output[: shape[0], : shape[1], : shape[2]]
    return _sliding_window(model, image, tuple(patch_size), overlap, batch_size, blending)


def predict_volume_2d(
    model: Any, image: np.ndarray, *, brain: np.ndarray | None = None, batch_size: int = 16
) -> np.ndarray:
    """Probabilities for one volume from a 2D network, axial slice by axial slice.

    Parameters
    ----------
    model : keras.Model
        Maps ``(batch, x, y, C)`` slices to ``(batch, x, y, K)`` probabilities.
    image : numpy.ndarray
        One volume, shape ``(x, y, z, C)``.
    brain : numpy.ndarray, optional
        Boolean ``(x, y, z)`` brain mask; probabilities outside it are set to
        0, since a slice-wise network has no notion of where the head ends.
    batch_size : int, optional
        Slices per model call.

    Returns
    -------
    numpy.ndarray
        float32 probabilities, shape ``(x, y, z, K)``: the slices stacked back.

    Raises
    ------
    ValueError
        For a wrongly shaped image or brain mask.

    Examples
    --------
    >>> probabilities = predict_volume_2d(model_2d, image)  # doctest: +SKIP
    """
    image = np.asarray(image, dtype=np.float32)
    _check_volume_arguments(image, None, 0.0, batch_size)
    if brain is not None and brain.shape != image.shape[:3]:
        raise ValueError(f"brain mask shape {brain.shape} != image grid {image.shape[:3]}")
    slices = np.moveaxis(image, 2, 0)  # (z, x, y, C): the slices become the batch
    probabilities = np.moveaxis(_predict_batches(model, slices, batch_size), 0, 2)
    return probabilities if brain is None else probabilities * brain[..., None]


def _sliding_window(
    model: Any, image: np.ndarray, patch_size: tuple[int, ...], overlap: float, batch_size: int, blending: str
) -> np.ndarray:
    """Blend overlapping window predictions, weighting each voxel by ``blending``."""
    shape = image.shape[:3]
    padded = _pad_to(image, patch_size)
    steps = [max(1, int(round(size * (1 - overlap)))) for size in patch_size]
    corners = [
        (x, y, z)
        for x in _window_starts(padded.shape[0], patch_size[0], steps[0])
        for y in _window_starts(padded.shape[1], patch_size[1], steps[1])
        for z in _window_starts(padded.shape[2], patch_size[2], steps[2])
    ]
    weights = _gaussian_weights(patch_size) if blending == "gaussian" else np.ones(patch_size, np.float32)
    total, weight_sum = None, np.zeros(padded.shape[:3], np.float32)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch_size)) for corner in chunk]
        predictions = _predict_batches(model, np.stack([padded[w] for w in windows]), batch_size)
        if total is None:
            total = np.zeros(padded.shape[:3] + predictions.shape[-1:], np.float32)
        for window, prediction in zip(windows, predictions):
            total[window] += prediction * weights[..., None]
            weight_sum[window] += weights
    probabilities = total / weight_sum[..., None]
    return probabilities[: shape[0], : shape[1], : shape[2]]


# Every combination of flips along the three spatial axes, no flip included: nnU-Net's test-time mirroring.
MIRRORINGS = tuple(axes for count in range(4) for axes in itertools.combinations(range(3), count))


def mirror_average(predict: Callable[..., np.ndarray], *volumes: np.ndarray) -> np.ndarray:
    """``predict(*volumes)`` averaged over :data:`MIRRORINGS`: the volumes flipped, predicted, flipped back.

    A network that learnt no left from right gives each flip another, equally
    good answer; their mean is test-time mirroring.

    Examples
    --------
    >>> ramp = np.arange(4.0).reshape(4, 1, 1)  # cumsum along x: [0, 1, 3, 6]; flipped, back: [6, 6, 5, 3]
    >>> mirror_average(lambda volume: np.cumsum(volume, axis=0), ramp)[:, 0, 0].tolist()
    [3.0, 3.5, 4.0, 4.5]
    """
    flipped = (np.flip(predict(*(np.ascontiguousarray(np.flip(volume, axes)) for volume in volumes)), axes)
               for axes in MIRRORINGS)
    return sum(prediction.astype(np.float32) for prediction in flipped) / len(MIRRORINGS)


def predict_image(
    model: Any,
    image: np.ndarray,
    *,
    brain: np.ndarray | None = None,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    pad_multiple: int | None = None,
    mirror: bool = False,
) -> np.ndarray:
    """Probabilities ``(x, y, z, K)`` for one prepared volume ``(x, y, z, C)``, from a 2D or a 3D network.

    A 2D network, one whose input is ``(batch, x, y, C)``, predicts slice by
    slice inside ``brain`` (:func:`predict_volume_2d`); a 3D network the whole
    volume or its windows (:func:`predict_volume`, with ``patch_size``,
    ``overlap`` and ``pad_multiple``). ``mirror`` averages the 8 flips of the
    volume (and of ``brain``) through :func:`mirror_average`, at 8 times the work.

    Examples
    --------
    >>> probabilities = predict_image(model, image, mirror=True)  # doctest: +SKIP
    """
    def once(volume: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
        if len(model.input_shape) == 4:
            return predict_volume_2d(model, volume, brain=inside)
        return predict_volume(model, volume, patch_size=patch_size, overlap=overlap, pad_multiple=pad_multiple)

    volumes = (image,) if brain is None else (image, brain)
    return mirror_average(once, *volumes) if mirror else once(*volumes)


@dataclass
class CasePrediction:
    """Prediction of one case on the cache grid.

    Attributes
    ----------
    case_id : str
        The case.
    probabilities : numpy.ndarray
        float32, ``(x, y, z, K)``.
    mask : numpy.ndarray
        bool, ``(x, y, z, K)``: probabilities above the threshold, then post-processed.
    """

    case_id: str
    probabilities: np.ndarray
    mask: np.ndarray


def predict_case(
    model: Any,
    cache_dir: str | os.PathLike,
    case_id: str,
    *,
    modalities: Sequence[str] = ("flair",),
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    threshold: float = 0.5,
    postprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    pad_multiple: int | None = None,
    mirror: bool = False,
) -> CasePrediction:
    """Predict one cached case and binarise (and optionally post-process) it.

    A 3D network predicts the volume (:func:`predict_volume`); a 2D network,
    one whose input is ``(batch, x, y, C)``, predicts it slice by slice
    inside the case's brain mask (:func:`predict_volume_2d`); both through
    :func:`predict_image`.

    Parameters
    ----------
    model : keras.Model
        Trained on the same ``modalities``, channels-last.
    cache_dir : path
        Prepared cache (``<cache_dir>/cases/<case_id>/image.npy``).
    case_id : str
        Case to predict; it needs no label.
    modalities : sequence of str or "all", optional
        Input channels, in the order the model was trained with.
    patch_size, overlap, pad_multiple : optional
        See :func:`predict_volume` (3D networks only).
    threshold : float, optional
        Probabilities above it are foreground.
    postprocess : callable, optional
        Applied to each binary channel ``(x, y, z)``, e.g.
        ``functools.partial(postprocess.remove_small_components, min_voxels=50)``.
    mirror : bool, optional
        Test-time mirroring (:func:`predict_image`).

    Returns
    -------
    CasePrediction
        Probabilities and the final mask, on the cache grid.

    Raises
    ------
    FileNotFoundError
        If the case is not in the cache.
    ValueError
        For an unknown modality.

    Examples
    --------
    >>> result = predict_case(model, cache, "synthetic_000")  # doctest: +SKIP
    >>> result.mask.shape  # doctest: +SKIP
    (48, 48, 40, 1)
    """
    image, _ = load_case(cache_dir, case_id, modalities=modalities, target=None)
    brain = load_brain(cache_dir, case_id) if len(model.input_shape) == 4 else None  # a slice-wise network
    probabilities = predict_image(model, image, brain=brain, patch_size=patch_size, overlap=overlap,
                                  pad_multiple=pad_multiple, mirror=mirror)
    mask = probabilities > threshold
    if postprocess is not None:
        channels = [np.asarray(postprocess(mask[..., k]), dtype=bool) for k in range(mask.shape[-1])]
        mask = np.stack(channels, axis=-1)
    return CasePrediction(case_id=case_id, probabilities=probabilities, mask=mask)


def case_dice(
    model: Any, cache_dir: str | os.PathLike, case_ids: Sequence[str], **predict_options: Any
) -> dict[str, float]:
    """Whole-tumour Dice of the binarised prediction of each case, the study's score.

    Parameters
    ----------
    model : keras.Model
        A 2D or 3D whole-tumour network (one output channel).
    cache_dir : path
        Prepared cache holding labelled ``case_ids``.
    case_ids : sequence of str
        Cases to score.
    **predict_options
        Passed to :func:`predict_case` (``modalities``, ``pad_multiple``,
        ``patch_size``, ``postprocess`` ...).

    Returns
    -------
    dict of str to float
        Dice per case, in the order of ``case_ids``.

    Examples
    --------
    >>> scores = case_dice(model, cache, split["val"])  # doctest: +SKIP
    >>> sum(scores.values()) / len(scores)  # doctest: +SKIP
    """
    scores = {}  # one mask at a time, scored at once: nothing to keep, so nothing to pack
    for case_id in case_ids:
        mask = predict_case(model, cache_dir, case_id, **predict_options).mask[..., 0]
        scores[case_id] = dice_coefficient(mask, load_case(cache_dir, case_id, target="wt")[1][..., 0])
    return scores


def score_run(
    run: Mapping[str, Any] | str | os.PathLike, cache_dir: str | os.PathLike, case_ids: Sequence[str],
    **predict_options: Any,
) -> dict[str, float]:
    """Whole-tumour Dice per case of a finished run's kept (best-validation) network.

    A finished run (one with ``done.json``) keeps its scores in its folder,
    ``scores-<key>.json``, keyed by the cache's :func:`~tutorial_lib.experiments.data_id`,
    the prediction options and the kept network's file: running a chapter again
    reads them back instead of predicting every case again, as it reads its
    trainings back. Options that are not plain data (a post-processing function)
    are scored afresh every time.

    Parameters
    ----------
    run : mapping or path
        The run's configuration (its folder is
        :func:`tutorial_lib.experiments.run_dir`) or the run folder itself.
    cache_dir : path
        Prepared cache holding labelled ``case_ids``: held-out cases, never
        the ones the network chose its epoch on.
    case_ids : sequence of str
        Cases to score.
    **predict_options
        Passed to :func:`predict_case`. ``modalities`` defaults to the
        configuration's ``"modalities"`` (FLAIR where it names none); the
        padding follows from the network (:func:`downsampling_factor`).

    Returns
    -------
    dict of str to float
        Dice per case, in the order of ``case_ids``.

    Examples
    --------
    >>> scores = score_run(config, cache, split["test"])  # doctest: +SKIP
    """
    folder = _run_folder(run, predict_options)
    path, known = _scores_file(folder, cache_dir, predict_options), {}
    if path is not None and path.is_file():
        known = json.loads(path.read_text(encoding="utf-8"))
    missing = [case_id for case_id in case_ids if case_id not in known]
    if missing:
        known.update(case_dice(_network(folder, {}), cache_dir, missing, **predict_options))
        if path is not None:
            write_json_atomic(path, known)
    return {case_id: known[case_id] for case_id in case_ids}


def _run_folder(run: Mapping[str, Any] | str | os.PathLike, options: dict[str, Any]) -> Path:
    """A run's folder, from its configuration (whose ``modalities`` become a default option) or itself."""
    from tutorial_lib import experiments

    if isinstance(run, Mapping):
        options.setdefault("modalities", run.get("modalities", ("flair",)))
        return experiments.run_dir(run)
    return Path(run)


def _network(run: Any, options: dict[str, Any]) -> Any:
    from tutorial_lib import training  # starts the backend; only here

    return run if hasattr(run, "predict") else training.load_best(_run_folder(run, options))


def predict_masks(run: Any, cache_dir: str | os.PathLike, case_ids: Sequence[str],
                  **predict_options: Any) -> PackedMasks:
    """The first channel's binarised prediction of each case, bit-packed.

    ``run`` is a network, or a finished run (configuration or folder) whose kept network predicts.
    """
    model, masks = _network(run, predict_options), PackedMasks()
    for case_id in case_ids:
        masks[case_id] = predict_case(model, cache_dir, case_id, **predict_options).mask[..., 0]
    return masks


def predict_probabilities(run: Any, cache_dir: str | os.PathLike, case_ids: Sequence[str],
                          **predict_options: Any) -> dict[str, np.ndarray]:
    """The first channel's probabilities ``(x, y, z)`` of each case, float32, before any threshold.

    ``run`` is a network, or a finished run (configuration or folder) whose kept
    network predicts; ``predict_options`` go to :func:`predict_case` (``mirror=True``
    for test-time mirroring). The average of several runs' probabilities is
    their ensemble. Every case stays in memory: about 24 MB per full-size case.
    """
    model = _network(run, predict_options)
    return {case_id: predict_case(model, cache_dir, case_id, **predict_options).probabilities[..., 0]
            for case_id in case_ids}


def evaluate_run(run: Mapping[str, Any] | str | os.PathLike, cache_dir: str | os.PathLike,
                 case_ids: Sequence[str], *, spacing: Sequence[float], lesion_wise: bool = False,
                 **predict_options: Any) -> Any:
    """Per case, :func:`tutorial_lib.metrics.case_table`'s scores and each region's voxel counts: a DataFrame.

    A region network's three channels become BraTS labels
    (:func:`regions_to_labels`) and are scored on every region; a
    whole-tumour network on WT. Columns ``voxels_<region>`` and
    ``true_voxels_<region>`` count predicted and true voxels; with
    ``lesion_wise`` the columns of :func:`tutorial_lib.metrics.lesion_table`
    join them. One case at a time: the label volumes of many full-size cases
    would not fit in memory.
    """
    import pandas as pd

    model, rows = _network(run, predict_options), []
    for case_id in case_ids:
        mask = predict_case(model, cache_dir, case_id, **predict_options).mask
        regions = list(BRATS.regions)[: mask.shape[-1]]  # WT, or WT, TC and ET
        labels = {"": regions_to_labels(mask), "true_": load_case(cache_dir, case_id, target="labels")[1]}
        row = case_table([labels[""]], [labels["true_"]], case_ids=[case_id], spacing=spacing, regions=regions,
                         summary=False)
        if lesion_wise:
            row = row.join(lesion_table([labels[""]], [labels["true_"]], case_ids=[case_id], spacing=spacing,
                                        regions=regions))
        rows.append(row.assign(**{f"{whose}voxels_{region}": int(mask_of.sum()) for whose, volume in labels.items()
                                  for region, mask_of in region_masks(volume).items() if region in regions}))
    return pd.concat(rows)


def _scores_file(folder: Path, cache_dir: str | os.PathLike, options: Mapping[str, Any]) -> Path | None:
    """Where a finished run keeps its scores for these cases and options; ``None`` where it cannot."""
    from tutorial_lib import experiments, training

    best = folder / training.BEST_FILE
    if not (folder / training.DONE_FILE).is_file() or not best.is_file():
        return None
    stat = best.stat()  # a network trained again (overwrite=True) is another network: other scores
    try:
        key = experiments.config_hash({"data": experiments.data_id(cache_dir), "options": dict(options),
                                       "network": [stat.st_size, stat.st_mtime_ns]})
    except ValueError:  # an option that is not plain data: nothing to key the scores on
        return None
    return folder / f"scores-{key}.json"


def regions_to_labels(mask: np.ndarray) -> np.ndarray:
    """Turn region masks ``(x, y, z, 1)`` (WT) or ``(x, y, z, 3)`` (WT, TC, ET) into BraTS labels.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean region channels in ``BRATS.regions`` order.

    Returns
    -------
    numpy.ndarray
        uint8 labels ``(x, y, z)``: see the module docstring for the convention.

    Raises
    ------
    ValueError
        If the number of channels is not 1 or 3.

    Examples
    --------
    >>> int(regions_to_labels(np.ones((1, 1, 1, 1), bool))[0, 0, 0])
    2
    """
    names = list(BRATS.regions)  # WT, TC, ET: each one inside the previous
    if mask.ndim != 4 or mask.shape[-1] not in (1, len(names)):
        raise ValueError(f"mask must be (x, y, z, 1) or (x, y, z, {len(names)}), got {mask.shape}")
    labels = np.zeros(mask.shape[:3], np.uint8)
    for index in range(mask.shape[-1]):
        labels[mask[..., index]] = BRATS.region_labels[names[index]]
    return labels


def _upsample(mask: np.ndarray, factor: int) -> np.ndarray:
    """Undo block down-sampling by copying each coarse voxel into its block.

    Nearest-neighbour on purpose: interpolating probabilities first would
    smooth borders but can erase a structure one coarse voxel thick.
    """
    for axis in range(3):
        mask = np.repeat(mask, factor, axis=axis)
    return mask


def _entry_field(entry: Mapping[str, Any], key: str) -> Any:
    if key not in entry:
        raise ValueError(f"manifest entry lacks {key!r}; re-prepare the cache with tutorial_lib.ingest")
    return entry[key]


def _to_original_grid(labels: np.ndarray, entry: Mapping[str, Any]) -> np.ndarray:
    box = _entry_field(entry, "crop_box")
    padding = _entry_field(entry, "padding")
    original = np.zeros(tuple(_entry_field(entry, "original_shape")) + labels.shape[3:], labels.dtype)
    inside = tuple(slice(before, before + stop - start) for (start, stop), (before, _) in zip(box, padding))
    original[tuple(slice(start, stop) for start, stop in box)] = labels[inside]
    return original


def labels_on_original_grid(mask: np.ndarray, entry: Mapping[str, Any]) -> np.ndarray:
    """Region masks ``(x, y, z, K)`` on the cache grid as BraTS labels on the grid the case was prepared from.

    ``entry`` is the case's manifest entry, or the geometry
    :func:`tutorial_lib.ingest.normalise_case` returns for a scan from outside.
    """
    # Labels first: one uint8 volume to up-sample instead of one per region channel.
    labels = _upsample(regions_to_labels(mask), int(_entry_field(entry, "downsample")))
    return _to_original_grid(labels, entry)


def probabilities_on_original_grid(probabilities: np.ndarray, entry: Mapping[str, Any]) -> np.ndarray:
    """Probabilities ``(x, y, z, K)`` on the cache grid, on the grid the case was prepared from (0 outside the crop)."""
    return _to_original_grid(_upsample(probabilities, int(_entry_field(entry, "downsample"))), entry)


def save_volume(volume: np.ndarray, affine: np.ndarray, out_path: Path) -> None:
    """Write a volume (uint8 labels, float32 probabilities) as NIfTI with ``affine`` (qform and sform), atomically."""
    import nibabel as nib

    image = nib.Nifti1Image(volume, affine)
    image.set_data_dtype(volume.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    suffix = "".join(out_path.suffixes) or ".nii.gz"  # nibabel picks compression from the suffix
    with atomic_path(out_path, suffix=suffix) as temporary:
        nib.save(image, temporary)


def write_segmentation(
    probabilities_or_mask: np.ndarray,
    manifest_entry: Mapping[str, Any],
    out_path: str | os.PathLike,
    *,
    threshold: float = 0.5,
) -> Path:
    """Write a cache-grid prediction as a BraTS label NIfTI on the original grid.

    Undoes, in order, the down-sampling (``manifest_entry["downsample"]``),
    the end padding (``"padding"``) and the crop (``"crop_box"``), fills the
    rest of the ``"original_shape"`` grid with background, and writes it with
    the source affine (``"original_affine"``).

    Parameters
    ----------
    probabilities_or_mask : numpy.ndarray
        Cache grid ``(x, y, z)`` or ``(x, y, z, K)`` with K = 1 (WT) or 3
        (WT, TC, ET): float probabilities (thresholded) or a boolean/0-1
        mask. Each coarse voxel becomes a ``downsample``-sized block.
    manifest_entry : mapping
        The case's entry of ``manifest.json`` (``data.load_manifest(cache)["cases"][case_id]``).
    out_path : path
        Output file, normally ``<case_id>.nii.gz``; written atomically.
    threshold : float, optional
        Probability threshold.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    ValueError
        If the array does not match the entry's cache grid, has 2 or more
        than 3 channels, or the entry lacks geometry.

    Examples
    --------
    >>> entry = load_manifest(cache)["cases"]["synthetic_000"]  # doctest: +SKIP
    >>> write_segmentation(result.mask, entry, "out/synthetic_000.nii.gz")  # doctest: +SKIP
    """
    volume = np.asarray(probabilities_or_mask)
    volume = volume[..., None] if volume.ndim == 3 else volume
    grid = tuple(_entry_field(manifest_entry, "shape"))
    if volume.ndim != 4 or volume.shape[:3] != grid:
        raise ValueError(f"prediction shape {volume.shape} does not match the case's cache grid {grid}")
    mask = volume > (threshold if np.issubdtype(volume.dtype, np.floating) else 0)
    labels = labels_on_original_grid(mask, manifest_entry)
    affine = np.asarray(_entry_field(manifest_entry, "original_affine"), dtype=float)
    out = Path(out_path)
    save_volume(labels, affine, out)
    return out


class PackedMasks(MutableMapping):
    """Boolean masks by key (a case ID), held at one bit per voxel.

    A chapter that scores the same held-out cases many times keeps their
    predicted and true masks in memory; as NumPy booleans that is one byte per
    voxel, 5.9 MB per full-size case, and grows with the number of cases. Bit
    packing holds an eighth of it (93 held-out cases of the real data: 69 MB
    instead of 549 MB per set of masks). Reading a mask unpacks a fresh array.

    Raises
    ------
    ValueError
        When a stored mask is not boolean.

    Examples
    --------
    >>> masks = PackedMasks()
    >>> masks["case"] = np.eye(3, dtype=bool)[..., None]
    >>> masks["case"][..., 0].astype(int).tolist(), masks["case"].dtype, len(masks)
    ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype('bool'), 1)
    """

    def __init__(self) -> None:
        self._packed: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}

    def __setitem__(self, key: str, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise ValueError(f"mask {key!r} must be boolean, got dtype {mask.dtype}; compare it with a threshold first")
        self._packed[key] = (np.packbits(mask, axis=None), mask.shape)

    def __getitem__(self, key: str) -> np.ndarray:
        bits, shape = self._packed[key]
        return np.unpackbits(bits, count=math.prod(shape)).reshape(shape).view(bool)

    def __delitem__(self, key: str) -> None:
        del self._packed[key]

    def __iter__(self):
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    @property
    def nbytes(self) -> int:
        """Bytes of the packed bits."""
        return sum(bits.nbytes for bits, _ in self._packed.values())
