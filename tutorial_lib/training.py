"""Training a segmentation network: one call that checkpoints, resumes, logs and fails loudly.

:func:`train` compiles a model with a loss from :mod:`tutorial_lib.losses`
and :class:`DiceMetric`, then fits it while

* keeping the best model by validation Dice in ``out_dir/best.keras``,
* backing up every epoch to ``out_dir/backup`` so that an interrupted run
  continues where it stopped when ``train`` is called again,
* logging one row per epoch to ``out_dir/history.csv``,
* refusing NaN/inf inputs (:class:`tutorial_lib.data.NonFiniteDataError`) and
  stopping with :class:`NonFiniteLossError` when the loss or a weight becomes
  NaN/inf; no file with a non-finite weight is ever written.

A finished run writes ``out_dir/final.weights.h5`` and ``out_dir/done.json``;
calling ``train`` again with the same ``out_dir`` loads those weights into
the model and returns the stored history instead of training again, so a
notebook can be re-executed cheaply. How the folder keeps these promises
through a kill at any moment (each epoch committed by one atomic rename,
damaged backups detected) is the business of :mod:`tutorial_lib._checkpoints`;
using ``train`` does not require reading it.

Mixed precision is set up around the model *before* it is built, because a
Keras layer fixes its dtype when it is created::

    with precision_scope("bfloat16"):
        model = models.unet(...)
        history = train(model, train_data, val_data, out_dir="runs/3d", mixed_precision="bfloat16")

Arrays are channels-last, ``(batch, x, y, z, channels)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import keras
import pandas as pd
from keras import ops

from tutorial_lib import _checkpoints
from tutorial_lib import losses as losses_module
from tutorial_lib._checkpoints import (
    BEST_FILE,
    DONE_FILE,  # noqa: F401 - scans.py finds a finished run by training.DONE_FILE
    FINAL_WEIGHTS_FILE,
    HISTORY_FILE,
    DamagedBackupError,
    NonFiniteLossError,
    NonFiniteWeightsError,
    non_finite_weights,
)
from tutorial_lib.data import NonFiniteDataError, check_finite

__all__ = [
    "DiceMetric",
    "EpochSummary",
    "CosineDecay",
    "train",
    "load_history",
    "outcome",
    "STALLED_DICE",
    "load_best",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "NonFiniteDataError",
    "DamagedBackupError",
    "non_finite_weights",
    "gpu_available",
    "precision_scope",
]

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
    >>> import numpy as np
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


class CosineDecay(keras.callbacks.Callback):
    """Lower the learning rate batch by batch along half a cosine, from its start to 0 at the last step.

    ``rate(step) = start * (1 + cos(pi * step / steps)) / 2``. Large steps early
    find a good region, small steps late settle in it, so the last epochs of
    runs with different seeds end closer together than at a constant rate. The
    step counts from the epoch Keras reports, so a resumed run continues the
    same curve. :func:`train` adds it with ``schedule="cosine"``.

    Parameters
    ----------
    start : float
        The first step's learning rate.

    Examples
    --------
    >>> decay = CosineDecay(0.01)
    >>> decay.set_params({"epochs": 2, "steps": 2})
    >>> [round(decay.rate(epoch, batch), 4) for epoch in range(2) for batch in range(2)]
    [0.01, 0.0085, 0.005, 0.0015]
    """

    def __init__(self, start: float) -> None:
        super().__init__()
        self.start, self.epoch = start, 0

    def rate(self, epoch: int, batch: int) -> float:
        steps = self.params["epochs"] * self.params["steps"]
        return self.start * (1 + math.cos(math.pi * (epoch * self.params["steps"] + batch) / steps)) / 2

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate = self.rate(self.epoch, batch)


def train(
    model: keras.Model,
    train_data: Any,
    val_data: Any = None,
    *,
    out_dir: str | os.PathLike,
    learning_rate: float,
    epochs: int = 10,
    loss: str | Callable = "dice_probability",
    optimizer: str = "adam",
    schedule: str = "constant",
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
        :func:`precision_scope`.
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
    learning_rate : float
        The optimizer's rate: no default, since every profile group sets its
        own (:data:`tutorial_lib.config.PROFILES`).
    momentum : float, optional
        SGD's momentum.
    schedule : {"constant", "cosine"}, optional
        Keep ``learning_rate`` throughout, or lower it to 0 over the run (:class:`CosineDecay`).
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
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
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
    if _checkpoints.prepare_out_dir(out_path, epochs, overwrite):
        model.load_weights(str(out_path / FINAL_WEIGHTS_FILE))
        print(f"{out_path} already holds a finished {epochs}-epoch run: loaded its final weights")
        return _history_from_csv(out_path, model)
    monitor = monitor or ("val_dice" if val_data is not None else "dice")
    nan_guard = _checkpoints.StopOnNonFiniteLoss()
    committer = _checkpoints.CommitEpochs(out_path, monitor, nan_guard, train_data)
    try:
        model.fit(
            **_fit_arguments(train_data, val_data, batch_size),
            epochs=epochs,
            initial_epoch=committer.start,  # after the last committed epoch, 0 for a new run
            # The caller's callbacks first: what they add to the epoch's logs is then committed.
            callbacks=list(callbacks) + [nan_guard, committer]
            + ([CosineDecay(learning_rate)] if schedule == "cosine" else []),
            verbose=verbose,
        )
    except KeyboardInterrupt:
        print(_checkpoints.kept_line(out_path, committer, epochs), file=sys.stderr)
        raise
    if committer.failure is not None:
        error = NonFiniteLossError if nan_guard.failure else NonFiniteWeightsError
        kept = (out_path / _checkpoints.BACKUP_DIR).exists()
        raise error(_checkpoints.failure_message(committer.failure, out_path, kept))
    _checkpoints.finish(model, out_path, epochs)
    return _history_from_csv(out_path, model)


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


# Below this validation Dice a network finds (almost) no tumour anywhere.
STALLED_DICE = 0.05


def outcome(history: pd.DataFrame, *, monitor: str = "val_dice") -> str:
    """Whether a run learned, never started, or learned and lost it again.

    ``"stalled"``: its best ``monitor`` stayed below :data:`STALLED_DICE` (the
    network never started to predict tumour). ``"collapsed"``: it got past that
    but ended below half its best (it learned, then fell back, typically to
    predicting nothing). ``"learned"`` otherwise. A stalled or collapsed run
    measures luck, not its configuration.

    Parameters
    ----------
    history : pandas.DataFrame
        One row per epoch, from :func:`load_history`.
    monitor : str, optional
        The validation Dice column (``"val_volume_dice"`` for the 2D recipe).

    Returns
    -------
    str

    Examples
    --------
    >>> outcome(pd.DataFrame({"val_dice": [0.1, 0.0, 0.0]}))
    'collapsed'
    >>> outcome(pd.DataFrame({"val_dice": [0.3, 0.5, 0.45]}))
    'learned'
    """
    values = history[monitor].to_numpy(dtype=float)
    best = values.max()
    if best < STALLED_DICE:
        return "stalled"
    return "collapsed" if values[-1] < best / 2 else "learned"


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


# ----------------------------------------------------- train's helpers: compile, check arguments, read back


_POLICIES = {None: "float32", "float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def _policy_name(mixed_precision: str | None) -> str:
    if mixed_precision not in _POLICIES:
        raise ValueError(
            f"mixed_precision must be None, 'bfloat16' or 'float16', got {mixed_precision!r}"
        )
    return _POLICIES[mixed_precision]


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


def _check_arrays(data: Any, name: str) -> None:
    """Refuse NaN/inf in ``(x, y)`` arrays before anything is written."""
    if not isinstance(data, tuple):
        return  # datasets check their own batches (tutorial_lib.datasets)
    for part, array in zip(("x", "y"), data):
        check_finite(array, f"{name} {part}", advice="Fix or drop those samples.")


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


def _history_from_csv(out_dir: Path, model: keras.Model) -> keras.callbacks.History:
    frame = load_history(out_dir)
    history = keras.callbacks.History()
    history.set_model(model)
    history.epoch = [int(epoch) for epoch in frame.index]
    history.history = {column: frame[column].astype(float).tolist() for column in frame.columns}
    return history
