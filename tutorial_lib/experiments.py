"""One run cache for every chapter: a configuration names its run folder.

A run is a plain dictionary of settings. :func:`run_dir` turns it into a
folder ``<run root>/<kind>-<hash>``, where ``kind`` is the configuration's
``"run"`` entry (``"unet3d"``, ``"ablations"``, ``"patch_unet"`` ...) and the
hash covers every setting, so changing one value starts a new run and two
chapters that describe the same network share one folder.

:func:`cached_run` is the one mechanism that decides what to do with a
configuration:

* ``<run dir>/record.json`` exists: the run is finished, its results are read;
* otherwise ``run_fn(config, run_dir)`` is called. It trains with
  :func:`tutorial_lib.training.train` into ``run_dir``, which resumes a
  half-finished training from its backup and loads a finished one, and the
  results it returns are written to ``record.json`` atomically.

Processes take turns on a run: while one trains it (holding ``<run dir>.lock``),
another that asks for the same configuration (two chapters open at once, say)
waits and then reads the finished record, so a run is never trained twice into
one folder.

:func:`run_grid` applies it to many configurations and tabulates the results,
here or on the worker processes of an executor (:mod:`tutorial_lib.workers`),
which share the run root and so these guarantees.
A record looks like ``{"config": {...}, "results": {"val_dice": 0.71, ...}}``;
the per-epoch history stays in the run folder's ``history.csv``
(:func:`tutorial_lib.training.load_history`).

The run root is ``$BRATS_COURSE_RUNS`` if set, else ``<data root>/runs``
(:func:`tutorial_lib.data.data_root`): always a folder the course may write
to, never the folder of a prepared cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm  # text, never a widget: the built book keeps no kernel to draw one

from tutorial_lib._files import DiskFullError, directory_lock, full_disk_error, write_json_atomic
from tutorial_lib.data import data_root

__all__ = ["RECORD_FILE", "config_hash", "data_id", "run_root", "run_dir", "load_record", "cached_run", "run_grid"]

RECORD_FILE = "record.json"
_KIND = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def _to_json_value(value: Any) -> Any:
    """Turn NumPy scalars/arrays, sets and paths into plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def _canonical_json(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=_to_json_value)


def config_hash(config: Mapping[str, Any], *, length: int = 16) -> str:
    """Stable hexadecimal hash of a configuration dictionary.

    The configuration is serialised as JSON with sorted keys, so key order
    does not matter, and tuples hash like lists (``(16, 32)`` == ``[16, 32]``).

    Parameters
    ----------
    config : mapping
        JSON-serialisable settings (NumPy scalars are accepted).
    length : int, optional
        Number of hexadecimal characters kept from the SHA-256 digest.

    Returns
    -------
    str
        ``length`` hexadecimal characters.

    Raises
    ------
    ValueError
        If ``config`` is not a mapping or holds a value JSON cannot represent.

    Examples
    --------
    >>> config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": (1, 2), "a": 1})
    True
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    if not 1 <= length <= 64:
        raise ValueError(f"length must be between 1 and 64, got {length}")
    try:
        text = _canonical_json(config)
    except TypeError as error:
        raise ValueError(f"config cannot be stored as JSON: {error}") from error
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def data_id(cache_dir: str | os.PathLike) -> str:
    """Name of a prepared cache for run configurations: folder name plus a hash of its manifest.

    Two caches with the same folder name but different cases or grids get
    different ids, so their runs never mix.

    Raises
    ------
    FileNotFoundError
        If ``cache_dir`` holds no ``manifest.json``.
    """
    manifest = Path(cache_dir) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: missing; is {cache_dir} a prepared cache?")
    return f"{Path(cache_dir).resolve().name}-{hashlib.sha256(manifest.read_bytes()).hexdigest()[:8]}"


def run_root() -> Path:
    """Folder of all runs: ``$BRATS_COURSE_RUNS`` if set, else ``<data root>/runs``."""
    return Path(os.environ.get("BRATS_COURSE_RUNS") or data_root() / "runs")


def run_dir(config: Mapping[str, Any], *, root: str | os.PathLike | None = None) -> Path:
    """The folder of the run ``config`` describes: ``<root>/<config["run"]>-<config_hash(config)>``.

    Parameters
    ----------
    config : mapping
        Settings of the run; its ``"run"`` entry names the kind of run in
        lower-case letters, digits and underscores.
    root : path, optional
        Run root; default :func:`run_root`.

    Raises
    ------
    ValueError
        If ``config`` has no valid ``"run"`` entry or cannot be hashed.

    Examples
    --------
    >>> run_dir({"run": "unet3d", "epochs": 2}, root="runs").name
    'unet3d-0f12959a0877e00b'
    """
    kind = config.get("run") if isinstance(config, Mapping) else None
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"a run configuration needs a 'run' name such as 'unet3d', got {kind!r}")
    return Path(root if root is not None else run_root()) / f"{kind}-{config_hash(config)}"


def load_record(config: Mapping[str, Any], *, root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The finished record (``config``, ``results``) of ``config``, or ``None`` if it has not finished.

    An unreadable record (a disk fault, an edit by hand) is reported with a
    warning and treated as missing, so the run is repeated.

    Examples
    --------
    >>> load_record({"run": "never_ran"}, root="/nonexistent") is None
    True
    """
    path = run_dir(config, root=root) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(f"ignoring unreadable record {path}: {error}; the run is repeated", stacklevel=2)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("results"), dict):
        warnings.warn(f"ignoring record {path}: it has no 'results' dictionary", stacklevel=2)
        return None
    return record


def _make_record(config: Mapping[str, Any], results: Any) -> dict[str, Any]:
    if not isinstance(results, Mapping):
        raise ValueError(f"run_fn must return a dict of results, got {type(results).__name__}")
    clash = sorted(set(results) & set(config))
    if clash:
        raise ValueError(f"result names {clash} repeat configuration keys; rename them")
    record = {"config": dict(config), "results": dict(results)}
    try:
        _canonical_json(record)
    except TypeError as error:
        raise ValueError(f"results of config {dict(config)} are not JSON-serialisable: {error}") from error
    return record


def cached_run(
    config: Mapping[str, Any],
    run_fn: Callable[[dict[str, Any], Path], Mapping[str, Any]],
    *,
    root: str | os.PathLike | None = None,
    force: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Run ``config`` once: read its record if it finished, else call ``run_fn`` and record the results.

    Parameters
    ----------
    config : mapping
        JSON-serialisable settings with a ``"run"`` name (see :func:`run_dir`).
    run_fn : callable
        ``run_fn(config, run_dir) -> dict`` of JSON-serialisable results. It
        trains into ``run_dir``, so an interrupted run resumes there.
    root : path, optional
        Run root; default :func:`run_root`.
    force : bool, optional
        Delete the run folder first and run from scratch.

    Returns
    -------
    record : dict
        ``{"config": ..., "results": ...}``.
    from_cache : bool
        Whether the record was read rather than computed now.

    Raises
    ------
    ValueError
        If ``run_fn`` returns something other than a dict of JSON values, or a
        result name repeats a configuration key; nothing is recorded then.
    DiskFullError
        If the disk holding the run folder fills up, saying how much a run of
        this kind takes; whatever the run saved stays, so it resumes there.

    Examples
    --------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> square = lambda config, folder: {"y": config["x"] ** 2}
    >>> cached_run({"run": "demo", "x": 3}, square, root=root)
    ({'config': {'run': 'demo', 'x': 3}, 'results': {'y': 9}}, False)
    >>> cached_run({"run": "demo", "x": 3}, square, root=root)[1]
    True
    """
    folder = run_dir(config, root=root)
    record = None if force else load_record(config, root=root)
    if record is not None:
        return record, True
    with directory_lock(folder.with_name(f"{folder.name}.lock")):
        if force:
            shutil.rmtree(folder, ignore_errors=True)
        record = load_record(config, root=root)  # another process may have finished it while we waited
        if record is not None:
            return record, True
        try:
            folder.mkdir(parents=True, exist_ok=True)
            record = _make_record(config, run_fn(dict(config), folder))
            write_json_atomic(folder / RECORD_FILE, record, sort_keys=True, default=_to_json_value)
        except OSError as error:
            full = _run_disk_full(error, folder)
            if full is None:
                raise
            raise full from error
    return record, False


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _run_disk_full(error: OSError, folder: Path) -> DiskFullError | None:
    """A full disk met while running into ``folder``, with what a finished run of its kind takes."""
    where = getattr(error, "folder", None) or (Path(error.filename).parent if error.filename else folder)
    if not Path(where).resolve().is_relative_to(folder.resolve()):
        return None  # the run filled another disk; its own error says which
    kind = folder.name.rsplit("-", 1)[0]
    finished = sorted(_folder_bytes(other) for other in folder.parent.glob(f"{kind}-*")
                      if other != folder and (other / RECORD_FILE).is_file())
    message = {"purpose": f"this {kind} run", "hint": "free space there or point BRATS_COURSE_RUNS at another disk"}
    full = full_disk_error(error, folder, **message)
    if full is None or not finished:
        return full
    # About what a finished run of this kind holds, less what this one saved (at least what the write asked for).
    needed = max(finished[len(finished) // 2] - _folder_bytes(folder), full.needed or 0)
    return full_disk_error(error, folder, needed=needed, **message) if needed > 0 else full


def _table_value(value: Any) -> Any:
    # Lists in a DataFrame cannot be grouped or used as an index; tuples can.
    return tuple(_table_value(item) for item in value) if isinstance(value, list) else value


def run_grid(
    configs: Iterable[Mapping[str, Any]],
    run_fn: Callable[[dict[str, Any], Path], Mapping[str, Any]],
    *,
    root: str | os.PathLike | None = None,
    force: bool = False,
    description: str = "grid",
    executor: Any = None,
) -> pd.DataFrame:
    """:func:`cached_run` for each configuration, with one table of the results.

    An interrupted grid keeps every finished run and resumes the one that was
    training; running the grid again only runs what has not finished.

    With an ``executor`` the configurations train side by side: each
    :func:`cached_run` is submitted to it, a Dask ``distributed.Client``
    (:func:`tutorial_lib.workers.grid_client`) or any
    ``concurrent.futures`` executor of processes. Its workers share the run
    root, so the run cache's promises hold across them: one training per
    configuration, a record written whole or not at all, and a worker killed
    mid-training leaves a run that the next one resumes (Dask gives the task
    to another worker by itself). The table is the serial run's, row for row.

    Parameters
    ----------
    configs : iterable of mapping
        Run configurations, each with a ``"run"`` name.
    run_fn, root, force
        As for :func:`cached_run`. With an executor ``run_fn`` must pickle
        (a module's function, or a ``functools.partial`` of one).
    description : str, optional
        Label of the progress bar.
    executor : distributed.Client or concurrent.futures.Executor, optional
        Where the runs train; ``None`` trains them here, one after another.

    Returns
    -------
    pandas.DataFrame
        One row per configuration, in the order given: its keys (lists shown
        as tuples), its results, ``config_hash`` and ``from_cache``.

    Examples
    --------
    >>> import tempfile
    >>> grid = run_grid([{"run": "demo", "x": 1}, {"run": "demo", "x": 2}],
    ...                 lambda config, folder: {"y": config["x"] ** 2}, root=tempfile.mkdtemp())
    >>> grid["y"].tolist()
    [1, 4]
    """
    configs = [dict(config) for config in configs]
    for config in configs:
        run_dir(config)  # a configuration without a run name fails here, before any training starts
    if executor is None:
        outcomes = [cached_run(config, run_fn, root=root, force=force)
                    for config in tqdm(configs, desc=description, unit="run")]
    else:
        # Workers elsewhere read the root as given here: an absolute path, not this process's default.
        outcomes = _run_on(executor, configs, run_fn, root=Path(root or run_root()).resolve(), force=force,
                           description=description)
    rows = []
    for config, (record, from_cache) in zip(configs, outcomes):
        row = {name: _table_value(value) for name, value in config.items()}
        rows.append({**row, **record["results"], "config_hash": config_hash(config), "from_cache": from_cache})
    return pd.DataFrame(rows)


def _run_on(executor: Any, configs: list[dict[str, Any]], run_fn: Callable, *, root: Path, force: bool,
            description: str) -> list[tuple[dict[str, Any], bool]]:
    """Submit each configuration's :func:`cached_run`; their outcomes in the order of ``configs``."""
    import concurrent.futures

    dask = hasattr(executor, "gather")  # a distributed.Client: tasks get names its dashboard shows
    futures = []
    for config in configs:
        extra = {"key": f"{run_dir(config, root=root).name}-{os.urandom(4).hex()}"} if dask else {}
        futures.append(executor.submit(cached_run, config, run_fn, root=root, force=force, **extra))
    if dask:
        from distributed import as_completed
    else:
        as_completed = concurrent.futures.as_completed
    link = getattr(executor, "dashboard_link", None)
    try:
        for future in tqdm(as_completed(futures), total=len(futures), desc=description, unit="run",
                           postfix=f"dashboard {link}" if link else None):
            future.result()  # the first failed run stops the grid, as it does serially
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return [future.result() for future in futures]
