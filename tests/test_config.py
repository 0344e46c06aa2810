"""BraTS conventions: the label each nested region adds, derived from the regions."""

from __future__ import annotations

import pytest

from tutorial_lib import config
from tutorial_lib.config import BRATS, PROFILES, BratsConvention


def test_region_labels_are_edema_core_enhancing_outermost_first() -> None:
    # hand-computed: WT (1, 2, 4) minus TC (1, 4) = 2; TC minus ET (4,) = 1; ET = 4
    assert list(BRATS.region_labels.items()) == [("WT", 2), ("TC", 1), ("ET", 4)]
    assert [BRATS.labels[value] for value in BRATS.region_labels.values()] == [
        "edema", "necrotic / non-enhancing core", "enhancing tumour"]


def test_regions_that_are_not_nested_one_label_apart_are_refused() -> None:
    convention = BratsConvention(regions={"WT": (1, 2, 4), "ET": (4,)})  # WT minus ET = {1, 2}
    with pytest.raises(ValueError, match=r"region WT minus ET is not a single label: \[1, 2\]"):
        _ = convention.region_labels


# What the dry run may change: only sizes that make the gpu path affordable on a CPU.
AFFORDABILITY = {"n_cases", "epochs", "seeds", "a_a_seeds", "filters", "wide_filters", "slice_step", "sweep_widths",
                 "batch_size", "mixed_precision", "ensemble_size"}


def test_the_dry_run_keeps_the_gpu_profiles_code_path() -> None:
    gpu, dry = PROFILES["gpu"], PROFILES["dry-run"]
    assert gpu.keys() == dry.keys()
    for group in gpu:
        assert gpu[group].keys() == dry[group].keys(), group
        changed = {key for key in gpu[group] if gpu[group][key] != dry[group][key]}
        assert changed <= AFFORDABILITY, (group, changed - AFFORDABILITY)
    assert dry["data"]["downsample"] == 1 and dry["unet3d"]["mixed_precision"] == "bfloat16"
    assert dry["ablations"]["patch_shape"] is None  # whole volumes, as on the GPU
    assert len(dry["unet3d"]["filters"]) == len(gpu["unet3d"]["filters"])  # Table 1's five levels


def test_a_derived_profile_refuses_a_setting_its_base_lacks() -> None:
    with pytest.raises(ValueError, match="epoch"):
        config._derived(PROFILES["gpu"], unet3d={"epoch": 1})
