"""Run every benchmark and print its tables; ``--smoke`` runs them all at tiny sizes.

CI runs ``python benchmarks/run_all.py --smoke`` (a couple of minutes at most
on 2 CPU cores) so the scripts never rot; the figures of a smoke run mean
nothing. Without ``--smoke`` each benchmark runs at its default size for the
device it finds (see each script's ``--help``).

The shared options (``--backend``, ``--size``, ``--precision``, ``--steps``)
are passed to every benchmark they apply to. Benchmarks run in this process,
one after the other; a failure is reported and the others still run, and the
exit status is non-zero if any failed.

Examples
--------
::

    python benchmarks/run_all.py --smoke
    KERAS_BACKEND=jax python benchmarks/run_all.py --json results.json
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import common

__all__ = ["BENCHMARKS", "main"]

# Module name -> which shared options it takes, in the order they run.
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "bench_train_step": ("size", "precision", "steps", "backend"),
    "bench_inference": ("size", "precision", "steps", "backend"),
    "bench_pipeline": ("precision", "steps", "backend"),  # its size is the cache grid
    "bench_augment": ("steps", "backend"),  # the ci patch network's sizes
    "bench_prepare": ("steps",),
    "bench_short_training": ("backend",),
    "bench_grid_training": ("backend", "steps"),
}


def _forwarded(args: Any, options: tuple[str, ...]) -> list[str]:
    argv = ["--smoke"] if args.smoke else []
    if "size" in options and args.size:
        argv += ["--size", *map(str, args.size)]
    if "precision" in options:
        argv += ["--precision", args.precision]
    if "steps" in options and args.steps:
        argv += ["--steps", str(args.steps)]
    if "backend" in options and args.backend:
        argv += ["--backend", args.backend]
    return argv


def _extra(name: str, args: Any, raw_dir: Path, collected: list[dict[str, Any]]) -> list[str]:
    """Share work between benchmarks: one set of generated cases, and in smoke mode one step time."""
    if name == "bench_augment":
        return ["--raw", str(raw_dir)]
    if name in ("bench_prepare", "bench_pipeline"):
        extra = ["--raw", str(raw_dir)]
        step = [row for row in collected if row["benchmark"] == "bench_train_step"
                and row.get("model", "").startswith("keras") and "ms/step" in row]
        if name == "bench_pipeline" and args.smoke and step:
            extra += ["--step-ms", str(step[0]["ms/step"])]
        return extra
    return []


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; return 0 if all succeeded."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None,
                        help="run only these benchmarks")
    parser.add_argument("--cases", type=int, default=None,
                        help="synthetic cases shared by bench_prepare/bench_pipeline/bench_augment "
                             "(default 4; 1 in --smoke)")
    args = parser.parse_args(argv)
    common.apply_smoke_settings(args.smoke)
    common.apply_backend(args.backend)
    print(f"versions: {common.versions()}  backend: {common.active_backend()}")
    collected, failed = [], []
    names = args.only or list(BENCHMARKS)
    with tempfile.TemporaryDirectory(prefix="bench_cases_") as tmp:
        raw_dir = Path(tmp) / "raw"
        if {"bench_prepare", "bench_pipeline", "bench_augment"} & set(names):
            n_cases = args.cases or (1 if args.smoke else 4)
            print(f"writing {n_cases} case(s): {common.make_cases(raw_dir, n_cases)}", flush=True)
        for name in names:
            start = time.perf_counter()
            print(f"\n## {name}", flush=True)
            forwarded = _forwarded(args, BENCHMARKS[name]) + _extra(name, args, raw_dir, collected)
            try:
                rows = importlib.import_module(name).main(forwarded)
                collected += [{"benchmark": name, **row} for row in rows]
            except Exception:  # report and carry on: one broken benchmark must not hide the rest
                traceback.print_exc()
                failed.append(name)
            print(f"({name}: {time.perf_counter() - start:.1f} s)", flush=True)
    if args.json:
        common.write_json(args.json, collected)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
