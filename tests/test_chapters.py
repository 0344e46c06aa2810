"""Tests for tutorial_lib.chapters: one call opens a chapter."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from tutorial_lib import data
from tutorial_lib.chapters import open_chapter, versions
from tutorial_lib.config import PROFILES


def test_open_chapter_resolves_settings_once_and_reads_the_cache(tiny_cache, capsys):
    chapter = open_chapter("ci", "ablations", cache_dir=tiny_cache, epochs=5, seeds=None)
    assert chapter.settings["epochs"] == 5  # a parameter replaces the profile's value
    assert chapter.settings["seeds"] == PROFILES["ci"]["ablations"]["seeds"]  # None keeps the profile's value
    assert chapter.settings["n_cases"] == PROFILES["ci"]["data"]["n_cases"]  # the data settings come along
    with pytest.raises(TypeError):
        chapter.settings["epochs"] = 1  # read-only: resolved once, for the whole chapter
    assert chapter.cache_dir == tiny_cache and dict(chapter.split) == data.load_split(tiny_cache)
    assert chapter.grid == (48, 48, 40)
    assert chapter.spacing_mm == (4.0, 4.0, 4.0)  # 1 mm voxels, down-sampled 4 times
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == versions() and "backend" in printed[0]
    assert printed[1].startswith("ci profile: cache ") and "3 train / 1 val / 1 test cases" in printed[1]


def test_a_chapter_writes_only_what_it_changes(tiny_cache, tmp_path, monkeypatch):
    from conftest import recipe_config

    from tutorial_lib import chapters, config, course_data, experiments

    monkeypatch.setenv("BRATS_COURSE_RUNS", str(tmp_path / "runs"))
    chapter = open_chapter("ci", "ablations", cache_dir=tiny_cache, seed=3, epochs=1, filters=[2, 4])
    assert chapter.settings_of("unet3d", profile="gpu")["epochs"] == PROFILES["gpu"]["unet3d"]["epochs"]
    expected = recipe_config("ablations", tiny_cache, epochs=1, filters=[2, 4], patch_shape=[8, 8, 8],
                             kernel_size=5, seed=3)
    resolved = []
    for module in (chapters, config, course_data):
        monkeypatch.setattr(module, "get_profile", lambda *args, **kwargs: resolved.append(args))
    tiny = chapter.config(patch_shape=[8, 8, 8], kernel_size=5)
    # The chapter's parameters and seed, and the profile's other sizes, without passing them back.
    assert tiny == expected
    assert chapter.config(group="losses")["run"] == "losses"  # another group's recipe, the chapter's data
    table = chapter.train({"kernel 5": tiny}, description="tiny")
    assert table.index.tolist() == ["kernel 5"] and (experiments.run_dir(tiny) / "record.json").is_file()
    scores = chapter.scores(tiny)
    assert scores.index.tolist() == chapter.split["test"] and scores.between(0, 1).all()
    assert chapter.scores([tiny, tiny]).shape == (2, len(chapter.split["test"]))
    table = chapter.evaluate(tiny, "val")
    assert table.index.tolist() == chapter.split["val"]
    assert table["dice_WT"].tolist() == pytest.approx(chapter.scores(tiny, "val").tolist())
    assert {"voxels_WT", "true_voxels_WT", "hd95_WT"} <= set(table.columns)
    assert resolved == []  # resolved once, when the chapter opened


def test_data_kind_names_the_course_generated_cases_synthetic(tiny_cache):
    chapter = open_chapter("ci", cache_dir=tiny_cache)
    assert chapter.data_kind == "BraTS"  # prepared from a download-like folder
    # The same cases as if ensure_course_data had generated them: course_data.synthetic_raw_dir's layout.
    cases = {case_id: {**entry, "source": "/elsewhere/data/synthetic/n6"}
             for case_id, entry in chapter.manifest["cases"].items()}
    assert dataclasses.replace(chapter, manifest={**chapter.manifest, "cases": cases}).data_kind == "synthetic"


def test_open_chapter_seeds_the_generators(tiny_cache):
    open_chapter("ci", cache_dir=tiny_cache, seed=7)
    drawn = np.random.rand(3)
    np.random.seed(7)
    np.testing.assert_array_equal(drawn, np.random.rand(3))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("nowhere", "data"), "unknown profile"),
        (("ci", "unet4d"), "unknown profile group"),
        (("ci", "unet3d"), "unknown 'unet3d' settings"),
    ],
)
def test_open_chapter_rejects_bad_arguments(tiny_cache, arguments, message):
    extra = {"epoch": 3} if message.startswith("unknown 'unet3d'") else {}
    with pytest.raises(ValueError, match=message):
        open_chapter(*arguments, cache_dir=tiny_cache, **extra)


def test_open_chapter_names_a_folder_without_a_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        open_chapter("ci", cache_dir=tmp_path)


# A chapter's first cells: Keras imported, the chapter opened, then a short training. The weights' digest
# is printed, so that processes given other thread counts can be compared bit for bit.
TRAINING = """
import hashlib, sys
import keras, numpy as np
from tutorial_lib import _kernel, losses, models
_kernel.use_threads(int(sys.argv[1]) if sys.argv[1] != "none" else None)
keras.utils.set_random_seed(0)
model = models.unet((24, 24, 24, 4), filters=(4, 8, 16))
rng = np.random.default_rng(0)
x = rng.normal(size=(2, 24, 24, 24, 4)).astype("float32")
y = (rng.random((2, 24, 24, 24, 1)) < 0.2).astype("float32")
model.compile(keras.optimizers.Adam(3e-3), loss=losses.get_loss("dice_probability"))
model.fit(x, y, epochs=8, batch_size=2, verbose=0)
print(hashlib.sha256(np.concatenate([w.numpy().ravel() for w in model.weights]).tobytes()).hexdigest())
"""


def _trained_digest(environment_threads: str, pinned: str) -> str:
    environment = {**os.environ, "TF_NUM_INTRAOP_THREADS": environment_threads, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", TRAINING, pinned], env=environment, capture_output=True,
                            text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every thread count computes alike")
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="it trains on TensorFlow, whose threads the pin sets, under any backend of the session")
def test_the_ci_profile_trains_the_same_network_whatever_the_thread_count():
    # The book build gives each kernel 1 thread, a learner's laptop gives TensorFlow one per core.
    assert PROFILES["ci"]["execution"]["threads"] == 1
    pinned = {threads: _trained_digest(threads, "1") for threads in ("1", "2", "3")}
    assert len(set(pinned.values())) == 1, pinned
    # Without the pin the sums of two threads come out in another order, and the network differs.
    assert _trained_digest("2", "none") != pinned["1"]
