"""Whole-volume inference time: one pass over the full volume vs a sliding window.

Times ``tutorial_lib.inference.predict_volume`` on the paper's Table 1 model
(built fully convolutional, so one set of weights serves both modes) for a
random channels-last volume ``(x, y, z, 1)``. The sliding window runs
patches of ``--patch`` voxels with ``--overlap`` and blends them; it needs
less memory than the full pass and is what a model trained on patches uses.

Examples
--------
::

    python benchmarks/bench_inference.py                         # CPU: 96x96x64
    python benchmarks/bench_inference.py --size 192 192 160 --patch 96 96 80 --precision bfloat16
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Sequence

import common

__all__ = ["measure_inference", "main"]


def default_patch(size: Sequence[int]) -> tuple[int, ...]:
    """Half the volume along each axis, rounded down to a multiple of 16 (at least 16)."""
    return tuple(max(16, (s // 2) // 16 * 16) for s in size)


def measure_inference(
    size: Sequence[int],
    *,
    patch_size: Sequence[int] | None,
    overlap: float = 0.5,
    precision: str = "float32",
    repeats: int = 3,
    warmup: int = 1,
    window_batch: int = 1,
    model: Any = None,
) -> dict[str, Any]:
    """Median seconds of ``predict_volume`` on one random volume of ``size``.

    Parameters
    ----------
    size : sequence of 3 int
        Volume ``(x, y, z)``.
    patch_size : sequence of 3 int or None
        ``None`` predicts the whole volume at once.
    overlap : float, optional
        Sliding-window overlap fraction.
    precision : {"float32", "bfloat16", "float16"}
        Keras dtype policy the model is built under (ignored if ``model`` is given).
    repeats, warmup : int
        Timed and untimed calls (warm-up compiles for this input size).
    window_batch : int, optional
        Sliding windows per model call.
    model : keras.Model, optional
        A fully convolutional model with one input channel; default Table 1.

    Returns
    -------
    dict
        One result row.
    """
    import numpy as np

    from tutorial_lib.inference import predict_volume

    model = model or build_model(precision)
    image = np.random.default_rng(0).standard_normal((*size, 1), dtype=np.float32)
    options = {} if patch_size is None else {
        "patch_size": tuple(patch_size), "overlap": overlap, "batch_size": window_batch}
    common.reset_keras_peak_memory()
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        prediction = np.asarray(predict_volume(model, image, **options))
        if index >= warmup:
            times.append(time.perf_counter() - start)
    if not np.all(np.isfinite(prediction)):
        raise RuntimeError("inference produced non-finite probabilities")
    peak, where = common.keras_peak_memory_bytes()
    seconds = statistics.median(times)
    mode = "full volume" if patch_size is None else f"sliding window (overlap {overlap})"
    return {
        "mode": mode,
        "backend": common.active_backend(),
        "device": common.keras_device(),
        "precision": precision,
        "size": "x".join(map(str, size)),
        "patch": "-" if patch_size is None else "x".join(map(str, patch_size)),
        "windows/call": "-" if patch_size is None else window_batch,
        "s/volume": seconds,
        "Mvoxel/s": np.prod(size) / seconds / 1e6,
        "peak MB": peak / 2**20,
        "memory": where,
    }


def build_model(precision: str) -> Any:
    """The Table 1 model with free spatial size, under ``precision``'s dtype policy."""
    from tutorial_lib.models import paper_table1
    from tutorial_lib.training import precision_scope

    with precision_scope(precision):
        return paper_table1(input_shape=(None, None, None, 1))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Time full-volume and sliding-window inference and print one table."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    parser.add_argument("--overlap", type=float, default=None,
                        help="sliding-window overlap (default 0.5; 0 in --smoke)")
    parser.add_argument("--window-batch", type=int, default=None,
                        help="sliding windows per model call (default 4; 8 in --smoke)")
    args = parser.parse_args(argv)
    common.apply_smoke_settings(args.smoke)
    common.apply_backend(args.backend)
    smoke_size = (32, 32, 32)  # two 16^3 patches per axis in the window
    size = tuple(args.size or (smoke_size if args.smoke else
                               common.default_size(common.keras_device(), smoke=False)))
    patch = tuple(args.patch or default_patch(size))
    repeats = args.steps or (1 if args.smoke else 3)
    warmup = 1 if args.warmup is None else args.warmup
    model = build_model(args.precision)
    overlap = args.overlap if args.overlap is not None else (0.0 if args.smoke else 0.5)
    rows = [
        measure_inference(size, patch_size=None, precision=args.precision, repeats=repeats,
                          warmup=warmup, model=model),
        measure_inference(size, patch_size=patch, overlap=overlap, precision=args.precision,
                          repeats=repeats, warmup=warmup, model=model,
                          window_batch=args.window_batch or (8 if args.smoke else 4)),
    ]
    rows[1]["vs full"] = rows[1]["s/volume"] / rows[0]["s/volume"]
    common.print_table("Whole-volume inference, Table 1 model", rows)
    if args.json:
        common.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
