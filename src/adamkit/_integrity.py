"""Integrity records of cached files: size and sha256, written beside a file when it is made, checked before use.

Every artefact adamkit caches (data files, derived models, compiled kernels) is recorded when written with
:func:`record` and checked with :func:`verify` before it is read. A file whose record is missing or does not
match is never used: the caller rebuilds it, or refuses with a message naming the file and the command that
repairs it.

The record of ``PATH`` is ``PATH.integrity`` (JSON: ``{"size": bytes, "sha256": hex}``), written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

SUFFIX = ".integrity"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(path: str | os.PathLike) -> Path:
    """Where the integrity record of ``path`` lives."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def record(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """Write the integrity record of ``path`` (size and sha256; ``sha256`` if already known) and return it."""
    path = Path(path)
    entry = {"size": path.stat().st_size, "sha256": sha256 or sha256_file(path)}
    target = record_path(path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, target)
    return entry


def problem(path: str | os.PathLike, expected_sha256: str | None = None) -> str | None:
    """Why ``path`` must not be used, or None when it matches its record (and ``expected_sha256``, if given).

    The size is compared first, so a truncated file is caught without reading it.
    """
    path = Path(path)
    if not path.is_file():
        return f"{path} is missing"
    try:
        entry = json.loads(record_path(path).read_text())
        size, digest = int(entry["size"]), str(entry["sha256"])
    except FileNotFoundError:
        entry = None
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path}: its integrity record {record_path(path).name} is unreadable"
    actual_size = path.stat().st_size
    if entry is not None and actual_size != size:
        return f"{path} has {actual_size} bytes, {size} when it was written (truncated or changed)"
    if entry is None and expected_sha256 is None:
        return f"{path} has no integrity record ({record_path(path).name})"
    actual = sha256_file(path)
    if entry is not None and actual != digest:
        return f"{path} changed since it was written (sha256 {actual[:12]}…, recorded {digest[:12]}…)"
    if expected_sha256 is not None and actual != expected_sha256.lower():
        return f"{path} has sha256 {actual[:12]}…, expected {expected_sha256[:12]}…"
    return None


#: files this process has verified: (path, size, mtime_ns, inode, expected sha256, record's mtime_ns)
_VERIFIED: set[tuple] = set()


def problem_once(path: str | os.PathLike, expected_sha256: str | None = None) -> str | None:
    """:func:`problem`, hashing each file once per process: cheap on repeated use.

    A file that passed is remembered under its size, mtime, inode (and its record's mtime); any later call
    re-reads only its metadata (``stat``). A file that is rewritten, replaced or truncated gets another size,
    mtime or inode and is hashed again, so only a same-size in-place edit that also restores the mtime would go
    unseen within one process (every new process hashes again). Failures are never remembered.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} is missing"
    try:
        rec_mtime = record_path(path).stat().st_mtime_ns
    except FileNotFoundError:
        rec_mtime = None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino,
           expected_sha256.lower() if expected_sha256 else None, rec_mtime)
    if key in _VERIFIED:
        return None
    found = problem(path, expected_sha256)
    if found is None:
        _VERIFIED.add(key)
    return found
