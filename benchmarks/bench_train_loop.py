"""Chapter 03's training loop for a few steps at full size: seconds per step and peak memory.

Not a bare ``train_on_batch`` (``bench_train_step.py`` times that) but the
course's own path: generated cases prepared into a cache, read by
``datasets.VolumeDataset``, a five-level 3D U-Net with the ``gpu`` profile's
filters built under the mixed-precision policy, and ``training.train`` with
its Dice metric, validation pass, best-model checkpoint and per-epoch backup.
One epoch over ``--cases`` training volumes (batch size 1); the first step,
which compiles, is left out of the median. The epoch projection scales the
median step to the gpu profile's training cases and epochs.

Examples
--------
::

    python benchmarks/bench_train_loop.py --precision bfloat16              # a GPU, 192x192x160
    python benchmarks/bench_train_loop.py --smoke                           # any CPU, seconds
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

__all__ = ["measure_train_loop", "main"]


def measure_train_loop(cache_dir: Path, run_dir: Path, *, filters: list[int], precision: str,
                       batch_size: int = 1) -> dict[str, Any]:
    """Train one epoch of chapter 03's network on ``cache_dir``; return the step figures."""
    import keras

    from tutorial_lib import data, datasets, models, training

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    grid = tuple(data.load_manifest(cache_dir)["shape"])
    policy = None if precision == "float32" else precision
    with training.precision_scope(policy):
        model = models.unet(grid + (1,), filters=filters, convs_per_level=1)
    timer = StepTimer()
    timer.seconds = []
    common.reset_keras_peak_memory()
    training.train(model, datasets.VolumeDataset(cache_dir, "train", batch_size=batch_size, shuffle=True),
                   datasets.VolumeDataset(cache_dir, "val", batch_size=batch_size), out_dir=run_dir, epochs=1,
                   loss="dice_probability", optimizer="adam", learning_rate=3e-3, mixed_precision=policy,
                   verbose=0, callbacks=[timer])
    steady = timer.seconds[1:] or timer.seconds
    memory, where = common.keras_peak_memory_bytes()
    return {"size": "x".join(map(str, grid)), "filters": "-".join(map(str, filters)), "precision": precision,
            "backend": common.active_backend(), "steps": len(timer.seconds),
            "first step (s)": timer.seconds[0], "s/step": statistics.median(steady),
            "peak memory (GB)": memory / 1e9, "memory of": where}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Build the cache, run the loop, print one row with its projection."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="generated cases (default 4: 2 train)")
    args = parser.parse_args(argv)
    common.apply_smoke_settings(args.smoke)
    common.apply_backend(args.backend)
    from tutorial_lib import ingest
    from tutorial_lib.config import get_profile

    profile = get_profile("gpu", "unet3d")
    filters = [4, 8, 16] if args.smoke else list(profile["filters"])  # smoke grid 48x48x40: three levels
    with tempfile.TemporaryDirectory(prefix="bench_train_loop_") as tmp:
        made = common.make_cases(Path(tmp) / "raw", args.cases or (3 if args.smoke else 4))
        report = ingest.prepare_dataset(Path(tmp) / "raw", Path(tmp) / "cache", downsample=4 if args.smoke else 1,
                                        progress=False)
        if not report.ok:
            raise RuntimeError(f"preparation failed:\n{report.summary()}")
        row = measure_train_loop(Path(tmp) / "cache", Path(tmp) / "run", filters=filters,
                                 precision=args.precision, batch_size=args.batch_size)
    train_cases = ingest.split_sizes(profile["n_cases"])[0]
    row["gpu run, projected (h)"] = row["s/step"] * train_cases / args.batch_size * profile["epochs"] / 3600
    row["projection"] = f"{train_cases} train volumes x {profile['epochs']} epochs, training steps only"
    common.print_table(f"Chapter 03 training loop ({made})", [row])
    if args.json:
        common.write_json(args.json, [row])
    return [row]


if __name__ == "__main__":
    main()
