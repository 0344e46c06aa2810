"""Opening a chapter: one call turns a profile into everything the chapter works with.

Every chapter starts the same way: resolve its settings from
:data:`tutorial_lib.config.PROFILES` (once), make sure the data exist, read
the split, seed the random generators and say which versions ran it.
:func:`open_chapter` does all of that, so a chapter's first cell after its
parameters is one line, and shared answers (the grid, the voxel size) come
from one place.

Examples
--------
>>> chapter = open_chapter("ci", "ablations", epochs=None, seed=0)  # doctest: +SKIP
python 3.11.7 | keras 3.13.0 (tensorflow backend) | numpy 2.3.5 | nibabel 5.3.2
ci profile: cache data/cache/synthetic-n32-k4, grid 48 × 48 × 40 (4× down-sampled), 22 train / 5 val / 5 test cases
>>> chapter.settings["epochs"], chapter.spacing_mm  # doctest: +SKIP
(2, (4.0, 4.0, 4.0))
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from tutorial_lib import _kernel, course_data, data, workers
from tutorial_lib.config import BRATS, get_profile

__all__ = ["Chapter", "open_chapter", "versions"]


@dataclass(frozen=True)
class Chapter:
    """What a chapter works with, resolved once by :func:`open_chapter`.

    Attributes
    ----------
    profile : str
        The run profile, e.g. ``"ci"``.
    settings : mapping
        Read-only: the profile's group settings, data settings included, with
        the chapter's parameters applied (``None`` keeps the profile's value).
    cache_dir : Path
        The prepared cache the chapter reads.
    split : mapping of str to list of str
        Case identifiers by split (``"train"``, ``"val"``, ``"test"``, ...).
    manifest : mapping
        The cache's manifest (grid, down-sampling, source, per-case facts).
    execution : mapping
        The profile's ``execution`` settings: threads per operation, local
        workers for the grids (``grid_workers``).
    """

    profile: str
    settings: Mapping[str, Any]
    cache_dir: Path
    split: Mapping[str, list[str]]
    manifest: Mapping[str, Any]
    execution: Mapping[str, Any]

    @functools.cached_property
    def grid_executor(self) -> Any:
        """Where the chapter's grids train, for ``run_grid(..., executor=chapter.grid_executor)``.

        ``None`` (this process, one run after another) unless the profile's
        ``execution.grid_workers`` asks for several local workers or
        ``$BRATS_COURSE_SCHEDULER`` names a Dask scheduler
        (:func:`tutorial_lib.workers.grid_client`); made on first use, so a
        chapter that trains no grid starts no workers.
        """
        return workers.grid_client(self.execution["grid_workers"], threads=self.execution["threads"])

    @property
    def grid(self) -> tuple[int, int, int]:
        """Shape ``(x, y, z)`` of every cached volume."""
        return tuple(int(size) for size in self.manifest["shape"])

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size on the cache grid: the original spacing times the down-sampling."""
        return tuple(float(size) * int(self.manifest["downsample"]) for size in BRATS.spacing_mm)

    @property
    def data_kind(self) -> str:
        """``"synthetic"`` for the course's generated cases, else ``"BraTS"``: how prose names the data.

        A cache counts as synthetic when :func:`tutorial_lib.course_data.is_course_synthetic`
        says so: every case prepared from the folder ensure_course_data generates into.
        """
        return "synthetic" if course_data.is_course_synthetic(self.manifest) else "BraTS"


def versions() -> str:
    """One line naming the Python, Keras (and its backend), NumPy and nibabel that run the chapter."""
    import keras
    import nibabel
    import numpy

    return (f"python {platform.python_version()} | keras {keras.__version__} ({keras.backend.backend()} backend)"
            f" | numpy {numpy.__version__} | nibabel {nibabel.__version__}")


def open_chapter(
    profile: str, group: str = "data", /, *, cache_dir: str | os.PathLike | None = None, seed: int = 0,
    **overrides: Any,
) -> Chapter:
    """Resolve a chapter's settings, ready its data, read the split, seed, and print the versions.

    It also fixes TensorFlow's threads per operation where the profile sets
    ``execution.threads`` (``ci``: 1), so that a chapter computes the same
    networks, and so the same verdicts, on any machine and however it is run.

    Parameters
    ----------
    profile : {"ci", "laptop", "gpu", "dry-run"}
        Run profile (:data:`tutorial_lib.config.PROFILES`).
    group : str, optional
        The chapter's settings group, e.g. ``"unet3d"``; ``"data"`` for a
        chapter that trains nothing.
    cache_dir : path, optional
        A prepared cache to use (for example real BraTS from
        ``data_scripts/prepare_brats.py``); ``None`` makes or reuses the
        course's synthetic data for ``profile``.
    seed : int, optional
        Seeds Python's, NumPy's and the backend's generators.
    **overrides
        The chapter's papermill parameters for keys of ``group``; ``None``
        keeps the profile's value.

    Returns
    -------
    Chapter

    Raises
    ------
    ValueError
        For an unknown profile, group or setting.
    FileNotFoundError
        If ``cache_dir`` holds no prepared cache.
    """
    settings = MappingProxyType(get_profile(profile, group, **overrides))
    execution = MappingProxyType(get_profile(profile, "execution"))
    _kernel.use_threads(execution["threads"])  # before the backend runs anything
    import keras

    # Absolute: a grid's workers may run in another folder, or on another machine that mounts the data.
    cache_dir = Path(course_data.ensure_course_data(profile) if cache_dir is None else cache_dir).resolve()
    chapter = Chapter(profile=profile, settings=settings, cache_dir=cache_dir, split=data.load_split(cache_dir),
                      manifest=MappingProxyType(data.load_manifest(cache_dir)), execution=execution)
    keras.utils.set_random_seed(seed)
    counts = " / ".join(f"{len(chapter.split.get(name, []))} {name}" for name in ("train", "val", "test"))
    print(versions())
    print(f"{profile} profile: cache {data.display_path(cache_dir)}, grid {' × '.join(map(str, chapter.grid))} "
          f"({chapter.manifest['downsample']}× down-sampled), {counts} cases")
    return chapter
