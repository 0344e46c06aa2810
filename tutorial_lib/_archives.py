"""Extracting untrusted downloads safely: archive members and gzip streams, bounded and checked.

A BraTS download is a multi-gigabyte ``.zip`` or ``.tar[.gz]`` fetched from
outside, so it is often interrupted and may be hostile. This module is the
plumbing under :mod:`tutorial_lib.sources`, which knows the subject (which
members a release needs, which case each belongs to) and passes that in;
nothing here knows about BraTS. It extracts member by member, and:

- refuses members that would land outside the target (absolute paths,
  ``..``, links, special files);
- bounds decompressed sizes per member and per case, so a damaged or hostile
  archive cannot fill the disk or memory;
- reports a damaged member (truncated stream, bad CRC) and still extracts the
  others, leaving no partial file behind;
- reads a zip whose central directory is missing (a truncated download) from
  its local headers, which :mod:`zipfile` cannot do.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable

_CHUNK = 1 << 20


class ArchiveDamage(ValueError):
    """A member cannot be extracted completely; the message names the archive, the member and why."""


# What an interrupted or corrupt download raises while a member is read.
_DAMAGE = (EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, OSError, ArchiveDamage, struct.error)


@dataclass
class _Policy:
    """What one extraction keeps, and its running decompressed sizes per member and per case.

    Attributes
    ----------
    wanted : callable
        Member name -> whether to extract it (others are skipped, not reported).
    case_of : callable
        Member name -> the case it belongs to, for the per-case bound.
    member_bytes, case_bytes : int
        Decompressed size bounds.
    cases : dict of str to int
        Bytes extracted so far per case.
    """

    wanted: Callable[[str], bool]
    case_of: Callable[[str], str]
    member_bytes: int
    case_bytes: int
    cases: dict[str, int] = field(default_factory=dict)

    def check(self, name: str, member_total: int, added: int) -> None:
        """Count ``added`` bytes of member ``name``; ArchiveDamage if either bound is broken."""
        case = self.case_of(name)
        self.cases[case] = self.cases.get(case, 0) + added
        if member_total > self.member_bytes:
            raise ArchiveDamage(f"decompresses to more than {self.member_bytes} bytes (the per-member limit)")
        if self.cases[case] > self.case_bytes:
            raise ArchiveDamage(f"case {case!r} decompresses to more than {self.case_bytes} bytes (the per-case limit)")


def extract_members(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    wanted: Callable[[str], bool],
    case_of: Callable[[str], str],
    max_member_bytes: int,
    max_case_bytes: int,
) -> tuple[dict[str, str], dict[str, str]]:
    """Extract the wanted members that can be extracted; return ``(refused, damaged)`` name -> reason.

    :func:`tutorial_lib.sources.extract_members` documents the behaviour;
    ``wanted`` and ``case_of`` are the subject's part (see :class:`_Policy`).

    Raises
    ------
    ValueError
        If ``archive`` is neither a zip nor a tar archive, or a limit is not positive.
    """
    archive, target = Path(archive), Path(target)
    if min(max_member_bytes, max_case_bytes) < 1:
        raise ValueError(f"decompression limits must be positive, got {max_member_bytes}, {max_case_bytes}")
    policy = _Policy(wanted, case_of, max_member_bytes, max_case_bytes)
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, target, policy)
    with open(archive, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04":
        return _salvage_zip(archive, target, policy)
    if _is_tar(archive):
        return _extract_tar(archive, target, policy)
    raise ValueError(f"{archive}: not a .zip or .tar[.gz|.bz2|.xz] archive")


def gunzip(stream: IO[bytes], *, limit: int) -> bytes:
    """The decompressed bytes of a gzip stream, every member of it, never more than ``limit``.

    :mod:`gzip` checks each member's CRC-32 and length (:class:`gzip.BadGzipFile`)
    and raises :class:`EOFError` on a truncated stream; reading in chunks stops
    a hostile file before it fills memory.

    Raises
    ------
    ArchiveDamage
        If the data decompress to more than ``limit`` bytes.

    Examples
    --------
    >>> import io
    >>> gunzip(io.BytesIO(gzip.compress(b"two ") + gzip.compress(b"members")), limit=100)
    b'two members'
    """
    parts, size = [], 0
    with gzip.GzipFile(fileobj=stream) as unzipped:
        # At most limit + 1 bytes in all: one byte beyond is enough to know the bound is broken.
        while part := unzipped.read(min(_CHUNK, limit + 1 - size)):
            size += len(part)
            if size > limit:
                raise ArchiveDamage(f"decompresses to more than {limit} bytes")
            parts.append(part)
    return b"".join(parts)


# ----------------------------------------------------------------------------- safety


def _member_problem(name: str, target: Path) -> str | None:
    """Why a member name must not be extracted into ``target``, or None.

    Examples
    --------
    >>> _member_problem("../escape_flair.nii.gz", Path("out"))
    "path leads outside the extraction folder ('..') refused"
    >>> _member_problem("Training/Case_1/Case_1_flair.nii.gz", Path("out")) is None
    True
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "absolute path refused"
    if ".." in path.parts:
        return "path leads outside the extraction folder ('..') refused"
    if not (target / path).resolve().is_relative_to(target.resolve()):
        return "path leads outside the extraction folder refused"
    return None


def _copy_member(read: Any, destination: Path, name: str, policy: _Policy) -> None:
    """Copy chunks from ``read(n)`` with a running size bound; no partial file survives."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        with open(destination, "wb") as handle:
            while chunk := read(_CHUNK):
                total += len(chunk)
                policy.check(name, total, len(chunk))
                handle.write(chunk)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


def _reason(error: BaseException) -> str:
    if isinstance(error, ArchiveDamage):
        return str(error)
    if isinstance(error, EOFError) or "unexpected end" in str(error) or "truncated" in str(error).lower():
        return f"truncated ({type(error).__name__}: {error}); was the download interrupted?"
    return f"damaged ({type(error).__name__}: {error})"


# ----------------------------------------------------------------------------- tar


def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except _DAMAGE:
        # A compressed tar truncated inside its first block; its magic says what it is.
        with open(archive, "rb") as handle:
            head = handle.read(6)
        return head[:3] in (b"\x1f\x8b\x08", b"BZh") or head == b"\xfd7zXZ\x00"


def _tar_problem(member: tarfile.TarInfo, target: Path) -> str | None:
    problem = _member_problem(member.name, target)
    if problem is None and (member.issym() or member.islnk()):
        problem = f"link to {member.linkname!r} refused"
    elif problem is None and not (member.isfile() or member.isdir()):
        problem = "special file (device, fifo) refused"
    return problem


def _extract_tar(archive: Path, target: Path, policy: _Policy) -> tuple[dict[str, str], dict[str, str]]:
    rejected: dict[str, str] = {}
    damaged: dict[str, str] = {}
    last, current = "the start of the archive", None
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                problem = _tar_problem(member, target)
                if problem is not None:
                    rejected[member.name] = problem
                elif member.isfile() and policy.wanted(member.name):
                    current = member.name
                    try:
                        _copy_member(tar.extractfile(member).read, target / member.name, member.name, policy)
                    except ArchiveDamage as error:
                        damaged[member.name] = str(error)  # the stream itself is fine: go on
                last, current = member.name, None
    except _DAMAGE as error:
        # A compressed tar cannot be read past a damaged point; what came before is kept.
        damaged[current or f"(the member after {last})"] = _reason(error) + "; nothing after it could be read"
    return rejected, damaged


# ----------------------------------------------------------------------------- zip


def _extract_zip(archive: Path, target: Path, policy: _Policy) -> tuple[dict[str, str], dict[str, str]]:
    rejected: dict[str, str] = {}
    damaged: dict[str, str] = {}
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            problem = _member_problem(info.filename, target)
            if problem is None and stat.S_ISLNK(info.external_attr >> 16):
                problem = "symbolic link refused"
            if problem is not None:
                rejected[info.filename] = problem
            elif not info.is_dir() and policy.wanted(info.filename):
                try:  # each zip member stands alone: a bad one does not stop the others
                    with zipped.open(info) as stream:
                        _copy_member(stream.read, target / info.filename, info.filename, policy)
                except _DAMAGE as error:
                    damaged[info.filename] = _reason(error)
    return rejected, damaged


# ----------------------------------------------------------------------------- zip without its central directory
# zipfile needs the central directory at the end, which a truncated download lacks; the local
# header before each member says enough to read it (method, CRC, sizes or a trailing descriptor).

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, lengths


def _salvage_zip(archive: Path, target: Path, policy: _Policy) -> tuple[dict[str, str], dict[str, str]]:
    """Read a zip without its central directory (a truncated download) from its local headers."""
    rejected: dict[str, str] = {}
    damaged: dict[str, str] = {
        "(central directory)": "missing: the archive is truncated; was the download interrupted?"}
    with open(archive, "rb") as handle:
        while (header := handle.read(_LOCAL_HEADER.size))[:4] == b"PK\x03\x04":
            name = ""
            try:
                _, _, flags, method, _, _, crc, packed, _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
                name = handle.read(name_length).decode("utf-8" if flags & 0x800 else "cp437")
                handle.seek(extra_length, os.SEEK_CUR)
                _salvage_member(handle, name, flags, method, crc, packed, target, policy, rejected)
            except _DAMAGE as error:
                damaged[name or f"member at byte {handle.tell()}"] = _reason(error)
                break
    return rejected, damaged


def _salvage_member(handle: Any, name: str, flags: int, method: int, crc: int, packed: int, target: Path,
                    policy: _Policy, rejected: dict[str, str]) -> None:
    described = bool(flags & 0x8)  # sizes and CRC follow the data
    if method not in (0, 8) or flags & 0x1 or (described and method == 0) or packed == 0xFFFFFFFF:
        raise ArchiveDamage("cannot be read without the central directory (method, encryption or zip64)")
    read = _deflated(handle, None if described else packed) if method == 8 else _stored(handle, packed)
    problem = _member_problem(name, target)
    if problem is not None or name.endswith("/") or not policy.wanted(name):
        if problem is not None:
            rejected[name] = problem
        while read(_CHUNK):
            pass
    else:
        checked = _CrcReader(read)
        _copy_member(checked, target / name, name, policy)
        if described:
            crc = _read_descriptor(handle)
        if checked.crc != crc:
            (target / name).unlink(missing_ok=True)
            raise zipfile.BadZipFile(f"Bad CRC-32 for file {name!r}")
        return
    if described:
        _read_descriptor(handle)


def _deflated(handle: Any, size: int | None) -> Any:
    """A ``read(n)`` over one raw-deflate member; ``size`` None reads to the stream's end."""
    inflater, left = zlib.decompressobj(-15), size

    def read(n: int) -> bytes:
        nonlocal left
        while not inflater.eof:
            data = inflater.unconsumed_tail
            if not data:
                data = handle.read(_CHUNK if left is None else min(_CHUNK, left))
                if not data:
                    raise EOFError("compressed data ends early")
                left = None if left is None else left - len(data)
            out = inflater.decompress(data, n)  # at most n bytes: memory stays bounded
            if inflater.eof and inflater.unused_data:
                handle.seek(-len(inflater.unused_data), os.SEEK_CUR)  # the next header starts there
            if out:
                return out
        return b""

    return read


def _stored(handle: Any, size: int) -> Any:
    left = size

    def read(n: int) -> bytes:
        nonlocal left
        raw = handle.read(min(n, left))
        if left and not raw:
            raise EOFError("stored data ends early")
        left -= len(raw)
        return raw

    return read


class _CrcReader:
    """``read(n)`` that keeps the CRC-32 of what it returned."""

    def __init__(self, read: Any) -> None:
        self.read_raw, self.crc = read, 0

    def __call__(self, n: int) -> bytes:
        chunk = self.read_raw(n)
        self.crc = zlib.crc32(chunk, self.crc)
        return chunk


def _read_descriptor(handle: Any) -> int:
    first = handle.read(4)
    if first == b"PK\x07\x08":
        first = handle.read(4)
    rest = handle.read(8)
    if len(first) < 4 or len(rest) < 8:
        raise EOFError("data descriptor ends early")
    return int.from_bytes(first, "little")
