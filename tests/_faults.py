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
def read_only(folder: Path):
    """``folder`` (created if needed, its present content kept) cannot be written by this process inside."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not _is_root():
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
        try:
            yield folder
        finally:
            for p, mode in modes.items():
                p.chmod(stat.S_IMODE(mode))
        return
    if not (_mount("--bind", str(folder), str(folder)) and _mount("-o", "remount,bind,ro", str(folder), str(folder))):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        pytest.skip("running as root and cannot bind-mount a read-only folder here")
    try:
        with pytest.raises(OSError):
            (folder / ".probe").write_text("x")
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def read_only_file(path: Path):
    """The file ``path`` cannot be opened for writing by this process (its folder still can): its mode for a
    normal user, a read-only bind mount of the file onto itself for root (skipped where mounting is not allowed).
    Files already open stay writable through their descriptors, as the kernel keeps them."""
    path = Path(path)
    if not _is_root():
        mode = path.stat().st_mode
        path.chmod(stat.S_IMODE(mode) & ~0o222)
        try:
            yield path
        finally:
            path.chmod(stat.S_IMODE(mode))
        return
    if not (_mount("--bind", str(path), str(path)) and _mount("-o", "remount,bind,ro", str(path), str(path))):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
        pytest.skip("running as root and cannot bind-mount a read-only file here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


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
