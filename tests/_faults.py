"""Filesystem faults for tests: a folder or file this process cannot write, a filesystem that is full.

A read-only folder is made with ``chmod`` for a normal user; root ignores file modes, so for root the folder
is bind-mounted read-only onto itself (skipped where mounting is not allowed). A full disk is a tiny tmpfs
(root only; elsewhere the caller simulates ENOSPC instead).
"""
from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from pathlib import Path

import pytest


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def _unwritable(paths: list[Path], what: str):
    """``paths[0]`` (and the others: what is inside it) cannot be written by this process: their modes for a
    normal user; for root, who ignores modes, a read-only bind mount of ``paths[0]`` onto itself (skipped where
    mounting is not allowed)."""
    target = paths[0]
    if not _is_root():
        modes = {p: p.stat().st_mode for p in paths}
        for p in modes:
            p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(stat.S_IMODE(mode))
        return
    if not (_mount("--bind", str(target), str(target)) and _mount("-o", "remount,bind,ro", str(target), str(target))):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
        pytest.skip(f"running as root and cannot bind-mount a read-only {what} here")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` (created if needed, its present content kept) cannot be written by this process inside."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _unwritable([folder, *folder.rglob("*")], "folder"):
        with pytest.raises(OSError):
            (folder / ".probe").write_text("x")
        yield folder


@contextlib.contextmanager
def read_only_file(path: Path):
    """The file ``path`` cannot be opened for writing by this process (its folder still can). Descriptors opened
    before stay writable, as the kernel keeps them."""
    path = Path(path)
    with _unwritable([path], "file"):
        yield path


@contextlib.contextmanager
def tiny_filesystem(folder: Path, kib: int):
    """A tmpfs of ``kib`` KiB mounted on ``folder`` (root only; skipped elsewhere)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not _is_root() or not _mount("-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)):
        pytest.skip("a tiny filesystem needs root and mount (the ENOSPC simulation covers this case)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
