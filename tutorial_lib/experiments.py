"""Experiment grids whose results are cached on disk by configuration.

The loss comparison (chapter 04) and the ablations (chapter 05) train one
model per configuration. :func:`run_grid` stores every finished run as
``<cache_dir>/<config_hash>.json`` so that re-executing a notebook reads what
is already known instead of training again, and an interrupted grid resumes
at the first configuration without a result.

A cached record looks like::

    {"config": {...}, "results": {"test_dice": 0.71, ...},
     "history": {"loss": [...], "val_dice": [...]}}

where ``history`` is optional (a Keras ``History`` returned by ``run_fn``
under the key ``"history"`` is converted to plain lists).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tutorial_lib._files import write_json_atomic

__all__ = ["config_hash", "run_grid", "history_to_dict", "load_history", "load_record"]

HISTORY_KEY = "history"


def _to_json_value(value: Any) -> Any:
    """Turn NumPy scalars/arrays and tuples into plain JSON values."""
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


def history_to_dict(history: Any) -> dict[str, list[float]]:
    """Convert a training history to ``{metric: [value per epoch]}``.

    Parameters
    ----------
    history : keras.callbacks.History, pandas.DataFrame or mapping
        A Keras ``History`` (its ``.history`` attribute is used), a table with
        one row per epoch (an ``epoch`` column is dropped), or a mapping of
        metric name to per-epoch values.

    Returns
    -------
    dict of str to list of float
        Plain lists, ready for JSON.

    Raises
    ------
    ValueError
        If ``history`` is none of the accepted types.

    Examples
    --------
    >>> history_to_dict({"loss": [0.5, 0.25]})
    {'loss': [0.5, 0.25]}
    """
    if isinstance(history, pd.DataFrame):
        columns = [column for column in history.columns if column != "epoch"]
        mapping: Mapping[str, Any] = {column: history[column].tolist() for column in columns}
    elif isinstance(getattr(history, "history", None), Mapping):
        mapping = history.history
    elif isinstance(history, Mapping):
        mapping = history
    else:
        raise ValueError(
            f"expected a keras History, a DataFrame or a dict of lists, got {type(history).__name__}"
        )
    return {str(name): [float(value) for value in values] for name, values in mapping.items()}


def _read_record(path: Path) -> dict[str, Any] | None:
    """Return a cached record, or ``None`` (with a warning) if it is unreadable."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(f"ignoring unreadable cache file {path}: {error}; the run is repeated")
        return None
    if not isinstance(record, dict) or not isinstance(record.get("results"), dict):
        warnings.warn(f"ignoring cache file {path}: it has no 'results' dictionary")
        return None
    return record


def _make_record(config: Mapping[str, Any], results: Any) -> dict[str, Any]:
    if not isinstance(results, Mapping):
        raise ValueError(f"run_fn must return a dict of results, got {type(results).__name__}")
    results = dict(results)
    history = results.pop(HISTORY_KEY, None)
    clash = sorted(set(results) & set(config))
    if clash:
        raise ValueError(f"result names {clash} repeat configuration keys; rename them")
    record = {"config": dict(config), "results": results}
    if history is not None:
        record[HISTORY_KEY] = history_to_dict(history)
    try:
        _canonical_json(record)
    except TypeError as error:
        raise ValueError(f"results of config {dict(config)} are not JSON-serialisable: {error}") from error
    return record


def _table_value(value: Any) -> Any:
    # Lists in a DataFrame cannot be grouped or used as an index; tuples can.
    return tuple(_table_value(item) for item in value) if isinstance(value, list) else value


def load_record(config: Mapping[str, Any], *, cache_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Return the cached record of ``config`` (``config``, ``results``, ``history``) or ``None``.

    Parameters
    ----------
    config : mapping
        The configuration passed to :func:`run_grid`.
    cache_dir : path
        The grid's cache folder.

    Returns
    -------
    dict or None
        The stored record, or ``None`` when the configuration has not run yet.

    Examples
    --------
    >>> load_record({"never": "ran"}, cache_dir="/nonexistent") is None
    True
    """
    return _read_record(Path(cache_dir) / f"{config_hash(config)}.json")


def load_history(config: Mapping[str, Any], *, cache_dir: str | os.PathLike) -> pd.DataFrame:
    """Per-epoch history of a cached run, one row per epoch, for plotting curves.

    Parameters
    ----------
    config : mapping
        The configuration passed to :func:`run_grid`.
    cache_dir : path
        The grid's cache folder.

    Returns
    -------
    pandas.DataFrame
        Columns such as ``loss``, ``dice``, ``val_loss``, ``val_dice``; index ``epoch``.

    Raises
    ------
    ValueError
        If the configuration has no cached result, or its result stored no history.

    Examples
    --------
    >>> load_history(config, cache_dir="results/losses")["val_dice"].plot()  # doctest: +SKIP
    """
    path = Path(cache_dir) / f"{config_hash(config)}.json"
    record = _read_record(path)
    if record is None:
        raise ValueError(f"no cached result for config {dict(config)} (looked for {path})")
    if HISTORY_KEY not in record:
        raise ValueError(f"cache file {path} stores no history; return one from run_fn as 'history'")
    frame = pd.DataFrame(record[HISTORY_KEY])
    frame.index.name = "epoch"
    return frame


def run_grid(
    configs: Iterable[Mapping[str, Any]],
    run_fn: Callable[[dict[str, Any]], Mapping[str, Any]],
    *,
    cache_dir: str | os.PathLike,
    force: bool = False,
    description: str = "grid",
) -> pd.DataFrame:
    """Run ``run_fn`` once per configuration, caching each result on disk.

    For each configuration, ``<cache_dir>/<config_hash(config)>.json`` is read
    if it exists (unless ``force``); otherwise ``run_fn(config)`` is called and
    its result written atomically, so an interrupted grid keeps every finished
    run and continues with the next one.

    Parameters
    ----------
    configs : iterable of mapping
        JSON-serialisable settings, one per run.
    run_fn : callable
        ``run_fn(config) -> dict`` of JSON-serialisable numbers. It may add a
        Keras ``History`` (or dict of lists) under ``"history"``; it is stored
        for :func:`load_history` and left out of the table.
    cache_dir : path
        Folder of the cached results (created if missing).
    force : bool, optional
        Re-run every configuration and overwrite its cached result.
    description : str, optional
        Label of the progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per configuration: the configuration keys (lists shown as
        tuples), the results, ``config_hash`` and ``from_cache``.

    Raises
    ------
    ValueError
        If a configuration is not JSON-serialisable, ``run_fn`` returns
        something other than a dict of JSON values, or a result name repeats a
        configuration key.

    Examples
    --------
    >>> def run(config):
    ...     return {"score": config["x"] ** 2}
    >>> run_grid([{"x": 1}, {"x": 2}], run, cache_dir=tmp)["score"].tolist()  # doctest: +SKIP
    [1, 4]
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    configs = list(configs)
    rows = []
    for config in tqdm(configs, desc=description, unit="run"):
        key = config_hash(config)
        path = cache / f"{key}.json"
        record = None if force else _read_record(path)
        from_cache = record is not None
        if record is None:
            record = _make_record(config, run_fn(dict(config)))
            write_json_atomic(path, record, sort_keys=True, default=_to_json_value)
        row = {name: _table_value(value) for name, value in dict(config).items()}
        row.update(record["results"])
        rows.append({**row, "config_hash": key, "from_cache": from_cache})
    return pd.DataFrame(rows)
