"""Post-processing of binary segmentations: smoothing and connected components.

All functions take one mask without batch or channel axes, ``(x, y, z)``
(or ``(x, y)`` for a single slice), and return a boolean array of the same
shape. Numeric masks count as foreground where ``> 0.5``, so sigmoid
probabilities can be passed directly. Axial slices are ``mask[:, :, k]``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tutorial_lib.metrics import binarise

__all__ = ["smooth_mask", "remove_small_components", "keep_largest_component", "fill_holes"]

_MODES = ("2d", "3d")


def _check_mode(mode: str, mask: np.ndarray) -> None:
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {_MODES}")
    if mask.ndim not in (2, 3) or (mode == "3d" and mask.ndim != 3):
        raise ValueError(f"mode {mode!r} needs an (x, y, z) mask{' or an (x, y) slice' if mode == '2d' else ''}, "
                         f"got shape {mask.shape}")


def smooth_mask(mask: np.ndarray, size: int, *, mode: str = "2d") -> np.ndarray:
    """The paper's smoothing: stride-1 average pooling of the binary mask, then rounding.

    Every voxel becomes the fraction of foreground in the ``size x size``
    window around it (``mode="2d"``, each axial slice on its own as in the
    paper) or in the ``size^3`` cube (``mode="3d"``), computed with
    ``scipy.ndimage.uniform_filter``; outside the volume counts as
    background. The fraction is then rounded: a voxel is foreground when at
    least half its window is (``>= 0.5``; ties go to foreground, unlike
    NumPy's and TensorFlow's round-half-to-even). Ties only occur for even
    sizes, whose window is centred half a voxel off (e.g. offsets -8 ... +7
    for 16). Counting is exact, so no tie is lost to round-off. Size 1
    returns the binarised mask.

    Parameters
    ----------
    mask : ndarray
        ``(x, y, z)`` volume, or an ``(x, y)`` slice in 2D mode.
    size : int
        Window edge in voxels; the paper tried 1, 8, 16, 32 and 64 and kept 16.
    mode : {"2d", "3d"}, optional
        Per axial slice or in 3D.

    Returns
    -------
    ndarray of bool
        Same shape as ``mask``.

    Raises
    ------
    ValueError
        If ``size`` is not a positive integer, or ``mode`` or the mask shape is wrong.

    Examples
    --------
    >>> ring = np.zeros((5, 5)); ring[1:4, 1:4] = 1; ring[2, 2] = 0  # a 3 x 3 ring
    >>> smooth_mask(ring, 3).astype(int)  # hole filled (8/9), corners cut (3/9)
    array([[0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0]])
    """
    binary = binarise(mask)
    _check_mode(mode, binary)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    window = (size, size) + ((1,) if binary.ndim == 3 else ()) if mode == "2d" else (size,) * 3
    fraction = ndimage.uniform_filter(binary.astype(np.float64), size=window, mode="constant", cval=0.0)
    counts = np.rint(fraction * np.prod(window))  # whole numbers again, free of round-off
    return 2 * counts >= np.prod(window)


def _label(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    if not 1 <= connectivity <= mask.ndim:
        raise ValueError(f"connectivity must be 1 ... {mask.ndim} for a {mask.ndim}D mask, got {connectivity}")
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, connectivity))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    return labels, sizes


def remove_small_components(mask: np.ndarray, min_voxels: int, *, connectivity: int = 1) -> np.ndarray:
    """Drop connected components with fewer than ``min_voxels`` voxels.

    Parameters
    ----------
    mask : ndarray
        Binary mask, e.g. ``(x, y, z)``.
    min_voxels : int
        Smallest component size kept.
    connectivity : int, optional
        1 = faces (6-neighbourhood in 3D), 2 = also edges, 3 = also corners.

    Returns
    -------
    ndarray of bool

    Raises
    ------
    ValueError
        If ``min_voxels`` is negative or ``connectivity`` is out of range.

    Examples
    --------
    >>> remove_small_components(np.array([1, 1, 0, 1]), 2).astype(int).tolist()
    [1, 1, 0, 0]
    """
    if min_voxels < 0:
        raise ValueError(f"min_voxels must be >= 0, got {min_voxels}")
    labels, sizes = _label(binarise(mask), connectivity)
    keep = sizes >= min_voxels
    keep[0] = False  # label 0 is the background
    return keep[labels]


def keep_largest_component(mask: np.ndarray, *, connectivity: int = 1) -> np.ndarray:
    """Keep only the largest connected component (an empty mask stays empty).

    Ties keep the component found first in C (row-major) order.

    Parameters
    ----------
    mask : ndarray
        Binary mask, e.g. ``(x, y, z)``.
    connectivity : int, optional
        1 = faces, 2 = also edges, 3 = also corners.

    Returns
    -------
    ndarray of bool

    Examples
    --------
    >>> keep_largest_component(np.array([1, 0, 1, 1])).astype(int).tolist()
    [0, 0, 1, 1]
    """
    labels, sizes = _label(binarise(mask), connectivity)
    if len(sizes) == 1:
        return np.zeros(labels.shape, dtype=bool)
    return labels == 1 + int(np.argmax(sizes[1:]))


def fill_holes(mask: np.ndarray, *, mode: str = "3d") -> np.ndarray:
    """Fill background regions that the mask encloses completely.

    Parameters
    ----------
    mask : ndarray
        Binary mask ``(x, y, z)`` (or an ``(x, y)`` slice in 2D mode).
    mode : {"3d", "2d"}, optional
        ``"3d"`` fills cavities closed in 3D; ``"2d"`` fills holes in each
        axial slice separately, which also closes holes that open up- or
        downwards through a neighbouring slice.

    Returns
    -------
    ndarray of bool

    Raises
    ------
    ValueError
        If ``mode`` or the mask shape is wrong.

    Examples
    --------
    >>> ring = np.ones((3, 3), bool); ring[1, 1] = False
    >>> bool(fill_holes(ring, mode="2d")[1, 1])
    True
    """
    binary = binarise(mask)
    _check_mode(mode, binary)
    if mode == "3d" or binary.ndim == 2:
        return ndimage.binary_fill_holes(binary)
    # A structure with no links along z fills each axial slice independently.
    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(binary, structure=structure)
