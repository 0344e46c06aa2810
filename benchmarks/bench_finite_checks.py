"""What the NaN/inf checks of issue 10 cost, next to the work they guard, in one run.

* Cache readers: ``VolumeDataset[i]`` (read + float32 conversion + target) and,
  on the batch it returned, the check it runs (:func:`tutorial_lib.data.non_finite_count`,
  ``np.isfinite(x).all()``), plus a float32 sum, the other one-pass screen, for comparison.
* ``train`` on ``(x, y)`` arrays: the one-off check of both arrays against
  reading the same volumes from the cache (a training epoch costs far more).
* Weights: :func:`tutorial_lib.training.non_finite_weights` on the paper's
  Table 1 model (13.5 M parameters), run once per epoch, against one training step.

Each figure is the median of ``--repeats`` warm runs.

Examples
--------
::

    python benchmarks/bench_finite_checks.py                  # CPU: 2 cases at K=2 (96x96x80)
    python benchmarks/bench_finite_checks.py --downsample 1   # the full 192x192x160 grid
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def _median_ms(work: Callable[[], Any], repeats: int) -> float:
    work()  # warm: page cache, first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _cache(args: argparse.Namespace, tmp: Path) -> Path:
    if args.cache is not None:
        return args.cache
    from tutorial_lib import ingest, synthetic

    synthetic.make_dataset(tmp / "raw", args.cases, seed=0, workers=1, progress=False)
    report = ingest.prepare_dataset(tmp / "raw", tmp / "cache", downsample=args.downsample, progress=False)
    if not report.ok:
        raise RuntimeError(report.summary())
    return tmp / "cache"


def _labelled(cache: Path) -> list[str]:
    from tutorial_lib.data import load_manifest

    return [case for case, meta in load_manifest(cache)["cases"].items() if meta["labelled"]][:2]


def _row(name: str, guarded: str, work_ms: float, check_ms: float) -> dict[str, Any]:
    return {"check": name, "guards": guarded, "work ms": round(work_ms, 3), "check ms": round(check_ms, 3),
            "cost %": round(100 * check_ms / work_ms, 2)}


def reader_rows(cache: Path, repeats: int) -> list[dict[str, Any]]:
    import numpy as np

    from tutorial_lib.data import non_finite_count
    from tutorial_lib.datasets import VolumeDataset

    ids = _labelled(cache)
    rows = []
    for modalities in (("flair",), "all"):
        reader = VolumeDataset(cache, ids, modalities=modalities, batch_size=1)
        x = reader[0][0]
        read = _median_ms(lambda reader=reader: reader[0], repeats)
        label = f"reader batch {tuple(x.shape)}"
        rows.append(_row(f"{label}: non_finite_count (used)", "VolumeDataset[i]", read,
                         _median_ms(lambda x=x: non_finite_count(x), repeats)))
        rows.append(_row(f"{label}: float32 sum", "VolumeDataset[i]", read,
                         _median_ms(lambda x=x: bool(np.isfinite(x.sum())), repeats)))
    return rows


def array_rows(cache: Path, repeats: int) -> list[dict[str, Any]]:
    import numpy as np

    from tutorial_lib.data import load_case, non_finite_count

    ids = _labelled(cache)
    pairs = [load_case(cache, case) for case in ids]
    x, y = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    read = _median_ms(lambda: [load_case(cache, case) for case in ids], repeats)
    check = _median_ms(lambda: (non_finite_count(x), non_finite_count(y)), repeats)
    return [_row(f"train (x, y) arrays {tuple(x.shape)}, once per call", "load_case of the same volumes",
                 read, check)]


def weight_rows(repeats: int, size: int) -> list[dict[str, Any]]:
    import keras
    import numpy as np

    from tutorial_lib import losses, models
    from tutorial_lib.training import non_finite_weights

    model = models.paper_table1((size, size, size, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses.get_loss("dice_probability"))
    x = np.random.default_rng(0).normal(size=(1, size, size, size, 1)).astype("float32")
    y = (x > 1).astype("float32")
    step = _median_ms(lambda: model.train_on_batch(x, y), max(2, repeats // 5))
    check = _median_ms(lambda: non_finite_weights(model), repeats)
    return [_row(f"weights, Table 1 model ({model.count_params():,} params)",
                 f"one training step at {size}^3 (runs once per epoch)", step, check)]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="an existing prepared cache (default: build one)")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--step-size", type=int, default=32, help="cube edge of the timed training step")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_finite_") as tmp:
        cache = _cache(args, Path(tmp))
        rows = reader_rows(cache, args.repeats) + array_rows(cache, args.repeats)
    rows += weight_rows(args.repeats, args.step_size)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return rows


if __name__ == "__main__":
    main()
