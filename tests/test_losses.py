"""Losses against their formulas, worked out by hand on a tiny batch."""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
import pytest

from tutorial_lib import losses

# shape: (batch=2, voxels=2, channels=1)
Y_TRUE = np.array([[[1.0], [0.0]], [[0.0], [0.0]]], "float32")
Y_PRED = np.array([[[0.5], [0.5]], [[0.0], [0.5]]], "float32")
LN2 = math.log(2.0)

# Whole batch: sum(XY) = 0.5, sum(X) = 1.5, sum(Y) = 1, squared errors 0.25, 0.25, 0, 0.25.
# Per sample: sample 0 has sum(XY) = 0.5, sum(X) = 1, sum(Y) = 1; sample 1 has 0, 0.5, 0.
HAND_CASES = [
    ("dice_probability", {}, -2 * 0.5 / 2.5),
    ("dice_probability", {"reduction": "sample"}, (-2 * 0.5 / 2 + 0.0) / 2),
    ("dice_probability", {"reduction": "channel"}, -2 * 0.5 / 2.5),  # one channel: the batch's ratio
    ("soft_dice", {}, 1 - 2 / 3.5),  # (2*0.5 + 1) / (2.5 + 1)
    ("soft_dice", {"reduction": "sample"}, ((1 - 2 / 3) + (1 - 1 / 1.5)) / 2),
    ("soft_dice", {"smooth": 0.0}, 1 - 1 / 2.5),
    ("binary_crossentropy", {}, 3 * LN2 / 4),  # three voxels at p = 0.5, one certain and right
    ("sensitivity_specificity", {}, 0.9 * 0.25 / 1 + 0.1 * 0.5 / 3),
    ("sensitivity_specificity", {"weight": 0.5}, 0.5 * 0.25 + 0.5 * 0.5 / 3),
    ("sensitivity_specificity", {"reduction": "sample"}, ((0.9 * 0.25 + 0.1 * 0.25) + 0.1 * 0.25 / 2) / 2),
    ("cosine", {}, 1 - 0.5 / math.sqrt(0.75)),
    ("cosine", {"reduction": "sample"}, ((1 - 0.5 / math.sqrt(0.5)) + 1) / 2),
    ("tversky", {"smooth": 0.0}, 1 - 0.5 / (0.5 + 0.3 * 1.0 + 0.7 * 0.5)),  # TP .5, FP 1, FN .5
    ("tversky", {"smooth": 0.0, "alpha": 0.5, "beta": 0.5}, 1 - 1 / 2.5),  # = soft Dice
    ("focal", {}, (0.25 * 0.25 * LN2 + 2 * 0.75 * 0.25 * LN2) / 4),
    ("focal", {"gamma": 0.0, "alpha": 0.5}, 0.5 * 3 * LN2 / 4),  # half the cross-entropy
    ("dice_ce", {}, (1 - 2 / 3.5) + 3 * LN2 / 4),
    ("dice_ce", {"dice_weight": 0.5, "ce_weight": 2.0}, 0.5 * (1 - 2 / 3.5) + 2 * 3 * LN2 / 4),
]


@pytest.mark.parametrize("name, options, expected", HAND_CASES)
def test_loss_matches_hand_computation(name, options, expected):
    value = losses.LOSSES[name](Y_TRUE, Y_PRED, **options)
    assert float(value) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name, options, expected", HAND_CASES)
def test_get_loss_binds_options(name, options, expected):
    loss = losses.get_loss(name, **options)
    assert loss.name == name
    assert float(loss(Y_TRUE, Y_PRED)) == pytest.approx(expected, abs=1e-5)


# shape: (batch=1, voxels=3, channels=1); a perfect prediction
PERFECT = np.array([[[1.0], [0.0], [1.0]]], "float32")
PERFECT_CASES = [
    ("dice_probability", -1.0), ("soft_dice", 0.0), ("binary_crossentropy", 0.0),
    ("sensitivity_specificity", 0.0), ("cosine", 0.0), ("tversky", 0.0), ("focal", 0.0),
    ("dice_ce", 0.0),
]


@pytest.mark.parametrize("name, expected", PERFECT_CASES)
def test_perfect_prediction(name, expected):
    assert float(losses.LOSSES[name](PERFECT, PERFECT)) == pytest.approx(expected, abs=1e-5)


def _gradient(loss, y_true, y_pred):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        prediction = tf.Variable(y_pred)
        with tf.GradientTape() as tape:
            value = loss(y_true, prediction)
        return np.asarray(value), np.asarray(tape.gradient(value, prediction))
    if backend == "jax":
        import jax

        value, grad = jax.value_and_grad(lambda p: loss(y_true, p))(y_pred)
        return np.asarray(value), np.asarray(grad)
    pytest.skip(f"gradient check written for TensorFlow and JAX, not {backend}")


ZERO_CASES = [(name, {}) for name in sorted(losses.LOSSES)] + [
    (name, {"reduction": reduction})
    for name, function in sorted(losses.LOSSES.items())
    if "reduction" in inspect.signature(function).parameters
    for reduction in ("sample", "channel")
]


@pytest.mark.parametrize("name, options", ZERO_CASES)
def test_all_zero_value_and_gradient_are_finite(name, options):
    zeros = np.zeros((2, 4, 4, 3, 1), "float32")  # shape: (batch, x, y, z, channels)
    value, grad = _gradient(lambda t, p: losses.LOSSES[name](t, p, **options), zeros, zeros)
    assert np.isfinite(value)
    assert grad.shape == zeros.shape
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_float16_inputs_give_float32_loss(name):
    value = losses.LOSSES[name](Y_TRUE.astype("float16"), Y_PRED.astype("float16"))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value) == pytest.approx(float(losses.LOSSES[name](Y_TRUE, Y_PRED)), abs=1e-3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: losses.get_loss("dice"), "valid names"),
        (lambda: losses.get_loss("focal", reduction="batch"), "no options"),
        (lambda: losses.soft_dice_loss(Y_TRUE, Y_PRED, reduction="voxel"), "reduction"),
        (lambda: losses.sensitivity_specificity_loss(Y_TRUE, Y_PRED, weight=9.0), "weight"),
        (lambda: losses.dice_probability_loss(Y_TRUE, Y_PRED[:, :1]), "shape"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_sample_reduction_weighs_each_sample_equally():
    # shape: (batch=2, voxels=4, channels=1); a big tumour found, a small one missed
    y_true = np.array([[[1], [1], [1], [0]], [[1], [0], [0], [0]]], "float32")
    y_pred = np.array([[[1], [1], [1], [0]], [[0], [0], [0], [0]]], "float32")
    batch = float(losses.dice_probability_loss(y_true, y_pred))
    sample = float(losses.dice_probability_loss(y_true, y_pred, reduction="sample"))
    assert batch == pytest.approx(-2 * 3 / 7, abs=1e-6)
    assert sample == pytest.approx((-1.0 + 0.0) / 2, abs=1e-6)


def test_channel_reduction_weighs_each_region_equally():
    # shape: (batch=2, voxels=2, channels=2); channel 0 (a large region) found, channel 1 (a small one) missed
    y_true = np.array([[[1, 0], [1, 0]], [[1, 0], [0, 1]]], "float32")
    y_pred = np.array([[[1, 0], [1, 0]], [[1, 0], [0, 0]]], "float32")
    pooled = float(losses.dice_probability_loss(y_true, y_pred))
    per_region = float(losses.dice_probability_loss(y_true, y_pred, reduction="channel"))
    assert pooled == pytest.approx(-2 * 3 / 7, abs=1e-6)
    assert per_region == pytest.approx((-1.0 + 0.0) / 2, abs=1e-6)
    named = losses.get_loss("dice_probability", reduction="channel")
    assert float(named(y_true, y_pred)) == pytest.approx(per_region)


def test_named_loss_round_trips_through_config_and_trains():
    import keras as k

    loss = losses.get_loss("tversky", alpha=0.2, beta=0.8, reduction="sample")
    restored = k.losses.deserialize(k.losses.serialize(loss))
    assert restored.get_config() == loss.get_config()
    assert float(restored(Y_TRUE, Y_PRED)) == pytest.approx(float(loss(Y_TRUE, Y_PRED)))
    # shape: (batch=2, x=8, y=8, channels=1); one step of a one-layer model (cheap to compile)
    model = k.Sequential([k.Input((8, 8, 1)), k.layers.Conv2D(1, 1, activation="sigmoid")])
    model.compile(optimizer="adam", loss=loss)
    images = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    history = model.fit(images, (images > 0.5).astype("float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
