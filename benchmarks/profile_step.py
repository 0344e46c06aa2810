"""Where one training step's time goes: TensorFlow's profiler on the Table 1 model.

``bench_train_step.py`` says how long a step takes; this script says which
operations take that time. It compiles ``paper_table1`` exactly as the step
benchmark does, runs warm-up steps, records one step with
``tf.profiler.experimental`` and reads the trace back (the ``XSpace``
protocol buffer that ships with TensorFlow), printing two tables: time per
operation type, and the slowest individual operations with their layer names.

TensorFlow runs independent operations of a step at once on several cores,
so the operation times add up to more than the step's wall-clock time; the
shares are shares of that sum. TensorFlow backend only (the other backends
have their own profilers: ``jax.profiler``, ``torch.profiler``).

Examples
--------
::

    python benchmarks/profile_step.py                    # CPU: 96x96x64
    python benchmarks/profile_step.py --size 48 48 32 --top 20
"""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import common

__all__ = ["profile_step", "tables", "main"]


def profile_step(
    size: Sequence[int], *, precision: str = "float32", warmup: int = 2, batch_size: int = 1
) -> tuple[float, collections.Counter]:
    """Profile one ``train_on_batch`` step of ``paper_table1`` on TensorFlow.

    Returns
    -------
    step_seconds : float
        Wall-clock time of the profiled step.
    op_milliseconds : collections.Counter
        ``(layer path, operation type) -> milliseconds`` summed over the
        executor threads of the step.

    Raises
    ------
    ValueError
        If the active Keras backend is not TensorFlow.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"profile_step.py reads TensorFlow's profiler; the Keras backend is "
            f"{keras.backend.backend()!r}. Run it with KERAS_BACKEND=tensorflow."
        )
    import tensorflow as tf
    from bench_train_step import compiled_table1

    model, images, labels = compiled_table1(size, precision=precision, batch_size=batch_size)
    for _ in range(max(warmup, 1)):  # the first step traces and compiles
        model.train_on_batch(images, labels)
    with tempfile.TemporaryDirectory(prefix="profile_step_") as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        seconds = time.perf_counter() - start
        tf.profiler.experimental.stop()
        return seconds, _op_times(next(Path(logdir).rglob("*.xplane.pb")))


def _op_times(trace: Path) -> collections.Counter:
    """Sum the kernel events of TensorFlow's executor threads by ``(layer path, op type)``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(trace.read_bytes())
    times: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Kernel events are named "scope/op_name:OpType"; the rest is executor bookkeeping.
                if ":" in name and not name.startswith(("ExecutorState", "ParallelFor")):
                    path, op_type = name.rsplit(":", 1)
                    times[(path, op_type)] += event.duration_ps / 1e9
    return times


def tables(op_milliseconds: collections.Counter, *, top: int = 12) -> tuple[list[dict], list[dict]]:
    """Rows of the ``top`` operation types (the rest summed in one row) and the ``top`` slowest operations."""
    total = sum(op_milliseconds.values()) or 1.0
    by_type: collections.Counter = collections.Counter()
    for (_, op_type), milliseconds in op_milliseconds.items():
        by_type[op_type] += milliseconds
    ranked = by_type.most_common()
    type_rows = [{"op type": op_type, "ms": ms, "share %": 100 * ms / total}
                 for op_type, ms in ranked[:top]]
    if len(ranked) > top:
        rest = sum(ms for _, ms in ranked[top:])
        type_rows.append({"op type": f"({len(ranked) - top} other types)", "ms": rest,
                          "share %": 100 * rest / total})
    op_rows = [{"operation": path, "op type": op_type, "ms": ms, "share %": 100 * ms / total}
               for (path, op_type), ms in op_milliseconds.most_common(top)]
    return type_rows, op_rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Profile one step and print the two tables; return the per-type rows."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=12, help="operation types and operations to list")
    args = parser.parse_args(argv)
    common.apply_backend(args.backend or "tensorflow")
    size = tuple(args.size or common.default_size(common.keras_device(), smoke=args.smoke))
    seconds, op_milliseconds = profile_step(size, precision=args.precision,
                                            warmup=args.warmup or 1, batch_size=args.batch_size)
    type_rows, op_rows = tables(op_milliseconds, top=args.top)
    label = f"{'x'.join(map(str, size))}, {args.precision}, batch {args.batch_size}"
    print(f"\nprofiled step: {1000 * seconds:.0f} ms wall clock, "
          f"{sum(op_milliseconds.values()):.0f} ms of operations summed over threads")
    common.print_table(f"Step time by operation type, Table 1 model, {label}", type_rows)
    common.print_table(f"Slowest operations, Table 1 model, {label}", op_rows)
    if args.json:
        common.write_json(args.json, type_rows + op_rows)
    return type_rows


if __name__ == "__main__":
    main()
