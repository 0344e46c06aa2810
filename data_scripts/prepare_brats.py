#!/usr/bin/env python
"""Prepare a BraTS download (folder or archive) as the course's training cache.

Usage (from the repository root)::

    python data_scripts/prepare_brats.py --src ~/Downloads/MICCAI_BraTS17_Data_Training.zip \
        --out data/cache/brats17 --downsample 1 --workers 4

Recognises BraTS 2017-2021, BraTS 2023+ and Medical Segmentation Decathlon
Task01 layouts (see ``tutorial_lib.ingest``). Finished cases are skipped, so
running the same command again resumes an interrupted import. Exits with
status 1 if any case failed or an archive member was refused or damaged (each
is listed with its file and problem), 2 on a usage error, and 130 on Ctrl-C,
after one line saying how many cases are kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tutorial_lib.ingest import prepare_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, type=Path, help="folder, .zip or .tar[.gz] of the download")
    parser.add_argument("--out", required=True, type=Path, help="cache folder to write (or resume)")
    parser.add_argument("--downsample", type=int, default=1, help="block size K: grid 192x192x160 / K")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        report = prepare_dataset(
            args.src, args.out, downsample=args.downsample, workers=args.workers, seed=args.seed
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = len(list((args.out / "cases").glob("*/case.json")))
        print(f"interrupted: {kept} finished case(s) kept in {args.out}; run the same command "
              "again to prepare the rest", file=sys.stderr)
        return 130
    print(report.summary())
    if not report.ok:
        print(
            f"{len(report.failed)} case(s) failed, {len(report.rejected_members)} archive "
            f"member(s) were refused and {len(report.damaged_members)} damaged; "
            "the other cases are in the cache.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
