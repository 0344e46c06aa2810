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


# Run profiles: one place that sizes every chapter. Notebooks take a
# ``profile`` papermill parameter and may override any single key.
PROFILES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # 2-core CI machine: every chapter in a couple of minutes.
        "ci": MappingProxyType(
            dict(
                n_cases=32,  # synthetic cases generated: 22 train / 5 val / 5 test
                downsample=4,  # cache grid 48 x 48 x 40
                epochs_2d=2,
                epochs_3d=40,
                filters=(8, 16, 32, 64),  # four levels -> divisible by 8
                batch_size=2,
                grid_epochs=2,  # per configuration in loss/ablation grids
                max_cases=None,
            )
        ),
        # A laptop CPU: tens of minutes per chapter.
        "laptop": MappingProxyType(
            dict(
                n_cases=40,
                downsample=2,  # 96 x 96 x 80
                epochs_2d=4,
                epochs_3d=20,
                filters=(16, 32, 64, 128, 256),
                batch_size=1,
                grid_epochs=5,
                max_cases=None,
            )
        ),
        # A single modern GPU with real BraTS 2017 (285 cases) at full size.
        "gpu": MappingProxyType(
            dict(
                n_cases=285,
                downsample=1,  # 192 x 192 x 160, the paper's Table 1 input
                epochs_2d=4,
                epochs_3d=50,
                filters=(32, 64, 128, 256, 512),
                batch_size=2,
                grid_epochs=10,
                max_cases=None,
            )
        ),
    }
)


def get_profile(name: str, **overrides: Any) -> dict[str, Any]:
    """Return a copy of run profile ``name`` with ``overrides`` applied.

    Parameters
    ----------
    name : {"ci", "laptop", "gpu"}
        Profile to start from.
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
        If ``name`` is not a known profile or an override names an unknown key.

    Examples
    --------
    >>> get_profile("ci", epochs_3d=3)["epochs_3d"]
    3
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    settings = dict(PROFILES[name])
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"unknown profile keys {unknown}; valid keys are {sorted(settings)}")
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings
