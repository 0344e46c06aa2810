"""BraTS conventions: the label each nested region adds, derived from the regions."""

from __future__ import annotations

import pytest

from tutorial_lib.config import BRATS, BratsConvention


def test_region_labels_are_edema_core_enhancing_outermost_first() -> None:
    # hand-computed: WT (1, 2, 4) minus TC (1, 4) = 2; TC minus ET (4,) = 1; ET = 4
    assert list(BRATS.region_labels.items()) == [("WT", 2), ("TC", 1), ("ET", 4)]
    assert [BRATS.labels[value] for value in BRATS.region_labels.values()] == [
        "edema", "necrotic / non-enhancing core", "enhancing tumour"]


def test_regions_that_are_not_nested_one_label_apart_are_refused() -> None:
    convention = BratsConvention(regions={"WT": (1, 2, 4), "ET": (4,)})  # WT minus ET = {1, 2}
    with pytest.raises(ValueError, match=r"region WT minus ET is not a single label: \[1, 2\]"):
        _ = convention.region_labels
