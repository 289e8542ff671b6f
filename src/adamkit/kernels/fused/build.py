"""Building and loading the fused C kernel: one lazy loader, one builder, for it and for the native check.

**The builder** (:func:`cached_build`), for the kernel and for the C++ check of its kept pointer table
(:mod:`.check`): the first of a list of flag sets that compiles wins; the build goes into adamkit's cache
directory (:func:`cache_dir`) under ``<name>-<key>.so``, where the key hashes everything the binary depends
on; it is written to a temporary file and renamed into place (atomic: concurrent builders agree), with its
size and sha256 recorded beside it (:mod:`adamkit._integrity`). A cached build is loaded only if it is the
file that was written: a truncated or overwritten library would crash the process inside ``dlopen``
(SIGBUS, SIGSEGV), so a damaged one is rebuilt, with a warning. A build in use keeps a fresh mtime
(:func:`touch`); builds unused for :data:`STALE_AFTER_S` and the leftovers of killed compilers are pruned
when a new build is made (:func:`prune`).

**The lazy loader** (:class:`Lazy`): each library is opened on first use, once per process; the reason it
could not be is kept and raised again, so a missing compiler is not looked for on every step.

**The kernel's builds** (:mod:`.cpu_variants`): on x86-64 the kernel comes in three instruction-set variants,
baseline, avx2 and avx512, which compute the same bits; :func:`load` takes the highest this CPU runs (the
baseline build, which runs everywhere, reports the CPU's level), or ``$ADAMKIT_KERNEL_VARIANT``'s. A wheel
holds them prebuilt (``adamkit/kernels/fused/prebuilt``, recorded with their sha256, the kernel's interface
version and the sha256 of the sources they were built from, all checked before one is loaded). Where there
are none (a source checkout) or they must not be used (damaged, stale, of another interface version: said
once, with why), the variant is compiled on first use with the system C compiler (``$CC``, else
``cc``/``gcc``/``clang``, a few seconds, once) into the cache directory, keyed by a hash of the sources, the
compiler and its flags: ``$ADAMKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/adamkit``, else ``~/.cache/adamkit``,
and verified before every load. ``ADAMKIT_KERNEL_VARIANT=native`` opts in to a first-use build with
``-march=native``. A new build removes the builds nobody has loaded for 30 days (:func:`prune_cache`).
:func:`loaded_build` says which build steps.

Without a usable build (no prebuilt library and no working compiler) :func:`available` is False:
``fused=True`` on CPU then raises :class:`FusedKernelUnavailable` saying why, and the default path falls back
to the per-tensor loop. ``ADAMKIT_DISABLE_FUSED=1`` forces that fallback (for testing and for platforms where
the kernel misbehaves).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ...core import state_format
from ... import _integrity
from . import cpu_variants

#: the kernel's source: kernel.c, which includes the other files of :func:`cpu_variants.source_files`
SOURCE = Path(__file__).with_name(cpu_variants.MAIN_SOURCE)
#: the kernel's interface version (adamkit_abi_version in kernel.c)
ABI_VERSION = 4
#: the 8-bit code tables of state_format, in the kernel's kind order (signed, unsigned, upper), handed to it once
_CODE_TABLES = torch.cat([state_format.table(kind) for kind in state_format.KINDS]).contiguous()

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


def cached_build(name: str, flag_sets: Sequence[list[str]], key: Callable[[list[str]], str],
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


class Lazy:
    """A native library opened on first use, once per process (thread-safe): :meth:`get` returns what
    ``opener()`` returned, or raises ``unavailable`` with the reason the first try failed (kept, so that the
    failure is not retried on every step). ``what`` names the library in that reason."""

    def __init__(self, opener: Callable[[], object], unavailable: type[Exception], what: str):
        self._opener, self._unavailable, self._what = opener, unavailable, what
        self.lock = threading.RLock()
        self.value = None
        self.error: str | None = None

    def get(self):
        value = self.value
        if value is not None:
            return value
        with self.lock:
            if self.value is not None:
                return self.value
            if self.error is not None:
                raise self._unavailable(self.error)
            try:
                self.value = self._opener()
            except self._unavailable as exc:
                self.error = f"{self._what} is unavailable: {exc}"
                raise self._unavailable(self.error) from None
            except OSError as exc:
                self.error = f"{self._what} could not be loaded: {exc}"
                raise self._unavailable(self.error) from None
            return self.value


# ---------------------------------------------------------------- the kernel
#: the environment variable that chooses a build: a variant of :func:`cpu_variants.variants` (one this CPU
#: runs), "native" (built on first use with -march=native) or "auto" (unset: the highest variant this CPU runs)
VARIANT_ENV = "ADAMKIT_KERNEL_VARIANT"
#: the prebuilt libraries of a wheel (absent in a source checkout)
PREBUILT = Path(__file__).with_name(cpu_variants.PREBUILT_DIR)
#: how a build came to be: prebuilt in the wheel, or compiled on first use into the cache
PREBUILT_ORIGIN, FIRST_USE_ORIGIN = "prebuilt", "built on first use"


class FusedKernelUnavailable(RuntimeError):
    """The fused CPU kernel could not be built or loaded here."""


@dataclass(frozen=True)
class KernelBuild:
    """One loaded build of the kernel: its variant, where it came from (:data:`PREBUILT_ORIGIN` or
    :data:`FIRST_USE_ORIGIN`), its file, and its threads ("pthreads": the kernel's own pool)."""

    variant: str
    origin: str
    path: Path
    threads: str


#: guards :data:`_opened`
_lock = threading.RLock()
#: every build this process opened, by variant: (library, KernelBuild)
_opened: dict[str, tuple] = {}
_warned_prebuilt = False


def _compiler() -> str | None:
    return find_compiler("CC", ["cc", "gcc", "clang"])


def _flag_sets(variant: str) -> list[list[str]]:
    """The flag sets a first-use build of ``variant`` tries, in order."""
    base = list(cpu_variants.BASE_FLAGS)
    if variant == cpu_variants.NATIVE:
        return [base + list(alt) for alt in cpu_variants.NATIVE_FLAGS]
    if variant == cpu_variants.OPENMP:  # the auto variant's flags, with OpenMP instead of the pool
        best = _auto_variant()
        return [flags + list(cpu_variants.OPENMP_FLAGS) for flags in _flag_sets(best)]
    return [base + list(alt) for alt in cpu_variants.variants()[variant][1]]


def _build(cc: str, variant: str) -> Path:
    """The verified first-use build of ``variant`` for compiler ``cc`` (:func:`cached_build`), compiled
    if needed; its key covers the sources, the compiler, the flags, the machine and, for -march=native, the
    host."""
    source = cpu_variants.source_digest(SOURCE.parent).encode()

    def key(flags: list[str]) -> str:
        native = any(f.endswith("=native") for f in flags)
        return hashlib.sha256(
            b"\0".join([source, cc.encode(), " ".join(flags).encode(), platform.machine().encode(),
                        platform.node().encode() if native else b""])
        ).hexdigest()[:20]

    return cached_build(
        "fused_cpu", _flag_sets(variant), key, lambda flags, out: cpu_variants.command(cc, flags, str(SOURCE), out),
        FusedKernelUnavailable, "the C compiler", timeout=300,
        after=lambda directory, target: prune_cache(directory, keep=target))


def prune_cache(directory: Path, keep: Path | None = None, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove kernel builds (``fused_cpu-*.so``) unused for ``max_age_s`` and compiler leftovers of killed
    builds (``tmp*.so``, older than a day); returns what was removed. A build another process has loaded
    stays mapped in that process; a later process rebuilds it if it needs it."""
    return prune(directory, "fused_cpu-*.so", keep, max_age_s, leftovers=True)


# ---------------------------------------------------------------- prebuilt libraries
def _prebuilt_manifest() -> dict | None:
    """The wheel's record of its prebuilt libraries, or None where there are none (a source checkout).

    Raises :class:`FusedKernelUnavailable` saying why they must not be used: an unreadable record, another
    interface version than this package's Python (a wheel's library beside another version's Python files),
    or a kernel source that is not the one they were built from (a source checkout edited since)."""
    path = PREBUILT / cpu_variants.MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        abi, built_from, libraries = int(manifest["abi_version"]), str(manifest["source_sha256"]), manifest["variants"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FusedKernelUnavailable(f"the prebuilt kernel's record {path} is unreadable ({exc})") from None
    if abi != ABI_VERSION:
        raise FusedKernelUnavailable(f"the prebuilt kernel has interface version {abi}, this adamkit's Python "
                                     f"expects {ABI_VERSION} (files of two adamkit versions mixed?)")
    if SOURCE.exists() and cpu_variants.source_digest(SOURCE.parent) != built_from:
        raise FusedKernelUnavailable(f"the prebuilt kernel in {PREBUILT} was built from other kernel sources "
                                     "than these (stale: rebuild the wheel, or remove that folder)")
    return libraries


def _prebuilt(variant: str) -> Path | None:
    """The verified prebuilt library of ``variant``, or None where the wheel has none; a damaged or mismatched
    one raises :class:`FusedKernelUnavailable` saying why."""
    libraries = _prebuilt_manifest()
    if libraries is None or variant not in libraries:
        return None
    path = PREBUILT / cpu_variants.library_name(variant)
    problem = _integrity.problem_once(path, expected_sha256=str(libraries[variant].get("sha256", "")) or None)
    if problem is not None:
        raise FusedKernelUnavailable(f"the prebuilt kernel is damaged: {problem}")
    return path


def _locate(variant: str) -> tuple[Path, str]:
    """The file of a build of ``variant`` and its origin: the wheel's prebuilt library where there is a sound
    one, else a first-use build (compiled if not cached). A prebuilt library that must not be used is said
    once per process, and the first-use build replaces it."""
    global _warned_prebuilt
    refused = None
    if variant not in (cpu_variants.NATIVE, cpu_variants.OPENMP):
        try:
            path = _prebuilt(variant)
            if path is not None:
                return path, PREBUILT_ORIGIN
        except FusedKernelUnavailable as exc:
            refused = str(exc)
    cc = _compiler()
    if cc is None:
        why = "no C compiler found (set $CC, or install gcc or clang)"
        raise FusedKernelUnavailable(f"{refused}; and {why} to build it" if refused else
                                     f"{why}; pass fused=False or leave fused unset to use the reference path")
    if refused and not _warned_prebuilt:
        _warned_prebuilt = True
        warnings.warn(f"adamkit: {refused}; building the kernel from source instead", RuntimeWarning, stacklevel=4)
    return _build(cc, variant), FIRST_USE_ORIGIN


def _open(path: Path, variant: str, origin: str):
    """dlopen a build, check its interface version and hand it the 8-bit code tables."""
    lib = ctypes.CDLL(str(path))
    lib.adamkit_abi_version.restype = ctypes.c_int
    if lib.adamkit_abi_version() != ABI_VERSION:
        raise FusedKernelUnavailable(f"{path} has interface version {lib.adamkit_abi_version()}, this adamkit "
                                     f"expects {ABI_VERSION} (a stale build)")
    common = [
        ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int64,
    ]
    lib.adamkit_step.restype = ctypes.c_int
    # ..., the parameters' rounding seeds (None: to nearest), the step count
    lib.adamkit_step.argtypes = common + [ctypes.c_void_p, ctypes.c_int64]
    lib.adamkit_step_lowp.restype = ctypes.c_int
    lib.adamkit_step_lowp.argtypes = common + [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_void_p,  # the parameters' rounding seeds (None: to nearest)
    ]
    lib.adamkit_encode.restype = ctypes.c_int
    lib.adamkit_encode.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32]
    lib.adamkit_set_tables.restype = ctypes.c_int
    lib.adamkit_set_tables.argtypes = [ctypes.c_void_p]
    lib.adamkit_decode.restype = ctypes.c_int
    lib.adamkit_decode.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_void_p]
    lib.adamkit_cpu_level.restype = ctypes.c_int
    lib.adamkit_threads.restype = ctypes.c_char_p
    rc = lib.adamkit_set_tables(_CODE_TABLES.data_ptr())
    if rc != 0:
        raise FusedKernelUnavailable(f"the 8-bit code tables are not of the form the kernel reads ({rc})")
    return lib, KernelBuild(variant, origin, path, lib.adamkit_threads().decode())


def open_build(variant: str):
    """(library, :class:`KernelBuild`) of one build, opened once per process: a variant this CPU runs,
    "native" or "openmp" (:mod:`.cpu_variants`). Raises :class:`FusedKernelUnavailable` saying why not."""
    with _lock:
        if variant in _opened:
            return _opened[variant]
        known = list(cpu_variants.variants()) + [cpu_variants.NATIVE, cpu_variants.OPENMP]
        if variant not in known:
            raise FusedKernelUnavailable(f"no kernel build {variant!r}; choose from {', '.join(known)}")
        if variant in cpu_variants.variants() and variant != _lowest_variant():
            runs = runnable_variants()
            if variant not in runs:
                raise FusedKernelUnavailable(f"this CPU does not run the {variant} build (it runs {', '.join(runs)})")
        try:
            path, origin = _locate(variant)
            opened = _open(path, variant, origin)
        except OSError as exc:
            raise FusedKernelUnavailable(f"the {variant} build could not be loaded: {exc}") from None
        _opened[variant] = opened
        return opened


def _lowest_variant() -> str:
    return next(iter(cpu_variants.variants()))


def runnable_variants() -> list[str]:
    """The variants (:func:`cpu_variants.variants`) this CPU runs, lowest first, as the lowest build (which
    runs on every CPU of its kind) reports the CPU's level."""
    lib, _ = open_build(_lowest_variant())
    level = lib.adamkit_cpu_level()
    return [name for name, (needs, _) in cpu_variants.variants().items() if needs <= level]


def _auto_variants() -> list[str]:
    """The variants :func:`load` tries, best first: the prebuilt ones this CPU runs, or where there are none
    (a source install, a stale or mismatched wheel) every one it runs, built on first use."""
    runs = runnable_variants()
    try:
        prebuilt = _prebuilt_manifest() or {}
    except FusedKernelUnavailable:  # said by _locate when the lowest build was located
        prebuilt = {}
    return [v for v in runs if v in prebuilt][::-1] or runs[::-1]


def _auto_variant() -> str:
    return _auto_variants()[0]


def _requested_variant() -> str | None:
    """``$ADAMKIT_KERNEL_VARIANT``: None for "auto" or unset; refuses an unknown name, saying the valid ones."""
    value = os.environ.get(VARIANT_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    valid = list(cpu_variants.variants()) + [cpu_variants.NATIVE]
    if value not in valid:
        raise FusedKernelUnavailable(f"{VARIANT_ENV}={value!r} is not a kernel build; choose from auto, "
                                     f"{', '.join(valid)}")
    return value


def _open_default() -> tuple:
    """(library, :class:`KernelBuild`) of the build :func:`load` uses: ``$ADAMKIT_KERNEL_VARIANT``'s, else the
    highest variant this CPU runs, falling back to lower ones where that one is neither prebuilt nor buildable
    here (say, a compiler without AVX-512)."""
    if sys.platform == "win32":
        raise FusedKernelUnavailable("the fused CPU kernel is built for POSIX systems only")
    requested = _requested_variant()
    if requested is not None:
        return open_build(requested)
    errors = []
    for variant in _auto_variants():
        try:
            return open_build(variant)
        except FusedKernelUnavailable as exc:
            errors.append(str(exc))
    raise FusedKernelUnavailable(errors[-1])


#: the kernel this process steps with: (library, KernelBuild), opened on first use
_kernel = Lazy(_open_default, FusedKernelUnavailable, "adamkit's fused CPU kernel")


def load():
    """The loaded kernel library (:func:`_open_default`'s build); raises :class:`FusedKernelUnavailable` saying
    why there is none."""
    if os.environ.get("ADAMKIT_DISABLE_FUSED", "") not in ("", "0"):
        raise FusedKernelUnavailable("adamkit's fused CPU kernel is disabled by ADAMKIT_DISABLE_FUSED")
    return _kernel.get()[0]


def loaded_build() -> KernelBuild:
    """The build :func:`load` uses: its variant, origin (prebuilt or built on first use), file and threads."""
    load()
    return _kernel.value[1]


@contextlib.contextmanager
def using(variant: str):
    """Step with another build within the block (tests, ``adamkit speed --kernels``; not thread-safe)."""
    load()
    saved = _kernel.value
    _kernel.value = open_build(variant)
    try:
        yield _kernel.value[1]
    finally:
        _kernel.value = saved


def parallel_run_address() -> int:
    """The address of the kernel's ``adamkit_parallel_run`` (its thread pool), for adamkit's other native code."""
    return ctypes.cast(load().adamkit_parallel_run, ctypes.c_void_p).value


_warned_fallback = False


def warn_fallback() -> None:
    """Say once per process that the default CPU path steps with the slower loop, why, and how to fix it."""
    global _warned_fallback
    if _warned_fallback or os.environ.get("ADAMKIT_DISABLE_FUSED", "") not in ("", "0"):
        return  # said already, or chosen deliberately
    _warned_fallback = True
    warnings.warn(
        f"{_kernel.error or 'adamkit fused CPU kernel is unavailable'}. adamkit's optimizers step with the per-tensor "
        "loop instead, 2-12x slower on CPU; fix the cause above for the fused kernel, or pass fused=False "
        "(or set ADAMKIT_DISABLE_FUSED=1) to choose the loop and silence this warning",
        RuntimeWarning, stacklevel=4,
    )


def available() -> bool:
    """Whether the fused CPU kernel can be used (building it if needed)."""
    try:
        load()
        return True
    except FusedKernelUnavailable:
        return False
