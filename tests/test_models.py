"""Shapes, options and the paper's Table 1 parameter count for tutorial_lib.models."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tutorial_lib import models

# Trainable parameters per weighted layer, copied from the paper's Table 1.
TABLE1_PARAMS = {
    "conv3d_1": 896, "conv3d_2": 55360, "conv3d_3": 221312, "conv3d_4": 884992,
    "conv3d_5": 3539456, "deconvolution3d_1": 3539200, "conv3d_6": 3539200,
    "deconvolution3d_2": 884864, "conv3d_7": 442496, "deconvolution3d_3": 221248,
    "conv3d_8": 110656, "deconvolution3d_4": 55328, "conv3d_9": 27680, "conv3d_10": 33,
}
# The table's row order (weighted and weight-free layers).
TABLE1_ORDER = [
    "conv3d_1", "max_pooling3d_1", "dropout_1", "conv3d_2", "max_pooling3d_2", "dropout_2",
    "conv3d_3", "max_pooling3d_3", "dropout_3", "conv3d_4", "max_pooling3d_4", "dropout_4",
    "conv3d_5", "dropout_5", "deconvolution3d_1", "concatenate_1", "dropout_6", "conv3d_6",
    "deconvolution3d_2", "dropout_7", "conv3d_7", "deconvolution3d_3", "dropout_8", "conv3d_8",
    "deconvolution3d_4", "dropout_9", "conv3d_9", "conv3d_10",
]


@pytest.fixture(scope="module")
def small_table1():
    return models.paper_table1((32, 32, 32, 1))  # shape: (x, y, z, channels)


def test_paper_table1_parameter_count(small_table1):
    full_size = models.paper_table1()  # shape: (192, 192, 160, 1), the paper's input
    assert sum(TABLE1_PARAMS.values()) == 13_522_721
    for model in (small_table1, full_size):
        assert model.count_params() == 13_522_721
        assert {name: model.get_layer(name).count_params() for name in TABLE1_PARAMS} == TABLE1_PARAMS
    assert full_size.output_shape == (None, 192, 192, 160, 1)


def test_paper_table1_layer_order_and_skip(small_table1):
    model = small_table1
    assert [layer.name for layer in model.layers[1:]] == TABLE1_ORDER
    concat_inputs = model.get_layer("concatenate_1").input
    assert [t.shape[-1] for t in concat_inputs] == [256, 256]
    assert model.output_shape == (None, 32, 32, 32, 1)
    assert model.get_layer("dropout_5").rate == pytest.approx(0.2)


@pytest.mark.parametrize(
    "input_shape, num_classes, expected, first_conv",
    [
        ((32, 32, 1), 1, (2, 32, 32, 1), "conv2d_1"),  # shape: (x, y, c) FLAIR only -> a 2D net
        ((32, 16, 4), 3, (2, 32, 16, 3), "conv2d_1"),  # shape: 4 modalities -> WT/TC/ET
        ((16, 16, 8, 1), 1, (2, 16, 16, 8, 1), "conv3d_1"),  # shape: (x, y, z, c) -> a 3D net
        ((16, 8, 8, 4), 3, (2, 16, 8, 8, 3), "conv3d_1"),
    ],
)
def test_unet_rank_comes_from_the_input_shape(input_shape, num_classes, expected, first_conv):
    model = models.unet(input_shape, filters=(4, 8, 16), num_classes=num_classes)
    assert model.name == f"unet{len(input_shape) - 1}d" and model.get_layer(first_conv)
    prediction = np.asarray(model(np.zeros((2, *input_shape), "float32")))
    assert prediction.shape == expected
    assert prediction.dtype == np.float32
    assert np.all((prediction >= 0) & (prediction <= 1))


def _param_count(**options):
    return models.unet((16, 16, 16, 1), filters=(4, 8), **options).count_params()


# Two levels, filters (4, 8), 1 input channel, 1 class; counts worked out by hand.
# shape: input (16, 16, 16, 1)
PARAM_CASES = [
    # enc 27*1*4+4=112, bottleneck 27*4*8+8=872, up 27*8*4+4=868, dec conv 27*8*4+4=868, out 5
    (dict(convs_per_level=1), 112 + 872 + 868 + 868 + 5),
    # no skip: dec conv sees 4 channels, 27*4*4+4=436
    (dict(convs_per_level=1, skips="none"), 112 + 872 + 868 + 436 + 5),
    # nearest up-sampling has no weights; dec conv sees 8+4 channels: 27*12*4+4=1300
    (dict(convs_per_level=1, upsampling="nearest"), 112 + 872 + 1300 + 5),
    # kernel 5: 125*1*4+4=504, 125*4*8+8=4008, 125*8*4+4=4004 twice
    (dict(convs_per_level=1, kernel_size=5), 504 + 4008 + 4004 + 4004 + 5),
    # second conv per level: 27*4*4+4=436 (enc, dec), 27*8*8+8=1736 (bottleneck)
    (dict(convs_per_level=2), 112 + 436 + 872 + 1736 + 868 + 868 + 436 + 5),
    # residual: 1x1 projections 1*4+4=8 (enc), 4*8+8=40 (bottleneck), 8*4+4=36 (dec, 8 -> 4)
    (dict(convs_per_level=1, residual=True), 112 + 8 + 872 + 40 + 868 + 868 + 36 + 5),
    # dropout and leaky ReLU add no weights
    (dict(convs_per_level=1, dropout=0.5, activation="leaky_relu"), 112 + 872 + 868 + 868 + 5),
]


@pytest.mark.parametrize("options, expected", PARAM_CASES)
def test_unet_parameter_counts(options, expected):
    assert _param_count(**options) == expected


def test_skip_list_selects_levels():
    model = models.unet((16, 16, 1), filters=(4, 8, 16), skips=[0])
    concatenated = [layer for layer in model.layers if layer.name.startswith("concatenate")]
    assert len(concatenated) == 1
    assert concatenated[0].output.shape == (None, 16, 16, 8)  # full resolution: 4 + 4 channels


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(18, 16, 8, 1)), "divisible"),  # shape: 18 is not a multiple of 4
        (dict(input_shape=(16, 16, 8, 1), kernel_size=4), "kernel_size"),
        (dict(input_shape=(16, 16, 8, 8, 1)), "for 2D or"),  # shape: 4 spatial axes
        (dict(input_shape=(16, 1)), "for 2D or"),  # shape: 1 spatial axis
        (dict(input_shape=(16, 16, 8, 1), kernel_size=0), "kernel_size"),
        (dict(input_shape=(16, 16, 8, 1), upsampling="bilinear"), "upsampling"),
        (dict(input_shape=(16, 16, 8, 1), activation="gelu"), "activation"),
        (dict(input_shape=(16, 16, 8, 1), skips="some"), "skips"),
        (dict(input_shape=(16, 16, 8, 1), skips=[2]), "skip levels"),
        (dict(input_shape=(16, 16, 8, 1), dropout=1.0), "dropout"),
    ],
)
def test_unet_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.unet(filters=(4, 8, 16), **kwargs)


def test_unspecified_spatial_size_is_allowed():
    model = models.unet((None, None, None, 1), filters=(4, 8))
    assert np.asarray(model(np.zeros((1, 8, 4, 6, 1), "float32"))).shape == (1, 8, 4, 6, 1)


def test_mixed_precision_output_is_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.unet((8, 8, 1), filters=(4, 8))  # shape: (x, y, channels)
        hidden = model.get_layer("conv2d_1")
        prediction = model(np.zeros((1, 8, 8, 1), "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert hidden.compute_dtype == "float16"
    assert keras.backend.standardize_dtype(prediction.dtype) == "float32"


PRIOR_CASES = [
    # shape: prior of each output channel -> the bias it starts with, log(p / (1 - p))
    ([0.5], [0.0]),
    ([0.01], [-4.59512]),
    ([0.2, 0.1, 0.05], [-1.386294, -2.197225, -2.944439]),
]


@pytest.mark.parametrize("prior, bias", PRIOR_CASES)
def test_start_at_prior_predicts_the_prior_everywhere(prior, bias):
    net = models.start_at_prior(models.unet((8, 8, 4, 2), filters=(2, 4), num_classes=len(prior)), prior)
    np.testing.assert_allclose(net.layers[-1].bias.numpy(), bias, rtol=1e-5)
    assert not net.layers[-1].kernel.numpy().any()  # every output weight starts at zero
    out = net.predict(np.random.default_rng(0).normal(size=(2, 8, 8, 4, 2)), verbose=0)  # shape: (2, 8, 8, 4, C)
    np.testing.assert_allclose(out, np.broadcast_to(prior, out.shape), rtol=1e-5)


def test_negative_output_weights_and_a_prior_bias_say_no_tumour_wherever_a_feature_fires():
    # The trap the zero weights avoid: ReLU features are >= 0, so all-negative weights can only lower the output.
    net = models.unet((8, 8, 1), filters=(2, 4))
    models.start_at_prior(net, 0.01)
    net.layers[-1].kernel.assign(-np.abs(np.random.default_rng(1).normal(size=net.layers[-1].kernel.shape)))
    out = net.predict(np.random.default_rng(2).normal(size=(4, 8, 8, 1)), verbose=0)
    assert out.max() <= 0.01 + 1e-6


@pytest.mark.parametrize("prior", [0.0, 1.0, [0.1, 0.2]])
def test_start_at_prior_rejects_a_prior_it_cannot_take(prior):
    with pytest.raises(ValueError):
        models.start_at_prior(models.unet((8, 8, 1), filters=(2, 4)), prior)
