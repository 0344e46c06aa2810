"""Constants and run profiles shared by every chapter.

The BraTS label values, the evaluation regions built from them and the
geometry of the prepared cache live here and nowhere else, so a reader who
wants to know "what does label 4 mean" or "how big is a cropped volume" has
exactly one place to look.

Shape convention used across ``tutorial_lib``: channels-last,
``(batch, x, y, z, channels)`` for 3D and ``(batch, x, y, channels)`` for 2D.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["BratsConvention", "BRATS", "PROFILES", "get_profile"]


@dataclass(frozen=True)
class BratsConvention:
    """The BraTS (2017-2021) conventions every module follows.

    Attributes
    ----------
    labels : mapping of int to str
        Label value -> meaning. Enhancing tumour is 4 (BraTS 2023 uses 3 and
        the Medical Segmentation Decathlon another scheme; importers map both
        to this one).
    regions : mapping of str to tuple of int
        Evaluation regions as unions of labels: whole tumour (WT), tumour
        core (TC) and enhancing tumour (ET).
    modalities : tuple of str
        Channel order of every image array in the cache.
    shape : tuple of int
        Original grid, ``(x, y, z)`` voxels at 1 mm isotropic spacing.
    spacing_mm : tuple of float
        Voxel size of the original grid.
    crop_shape : tuple of int
        Cache grid before down-sampling: the paper's 192 x 192 in-plane
        pseudo-crop, and 155 slices zero-padded to 160 so that four 2x
        poolings divide the depth (the paper's 154 does not).
    hd95_worst_mm : float
        Hausdorff distance reported when exactly one of prediction and truth is
        empty: the diagonal of the 240 x 240 x 155 grid, as in the official
        BraTS evaluation.
    """

    labels: Mapping[int, str] = field(
        default_factory=lambda: MappingProxyType(
            {0: "background", 1: "necrotic / non-enhancing core", 2: "edema", 4: "enhancing tumour"}
        )
    )
    regions: Mapping[str, tuple[int, ...]] = field(
        default_factory=lambda: MappingProxyType({"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)})
    )
    modalities: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
    shape: tuple[int, int, int] = (240, 240, 155)
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop_shape: tuple[int, int, int] = (192, 192, 160)
    hd95_worst_mm: float = 373.13

    @property
    def region_labels(self) -> Mapping[str, int]:
        """For each region, outermost first, the one label it holds beyond the next region inside it.

        ``{"WT": 2, "TC": 1, "ET": 4}``: edema, necrotic core, enhancing tumour.
        Painting these values in this order over zeros turns nested region
        masks back into a label volume.

        Raises
        ------
        ValueError
            If ``regions`` are not nested so that each adds exactly one label.
        """
        names = list(self.regions)
        labels = {}
        for outer, inner in zip(names, [*names[1:], None]):
            extra = set(self.regions[outer]) - set(self.regions[inner] if inner else ())
            if len(extra) != 1:
                raise ValueError(f"region {outer} minus {inner} is not a single label: {sorted(extra)}")
            (labels[outer],) = extra
        return MappingProxyType(labels)


BRATS = BratsConvention()


def _frozen(groups: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({name: MappingProxyType(dict(values)) for name, values in groups.items()})


# Run profiles: the one place that sizes every chapter. Each profile has a
# "data" group (read by every chapter) and one group per experiment; a chapter
# reads ``get_profile(profile, "<group>")``, and its papermill parameters left
# at None take these values (the learning rate is Adam's, for the group's
# networks and training). "patch_unet" is shared: chapter 06 trains that
# network and chapter 07 reuses it. "execution" is read by the scripts that run
# the chapters: the longest a single cell may run (None: no limit) when
# scripts/build_course.py executes them for the book, and when
# scripts/assignments.py grades a student's copy (a student's loop may never end);
# and how many chapters the book build executes at once (book_jobs), each
# kernel then given its share of the CPU cores. The ci chapters train small
# networks whose TensorFlow ops barely use a second core, and spend part of
# their time in Python, so on 2 cores three chapters at once finished the
# build soonest (book/running.md); bigger profiles fill the machine (or one
# GPU) with one chapter. Side by side, chapters start in book_start_order
# (longest first; the rest in table-of-contents order), so that the short ones
# fill the end: started in table-of-contents order, chapter 07 ran alone for
# the build's last 50 s. "threads" fixes TensorFlow's threads per operation
# (chapters.open_chapter): the ci networks then train to the same last bit
# however many cores or kernels a machine has, so a verdict cannot change with
# the machine; bigger profiles leave the count to TensorFlow (one per core).
# Chapter 07 goes before 06 although it reuses 06's network: whichever asks
# first trains it and the other waits (run cache). "grid_workers" is how many
# local worker processes train a chapter's grid side by side
# (tutorial_lib.workers; "gpus": one per visible GPU, each seeing its own):
# alone on 2 cores, two workers trained chapter 05's ci grid 1.2x as fast,
# but the ci build already runs three chapters on those 2 cores, and a
# second worker per chapter only made it slower (book/many_machines.md).
# "another_site" (chapter 08) trains chapter 06's network four ways (with and
# without augmentation, on the course's images and on the varied generator's),
# each with `seeds` seeds; the augmentation settings are the fields of
# tutorial_lib.augment.Augmentation, close to nnU-Net's defaults. "tool" (chapter 09) ensembles
# `ensemble_size` seeds of chapter 06's network, `ensembles` times over disjoint seeds, and bins
# probabilities `bins` ways for calibration.
_AUGMENTATION = MappingProxyType(dict(
    flip_probability=0.5, rotation_probability=0.2, rotation_degrees=15.0, scale_probability=0.2,
    scale_range=(0.85, 1.15), brightness_probability=0.15, brightness_range=(0.75, 1.25),
    contrast_probability=0.15, contrast_range=(0.75, 1.25), gamma_probability=0.3, gamma_range=(0.7, 1.5),
    noise_probability=0.1, noise_sigma=0.3, blur_probability=0.1, blur_sigma_range=(0.5, 1.0),
    bias_probability=0.1, bias_strength=0.3, low_resolution_probability=0.125, low_resolution_range=(1.0, 2.0),
))
_PROFILES: dict[str, Mapping[str, Mapping[str, Any]]] = {
    # 2-core CI machine: every chapter in a few minutes.
    "ci": _frozen(
        {
            # 22 train / 5 val / 20 test; grid 48 x 48 x 40. The study's share would leave 5 test cases; a
            # synthetic test case costs only inference, and a verdict needs many (tutorial_lib.verdicts).
            "data": dict(n_cases=47, downsample=4, test_cases=20),
            # Adam at 3e-3 for 2D: from the prior start a 2D network at 1e-3 still predicted nothing after its
            # first epoch, and two of six seeds never started within chapter 04's three epochs.
            "baseline_2d": dict(learning_rate=3e-3, epochs=2, batch_size=16, slice_step=2, filters=(8, 16, 32),
                                sweep_widths=(4, 8, 16), sweep_levels=(2, 4)),
            # mixed_precision None: bfloat16 where a GPU is found, float32 otherwise.
            # 16 epochs from the prior start with the cosine decay: test Dice 0.61, seed SD 0.015 (8 epochs:
            # 0.54, SD 0.046; 40: 0.70 at 2.5 times the cost). 3 seeds per network for chapter 03's 3D vs 2D.
            "unet3d": dict(learning_rate=3e-3, epochs=16, filters=(8, 16, 32, 64), batch_size=2, mixed_precision=None,
                           seeds=3),
            "losses": dict(learning_rate=3e-3, epochs=2, filters=(8, 16, 32), batch_size=16, slice_step=2, seeds=3),
            # Patches: one whole-volume epoch of even a tiny 3D net is too slow on 2 cores.
            # 4 epochs and 4 seeds: with the prior start and the cosine decay a run's mean test Dice moves
            # by about 0.02 from seed to seed, and 4 seeds per arm keep the intervals near 0.1 wide;
            # a_a_seeds trains the baseline that often for chapter 05's A/A test.
            "ablations": dict(learning_rate=3e-3, epochs=4, filters=(4, 8, 16), wide_filters=(8, 16, 32),
                              patch_shape=(24, 24, 24), patches_per_case=2, batch_size=2,
                              modalities="all", seeds=4, a_a_seeds=8),
            "patch_unet": dict(learning_rate=3e-3, epochs=4, filters=(8, 16, 32), patch_shape=(24, 24, 24),
                               patches_per_case=2, batch_size=2, seeds=3),
            "another_site": dict(seeds=2, augmentation=_AUGMENTATION),
            # 3 ensembles of 2: three paired replicates for the ensemble's verdict; 6 networks for mirroring and
            # calibration (the first 3 are chapter 06's).
            "tool": dict(ensembles=3, ensemble_size=2, bins=10),
            # A hung cell should fail the CI run rather than eat its budget.
            "execution": dict(book_cell_timeout_s=600, grading_cell_timeout_s=300, book_jobs=3,
                              book_start_order=("05", "08", "04", "03", "07", "09", "02", "06"), threads=1,
                              grid_workers=1),
        }
    ),
    # A laptop CPU: tens of minutes per chapter.
    "laptop": _frozen(
        {
            "data": dict(n_cases=40, downsample=2, test_cases=None),  # grid 96 x 96 x 80
            "baseline_2d": dict(learning_rate=1e-3, epochs=4, batch_size=16, slice_step=2, filters=(8, 16, 32),
                                sweep_widths=(4, 8, 16), sweep_levels=(2, 4)),
            "unet3d": dict(learning_rate=3e-3, epochs=20, filters=(16, 32, 64, 128, 256), batch_size=1,
                           mixed_precision=None, seeds=3),
            "losses": dict(learning_rate=1e-3, epochs=5, filters=(16, 32, 64, 128), batch_size=16, slice_step=2,
                           seeds=3),
            # Patches and the study's 8 epochs: 5 whole-volume epochs left the
            # baseline at validation Dice 0 on all three seeds. 1e-3: under He
            # initialisation, 3e-3 left seeds 0 and 1 predicting tumour everywhere
            # from the first epoch; 1e-3 trained both (best validation Dice 0.75, 0.78).
            "ablations": dict(learning_rate=1e-3, epochs=8, filters=(8, 16, 32, 64), wide_filters=(16, 32, 64, 128),
                              patch_shape=(48, 48, 40), patches_per_case=2, batch_size=2,
                              modalities="all", seeds=4, a_a_seeds=12),
            "patch_unet": dict(learning_rate=3e-3, epochs=20, filters=(16, 32, 64, 128), patch_shape=(48, 48, 40),
                               patches_per_case=2, batch_size=2, seeds=3),
            "another_site": dict(seeds=3, augmentation=_AUGMENTATION),
            "tool": dict(ensembles=3, ensemble_size=2, bins=10),
            # Single training cells legitimately run for many minutes here.
            "execution": dict(book_cell_timeout_s=None, grading_cell_timeout_s=3600, book_jobs=1, book_start_order=(),
                              threads=None, grid_workers=1),
        }
    ),
    # A single modern GPU with real BraTS 2017 (285 cases) at full size.
    "gpu": _frozen(
        {
            # 192 x 192 x 160, the paper's Table 1 input; test_cases None: the study's 45 of 285
            "data": dict(n_cases=285, downsample=1, test_cases=None),
            "baseline_2d": dict(learning_rate=1e-3, epochs=4, batch_size=16, slice_step=2, filters=(8, 16, 32),
                                sweep_widths=(4, 8, 16), sweep_levels=(2, 4)),
            "unet3d": dict(learning_rate=3e-3, epochs=50, filters=(32, 64, 128, 256, 512), batch_size=2,
                           mixed_precision=None, seeds=2),
            "losses": dict(learning_rate=1e-3, epochs=5, filters=(32, 64, 128, 256), batch_size=16, slice_step=2,
                           seeds=3),
            "ablations": dict(learning_rate=3e-3, epochs=10, filters=(16, 32, 64, 128, 256),
                              wide_filters=(32, 64, 128, 256, 512), patch_shape=None,
                              patches_per_case=1, batch_size=1, modalities=("flair",), seeds=4, a_a_seeds=8),
            "patch_unet": dict(learning_rate=3e-3, epochs=50, filters=(32, 64, 128, 256, 512), patch_shape=(96, 96, 96),
                               patches_per_case=2, batch_size=2, seeds=2),
            "another_site": dict(seeds=3, augmentation=_AUGMENTATION),
            # nnU-Net ensembles five networks; two of three keep the gpu chapter to six trainings.
            "tool": dict(ensembles=2, ensemble_size=3, bins=15),
            "execution": dict(book_cell_timeout_s=None, grading_cell_timeout_s=6 * 3600, book_jobs=1,
                              book_start_order=(), threads=None, grid_workers="gpus"),
        }
    ),
}


def _derived(base: Mapping[str, Mapping[str, Any]], **changes: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """Profile ``base`` with some settings of some groups replaced (a typo raises, not adds a setting)."""
    for group, values in changes.items():
        if set(values) - set(base[group]):
            raise ValueError(f"{group!r} has no settings {sorted(set(values) - set(base[group]))}")
    return _frozen({group: {**values, **changes.get(group, {})} for group, values in base.items()})


# "dry-run": the gpu profile's code path on a CPU, before anyone has a GPU
# (`make dry-run`). The study's full 192 x 192 x 160 grid, whole volumes,
# 96^3 patches and bfloat16 stay; what changes only makes it affordable: six
# synthetic cases, one epoch, one seed, narrow filters, thin 2D slicing and a
# two-width size sweep. It finds the shape, dtype, memory and time-out faults
# of the full-size path; its scores mean nothing.
_PROFILES["dry-run"] = _derived(
    _PROFILES["gpu"],
    data=dict(n_cases=6),  # 4 train / 1 val / 1 test
    baseline_2d=dict(epochs=1, slice_step=8, sweep_widths=(4, 8)),
    unet3d=dict(epochs=1, filters=(4, 8, 16, 32, 64), batch_size=1, mixed_precision="bfloat16", seeds=2),
    losses=dict(epochs=1, filters=(4, 8, 16, 32), slice_step=8, seeds=2),
    ablations=dict(epochs=1, filters=(2, 4, 8, 16, 32), wide_filters=(4, 8, 16, 32, 64), seeds=2, a_a_seeds=4),
    patch_unet=dict(epochs=1, filters=(4, 8, 16, 32, 64), seeds=2),
    another_site=dict(seeds=2),
    tool=dict(ensemble_size=2),
)
PROFILES: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType(_PROFILES)


def get_profile(name: str, group: str = "data", /, **overrides: Any) -> dict[str, Any]:
    """Settings of one group of run profile ``name``, merged with its data settings.

    Parameters
    ----------
    name : {"ci", "laptop", "gpu", "dry-run"}
        Profile to start from.
    group : str, optional
        ``"data"`` (``n_cases``, ``downsample``) or an experiment group such as
        ``"unet3d"`` or ``"ablations"``; the data settings are always included.
    **overrides
        Single keys to replace; a value of ``None`` keeps the profile's value,
        so papermill parameters left at ``None`` mean "use the profile".

    Returns
    -------
    dict
        The merged settings.

    Raises
    ------
    ValueError
        If ``name`` or ``group`` is unknown or an override names an unknown key.

    Examples
    --------
    >>> get_profile("ci", "unet3d", epochs=3)["epochs"], get_profile("ci")["downsample"]
    (3, 4)
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    if group not in PROFILES[name]:
        raise ValueError(f"unknown profile group {group!r}; choose one of {sorted(PROFILES[name])}")
    settings = {**PROFILES[name]["data"], **PROFILES[name][group]}
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"unknown {group!r} settings {unknown}; valid keys are {sorted(settings)}")
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings
