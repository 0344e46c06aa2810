"""A grid's repeated trainings of one architecture: a new network each time, or the last one kept.

Chapters 02-07 train grids of small networks: one architecture once per
seed, learning rate or loss. Compiling a new network drops Keras's traced
training and validation steps, and tracing them again costs about a second,
as much as a ``ci`` network's whole short training. ``tutorial_lib.training.train``
therefore keeps a network's traced steps when it is trained again with the
same optimizer, loss and precision, after resetting its optimizer as a new
compile would; ``tutorial_lib.recipes`` trains each run in the last network
of its architecture, into which it copies a new network's seeded initial
state (``model.variables``: weights and random-seed state).

This script trains chapter 05's ``ci`` network (filters 4-8-16, 24^3
patches of four modalities, batch 2, two epochs with validation) through
``training.train``, both ways, side by side and alternating, one seed after
another, and compares the weights each way ends with: keeping the network
must not change what is learnt.

Examples
--------
::

    python benchmarks/bench_grid_training.py            # 3 seeds, 22 steps per epoch
    python benchmarks/bench_grid_training.py --smoke    # 1 seed, 4 steps
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

__all__ = ["train_seed", "main"]

PATHS = ("new network (compile + trace)", "kept network (training.train again)")


def train_seed(seed: int, data: tuple, kept: Any | None, out_dir: Path) -> tuple[float, Any]:
    """Train the ablation network from ``seed``'s initial state, in ``kept`` if given; return seconds and weights."""
    import keras
    import numpy as np

    from tutorial_lib import models, training

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = models.unet((None, None, None, 4), filters=(4, 8, 16))
    if kept is not None:
        for kept_variable, variable in zip(kept.variables, model.variables, strict=True):
            kept_variable.assign(variable)
        model = kept
    train, validation = data
    training.train(model, train, validation, out_dir=out_dir, epochs=2, batch_size=2, learning_rate=3e-3,
                   seed=seed, verbose=0)
    return time.perf_counter() - started, np.concatenate([w.ravel() for w in model.get_weights()])


def _arrays(n: int, seed: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 24, 24, 24, 4)).astype("float32")
    return x, (x[..., :1] > 1.0).astype("float32")  # bright FLAIR: learnable in a few steps


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    common.apply_backend(args.backend)
    import keras
    import numpy as np

    from tutorial_lib import models, training

    seeds = 1 if args.smoke else (args.steps or 3)
    steps = 4 if args.smoke else 22  # 22: one ci ablation epoch (22 cases x 2 patches / batch 2)
    data = (_arrays(2 * steps, 0), _arrays(4, 1))
    seconds: dict[str, list[float]] = {name: [] for name in PATHS}
    same = []
    with tempfile.TemporaryDirectory(prefix="bench_grid_") as tmp:
        keras.utils.set_random_seed(0)
        kept = models.unet((None, None, None, 4), filters=(4, 8, 16))
        training.train(kept, *data, out_dir=Path(tmp) / "first", epochs=1, batch_size=2, learning_rate=3e-3,
                       verbose=0)  # the grid's first run, which traces the steps either way
        for seed in range(1, seeds + 1):  # alternating, so a busy spell hits both
            new_seconds, new_weights = train_seed(seed, data, None, Path(tmp) / f"new-{seed}")
            kept_seconds, kept_weights = train_seed(seed, data, kept, Path(tmp) / f"kept-{seed}")
            seconds[PATHS[0]].append(new_seconds)
            seconds[PATHS[1]].append(kept_seconds)
            same.append(np.array_equal(new_weights, kept_weights))
    rows = [{"each training": name, "trainings": len(times), "steps per epoch": steps,
             "seconds (median)": statistics.median(times), "same weights": all(same)}
            for name, times in seconds.items()]
    new, kept_row = (row["seconds (median)"] for row in rows)
    common.print_table(f"A grid's next training ({common.active_backend()}, median of {seeds})", rows)
    print(f"\nkeeping the network saves {new - kept_row:.2f} s per training ({new / kept_row:.2f}x)")
    if args.json:
        common.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
