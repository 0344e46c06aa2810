"""Input pipeline throughput next to the training step it has to feed.

Reads whole volumes from a prepared cache with ``tutorial_lib.datasets.VolumeDataset``
(FLAIR, whole-tumour target, shuffled, as chapter 03 trains) and reports
volumes/s for one reader thread calling ``dataset[i]``, the way Keras consumes
a ``PyDataset`` with ``workers=1``; more workers only add to this. The Table 1
training step is timed at the cache's grid (each axis rounded up to a
multiple of 16, which four poolings need), and the ratio pipeline/step
printed: the target is at least 3, so the accelerator never waits.

The cache is built in a temporary folder from freshly generated cases
(``--cases``, ``--downsample``), or an existing one is read (``--cache``).
Files are in the page cache after a first pass; reported passes are warm.

Examples
--------
::

    python benchmarks/bench_pipeline.py                       # CPU: K=2, 96x96x80
    python benchmarks/bench_pipeline.py --downsample 1 --precision bfloat16   # GPU, full size
    python benchmarks/bench_pipeline.py --cache data/cache/ci --step-ms 120
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

__all__ = ["measure_pipeline", "main"]

TARGET_RATIO = 3.0


def measure_pipeline(cache_dir: Path, *, batch_size: int = 1, passes: int = 3) -> dict[str, Any]:
    """Volumes/s of serial ``VolumeDataset`` reads over every case of ``cache_dir``.

    One untimed pass first, then the median of ``passes`` timed passes.
    """
    from tutorial_lib.data import load_manifest
    from tutorial_lib.datasets import VolumeDataset

    case_ids = sorted(load_manifest(cache_dir)["cases"])
    dataset = VolumeDataset(cache_dir, case_ids, batch_size=batch_size, shuffle=True)
    times, shape = [], None
    for index in range(passes + 1):
        start = time.perf_counter()
        for batch in range(len(dataset)):
            images, targets = dataset[batch]
            shape = images.shape
        dataset.on_epoch_end()
        if index:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "stage": "VolumeDataset[i], 1 reader",
        "size": "x".join(map(str, shape[1:4])),
        "batch": batch_size,
        "volumes": len(case_ids),
        "ms/volume": 1000 * seconds / len(case_ids),
        "volumes/s": len(case_ids) / seconds,
    }


def _step_size(grid: tuple[int, ...], smoke: bool) -> tuple[int, int, int]:
    if smoke:
        return (16, 16, 16)  # smoke figures only prove the code runs
    return tuple(-(-size // 16) * 16 for size in grid[:3])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure pipeline and step; print the table and the ratio."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="read this prepared cache")
    parser.add_argument("--raw", type=Path, default=None,
                        help="prepare this folder of BraTS-style cases instead of generating")
    parser.add_argument("--cases", type=int, default=None, help="cases to generate (default 4)")
    parser.add_argument("--downsample", type=int, default=None,
                        help="cache factor K when generating (default 2; 1 = 192x192x160)")
    parser.add_argument("--workers", type=int, default=1, help="processes for generation")
    parser.add_argument("--step-ms", type=float, default=None,
                        help="use this step time instead of measuring one")
    args = parser.parse_args(argv)
    common.apply_smoke_settings(args.smoke)
    common.apply_backend(args.backend)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        cache, made = (args.cache, "existing cache") if args.cache else common.prepared_cache(
            Path(tmp), args.raw, cases=args.cases or (2 if args.smoke else 4),
            downsample=args.downsample or (4 if args.smoke else 2), workers=args.workers)
        row = measure_pipeline(cache, batch_size=args.batch_size, passes=args.steps or
                               (1 if args.smoke else 3))
    rows = [row, _step_row(args, tuple(int(s) for s in row["size"].split("x")))]
    ratio = row["volumes/s"] / rows[1]["volumes/s"]
    rows.append({"stage": "pipeline / step", "ratio": ratio,
                 "target": f">= {TARGET_RATIO:g}", "holds": ratio >= TARGET_RATIO})
    common.print_table(f"Input pipeline vs training step ({made})", rows)
    if args.json:
        common.write_json(args.json, rows)
    return rows


def _step_row(args: Any, grid: tuple[int, ...]) -> dict[str, Any]:
    size = _step_size(grid, args.smoke)
    if args.step_ms:
        seconds, how = args.step_ms / 1000, "given (--step-ms)"
    else:
        from bench_train_step import measure_keras_step

        measured = measure_keras_step(size, precision=args.precision, steps=1 if args.smoke else 3,
                                      warmup=1, batch_size=args.batch_size)
        seconds, how = measured["ms/step"] / 1000, f"keras/{common.active_backend()} {args.precision}"
    shown = "as measured" if args.step_ms else "x".join(map(str, size))
    return {"stage": f"training step ({how})", "size": shown,
            "batch": args.batch_size, "ms/volume": 1000 * seconds / args.batch_size,
            "volumes/s": args.batch_size / seconds}


if __name__ == "__main__":
    main()
