"""Tests for tutorial_lib.training on a tiny 3D model and tiny arrays (TensorFlow and JAX)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from tutorial_lib import _checkpoints, metrics, training
from tutorial_lib.datasets import VolumeDataset
from tutorial_lib.training import (
    DamagedBackupError,
    DiceMetric,
    NonFiniteDataError,
    NonFiniteLossError,
    NonFiniteWeightsError,
    load_history,
    precision_scope,
    train,
)

SHAPE = (8, 8, 4)


def tiny_model() -> keras.Model:
    """A two-layer 3D convolutional net: (batch, 8, 8, 4, 1) -> (batch, 8, 8, 4, 1)."""
    inputs = keras.Input(SHAPE + (1,))
    hidden = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv3D(1, 1, activation="sigmoid", dtype="float32")(hidden)
    return keras.Model(inputs, outputs)


def tiny_data(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright voxels are the target, so a conv net can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + SHAPE + (1,)).astype("float32")  # shape: (n, 8, 8, 4, 1)
    y = (x > 0.5).astype("float32")
    return x, y


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.epochs: list[int] = []
        self.fail_at = fail_at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.fail_at:
            raise RuntimeError(f"simulated crash at epoch {epoch}")
        self.epochs.append(epoch)


# Most tests skip XLA: on JAX the one-off compilation costs more than these tiny runs.
FAST = dict(verbose=0, jit_compile=False, batch_size=2)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """Three epochs with validation, default compilation; shared by the tests below."""
    folder = tmp_path_factory.mktemp("finished")
    keras.utils.set_random_seed(0)
    model = tiny_model()
    history = train(model, tiny_data(8), tiny_data(seed=1), out_dir=folder, epochs=3, batch_size=2,
                    learning_rate=1e-2, verbose=0)
    return folder, model, history


def test_train_writes_checkpoint_log_and_history(finished_run):
    folder, model, history = finished_run
    assert history.epoch == [0, 1, 2]
    assert set(history.history) >= {"loss", "dice", "val_loss", "val_dice"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    for name in ("best.keras", "history.csv", "final.weights.h5", "done.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "backup").exists()  # removed after a finished run
    assert load_history(folder).index.tolist() == [0, 1, 2]
    best = keras.saving.load_model(folder / "best.keras", compile=False)
    assert best.count_params() == model.count_params()


def test_finished_run_is_loaded_not_retrained(finished_run):
    folder, trained, first = finished_run
    fresh, recorder = tiny_model(), EpochRecorder()
    again = train(fresh, tiny_data(8), tiny_data(seed=1), out_dir=folder, learning_rate=1e-3,
                  epochs=3, callbacks=[recorder], **FAST)
    assert recorder.epochs == []
    assert again.history == first.history
    for a, b in zip(trained.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="finished run of 3 epochs"):
        train(tiny_model(), tiny_data(), out_dir=folder, learning_rate=1e-3, epochs=4, **FAST)


def test_same_seed_repeats_the_run(finished_run, tmp_path):
    keras.utils.set_random_seed(0)
    repeat = train(tiny_model(), tiny_data(8), tiny_data(seed=1), out_dir=tmp_path, epochs=3,
                   learning_rate=1e-2, seed=0, **FAST)
    np.testing.assert_allclose(repeat.history["loss"], finished_run[2].history["loss"], rtol=1e-4)


def test_training_a_model_again_keeps_its_traced_step_and_starts_like_a_new_model(tmp_path):
    # A grid's second seed: the kept model takes a new model's initial state; only compiling is saved.
    data, validation = tiny_data(8), tiny_data(seed=1)
    keras.utils.set_random_seed(0)
    kept = tiny_model()
    train(kept, data, validation, out_dir=tmp_path / "first", epochs=1, learning_rate=1e-2, seed=0, **FAST)
    traced_step = kept.train_function
    keras.utils.set_random_seed(1)
    new = tiny_model()
    for kept_variable, variable in zip(kept.variables, new.variables, strict=True):
        kept_variable.assign(variable)
    again = train(kept, data, validation, out_dir=tmp_path / "again", epochs=2, learning_rate=3e-3, seed=1, **FAST)
    # Only on TensorFlow: under JAX a second fit shuffles differently, so train() compiles again.
    assert (kept.train_function is traced_step) == (keras.backend.backend() == "tensorflow")
    assert int(kept.optimizer.iterations) == 2 * 4  # counted from zero again: 4 batches per epoch
    reference = train(new, data, validation, out_dir=tmp_path / "new", epochs=2, learning_rate=3e-3, seed=1, **FAST)
    assert again.history == reference.history
    for a, b in zip(kept.get_weights(), new.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    train(kept, data, out_dir=tmp_path / "other_loss", learning_rate=1e-3, epochs=1, loss="cosine", seed=1, **FAST)
    assert kept.train_function is not traced_step  # another loss: compiled and traced again


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    keras.utils.set_random_seed(0)
    data, validation = tiny_data(), tiny_data(seed=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_model(), data, validation, out_dir=tmp_path, learning_rate=1e-3,
              epochs=4, callbacks=[EpochRecorder(fail_at=2)],
              **FAST)
    assert (tmp_path / "backup").exists() and not (tmp_path / "done.json").exists()
    recorder = EpochRecorder()
    history = train(tiny_model(), data, validation, out_dir=tmp_path, learning_rate=1e-3,
                    epochs=4, callbacks=[recorder], **FAST)
    assert recorder.epochs == [2, 3]  # continued, not restarted
    assert history.epoch == [0, 1, 2, 3]
    assert json.loads((tmp_path / "done.json").read_text()) == {"epochs": 4}


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    def nan_loss(y_true, y_pred):
        return keras.ops.mean(y_pred) * float("nan")

    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 0, batch 0.*learning_rate"):
        train(tiny_model(), tiny_data(), out_dir=tmp_path, learning_rate=1e-3, epochs=3, loss=nan_loss, **FAST)
    assert load_history(tmp_path).index.tolist() == [0]  # stopped in the first epoch
    # The weights were updated with NaN gradients: nothing of them may be saved.
    assert not (tmp_path / "best.keras").exists() and not (tmp_path / "backup").exists()
    assert not (tmp_path / "final.weights.h5").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"optimizer": "rmsprop"}, "optimizer must be"),
        ({"mixed_precision": "int8"}, "mixed_precision must be"),
        ({"mixed_precision": "bfloat16"}, "precision_scope"),  # model built in float32
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"epochs": 0}, "epochs"),
        ({"loss": "no_such_loss"}, "valid names"),
    ],
)
def test_bad_options_raise_value_error(tmp_path, options, message):
    arguments = dict(out_dir=tmp_path, learning_rate=1e-3, epochs=1, **FAST) | options
    with pytest.raises(ValueError, match=message):
        train(tiny_model(), tiny_data(), **arguments)


def test_precision_scope_builds_mixed_models_and_restores_policy(tmp_path):
    before = keras.config.dtype_policy().name
    with precision_scope("bfloat16") as policy:
        model = tiny_model()
    assert policy == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    assert model.layers[1].compute_dtype == "bfloat16" and model.layers[1].variable_dtype == "float32"
    assert tiny_model().layers[1].compute_dtype == "float32"
    history = train(model, tiny_data(), out_dir=tmp_path, learning_rate=1e-3,
                    epochs=1, mixed_precision="bfloat16", **FAST)
    assert np.isfinite(history.history["loss"][0])


def test_float16_uses_loss_scaling_and_gradient_accumulation_runs(tmp_path):
    with precision_scope("float16"):
        model = tiny_model()
    train(model, tiny_data(), out_dir=tmp_path, learning_rate=1e-3, epochs=1, mixed_precision="float16",
          gradient_accumulation_steps=2, optimizer="sgd", **(FAST | {"batch_size": 1}))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    inner = model.optimizer.inner_optimizer
    assert inner.gradient_accumulation_steps == 2
    # 4 samples, batch 1, accumulate 2 -> 2 applied updates.
    assert int(keras.ops.convert_to_numpy(inner.iterations)) == 2


def test_dice_metric_matches_numpy_per_sample_mean():
    rng = np.random.default_rng(0)
    # shape: (batch=3, x=4, y=4, z=2, channels=1); the third sample is empty in both
    truth = (rng.random((3, 4, 4, 2, 1)) > 0.6).astype("float32")
    prediction = rng.random((3, 4, 4, 2, 1)).astype("float32")
    truth[2], prediction[2] = 0.0, 0.1
    expected = np.mean([metrics.dice_coefficient(p, t) for p, t in zip(prediction, truth)])
    metric = DiceMetric()
    metric.update_state(truth[:2], prediction[:2])  # two batches give the same mean as one
    metric.update_state(truth[2:], prediction[2:])
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    assert metric.name == "dice"
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_dice_metric_sample_weight():
    # shape: (batch=2, voxels=2, channels=1); Dice 1.0 and 0.0, weights 3 and 1
    truth = np.array([[[1.0], [0.0]], [[1.0], [0.0]]], "float32")
    prediction = np.array([[[0.9], [0.1]], [[0.1], [0.1]]], "float32")
    metric = DiceMetric()
    metric.update_state(truth, prediction, sample_weight=np.array([3.0, 1.0]))
    assert float(metric.result()) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- faults (issue 10)


def _assert_finite_file(path: Path) -> None:
    model = tiny_model()
    model.load_weights(str(path)) if path.suffix == ".h5" else model.set_weights(
        keras.saving.load_model(path, compile=False).get_weights())
    assert all(np.isfinite(weight).all() for weight in model.get_weights()), path


@pytest.mark.parametrize("which, part, index", [("train_data", 0, (1, 2, 3, 1, 0)), ("val_data", 0, (0, 0, 0, 0, 0)),
                                                ("train_data", 1, (3, 7, 7, 3, 0))])
def test_non_finite_arrays_are_refused_before_training(tmp_path, which, part, index):
    data = {"train_data": tiny_data(), "val_data": tiny_data(seed=1)}
    broken = list(data[which])
    broken[part] = broken[part].copy()
    broken[part][index] = np.nan  # one voxel, as in the issue: the loss would stay finite
    data[which] = tuple(broken)
    name = f"{which} {'xy'[part]}"
    with pytest.raises(NonFiniteDataError, match=rf"{name}: 1 non-finite.*index \[{', '.join(map(str, index))}\]"):
        train(tiny_model(), data["train_data"], data["val_data"], out_dir=tmp_path, learning_rate=1e-3,
              epochs=1, **FAST)
    assert not list(tmp_path.iterdir())  # refused before anything was written


class PoisonWeights(keras.callbacks.Callback):
    """Set the first kernel to NaN after the last batch of ``epoch``: the loss never sees it."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch, self.current = epoch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 1:  # 4 samples, batch 2: the last batch
            kernel = self.model.layers[1].kernel
            kernel.assign(keras.ops.full(kernel.shape, float("nan")))


def test_non_finite_weights_stop_training_and_are_never_saved(tmp_path):
    with pytest.raises(NonFiniteWeightsError, match=r"weight variable\(s\) became NaN or inf during epoch 1.*kernel"):
        train(tiny_model(), tiny_data(), tiny_data(seed=1), out_dir=tmp_path, learning_rate=1e-3, epochs=2,
              callbacks=[PoisonWeights(epoch=1)], **FAST)
    assert not (tmp_path / "final.weights.h5").exists() and not (tmp_path / "done.json").exists()
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert state["epoch"] == 0  # epoch 1 was not committed
    _assert_finite_file(tmp_path / "backup" / state["weights"])
    _assert_finite_file(tmp_path / "best.keras")


def test_damaged_backup_is_reported_with_a_hint(tmp_path):
    data = tiny_data()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_model(), data, out_dir=tmp_path, learning_rate=1e-3,
              epochs=3, callbacks=[EpochRecorder(fail_at=2)], **FAST)
    (weights,) = (tmp_path / "backup").glob("*.weights.h5")
    weights.write_bytes(weights.read_bytes()[:1000])  # a torn file, as a kill mid-write leaves
    with pytest.raises(DamagedBackupError, match=rf"{weights.name}.*cannot be read.*overwrite=True"):
        train(tiny_model(), data, out_dir=tmp_path, learning_rate=1e-3, epochs=3, **FAST)
    (tmp_path / "backup" / "state.json").write_text('{"epoch": 1, "weig')
    with pytest.raises(DamagedBackupError, match=r"state.json.*overwrite=True"):
        train(tiny_model(), data, out_dir=tmp_path, learning_rate=1e-3, epochs=3, **FAST)
    history = train(tiny_model(), data, out_dir=tmp_path, learning_rate=1e-3, epochs=3, overwrite=True, **FAST)
    assert history.epoch == [0, 1, 2]


class LogVolumeDice(keras.callbacks.Callback):
    """A caller's metric written into the epoch's logs, and the weights at each epoch end."""

    def __init__(self, values):
        super().__init__()
        self.values, self.weights = values, []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_volume_dice"] = self.values[epoch]
        self.weights.append(self.model.get_weights())


def test_caller_callbacks_run_first_and_can_be_monitored(tmp_path):
    recorder = LogVolumeDice([0.2, 0.9, 0.5])  # best at epoch 1
    history = train(tiny_model(), tiny_data(), tiny_data(seed=1), out_dir=tmp_path, epochs=3,
                    callbacks=[recorder], monitor="val_volume_dice", learning_rate=1e-2, **FAST)
    assert history.history["val_volume_dice"] == [0.2, 0.9, 0.5]
    assert load_history(tmp_path)["val_volume_dice"].tolist() == [0.2, 0.9, 0.5]
    best = keras.saving.load_model(tmp_path / "best.keras", compile=False).get_weights()
    for kept, at_epoch_1 in zip(best, recorder.weights[1]):
        np.testing.assert_array_equal(kept, at_epoch_1)
    assert not np.array_equal(best[0], recorder.weights[2][0])


def cache_model() -> keras.Model:
    """(batch, 48, 48, 40, 1) -> same: the tiny cache's grid, two small convolutions."""
    inputs = keras.Input((48, 48, 40, 1))
    hidden = keras.layers.Conv3D(2, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv3D(1, 1, activation="sigmoid")(hidden))


class RecordingReader(VolumeDataset):
    """Remembers which cases each (epoch, batch) held."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: dict[tuple[int, int], list[str]] = {}

    def __getitem__(self, index):
        self.seen[(self.epoch, index)] = self._batch_items(index)
        return super().__getitem__(index)


class Killed(Exception):
    """Stands for a kill: raised between two writes of an epoch's commit."""


def _run_on_cache(cache, out_dir, epochs=3):
    keras.utils.set_random_seed(0)
    reader = RecordingReader(cache, "train", shuffle=True, seed=5)
    history = train(cache_model(), reader, out_dir=out_dir, epochs=epochs, callbacks=[LogVolumeDice([1, 2, 3])],
                    monitor="val_volume_dice", learning_rate=1e-2, seed=0, verbose=0, jit_compile=False)
    return reader, history


# (method of the committing callback, kill before or after it) at epoch 1
KILL_POINTS = [("_save_best", "before"), ("_save_best", "after"), ("_save_weights", "after"),
               ("_write_state", "before"), ("_write_state", "after")]


@pytest.fixture(scope="module")
def uninterrupted(tiny_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    reader, history = _run_on_cache(tiny_cache, folder)
    return reader.seen, history.history, keras.saving.load_model(folder / "best.keras", compile=False).get_weights()


@pytest.mark.parametrize("method, when", KILL_POINTS)
def test_a_kill_at_any_point_resumes_like_an_uninterrupted_run(tiny_cache, tmp_path, monkeypatch, uninterrupted,
                                                               method, when):
    original = getattr(_checkpoints.CommitEpochs, method)

    def killed(self, *args):
        if len(self.rows) == 1 and when == "before":  # epoch 0 committed, epoch 1 under way
            raise Killed(method)
        original(self, *args)
        if len(self.rows) == 1 and when == "after":
            raise Killed(method)

    monkeypatch.setattr(_checkpoints.CommitEpochs, method, killed)
    with pytest.raises(Killed):
        _run_on_cache(tiny_cache, tmp_path)
    monkeypatch.setattr(_checkpoints.CommitEpochs, method, original)
    (tmp_path / "backup" / ".state.json.x1y2.tmp").write_text("{")  # as kill -9 during a write leaves
    resumed_seen = _run_on_cache(tiny_cache, tmp_path)[0].seen
    seen, reference, best = uninterrupted
    assert json.loads((tmp_path / "done.json").read_text()) == {"epochs": 3} and not (tmp_path / "backup").exists()
    assert load_history(tmp_path).index.tolist() == [0, 1, 2]
    frame = load_history(tmp_path)
    for name, values in reference.items():
        np.testing.assert_allclose(frame[name].tolist(), values, rtol=1e-5, err_msg=name)
    for key, ids in resumed_seen.items():
        assert seen[key] == ids, f"epoch {key[0]}, batch {key[1]}: {ids} instead of {seen[key]}"
    assert {epoch for epoch, _ in resumed_seen} >= {2}  # the resumed run trained the last epoch itself
    kept = keras.saving.load_model(tmp_path / "best.keras", compile=False).get_weights()
    for a, b in zip(kept, best):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_kill_before_done_json_finishes_without_training_again(tmp_path, monkeypatch):
    write = _checkpoints.write_json_atomic

    def killed(path, payload, **kwargs):
        if Path(path).name == "done.json":
            raise Killed("before done.json")
        write(path, payload, **kwargs)

    monkeypatch.setattr(_checkpoints, "write_json_atomic", killed)
    with pytest.raises(Killed):
        train(tiny_model(), tiny_data(), out_dir=tmp_path, learning_rate=1e-3, epochs=2, **FAST)
    monkeypatch.setattr(_checkpoints, "write_json_atomic", write)
    recorder = EpochRecorder()
    history = train(tiny_model(), tiny_data(), out_dir=tmp_path, learning_rate=1e-3,
                    epochs=2, callbacks=[recorder], **FAST)
    assert recorder.epochs == [] and history.epoch == [0, 1]
    assert json.loads((tmp_path / "done.json").read_text()) == {"epochs": 2}
    assert not (tmp_path / "backup").exists()


class CtrlC(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_ctrl_c_says_in_one_line_what_was_kept(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), tiny_data(), out_dir=tmp_path, learning_rate=1e-3, epochs=3, callbacks=[CtrlC()], **FAST)
    err = capsys.readouterr().err
    assert "interrupted: epochs 0-0 of 3 kept in" in err and "call train() again" in err
    assert train(tiny_model(), tiny_data(), out_dir=tmp_path, learning_rate=1e-3, epochs=3, **FAST).epoch == [0, 1, 2]


@pytest.mark.parametrize("every, epochs, printed", [(1, 3, [1, 2, 3]), (2, 5, [2, 4, 5]), (10, 4, [4]), (4, 8, [4, 8])])
def test_epoch_summary_prints_every_nth_epoch_and_the_last(capsys, every, epochs, printed):
    summary = training.EpochSummary(every)
    summary.set_params({"epochs": epochs})
    for epoch in range(epochs):
        summary.on_epoch_end(epoch, {"loss": -0.25, "val_dice": 0.5, "other": 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"epoch {n}/{epochs}: loss -0.250, val_dice 0.500" for n in printed]


def test_epoch_summary_rejects_a_zero_interval():
    with pytest.raises(ValueError, match="every must be at least 1"):
        training.EpochSummary(0)


class LearningRates(keras.callbacks.Callback):
    """Remembers the learning rate each batch ran with (after the schedule set it)."""

    def __init__(self):
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))


def test_cosine_decay_falls_to_zero_and_a_resumed_run_continues_its_curve(tmp_path):
    # shape: 8 samples in batches of 2 -> 4 steps per epoch, 3 epochs, 12 steps from 0.01 down towards 0
    data, validation = tiny_data(8), tiny_data(seed=1)
    whole = LearningRates()
    train(tiny_model(), data, validation, out_dir=tmp_path / "whole", epochs=3, learning_rate=0.01,
          schedule="cosine", seed=0, callbacks=[whole], **FAST)
    expected = [0.01 * (1 + np.cos(np.pi * step / 12)) / 2 for step in range(12)]
    np.testing.assert_allclose(whole.rates, expected, rtol=1e-5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_model(), data, validation, out_dir=tmp_path / "resumed", epochs=3, learning_rate=0.01,
              schedule="cosine", seed=0, callbacks=[EpochRecorder(fail_at=2)], **FAST)
    resumed = LearningRates()
    train(tiny_model(), data, validation, out_dir=tmp_path / "resumed", epochs=3, learning_rate=0.01,
          schedule="cosine", seed=0, callbacks=[resumed], **FAST)
    np.testing.assert_allclose(resumed.rates, expected[8:], rtol=1e-5)  # the last epoch's four steps
    with pytest.raises(ValueError, match="schedule"):
        train(tiny_model(), data, out_dir=tmp_path / "bad", learning_rate=1e-3, epochs=1, schedule="linear", **FAST)


OUTCOME_CASES = [
    # shape: validation Dice per epoch -> outcome
    ([0.0, 0.01, 0.04], "stalled"),  # never above STALLED_DICE (0.05)
    ([0.38, 0.0, 0.0], "collapsed"),  # learned, then fell back to nothing
    ([0.3, 0.6, 0.29], "collapsed"),  # ended below half its best
    ([0.3, 0.6, 0.31], "learned"),  # above half its best
    ([0.0, 0.2, 0.7], "learned"),  # a slow start is not a stall
]


@pytest.mark.parametrize("dice, expected", OUTCOME_CASES)
def test_outcome(dice, expected):
    assert training.outcome(pd.DataFrame({"val_volume_dice": dice}), monitor="val_volume_dice") == expected
