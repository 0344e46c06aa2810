"""BraTS-like synthetic cases built from the MNI152 template shipped with nilearn.

Learners without a BraTS download still need data that looks and behaves like
BraTS: the same folder layout and file names, the 240 x 240 x 155 grid at
1 mm, four skull-stripped modalities (FLAIR, T1, T1ce, T2) and the BraTS
labels. Each case is drawn from a seed:

* **anatomy** - the MNI152 grey/white-matter maps, rotated, scaled and bent
  by a smooth random warp, then cut at the brain mask (as BraTS does);
* **tumours** - one or two irregular lesions of 5-200 cm^3 with edema
  (label 2), a necrotic or non-enhancing core (label 1) and, for most cases,
  an enhancing rim (label 4), each with its own look per modality;
* **distractors** - bright caps next to the lateral ventricles and small white
  matter spots on FLAIR, bright CSF on T2, enhancing vessels and choroid
  plexus on T1ce;
* **acquisition** - per-case gain, a smooth multiplicative bias field and
  Rician noise.

How a scanner renders that anatomy is an :class:`Appearance`, and
:data:`APPEARANCES` names three. ``"course"``, the default, is the data every
chapter trains and tests on: one fixed contrast look-up per modality. ``"varied"``
draws each case's look-ups around the course's (more than one scanner in the
training set). ``"second_site"`` is a held-out site that no training set uses,
and every way it differs is one that a scanner or protocol makes, within a
range the literature reports: relaxation times of a 3 T scanner run with the
course's sequence timing (which changes every tissue's contrast through the
signal equations, never one tissue on its own), another intensity scale, less
noise, a busier bias field, and 3 mm slices resampled to 1 mm. The values and
their sources are listed at :data:`APPEARANCES`. It is still a proxy for a scan
from elsewhere: a real site also differs in ways no generator holds.

The mix is tuned so that the best global FLAIR threshold reaches a
whole-tumour Dice of only about 0.5-0.65 (see ``tutorial_lib.baseline``),
while local context (a dark core enclosed by bright edema, the fixed place
of the periventricular caps, local rather than global contrast) lets a small
3D U-Net do clearly better.

Arrays are ``(x, y, z)`` volumes; ``generate_case`` returns them in memory and
``write_case`` / ``make_dataset`` write BraTS-2017 style NIfTI folders.
"""

from __future__ import annotations

import functools
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tutorial_lib._files import atomic_dir
from tutorial_lib.config import BRATS

__all__ = [
    "Appearance",
    "APPEARANCES",
    "look_is_plausible",
    "SyntheticCase",
    "case_seed",
    "case_ids",
    "generate_case",
    "write_case",
    "make_dataset",
    "is_complete_case",
]

_SUFFIXES = (*BRATS.modalities, "seg")
# Tissue index used for the intensity look-up: background, CSF, grey, white.
_TISSUE_AXIS = np.array([-1.0, 0.0, 1.0, 2.0])
# Relative intensity of (background, CSF, GM, WM) per modality.
_TISSUE_LOOK = {
    "flair": (0.0, 0.16, 0.62, 0.50),
    "t1": (0.0, 0.22, 0.55, 0.80),
    "t1ce": (0.0, 0.24, 0.57, 0.80),
    "t2": (0.0, 1.00, 0.62, 0.45),
}
# Relative intensity of edema, enhancing rim, necrosis and solid non-enhancing core.
_TUMOUR_LOOK = {
    "flair": {"edema": 0.95, "enhancing": 0.80, "necrosis": 0.36, "solid": 0.88},
    "t1": {"edema": 0.50, "enhancing": 0.55, "necrosis": 0.20, "solid": 0.38},
    "t1ce": {"edema": 0.52, "enhancing": 1.15, "necrosis": 0.24, "solid": 0.42},
    "t2": {"edema": 0.86, "enhancing": 0.70, "necrosis": 0.97, "solid": 0.80},
}
_LABEL = {
    "necrosis": 1,
    "solid": 1,
    "edema": 2,
    "enhancing": 4,
}
_MIN_CM3, _MAX_CM3 = 5.0, 200.0


@dataclass(frozen=True)
class Appearance:
    """How one (made-up) scanner renders the anatomy: contrast, noise, bias field, slice thickness.

    Attributes
    ----------
    look_scale : mapping of (modality, part) to float
        Fixed factors on the course's relative intensities, where ``part`` is
        ``"csf"``, ``"grey"``, ``"white"`` or a tumour part (``"edema"``,
        ``"enhancing"``, ``"necrosis"``, ``"solid"``); missing pairs keep 1.
    contrast_jitter : float
        Each look-up value of a case is then multiplied by its own factor
        drawn from ``exp(uniform(-contrast_jitter, contrast_jitter))``; 0 keeps
        one look for every case. Draws that break the rules of
        :func:`look_is_plausible` are drawn again.
    gain_range : tuple of float
        Scanner units per relative intensity, drawn per modality.
    noise : {"rician", "gaussian"}
        Magnitude images carry Rician noise; ``"gaussian"`` adds it to the
        signal, as on a scanner that reconstructs real-valued images.
    noise_range : tuple of float
        Standard deviation of the noise, relative to the signal scale.
    bias_range : tuple of float
        Strength of the multiplicative bias field ``exp(strength * field)``.
    bias_nodes : tuple of int
        Coarse grid of the bias field: more nodes, a busier field.
    slice_thickness_mm : int
        Acquired slice thickness along z; above 1 the signal is averaged over
        slabs that thick, noise is added on the slab grid, and the image is
        interpolated back to 1 mm (what a thick-slice clinical scan resampled to
        the BraTS grid looks like). The labels stay at 1 mm.
    relaxation : tuple of float
        ``(T1 factor, T2 factor)``: every tissue's T1 and T2 times these,
        relative to the course's scanner, with the sequence timing (TR, TE)
        unchanged. The rendered image of each modality then goes through the
        curve the signal equation gives (:func:`_relaxation_curve`): the same
        curve for every voxel, so a tissue's contrast changes only as far as
        its relaxation does. ``(1, 1)`` leaves the course's contrasts as they are.
    """

    look_scale: Mapping[tuple[str, str], float] = field(default_factory=dict)
    contrast_jitter: float = 0.0
    gain_range: tuple[float, float] = (300.0, 1200.0)
    noise: str = "rician"
    noise_range: tuple[float, float] = (0.03, 0.07)
    bias_range: tuple[float, float] = (0.15, 0.25)
    bias_nodes: tuple[int, int, int] = (3, 3, 3)
    slice_thickness_mm: int = 1
    relaxation: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.noise not in ("rician", "gaussian"):
            raise ValueError(f"noise must be 'rician' or 'gaussian', got {self.noise!r}")
        if not 0.0 <= self.contrast_jitter <= 0.5:
            raise ValueError(f"contrast_jitter must lie in [0, 0.5], got {self.contrast_jitter}")
        if len(self.relaxation) != 2 or not all(0.5 <= factor <= 2.0 for factor in self.relaxation):
            raise ValueError(f"relaxation must be (T1 factor, T2 factor), each in [0.5, 2], got {self.relaxation!r}")
        if not isinstance(self.slice_thickness_mm, int) or self.slice_thickness_mm < 1:
            raise ValueError(f"slice_thickness_mm must be a positive integer, got {self.slice_thickness_mm!r}")
        parts = {"csf", "grey", "white", *_LABEL}
        unknown = [key for key in self.look_scale if key[0] not in BRATS.modalities or key[1] not in parts]
        if unknown:
            raise ValueError(f"look_scale keys must be (modality, part) with part in {sorted(parts)}, got {unknown}")
        for name in ("gain_range", "noise_range", "bias_range"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(low, high)}")


APPEARANCES: Mapping[str, Appearance] = MappingProxyType({
    "course": Appearance(),
    # Several scanners in one training set: each case's contrasts drawn around the course's.
    "varied": Appearance(contrast_jitter=0.15, noise_range=(0.02, 0.09), bias_range=(0.1, 0.35)),
    # A site no training set uses: each difference is one a scanner or protocol makes (sources below).
    "second_site": Appearance(
        relaxation=(1.22, 0.85), gain_range=(1500.0, 3000.0), noise="rician", noise_range=(0.02, 0.05),
        bias_range=(0.06, 0.12), bias_nodes=(4, 4, 4), slice_thickness_mm=3),
})
"""The named appearances.

``"second_site"`` differs from ``"course"`` in these ways, each within a range
that real scanners and protocols show:

* **contrast** - ``relaxation=(1.22, 0.85)``: T1 22 % longer and T2 15 % shorter
  with the sequence timing unchanged, the middle of what a 3.0 T scanner does
  relative to 1.5 T (T1 14-30 % longer, T2 12-19 % shorter; Lu et al. 2005,
  "Routine clinical brain MRI sequences for use at 3.0 Tesla", J Magn Reson
  Imaging 22:13-22, who also show that re-tuned parameters would keep the
  1.5 T look; here they are not re-tuned). Each modality goes through one
  curve from its signal equation, so no tissue changes on its own: T2 and
  FLAIR as T2 decay at a fixed TE (``s -> s ** (1 / 0.85)``; FLAIR's inversion
  factor, which also depends on T1, is left out), T1 and T1ce as saturation
  recovery at a fixed TR (see :func:`_relaxation_curve`). Every look-up order
  of :func:`look_is_plausible` is kept.
* **intensity scale** - gain 1500-3000 scanner units instead of 300-1200: MR
  intensities have no fixed unit and differ from scan to scan even for one
  protocol (Nyul & Udupa 1999, "On standardizing the MR image intensity
  scale", Magn Reson Med 42:1072-1081).
* **noise** - Rician, as in every magnitude image (Gudbjartsson & Patz 1995,
  "The Rician distribution of noisy MRI data", Magn Reson Med 34:910-914),
  at 2-5 % of the signal scale instead of 3-7 %: a 3 mm voxel holds three
  times the tissue of a 1 mm one, and SNR grows with field strength
  (Edelstein et al. 1986, "The intrinsic signal-to-noise ratio in NMR
  imaging", Magn Reson Med 3:604-618). BrainWeb's simulated scans, whose
  range was chosen from modern scanners, span 0-9 % of a reference tissue
  (Cocosco et al. 1997, "BrainWeb: online interface to a 3D MRI simulated
  brain database", NeuroImage 5:S425; the BrainWeb FAQ defines the percentage).
* **bias field** - strength 0.06-0.12 on a 4 x 4 x 4 grid (nodes 52-64 mm
  apart) instead of 0.15-0.25 on 3 x 3 x 3 (78-96 mm): a field spanning about
  20-40 % of its mean over the brain, BrainWeb's two non-zero levels (fields
  estimated from real scans, 40 % meaning 0.8-1.2), and varying on the
  50-100 mm scale that suits N3 on 3 T scanners with multichannel coils
  better than its 200 mm default (Boyes et al. 2008, "Intensity
  non-uniformity correction using N3 on 3-T scanners with multichannel phased
  array coils", NeuroImage 39:1752-1762; N3: Sled et al. 1998, "A
  nonparametric method for automatic correction of intensity nonuniformity
  in MRI data", IEEE Trans Med Imaging 17:87-97).
* **slice thickness** - 3 mm slabs resampled to 1 mm: BraTS's own T1, T2 and
  FLAIR series were 2D acquisitions of 1-6 mm (T1) and 2-6 mm (T2, FLAIR) from
  1.5 T and 3 T scanners at many institutions (Menze et al. 2015, "The
  Multimodal Brain Tumor Image Segmentation Benchmark (BRATS)", IEEE Trans
  Med Imaging 34:1993-2024; Bakas et al. 2017, "Advancing The Cancer Genome
  Atlas glioma MRI collections with expert segmentation labels and radiomic
  features", Sci Data 4:170117), and the consensus brain tumour
  protocol asks for 2D FLAIR and T2 of at most 4 mm (Ellingson et al. 2015,
  "Consensus recommendations for a standardized Brain Tumor Imaging Protocol
  in clinical trials", Neuro-Oncology 17:1188-1198). That protocol's T1 and
  T1ce, and most BraTS T1ce, are 3D scans of about 1 mm, so 3 mm on T1ce
  stands for the 2D post-contrast series of older protocols: one thickness
  serves all four modalities here.

No look-up value is scaled on its own and no per-case contrast is drawn
(``look_scale`` empty, ``contrast_jitter`` 0): a scanner changes the intensity
curve, not one tissue of one patient.
"""


def _case_looks(appearance: Appearance, rng: np.random.Generator | None, edema: float) -> tuple[dict, dict]:
    """Tissue and tumour look-ups of one case under ``appearance``, its FLAIR edema at ``edema``.

    With no ``rng`` (an appearance without jitter) every factor is exactly 1
    or the fixed ``look_scale``, so the course's cases stay as they were.
    """
    tissue_names = ("background", "csf", "grey", "white")
    base_tumour = {**_TUMOUR_LOOK, "flair": {**_TUMOUR_LOOK["flair"], "edema": edema}}
    for _ in range(100):
        def factor(modality: str, part: str) -> float:
            jitter = rng.uniform(-1.0, 1.0) * appearance.contrast_jitter if rng is not None else 0.0
            return appearance.look_scale.get((modality, part), 1.0) * float(np.exp(jitter))

        tissue = {m: tuple(v * (factor(m, t) if t != "background" else 1.0) for v, t in zip(values, tissue_names))
                  for m, values in _TISSUE_LOOK.items()}
        tumour = {m: {part: v * factor(m, part) for part, v in parts.items()} for m, parts in base_tumour.items()}
        if look_is_plausible(tissue, tumour):
            return tissue, tumour
    raise ValueError(f"appearance {appearance} keeps drawing implausible contrasts; lower contrast_jitter")


def look_is_plausible(tissue: Mapping[str, Sequence[float]], tumour: Mapping[str, Mapping[str, float]]) -> bool:
    """The contrast rules every appearance keeps, whatever it draws.

    ``tissue[modality]`` is (background, CSF, grey, white) and
    ``tumour[modality]`` maps the tumour parts to their relative intensity.
    The rules: on FLAIR the edema and the solid core are brighter than grey
    and white matter (the lesion is hyper-intense) and CSF is dark; on T1ce
    the enhancing rim is the brightest thing in the brain; on T2 CSF is
    brighter than both tissues and edema brighter than white matter; on T1
    white matter is brighter than grey matter, grey brighter than CSF, and the
    necrotic core darker than grey matter.

    Examples
    --------
    >>> look_is_plausible(_TISSUE_LOOK, _TUMOUR_LOOK)
    True
    >>> look_is_plausible({**_TISSUE_LOOK, "t2": (0.0, 0.3, 0.62, 0.45)}, _TUMOUR_LOOK)  # dark CSF on T2
    False
    """
    flair, t1, t1ce, t2 = (tissue[m] for m in ("flair", "t1", "t1ce", "t2"))
    rules = [
        min(tumour["flair"]["edema"], tumour["flair"]["solid"]) > max(flair[2], flair[3]) > flair[1],
        tumour["t1ce"]["enhancing"] > max(*t1ce, *(v for k, v in tumour["t1ce"].items() if k != "enhancing")),
        t2[1] > max(t2[2], t2[3]) and tumour["t2"]["edema"] > t2[3],
        t1[3] > t1[2] > t1[1] and tumour["t1"]["necrosis"] < t1[2],
    ]
    return all(rules)


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case.

    Attributes
    ----------
    case_id : str
        Folder and file prefix, e.g. ``"Synth_0003"``.
    images : dict of str to numpy.ndarray
        ``int16`` volumes of shape ``BRATS.shape`` keyed by modality
        (``BRATS.modalities``); zero outside the brain.
    seg : numpy.ndarray
        ``uint8`` label volume of shape ``BRATS.shape`` with values in
        ``BRATS.labels``.
    affine : numpy.ndarray
        ``(4, 4)`` voxel-to-world matrix shared by all five volumes (1 mm voxels).
    """

    case_id: str
    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray

    @property
    def brain(self) -> np.ndarray:
        """Boolean brain mask: voxels where any modality is non-zero."""
        return np.any(np.stack([image != 0 for image in self.images.values()]), axis=0)


def case_seed(seed: int, index: int) -> int:
    """Derive the seed of case ``index`` from the dataset ``seed``.

    Uses ``numpy.random.SeedSequence`` so that neighbouring indices give
    unrelated streams and a case does not depend on how many others exist.

    Examples
    --------
    >>> case_seed(0, 1) == case_seed(0, 1) != case_seed(0, 2)
    True
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def case_ids(n_cases: int, *, prefix: str = "Synth") -> list[str]:
    """Case identifiers ``<prefix>_0000`` ... for ``n_cases`` cases.

    Examples
    --------
    >>> case_ids(2)
    ['Synth_0000', 'Synth_0001']
    """
    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases}")
    return [f"{prefix}_{index:04d}" for index in range(n_cases)]


# --------------------------------------------------------------------------- template


@functools.lru_cache(maxsize=1)
def _template() -> dict[str, np.ndarray]:
    """MNI152 maps in template voxels, loaded once per process (ships with nilearn)."""
    from nilearn import datasets

    def load(loader, resolution):
        return np.asarray(loader(resolution=resolution).dataobj, dtype=np.float32)

    grey = load(datasets.load_mni152_gm_template, 1)
    white = load(datasets.load_mni152_wm_template, 1)
    mask = load(datasets.load_mni152_brain_mask, 1) > 0
    total = np.maximum(grey + white, 1.0)
    tissue = np.where(mask, (grey + 2.0 * white) / total, -1.0).astype(np.float32)
    corners = np.argwhere(mask)
    return {
        "tissue": tissue,
        "centre": (corners.min(0) + corners.max(0)) / 2.0,
        "extent": corners.max(0) - corners.min(0) + 1,
        "aux": _periventricular_maps(mask[::2, ::2, ::2], (grey + white)[::2, ::2, ::2]),
    }


def _periventricular_maps(mask: np.ndarray, parenchyma: np.ndarray) -> np.ndarray:
    """Caps next to the ventricle horns and the ventricles, on the 2 mm template grid."""
    depth = ndimage.distance_transform_edt(mask) * 2.0
    ventricles = mask & (parenchyma < 0.35) & (depth > 22.0)
    labels, count = ndimage.label(ventricles)
    sizes = ndimage.sum(ventricles, labels, range(1, count + 1))
    ventricles = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.2 * sizes.max()))
    distance = ndimage.distance_transform_edt(~ventricles) * 2.0
    along = np.argwhere(ventricles)[:, 1]
    y = np.arange(mask.shape[1], dtype=np.float32)[None, :, None]
    # Caps sit at the front and back horns: weight by distance from the ventricles' middle.
    horn = np.clip(np.abs(y - along.mean()) / (0.5 * np.ptp(along) + 1e-6), 0.0, 1.0) ** 1.5
    caps = np.exp(-distance / 3.0) * horn * (~ventricles) * (parenchyma > 0.5)
    caps = ndimage.gaussian_filter(caps.astype(np.float32), 1.0)
    return np.stack([caps / max(caps.max(), 1e-6), ventricles.astype(np.float32)])


# --------------------------------------------------------------------------- smooth fields


def _interp_matrix(size: int, nodes: int) -> np.ndarray:
    """(size, nodes) weights that spread ``nodes`` coarse values smoothly over ``size`` voxels."""
    positions = np.linspace(0.0, nodes - 1.0, size)[:, None]
    weights = np.exp(-0.5 * ((positions - np.arange(nodes)[None, :]) / 0.6) ** 2)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape, nodes) -> np.ndarray:
    """Smooth random field: a coarse normal grid interpolated separably (fast, C-infinity)."""
    coarse = rng.standard_normal(tuple(nodes)).astype(np.float32)
    mx, my, mz = (_interp_matrix(s, n) for s, n in zip(shape, nodes))
    # Three small matrix products (BLAS) instead of one large einsum.
    field = np.tensordot(mx, coarse, axes=(1, 0))  # (X, b, c)
    field = np.matmul(my, field)  # (X, Y, c)
    field = np.matmul(field, mz.T)  # (X, Y, Z)
    return field / max(float(field[::4, ::4, ::4].std()), 1e-6)


# --------------------------------------------------------------------------- anatomy


def _case_affine(rng: np.random.Generator) -> np.ndarray:
    """BraTS-like LPS affine with 1 mm voxels and a small per-case origin shift."""
    shift = rng.uniform(-5.0, 5.0, 3)
    return np.array(
        [
            [-1.0, 0.0, 0.0, 120.0 + shift[0]],
            [0.0, -1.0, 0.0, 120.0 + shift[1]],
            [0.0, 0.0, 1.0, -78.0 + shift[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _warp_coordinates(rng, box_start, box_shape) -> np.ndarray:
    """Template voxel coordinates for every voxel of the target box: rotation, scale, warp."""
    template = _template()
    scale = rng.uniform(0.85, 0.93) * np.exp(rng.uniform(-0.03, 0.03, 3))
    rotation = Rotation.from_euler("xyz", rng.uniform(-1.0, 1.0, 3) * [5.0, 5.0, 8.0], degrees=True)
    # Target voxel axes point left/posterior (LPS), the template's right/anterior (RAS).
    flip = np.diag([-1.0, -1.0, 1.0])
    linear = (rotation.as_matrix() @ flip / scale).astype(np.float32)
    centre = (np.array(BRATS.shape) - 1) / 2.0 + rng.normal(0.0, 2.0, 3)
    axes = [np.arange(s, dtype=np.float32) + b - c for s, b, c in zip(box_shape, box_start, centre)]
    coords = np.empty((3, *box_shape), dtype=np.float32)
    for row in range(3):
        coords[row] = (
            linear[row, 0] * axes[0][:, None, None]
            + linear[row, 1] * axes[1][None, :, None]
            + linear[row, 2] * axes[2][None, None, :]
            + template["centre"][row]
        )
        coords[row] += rng.uniform(2.0, 4.0) * _smooth_field(rng, box_shape, (6, 6, 5))
    return coords


def _anatomy(rng, box_start, box_shape):
    """Warped tissue index (full resolution) and periventricular maps (2 mm, repeated)."""
    template = _template()
    coords = _warp_coordinates(rng, box_start, box_shape)
    half = coords[:, ::2, ::2, ::2]
    channels = [template["tissue"][::2, ::2, ::2], *template["aux"]]
    coarse = [ndimage.map_coordinates(c, half / 2.0, order=1, cval=c.min()) for c in channels]
    coarse[0] = ndimage.binary_dilation(coarse[0] > -0.95, iterations=2)
    full = [_repeat2(c, box_shape) for c in coarse]
    # Most of the box is background: interpolate at full resolution only near the brain.
    tissue = np.full(box_shape, -1.0, dtype=np.float32)
    tissue[full[0]] = ndimage.map_coordinates(template["tissue"], coords[:, full[0]], order=1, cval=-1.0)
    return tissue, full[1], full[2]


def _repeat2(volume: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour 2x up-sampling cropped to ``shape`` (the maps are smooth)."""
    big = volume.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    return big[: shape[0], : shape[1], : shape[2]]


def _brain_box() -> tuple[np.ndarray, np.ndarray]:
    """Sub-box of the BraTS grid that can hold the (shrunk, rotated) brain.

    In-plane it never leaves the central ``BRATS.crop_shape`` box, so the
    cache's 192 x 192 crop never cuts a brain.
    """
    limit = (*BRATS.crop_shape[:2], BRATS.shape[2])
    extent = np.minimum(np.ceil(_template()["extent"] * 1.02 + 16), limit).astype(int)
    start = (np.array(BRATS.shape) - extent) // 2
    return start, extent


# --------------------------------------------------------------------------- tumours


def _tumour_shape(rng, radius: float, core_fraction: float, box: int) -> dict[str, np.ndarray]:
    """Boolean regions of one lesion in a cube of side ``box`` centred on the lesion."""
    axes = rng.uniform(0.75, 1.3, 3)
    grid = np.indices((box,) * 3, dtype=np.float32) - (box - 1) / 2.0
    distance = np.sqrt(sum((grid[i] / axes[i]) ** 2 for i in range(3))) / radius
    nodes = (max(3, box // 12),) * 3
    outer = distance + 0.22 * _smooth_field(rng, (box,) * 3, nodes)
    inner = distance / core_fraction + 0.18 * _smooth_field(rng, (box,) * 3, nodes)
    return {"outer": outer, "inner": inner}


def _place_tumour(rng, tissue, labels, look_weight, centre, volume_cm3, enhancing: bool):
    """Draw one lesion of about ``volume_cm3`` into ``labels`` (edits in place)."""
    radius = (3.0 * volume_cm3 * 1000.0 / (4.0 * np.pi)) ** (1 / 3)
    core_fraction = rng.uniform(0.45, 0.75)
    box = int(2 * np.ceil(1.7 * radius) + 5)
    fields = _tumour_shape(rng, radius, core_fraction, box)
    lo = np.array(centre) - box // 2
    sub = tuple(slice(max(0, a), min(n, a + box)) for a, n in zip(lo, labels.shape))
    crop = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sub, lo))
    brain_here = tissue[sub] > -0.5
    parenchyma = tissue[sub] > 0.6
    # Edema runs along white matter further than through grey matter.
    white = np.clip(tissue[sub] - 1.0, 0.0, 1.0)
    edema = (fields["outer"][crop] < 0.85 + 0.3 * white) & parenchyma
    core = (fields["inner"][crop] < 1.0) & brain_here
    target = labels[sub]
    target[edema & (target == 0)] = _LABEL["edema"]
    if enhancing:
        necrotic = (fields["inner"][crop] < rng.uniform(0.65, 0.85)) & core
        target[core] = _LABEL["enhancing"]
        target[necrotic] = _LABEL["necrosis"]
    else:
        target[core] = _LABEL["solid"]
    # Edema is brighter near the core and fades towards its border.
    look_weight[sub] = np.maximum(look_weight[sub], np.clip(1.2 - fields["outer"][crop], 0, 1))


def _tumour_centres(rng, tissue, count: int) -> list[tuple[int, int, int]]:
    """Random white-matter voxels away from the midline (and from each other)."""
    step = 3
    coarse = tissue[::step, ::step, ::step]
    depth = ndimage.distance_transform_edt(coarse > -0.5) * step
    mid = tissue.shape[0] / 2.0
    x = np.arange(coarse.shape[0])[:, None, None] * step
    ok = (coarse > 1.3) & (depth > 14) & (np.abs(x - mid) > 12)
    candidates = np.argwhere(ok) * step
    centres: list[tuple[int, int, int]] = []
    for _ in range(50 * count):
        point = candidates[rng.integers(len(candidates))]
        if all(np.linalg.norm(point - np.array(c)) > 45 for c in centres):
            centres.append(tuple(int(v) for v in point))
        if len(centres) == count:
            break
    return centres


def _tumours(rng, tissue) -> tuple[np.ndarray, np.ndarray]:
    """Label volume of one or two lesions with 5-200 cm^3 of whole tumour in total."""
    foci = 2 if rng.random() < 0.25 else 1
    enhancing = rng.random() < 0.8
    for _ in range(8):
        labels = np.zeros(tissue.shape, dtype=np.uint8)
        weight = np.zeros(tissue.shape, dtype=np.float32)
        total = np.exp(rng.uniform(np.log(12.0), np.log(190.0)))
        shares = [1.0] if foci == 1 else [0.7, 0.3]
        for centre, share in zip(_tumour_centres(rng, tissue, foci), shares):
            _place_tumour(rng, tissue, labels, weight, centre, total * share, enhancing)
        volume = np.count_nonzero(labels) / 1000.0
        if _MIN_CM3 <= volume <= _MAX_CM3:
            return labels, weight
    raise RuntimeError(f"could not draw a tumour of {_MIN_CM3}-{_MAX_CM3} cm^3 (last {volume:.1f})")


def _white_matter_spots(rng, tissue, labels) -> np.ndarray:
    """Small bright FLAIR/T2 spots (unlabelled), like small-vessel disease lesions."""
    spots = np.zeros(tissue.shape, dtype=np.float32)
    for centre in _tumour_centres(rng, tissue, int(rng.integers(0, 6))):
        radius = rng.uniform(2.0, 4.5)
        sub = tuple(slice(c - 8, c + 9) for c in centre)
        grid = np.indices((17, 17, 17), dtype=np.float32) - 8.0
        blob = np.exp(-np.sum(grid**2, axis=0) / (2 * radius**2))
        spots[sub] = np.maximum(spots[sub], blob * (labels[sub] == 0))
    return spots


# --------------------------------------------------------------------------- intensities


def _modality(name, tissue, labels, edema_weight, caps, ventricles, spots, style, looks):
    """Noise-free relative intensity of one modality inside the box, with the case's ``looks``."""
    tissue_look, tumour_look = looks
    image = np.interp(tissue, _TISSUE_AXIS, tissue_look[name]).astype(np.float32)
    if name in ("flair", "t2"):
        image += (style["caps"] if name == "flair" else 0.1) * caps
        image += style["spots"] * spots
    if name == "t1ce":
        sulcal = (tissue > -0.6) & (tissue < 0.6) & ~(ventricles > 0.5)
        vessels = sulcal & (style["vessels"] > 1.3)
        image += 0.6 * vessels + 0.5 * ventricles * (style["vessels"] > 0.8)
    look = dict(tumour_look[name])
    # Work inside the tumour's bounding box only: blurring the whole volume is slow.
    box = ndimage.find_objects((labels > 0).astype(np.int8))[0]
    box = tuple(slice(max(0, s.start - 4), s.stop + 4) for s in box)
    sub_labels = labels[box]
    tumour = np.zeros(sub_labels.shape, dtype=np.float32)
    for part, value in look.items():
        tumour[sub_labels == _LABEL[part]] = value
    if name == "flair":
        edema = sub_labels == _LABEL["edema"]
        tumour[edema] *= 0.85 + 0.15 * edema_weight[box][edema]
    # Soften label borders so that tumours blend into tissue like real lesions.
    present = ndimage.gaussian_filter((sub_labels > 0).astype(np.float32), 0.8)
    tumour = ndimage.gaussian_filter(tumour, 0.8) / np.maximum(present, 1e-3)
    image[box] = image[box] * (1.0 - present) + tumour * present
    return image


# Full magnetisation of the T1 and T1ce look-ups. It reads the course's T1 look-up as saturation recovery,
# 1 - exp(-TR / T1), with TR / T1 of 0.16 (CSF), 0.46 (grey) and 0.76 (white matter): T1 of grey matter 1.7
# and of CSF 4.8 times white matter's, near the brain's (grey 1331 ms, white 832 ms at 3 T: Wansapura et al.
# 1999, "NMR relaxation times in the human brain at 3.0 tesla", J Magn Reson Imaging 9:531-538; CSF some seconds).
_T1_FULL_SIGNAL = 1.5


def _relaxation_curve(name: str, image: np.ndarray, relaxation: tuple[float, float]) -> np.ndarray:
    """Modality ``name``'s image when every T1 is ``relaxation[0]`` and every T2 ``relaxation[1]`` times the course's.

    The sequence timing stays, so each signal equation gives one curve for the
    whole image. T2 and FLAIR: T2 decay at a fixed echo time,
    ``exp(-TE / T2)``, so a T2 times ``f`` turns a signal ``s`` into
    ``s ** (1 / f)`` (FLAIR's inversion factor, which also depends on T1, is not
    modelled). T1 and T1ce: saturation recovery at a fixed repetition time,
    ``1 - exp(-TR / T1)``, so a T1 times ``f`` turns ``s`` into
    ``1 - (1 - s) ** (1 / f)``, with ``s`` relative to :data:`_T1_FULL_SIGNAL`.
    Both curves are increasing, so no tissue changes place with another;
    the overall scale they add is the gain's business.

    Examples
    --------
    >>> t2 = np.array([0.5, 0.6, 1.0], np.float32)  # white, grey matter, CSF
    >>> np.round(_relaxation_curve("t2", t2, (1.0, 0.5)), 3)  # T2 halved: the signal squared
    array([0.25, 0.36, 1.  ], dtype=float32)
    >>> bool((_relaxation_curve("t1", t2, (1.0, 1.0)) == t2).all())
    True
    """
    t1_factor, t2_factor = relaxation
    if name in ("t1", "t1ce"):
        if t1_factor == 1.0:
            return image
        saturation = np.clip(image / _T1_FULL_SIGNAL, 0.0, 1.0 - 1e-6)
        return (_T1_FULL_SIGNAL * (1.0 - (1.0 - saturation) ** (1.0 / t1_factor))).astype(np.float32)
    if t2_factor == 1.0:
        return image
    return (np.maximum(image, 0.0) ** (1.0 / t2_factor)).astype(np.float32)


def _acquire(rng, image, brain, texture, box_shape, appearance: Appearance) -> np.ndarray:
    """Gain, bias field, noise, slice thickness and int16 rounding; zero outside the brain."""
    bias = np.exp(rng.uniform(*appearance.bias_range) * _smooth_field(rng, box_shape, appearance.bias_nodes))
    signal = image * bias * (1.0 + 0.04 * texture)
    sigma = rng.uniform(*appearance.noise_range)
    thickness = appearance.slice_thickness_mm
    if thickness > 1:  # a thick-slice scan, interpolated back to the 1 mm grid
        signal = _thick_slices(signal, thickness)
        noise = rng.standard_normal((2, *signal.shape), dtype=np.float32) * sigma
        values = _noisy(signal, noise, appearance.noise)
        values = _thin_slices(values, thickness, box_shape[2])[brain]
    else:
        noise = rng.standard_normal((2, int(brain.sum())), dtype=np.float32) * sigma
        values = _noisy(signal[brain], noise, appearance.noise)
    values = values * rng.uniform(*appearance.gain_range)
    out = np.zeros(box_shape, dtype=np.int16)
    out[brain] = np.clip(np.rint(values), 1, np.iinfo(np.int16).max).astype(np.int16)
    return out


def _noisy(signal: np.ndarray, noise: np.ndarray, model: str) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise in both parts (Rician), or the real part only."""
    return np.hypot(signal + noise[0], noise[1]) if model == "rician" else np.abs(signal + noise[0])


def _thick_slices(signal: np.ndarray, thickness: int) -> np.ndarray:
    """Mean over slabs of ``thickness`` slices along z (the last slab may be thinner)."""
    stops = np.arange(0, signal.shape[2], thickness)
    return np.add.reduceat(signal, stops, axis=2) / np.diff([*stops, signal.shape[2]])


def _thin_slices(slabs: np.ndarray, thickness: int, depth: int) -> np.ndarray:
    """Linear interpolation of slab centres back to ``depth`` 1 mm slices."""
    centres = np.minimum(np.arange(slabs.shape[2]) * thickness + (thickness - 1) / 2.0, depth - 1)
    position = np.interp(np.arange(depth), centres, np.arange(slabs.shape[2]))
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, slabs.shape[2] - 1)
    weight = (position - low).astype(np.float32)
    return slabs[..., low] * (1.0 - weight) + slabs[..., high] * weight


def generate_case(case_id: str, *, seed: int, appearance: str | Appearance = "course") -> SyntheticCase:
    """Generate one BraTS-like case in memory.

    Parameters
    ----------
    case_id : str
        Name of the case (used for file names only).
    seed : int
        Non-negative seed; equal seeds give identical arrays. Use
        :func:`case_seed` to derive per-case seeds from a dataset seed.
    appearance : str or Appearance, optional
        A name in :data:`APPEARANCES` or an :class:`Appearance`. The anatomy
        and the tumour depend on ``seed`` only, so one seed under two
        appearances is the same patient on two scanners.

    Returns
    -------
    SyntheticCase
        Four ``int16`` modalities and the ``uint8`` label volume, all of shape
        ``BRATS.shape`` (240, 240, 155), plus their shared affine.

    Raises
    ------
    ValueError
        If ``seed`` is negative or ``appearance`` is not a known name.

    Examples
    --------
    >>> case = generate_case("Synth_0000", seed=1)
    >>> case.images["flair"].shape, case.seg.dtype
    ((240, 240, 155), dtype('uint8'))
    >>> elsewhere = generate_case("Synth_0000", seed=1, appearance="second_site")
    >>> bool((elsewhere.seg == case.seg).all()), bool((elsewhere.images["t1"] == case.images["t1"]).all())
    (True, False)
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    appearance = _appearance(appearance)
    rng = np.random.default_rng(seed)
    affine = _case_affine(rng)
    start, shape = _brain_box()
    tissue, caps, ventricles = _anatomy(rng, start, tuple(shape))
    brain = tissue > -0.5
    labels, edema_weight = _tumours(rng, tissue)
    labels[~brain] = 0
    spots = _white_matter_spots(rng, tissue, labels)
    style = {
        "caps": rng.uniform(0.3, 0.5),
        "spots": rng.uniform(0.25, 0.4),
        "edema": rng.uniform(0.8, 1.1),
        "vessels": _smooth_field(rng, tuple(shape), (12, 12, 10)),
    }
    texture = _smooth_field(rng, tuple(shape), (24, 24, 20))
    # The case's contrasts come from a stream of their own, so the anatomy never depends on them.
    look_rng = np.random.default_rng([seed, 1]) if appearance.contrast_jitter else None
    looks = _case_looks(appearance, look_rng, style["edema"])
    box = tuple(slice(b, b + s) for b, s in zip(start, shape))
    images = {}
    for name in BRATS.modalities:
        relative = _modality(name, tissue, labels, edema_weight, caps, ventricles, spots, style, looks)
        relative = _relaxation_curve(name, relative, appearance.relaxation)
        full = np.zeros(BRATS.shape, dtype=np.int16)
        full[box] = _acquire(rng, relative, brain, texture, tuple(shape), appearance)
        images[name] = full
    seg = np.zeros(BRATS.shape, dtype=np.uint8)
    seg[box] = labels
    return SyntheticCase(case_id=case_id, images=images, seg=seg, affine=affine)


def _appearance(appearance: str | Appearance) -> Appearance:
    if isinstance(appearance, Appearance):
        return appearance
    if appearance not in APPEARANCES:
        raise ValueError(f"unknown appearance {appearance!r}; choose one of {sorted(APPEARANCES)}")
    return APPEARANCES[appearance]


# --------------------------------------------------------------------------- writing


def is_complete_case(case_dir: str | os.PathLike) -> bool:
    """True when ``case_dir`` holds all five ``<case>_<suffix>.nii.gz`` files."""
    case_dir = Path(case_dir)
    return all((case_dir / f"{case_dir.name}_{s}.nii.gz").is_file() for s in _SUFFIXES)


def write_case(out_dir: str | os.PathLike, case_id: str, *, seed: int, appearance: str | Appearance = "course") -> Path:
    """Generate a case and write it as a BraTS-2017 folder, atomically.

    The five files are written into a temporary folder next to the target,
    which is then renamed, so ``out_dir/case_id`` is either complete or absent.
    A complete existing folder is left as it is (resume after interruption).

    Parameters
    ----------
    out_dir : path
        Dataset folder; created if missing.
    case_id : str
        Case folder name and file prefix.
    seed : int
        Seed passed to :func:`generate_case`.
    appearance : str or Appearance, optional
        Passed to :func:`generate_case`.

    Returns
    -------
    pathlib.Path
        The case folder ``out_dir/case_id``.

    Raises
    ------
    ValueError
        If ``case_id`` is empty or contains a path separator.
    """
    import nibabel as nib

    if not case_id or os.sep in case_id or case_id in (".", ".."):
        raise ValueError(f"case_id must be a plain folder name, got {case_id!r}")
    target = Path(out_dir) / case_id
    if is_complete_case(target):
        return target
    case = generate_case(case_id, seed=seed, appearance=appearance)
    volumes = {**case.images, "seg": case.seg}
    with atomic_dir(target) as staging:
        for suffix in _SUFFIXES:
            image = nib.Nifti1Image(volumes[suffix], case.affine)
            image.header.set_xyzt_units("mm", "sec")
            nib.save(image, staging / f"{case_id}_{suffix}.nii.gz")
        if target.exists():  # an incomplete leftover, e.g. copied in by hand
            shutil.rmtree(target)
    return target


def _write_indexed(args: tuple[str, str, int, str | Appearance]) -> str:
    out_dir, case_id, seed, appearance = args
    return str(write_case(out_dir, case_id, seed=seed, appearance=appearance))


def make_dataset(
    out_dir: str | os.PathLike,
    n_cases: int,
    *,
    seed: int = 0,
    workers: int = 1,
    prefix: str = "Synth",
    progress: bool = True,
    appearance: str | Appearance = "course",
    only: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``n_cases`` synthetic cases into ``out_dir`` (skips complete ones).

    Parameters
    ----------
    out_dir : path
        Dataset folder.
    n_cases : int
        Number of cases ``<prefix>_0000`` ... to make.
    seed : int, optional
        Dataset seed; case ``i`` uses ``case_seed(seed, i)``.
    workers : int, optional
        Processes to use (1 = in this process).
    prefix : str, optional
        Case name prefix.
    progress : bool, optional
        Show a tqdm progress bar.
    appearance : str or Appearance, optional
        How the scanner renders the cases (:data:`APPEARANCES`).
    only : sequence of str, optional
        Write just these of the ``n_cases`` case ids: the same patients as in
        the full set (each keeps its seed), for example the test cases of
        the course seen by another scanner.

    Returns
    -------
    list of pathlib.Path
        Case folders in index order.

    Raises
    ------
    ValueError
        If ``n_cases`` or ``seed`` is negative, ``workers`` < 1, or ``only``
        names a case that is not among the ``n_cases``.

    Examples
    --------
    >>> make_dataset("data/synthetic", 4, seed=0, workers=2)  # doctest: +SKIP
    """
    from tqdm import tqdm  # text, never a widget

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    names = case_ids(n_cases, prefix=prefix)
    missing = sorted(set(only or ()) - set(names))
    if missing:
        raise ValueError(f"only names cases outside the {n_cases} of this set: {missing[:5]}")
    jobs = [(str(out_dir), cid, case_seed(seed, i), appearance) for i, cid in enumerate(names)
            if only is None or cid in only]
    bar = dict(total=len(jobs), desc="synthetic cases", unit="case", disable=not progress)
    if workers == 1 or len(jobs) <= 1:
        return [Path(_write_indexed(job)) for job in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [Path(p) for p in tqdm(pool.map(_write_indexed, jobs), **bar)]
