"""Opening a chapter: one call turns a profile into everything the chapter works with.

Every chapter starts the same way: resolve its settings from
:data:`tutorial_lib.config.PROFILES` (once), make sure the data exist, read
the split, seed the random generators and say which versions ran it.
:func:`open_chapter` does all of that, so a chapter's first cell after its
parameters is one line. The :class:`Chapter` it returns then does the wiring
(the chapter's recipe, its run cache, scoring), so that a chapter writes only
what it changes.

Examples
--------
>>> chapter = open_chapter("ci", "ablations", epochs=None, seed=0)  # doctest: +SKIP
python 3.11.7 | keras 3.15.1 (tensorflow backend) | numpy 2.4.6 | nibabel 5.4.2
ci profile: cache <data>/cache/synthetic-n47-k4, grid 48 × 48 × 40 (4× down-sampled), 22 train / 5 val / 20 test cases
>>> wide = chapter.config(filters=chapter.settings["wide_filters"])  # doctest: +SKIP
>>> chapter.train({"baseline": chapter.config(), "wide": wide})  # doctest: +SKIP
>>> chapter.scores(wide).mean()  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import pandas as pd

from tutorial_lib import _kernel, course_data, data, experiments, inference, workers
from tutorial_lib.config import BRATS, PROFILES, get_profile

__all__ = ["Chapter", "open_chapter", "versions"]


@dataclass(frozen=True)
class Chapter:
    """What a chapter works with, resolved once by :func:`open_chapter`.

    A chapter writes only what it changes: ``chapter.config(loss="cosine")``
    is the chapter's recipe with its sizes and parameters,
    ``chapter.train(configs)`` trains (or reads back) a grid of them, and
    ``chapter.scores(config)`` scores a trained network on the test cases.

    Attributes
    ----------
    profile : str
        The run profile, e.g. ``"ci"``.
    group : str
        The chapter's settings group, e.g. ``"ablations"``.
    settings : mapping
        Read-only: the group's settings, data settings included, with the
        chapter's parameters applied (``None`` keeps the profile's value).
    groups : mapping
        Every group of the profile, resolved when the chapter opened.
    cache_dir : Path
        The prepared cache the chapter reads.
    split : mapping of str to list of str
        Case identifiers by split (``"train"``, ``"val"``, ``"test"``, ...).
    manifest : mapping
        The cache's manifest (grid, down-sampling, source, per-case facts).
    seed : int
        The chapter's seed: every configuration's unless it names another.
    """

    profile: str
    group: str
    settings: Mapping[str, Any]
    groups: Mapping[str, Mapping[str, Any]]
    cache_dir: Path
    split: Mapping[str, list[str]]
    manifest: Mapping[str, Any]
    seed: int = 0

    def settings_of(self, group: str, *, profile: str | None = None) -> Mapping[str, Any]:
        """Another group's settings: of this profile, or of ``profile`` (chapter 03 projects the ``gpu`` one)."""
        if profile is not None and profile != self.profile:
            return MappingProxyType(get_profile(profile, group))
        return self.settings if group == self.group else self.groups[group]

    def config(self, *, group: str | None = None, **changes: Any) -> dict[str, Any]:
        """The run configuration of the chapter's recipe (or ``group``'s), with ``changes``.

        Sized by the group's settings, the chapter's parameters included, on the
        chapter's data and seed (:func:`tutorial_lib.recipes.config`).
        """
        from tutorial_lib import recipes  # Keras: after open_chapter has set the threads

        group = group or self.group
        changes.setdefault("seed", self.seed)
        return recipes.config(group, self.settings_of(group), profile=self.profile,
                              data=experiments.data_id(self.cache_dir), **changes)

    def train(self, configs: Sequence[dict] | Mapping[str, dict], *, description: str = "runs") -> pd.DataFrame:
        """Train the runs of ``configs`` that are not finished, and tabulate them all (one row each).

        :func:`tutorial_lib.experiments.run_grid` with each configuration's
        recipe (:func:`tutorial_lib.recipes.train`) on :attr:`grid_executor`;
        a mapping's keys name the rows.
        """
        from tutorial_lib import recipes  # Keras: after open_chapter has set the threads

        # A function and a folder, not the chapter: a grid's workers are sent what trains a run.
        table = experiments.run_grid(list(dict(configs).values() if isinstance(configs, Mapping) else configs),
                                     functools.partial(recipes.train, cache_dir=self.cache_dir),
                                     description=description, executor=self.grid_executor)
        return table.set_axis(list(configs)) if isinstance(configs, Mapping) else table

    def scores(self, configs: dict | Sequence[dict], cases: str | Sequence[str] = "test", *,
               cache_dir: str | os.PathLike | None = None, **predict_options: Any) -> pd.Series | pd.DataFrame:
        """Whole-tumour Dice per case of trained networks (:func:`tutorial_lib.inference.score_run`, cached).

        One configuration gives a Series over the cases; a list of them a
        DataFrame with one row per configuration. ``cases`` is a split's name
        or case identifiers; ``cache_dir`` scores another cache's cases.
        """
        table = pd.DataFrame([inference.score_run(config, cache_dir or self.cache_dir, self._cases(cases),
                                                  **predict_options)
                              for config in ([configs] if isinstance(configs, Mapping) else configs)])
        return table.iloc[0].rename("dice") if isinstance(configs, Mapping) else table

    def evaluate(self, config: dict[str, Any], cases: str | Sequence[str] = "test", **options: Any) -> pd.DataFrame:
        """Every region's Dice, HD95, sensitivity and voxel counts per case (:func:`~.inference.evaluate_run`)."""
        return inference.evaluate_run(config, self.cache_dir, self._cases(cases), spacing=self.spacing_mm, **options)

    def _cases(self, cases: str | Sequence[str]) -> list[str]:
        return list(self.split[cases] if isinstance(cases, str) else cases)

    @functools.cached_property
    def grid_executor(self) -> Any:
        """Where the chapter's grids train: ``None`` (this process) unless workers are asked for.

        The profile's ``execution.grid_workers`` local workers, or the Dask
        scheduler ``$BRATS_COURSE_SCHEDULER`` names
        (:func:`tutorial_lib.workers.grid_client`); made on first use, so a
        chapter that trains no grid starts no workers.
        """
        execution = self.groups["execution"]
        return workers.grid_client(execution["grid_workers"], threads=execution["threads"])

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
        """``"synthetic"`` for the course's generated cases, else ``"BraTS"``: how prose names the data."""
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
    groups = MappingProxyType({name: MappingProxyType(get_profile(profile, name)) for name in PROFILES[profile]})
    _kernel.use_threads(groups["execution"]["threads"])  # before the backend runs anything
    import keras

    # Absolute: a grid's workers may run in another folder, or on another machine that mounts the data.
    cache_dir = Path(course_data.ensure_course_data(groups["data"]) if cache_dir is None else cache_dir).resolve()
    chapter = Chapter(profile=profile, group=group, settings=settings, groups=groups, cache_dir=cache_dir,
                      split=data.load_split(cache_dir), manifest=MappingProxyType(data.load_manifest(cache_dir)),
                      seed=seed)
    keras.utils.set_random_seed(seed)
    counts = " / ".join(f"{len(chapter.split.get(name, []))} {name}" for name in ("train", "val", "test"))
    print(versions())
    print(f"{profile} profile: cache {data.display_path(cache_dir)}, grid {' × '.join(map(str, chapter.grid))} "
          f"({chapter.manifest['downsample']}× down-sampled), {counts} cases")
    return chapter
