"""Tests of tutorial_lib._files on a full disk: the error names the folder, its free space and what is needed.

A real full disk needs a small file system (mounted as root); instead :class:`FullDisk` makes ``numpy.save``
behave as on a disk with a few bytes left, the way NumPy reports it on a real one: a torn file and an
``OSError`` without errno ("737280 requested and 388992 written"), or ``ENOSPC`` as Python's own writes do.
The other test modules import it.
"""

from __future__ import annotations

import errno
import pickle
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from tutorial_lib._files import DiskFullError, atomic_dir, atomic_path, full_disk_error, write_json_atomic

FORMS = ["short write", "ENOSPC"]
_UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


class FullDisk:
    """``numpy.save`` with ``room`` bytes left: arrays that fit are saved, the first that does not is torn.

    ``saved`` lists every path ``numpy.save`` was asked to write, in order.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, room: int, form: str = "short write") -> None:
        self.room, self.form, self.saved, self._lock, save = room, form, [], threading.Lock(), np.save

        def limited_save(file, arr, *args, **kwargs):
            arr = np.asanyarray(arr)
            with self._lock:
                self.saved.append(Path(file))
                fits = arr.nbytes <= self.room
                written, self.room = (arr.nbytes, self.room - arr.nbytes) if fits else (self.room, 0)
            if fits:
                return save(file, arr, *args, **kwargs)
            Path(file).write_bytes(b"\x93NUMPY" + bytes(written))  # what reached the disk
            if self.form == "ENOSPC":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise OSError(f"{arr.nbytes} requested and {written} written")  # NumPy's form: no errno

        monkeypatch.setattr(np, "save", limited_save)


def needed_bytes(message: str) -> float:
    """The "about 5.53 MB needed" of a message, in bytes."""
    found = re.search(r"about ([\d.]+) (B|kB|MB|GB) needed", message)
    assert found, message
    return float(found.group(1)) * _UNITS[found.group(2)]


@pytest.mark.parametrize("form", FORMS)
def test_a_full_disk_under_atomic_path_names_the_folder_and_keeps_the_old_file(
    tmp_path: Path, form: str, monkeypatch
) -> None:
    target = tmp_path / "weights.npy"
    np.save(target, np.zeros(10))
    FullDisk(monkeypatch, room=100, form=form)
    with pytest.raises(DiskFullError) as caught:
        with atomic_path(target, suffix=".npy") as temporary:
            np.save(temporary, np.ones(1000))
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.folder == tmp_path
    assert str(error).startswith(f"the disk holding {tmp_path} is full")
    assert re.search(r": [\d.]+ (B|kB|MB|GB) free", str(error)), str(error)
    if form == "short write":  # NumPy said how much it asked for
        assert "at least 8 kB needed for weights.npy" in str(error)
    else:
        assert "(writing weights.npy)" in str(error)
    assert isinstance(error.__cause__, OSError) and not isinstance(error.__cause__, DiskFullError)
    assert np.load(target).tolist() == [0.0] * 10
    assert [path.name for path in tmp_path.iterdir()] == ["weights.npy"]  # no temporary left


@pytest.mark.parametrize("form", FORMS)
def test_a_full_disk_under_atomic_dir_leaves_no_half_folder(tmp_path: Path, form: str, monkeypatch) -> None:
    disk = FullDisk(monkeypatch, room=8000, form=form)
    with pytest.raises(DiskFullError, match=f"^the disk holding {re.escape(str(tmp_path))} is full"):
        with atomic_dir(tmp_path / "Case_0") as folder:
            np.save(folder / "brain.npy", np.zeros(8000, bool))  # fits
            np.save(folder / "image.npy", np.zeros(8000, np.float16))  # does not
    assert [path.name for path in disk.saved] == ["brain.npy", "image.npy"]
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through_unchanged(tmp_path: Path) -> None:
    for error in (PermissionError(errno.EACCES, "Permission denied"), OSError(errno.EIO, "I/O error"),
                  ValueError("not a disk problem")):
        with pytest.raises(type(error)) as caught:
            with atomic_path(tmp_path / "file.txt") as temporary:
                temporary.write_text("half")
                raise error
        assert caught.value is error and not isinstance(caught.value, DiskFullError)
    assert list(tmp_path.iterdir()) == []
    assert full_disk_error(OSError("3 requested"), tmp_path) is None  # not NumPy's short-write form


def test_a_nested_write_is_reported_for_the_outer_folder(tmp_path: Path) -> None:
    # write_json_atomic inside atomic_dir (a case's case.json): the message names the case's folder.
    with pytest.raises(DiskFullError) as caught:
        with atomic_dir(tmp_path / "cases" / "Case_0") as folder:
            with atomic_path(folder / "case.json") as temporary:
                temporary.write_text("{")
                raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value).startswith(f"the disk holding {tmp_path / 'cases'} is full (writing Case_0): ")
    assert list((tmp_path / "cases").iterdir()) == []


def test_the_error_measures_the_nearest_folder_that_exists_and_survives_pickling(tmp_path: Path) -> None:
    quota = OSError(errno.EDQUOT, "Disk quota exceeded")
    error = full_disk_error(quota, tmp_path / "not" / "yet", needed=5_530_000, purpose="the 6 remaining case(s)",
                            hint="free space")
    assert error.free is not None and error.needed == 5_530_000 and error.errno == errno.ENOSPC
    assert str(error).startswith(f"the disk holding {tmp_path / 'not' / 'yet'} is full (or your quota on it is "
                                 "used up): ")
    assert str(error).endswith(" free, about 5.53 MB needed for the 6 remaining case(s); free space")
    copy = pickle.loads(pickle.dumps(error))  # as a worker process would send it
    assert (type(copy), str(copy), copy.errno, copy.folder, copy.needed) == (
        DiskFullError, str(error), errno.ENOSPC, error.folder, 5_530_000)


def test_write_json_atomic_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    write_json_atomic(tmp_path / "record.json", {"run": 1})

    def full(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFullError, match="is full .writing record.json.: "):
        write_json_atomic(tmp_path / "record.json", {"run": 2})
    assert (tmp_path / "record.json").read_bytes() == b'{\n "run": 1\n}'
    assert [path.name for path in tmp_path.iterdir()] == ["record.json"]
