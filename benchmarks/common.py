"""Shared plumbing for the benchmark scripts: command line, timing, memory, tables.

Every benchmark is a script with a ``main(argv) -> list[dict]`` function that
prints one or more Markdown tables and returns the rows it printed, so that
``run_all.py`` can run them in one process and tests can check the numbers.

Nothing here imports Keras at module level: the Keras backend is fixed by the
``KERAS_BACKEND`` environment variable at the first ``import keras``, so
``--backend`` must be applied before that happens (see :func:`apply_backend`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "REPO_ROOT",
    "PRECISIONS",
    "base_parser",
    "apply_backend",
    "apply_smoke_settings",
    "active_backend",
    "default_size",
    "keras_device",
    "time_steps",
    "keras_peak_memory_bytes",
    "reset_keras_peak_memory",
    "print_table",
    "run_subprocess_json",
    "versions",
    "write_json",
    "emit_result",
    "make_cases",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
# Before any framework import: tutorial_lib switches on TensorFlow's oneDNN
# kernels, which TensorFlow reads once, at import. Without this line the
# scripts timed TensorFlow on AMD CPUs without them, 2.7x slower.
try:
    from tutorial_lib import costs
except ImportError as error:  # a checkout without `pip install -e .`, such as the GPU machine's
    raise SystemExit("benchmarks: tutorial_lib is not importable; run `make setup`, or run from the repository "
                     "root with PYTHONPATH=. (as benchmarks/gpu_check.sh does)") from error

PRECISIONS = ("float32", "bfloat16", "float16")
RESULT_PREFIX = "BENCH_JSON "


def base_parser(description: str) -> argparse.ArgumentParser:
    """Return an argument parser holding the options every benchmark shares.

    Parameters
    ----------
    description : str
        First line of ``--help``.

    Returns
    -------
    argparse.ArgumentParser
        With ``--smoke``, ``--backend``, ``--size X Y Z``, ``--precision``,
        ``--steps``, ``--warmup``, ``--batch-size`` and ``--json``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks the script runs")
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax", "torch"),
        default=None,
        help="Keras backend (sets KERAS_BACKEND; default: the environment's)",
    )
    parser.add_argument(
        "--size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None, help="volume size"
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--steps", type=int, default=None, help="timed steps/repeats")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser


def apply_backend(backend: str | None) -> str:
    """Select the Keras backend before Keras is imported and return the active one.

    Raises
    ------
    ValueError
        If Keras is already imported with another backend: a process holds one
        backend for life, so compare backends in subprocesses instead.
    """
    if backend is not None:
        if "keras" in sys.modules and active_backend() != backend:
            raise ValueError(
                f"Keras is already imported with backend {active_backend()!r}; "
                f"run this benchmark in a subprocess with KERAS_BACKEND={backend}"
            )
        os.environ["KERAS_BACKEND"] = backend
    return active_backend()


def apply_smoke_settings(smoke: bool) -> None:
    """In smoke mode, make XLA compile fast instead of producing fast code.

    JAX compiles every new shape, including each variable initialiser, and
    with full LLVM optimisation that dominates a smoke run on a 2-core CI
    machine (tens of seconds). Smoke figures are meaningless anyway. Must run
    before JAX is imported; a flag the user set is kept.
    """
    if not smoke or "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        fast = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        os.environ["XLA_FLAGS"] = f"{flags} {fast}".strip()


def active_backend() -> str:
    """Name of the Keras backend this process uses (or will use)."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def keras_device() -> str:
    """``"gpu"`` if the active Keras backend sees an accelerator, else ``"cpu"``."""
    from tutorial_lib.training import gpu_available

    return "gpu" if gpu_available() else "cpu"


def default_size(device: str, *, smoke: bool) -> tuple[int, int, int]:
    """The benchmark volume: 192x192x160 on a GPU, 96x96x64 on a CPU, 16^3 in smoke mode."""
    if smoke:
        return (16, 16, 16)
    return (192, 192, 160) if device == "gpu" else (96, 96, 64)


def time_steps(step: Callable[[], Any], *, steps: int, warmup: int) -> list[float]:
    """Run ``step`` ``warmup`` times untimed, then ``steps`` times, returning seconds per call.

    ``step`` must block until its work is done (for example by converting a
    loss to a Python float), otherwise asynchronous devices time nothing.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def reset_keras_peak_memory() -> None:
    """Reset the accelerator's peak-memory counter where the backend allows it."""
    backend = active_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    # JAX exposes no reset; its peak counts from process start, which is
    # fine because each measurement runs in a fresh process on the GPU.


def keras_peak_memory_bytes() -> tuple[int, str]:
    """Peak memory of the measurement and where it was read.

    Returns
    -------
    tuple of (int, str)
        Bytes, and ``"gpu"`` (framework allocator peak) or ``"cpu-rss"``
        (process peak resident set size, which includes the framework itself).
    """
    backend = active_backend()
    if keras_device() == "gpu":
        if backend == "tensorflow":
            import tensorflow as tf

            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"]), "gpu"
        if backend == "jax":
            import jax

            stats = jax.local_devices()[0].memory_stats() or {}
            return int(stats.get("peak_bytes_in_use", -1)), "gpu"
        import torch

        return int(torch.cuda.max_memory_allocated()), "gpu"
    return costs.peak_rss_bytes() or -1, "cpu-rss"


def print_table(title: str, rows: list[dict[str, Any]], *, file: Any = None) -> None:
    """Print ``rows`` as a Markdown table under a ``### title`` heading."""
    file = file or sys.stdout
    print(f"\n### {title}\n", file=file)
    if not rows:
        print("(no rows)", file=file)
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_format(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |", file=file)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=file)
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |", file=file)
    file.flush()


def _format(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}" if abs(value) < 1 else f"{value:.3f}".rstrip("0").rstrip(".")
        return f"{value:.3e}"
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def emit_result(record: dict[str, Any]) -> None:
    """Print one machine-readable result line for a parent process to collect."""
    print(RESULT_PREFIX + json.dumps(record), flush=True)


def run_subprocess_json(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float | None = None
) -> list[dict[str, Any]]:
    """Run a benchmark in a fresh Python process and collect its result lines.

    A fresh process is how backends are compared (one Keras backend per
    process) and how peak memory of one measurement is kept apart from another.

    Raises
    ------
    RuntimeError
        If the subprocess fails or times out; the message holds its output tail.
    """
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            [sys.executable, *argv], env=full_env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{' '.join(argv)} timed out after {timeout} s") from error
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{tail}")
    return [
        json.loads(line[len(RESULT_PREFIX):])
        for line in done.stdout.splitlines()
        if line.startswith(RESULT_PREFIX)
    ]


def versions() -> dict[str, str]:
    """Versions of Python and of the frameworks that are importable without importing them."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_json(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (plus versions) to ``path`` atomically."""
    from tutorial_lib._files import write_json_atomic

    write_json_atomic(path, {"versions": versions(), "rows": rows}, default=str)


def make_cases(raw_dir: Path, n_cases: int, *, workers: int = 1) -> str:
    """Write ``n_cases`` BraTS-2017-style cases into ``raw_dir``; return how they were made.

    Uses ``tutorial_lib.synthetic.make_dataset``. Where its anatomy template
    cannot be loaded (nilearn missing, as on a bare GPU machine), writes
    simple cases instead: an ellipsoidal "brain" of noise with a spherical
    "tumour" carrying labels 1, 2 and 4, same file names, dtypes and grid, so
    that preparation and reading do the same work per voxel.
    """
    try:
        import nilearn  # noqa: F401  (the synthetic generator's template source)
    except ImportError:
        _write_simple_cases(Path(raw_dir), n_cases)
        return "simple ellipsoid cases (nilearn missing)"
    from tutorial_lib.synthetic import make_dataset

    make_dataset(raw_dir, n_cases, seed=0, workers=workers, progress=False)
    return "tutorial_lib.synthetic cases"


def prepared_cache(tmp: Path, raw: Path | None, *, cases: int, downsample: int, workers: int = 1) -> tuple[Path, str]:
    """Prepare ``raw`` (or ``cases`` cases made by :func:`make_cases`) into ``tmp/cache``; return it and how.

    Raises ``RuntimeError`` with the preparation's summary when a case fails.
    """
    from tutorial_lib import ingest

    made = "given cases"
    if raw is None:
        raw = tmp / "raw"
        made = make_cases(raw, cases, workers=workers)
    cache = tmp / "cache"
    report = ingest.prepare_dataset(raw, cache, downsample=downsample, workers=workers, progress=False)
    if not report.ok:
        raise RuntimeError(f"preparation failed:\n{report.summary()}")
    return cache, made


def _write_simple_cases(raw_dir: Path, n_cases: int) -> None:
    import nibabel
    import numpy as np

    from tutorial_lib.config import BRATS

    grid = np.indices(BRATS.shape, dtype=np.float32)
    centre = (np.array(BRATS.shape, dtype=np.float32) - 1) / 2
    radius = np.array(BRATS.shape, dtype=np.float32) * 0.4
    brain = (((grid - centre[:, None, None, None]) / radius[:, None, None, None]) ** 2).sum(0) <= 1
    distance = np.sqrt(((grid - (centre + [20, 10, 0])[:, None, None, None]) ** 2).sum(0))
    label = np.select([distance < 6, distance < 10, distance < 18], [1, 4, 2], 0).astype(np.uint8)
    label[~brain] = 0
    rng = np.random.default_rng(0)
    for index in range(n_cases):
        case = f"Simple_{index:04d}"
        folder = raw_dir / case
        folder.mkdir(parents=True, exist_ok=True)
        for name in (*BRATS.modalities, "seg"):
            if name == "seg":
                array = label
            else:
                array = (rng.normal(500, 100, BRATS.shape) * brain + 200 * (label > 0))
                array = array.astype(np.int16)
            nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), folder / f"{case}_{name}.nii.gz")
