"""Training-time data augmentation of 3D patches: random geometry and random scanner looks.

Why augment? A network trained on the scans of one scanner (or, in this
course, of one synthetic generator) learns whatever separates tumour from
brain *in those scans*, exact contrasts included: "edema is FLAIR z-score 2.1
here". A scan from another site, with another field strength, bias field,
noise level or slice thickness, moves those numbers and the network's Dice
drops, although a radiologist sees the same tumour. Randomising what should
not matter while training (the pose of the head, the brightness, contrast and
gamma of each sequence, noise, blur, a smooth bias field, thick slices) takes
those shortcuts away and leaves the shape and the relative contrasts to learn.

The reference is nnU-Net's default training augmentation (Isensee et al.,
*Nature Methods* 18, 2021: mirroring, rotation, scaling, Gaussian noise and
blur, multiplicative brightness, contrast, simulated low resolution, gamma),
which this module follows with the probabilities of its defaults; the
smooth multiplicative bias field is taken from SynthSeg-style domain
randomisation (Billot et al., *Medical Image Analysis* 86, 2023), which goes
further and randomises the contrasts entirely.

Two functions do the work, both pure NumPy/SciPy and deterministic given a
``numpy.random.Generator``:

* :func:`spatial_patch` cuts a patch out of a whole cached case, rotated,
  scaled and mirrored (labels by nearest neighbour, so they stay BraTS values);
* :func:`intensity` changes the voxel values of a patch, each channel on its
  own, and keeps the background (0 in every channel) at 0.

:class:`tutorial_lib.datasets.PatchDataset` applies both when given an
:class:`Augmentation`; ``None`` (its default) means no augmentation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["Augmentation", "spatial_patch", "intensity"]

# Fields that must be a pair (low, high): name -> smallest allowed low value and whether it may equal it.
_RANGES: dict[str, tuple[float, bool]] = {
    "scale_range": (0.0, False),
    "brightness_range": (0.0, False),
    "contrast_range": (0.0, False),
    "gamma_range": (0.0, False),
    "blur_sigma_range": (0.0, True),
    "low_resolution_range": (1.0, True),
}
_NON_NEGATIVE = ("rotation_degrees", "noise_sigma", "bias_strength")
_BIAS_CONTROL_POINTS = 3  # per axis: one smooth bump across the patch


@dataclass(frozen=True)
class Augmentation:
    """Probabilities and ranges of the random transforms drawn for each training patch.

    Every probability is per sample (per patch); the intensity transforms are
    drawn again for each channel (sequence), as scanners differ per sequence.
    Ranges are ``(low, high)`` and values are drawn uniformly between them.
    The defaults follow nnU-Net's default training augmentation, except where
    noted:

    * flips: 0.5 per axis, as nnU-Net's mirroring of all three axes;
    * rotation 0.2, up to 15 degrees about each axis, and isotropic scaling
      0.2 in (0.85, 1.15): nnU-Net's probabilities, but half its 30 degrees
      and (0.7, 1.4), because BraTS cases are all registered to one atlas
      (SRI24) at 1 mm, so real heads vary far less in pose and size than in
      the arbitrary datasets nnU-Net is tuned for;
    * brightness 0.15 in (0.75, 1.25) and contrast 0.15 in (0.75, 1.25): nnU-Net's;
    * gamma 0.3 in (0.7, 1.5): nnU-Net's (without its inverted-image gamma);
    * noise 0.1 with a standard deviation up to 0.3 z-score units: nnU-Net's
      (its variance up to 0.1 is a standard deviation up to 0.32);
    * blur 0.1 with sigma in (0.5, 1.0) voxels: nnU-Net's 0.2 per sample times
      0.5 per channel;
    * low resolution 0.125 with a factor in (1, 2): nnU-Net's 0.25 per sample
      times 0.5 per channel, and its zoom (0.5, 1);
    * bias field 0.1 with strength 0.3: not in nnU-Net (BraTS scans are
      bias-corrected, imperfectly); a SynthSeg-style randomisation, mild.

    Parameters
    ----------
    flip_probability : float
        Probability of mirroring the patch, drawn for each of the 3 axes.
    rotation_probability, rotation_degrees : float
        Probability of a rotation, and the largest absolute angle (degrees)
        drawn for each axis.
    scale_probability : float
        Probability of an isotropic scaling.
    scale_range : (float, float)
        Scale factors, positive; above 1 the anatomy appears larger (zoom in).
    brightness_probability, brightness_range
        Multiply a channel by a factor from the range (positive).
    contrast_probability, contrast_range
        Scale a channel around its mean in the brain by a factor from the
        range (positive), clipped to its former minimum and maximum.
    gamma_probability, gamma_range
        Rescale a channel's brain values to [0, 1], raise them to a power from
        the range (positive) and map them back: above 1 darkens, below 1 brightens.
    noise_probability, noise_sigma
        Add Gaussian noise whose standard deviation is drawn up to ``noise_sigma``.
    blur_probability, blur_sigma_range
        Gaussian blur with a sigma (voxels, non-negative) from the range.
    bias_probability, bias_strength
        Multiply by ``exp(strength * field)``, ``field`` a standard-normal
        field on a 3 x 3 x 3 grid interpolated smoothly over the patch.
    low_resolution_probability, low_resolution_range
        Down-sample by a factor from the range (at least 1; nearest neighbour)
        and up-sample back (cubic spline), as nnU-Net's SimulateLowResolution.
    low_resolution_z_only : bool
        Down-sample along z only: thick slices, the commonest low resolution
        of clinical scans.

    Raises
    ------
    ValueError
        If a probability is outside [0, 1], a range is not an ordered pair
        within its bounds, or a size is negative; the message names the field.

    Examples
    --------
    >>> Augmentation().rotation_degrees, Augmentation().gamma_range
    (15.0, (0.7, 1.5))
    >>> Augmentation(gamma_range=(1.5, 0.7))
    Traceback (most recent call last):
    ...
    ValueError: gamma_range must be an ordered pair (low, high) with low <= high, got (1.5, 0.7)
    """

    flip_probability: float = 0.5
    rotation_probability: float = 0.2
    rotation_degrees: float = 15.0
    scale_probability: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.15)
    brightness_probability: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_probability: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_probability: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_probability: float = 0.1
    noise_sigma: float = 0.3
    blur_probability: float = 0.1
    blur_sigma_range: tuple[float, float] = (0.5, 1.0)
    bias_probability: float = 0.1
    bias_strength: float = 0.3
    low_resolution_probability: float = 0.125
    low_resolution_range: tuple[float, float] = (1.0, 2.0)
    low_resolution_z_only: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_probability") and not (_is_number(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{field.name} must be a probability in [0, 1], got {value!r}")
            if field.name in _NON_NEGATIVE and not (_is_number(value) and value >= 0):
                raise ValueError(f"{field.name} must be a non-negative number, got {value!r}")
            if field.name in _RANGES:
                object.__setattr__(self, field.name, _checked_range(field.name, value, *_RANGES[field.name]))
        if not isinstance(self.low_resolution_z_only, bool):
            raise ValueError(f"low_resolution_z_only must be True or False, got {self.low_resolution_z_only!r}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Augmentation:
        """Build from a plain mapping (profile settings, a run record); lists are taken as ranges.

        Raises
        ------
        ValueError
            If a key is not a field (the message lists the valid ones) or a value is invalid.

        Examples
        --------
        >>> Augmentation.from_settings({"flip_probability": 0.0, "scale_range": [0.9, 1.1]}).scale_range
        (0.9, 1.1)
        >>> Augmentation.from_settings({"flips": 0.5})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown augmentation settings ['flips']; valid keys are ['bias_probability', ...]
        """
        valid = sorted(field.name for field in dataclasses.fields(cls))
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise ValueError(f"unknown augmentation settings {unknown}; valid keys are {valid}")
        return cls(**dict(settings))

    @classmethod
    def only(cls, **settings: Any) -> Augmentation:
        """Every probability 0 except those given; ranges keep their defaults unless given.

        Examples
        --------
        >>> Augmentation.only(flip_probability=1.0).gamma_probability
        0.0
        """
        off = {field.name: 0.0 for field in dataclasses.fields(cls) if field.name.endswith("_probability")}
        return cls.from_settings({**off, **settings})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_range(name: str, value: Any, lowest: float, inclusive: bool) -> tuple[float, float]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(_is_number(v) for v in pair) or pair[0] > pair[1]:
        raise ValueError(f"{name} must be an ordered pair (low, high) with low <= high, got {value!r}")
    if pair[0] < lowest or (pair[0] == lowest and not inclusive):
        bound = ">=" if inclusive else ">"
        raise ValueError(f"{name} must have both values {bound} {lowest:g}, got {value!r}")
    return float(pair[0]), float(pair[1])


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# ---------------------------------------------------------------------------------------- spatial


def spatial_patch(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    centre: Sequence[int],
    patch_shape: Sequence[int],
    augmentation: Augmentation,
    *,
    channels: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a randomly rotated, scaled and mirrored patch around ``centre`` out of a whole case.

    The window of ``patch_shape`` centred at ``centre`` is first shifted to lie
    inside the grid, as :class:`~tutorial_lib.datasets.PatchDataset` always did.
    A rotation and scaling about the window's centre resample the case at
    rotated coordinates (``scipy.ndimage.map_coordinates``: the image linearly,
    the label by nearest neighbour so that it keeps its values; outside the
    grid both are 0, background). Flips mirror the cut patch. When no transform
    is drawn the plain window is returned, unchanged.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    image : np.ndarray
        Whole case ``(x, y, z, C)``, e.g. the cache's memory-mapped ``image.npy``.
    label : np.ndarray
        Whole case ``(x, y, z)`` BraTS labels.
    centre : sequence of 3 int
        Voxel the patch is centred on.
    patch_shape : sequence of 3 int
        ``(px, py, pz)``, at most the grid.
    augmentation : Augmentation
        Probabilities and ranges (only the spatial ones are used).
    channels : sequence of int, optional
        Channels of ``image`` to keep (all by default); choosing them here
        resamples only those.

    Returns
    -------
    image_patch : np.ndarray
        ``(px, py, pz, C)``: the plain window in ``image``'s dtype, or float32 when resampled.
    label_patch : np.ndarray
        ``(px, py, pz)`` in ``label``'s dtype.

    Examples
    --------
    >>> label = np.zeros((4, 4, 4), np.uint8); label[0, 1, 2] = 4
    >>> image = label[..., None].astype(np.float32)
    >>> x, y = spatial_patch(np.random.default_rng(0), image, label, (2, 2, 2), (4, 4, 4),
    ...                      Augmentation.only(flip_probability=1.0))
    >>> np.argwhere(y).tolist(), np.argwhere(x[..., 0]).tolist()
    ([[3, 2, 1]], [[3, 2, 1]])
    """
    patch, grid = np.asarray(patch_shape, int), np.asarray(label.shape, int)
    start = np.clip(np.asarray(centre, int) - patch // 2, 0, grid - patch)
    channels = list(range(image.shape[-1])) if channels is None else list(channels)
    matrix = _spatial_matrix(rng, augmentation)
    flips = [axis for axis in range(3) if rng.random() < augmentation.flip_probability]
    if matrix is None:
        window = tuple(slice(s, s + p) for s, p in zip(start, patch))
        image_patch, label_patch = image[window][..., channels], label[window]
    else:
        image_patch, label_patch = _resampled(image, label, start + (patch - 1) / 2, patch, matrix, channels)
    if flips:
        image_patch, label_patch = np.flip(image_patch, flips), np.flip(label_patch, flips)
    return np.ascontiguousarray(image_patch), np.ascontiguousarray(label_patch)


def _spatial_matrix(rng: np.random.Generator, augmentation: Augmentation) -> np.ndarray | None:
    """Patch offsets -> case offsets: rotation divided by the scale; None when neither is drawn."""
    rotate = rng.random() < augmentation.rotation_probability
    scale = rng.random() < augmentation.scale_probability
    if not (rotate or scale):
        return None
    matrix = np.eye(3)
    if rotate:
        angles = np.radians(rng.uniform(-augmentation.rotation_degrees, augmentation.rotation_degrees, 3))
        for axis, angle in enumerate(angles):
            matrix = _rotation(axis, angle) @ matrix
    if scale:
        matrix = matrix / _uniform(rng, augmentation.scale_range)
    return matrix


def _rotation(axis: int, angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about ``axis`` (in the plane of the other two)."""
    first, second = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    cos, sin = math.cos(angle), math.sin(angle)
    matrix[first, first], matrix[first, second], matrix[second, first], matrix[second, second] = cos, -sin, sin, cos
    return matrix


def _resampled(
    image: np.ndarray, label: np.ndarray, centre: np.ndarray, patch: np.ndarray, matrix: np.ndarray,
    channels: list[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image`` (linear) and ``label`` (nearest) at ``centre + matrix @ offset`` for each patch voxel."""
    offsets = np.indices(patch, dtype=np.float64).reshape(3, -1) - ((patch - 1) / 2)[:, None]
    coords = centre[:, None] + matrix @ offsets
    # Read only the block the coordinates span (plus one voxel for interpolation), not the whole case.
    low = np.clip(np.floor(coords.min(axis=1)).astype(int), 0, label.shape)
    high = np.clip(np.floor(coords.max(axis=1)).astype(int) + 2, 0, label.shape)
    block = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    local = coords - low[:, None]
    sampled = [ndimage.map_coordinates(np.asarray(image[block][..., c], np.float32), local, order=1,
                                       mode="constant", cval=0.0) for c in channels]
    image_patch = np.stack(sampled, axis=-1).reshape(*patch, len(channels))
    label_patch = ndimage.map_coordinates(np.asarray(label[block]), local, order=0, mode="constant", cval=0)
    return image_patch, label_patch.reshape(tuple(patch)).astype(label.dtype, copy=False)


# -------------------------------------------------------------------------------------- intensity


def intensity(rng: np.random.Generator, image: np.ndarray, augmentation: Augmentation) -> np.ndarray:
    """Randomly change the voxel values of a channels-last patch, each channel on its own.

    In this order, each drawn with its probability for every channel: bias
    field, noise, blur, brightness, contrast, low resolution, gamma (nnU-Net's
    order, the bias field first as it is part of the acquisition). Statistics
    (mean, minimum, maximum) are those of the brain, the voxels that are not 0
    in every channel; those background voxels are 0 again afterwards, so the
    network still sees where the brain ends.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    image : np.ndarray
        Patch ``(x, y, z, C)``, z-scored in the brain and 0 outside.
    augmentation : Augmentation
        Probabilities and ranges (only the intensity ones are used).

    Returns
    -------
    np.ndarray
        A float32 copy of ``image``, augmented.

    Examples
    --------
    >>> patch = np.zeros((2, 2, 2, 1), np.float32); patch[0, 0, 0, 0] = 2.0
    >>> out = intensity(np.random.default_rng(0), patch, Augmentation.only(brightness_probability=1.0,
    ...                 brightness_range=(1.5, 1.5), noise_probability=1.0))
    >>> float(out[0, 0, 0, 0]) != 2.0, int(np.count_nonzero(out))  # noise, but the background stays 0
    (True, 1)
    >>> float(intensity(np.random.default_rng(0), patch, Augmentation.only(brightness_probability=1.0,
    ...                 brightness_range=(1.5, 1.5)))[0, 0, 0, 0])
    3.0
    """
    out = np.array(image, dtype=np.float32, copy=True)
    background = np.all(out == 0, axis=-1)
    if background.all():
        return out
    brain = ~background
    for channel in range(out.shape[-1]):
        values = out[..., channel]
        for probability, step in _INTENSITY_STEPS:
            if rng.random() < getattr(augmentation, probability):
                values = step(rng, values, brain, augmentation)
        out[..., channel] = values
    out[background] = 0.0
    return out


@functools.lru_cache(maxsize=256)
def _resize_matrix(size: int, new_size: int, order: int) -> np.ndarray:
    """``(new_size, size)`` weights of SciPy's 1D spline zoom (``mode="nearest"``) of one axis."""
    matrix = ndimage.zoom(np.eye(size, dtype=np.float32), (new_size / size, 1), order=order, mode="nearest")
    matrix.flags.writeable = False
    return matrix


def _resize(values: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """``ndimage.zoom`` of ``values`` to ``shape``, one axis at a time (spline zooms are separable).

    The same values to rounding, twenty times faster on 24^3 patches: a bias
    field from 3^3 control points or a cubic up-sampling evaluates 64 spline
    weights per voxel in 3D, and only 3 x 4 this way.
    """
    for axis, new_size in enumerate(shape):
        matrix = _resize_matrix(values.shape[axis], int(new_size), order)
        values = np.moveaxis(np.tensordot(matrix, values, axes=(1, axis)), 0, axis)
    return values


def _bias(rng: np.random.Generator, values: np.ndarray, brain: np.ndarray, aug: Augmentation) -> np.ndarray:
    coarse = rng.standard_normal((_BIAS_CONTROL_POINTS,) * 3).astype(np.float32)
    return values * np.exp(aug.bias_strength * _resize(coarse, values.shape, order=3))


def _noise(rng: np.random.Generator, values: np.ndarray, brain: np.ndarray, aug: Augmentation) -> np.ndarray:
    sigma = rng.uniform(0.0, aug.noise_sigma)
    return values + rng.normal(0.0, sigma, values.shape).astype(np.float32)


def _blur(rng: np.random.Generator, values: np.ndarray, brain: np.ndarray, aug: Augmentation) -> np.ndarray:
    return ndimage.gaussian_filter(values, _uniform(rng, aug.blur_sigma_range))


def _brightness(rng: np.random.Generator, values: np.ndarray, brain: np.ndarray, aug: Augmentation) -> np.ndarray:
    return values * np.float32(_uniform(rng, aug.brightness_range))


def _contrast(rng: np.random.Generator, values: np.ndarray, brain: np.ndarray, aug: Augmentation) -> np.ndarray:
    factor, inside = _uniform(rng, aug.contrast_range), values[brain]
    mean = inside.mean()
    return np.clip((values - mean) * np.float32(factor) + mean, inside.min(), inside.max())


def _low_resolution(rng: np.random.Generator, values: np.ndarray, brain: np.ndarray,
                    aug: Augmentation) -> np.ndarray:
    factor = _uniform(rng, aug.low_resolution_range)
    shape = np.array(values.shape)
    factors = np.array([1.0, 1.0, factor]) if aug.low_resolution_z_only else np.full(3, factor)
    small_shape = np.maximum(np.round(shape / factors), 1).astype(int)
    return _resize(_resize(values, small_shape, order=0), shape, order=3)


def _gamma(rng: np.random.Generator, values: np.ndarray, brain: np.ndarray, aug: Augmentation) -> np.ndarray:
    gamma, inside = _uniform(rng, aug.gamma_range), values[brain]
    low, high = inside.min(), inside.max()
    if high <= low:
        return values
    unit = np.clip((values - low) / (high - low), 0.0, 1.0)
    return (unit ** np.float32(gamma) * (high - low) + low).astype(np.float32)


_Step = Callable[[np.random.Generator, np.ndarray, np.ndarray, Augmentation], np.ndarray]
_INTENSITY_STEPS: tuple[tuple[str, _Step], ...] = (
    ("bias_probability", _bias),
    ("noise_probability", _noise),
    ("blur_probability", _blur),
    ("brightness_probability", _brightness),
    ("contrast_probability", _contrast),
    ("low_resolution_probability", _low_resolution),
    ("gamma_probability", _gamma),
)
