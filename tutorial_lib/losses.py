"""Segmentation losses, written with ``keras.ops`` only.

Every loss has the Keras signature ``fn(y_true, y_pred) -> scalar`` where
``y_true`` is a binary mask and ``y_pred`` holds sigmoid probabilities of the
same shape, channels-last: ``(batch, x, y, z, channels)`` or
``(batch, x, y, channels)``.

Shared conventions
------------------
- Inputs are cast to float32 first, so the loss is computed in float32 even
  when a mixed-precision model hands over float16 tensors.
- ``EPSILON`` (1e-7) is added to every denominator and clips probabilities
  inside logarithms. It keeps the value *and the gradient* finite when
  prediction and truth are both all zero, and changes results only in the
  seventh decimal otherwise.
- ``reduction`` (overlap losses only):

  * ``"batch"`` sums overlaps over the whole batch and all voxels, then forms
    one ratio: the paper's way, and the most stable when some samples hold no
    tumour.
  * ``"sample"`` forms one ratio per sample (sums over all axes but the
    first) and averages them: each volume counts equally, however big its
    tumour.
  * ``"channel"`` forms one ratio per channel (sums over the batch and the
    voxels, all axes but the last) and averages them: with one channel per
    region (WT, TC, ET), each region counts equally, however few voxels it
    has, where ``"batch"`` lets the largest region dominate the pooled ratio.

  Voxel-wise losses (cross-entropy, focal) are means over all voxels, where
  the two reductions coincide for equally sized samples.

Losses are registered as Keras serializable objects, so a saved model that
was compiled with one of them loads again.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import keras
from keras import ops

__all__ = [
    "EPSILON",
    "dice_probability_loss",
    "soft_dice_loss",
    "binary_crossentropy_loss",
    "sensitivity_specificity_loss",
    "cosine_loss",
    "tversky_loss",
    "focal_loss",
    "dice_ce_loss",
    "LOSSES",
    "NamedLoss",
    "get_loss",
]

EPSILON = 1e-7
_REDUCTIONS = ("batch", "sample", "channel")
_register = keras.saving.register_keras_serializable(package="tutorial_lib")


def _as_float32(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    # Symbolic shapes may hold None; only sizes known on both sides can disagree.
    if len(true_shape) != len(pred_shape) or any(
        a is not None and b is not None and a != b for a, b in zip(true_shape, pred_shape)
    ):
        raise ValueError(f"y_true shape {true_shape} != y_pred shape {pred_shape}")
    return y_true, y_pred


def _total(x: Any, reduction: str) -> Any:
    """Sum over everything (``"batch"``), all axes but the first (``"sample"``) or but the last (``"channel"``)."""
    if reduction == "batch":
        return ops.sum(x)
    if reduction == "sample":
        return ops.sum(x, axis=tuple(range(1, len(x.shape))))
    if reduction == "channel":
        return ops.sum(x, axis=tuple(range(len(x.shape) - 1)))
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {_REDUCTIONS}")


@_register
def dice_probability_loss(y_true: Any, y_pred: Any, *, reduction: str = "batch") -> Any:
    """The paper's Dice loss on probabilities, ``-2 * sum(X * Y) / (sum(X) + sum(Y))``.

    ``X`` are the predicted probabilities (not binarised, so the loss is
    differentiable) and ``Y`` the ground truth. The value runs from -1
    (perfect) to 0. With ``reduction="sample"`` a sample whose truth and
    prediction are both empty scores 0, the worst value: the formula has no
    notion of a correctly empty volume.

    Parameters
    ----------
    y_true, y_pred : tensor
        Binary truth and probabilities, ``(batch, ..., channels)``.
    reduction : {"batch", "sample", "channel"}, optional
        See the module docstring.

    Returns
    -------
    scalar tensor, float32

    Examples
    --------
    >>> float(dice_probability_loss([[1.0, 0.0]], [[0.5, 0.5]]))  # -2*0.5/(1+1)
    -0.5

    Two channels, a large region found and a small one missed: pooled, the
    large one hides the miss; per channel, the miss costs half the score.

    >>> truth = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]  # (voxels, channels)
    >>> found = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    >>> round(float(dice_probability_loss(truth, found)), 3)  # -2*3/(4+3)
    -0.857
    >>> round(float(dice_probability_loss(truth, found, reduction="channel")), 3)  # mean of -1 and -0
    -0.5
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    overlap = _total(y_true * y_pred, reduction)
    sizes = _total(y_true, reduction) + _total(y_pred, reduction)
    return ops.mean(-2.0 * overlap / (sizes + EPSILON))


@_register
def soft_dice_loss(
    y_true: Any, y_pred: Any, *, smooth: float = 1.0, reduction: str = "batch"
) -> Any:
    """Smoothed soft Dice loss, ``1 - (2 * sum(X * Y) + s) / (sum(X) + sum(Y) + s)``.

    The smoothing term ``s`` makes an empty prediction of an empty truth a
    perfect score (loss 0) and softens gradients on tiny tumours.

    Parameters
    ----------
    y_true, y_pred : tensor
        Binary truth and probabilities, ``(batch, ..., channels)``.
    smooth : float, optional
        Added to numerator and denominator.
    reduction : {"batch", "sample"}, optional
        See the module docstring.

    Returns
    -------
    scalar tensor, float32, in [0, 1]

    Examples
    --------
    >>> round(float(soft_dice_loss([[1.0, 0.0]], [[1.0, 0.0]], smooth=0.0)), 6)
    0.0
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    overlap = _total(y_true * y_pred, reduction)
    sizes = _total(y_true, reduction) + _total(y_pred, reduction)
    return ops.mean(1.0 - (2.0 * overlap + smooth) / (sizes + smooth + EPSILON))


@_register
def binary_crossentropy_loss(y_true: Any, y_pred: Any) -> Any:
    """Mean binary cross-entropy ``-[Y log X + (1 - Y) log(1 - X)]`` over all voxels.

    Probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` before the logarithm.

    Parameters
    ----------
    y_true, y_pred : tensor
        Binary truth and probabilities, ``(batch, ..., channels)``.

    Returns
    -------
    scalar tensor, float32

    Examples
    --------
    >>> round(float(binary_crossentropy_loss([[1.0]], [[0.5]])), 4)  # log 2
    0.6931
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    return -ops.mean(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))


@_register
def sensitivity_specificity_loss(
    y_true: Any, y_pred: Any, *, weight: float = 0.9, reduction: str = "batch"
) -> Any:
    """Sensitivity-specificity loss of Brosch et al. (2015), weighted towards sensitivity.

    ``w * sum((Y - X)^2 * Y) / sum(Y) + (1 - w) * sum((Y - X)^2 * (1 - Y)) / sum(1 - Y)``

    The first term is the mean squared error over tumour voxels (it falls as
    sensitivity rises), the second the same over background voxels
    (specificity). The paper weighted sensitivity about 9:1 over specificity,
    hence ``weight=0.9``; Brosch et al. themselves used a small weight (0.05)
    on the first term for lesions much rarer than tumours. Minimising this
    error is the usual differentiable reading of the paper's "minimise the
    negative weighted sum of sensitivity and specificity".

    Parameters
    ----------
    y_true, y_pred : tensor
        Binary truth and probabilities, ``(batch, ..., channels)``.
    weight : float, optional
        Weight ``w`` of the sensitivity term, in [0, 1].
    reduction : {"batch", "sample"}, optional
        See the module docstring.

    Returns
    -------
    scalar tensor, float32, in [0, 1]

    Raises
    ------
    ValueError
        If ``weight`` is outside [0, 1].

    Examples
    --------
    >>> round(float(sensitivity_specificity_loss([[1.0, 0.0]], [[0.5, 0.0]])), 4)  # 0.9 * 0.25
    0.225
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight!r}")
    y_true, y_pred = _as_float32(y_true, y_pred)
    squared_error = ops.square(y_true - y_pred)
    sensitivity_term = _total(squared_error * y_true, reduction) / (_total(y_true, reduction) + EPSILON)
    background = 1.0 - y_true
    specificity_term = _total(squared_error * background, reduction) / (
        _total(background, reduction) + EPSILON
    )
    return ops.mean(weight * sensitivity_term + (1.0 - weight) * specificity_term)


@_register
def cosine_loss(y_true: Any, y_pred: Any, *, reduction: str = "batch") -> Any:
    """``1 - cos(X, Y)``, the cosine distance of prediction and truth seen as vectors.

    Norms are ``sqrt(sum(v^2) + EPSILON)``: the epsilon sits inside the root
    because the root's own gradient is infinite at zero.

    Parameters
    ----------
    y_true, y_pred : tensor
        Binary truth and probabilities, ``(batch, ..., channels)``.
    reduction : {"batch", "sample"}, optional
        ``"batch"`` treats the whole batch as one vector, ``"sample"`` each sample.

    Returns
    -------
    scalar tensor, float32, in [0, 1] for non-negative inputs

    Examples
    --------
    >>> round(float(cosine_loss([[1.0, 0.0]], [[1.0, 1.0]])), 4)  # 1 - 1/sqrt(2)
    0.2929
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    dot = _total(y_true * y_pred, reduction)
    norms = ops.sqrt(_total(ops.square(y_true), reduction) + EPSILON) * ops.sqrt(
        _total(ops.square(y_pred), reduction) + EPSILON
    )
    return ops.mean(1.0 - dot / norms)


@_register
def tversky_loss(
    y_true: Any,
    y_pred: Any,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1.0,
    reduction: str = "batch",
) -> Any:
    """Tversky loss (Salehi et al. 2017), ``1 - (TP + s) / (TP + a FP + b FN + s)``.

    Soft counts: ``TP = sum(X Y)``, ``FP = sum(X (1 - Y))``, ``FN = sum((1 - X) Y)``.
    ``alpha = beta = 0.5`` is the soft Dice loss; ``beta > alpha`` punishes
    missed tumour more than false alarms.

    Parameters
    ----------
    y_true, y_pred : tensor
        Binary truth and probabilities, ``(batch, ..., channels)``.
    alpha, beta : float, optional
        Weights of false positives and false negatives.
    smooth : float, optional
        Added to numerator and denominator.
    reduction : {"batch", "sample"}, optional
        See the module docstring.

    Returns
    -------
    scalar tensor, float32, in [0, 1]

    Examples
    --------
    >>> round(float(tversky_loss([[1.0, 0.0]], [[0.5, 0.5]], smooth=0.0)), 4)  # 1 - .5/(.5+.15+.35)
    0.5
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    true_positive = _total(y_pred * y_true, reduction)
    false_positive = _total(y_pred * (1.0 - y_true), reduction)
    false_negative = _total((1.0 - y_pred) * y_true, reduction)
    denominator = true_positive + alpha * false_positive + beta * false_negative + smooth + EPSILON
    return ops.mean(1.0 - (true_positive + smooth) / denominator)


@_register
def focal_loss(y_true: Any, y_pred: Any, *, gamma: float = 2.0, alpha: float = 0.25) -> Any:
    """Binary focal loss (Lin et al. 2017), ``-a_t (1 - p_t)^gamma log(p_t)``, averaged over voxels.

    ``p_t`` is the probability given to the true class, ``a_t = alpha`` on
    tumour voxels and ``1 - alpha`` on background. ``gamma = 0`` and
    ``alpha = 0.5`` give half the cross-entropy.

    Parameters
    ----------
    y_true, y_pred : tensor
        Binary truth and probabilities, ``(batch, ..., channels)``.
    gamma : float, optional
        Focusing exponent; larger values down-weight easy voxels more.
    alpha : float, optional
        Weight of the tumour class.

    Returns
    -------
    scalar tensor, float32

    Examples
    --------
    >>> round(float(focal_loss([[1.0]], [[0.5]])), 4)  # 0.25 * 0.25 * log 2
    0.0433
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    p_true = y_true * y_pred + (1.0 - y_true) * (1.0 - y_pred)
    alpha_true = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
    return -ops.mean(alpha_true * ops.power(1.0 - p_true, gamma) * ops.log(p_true))


@_register
def dice_ce_loss(
    y_true: Any,
    y_pred: Any,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1.0,
    reduction: str = "batch",
) -> Any:
    """``dice_weight * soft_dice_loss + ce_weight * binary_crossentropy_loss``.

    The Dice term handles class imbalance, the cross-entropy term gives
    smooth voxel-wise gradients early in training (the nnU-Net default).

    Parameters
    ----------
    y_true, y_pred : tensor
        Binary truth and probabilities, ``(batch, ..., channels)``.
    dice_weight, ce_weight : float, optional
        Weights of the two terms.
    smooth : float, optional
        Smoothing of the Dice term.
    reduction : {"batch", "sample"}, optional
        Reduction of the Dice term, see the module docstring.

    Returns
    -------
    scalar tensor, float32

    Examples
    --------
    >>> round(float(dice_ce_loss([[1.0]], [[0.5]], smooth=0.0)), 4)  # (1 - 1/1.5) + log 2
    1.0265
    """
    dice = soft_dice_loss(y_true, y_pred, smooth=smooth, reduction=reduction)
    return dice_weight * dice + ce_weight * binary_crossentropy_loss(y_true, y_pred)


LOSSES: dict[str, Callable[..., Any]] = {
    "dice_probability": dice_probability_loss,
    "soft_dice": soft_dice_loss,
    "binary_crossentropy": binary_crossentropy_loss,
    "sensitivity_specificity": sensitivity_specificity_loss,
    "cosine": cosine_loss,
    "tversky": tversky_loss,
    "focal": focal_loss,
    "dice_ce": dice_ce_loss,
}


@_register
class NamedLoss(keras.losses.Loss):
    """A loss of ``LOSSES`` with its options bound, as a Keras ``Loss`` object.

    Keras logs it under ``name`` and saves it with the model, options
    included. Inputs are converted to float32 (not to a mixed-precision
    policy's float16).

    Parameters
    ----------
    loss_name : str
        Key of ``LOSSES``.
    name : str, optional
        Name in training logs; ``loss_name`` by default.
    **options
        Keyword options of the loss function (its own ``reduction`` among
        them; Keras' reduction stays "sum_over_batch_size", which leaves a
        scalar loss as it is).
    """

    def __init__(self, loss_name: str, name: str | None = None, **options: Any) -> None:
        super().__init__(name=name or loss_name, dtype="float32")
        self.loss_name = loss_name
        self.options = options

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Evaluate the bound loss."""
        return LOSSES[self.loss_name](y_true, y_pred, **self.options)

    def get_config(self) -> dict[str, Any]:
        """Serialisable settings."""
        return {"name": self.name, "loss_name": self.loss_name, **self.options}


def get_loss(name: str, **kwargs: Any) -> NamedLoss:
    """Look a loss up by name and bind its keyword options.

    Parameters
    ----------
    name : str
        A key of ``LOSSES`` (``"dice_probability"``, ``"soft_dice"`` ...).
    **kwargs
        Options of that loss, e.g. ``weight=0.9`` or ``reduction="sample"``.

    Returns
    -------
    NamedLoss
        Callable as ``loss(y_true, y_pred)``; named ``name`` in training logs;
        saves with the model, options included.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the valid names) or an
        option does not belong to that loss.

    Examples
    --------
    >>> loss = get_loss("sensitivity_specificity", weight=0.9)
    >>> loss.name
    'sensitivity_specificity'
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names are {sorted(LOSSES)}")
    options = set(inspect.signature(LOSSES[name]).parameters) - {"y_true", "y_pred"}
    unknown = sorted(set(kwargs) - options)
    if unknown:
        raise ValueError(f"loss {name!r} has no options {unknown}; it takes {sorted(options)}")
    return NamedLoss(name, **kwargs)
