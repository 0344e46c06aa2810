"""One training entry point that checkpoints, resumes, logs and fails loudly.

:func:`train` compiles a model with a loss from :mod:`tutorial_lib.losses`
and :class:`DiceMetric`, then fits it while

* keeping the best model by validation Dice in ``out_dir/best.keras``,
* backing up every epoch to ``out_dir/backup`` so that an interrupted run
  continues where it stopped when ``train`` is called again,
* logging one row per epoch to ``out_dir/history.csv``,
* refusing NaN/inf inputs (:class:`tutorial_lib.data.NonFiniteDataError`) and
  stopping with :class:`NonFiniteLossError` when the loss or a weight becomes
  NaN/inf; no file with a non-finite weight is ever written.

Every file is written under a temporary name and renamed. At each epoch end
the backup's weights (with the optimizer state) go to a new file, then one
JSON file, ``backup/state.json``, commits the epoch, the name of that
weights file and every history row so far; ``history.csv`` is rewritten
from it. A run killed at any point thus resumes from the last committed
epoch with exactly its history, and a cache reader continues the same
shuffling (:meth:`tutorial_lib.datasets.VolumeDataset.set_epoch`).

A finished run writes ``out_dir/final.weights.h5`` and ``out_dir/done.json``;
calling ``train`` again with the same ``out_dir`` loads those weights into
the model and returns the stored history instead of training again, so a
notebook can be re-executed cheaply.

Mixed precision and several devices are set up around the model *before*
it is built, because a Keras layer fixes its dtype and its variables'
placement when it is created::

    with precision_scope("bfloat16"), distribution_scope():
        model = models.unet(...)
        history = train(model, train_data, val_data, out_dir="runs/3d", mixed_precision="bfloat16")

Arrays are channels-last, ``(batch, x, y, z, channels)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np
import pandas as pd
from keras import ops

from tutorial_lib import losses as losses_module
from tutorial_lib._files import atomic_path, write_json_atomic
from tutorial_lib.data import NonFiniteDataError, check_finite

__all__ = [
    "DiceMetric",
    "EpochSummary",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "NonFiniteDataError",
    "DamagedBackupError",
    "non_finite_weights",
    "gpu_available",
    "precision_scope",
    "distribution_scope",
    "load_history",
    "load_best",
    "train",
]

_POLICIES = {None: "float32", "float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
HISTORY_FILE = "history.csv"
BEST_FILE = "best.keras"
FINAL_WEIGHTS_FILE = "final.weights.h5"
DONE_FILE = "done.json"
BACKUP_DIR = "backup"
STATE_FILE = "state.json"


# Floor of DiceMetric's sample count, so result() is 0 rather than 0/0 before any update.
_TINY_COUNT = 1e-7


@keras.saving.register_keras_serializable(package="tutorial_lib")
class DiceMetric(keras.metrics.Metric):
    """Mean per-sample Dice of binarised predictions, accumulated over an epoch.

    Each sample of a batch ``(batch, ..., channels)`` is binarised at
    ``threshold`` (prediction) and 0.5 (truth); its Dice counts all voxels and
    channels, with 1.0 when both are empty. The metric is the (optionally
    ``sample_weight``-weighted) mean over every sample seen since the last
    ``reset_state``, so it does not depend on how samples were batched.
    Computed in float32 with ``keras.ops`` only.

    Parameters
    ----------
    threshold : float, optional
        Predictions ``> threshold`` count as foreground.
    name : str, optional
        Name in training logs (``"dice"``, so Keras logs ``val_dice``).
    dtype : str, optional
        Dtype of the state variables.

    Examples
    --------
    >>> metric = DiceMetric()
    >>> metric.update_state(np.ones((2, 4, 1)), np.array([[0.9] * 4, [0.9, 0.9, 0.1, 0.1]])[..., None])
    >>> round(float(metric.result()), 4)  # mean of 1.0 and 2*2/(4+2)
    0.8333
    """

    def __init__(self, threshold: float = 0.5, name: str = "dice", dtype: str = "float32") -> None:
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", dtype="float32")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="float32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add the Dice of every sample in the batch ``(batch, ..., channels)``."""
        pred = ops.cast(ops.greater(ops.cast(y_pred, "float32"), self.threshold), "float32")
        true = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32")
        pred = ops.reshape(pred, (ops.shape(pred)[0], -1))
        true = ops.reshape(true, (ops.shape(true)[0], -1))
        overlap = ops.sum(pred * true, axis=1)
        sizes = ops.sum(pred, axis=1) + ops.sum(true, axis=1)
        # Counts are whole numbers, so max(sizes, 1) only changes the both-empty case.
        dice = ops.where(sizes > 0, 2.0 * overlap / ops.maximum(sizes, 1.0), 1.0)
        weight = ops.ones_like(dice) if sample_weight is None else ops.reshape(
            ops.cast(sample_weight, "float32"), ops.shape(dice))
        self.total.assign_add(ops.sum(dice * weight))
        self.count.assign_add(ops.sum(weight))

    def result(self) -> Any:
        """The weighted mean Dice so far (0 before any sample)."""
        return self.total / ops.maximum(self.count, _TINY_COUNT)

    def reset_state(self) -> None:
        """Forget all samples."""
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        """Serialisable settings."""
        return {**super().get_config(), "threshold": self.threshold}


class EpochSummary(keras.callbacks.Callback):
    """Print one line every ``every`` epochs and after the last: a log short enough for a page.

    Keras' ``verbose=2`` prints a line per epoch, forty for a forty-epoch run;
    pass ``verbose=0`` to :func:`train` and this callback instead.

    Parameters
    ----------
    every : int
        Epochs between lines, at least 1.
    keys : sequence of str, optional
        Logged values to show, where present.

    Examples
    --------
    >>> summary = EpochSummary(2)
    >>> summary.set_params({"epochs": 3})
    >>> for epoch in range(3):
    ...     summary.on_epoch_end(epoch, {"loss": -0.5, "dice": 0.61})
    epoch 2/3: loss -0.500, dice 0.610
    epoch 3/3: loss -0.500, dice 0.610
    """

    def __init__(self, every: int, *, keys: Sequence[str] = ("loss", "dice", "val_loss", "val_dice")):
        if every < 1:
            raise ValueError(f"every must be at least 1 epoch, got {every!r}")
        super().__init__()
        self.every, self.keys = every, tuple(keys)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs, last = logs or {}, self.params.get("epochs")
        if (epoch + 1) % self.every and epoch + 1 != last:
            return
        values = ", ".join(f"{key} {float(logs[key]):.3f}" for key in self.keys if key in logs)
        print(f"epoch {epoch + 1}/{last}: {values}", flush=True)


class NonFiniteLossError(FloatingPointError):
    """Raised by :func:`train` when the training loss becomes NaN or infinite."""


class NonFiniteWeightsError(NonFiniteLossError):
    """Raised by :func:`train` when a weight becomes NaN or infinite (the loss may still be finite)."""


class DamagedBackupError(OSError):
    """The backup of an interrupted run cannot be read; the message names the file and how to restart."""


def _policy_name(mixed_precision: str | None) -> str:
    if mixed_precision not in _POLICIES:
        raise ValueError(
            f"mixed_precision must be None, 'bfloat16' or 'float16', got {mixed_precision!r}"
        )
    return _POLICIES[mixed_precision]


def gpu_available() -> bool:
    """Whether the active Keras backend (TensorFlow, JAX or PyTorch) sees a GPU.

    Chapter 03 uses it to switch mixed precision on, and the benchmarks to
    choose their volume size.

    Examples
    --------
    >>> isinstance(gpu_available(), bool)
    True
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    import torch

    return bool(torch.cuda.is_available())


@contextlib.contextmanager
def precision_scope(mixed_precision: str | None) -> Iterator[str]:
    """Build models under a mixed-precision dtype policy, then restore the old one.

    Layers created inside compute in ``bfloat16``/``float16`` and keep their
    variables in ``float32``. The global Keras policy is restored on exit, so
    models built later are unaffected.

    Parameters
    ----------
    mixed_precision : {None, "bfloat16", "float16"}
        ``None`` builds in plain ``float32``.

    Yields
    ------
    str
        The Keras policy name in force, e.g. ``"mixed_bfloat16"``.

    Raises
    ------
    ValueError
        For an unknown precision.

    Examples
    --------
    >>> with precision_scope("bfloat16"):
    ...     layer = keras.layers.Dense(2)
    >>> layer.compute_dtype
    'bfloat16'
    """
    policy = _policy_name(mixed_precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def distribution_scope(devices: Sequence[str] | None = None) -> Iterator[Any]:
    """Data parallelism over several devices with the backend's own engine.

    Build *and* train the model inside the ``with`` block. Each batch is
    split across the devices, so use a batch size divisible by their number.

    * TensorFlow: ``tf.distribute.MirroredStrategy`` (one replica per device,
      gradients all-reduced). On several machines use
      ``tf.distribute.MultiWorkerMirroredStrategy()`` instead, with a
      ``TF_CONFIG`` environment variable on each worker naming the cluster
      (``{"cluster": {"worker": ["host1:12345", "host2:12345"]},
      "task": {"type": "worker", "index": 0}}``) and the same script on every
      worker.
    * JAX: ``keras.distribution.DataParallel`` made global with
      ``keras.distribution.set_distribution``. On several machines call
      ``keras.distribution.initialize(job_addresses, num_processes,
      process_id)`` first on every process.

    Parameters
    ----------
    devices : sequence of str, optional
        Device names (``"/gpu:0"``, ``"/cpu:1"`` on TensorFlow; ``"gpu:0"``,
        ``"cpu:1"`` on JAX). Default: every GPU, or every CPU device if there
        is no GPU.

    Yields
    ------
    tf.distribute.Strategy or keras.distribution.DataParallel
        The engine in force.

    Raises
    ------
    ValueError
        On a backend other than TensorFlow or JAX.

    Examples
    --------
    >>> with distribution_scope() as engine:  # doctest: +SKIP
    ...     model = models.unet((48, 48, 40, 1), filters=(8, 16, 32))
    ...     train(model, train_data, val_data, out_dir="runs/dp", epochs=2)
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if devices is None:
            found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            devices = [device.name for device in found]
        strategy = tf.distribute.MirroredStrategy(devices=list(devices))
        with strategy.scope():
            yield strategy
    elif backend == "jax":
        previous = keras.distribution.distribution()
        engine = keras.distribution.DataParallel(devices=None if devices is None else list(devices))
        keras.distribution.set_distribution(engine)
        try:
            yield engine
        finally:
            keras.distribution.set_distribution(previous)
    else:
        raise ValueError(f"distribution_scope supports the tensorflow and jax backends, not {backend!r}")


def load_history(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``out_dir/history.csv`` as one row per epoch (index ``epoch``).

    The file is rewritten (atomically) from the backup's committed rows at
    every epoch end and on resume, so it never misses a committed epoch. After
    a NaN stop it also holds the failed epoch's row, for diagnosis; should a
    row appear twice, the later one is kept.

    Parameters
    ----------
    out_dir : path
        The ``out_dir`` given to :func:`train`.

    Returns
    -------
    pandas.DataFrame
        Columns ``loss``, ``dice`` and, with validation data, ``val_loss``,
        ``val_dice``, plus ``learning_rate`` where Keras logs it.

    Raises
    ------
    FileNotFoundError
        If the folder holds no ``history.csv``.

    Examples
    --------
    >>> load_history("runs/3d")["val_dice"].max()  # doctest: +SKIP
    """
    path = Path(out_dir) / HISTORY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: no training has logged to {out_dir}")
    frame = pd.read_csv(path)
    frame = frame.drop_duplicates(subset="epoch", keep="last").sort_values("epoch")
    # Columns never filled (older CSVLogger logs add empty val_* ones) say nothing.
    return frame.set_index("epoch").dropna(axis="columns", how="all")


def load_best(out_dir: str | os.PathLike) -> keras.Model:
    """The model of the best epoch of a run (``out_dir/best.keras``), ready to predict.

    Parameters
    ----------
    out_dir : path
        The ``out_dir`` given to :func:`train`.

    Raises
    ------
    FileNotFoundError
        If the run has not finished an epoch yet.

    Examples
    --------
    >>> model = load_best("runs/ch03-0a1b2c3d4e5f6a7b")  # doctest: +SKIP
    """
    path = Path(out_dir) / BEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run in {out_dir} has not kept a best epoch yet")
    return keras.saving.load_model(path)


def _history_from_csv(out_dir: Path, model: keras.Model) -> keras.callbacks.History:
    frame = load_history(out_dir)
    history = keras.callbacks.History()
    history.set_model(model)
    history.epoch = [int(epoch) for epoch in frame.index]
    history.history = {column: frame[column].astype(float).tolist() for column in frame.columns}
    return history


class _StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras' TerminateOnNaN that also remembers where the loss went bad."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.failure: tuple[int, int, float] | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)) and self.failure is None:
            self.failure = (self.epoch, batch, float(loss))
        super().on_batch_end(batch, logs)


def non_finite_weights(model: keras.Model) -> list[str]:
    """Paths of the model's float variables holding NaN or inf (empty when all are finite).

    One fused reduction on the device screens every variable; names are
    looked up only when it fails.
    """
    variables = [v for v in model.weights if "float" in str(v.dtype)]
    if not variables or bool(ops.all(ops.stack([ops.all(ops.isfinite(v)) for v in variables]))):
        return []
    return [v.path for v in variables if not bool(ops.all(ops.isfinite(v)))]


def _read_state(backup: Path) -> dict[str, Any] | None:
    """The committed state of an interrupted run, or None when there is none."""
    path = backup / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        weights = backup / state["weights"]
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} is missing")
        return {**state, "weights": weights}
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise _damaged(path, error) from error


def _damaged(path: Path, error: BaseException) -> DamagedBackupError:
    return DamagedBackupError(
        f"{path}: the backup of the interrupted run cannot be read ({type(error).__name__}: {error}). "
        f"To start this run again from epoch 0, pass overwrite=True to train() "
        f"or delete {path.parent}."
    )


def _write_history(path: Path, rows: list[dict[str, float]]) -> None:
    with atomic_path(path, suffix=".csv") as temporary:
        pd.DataFrame(rows, columns=_columns(rows)).to_csv(temporary, index=False)


def _numbers(logs: dict[str, Any]) -> dict[str, float]:
    """The epoch's logged scalars as floats; a caller's non-numeric entry is not a history column."""
    row = {}
    for name, value in logs.items():
        try:
            row[name] = float(value)
        except (TypeError, ValueError):
            continue
    return row


def _columns(rows: list[dict[str, float]]) -> list[str]:
    names = ["epoch"]
    for row in rows:
        names += [name for name in row if name not in names]
    return names


def _remove_temporaries(out_dir: Path) -> None:
    """Delete the temporary files of a killed run (``atomic_path`` names them ``.<name>.*``)."""
    leftovers = [out_dir.glob(f".{name}.*") for name in (BEST_FILE, HISTORY_FILE, FINAL_WEIGHTS_FILE, DONE_FILE)]
    leftovers.append((out_dir / BACKUP_DIR).glob(".*"))
    for group in leftovers:
        for path in group:
            path.unlink(missing_ok=True)


class _CommitEpochs(keras.callbacks.Callback):
    """Best model, backup and history of a run, written so that a kill never tears them.

    At each epoch end, once the loss and every weight are known to be finite:
    ``best.keras`` (if the monitored value improved), then
    ``backup/epoch-<n>.weights.h5``, then ``history.csv`` and finally the
    commit, ``backup/state.json`` (epoch, weights file, history rows, best
    value); older weights files are deleted last. Each write is a rename.
    """

    def __init__(self, out_dir: Path, monitor: str, nan_guard: _StopOnNonFiniteLoss, reader: Any) -> None:
        super().__init__()
        self.out_dir, self.backup, self.monitor, self.nan_guard = out_dir, out_dir / BACKUP_DIR, monitor, nan_guard
        _remove_temporaries(out_dir)
        self.state = _read_state(self.backup)
        self.rows: list[dict[str, float]] = [] if self.state is None else self.state["history"]
        self.best: float | None = None if self.state is None else self.state["best"]
        self.start = 0 if self.state is None else self.state["epoch"] + 1
        self.failure: str | None = None
        self.reader = reader if hasattr(reader, "set_epoch") else None
        # Before fit too: Keras fetches the first batches (to build the model) before any callback runs.
        self.on_epoch_begin(self.start)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        # A cache reader's order depends on its epoch; Keras' epoch is the one that survives a resume.
        if self.reader is not None and self.reader.epoch != epoch:
            self.reader.set_epoch(epoch)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.state is not None:
            self._restore(self.state["weights"])
            _write_history(self.out_dir / HISTORY_FILE, self.rows)
        # Keras' own BackupAndRestore resumes the same way, through fit's starting epoch.
        self.model._initial_epoch = self.start

    def _restore(self, weights: Path) -> None:
        # train() built the optimizer, so its state in the file loads too.
        try:
            self.model.load_weights(str(weights))
        except Exception as error:  # noqa: BLE001 - h5py reports a torn file in many ways
            raise _damaged(weights, error) from error

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch, **_numbers(logs or {})}
        self.failure = self._problem(epoch)
        if self.failure is not None:
            # The failed epoch is logged for diagnosis but neither kept nor committed.
            self.model.stop_training = True
            _write_history(self.out_dir / HISTORY_FILE, self.rows + [row])
            return
        value = row.get(self.monitor)
        if value is not None and np.isfinite(value) and (self.best is None or value > self.best):
            self._save_best()
            self.best = value
        self._commit(epoch, row)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.model._initial_epoch = None

    def _problem(self, epoch: int) -> str | None:
        if self.nan_guard.failure is not None:
            epoch, batch, value = self.nan_guard.failure
            return f"training loss became {value} at epoch {epoch}, batch {batch}"
        bad = non_finite_weights(self.model)
        if bad:
            return f"{len(bad)} weight variable(s) became NaN or inf during epoch {epoch}: {bad[:5]}"
        return None

    def _save_best(self) -> None:
        with atomic_path(self.out_dir / BEST_FILE, suffix=".keras") as temporary:
            self.model.save(str(temporary), overwrite=True)

    def _commit(self, epoch: int, row: dict[str, float]) -> None:
        weights = self.backup / f"epoch-{epoch:05d}.weights.h5"
        self._save_weights(weights)
        rows = self.rows + [row]
        _write_history(self.out_dir / HISTORY_FILE, rows)
        self._write_state({"epoch": epoch, "weights": weights.name, "history": rows, "best": self.best})
        self.rows = rows
        for old in self.backup.glob("epoch-*.weights.h5"):
            if old != weights:
                old.unlink(missing_ok=True)

    def _save_weights(self, path: Path) -> None:
        # Keras picks the weights format from the file name, so the temporary keeps the suffix.
        with atomic_path(path, suffix=".weights.h5") as temporary:
            self.model.save_weights(str(temporary))

    def _write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.backup / STATE_FILE, state)


# What train() compiled each live model with, and its optimizer's fresh state.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reset_if_compiled(model: keras.Model, settings: tuple, learning_rate: float) -> bool:
    """If train() compiled ``model`` with ``settings``, reset its optimizer as a new compile would.

    Compiling again would drop the traced training step, and tracing it costs a
    small network as much as a short training (benchmarks/bench_grid_training.py);
    a grid trains one architecture once per seed, learning rate or loss.
    """
    compiled = _COMPILED.get(model)
    # Checked on TensorFlow only: under JAX a second fit shuffles unlike a new model's.
    if compiled is None or compiled[0] != settings or keras.backend.backend() != "tensorflow":
        return False
    for variable, fresh in zip(model.optimizer.variables, compiled[1], strict=True):
        variable.assign(fresh)  # step count, moments, loss scale: as a new optimizer starts
    model.optimizer.learning_rate = learning_rate
    return True


def _make_optimizer(
    name: str, learning_rate: float, momentum: float, accumulation: int, policy: str
) -> keras.optimizers.Optimizer:
    if not isinstance(accumulation, int) or accumulation < 1:
        raise ValueError(f"gradient_accumulation_steps must be an integer >= 1, got {accumulation!r}")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    steps = accumulation if accumulation > 1 else None
    if name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate, gradient_accumulation_steps=steps)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, gradient_accumulation_steps=steps)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")
    if policy == "mixed_float16":
        # float16 gradients underflow without a (dynamic) loss scale.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _check_precision(model: keras.Model, mixed_precision: str | None) -> str:
    policy = model.dtype_policy.name
    if mixed_precision is not None and policy != _policy_name(mixed_precision):
        raise ValueError(
            f"mixed_precision={mixed_precision!r} needs a model built under the "
            f"{_policy_name(mixed_precision)!r} policy, but this model uses {policy!r}; "
            f"build it inside `with precision_scope({mixed_precision!r}):`"
        )
    return policy


def _prepare_out_dir(out_dir: Path, epochs: int, overwrite: bool) -> bool:
    """Create ``out_dir``; return True if it already holds this finished run."""
    done_path = out_dir / DONE_FILE
    if overwrite and out_dir.exists():
        for name in (HISTORY_FILE, BEST_FILE, FINAL_WEIGHTS_FILE, DONE_FILE):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / BACKUP_DIR, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    if done_path.exists():
        shutil.rmtree(out_dir / BACKUP_DIR, ignore_errors=True)  # a kill just after done.json leaves it
        finished = json.loads(done_path.read_text())["epochs"]
        if finished != epochs:
            raise ValueError(
                f"{out_dir} holds a finished run of {finished} epochs, not {epochs}; "
                "choose another out_dir or pass overwrite=True"
            )
        return True
    if not (out_dir / BACKUP_DIR / STATE_FILE).exists():
        # No committed backup to resume from: a stale log would mix two runs.
        (out_dir / HISTORY_FILE).unlink(missing_ok=True)
        (out_dir / BEST_FILE).unlink(missing_ok=True)
        shutil.rmtree(out_dir / BACKUP_DIR, ignore_errors=True)
    return False


def _finish(model: keras.Model, out_dir: Path, epochs: int) -> None:
    bad = non_finite_weights(model)
    if bad:
        raise NonFiniteWeightsError(f"final weights not written: {bad[:5]} hold NaN or inf")
    # Keras picks the weights format from the file name, so the temporary keeps the suffix.
    with atomic_path(out_dir / FINAL_WEIGHTS_FILE, suffix=".weights.h5") as temporary:
        model.save_weights(str(temporary))
    write_json_atomic(out_dir / DONE_FILE, {"epochs": epochs})
    # The backup is deleted only once done.json commits the finished run.
    shutil.rmtree(out_dir / BACKUP_DIR, ignore_errors=True)


def _check_arrays(data: Any, name: str) -> None:
    """Refuse NaN/inf in ``(x, y)`` arrays before anything is written."""
    if not isinstance(data, tuple):
        return  # datasets check their own batches (tutorial_lib.datasets)
    for part, array in zip(("x", "y"), data):
        check_finite(array, f"{name} {part}", advice="Fix or drop those samples.")


def _failure_message(failure: str, out_dir: Path, kept: bool) -> str:
    return (
        f"{failure}; training stopped. Try a lower learning_rate, check the inputs for NaN, "
        "or use float32/bfloat16 instead of float16. The log is in "
        f"{out_dir / HISTORY_FILE}; nothing with a non-finite weight was saved"
        + (f", and {out_dir / BACKUP_DIR} still holds the last finite epoch." if kept else ".")
    )


def _kept_line(out_dir: Path, committer: _CommitEpochs, epochs: int) -> str:
    done = len(committer.rows)
    if not done:
        return f"interrupted: no epoch of {epochs} finished, nothing kept in {out_dir}"
    return (f"interrupted: epochs 0-{done - 1} of {epochs} kept in {out_dir / BACKUP_DIR}; "
            "call train() again with the same out_dir to continue")


def _fit_arguments(train_data: Any, val_data: Any, batch_size: int | None) -> dict[str, Any]:
    """Accept ``(x, y)`` arrays or a dataset (PyDataset, tf.data, generator)."""
    arguments: dict[str, Any] = {"validation_data": val_data}
    if isinstance(train_data, tuple):
        if len(train_data) != 2:
            raise ValueError(f"train_data as a tuple must be (x, y), got {len(train_data)} items")
        arguments.update(x=train_data[0], y=train_data[1], batch_size=batch_size or 1, shuffle=True)
    else:
        if batch_size is not None:
            raise ValueError("batch_size only applies to (x, y) arrays; datasets batch themselves")
        # fit's shuffle would reorder a PyDataset's batches with Python's global RNG, which a
        # resumed run does not reproduce; the readers shuffle by seed and epoch themselves.
        arguments.update(x=train_data, shuffle=False)
    return arguments


def train(
    model: keras.Model,
    train_data: Any,
    val_data: Any = None,
    *,
    out_dir: str | os.PathLike,
    epochs: int = 10,
    loss: str | Callable = "dice_probability",
    optimizer: str = "adam",
    learning_rate: float = 1e-4,
    momentum: float = 0.9,
    batch_size: int | None = None,
    mixed_precision: str | None = None,
    jit_compile: bool | str = "auto",
    gradient_accumulation_steps: int = 1,
    seed: int = 0,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
    overwrite: bool = False,
    monitor: str | None = None,
) -> keras.callbacks.History:
    """Compile and fit ``model``; checkpoint, log, resume, stop on NaN.

    A model that ``train`` compiled before, with the same optimizer, loss,
    precision and ``jit_compile``, is not compiled again: its optimizer is
    reset as a new compile would leave it (TensorFlow backend), and its traced
    training step is kept, which saves a small network about a second.

    Parameters
    ----------
    model : keras.Model
        A built model ending in probabilities, ``(batch, x, y, z, K)`` (or
        ``(batch, x, y, K)`` in 2D). For mixed precision build it inside
        :func:`precision_scope`; for several devices build it (and call
        ``train``) inside :func:`distribution_scope`.
    train_data, val_data : dataset or tuple of arrays
        A ``keras.utils.PyDataset`` (e.g. from :mod:`tutorial_lib.data`),
        a ``tf.data.Dataset``, or ``(x, y)`` NumPy arrays, channels-last.
        Without ``val_data`` the best model is chosen by training Dice.
    out_dir : path
        Run folder: ``best.keras``, ``history.csv``, ``backup/``,
        ``final.weights.h5`` and ``done.json``.
    epochs : int, optional
        Total number of epochs, counted across interruptions.
    loss : str or callable, optional
        A name for :func:`tutorial_lib.losses.get_loss` or a function ``loss(y_true, y_pred)``.
    optimizer : {"adam", "sgd"}, optional
        Adam, or SGD with Nesterov-free ``momentum``.
    learning_rate, momentum : float, optional
        Optimizer settings (``momentum`` only for SGD).
    batch_size : int, optional
        Only for ``(x, y)`` arrays (default 1, as in the paper).
    mixed_precision : {None, "bfloat16", "float16"}, optional
        Checks that the model was built under this policy; ``"float16"``
        adds dynamic loss scaling. Losses and metrics are computed in float32.
    jit_compile : bool or "auto", optional
        XLA compilation, passed to ``model.compile``.
    gradient_accumulation_steps : int, optional
        Apply the averaged gradients every this many batches, emulating a
        batch that many times larger.
    seed : int, optional
        Seeds Python, NumPy and the backend (``keras.utils.set_random_seed``).
    verbose : {"auto", 0, 1, 2}, optional
        Keras progress display: 1 a progress bar, 2 one line per epoch.
    callbacks : sequence of keras.callbacks.Callback, optional
        Extra callbacks, run *before* the built-in ones, so a value one of
        them writes into ``logs`` in ``on_epoch_end`` (``logs["val_volume_dice"]
        = ...``) is logged, backed up, returned and can be ``monitor``.
    overwrite : bool, optional
        Delete a previous run in ``out_dir`` first instead of resuming it.
    monitor : str, optional
        The logged value (higher is better) by which ``best.keras`` is kept;
        default ``"val_dice"`` with validation data, else ``"dice"``.

    Returns
    -------
    keras.callbacks.History
        Every epoch of the run, including those before an interruption
        (read back from ``history.csv``).

    Raises
    ------
    ValueError
        For an unknown optimizer, precision or loss, a model built under
        another precision, or an ``out_dir`` holding a finished run of a
        different length.
    NonFiniteDataError
        When ``(x, y)`` arrays or a cache reader's batch hold NaN or inf
        (a ``ValueError``); the message names the array or file.
    NonFiniteLossError
        When the training loss becomes NaN or infinite, or
        (:class:`NonFiniteWeightsError`) a weight does; the message says
        where and what to try.
    DamagedBackupError
        When the backup of an interrupted run cannot be read; the message
        names the file and how to restart.

    Examples
    --------
    >>> history = train(model, (x, y), (x_val, y_val), out_dir="runs/demo", epochs=2)  # doctest: +SKIP
    >>> history.history["val_dice"]  # doctest: +SKIP
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    policy = _check_precision(model, mixed_precision)
    _check_arrays(train_data, "train_data")
    _check_arrays(val_data, "val_data")
    out_path = Path(out_dir)
    keras.utils.set_random_seed(seed)
    optimizer_object = _make_optimizer(optimizer, learning_rate, momentum, gradient_accumulation_steps, policy)
    settings = (optimizer, momentum, gradient_accumulation_steps, policy, loss, jit_compile)
    if not _reset_if_compiled(model, settings, learning_rate):
        loss_function = losses_module.get_loss(loss) if isinstance(loss, str) else loss
        model.compile(
            optimizer=optimizer_object,
            loss=loss_function,
            metrics=[DiceMetric(name="dice")],
            jit_compile=jit_compile,
        )
        # Built here, eagerly, its slot variables cost milliseconds; left to the first
        # traced step they cost about 1.5 s per training (benchmarks/bench_short_training.py).
        # Built, it also lets a saved optimizer state load.
        model.optimizer.build(model.trainable_variables)
        _COMPILED[model] = (settings, [variable.numpy() for variable in model.optimizer.variables])
    if _prepare_out_dir(out_path, epochs, overwrite):
        model.load_weights(str(out_path / FINAL_WEIGHTS_FILE))
        print(f"{out_path} already holds a finished {epochs}-epoch run: loaded its final weights")
        return _history_from_csv(out_path, model)
    monitor = monitor or ("val_dice" if val_data is not None else "dice")
    nan_guard = _StopOnNonFiniteLoss()
    committer = _CommitEpochs(out_path, monitor, nan_guard, train_data)
    try:
        model.fit(
            **_fit_arguments(train_data, val_data, batch_size),
            epochs=epochs,
            # The caller's callbacks first: what they add to the epoch's logs is then committed.
            callbacks=list(callbacks) + [nan_guard, committer],
            verbose=verbose,
        )
    except KeyboardInterrupt:
        print(_kept_line(out_path, committer, epochs), file=sys.stderr)
        raise
    if committer.failure is not None:
        error = NonFiniteLossError if nan_guard.failure else NonFiniteWeightsError
        raise error(_failure_message(committer.failure, out_path, (out_path / BACKUP_DIR).exists()))
    _finish(model, out_path, epochs)
    return _history_from_csv(out_path, model)
