"""Shared pytest fixtures: small real data for every test module.

Session fixtures (made once per test run, in temporary folders):

``raw_dataset``
    ``N_SYNTHETIC_CASES`` BraTS-2017-style synthetic cases written by
    :func:`tutorial_lib.synthetic.make_dataset` (240 x 240 x 155, four
    modalities and ``_seg``).
``cache_dir``
    Those cases prepared by :func:`tutorial_lib.ingest.prepare_dataset` at
    down-sampling 4: ``image.npy`` ``(48, 48, 40, 4)`` float16, ``label.npy``
    ``(48, 48, 40)`` uint8, with a split of 2 train / 1 val / 1 test cases.
``tiny_cache``
    Six tiny hand-made cases (48 x 48 x 32 voxels, one of them unlabelled)
    prepared at down-sampling 4: grid ``(48, 48, 40)``, 3 train / 1 val /
    1 test / 1 unlabelled. Seconds faster than ``cache_dir``.

``tiny_case_writer`` returns :func:`write_tiny_case`, which writes one small
case in any source layout (``"brats2017"``, ``"brats2023"``, ``"msd"``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import tutorial_lib  # noqa: E402,F401  (sets TensorFlow's switches before any test imports it)

if os.environ.get("KERAS_BACKEND") == "jax":
    # JAX 0.10's partitionable threefry makes every new weight shape cost
    # seconds of CPU to initialise; the classic generator only changes which
    # random numbers come out, and keeps the JAX test run within budget. Set
    # in the environment, so the processes a test starts (a grid's workers)
    # draw the same numbers as this one.
    os.environ["JAX_THREEFRY_PARTITIONABLE"] = "false"
    import jax

    jax.config.update("jax_threefry_partitionable", False)

# Tests that start their own TensorFlow interpreter whatever the backend; `make test`'s TensorFlow pass runs them.
OWN_PROCESS = pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax",
                                 reason="backend-independent subprocess test, run in the TensorFlow pass")

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """The module ``scripts/<name>.py`` (scripts/ is not a package), loaded once per test session."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


N_SYNTHETIC_CASES = 4
TINY_SHAPE = (48, 48, 32)

# BraTS label -> the value each release stores (written by hand, not taken from ingest).
RELEASE_LABELS = {
    "brats2017": {1: 1, 2: 2, 4: 4},
    "brats2023": {1: 1, 2: 2, 4: 3},
    "msd": {2: 1, 1: 2, 4: 3},  # MSD: 1 edema, 2 non-enhancing, 3 enhancing
}
FILE_KEYS = {
    "brats2017": {"flair": "_flair", "t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "seg": "_seg"},
    "brats2023": {"flair": "-t2f", "t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "seg": "-seg"},
}
MODALITIES = ("flair", "t1", "t1ce", "t2")


def tiny_volumes(seed: int, shape: tuple[int, int, int] = TINY_SHAPE):
    """Images (int16, by modality), BraTS labels (uint8) and affine of a small case.

    The brain is an ellipsoid; the tumour a ball with an edema shell (2), a core
    (1) and an enhancing centre (4) whose radius depends on ``seed``.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape, np.float32)[:, None, None, None] / 2
    brain = (((grid - centre) / (centre * 0.8)) ** 2).sum(0) <= 1
    radius = np.sqrt(((grid - (centre + rng.integers(-4, 5, (3, 1, 1, 1)))) ** 2).sum(0))
    size = 3 + seed % 4
    label = np.zeros(shape, np.uint8)
    label[(radius <= size + 3) & brain] = 2
    label[radius <= size + 1] = 1
    label[radius <= size - 1] = 4
    images = {}
    for index, modality in enumerate(MODALITIES):
        base = 200 + 100 * index + rng.normal(0, 10, shape)
        images[modality] = np.where(brain, base + 150 * (label > 0), 0).astype(np.int16)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [shape[0] - 1, shape[1] - 1, 0]
    return images, label, affine


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_tiny_case(
    root: Path, case_id: str, *, layout: str = "brats2017", seed: int = 0, labelled: bool = True,
    shape: tuple[int, int, int] = TINY_SHAPE,
) -> dict[str, Path]:
    """Write one small case in a source layout; returns {modality or "image"/"seg": path}.

    BraTS layouts write ``root/<case>/<case><key>.nii.gz``; ``"msd"`` writes a 4D
    ``root/imagesTr/<case>.nii.gz`` (``imagesTs`` when unlabelled) and ``labelsTr``.
    """
    images, label, affine = tiny_volumes(seed, shape)
    release = np.zeros_like(label)
    for brats_value, stored in RELEASE_LABELS[layout].items():
        release[label == brats_value] = stored
    if layout == "msd":
        folder = "imagesTr" if labelled else "imagesTs"
        stacked = np.stack([images[m] for m in MODALITIES], axis=-1)
        paths = {"image": _save(stacked, affine, root / folder / f"{case_id}.nii.gz")}
        if labelled:
            paths["seg"] = _save(release, affine, root / "labelsTr" / f"{case_id}.nii.gz")
        return paths
    keys = FILE_KEYS[layout]
    paths = {m: _save(images[m], affine, root / case_id / f"{case_id}{keys[m]}.nii.gz") for m in MODALITIES}
    if labelled:
        paths["seg"] = _save(release, affine, root / case_id / f"{case_id}{keys['seg']}.nii.gz")
    return paths


def copy_as_course_cache(cache_dir: Path, data_root: Path) -> Path:
    """A copy of the synthetic ``cache_dir`` that reads as the course's own, under ``data_root``.

    The manifest's sources are pointed at ``course_data.synthetic_raw_dir`` there, where
    ``ensure_course_data`` would have generated the cases (with the same seed 0 as
    ``raw_dataset``); set ``BRATS_COURSE_DATA`` to ``data_root`` before using it.
    """
    import json
    import shutil

    manifest = json.loads((cache_dir / "manifest.json").read_text(encoding="utf-8"))
    copy = Path(shutil.copytree(cache_dir, data_root / "cache" / f"synthetic-n{len(manifest['cases'])}-k4"))
    raw = data_root / "synthetic" / f"n{len(manifest['cases'])}"
    for entry in manifest["cases"].values():
        entry["source"] = str(raw)
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return copy


@pytest.fixture(scope="session")
def tiny_case_writer():
    """The :func:`write_tiny_case` helper, for tests that need their own source folders."""
    return write_tiny_case


@pytest.fixture(scope="session")
def raw_dataset(tmp_path_factory) -> Path:
    """Folder of ``N_SYNTHETIC_CASES`` synthetic BraTS-2017-style cases."""
    from tutorial_lib import synthetic

    out = tmp_path_factory.mktemp("synthetic")
    synthetic.make_dataset(out, N_SYNTHETIC_CASES, seed=0, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def cache_dir(raw_dataset, tmp_path_factory) -> Path:
    """``raw_dataset`` prepared at down-sampling 4 (grid 48 x 48 x 40)."""
    from tutorial_lib.ingest import prepare_dataset

    out = tmp_path_factory.mktemp("cache") / "synthetic-k4"
    report = prepare_dataset(raw_dataset, out, downsample=4, workers=1, progress=False)
    if not report.ok:
        raise RuntimeError(report.summary())
    return out


def recipe_config(group: str, cache: Path, profile: str = "ci", **changes):
    """``recipes.config`` of ``group`` sized by ``profile``, on ``cache``: what ``chapter.config`` gives a chapter."""
    from tutorial_lib import recipes
    from tutorial_lib.config import get_profile
    from tutorial_lib.experiments import data_id

    return recipes.config(group, get_profile(profile, group), profile=profile, data=data_id(cache), **changes)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """Six tiny cases (five labelled) prepared at down-sampling 4 (grid 48 x 48 x 40)."""
    from tutorial_lib.ingest import prepare_dataset

    root = tmp_path_factory.mktemp("tiny")
    for index in range(6):
        folder = "training" if index != 5 else "validation"  # releases ship labels per folder
        write_tiny_case(root / "src" / folder, f"Tiny_{index}", seed=index, labelled=index != 5)
    report = prepare_dataset(root / "src", root / "cache", downsample=4, progress=False)
    if not report.ok:
        raise RuntimeError(report.summary())
    return root / "cache"
