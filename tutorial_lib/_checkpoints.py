"""How :func:`tutorial_lib.training.train` makes a run survive a kill, a torn file and a NaN.

What a run folder guarantees, whatever stops the process (kernel restart,
``kill -9``, a full disk, Ctrl-C):

* **Each epoch is committed atomically.** At an epoch end :class:`CommitEpochs`
  writes, each under a temporary name then renamed: ``best.keras`` (if the
  monitored value improved), the backup's weights with the optimizer state
  (``backup/epoch-<n>.weights.h5``), ``history.csv``, and last the commit
  itself, ``backup/state.json``: the epoch, the name of its weights file, every
  history row so far and the best value. Until that rename the previous
  epoch stands; after it, this one does. Older weights files go last.
* **An interrupted run resumes where it stopped.** Called again with the same
  folder, ``train`` restores the committed weights and optimizer state,
  rewrites ``history.csv`` from the committed rows, starts ``fit`` at the
  next epoch (its public ``initial_epoch``) and tells a cache reader that
  epoch (:meth:`tutorial_lib.datasets.VolumeDataset.set_epoch`), so the
  batches come in the order an uninterrupted run would have seen. A finished
  run is marked by ``done.json`` next to ``final.weights.h5``; calling
  ``train`` again then only loads them.
* **A damaged backup is reported, not trained on.** An unreadable
  ``state.json`` or weights file raises :class:`DamagedBackupError`, naming
  the file and how to start again (``overwrite=True``).
* **Nothing non-finite is kept.** :class:`StopOnNonFiniteLoss` stops at the
  first batch whose loss is NaN or inf; every epoch end also screens every
  weight (:func:`non_finite_weights`). A failed epoch is logged for diagnosis
  but neither kept as best nor committed, so the backup holds the last
  finite epoch.

Why not Keras' ``BackupAndRestore`` alone? It resumes the same way, by
moving ``fit``'s starting epoch, but by default it overwrites its weights
file in place and then its metadata, so a kill between the two resumes with
new weights and an old epoch, and a kill during the first write leaves a
torn file; it keeps no history (a resumed ``History`` starts at the resumed
epoch, and an appending ``CSVLogger`` can log an epoch twice when the kill
fell between its row and the backup); a ``ModelCheckpoint`` beside it may
keep as "best" an epoch that the resumed run trains again; and all three
save NaN weights as readily as finite ones. Here one rename commits
everything at once. Keras' ``TerminateOnNaN`` is used as it is, extended
only to remember where the loss went bad.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import ops

from tutorial_lib._files import atomic_path, write_json_atomic

__all__ = [
    "HISTORY_FILE",
    "BEST_FILE",
    "FINAL_WEIGHTS_FILE",
    "DONE_FILE",
    "BACKUP_DIR",
    "STATE_FILE",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "DamagedBackupError",
    "non_finite_weights",
    "StopOnNonFiniteLoss",
    "CommitEpochs",
    "prepare_out_dir",
    "finish",
    "failure_message",
    "kept_line",
]

HISTORY_FILE = "history.csv"
BEST_FILE = "best.keras"
FINAL_WEIGHTS_FILE = "final.weights.h5"
DONE_FILE = "done.json"
BACKUP_DIR = "backup"
STATE_FILE = "state.json"


class NonFiniteLossError(FloatingPointError):
    """Raised by :func:`~tutorial_lib.training.train` when the training loss becomes NaN or infinite."""


class NonFiniteWeightsError(NonFiniteLossError):
    """Raised by :func:`~tutorial_lib.training.train` when a weight becomes NaN or infinite (the loss may be finite)."""


class DamagedBackupError(OSError):
    """The backup of an interrupted run cannot be read; the message names the file and how to restart."""


def non_finite_weights(model: keras.Model) -> list[str]:
    """Paths of the model's float variables holding NaN or inf (empty when all are finite).

    One fused reduction on the device screens every variable; names are
    looked up only when it fails.
    """
    variables = [v for v in model.weights if "float" in str(v.dtype)]
    if not variables or bool(ops.all(ops.stack([ops.all(ops.isfinite(v)) for v in variables]))):
        return []
    return [v.path for v in variables if not bool(ops.all(ops.isfinite(v)))]


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
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


class CommitEpochs(keras.callbacks.Callback):
    """Best model, backup and history of a run, written so that a kill never tears them.

    At each epoch end, once the loss and every weight are known to be finite:
    ``best.keras`` (if the monitored value improved), then
    ``backup/epoch-<n>.weights.h5``, then ``history.csv`` and finally the
    commit, ``backup/state.json`` (epoch, weights file, history rows, best
    value); older weights files are deleted last. Each write is a rename.
    ``start`` is the epoch to pass to ``fit`` as ``initial_epoch``.
    """

    def __init__(self, out_dir: Path, monitor: str, nan_guard: StopOnNonFiniteLoss, reader: Any) -> None:
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


def prepare_out_dir(out_dir: Path, epochs: int, overwrite: bool) -> bool:
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


def finish(model: keras.Model, out_dir: Path, epochs: int) -> None:
    """Write the final weights, then commit the finished run with ``done.json``; the backup goes last."""
    bad = non_finite_weights(model)
    if bad:
        raise NonFiniteWeightsError(f"final weights not written: {bad[:5]} hold NaN or inf")
    # Keras picks the weights format from the file name, so the temporary keeps the suffix.
    with atomic_path(out_dir / FINAL_WEIGHTS_FILE, suffix=".weights.h5") as temporary:
        model.save_weights(str(temporary))
    write_json_atomic(out_dir / DONE_FILE, {"epochs": epochs})
    # The backup is deleted only once done.json commits the finished run.
    shutil.rmtree(out_dir / BACKUP_DIR, ignore_errors=True)


def failure_message(failure: str, out_dir: Path, kept: bool) -> str:
    """What stopped a run on a non-finite value, what to try, and what was kept."""
    return (
        f"{failure}; training stopped. Try a lower learning_rate, check the inputs for NaN, "
        "or use float32/bfloat16 instead of float16. The log is in "
        f"{out_dir / HISTORY_FILE}; nothing with a non-finite weight was saved"
        + (f", and {out_dir / BACKUP_DIR} still holds the last finite epoch." if kept else ".")
    )


def kept_line(out_dir: Path, committer: CommitEpochs, epochs: int) -> str:
    """One line for an interrupted run: which epochs are kept, and how to continue."""
    done = len(committer.rows)
    if not done:
        return f"interrupted: no epoch of {epochs} finished, nothing kept in {out_dir}"
    return (f"interrupted: epochs 0-{done - 1} of {epochs} kept in {out_dir / BACKUP_DIR}; "
            "call train() again with the same out_dir to continue")


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
