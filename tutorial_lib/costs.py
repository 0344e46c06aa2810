"""What a training step costs: convolution FLOPs, memory, and a GPU projection.

Counted from a built Keras model's layer shapes, without running it, so that
the study's full-size network can be costed on any machine. FLOPs count the
multiply-adds of convolutions only (pooling, activations and concatenation are
memory bound and conventionally left out of achieved-TFLOP/s figures); a
training step costs about three forward passes (the forward pass, then the
gradients with respect to the inputs and to the weights).

Memory is counted the way backpropagation needs it: every layer's output is
kept until the backward pass has used it, so a step holds all of them at once,
in the layer's compute dtype (2 bytes under a bfloat16 or float16 policy, 4 in
float32), besides the float32 weights, their gradients and Adam's two moment
estimates (16 bytes per parameter in all).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["conv_flops", "forward_flops", "activation_bytes", "training_memory", "PeakGrowth", "peak_rss_bytes",
           "ReferenceGPU", "REFERENCE_GPUS", "TRAINING_FLOPS_PER_FORWARD"]

# Forward pass + gradient for the inputs + gradient for the weights.
TRAINING_FLOPS_PER_FORWARD = 3
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def conv_flops(kernel: Sequence[int], in_channels: int, out_channels: int, voxels: int) -> int:
    """Forward FLOPs of one convolution: ``2 * prod(kernel) * in_channels * out_channels`` per voxel.

    ``voxels`` is the number of output voxels of a convolution and the number
    of *input* voxels of a strided transposed convolution, which multiplies each
    input voxel into one kernel's worth of outputs (counting its output voxels
    would overstate a stride-2 one eightfold).

    Examples
    --------
    >>> conv_flops((3, 3, 3), 1, 32, 16**3)
    7077888
    """
    return 2 * math.prod(kernel) * in_channels * out_channels * voxels


def _leaf_layers(model: Any) -> Iterable[Any]:
    for layer in model.layers:
        if getattr(layer, "layers", None):
            yield from _leaf_layers(layer)
        else:
            yield layer


def forward_flops(model: Any, *, batch_size: int = 1) -> int:
    """Forward FLOPs of every convolution and transposed convolution of a built model.

    Examples
    --------
    >>> from tutorial_lib import models
    >>> forward_flops(models.unet((16, 16, 16, 1), filters=(2, 4)))  # eight convolutions, by hand
    4882432
    """
    import keras

    transposed = (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    total = 0
    for layer in _leaf_layers(model):
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D, *transposed)):
            continue
        spatial = (layer.input if isinstance(layer, transposed) else layer.output).shape[1:-1]
        total += conv_flops(layer.kernel_size, layer.input.shape[-1], layer.filters, math.prod(spatial))
    return total * batch_size


def activation_bytes(model: Any, *, batch_size: int = 1) -> dict[str, int]:
    """Bytes of each layer's output for one batch, in the dtype of that output.

    Parameters
    ----------
    model : keras.Model
        A built functional model; its input layer counts too.
    batch_size : int, optional
        Samples per step.

    Returns
    -------
    dict of str to int
        Layer name -> bytes, in the model's layer order.

    Examples
    --------
    >>> from tutorial_lib import models
    >>> sizes = activation_bytes(models.unet((16, 16, 16, 1), filters=(2, 4)))
    >>> sizes["input"], sum(sizes.values())  # 4096 voxels x 1 channel x 4 bytes; all eleven layers
    (16384, 282624)
    """
    return {layer.name: batch_size * math.prod(layer.output.shape[1:]) * _BYTES[str(layer.output.dtype)]
            for layer in _leaf_layers(model)}


def training_memory(model: Any, *, batch_size: int = 1) -> dict[str, int]:
    """Bytes one Adam training step holds: weights, gradients, optimizer state, activations.

    A lower bound: the backend adds workspace for its convolution algorithms
    and may keep more intermediates (compare with a measured peak).

    Examples
    --------
    >>> from tutorial_lib import models
    >>> memory = training_memory(models.unet((16, 16, 16, 1), filters=(2, 4)), batch_size=2)
    >>> memory["activations"], memory["weights"] == memory["gradients"], memory["optimizer"] // memory["weights"]
    (565248, True, 2)
    """
    weights = sum(math.prod(weight.shape) * _BYTES[str(weight.dtype)] for weight in model.weights)
    return {"weights": weights, "gradients": weights, "optimizer": 2 * weights,
            "activations": sum(activation_bytes(model, batch_size=batch_size).values())}


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory in bytes: Linux's VmHWM, else getrusage (None on Windows).

    On Linux, :class:`PeakGrowth` resets the mark, so the figure is the peak since its last block.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:
        return None
    # macOS reports bytes, Linux and the BSDs kibibytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _reset_peak() -> bool:
    """Lower Linux's peak-memory mark to the current use (writing 5 to clear_refs); False elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class PeakGrowth:
    """How far this process's peak resident memory rises above its use at the start of a block.

    ``bytes`` is the growth after the block. On Linux the peak mark is reset
    at the start, so the figure is the block's own; elsewhere the operating
    system keeps only the lifetime peak, and ``bytes`` is None when the block
    stayed below an earlier peak (or on Windows). A GPU's device memory is not
    resident memory and is not seen.

    Examples
    --------
    >>> with PeakGrowth() as growth:
    ...     block = b"x" * (512 * 2**20)  # written, so resident
    >>> growth.bytes is None or growth.bytes >= 500 * 2**20
    True
    """

    bytes: int | None = None

    def __enter__(self) -> "PeakGrowth":
        import psutil

        self._reset = _reset_peak()
        self._start, self._peak = psutil.Process().memory_info().rss, peak_rss_bytes()
        return self

    def __exit__(self, *exc_info: object) -> None:
        peak = peak_rss_bytes()
        known = peak is not None and (self._reset or peak > self._peak)
        self.bytes = max(0, peak - self._start) if known else None


@dataclass(frozen=True)
class ReferenceGPU:
    """A GPU class to project onto, from its data sheet.

    Attributes
    ----------
    name : str
        Product name.
    memory_gib : float
        Device memory.
    peak_tflops : float
        Dense tensor-core peak in ``precision``, without sparsity.
    precision : str
        The mixed-precision dtype that peak applies to.
    """

    name: str
    memory_gib: float
    peak_tflops: float
    precision: str


# Data-sheet peaks (dense, no sparsity). The T4 has no bfloat16 tensor cores,
# so mixed precision on it means float16.
REFERENCE_GPUS: Mapping[str, ReferenceGPU] = {
    "T4": ReferenceGPU("NVIDIA T4", 16, 65.0, "float16"),  # Colab's free GPU
    "A100": ReferenceGPU("NVIDIA A100 40 GB", 40, 312.0, "bfloat16"),
}
