"""One training step of the paper's Table 1 model: ours (Keras) next to plain PyTorch.

Measures, for ``tutorial_lib.models.paper_table1`` trained with the paper's
Dice-on-probabilities loss and Adam, the median step time, steps/s,
volumes/s, achieved TFLOP/s (forward FLOPs of every convolution and
transposed convolution counted analytically, times 3 for forward + backward),
peak memory and the projected time of one epoch of the gpu run (its training
volumes, 192: chapter 03's epoch). The PyTorch reference (``torch_reference.py``) is
measured in the same run and the ratio ours/PyTorch printed.

Each measurement runs in a fresh Python process (except in ``--smoke`` mode),
so that peak-memory figures do not mix and several Keras backends can be
compared: ``--backends tensorflow,jax,torch`` (or ``all``).

Examples
--------
::

    python benchmarks/bench_train_step.py                      # CPU: 96x96x64, float32
    python benchmarks/bench_train_step.py --size 192 192 160 --precision bfloat16 \\
        --backends jax,torch --timeout 150                     # GPU: compare backends
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import common

from tutorial_lib import costs, ingest
from tutorial_lib.config import get_profile

__all__ = ["measure_keras_step", "compiled_table1", "compare_rows", "main"]

# One epoch of the gpu run, as chapter 03 counts it: the training part of its split
# (285 cases less 45 test, less 20 % validation = 192).
EPOCH_VOLUMES = ingest.split_sizes(get_profile("gpu")["n_cases"])[0]
SCRIPT = str(Path(__file__).resolve())
REFERENCE_SCRIPT = str(Path(__file__).resolve().with_name("torch_reference.py"))


def measure_keras_step(
    size: Sequence[int],
    *,
    precision: str = "float32",
    steps: int = 5,
    warmup: int = 2,
    batch_size: int = 1,
    jit_compile: str = "auto",
) -> dict[str, Any]:
    """Time ``train_on_batch`` steps of ``paper_table1`` on the active Keras backend.

    Parameters
    ----------
    size : sequence of 3 int
        Volume ``(x, y, z)``; each divisible by 16.
    precision : {"float32", "bfloat16", "float16"}
        Keras dtype policy ``float32``, ``mixed_bfloat16`` or ``mixed_float16``
        (the latter with Keras' automatic loss scaling).
    steps, warmup : int
        Timed and untimed (compilation, autotuning) steps.
    batch_size : int
        Volumes per step.
    jit_compile : {"auto", "on", "off"}
        Passed to ``Model.compile``; ``auto`` is Keras' default (XLA on
        JAX and on TensorFlow with a GPU, none on a TensorFlow CPU).

    Returns
    -------
    dict
        One result row.
    """
    import keras

    model, images, labels = compiled_table1(size, precision=precision, batch_size=batch_size,
                                            jit_compile=jit_compile)
    flops = costs.forward_flops(model, batch_size=batch_size)
    common.reset_keras_peak_memory()
    # train_on_batch returns the loss as a host number, so every step synchronises.
    times = common.time_steps(lambda: model.train_on_batch(images, labels), steps=steps, warmup=warmup)
    peak, where = common.keras_peak_memory_bytes()
    name = f"keras/{keras.backend.backend()}"
    if jit_compile != "auto":
        name += f" (jit {jit_compile})"
    from torch_reference import step_row

    return step_row(name, common.keras_device(), size, precision, batch_size, times, flops,
                    peak, where, model.count_params())


def compiled_table1(
    size: Sequence[int], *, precision: str = "float32", batch_size: int = 1, jit_compile: str = "auto"
) -> tuple[Any, Any, Any]:
    """``paper_table1`` compiled as ``training.train`` compiles it, and one batch on the device.

    Returns
    -------
    tuple
        ``(model, images, labels)``; images and labels have shape
        ``(batch_size, *size, 1)`` and are already backend tensors, so a step
        measures compute, not host-to-device copies.
    """
    import keras
    import numpy as np

    from tutorial_lib.models import paper_table1
    from tutorial_lib.training import precision_scope

    jit = {"auto": "auto", "on": True, "off": False}[jit_compile]
    keras.utils.set_random_seed(0)
    if keras.backend.backend() == "torch":
        import torch

        torch.backends.cudnn.benchmark = True  # as in the PyTorch reference
    with precision_scope(precision):  # mixed_* policies; variables and losses stay float32
        model = paper_table1(input_shape=(*size, 1))
    # As tutorial_lib.training.train compiles it, minus the Dice metric (the
    # reference computes none); Keras adds loss scaling for mixed_float16.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4), loss=_paper_loss(),
                  jit_compile=jit)
    rng = np.random.default_rng(0)
    shape = (batch_size, *size, 1)
    images = keras.ops.convert_to_tensor(rng.standard_normal(shape, dtype=np.float32))
    labels = keras.ops.convert_to_tensor((rng.random(shape) > 0.9).astype(np.float32))
    return model, images, labels


def _paper_loss() -> Any:
    """The paper's Dice loss exactly as ``training.train`` gets it (float32)."""
    from tutorial_lib.losses import get_loss

    return get_loss("dice_probability")


def compare_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratio of each Keras row's step time to the PyTorch reference's (< 1 means ours is faster)."""
    references = [row for row in rows if row["model"].startswith("pytorch-ref") and "ms/step" in row]
    if not references:
        return []
    reference = min(references, key=lambda row: row["ms/step"])
    table = []
    for row in rows:
        if row["model"].startswith("keras") and "ms/step" in row:
            table.append({
                "ours": row["model"],
                "reference": reference["model"],
                "precision": row["precision"],
                "ours ms/step": row["ms/step"],
                "ref ms/step": reference["ms/step"],
                "ours/PyTorch": row["ms/step"] / reference["ms/step"],
            })
    return table


def _epoch_seconds(row: dict[str, Any]) -> dict[str, Any]:
    if "volumes/s" in row:
        row[f"epoch {EPOCH_VOLUMES} vol (s)"] = EPOCH_VOLUMES / row["volumes/s"]
    return row


def _available_backends() -> list[str]:
    return [name for name in ("tensorflow", "jax", "torch") if importlib.util.find_spec(name)]


def _worker_args(args: Any, size: Sequence[int], steps: int, warmup: int) -> list[str]:
    return ["--size", *map(str, size), "--precision", args.precision, "--steps", str(steps),
            "--warmup", str(warmup), "--batch-size", str(args.batch_size)]


def _measure_subprocess(
    argv: list[str], backend: str | None, label: str, timeout: float | None, precision: str
) -> dict:
    env = {"KERAS_BACKEND": backend} if backend else {}
    try:
        rows = common.run_subprocess_json(argv, env=env, timeout=timeout)
        return rows[0]
    except RuntimeError as error:
        # One slow or broken path must not sink the whole comparison.
        message = str(error).strip().splitlines()
        return {"model": label, "precision": precision,
                "status": message[-1][:120] if message else "failed"}


def _measure_all(args: Any, size: Sequence[int], steps: int, warmup: int) -> list[dict[str, Any]]:
    current = common.active_backend()
    backends = args.backends or [current]
    precisions = args.precisions or [args.precision]
    isolate = args.isolate if args.isolate is not None else not args.smoke
    rows: list[dict[str, Any]] = _ReportingList(args.json)
    for precision in precisions:
        args.precision = precision
        common_args = _worker_args(args, size, steps, warmup)
        for backend in backends:
            if not isolate and backend == current:
                rows.append(measure_keras_step(size, precision=precision, steps=steps,
                                               warmup=warmup, batch_size=args.batch_size,
                                               jit_compile=args.jit_compile))
                continue
            argv = [SCRIPT, "--worker", "--jit-compile", args.jit_compile, *common_args]
            rows.append(_measure_subprocess(argv, backend, f"keras/{backend}", args.timeout,
                                            precision))
        if args.reference:
            layout = [] if args.channels_last else ["--no-channels-last"]
            if isolate:
                argv = [REFERENCE_SCRIPT, "--quiet", *layout, *common_args]
                rows.append(_measure_subprocess(argv, None, "pytorch-ref", args.timeout, precision))
            elif importlib.util.find_spec("torch") is None:
                rows.append({"model": "pytorch-ref", "precision": precision,
                             "status": "skipped: torch not installed (requirements-bench.lock)"})
            else:
                from torch_reference import measure_torch_step

                rows.append(measure_torch_step(size, precision=precision, steps=steps,
                                               warmup=warmup, batch_size=args.batch_size,
                                               channels_last=args.channels_last))
    return rows


class _ReportingList(list):
    """Rows that announce themselves as they arrive (and are saved), so that a run
    stopped by an outer time limit still leaves every finished measurement behind."""

    def __init__(self, json_path: Path | None) -> None:
        super().__init__()
        self.json_path = json_path

    def append(self, row: dict[str, Any]) -> None:
        super().append(_epoch_seconds(row))
        print("measured: " + ", ".join(f"{key}={common._format(value)}" for key, value in row.items()),
              flush=True)
        if self.json_path:
            common.write_json(self.json_path, list(self))


def _parser() -> Any:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--backends", type=lambda text: text.split(","), default=None,
                        help="comma-separated Keras backends to compare, or 'all'")
    parser.add_argument("--precisions", type=lambda text: text.split(","), default=None,
                        help="comma-separated precisions (overrides --precision)")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the PyTorch reference")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="PyTorch reference in contiguous (channels-first) memory format")
    parser.add_argument("--isolate", action=__import__("argparse").BooleanOptionalAction,
                        default=None, help="one subprocess per measurement (default: not in --smoke)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per subprocess")
    parser.add_argument("--worker", action="store_true", help=__import__("argparse").SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure, print the step table, the ours/PyTorch ratios and the fastest backend."""
    args = _parser().parse_args(argv)
    common.apply_smoke_settings(args.smoke)
    common.apply_backend(args.backend)
    if args.backends == ["all"]:
        args.backends = _available_backends()
    device = common.keras_device() if args.worker else _probe_device()
    size = tuple(args.size or common.default_size(device, smoke=args.smoke))
    steps = args.steps or (1 if args.smoke else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 2)
    if args.worker:
        row = measure_keras_step(size, precision=args.precision, steps=steps, warmup=warmup,
                                 batch_size=args.batch_size, jit_compile=args.jit_compile)
        common.emit_result(row)
        return [row]
    rows = _measure_all(args, size, steps, warmup)
    common.print_table(f"Training step, Table 1 model, {'x'.join(map(str, size))}", rows)
    ratios = compare_rows(rows)
    if ratios:
        common.print_table("Ours / PyTorch reference (step time; < 1 means ours is faster)", ratios)
    fastest = _fastest_backend(rows)
    if fastest:
        print(f"\nFastest Keras backend here: {fastest['model']} "
              f"({fastest['ms/step']:.1f} ms/step, {fastest['precision']})")
    if args.json:
        common.write_json(args.json, rows + ratios)
    return rows + ratios


def _fastest_backend(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    timed = [row for row in rows if row["model"].startswith("keras") and "ms/step" in row]
    return min(timed, key=lambda row: row["ms/step"]) if len(timed) > 1 else None


def _probe_device() -> str:
    """GPU if one is visible, without initialising a framework in this parent process.

    Initialising JAX here would reserve most of the GPU memory that the
    measuring subprocesses need.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "cpu"
    if importlib.util.find_spec("torch"):
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if shutil.which("nvidia-smi") else "cpu"


if __name__ == "__main__":
    main()
