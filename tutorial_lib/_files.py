"""Writing a file so that no reader ever sees half of it.

Every file the library writes for later runs to read (cache manifests,
experiment records, predicted segmentations) goes through :func:`atomic_path`:
the content is written to a temporary file in the same folder, which is then
renamed over the target. A rename within one file system is atomic, so an
interrupted run leaves either the old file or the new one, never a torn one.
:func:`atomic_dir` does the same for a folder of files (a prepared or
generated case). :func:`directory_lock` makes processes that would write the
same thing (a cache, a run) take turns.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["UMASK", "atomic_path", "atomic_dir", "write_json_atomic", "directory_lock"]

# tempfile creates private (0600/0700) entries; finished files get the usual permissions.
UMASK = os.umask(0o022)
os.umask(UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    Parameters
    ----------
    path : path-like
        The file to write. Its folder is created if needed.
    suffix : str, optional
        Ending of the temporary name, for writers that choose a format from
        it (nibabel compresses ``.nii.gz``).

    Yields
    ------
    pathlib.Path
        An empty file to write to. If the block raises, it is deleted and
        ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_path(target) as temporary:
    ...     _ = temporary.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~UMASK)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary folder is named ``.tmp-<name>-*``, so a reader that skips
    hidden entries never sees it, and leftovers of a killed process can be
    found by that prefix. ``path`` must not exist when the block ends (a
    rename does not replace a folder that holds files).

    Yields
    ------
    pathlib.Path
        The folder to fill. If the block raises, it is deleted with its contents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        yield temporary
        os.chmod(temporary, 0o777 & ~UMASK)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def write_json_atomic(
    path: str | os.PathLike,
    payload: Any,
    *,
    indent: int = 1,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> None:
    """Write ``payload`` as JSON to ``path`` through :func:`atomic_path`.

    ``indent``, ``sort_keys`` and ``default`` are passed to :func:`json.dumps`;
    the text is built before the file is touched, so a value JSON cannot
    encode raises ``TypeError`` and leaves ``path`` unchanged.
    """
    text = json.dumps(payload, indent=indent, sort_keys=sort_keys, default=default)
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def directory_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock file while writing (a cache, a run), so concurrent callers queue up.

    Uses ``fcntl.flock``; on platforms without it (Windows) no lock is taken.
    The file is deleted when the lock is released, so none is left behind.

    Raises
    ------
    RuntimeError
        If called while a "spawn" worker process is starting: that happens when
        a script prepares data or trains at import time, and waiting would hang.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "a lock was requested (data preparation or a training run) while a worker process was "
            "starting up; in a script, "
            "call it under `if __name__ == '__main__':`"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    handle = _locked(path, fcntl)
    try:
        yield
    finally:
        # Unlinked while still held: a process that opened it meanwhile sees it is stale (_locked).
        path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _locked(path: Path, fcntl: Any) -> Any:
    """Open and lock ``path``, retrying until the locked file is still the one at ``path``."""
    while True:
        handle = open(path, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()
