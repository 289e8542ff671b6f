"""Native libraries built on first use, cached per source, compiler and flags, and verified before every load.

The fused C kernel (:mod:`.fused_cpu`) and the C++ check of its kept pointer table (:mod:`.fused_check`) are
built the same way, by :func:`build`: the first of a list of flag sets that compiles wins; the build goes
into adamkit's cache directory (:func:`cache_dir`) under ``<name>-<key>.so``, where the key hashes everything
the binary depends on; it is written to a temporary file and renamed into place (atomic: concurrent builders
agree), with its size and sha256 recorded beside it (:mod:`adamkit._integrity`). A cached build is loaded
only if it is the file that was written: a truncated or overwritten library would crash the process inside
``dlopen`` (SIGBUS, SIGSEGV), so a damaged one is rebuilt, with a warning. A build in use keeps a fresh mtime
(:func:`touch`); builds unused for :data:`STALE_AFTER_S` and the leftovers of killed compilers are pruned
when a new build is made (:func:`prune`).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from .. import _integrity
from . import cpu_variants

#: builds not used for this long are removed when a new build is made (other versions, compilers, hosts)
STALE_AFTER_S = 30 * 24 * 3600


def cache_dir() -> Path:
    """``$ADAMKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/adamkit``, else ``~/.cache/adamkit``."""
    if os.environ.get("ADAMKIT_CACHE_DIR"):
        return Path(os.environ["ADAMKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "adamkit"


find_compiler = cpu_variants.find_compiler


def touch(path: Path) -> None:
    """Mark a build as used now (its mtime is its last use, also on noatime file systems)."""
    try:
        os.utime(path)
    except OSError:
        pass


def prune(directory: Path, pattern: str, keep: Path | None = None, max_age_s: float = STALE_AFTER_S,
          leftovers: bool = False) -> list[Path]:
    """Remove the builds matching ``pattern`` unused for ``max_age_s`` (and, with ``leftovers``, compiler
    leftovers of killed builds, ``tmp*.so`` older than a day) with their integrity records; returns what was
    removed. A build another process has loaded stays mapped there; a later process rebuilds it if needed."""
    now = time.time()
    removed = []
    globs = [(pattern, max_age_s)] + ([("tmp*.so", min(max_age_s, 24 * 3600))] if leftovers else [])
    for glob, age in globs:
        for path in directory.glob(glob):
            if keep is not None and path == keep:
                continue
            try:
                if now - path.stat().st_mtime > age:
                    path.unlink()
                    removed.append(path)
                    _integrity.record_path(path).unlink(missing_ok=True)
            except OSError:  # another process pruned it first, or it is not ours to remove
                pass
    return removed


def build(name: str, flag_sets: Sequence[list[str]], key: Callable[[list[str]], str],
          command: Callable[[list[str], str], list[str]], unavailable: type[Exception], what: str,
          timeout: float, after: Callable[[Path, Path], object] | None = None) -> Path:
    """The path of a verified build of ``name`` in :func:`cache_dir`, compiled if needed.

    ``flag_sets``: tried in order, the first that compiles is used; ``key(flags)``: the cache key of a build
    with those flags (hex; it must cover the source and everything else the binary depends on);
    ``command(flags, output)``: the compiler's argument list; ``unavailable``: the exception raised (with
    ``what``, e.g. "the C compiler", in its message) when the directory is not writable or no flag set
    compiles; ``after(directory, target)``: called after a new build (pruning).
    """
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(unavailable, directory, exc) from None
    errors = []
    for flags in flag_sets:
        target = directory / f"{name}-{key(flags)}.so"
        if target.exists():
            problem = _integrity.problem(target)
            if problem is None:
                touch(target)
                return target
            if _integrity.record_path(target).exists():  # damaged, not merely built before records existed
                warnings.warn(f"adamkit: the cached build {target.name} is damaged ({problem}); rebuilding it",
                              RuntimeWarning, stacklevel=3)
        try:
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
        except OSError as exc:
            raise _unwritable(unavailable, directory, exc) from None
        os.close(fd)
        try:
            proc = subprocess.run(command(flags, tmp), capture_output=True, text=True, timeout=timeout)
            if proc.returncode == 0:
                digest = _integrity.sha256_file(tmp)
                os.replace(tmp, target)  # atomic: concurrent builders agree (a racing reader re-verifies)
                _integrity.record(target, sha256=digest)
                if after is not None:
                    after(directory, target)
                return target
            errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-500:]}")
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise unavailable(f"{what} failed:\n" + "\n".join(errors))


def _unwritable(unavailable: type[Exception], directory: Path, exc: OSError) -> Exception:
    return unavailable(f"its cache directory {directory} is not writable ({exc}); set ADAMKIT_CACHE_DIR to a "
                       "writable directory")
