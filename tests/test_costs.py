"""tutorial_lib.costs: FLOPs and memory counted from layer shapes, against hand counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tutorial_lib import costs, models, training

# One hand-counted case per layer kind, shape: (kernel, Cin, Cout, voxels) -> FLOPs
FLOP_CASES = [
    ((3, 3, 3), 1, 32, 16**3, 2 * 27 * 1 * 32 * 4096),
    ((1, 1, 1), 32, 1, 8, 2 * 32 * 8),
    ((3, 3, 3), 512, 256, 1, 2 * 27 * 512 * 256),
]


@pytest.mark.parametrize("kernel, c_in, c_out, voxels, expected", FLOP_CASES)
def test_conv_flops(kernel, c_in, c_out, voxels, expected) -> None:
    assert costs.conv_flops(kernel, c_in, c_out, voxels) == expected


@pytest.fixture(scope="module")
def tiny_unet():
    # 16^3 input, widths 2 -> 4: two 3^3 convs per level, one stride-2 transposed conv, a 1x1x1 head.
    return models.unet((16, 16, 16, 1), filters=(2, 4))


def test_forward_flops_counts_the_transposed_convolution_on_its_input_voxels(tiny_unet) -> None:
    by_hand = [(27, 1, 2, 4096), (27, 2, 2, 4096), (27, 2, 4, 512), (27, 4, 4, 512),
               (27, 4, 2, 512),  # the transposed conv: 8^3 input voxels, not 16^3 outputs
               (27, 4, 2, 4096), (27, 2, 2, 4096), (1, 2, 1, 4096)]
    expected = sum(2 * k * c_in * c_out * voxels for k, c_in, c_out, voxels in by_hand)
    assert costs.forward_flops(tiny_unet) == expected
    assert costs.forward_flops(tiny_unet, batch_size=3) == 3 * expected


def test_activation_bytes_halve_under_bfloat16_except_the_float32_output() -> None:
    float32 = costs.activation_bytes(models.unet((16, 16, 16, 1), filters=(2, 4)))
    with training.precision_scope("bfloat16"):
        mixed = costs.activation_bytes(models.unet((16, 16, 16, 1), filters=(2, 4)))
    assert float32["input"] == 16**3 * 4
    head = list(float32)[-1]  # the sigmoid output stays float32 for a stable loss
    assert mixed[head] == float32[head]
    assert all(mixed[name] * 2 == float32[name] for name in float32 if name not in ("input", head))


def test_training_memory_counts_adam_state_and_scales_activations_with_the_batch(tiny_unet) -> None:
    one, four = costs.training_memory(tiny_unet), costs.training_memory(tiny_unet, batch_size=4)
    assert one["weights"] == 4 * tiny_unet.count_params()
    assert one["optimizer"] == 2 * one["weights"] and four["weights"] == one["weights"]
    assert four["activations"] == 4 * one["activations"]


def test_the_table1_network_in_bfloat16_needs_about_half_the_activation_memory() -> None:
    shape = (192, 192, 160, 1)
    float32 = costs.training_memory(models.paper_table1(shape))
    with training.precision_scope("bfloat16"):
        mixed = costs.training_memory(models.paper_table1(shape))
    assert float32["weights"] == 4 * 13_522_721 == mixed["weights"]  # master weights stay float32
    assert 0.5 <= mixed["activations"] / float32["activations"] < 0.55


def _growth_in_a_fresh_python(before: str, block: str) -> str:
    """What PeakGrowth prints for ``block`` after ``before``, in a fresh interpreter (no earlier peak of ours)."""
    code = "\n".join(["from tutorial_lib.costs import PeakGrowth", before, "with PeakGrowth() as growth:",
                      f"    {block}", "print(growth.bytes)"])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1]).stdout


def test_peak_growth_sees_a_block_that_goes_above_the_earlier_peak() -> None:
    printed = _growth_in_a_fresh_python("", "block = b'x' * (300 * 2**20)")
    assert 290 * 2**20 <= int(printed) <= 400 * 2**20, printed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="only Linux lets a process reset its peak mark")
def test_peak_growth_is_the_blocks_own_even_below_an_earlier_peak() -> None:
    printed = _growth_in_a_fresh_python("first = b'x' * (300 * 2**20); del first", "block = b'x' * (50 * 2**20)")
    assert 45 * 2**20 <= int(printed) <= 120 * 2**20, printed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="compares with Linux's own figure")
def test_the_getrusage_fallback_reports_bytes_like_linux(monkeypatch) -> None:
    through_proc = costs.peak_rss_bytes()

    def no_proc(path, *args, **kwargs):
        raise OSError(f"{path}: not mounted")

    monkeypatch.setattr("builtins.open", no_proc)
    through_getrusage = costs.peak_rss_bytes()
    # The same peak two ways: getrusage may also hold what this process had before it exec'd.
    assert 0.9 * through_proc <= through_getrusage <= 10 * through_proc
