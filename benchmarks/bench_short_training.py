"""What one short training costs before it learns anything: where the optimizer's variables are made.

The ``ci`` chapters train about sixty small networks for a few dozen steps
each, so a fixed cost per training weighs more than the step time. Keras
creates Adam's slot variables (two per weight) lazily, inside the first
traced training step, where each costs milliseconds of graph building;
``tutorial_lib.training.train`` builds the optimizer eagerly right after
``compile``. This script times both, side by side and alternating, on
chapter 05's ``ci`` network (filters 4-8-16, 24^3 patches of four
modalities, batch 2): the first ``fit`` step (tracing included) and the
whole short ``fit``. The weights each path ends with are compared too:
the eager build must not change what is learnt.

Examples
--------
::

    python benchmarks/bench_short_training.py            # 3 repeats, 22 steps per fit
    python benchmarks/bench_short_training.py --smoke    # 1 repeat, 4 steps
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import common

__all__ = ["measure_fit", "main"]

PATHS = {"lazy (Keras default)": False, "eager (training.train)": True}


def measure_fit(*, eager_optimizer: bool, steps: int, seed: int = 0) -> dict[str, Any]:
    """Build, compile and fit the ablation network once; return the first step's and the fit's seconds."""
    import keras
    import numpy as np

    from tutorial_lib import losses, models, training

    class FirstStep(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 0:
                self.seconds = time.perf_counter() - self.started

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * steps, 24, 24, 24, 4)).astype("float32")
    y = (rng.random((2 * steps, 24, 24, 24, 1)) < 0.1).astype("float32")
    started = time.perf_counter()
    model = models.unet((None, None, None, 4), filters=(4, 8, 16))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=losses.dice_probability_loss,
                  metrics=[training.DiceMetric()])
    if eager_optimizer:
        model.optimizer.build(model.trainable_variables)
    first = FirstStep()
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[first])
    weights = np.concatenate([w.ravel() for w in model.get_weights()])
    return {"first step (s)": first.seconds, "build + fit (s)": time.perf_counter() - started, "weights": weights}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    common.apply_backend(args.backend)
    repeats = 1 if args.smoke else (args.steps or 3)
    steps = 4 if args.smoke else 22  # 22: one ci ablation epoch (22 cases x 2 patches / batch 2)
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in PATHS}
    for _ in range(repeats):
        for name, eager in PATHS.items():  # alternating, so a busy spell hits both
            measured[name].append(measure_fit(eager_optimizer=eager, steps=steps))
    import numpy as np

    same = np.array_equal(*(runs[0]["weights"] for runs in measured.values()))
    rows = [{"optimizer variables": name, "fits": len(runs), "steps per fit": steps,
             **{key: statistics.median(run[key] for run in runs) for key in ("first step (s)", "build + fit (s)")},
             "same weights": same}
            for name, runs in measured.items()]
    lazy, eager = (row["build + fit (s)"] for row in rows)
    common.print_table(f"A short training's fixed cost ({common.active_backend()}, median of {repeats})", rows)
    print(f"\neager build saves {lazy - eager:.2f} s per training ({lazy / eager:.2f}x)")
    if args.json:
        common.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
