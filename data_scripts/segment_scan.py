#!/usr/bin/env python
"""Segment your own scan with a network the course trained.

Usage (from the repository root)::

    python data_scripts/segment_scan.py --model data/runs/patch_unet-0123456789abcdef \
        --flair my_flair.nii.gz --t1 my_t1.nii.gz --t1ce my_t1ce.nii.gz --t2 my_t2.nii.gz \
        --out my_seg.nii.gz

``--model`` is a finished run folder (its ``record.json`` says which
modalities the network takes and how its cache was down-sampled) or a
``.keras`` file, loaded in Keras's safe mode (then give ``--downsample``).
Give ``--model`` several times for an ensemble (the networks' probabilities
are averaged, e.g. the seeds of one configuration); ``--tta`` mirrors the
scan along every combination of its axes and averages (8 times the work);
``--probabilities PATH`` also writes the probabilities beside the labels.
The scans may come in any orientation and voxel size, all modalities on one
grid and skull-stripped; the labels are written on the scan's own grid with
its affine (see ``tutorial_lib.scans``). Exits with status 2 and one line
naming the file and the problem on bad input, and with status 1 and one line
naming the folder, its free space and the size needed when the disk is full.
"""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from pathlib import Path

from tutorial_lib.config import BRATS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, action="append",
                        help="finished run folder or .keras file; several for an ensemble")
    for modality in BRATS.modalities:
        parser.add_argument(f"--{modality}", type=Path, default=None, help=f"{modality} NIfTI file")
    parser.add_argument("--out", required=True, type=Path, help="label file to write (.nii.gz)")
    parser.add_argument("--downsample", type=int, default=None,
                        help="the training cache's block factor (only for a network without a run record)")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold")
    parser.add_argument("--tta", action="store_true", help="test-time mirroring: average over the 8 flips")
    parser.add_argument("--probabilities", type=Path, default=None, help="also write the probabilities here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tutorial_lib import scans  # imports Keras: after --help and argument errors

    images = {m: getattr(args, m) for m in BRATS.modalities if getattr(args, m) is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("always", scans.ScanWarning)
        warnings.showwarning = lambda message, *rest: print(f"warning: {message}", file=sys.stderr)
        try:
            networks = [scans.load_network(model, downsample=args.downsample) for model in args.model]
            for model, network in zip(args.model, networks):
                print(f"network: {model} ({', '.join(network.modalities)}; cache factor {network.downsample})")
            out = scans.segment_scan(networks, images, args.out, threshold=args.threshold, mirror=args.tta,
                                     probabilities_path=args.probabilities)
        except scans.ScanError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except OSError as error:
            if error.errno != errno.ENOSPC:  # a full disk is said in one line, anything else in full
                raise
            print(f"error: {error}", file=sys.stderr)
            return 1
    print(f"wrote {out}" + (f" and {args.probabilities}" if args.probabilities else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
