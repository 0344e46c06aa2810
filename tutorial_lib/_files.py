"""Writing a file so that no reader ever sees half of it.

Every file the library writes for later runs to read (cache manifests,
experiment records, predicted segmentations) goes through :func:`atomic_path`:
the content is written to a temporary file in the same folder, which is then
renamed over the target. A rename within one file system is atomic, so an
interrupted run leaves either the old file or the new one, never a torn one.
:func:`atomic_dir` does the same for a folder of files (a prepared or
generated case). :func:`directory_lock` makes processes that would write the
same thing (a cache, a run) take turns.

A write that fails because the disk is full raises :class:`DiskFullError`
(an ``OSError`` with ``errno.ENOSPC``) naming the folder and its free space,
instead of NumPy's bare "737280 requested and 388992 written";
:func:`full_disk_error` lets a caller say how much its remaining work needs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["UMASK", "DiskFullError", "full_disk_error", "atomic_path", "atomic_dir", "write_json_atomic",
           "directory_lock"]

# tempfile creates private (0600/0700) entries; finished files get the usual permissions.
UMASK = os.umask(0o022)
os.umask(UMASK)

# NumPy's ndarray.tofile reports a short write without an errno.
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; ``errno`` is ``ENOSPC``.

    Made by :func:`full_disk_error`. Attributes ``folder`` (the folder written
    to), ``free`` (its free bytes, None if unknown) and ``needed`` (estimated
    bytes needed, None if unknown).
    """

    folder: Path
    free: int | None = None
    needed: int | None = None

    def __str__(self) -> str:
        return str(self.strerror)


def _size(n: int) -> str:
    """``n`` bytes in decimal units: ``_size(737280) == '737 kB'``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _free_bytes(folder: Path) -> int | None:
    for candidate in (folder, *folder.parents):  # the folder itself may not exist yet
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def full_disk_error(
    error: BaseException, folder: str | os.PathLike, *, needed: int | None = None, purpose: str = "",
    hint: str = "free space there or write to another disk",
) -> DiskFullError | None:
    """A :class:`DiskFullError` for ``error`` if it says the disk is full, else None.

    A full disk is an ``OSError`` with ``errno`` ``ENOSPC`` or ``EDQUOT``, or
    NumPy's short write ("N requested and M written", no errno).

    Parameters
    ----------
    error : BaseException
        What the write raised (a :class:`DiskFullError` is re-worded).
    folder : path-like
        The folder that was written to; its free space is measured now.
    needed : int, optional
        Estimated bytes the work still needs ("about"); without it, the
        message gives a lower bound if ``error`` holds one ("at least": a
        :class:`DiskFullError`'s estimate, or the bytes a short write asked for).
    purpose : str, optional
        What those bytes are for ("the 3 remaining cases").
    hint : str, optional
        What to do about it.

    Examples
    --------
    >>> full = full_disk_error(OSError("737280 requested and 388992 written"), "/", purpose="image.npy")
    >>> full.errno == errno.ENOSPC, str(full).startswith("the disk holding / is full: ")
    (True, True)
    >>> str(full).split(" free, ")[1]
    'at least 737 kB needed for image.npy; free space there or write to another disk'
    >>> full_disk_error(OSError(errno.EACCES, "Permission denied"), "/") is None
    True
    """
    if not isinstance(error, OSError):
        return None
    short = _SHORT_WRITE.search(str(error)) if error.errno is None else None
    if not (isinstance(error, DiskFullError) or short or error.errno in (errno.ENOSPC, errno.EDQUOT)):
        return None
    about = "about" if needed is not None else "at least"
    if needed is None:
        needed = getattr(error, "needed", None) or (int(short.group(1)) if short else None)
    folder = Path(folder)
    free = _free_bytes(folder)
    message = f"the disk holding {folder} is full"
    if error.errno == errno.EDQUOT:
        message += " (or your quota on it is used up)"
    if needed is None and purpose:
        message += f" (writing {purpose})"
    message += ": " + ("free space unknown" if free is None else f"{_size(free)} free")
    if needed is not None:
        message += f", {about} {_size(needed)} needed" + (f" for {purpose}" if purpose else "")
    disk_full = DiskFullError(errno.ENOSPC, message + (f"; {hint}" if hint else ""))
    disk_full.folder, disk_full.free, disk_full.needed = folder, free, needed
    return disk_full


@contextlib.contextmanager
def _reporting_full_disk(folder: Path, purpose: str) -> Iterator[None]:
    """Raise a :class:`DiskFullError` naming ``folder`` for a full-disk ``OSError`` in the block."""
    try:
        yield
    except OSError as error:
        full = full_disk_error(error, folder, purpose=purpose)
        if full is None:
            raise
        raise full from error


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

    Raises
    ------
    DiskFullError
        If the disk is full (whatever the writer raised), naming the folder.

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
    with _reporting_full_disk(path.parent, path.name):
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

    Raises
    ------
    DiskFullError
        If the disk is full (whatever the writer raised), naming the folder.
    """
    path = Path(path)
    with _reporting_full_disk(path.parent, path.name):
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
