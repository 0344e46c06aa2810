"""The paper's Table 1 3D U-Net written in plain PyTorch, as a speed reference.

This is a benchmark-only dependency: the course itself never needs PyTorch.
The network mirrors ``tutorial_lib.models.paper_table1`` layer for layer
(13,522,721 parameters, checked at build time), trains with the same
Dice-on-probabilities loss and Adam, and is timed the same way as the Keras
model in ``bench_train_step.py``: data already on the device, warm-up steps
excluded, one host synchronisation per step (reading the loss).

Layout: PyTorch's tensors are ``(batch, channels, x, y, z)``; the
``channels_last_3d`` memory format stores them as ``(batch, x, y, z, channels)``
in memory, which is what cuDNN's fastest bfloat16 kernels want.

Run ``python benchmarks/torch_reference.py --help``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import common

from tutorial_lib import costs

__all__ = [
    "PAPER_PARAMETERS",
    "build_table1",
    "count_parameters",
    "torch_model_flops",
    "dice_probability_loss",
    "measure_torch_step",
    "main",
]

PAPER_PARAMETERS = 13_522_721
FILTERS = (32, 64, 128, 256, 512)


def build_table1(*, dropout: float = 0.2, concat_levels: Sequence[int] = (3,)) -> Any:
    """Build the Table 1 network as a ``torch.nn.Module``.

    Parameters
    ----------
    dropout : float, optional
        Rate of every dropout layer (the paper's 0.2).
    concat_levels : sequence of int, optional
        Encoder levels (0 = full resolution) whose output is concatenated to
        the decoder at the same level. Table 1 concatenates only the deepest
        skip (``conv3d_4``), which its parameter counts confirm.

    Returns
    -------
    torch.nn.Module
        Input ``(batch, 1, x, y, z)``, output sigmoid probabilities of the same
        spatial size; x, y, z must be divisible by 16.

    Raises
    ------
    RuntimeError
        If the parameter count differs from the paper's 13,522,721.
    """
    model = _Table1(dropout=dropout, concat_levels=tuple(concat_levels))
    parameters = count_parameters(model)
    if tuple(concat_levels) == (3,) and parameters != PAPER_PARAMETERS:
        raise RuntimeError(
            f"PyTorch Table 1 reference has {parameters:,} parameters, the paper {PAPER_PARAMETERS:,}"
        )
    return model


def _table1_class() -> type:
    import torch
    from torch import nn

    class Table1(nn.Module):
        def __init__(self, *, dropout: float, concat_levels: tuple[int, ...]) -> None:
            super().__init__()
            self.concat_levels = concat_levels
            channels = (1, *FILTERS)
            self.encoders = nn.ModuleList(
                nn.Conv3d(channels[i], channels[i + 1], 3, padding=1) for i in range(5)
            )
            self.ups = nn.ModuleList()
            self.decoders = nn.ModuleList()
            for level in (3, 2, 1, 0):
                deep, here = FILTERS[level + 1], FILTERS[level]
                # kernel 3, stride 2, padding 1, output_padding 1 == Keras "same".
                self.ups.append(nn.ConvTranspose3d(deep, here, 3, stride=2, padding=1, output_padding=1))
                width = 2 * here if level in concat_levels else here
                self.decoders.append(nn.Conv3d(width, here, 3, padding=1))
            self.head = nn.Conv3d(FILTERS[0], 1, 1)
            self.pool = nn.MaxPool3d(2)
            self.drop = nn.Dropout(dropout)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for level, conv in enumerate(self.encoders):
                x = self.relu(conv(x))
                if level < 4:
                    skips.append(x)
                    x = self.drop(self.pool(x))
            x = self.drop(x)
            for level, up, conv in zip((3, 2, 1, 0), self.ups, self.decoders):
                x = self.relu(up(x))
                if level in self.concat_levels:
                    x = torch.cat([x, skips[level]], dim=1)
                x = self.relu(conv(self.drop(x)))
            return torch.sigmoid(self.head(x))

    return Table1


def _Table1(**kwargs: Any) -> Any:
    return _table1_class()(**kwargs)


def count_parameters(model: Any) -> int:
    """Number of trainable parameters of a ``torch.nn.Module``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def torch_model_flops(model: Any, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of every Conv3d/ConvTranspose3d, counted the same way as for Keras.

    Runs one forward pass on the meta device with hooks recording shapes, so
    it costs no memory or time even at full size.
    """
    import copy

    import torch
    from torch import nn

    meta = copy.deepcopy(model).to("meta")
    total = [0]

    def hook(module: Any, inputs: Any, output: Any) -> None:
        spatial = inputs[0].shape[2:] if isinstance(module, nn.ConvTranspose3d) else output.shape[2:]
        batch = output.shape[0]
        total[0] += costs.conv_flops(
            module.kernel_size, module.in_channels, module.out_channels, batch * math.prod(spatial)
        )

    for module in meta.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        meta(torch.empty(*input_shape, device="meta"))
    return total[0]


def dice_probability_loss(probabilities: Any, target: Any, *, epsilon: float = 1e-7) -> Any:
    """The paper's loss ``-2 sum(X Y) / (sum(X) + sum(Y))`` in float32, summed over the batch.

    The same formula as ``tutorial_lib.losses.dice_probability_loss``.
    """
    probabilities = probabilities.float()
    target = target.float()
    overlap = (probabilities * target).sum()
    return -2.0 * overlap / (probabilities.sum() + target.sum() + epsilon)


def measure_torch_step(
    size: Sequence[int],
    *,
    precision: str = "float32",
    steps: int = 5,
    warmup: int = 2,
    batch_size: int = 1,
    channels_last: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Time training steps of the PyTorch Table 1 reference.

    Parameters
    ----------
    size : sequence of 3 int
        Volume ``(x, y, z)``, each divisible by 16.
    precision : {"float32", "bfloat16", "float16"}
        ``bfloat16``/``float16`` use ``torch.autocast`` (float16 with a
        ``GradScaler``); weights, loss and optimiser stay float32.
    steps, warmup : int
        Timed and untimed steps.
    batch_size : int
        Volumes per step.
    channels_last : bool
        Use the ``channels_last_3d`` memory format for weights and inputs.
    device : str, optional
        ``"cuda"`` or ``"cpu"``; default CUDA when available.

    Returns
    -------
    dict
        One result row (see ``bench_train_step.py``).
    """
    import torch

    if any(s % 16 for s in size):
        raise ValueError(f"every size must be divisible by 16 for Table 1, got {tuple(size)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = build_table1().to(device)
    shape = (batch_size, 1, *size)
    flops = torch_model_flops(model, shape)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
    labels = (torch.rand(shape, device=device) > 0.9).float().contiguous(memory_format=memory_format)
    autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "float16")

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = dice_probability_loss(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item()  # the host waits for the device here

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = common.time_steps(step, steps=steps, warmup=warmup)
    if device == "cuda":
        peak, where = torch.cuda.max_memory_allocated(), "gpu"
    else:
        peak, where = costs.peak_rss_bytes() or -1, "cpu-rss"
    layout = "channels_last_3d" if channels_last else "contiguous"
    return step_row(
        f"pytorch-ref ({layout})", "gpu" if device == "cuda" else "cpu", size, precision,
        batch_size, times, flops, peak, where, count_parameters(model),
    )


def step_row(
    name: str, device: str, size: Sequence[int], precision: str, batch_size: int,
    times: list[float], forward_flops: int, peak_bytes: int, peak_where: str, parameters: int,
) -> dict[str, Any]:
    """Summarise timed steps as one table row (median step time, 3x forward FLOPs)."""
    import statistics

    seconds = statistics.median(times)
    return {
        "model": name,
        "device": device,
        "size": "x".join(map(str, size)),
        "precision": precision,
        "batch": batch_size,
        "steps": len(times),
        "ms/step": 1000 * seconds,
        "steps/s": 1 / seconds,
        "volumes/s": batch_size / seconds,
        "TFLOP/s": costs.TRAINING_FLOPS_PER_FORWARD * forward_flops / seconds / 1e12,
        "fwd GFLOP": forward_flops / 1e9,
        "peak MB": peak_bytes / 2**20,
        "memory": peak_where,
        "params": parameters,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure the PyTorch reference and print one table row."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--quiet", action="store_true", help="only emit the result line")
    args = parser.parse_args(argv)
    import torch

    device = "gpu" if torch.cuda.is_available() else "cpu"
    size = tuple(args.size or common.default_size(device, smoke=args.smoke))
    row = measure_torch_step(
        size,
        precision=args.precision,
        steps=args.steps or (1 if args.smoke else 5),
        warmup=1 if args.warmup is None else args.warmup,
        batch_size=args.batch_size,
        channels_last=args.channels_last,
    )
    common.emit_result(row)
    if not args.quiet:
        common.print_table("PyTorch Table 1 reference: one training step", [row])
    if args.json:
        common.write_json(args.json, [row])
    return [row]


if __name__ == "__main__":
    main()
