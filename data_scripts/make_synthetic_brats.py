"""Write a BraTS-2017 style synthetic dataset (and optionally report how hard it is).

Usage (from the repository root)::

    python data_scripts/make_synthetic_brats.py --out data/synthetic --n-cases 16 --seed 0 --workers 2
    python data_scripts/make_synthetic_brats.py --out data/synthetic --n-cases 16 --report

Each case folder ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` is written
atomically; re-running skips finished cases. ``--report`` then prints the
per-case generation time and, for each case held out in turn, the
whole-tumour Dice of the best global FLAIR threshold fitted on the other
cases, on the grids the course trains on: the full-size crop
(192 x 192 x 160) and the 4x down-sampled grid of the CI profile
(48 x 48 x 40), both prepared by ``tutorial_lib.ingest`` exactly as the
course cache is.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tutorial_lib import baseline, data, ingest, synthetic


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset folder")
    parser.add_argument("--n-cases", required=True, type=int, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--report", action="store_true", help="print timing and threshold baseline")
    args = parser.parse_args(argv)
    if args.n_cases < 1 or args.seed < 0 or args.workers < 1:
        parser.error("--n-cases and --workers must be >= 1 and --seed >= 0")
    return args


def _cached_cases(cache_dir: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """FLAIR, whole-tumour mask and brain mask of every case of a prepared cache, as training reads them."""
    cases = []
    for case_id in sorted(data.load_manifest(cache_dir)["cases"]):
        flair, whole = data.load_case(cache_dir, case_id, modalities="flair", target="wt")
        cases.append((flair[..., 0], whole[..., 0] > 0.5, data.load_brain(cache_dir, case_id)))
    return cases


def report(raw_dir: Path, *, factors: tuple[int, ...] = (1, 4)) -> dict[int, np.ndarray]:
    """Print leave-one-out FLAIR-threshold Dice per down-sampling factor; return the Dice arrays.

    Each factor's grid is the one the course trains on: the cases are prepared
    with ``ingest.prepare_dataset`` (crop, z-score, down-sampling) into a
    temporary cache and read back with ``data.load_case``.
    """
    results = {}
    for factor in factors:
        with tempfile.TemporaryDirectory() as scratch:
            cache = Path(scratch) / "cache"
            prepared = ingest.prepare_dataset(raw_dir, cache, downsample=factor, progress=False)
            if not prepared.ok:
                raise RuntimeError(prepared.summary())
            cases = _cached_cases(cache)
        dice, chosen = baseline.leave_one_out_dice(*zip(*cases))
        grid = "x".join(str(s) for s in cases[0][0].shape)
        print(
            f"FLAIR threshold, held-out whole-tumour Dice at {factor}x ({grid}): "
            f"mean {dice.mean():.3f}, median {np.median(dice):.3f}, "
            f"range {dice.min():.2f}-{dice.max():.2f}; thresholds {chosen.min():.2f}-{chosen.max():.2f}"
        )
        results[factor] = dice
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    start = time.perf_counter()
    case_dirs = synthetic.make_dataset(args.out, args.n_cases, seed=args.seed, workers=args.workers)
    print(f"{len(case_dirs)} cases in {args.out} ({time.perf_counter() - start:.1f} s wall)")
    if args.report:
        synthetic.generate_case("warm_up", seed=0)  # the first case also loads the MNI template
        probe = time.process_time()
        synthetic.generate_case("timing_probe", seed=synthetic.case_seed(args.seed, 0))
        print(f"generation time per case: {time.process_time() - probe:.2f} s CPU (one core, no writing)")
        if len(case_dirs) < 2:
            print("threshold report needs at least 2 cases")
            return 1
        report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
