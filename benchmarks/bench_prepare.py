"""Data preparation and cache read throughput, next to plain NIfTI decompression.

On a few freshly generated synthetic cases, measured in one run:

* the *decompression floor*: loading every ``.nii.gz`` of a case with plain
  nibabel (four modalities and the label, fully decoded) - no preparation
  can be faster than reading its input;
* ``tutorial_lib.ingest.prepare_dataset`` (validate, crop, z-score,
  optionally down-sample, write the ``.npy`` cache), in cases/s and as a
  multiple of the floor's time;
* reading a case back from the cache (``np.load`` of image and label, and
  ``tutorial_lib.data.load_case``), next to reading the ``.nii.gz`` files
  again - the saving every epoch gets from the cache.

All files are freshly written, so they are in the operating system's page
cache: the figures compare decoding work, not disk speed.

Examples
--------
::

    python benchmarks/bench_prepare.py --cases 4
    python benchmarks/bench_prepare.py --raw ~/BraTS2017/HGG --downsample 2
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import common

__all__ = ["read_nifti_case", "read_cache_case", "main"]


def read_nifti_case(case_dir: Path) -> int:
    """Decode every ``.nii.gz`` of one case with nibabel; return the bytes decoded."""
    import nibabel
    import numpy as np

    total = 0
    for path in sorted(case_dir.glob("*.nii.gz")):
        total += np.asanyarray(nibabel.load(path).dataobj).nbytes
    return total


def read_cache_case(case_dir: Path) -> int:
    """Read every ``.npy`` of one cached case fully into memory; return the bytes read."""
    import numpy as np

    return sum(np.load(path, allow_pickle=False).nbytes for path in sorted(case_dir.glob("*.npy")))


def _timed(function: Callable[[Any], int], items: Iterable[Any]) -> tuple[float, int]:
    start = time.perf_counter()
    total = sum(function(item) for item in items)
    return time.perf_counter() - start, total


def _row(step: str, cases: int, seconds: float, nbytes: int | None, floor: float | None) -> dict:
    row = {"step": step, "cases": cases, "seconds": seconds, "cases/s": cases / seconds}
    row["MB/s"] = nbytes / seconds / 2**20 if nbytes else "-"
    row["time vs .nii.gz load"] = seconds / floor if floor else 1.0
    return row


def measure(raw_dir: Path, cache_dir: Path, *, downsample: int, workers: int, repeats: int) -> list[dict]:
    """Measure the floor, preparation and cache reads on the cases in ``raw_dir``."""
    from tutorial_lib import data, ingest

    case_dirs = sorted(path for path in raw_dir.iterdir() if path.is_dir())
    n = len(case_dirs)
    # Median of several passes: the first pass also pays for imports and caches.
    floor_runs = [_timed(read_nifti_case, case_dirs) for _ in range(repeats)]
    floor_seconds = statistics.median(seconds for seconds, _ in floor_runs)
    start = time.perf_counter()
    report = ingest.prepare_dataset(raw_dir, cache_dir, downsample=downsample, workers=workers,
                                    progress=False)
    prepare_seconds = time.perf_counter() - start
    if not report.ok:
        raise RuntimeError(f"preparation failed for some cases:\n{report.summary()}")
    case_ids = sorted(data.load_manifest(cache_dir)["cases"])
    cached = [cache_dir / "cases" / case_id for case_id in case_ids]
    cache_runs = [_timed(read_cache_case, cached) for _ in range(repeats)]
    load_runs = [_timed(lambda cid: data.load_case(cache_dir, cid)[0].nbytes, case_ids)
                 for _ in range(repeats)]
    return [
        _row(".nii.gz load, nibabel (floor)", n, floor_seconds, floor_runs[0][1], floor_seconds),
        _row(f"prepare_dataset (K={downsample}, workers={workers})", n, prepare_seconds, None,
             floor_seconds),
        _row("cache read, np.load all .npy", len(cached),
             statistics.median(s for s, _ in cache_runs), cache_runs[0][1], floor_seconds),
        _row("cache read, data.load_case (FLAIR, WT)", len(case_ids),
             statistics.median(s for s, _ in load_runs), load_runs[0][1], floor_seconds),
    ]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Generate cases, measure, print one table."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="synthetic cases (default 4)")
    parser.add_argument("--raw", type=Path, default=None,
                        help="existing folder of BraTS-2017-style cases instead of generating")
    parser.add_argument("--downsample", type=int, default=1, help="cache down-sampling factor K")
    parser.add_argument("--workers", type=int, default=1, help="processes for generation/preparation")
    args = parser.parse_args(argv)
    n_cases = args.cases or (1 if args.smoke else 4)
    repeats = args.steps or (1 if args.smoke else 3)
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        raw, cache = args.raw or Path(tmp) / "raw", Path(tmp) / "cache"
        if args.raw is None:
            start = time.perf_counter()
            made = common.make_cases(raw, n_cases, workers=args.workers)
            print(f"(wrote {n_cases} {made} in {time.perf_counter() - start:.1f} s; "
                  "not part of any row)")
        rows = measure(raw, cache, downsample=args.downsample, workers=args.workers, repeats=repeats)
    common.print_table("Preparation and cache reads vs NIfTI decompression", rows)
    if args.json:
        common.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
