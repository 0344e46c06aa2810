"""The U-Net in the Keras functional style, for 2D slices and 3D volumes.

One builder, :func:`unet`, serves both dimensions: the rank of its input shape
decides whether 2D or 3D convolution, pooling and up-sampling layers are used
(MONAI's ``BasicUNet(spatial_dims=...)`` idea). Every knob the paper's
experiments turn is a keyword argument, and ``paper_table1`` builds the paper's best model (its Table 1)
from the same helpers.

Shapes are channels-last: inputs ``(batch, x, y, channels)`` in 2D and
``(batch, x, y, z, channels)`` in 3D; outputs keep the spatial size and have
``num_classes`` sigmoid channels.

Layer names follow the numbering Keras used when the paper was written
(``conv3d_1``, ``max_pooling3d_1``, ``dropout_1``, ``deconvolution3d_1``,
``concatenate_1`` ...), so ``model.summary()`` can be read side by side with
the paper's table.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any, Sequence

import keras
import numpy as np
from keras import layers

__all__ = ["conv_block", "encoder_block", "decoder_block", "unet", "paper_table1", "start_at_prior"]

_UPSAMPLING = ("transpose", "nearest")
_ACTIVATIONS = ("relu", "leaky_relu")

# Layer classes per spatial dimension; the string is the name stem of the
# layer, chosen to match the paper's Keras 1 summary.
_LAYERS: dict[int, dict[str, tuple[type, str]]] = {
    2: {
        "conv": (layers.Conv2D, "conv2d"),
        "pool": (layers.MaxPooling2D, "max_pooling2d"),
        "transpose": (layers.Conv2DTranspose, "deconvolution2d"),
        "nearest": (layers.UpSampling2D, "up_sampling2d"),
    },
    3: {
        "conv": (layers.Conv3D, "conv3d"),
        "pool": (layers.MaxPooling3D, "max_pooling3d"),
        "transpose": (layers.Conv3DTranspose, "deconvolution3d"),
        "nearest": (layers.UpSampling3D, "up_sampling3d"),
    },
}


class _Namer:
    """Hands out ``stem_1``, ``stem_2`` ... per stem, like Keras 1 did."""

    def __init__(self) -> None:
        self._counters: defaultdict[str, itertools.count] = defaultdict(lambda: itertools.count(1))

    def __call__(self, stem: str) -> str:
        return f"{stem}_{next(self._counters[stem])}"


def _spatial_rank(tensor: Any) -> int:
    rank = len(tensor.shape) - 2  # batch and channel axes
    if rank not in _LAYERS:
        raise ValueError(
            f"expected a (batch, x, y[, z], channels) tensor, got shape {tuple(tensor.shape)}"
        )
    return rank


def _make(kind: str, rank: int, namer: _Namer | None, **kwargs: Any) -> keras.layers.Layer:
    layer_class, stem = _LAYERS[rank][kind]
    return layer_class(name=namer(stem) if namer else None, **kwargs)


def conv_block(
    x: Any,
    filters: int,
    *,
    kernel_size: int = 3,
    convs: int = 2,
    activation: str = "relu",
    residual: bool = False,
    kernel_initializer: str = "he_normal",
    namer: _Namer | None = None,
) -> Any:
    """Apply ``convs`` same-padded convolutions with ``filters`` channels.

    Parameters
    ----------
    x : tensor
        Channels-last input, ``(batch, x, y, channels)`` or ``(batch, x, y, z, channels)``.
    filters : int
        Output channels of every convolution.
    kernel_size : int, optional
        Edge length of the cubic (square in 2D) kernel.
    convs : int, optional
        Number of convolutions in a row.
    activation : {"relu", "leaky_relu"}, optional
        Non-linearity after each convolution.
    residual : bool, optional
        Add the block input to its output (through a 1x1(x1) convolution when
        the channel count changes), the ResNet idea the paper lists as future work.
    kernel_initializer : str, optional
        Keras initialiser of the convolution kernels. He initialisation keeps
        the signal's size through ReLU layers (He et al., 2015); with Keras's
        default, Glorot, a deep network without skips sometimes never starts.
    namer : callable, optional
        Produces layer names; ``None`` lets Keras choose.

    Returns
    -------
    tensor
        Same spatial size as ``x``, ``filters`` channels.

    Examples
    --------
    >>> inputs = keras.Input((16, 16, 16, 1))
    >>> tuple(conv_block(inputs, 8).shape)
    (None, 16, 16, 16, 8)
    """
    rank = _spatial_rank(x)
    shortcut = x
    for _ in range(convs):
        x = _make("conv", rank, namer, filters=filters, kernel_size=kernel_size,
                  padding="same", activation=activation, kernel_initializer=kernel_initializer)(x)
    if not residual:
        return x
    if shortcut.shape[-1] != filters:
        # A 1x1 projection is the cheapest way to match channel counts.
        shortcut = _make("conv", rank, namer, filters=filters, kernel_size=1,
                         kernel_initializer=kernel_initializer)(shortcut)
    return layers.Add(name=namer("add") if namer else None)([x, shortcut])


def encoder_block(
    x: Any, filters: int, *, dropout: float = 0.0, namer: _Namer | None = None, **conv_options: Any
) -> tuple[Any, Any]:
    """One down-sampling level: ``conv_block`` -> 2x max-pooling -> dropout.

    Parameters
    ----------
    x : tensor
        Channels-last input.
    filters : int
        Channels of this level.
    dropout : float, optional
        Dropout rate after pooling; 0 adds no layer.
    namer : callable, optional
        Produces layer names.
    **conv_options
        Passed to :func:`conv_block` (``kernel_size``, ``convs``, ``activation``, ``residual``).

    Returns
    -------
    skip, down : tensor, tensor
        The features before pooling (for a skip connection) and the pooled,
        half-size output that feeds the next level.

    Examples
    --------
    >>> skip, down = encoder_block(keras.Input((16, 16, 1)), 8)
    >>> tuple(skip.shape), tuple(down.shape)
    ((None, 16, 16, 8), (None, 8, 8, 8))
    """
    skip = conv_block(x, filters, namer=namer, **conv_options)
    down = _make("pool", _spatial_rank(x), namer, pool_size=2)(skip)
    return skip, _dropout(down, dropout, namer)


def decoder_block(
    x: Any,
    skip: Any | None,
    filters: int,
    *,
    upsampling: str = "transpose",
    kernel_size: int = 3,
    dropout: float = 0.0,
    namer: _Namer | None = None,
    **conv_options: Any,
) -> Any:
    """One up-sampling level: up-sample 2x -> [concatenate skip] -> dropout -> ``conv_block``.

    Parameters
    ----------
    x : tensor
        Channels-last input from the level below.
    skip : tensor or None
        Encoder features of the same spatial size to concatenate, or ``None``.
    filters : int
        Channels of this level.
    upsampling : {"transpose", "nearest"}, optional
        ``"transpose"``: a stride-2 transposed convolution with ``filters``
        channels and ``kernel_size`` kernel. ``"nearest"``: parameter-free
        nearest-neighbour repetition; the following convolutions then change
        the channel count.
    kernel_size : int, optional
        Kernel edge of the transposed convolution and of ``conv_block``.
    dropout : float, optional
        Dropout rate before the convolutions; 0 adds no layer.
    namer : callable, optional
        Produces layer names.
    **conv_options
        Passed to :func:`conv_block` (``convs``, ``activation``, ``residual``,
        ``kernel_initializer``); the transposed convolution uses the same
        activation and initialiser.

    Returns
    -------
    tensor
        Twice the spatial size of ``x``, ``filters`` channels.

    Examples
    --------
    >>> tuple(decoder_block(keras.Input((8, 8, 16)), None, 8).shape)
    (None, 16, 16, 8)
    """
    rank = _spatial_rank(x)
    if upsampling == "transpose":
        x = _make("transpose", rank, namer, filters=filters, kernel_size=kernel_size, strides=2,
                  padding="same", activation=conv_options.get("activation", "relu"),
                  kernel_initializer=conv_options.get("kernel_initializer", "he_normal"))(x)
    else:
        x = _make("nearest", rank, namer, size=2)(x)
    if skip is not None:
        x = layers.Concatenate(name=namer("concatenate") if namer else None)([x, skip])
    x = _dropout(x, dropout, namer)
    return conv_block(x, filters, kernel_size=kernel_size, namer=namer, **conv_options)


def _dropout(x: Any, rate: float, namer: _Namer | None) -> Any:
    if rate == 0:
        return x
    return layers.Dropout(rate, name=namer("dropout") if namer else None)(x)


def _check_options(
    input_shape: Sequence[int | None], filters: Sequence[int], kernel_size: int,
    convs_per_level: int, upsampling: str, activation: str, dropout: float, num_classes: int,
) -> None:
    if len(filters) < 2:
        raise ValueError(f"filters needs at least two levels, got {tuple(filters)}")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer (3 or 5), got {kernel_size!r}")
    if not isinstance(convs_per_level, int) or convs_per_level < 1:
        raise ValueError(f"convs_per_level must be a positive integer, got {convs_per_level!r}")
    if upsampling not in _UPSAMPLING:
        raise ValueError(f"unknown upsampling {upsampling!r}; choose one of {_UPSAMPLING}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {_ACTIVATIONS}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    factor = 2 ** (len(filters) - 1)
    bad = [size for size in input_shape[:-1] if size is not None and size % factor]
    if bad:
        raise ValueError(
            f"spatial size {tuple(input_shape[:-1])} is not divisible by 2**(levels-1) = {factor} "
            f"for {len(filters)} levels; crop or pad the input, or use fewer levels"
        )


def _skip_levels(skips: str | Sequence[int], levels: int) -> set[int]:
    """Encoder levels (0 = full resolution, ``levels - 2`` = deepest) whose features are concatenated."""
    if skips == "all":
        return set(range(levels - 1))
    if skips == "none":
        return set()
    if isinstance(skips, str) or not all(isinstance(level, int) for level in skips):
        raise ValueError(f"skips must be 'all', 'none' or a list of level indices, got {skips!r}")
    wrong = sorted(set(skips) - set(range(levels - 1)))
    if wrong:
        raise ValueError(
            f"skip levels {wrong} do not exist; valid levels are 0 (full resolution) "
            f"to {levels - 2} (deepest skip)"
        )
    return set(skips)


def unet(
    input_shape: Sequence[int | None],
    *,
    filters: Sequence[int] = (16, 32, 64, 128, 256),
    kernel_size: int = 3,
    convs_per_level: int = 2,
    skips: str | Sequence[int] = "all",
    upsampling: str = "transpose",
    dropout: float = 0.0,
    activation: str = "relu",
    num_classes: int = 1,
    residual: bool = False,
    kernel_initializer: str = "he_normal",
    name: str | None = None,
) -> keras.Model:
    """Build a 2D or 3D U-Net with sigmoid outputs; the input shape decides which.

    Encoder level ``i`` applies ``conv_block`` -> max-pooling -> dropout; the
    last entry of ``filters`` is the bottleneck (``conv_block`` -> dropout);
    each decoder level up-samples, optionally concatenates the encoder
    features of the same size, applies dropout and a ``conv_block``. A final
    1x1(x1) convolution with a sigmoid gives ``num_classes`` channels.

    Parameters
    ----------
    input_shape : tuple of int
        Channels-last, without the batch axis: ``(x, y, channels)`` builds a
        2D network for slices, ``(x, y, z, channels)`` a 3D one for volumes.
        Spatial sizes may be ``None`` (fully convolutional) and must otherwise
        be divisible by ``2 ** (len(filters) - 1)``. Channels: 1 for FLAIR
        only, 4 for all modalities.
    filters : sequence of int, optional
        Channels per level from full resolution down to the bottleneck.
    kernel_size : int, optional
        Odd kernel edge length of all convolutions (the paper tried 3 and 5).
    convs_per_level : int, optional
        Convolutions per level (the paper tried 1 and 2).
    skips : "all", "none" or list of int, optional
        Which encoder levels are concatenated into the decoder: level 0 is the
        full-resolution level, ``len(filters) - 2`` the deepest one.
    upsampling : {"transpose", "nearest"}, optional
        Stride-2 transposed convolution or nearest-neighbour up-sampling.
    dropout : float, optional
        Rate of every dropout layer; 0 removes them.
    activation : {"relu", "leaky_relu"}, optional
        Hidden-layer non-linearity (leaky ReLU uses Keras' default slope 0.2).
    num_classes : int, optional
        Sigmoid output channels: 1 (whole tumour) or 3 (WT, TC, ET).
    residual : bool, optional
        Residual connections around every ``conv_block``.
    kernel_initializer : str, optional
        Starting weights of every hidden convolution (see :func:`conv_block`);
        the output layer keeps Keras's default until :func:`start_at_prior`.
    name : str, optional
        Model name; default ``"unet2d"`` or ``"unet3d"``.

    Returns
    -------
    keras.Model
        ``(batch, *spatial, channels)`` -> ``(batch, *spatial, num_classes)``, float32 output.

    Raises
    ------
    ValueError
        For an input that is not 2D or 3D, a size not divisible by
        ``2 ** (levels - 1)``, an even or non-positive kernel size, or an
        unknown ``skips``, ``upsampling`` or ``activation`` (and for other
        malformed options).

    Examples
    --------
    >>> unet((32, 32, 1), filters=(8, 16, 32)).output_shape
    (None, 32, 32, 1)
    >>> unet((16, 16, 8, 4), filters=(8, 16, 32), name="tiny").output_shape
    (None, 16, 16, 8, 1)
    """
    rank = len(input_shape) - 1
    if rank not in _LAYERS:
        raise ValueError(
            "input_shape must be (x, y, channels) for 2D or (x, y, z, channels) for 3D "
            f"(channels-last, no batch axis), got {tuple(input_shape)}"
        )
    _check_options(input_shape, filters, kernel_size, convs_per_level, upsampling,
                   activation, dropout, num_classes)
    skip_levels = _skip_levels(skips, len(filters))
    namer = _Namer()
    conv_options = dict(kernel_size=kernel_size, convs=convs_per_level, activation=activation,
                        residual=residual, kernel_initializer=kernel_initializer)
    inputs = keras.Input(tuple(input_shape), name="input")
    x, skip_tensors = inputs, []
    for level_filters in filters[:-1]:
        skip, x = encoder_block(x, level_filters, dropout=dropout, namer=namer, **conv_options)
        skip_tensors.append(skip)
    x = _dropout(conv_block(x, filters[-1], namer=namer, **conv_options), dropout, namer)
    for level in reversed(range(len(filters) - 1)):
        skip = skip_tensors[level] if level in skip_levels else None
        x = decoder_block(x, skip, filters[level], upsampling=upsampling, dropout=dropout,
                          namer=namer, **conv_options)
    # float32 output keeps the sigmoid and every loss numerically safe under mixed precision.
    outputs = _make("conv", rank, namer, filters=num_classes, kernel_size=1, activation="sigmoid",
                    dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name or f"unet{rank}d")


def paper_table1(
    input_shape: Sequence[int | None] = (192, 192, 160, 1), *, dropout: float = 0.2
) -> keras.Model:
    """The paper's best 3D model, layer for layer as its Table 1 lists it.

    It is :func:`unet` with one 3x3x3 ReLU convolution per level, filters
    32, 64, 128, 256 and 512, stride-2 3x3x3 transposed convolutions, and a
    single skip connection: the first up-convolution's output is concatenated
    with ``conv3d_4`` (the deepest encoder level). 13,522,721 trainable
    parameters, whatever the input size.

    Where Table 1 leaves room for interpretation we chose:

    - ``"same"`` padding everywhere, so the output has the input's size (the
      table lists no cropping layers, and the parameter counts do not depend on it);
    - ReLU after every hidden convolution *and* every transposed convolution
      (the paper names ReLU; the table shows no separate activation layers);
    - dropout after each pooling, after the bottleneck convolution and before
      each decoder convolution, in the table's order (``dropout_1`` ...
      ``dropout_9``), all with the same rate (the paper's best was 0.2);
    - the concatenation order ``[up-convolution, skip]`` (the table's
      "deconvolution3d_1, conv3d_4"); it changes no count.

    Parameters
    ----------
    input_shape : tuple of int, optional
        Channels-last ``(x, y, z, channels)``; the paper's pseudo-cropped
        FLAIR volume is ``(192, 192, 160, 1)`` in our cache (the paper cropped
        depth to 154, which four poolings do not divide; we pad to 160).
        Each spatial size must be divisible by 16.
    dropout : float, optional
        Rate of all nine dropout layers.

    Returns
    -------
    keras.Model
        ``(batch, x, y, z, channels)`` -> ``(batch, x, y, z, 1)`` sigmoid probabilities.

    Examples
    --------
    >>> paper_table1((32, 32, 32, 1)).count_params()
    13522721
    """
    return unet(input_shape, filters=(32, 64, 128, 256, 512), kernel_size=3, convs_per_level=1,
                  skips=[3], upsampling="transpose", dropout=dropout, activation="relu",
                  num_classes=1, residual=False, name="paper_table1")


def start_at_prior(model: keras.Model, prior: Any) -> keras.Model:
    """Make a fresh network predict each output channel's prior everywhere: the *prior start*.

    The last layer's bias becomes ``log(prior / (1 - prior))`` and its weights
    zero, so every voxel starts at the base rate (about 1 % tumour) instead of
    0.5, which the Dice loss reads as "tumour everywhere". The zero weights
    matter as much: with a few channels in front of the output (four in the
    ``ci`` ablations), all their random weights start negative in one network
    of sixteen; such a network already says "no tumour" wherever its features
    fire, and the gradient then switches those features off on the tumour too,
    so it never learns. From zero, the first steps give each weight the sign
    the data ask for.

    Parameters
    ----------
    model : keras.Model
        A network from :func:`unet` (its last layer a 1x1(x1) sigmoid convolution).
    prior : float or array_like
        Share of voxels of each output channel in the training cases,
        strictly between 0 and 1 (:func:`tutorial_lib.data.target_prior`).

    Returns
    -------
    keras.Model
        ``model``, changed in place.

    Raises
    ------
    ValueError
        For a prior outside (0, 1) or with the wrong number of channels.

    Examples
    --------
    >>> net = start_at_prior(unet((16, 16, 1), filters=(4, 8)), 0.01)
    >>> round(float(net.predict(np.ones((1, 16, 16, 1)), verbose=0).max()), 4)
    0.01
    """
    output = model.layers[-1]
    prior = np.broadcast_to(np.asarray(prior, dtype="float64"), output.bias.shape)
    if not ((prior > 0) & (prior < 1)).all():
        raise ValueError(f"prior must lie strictly between 0 and 1 for every output channel, got {prior.tolist()}")
    output.bias.assign(np.log(prior / (1 - prior)).astype("float32"))
    output.kernel.assign(np.zeros(output.kernel.shape, "float32"))
    return model
