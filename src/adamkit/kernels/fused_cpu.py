"""The fused CPU kernels (``fused=True`` on CPU, and the CPU default where available).

``fused_cpu.c`` (plain C, no torch or Python headers) holds one kernel per
algorithm: one pass over memory, vectorised, and parallel over the elements of
all the tensors of a bucket on ``torch.get_num_threads()`` threads of its own
pool (pthreads: no OpenMP runtime beside torch's). It is loaded with
``ctypes``; one call steps every tensor of a bucket, so many small tensors
cost one dispatch.

Builds (:mod:`.cpu_variants`): on x86-64 the kernel comes in three instruction-set variants, baseline,
avx2 and avx512, which compute the same bits; :func:`load` takes the highest this CPU runs (the baseline
build, which runs everywhere, reports the CPU's level), or ``$ADAMKIT_KERNEL_VARIANT``'s. A wheel holds
them prebuilt (``adamkit/kernels/prebuilt``, recorded with their sha256, the kernel's interface version and
the sha256 of the source they were built from, all checked before one is loaded). Where there are none (a
source checkout) or they must not be used (damaged, stale, of another interface version: said once, with
why), the variant is compiled on first use with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``,
a few seconds, once) into a cache directory keyed by a hash of the source, the compiler and its flags:
``$ADAMKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/adamkit``, else ``~/.cache/adamkit``, and verified before
every load. ``ADAMKIT_KERNEL_VARIANT=native`` opts in to a first-use build with ``-march=native``. A new
build removes the builds nobody has loaded for 30 days (:func:`prune_cache`). :func:`loaded_build` says
which build steps.

Without a usable build (no prebuilt library and no working compiler) :func:`available` is False:
``fused=True`` on CPU then raises :class:`FusedKernelUnavailable` saying why, and the default path falls back
to the per-tensor loop. ``ADAMKIT_DISABLE_FUSED=1`` forces that fallback (for testing and for platforms where
the kernel misbehaves).

Memory layout: each parameter, its gradient and its state tensors are stepped
as flat arrays. Contiguous tensors (the usual case) are used in place; tensors
that share one dense layout (e.g. channels_last parameters with state created
by ``zeros_like``) are too, and any other layout is copied to a contiguous
buffer and back.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import operator
import os
import platform
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..core import state_format
from .. import _integrity
from . import cpu_variants, native_build

SOURCE = Path(__file__).with_name("fused_cpu.c")

from .fused_spec import ALGORITHMS, KernelCall, kernel_call  # noqa: F401 - the seam, generated from the declarations

#: the kernel's interface version (adamkit_abi_version in fused_cpu.c)
ABI_VERSION = 4
#: the 8-bit code tables of state_format, in the kernel's kind order (signed, unsigned, upper), handed to it once
_CODE_TABLES = torch.cat([state_format.table(kind) for kind in state_format.KINDS]).contiguous()
#: the kernel's numbers of the storage formats and kinds
FORMATS = {"bfloat16": 0, "int8": 1}
KINDS = {kind: i for i, kind in enumerate(state_format.KINDS)}

DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
STATE_DTYPE = {torch.float32: torch.float32, torch.float64: torch.float64,
               torch.float16: torch.float32, torch.bfloat16: torch.float32}

#: below this many elements per thread a call runs on one thread
GRAIN = 32768

#: the environment variable that chooses a build: a variant of :func:`cpu_variants.variants` (one this CPU
#: runs), "native" (built on first use with -march=native) or "auto" (unset: the highest variant this CPU runs)
VARIANT_ENV = "ADAMKIT_KERNEL_VARIANT"
#: the prebuilt libraries of a wheel (absent in a source checkout)
PREBUILT = Path(__file__).with_name(cpu_variants.PREBUILT_DIR)
#: how a build came to be: prebuilt in the wheel, or compiled on first use into the cache
PREBUILT_ORIGIN, FIRST_USE_ORIGIN = "prebuilt", "built on first use"


class FusedKernelUnavailable(RuntimeError):
    """The fused CPU kernel could not be built or loaded here."""


class Unsupported(TypeError):
    """Tensors the fused kernel does not step (raised before any tensor is written)."""


@dataclass(frozen=True)
class KernelBuild:
    """One loaded build of the kernel: its variant, where it came from (:data:`PREBUILT_ORIGIN` or
    :data:`FIRST_USE_ORIGIN`), its file, and its threads ("pthreads": the kernel's own pool)."""

    variant: str
    origin: str
    path: Path
    threads: str


_lock = threading.RLock()
_lib = None
_build_info: KernelBuild | None = None
_error: str | None = None
#: every build this process opened, by variant: (library, KernelBuild)
_opened: dict[str, tuple] = {}
_warned_prebuilt = False


cache_dir = native_build.cache_dir
STALE_AFTER_S = native_build.STALE_AFTER_S


def _compiler() -> str | None:
    return native_build.find_compiler("CC", ["cc", "gcc", "clang"])


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
    """The verified first-use build of ``variant`` for compiler ``cc`` (:func:`native_build.build`), compiled
    if needed; its key covers the source, the compiler, the flags, the machine and, for -march=native, the
    host."""
    source = SOURCE.read_bytes()

    def key(flags: list[str]) -> str:
        native = any(f.endswith("=native") for f in flags)
        return hashlib.sha256(
            b"\0".join([source, cc.encode(), " ".join(flags).encode(), platform.machine().encode(),
                        platform.node().encode() if native else b""])
        ).hexdigest()[:20]

    return native_build.build(
        "fused_cpu", _flag_sets(variant), key, lambda flags, out: cpu_variants.command(cc, flags, str(SOURCE), out),
        FusedKernelUnavailable, "the C compiler", timeout=300,
        after=lambda directory, target: prune_cache(directory, keep=target))


def prune_cache(directory: Path, keep: Path | None = None, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove kernel builds (``fused_cpu-*.so``) unused for ``max_age_s`` and compiler leftovers of killed
    builds (``tmp*.so``, older than a day); returns what was removed. A build another process has loaded
    stays mapped in that process; a later process rebuilds it if it needs it."""
    return native_build.prune(directory, "fused_cpu-*.so", keep, max_age_s, leftovers=True)


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
    if SOURCE.exists() and _integrity.sha256_file(SOURCE) != built_from:
        raise FusedKernelUnavailable(f"the prebuilt kernel in {PREBUILT} was built from another {SOURCE.name} "
                                     "than this one (stale: rebuild the wheel, or remove that folder)")
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


def load():
    """The loaded kernel library; raises :class:`FusedKernelUnavailable` saying why there is none.

    The build is ``$ADAMKIT_KERNEL_VARIANT``'s, else the highest variant this CPU runs, falling back to lower
    ones where that one is neither prebuilt nor buildable here (say, a compiler without AVX-512)."""
    global _lib, _build_info, _error
    if os.environ.get("ADAMKIT_DISABLE_FUSED", "") not in ("", "0"):
        raise FusedKernelUnavailable("adamkit's fused CPU kernel is disabled by ADAMKIT_DISABLE_FUSED")
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:
            raise FusedKernelUnavailable(_error)
        try:
            if sys.platform == "win32":
                raise FusedKernelUnavailable("the fused CPU kernel is built for POSIX systems only")
            requested = _requested_variant()
            if requested is not None:
                lib, info = open_build(requested)
            else:
                errors = []
                for variant in _auto_variants():
                    try:
                        lib, info = open_build(variant)
                        break
                    except FusedKernelUnavailable as exc:
                        errors.append(str(exc))
                else:
                    raise FusedKernelUnavailable(errors[-1])
        except FusedKernelUnavailable as exc:
            _error = f"adamkit's fused CPU kernel is unavailable: {exc}"
            raise FusedKernelUnavailable(_error) from None
        _lib, _build_info = lib, info
        return lib


def loaded_build() -> KernelBuild:
    """The build :func:`load` uses: its variant, origin (prebuilt or built on first use), file and threads."""
    load()
    return _build_info


@contextlib.contextmanager
def using(variant: str):
    """Step with another build within the block (tests, ``adamkit speed --kernels``; not thread-safe)."""
    global _lib, _build_info
    load()
    lib, info = open_build(variant)
    saved = _lib, _build_info
    _lib, _build_info = lib, info
    try:
        yield info
    finally:
        _lib, _build_info = saved


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
        f"{_error or 'adamkit fused CPU kernel is unavailable'}. adamkit's optimizers step with the per-tensor "
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




def supports(tensors: Sequence[Tensor]) -> bool:
    """Whether the fused kernel steps parameters like these (CPU, a supported real or complex dtype)."""
    t = tensors[0]
    dtype = t.dtype
    if dtype.is_complex:
        dtype = torch.view_as_real(t).dtype
    return t.device.type == "cpu" and dtype in DTYPES


# ---------------------------------------------------------------- layout
def _dense_strides(t: Tensor) -> bool:
    """True when ``t`` covers its memory densely without overlap (any dimension order)."""
    dims = sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _check_column(name, col, shapes, dtype):
    if any(t.dtype != dtype for t in col):
        bad = next(t.dtype for t in col if t.dtype != dtype)
        raise Unsupported(
            f"fused kernel: {name} is {bad} but {dtype} is needed here (the parameter's math dtype; "
            "load_state_dict casts a checkpoint's state to it, a state set by hand must be cast too)"
        )
    if [t.shape for t in col] != shapes:  # the kernel trusts the sizes, and the reference path the shapes
        k = next(i for i, (t, s) in enumerate(zip(col, shapes)) if t.shape != s)
        raise RuntimeError(f"fused kernel: {name} has shape {tuple(col[k].shape)}, its parameter {tuple(shapes[k])}")


def _param_seeds(rounding: "state_format.ParamRounding | None", param_dtype: torch.dtype, count: int):
    """The kernel's ``param_seeds`` argument: None (round to nearest), or the bucket's rounding seeds (uint32)
    for stochastic rounding of bfloat16 or float16 parameters."""
    if rounding is None:
        return None
    if param_dtype not in state_format.ROUNDED_PARAM_DTYPES:
        raise Unsupported(f"fused kernel: stochastic rounding writes bfloat16 or float16 parameters, not {param_dtype}")
    if len(rounding.seeds) != count:
        raise Unsupported(f"fused kernel: {len(rounding.seeds)} rounding seeds for {count} parameters")
    return (ctypes.c_uint32 * count)(*(int(x) & 0xFFFFFFFF for x in rounding.seeds))


def _same_order(a: tuple, b: tuple, shape) -> bool:
    """Whether two dense layouts of ``shape`` (strides ``a`` and ``b``) put the elements in one memory order."""
    return all(x == y for x, y, n in zip(a, b, shape) if n != 1)


def _flat(p: Tensor, g: Tensor, ss: list, writeback: list, memory_order: bool = True):
    """Same-layout dense versions of one parameter's tensors (copies where needed, noted in writeback);
    ``memory_order`` False: row-major copies of a dense parameter too."""
    if memory_order and _dense_strides(p):  # e.g. channels_last: step the memory as it lies, if the others share the layout
        stride = p.stride()
        if g.stride() != stride:
            g = torch.empty_like(p, dtype=g.dtype).copy_(g)  # a same-layout read-only copy
        fixed = []
        for s in ss:
            if s is not None and s.stride() != stride:
                work = torch.empty_like(p, dtype=s.dtype).copy_(s)
                writeback.append((s, work))
                s = work
            fixed.append(s)
        return p, g, fixed
    # overlapping or gapped parameter: step contiguous copies and write them back
    work = p.contiguous()
    writeback.append((p, work))
    fixed = []
    for s in ss:
        if s is not None and not s.is_contiguous():
            copy = s.contiguous()
            writeback.append((s, copy))
            s = copy
        fixed.append(s)
    return work, g.contiguous(), fixed


def launch(call: "KernelCall", params: list[Tensor], grads: list[Tensor], states: dict[str, list[Tensor]],
           storage: "state_format.Storage | None" = None, storage_names: tuple | None = None,
           rounding: "state_format.ParamRounding | None" = None):
    """Step ``params`` in place with one kernel call (see the module docstring); with ``storage``, returns the
    kernel arguments it used (:func:`launch_low_precision`).

    ``call.names`` are the state slots the kernel reads, in order; None marks an unused slot.
    ``storage`` (with ``storage_names``, the state names its ``kinds`` and ``slots`` follow) says how the state
    tensors are stored when they are not float32 (:func:`launch_low_precision`). ``rounding``: bfloat16 or
    float16 parameters are written with ``state_format.round_param``'s stochastic rounding (:func:`_param_seeds`).
    Every check happens before any tensor is written (:class:`Unsupported` otherwise).
    """
    if storage is not None:
        return launch_low_precision(call, params, grads, states, storage, storage_names, rounding)
    algorithm, names, scalars, flags = call
    lib = load()
    if not params:
        return
    first = params[0]
    if first.device.type != "cpu":
        raise Unsupported(f"the fused CPU kernel got a tensor on {first.device}")
    columns = [states[n] if n is not None else None for n in names]
    if first.is_complex():
        params = [torch.view_as_real(p) for p in params]
        grads = [torch.view_as_real(g) for g in grads]
        columns = [None if col is None else [torch.view_as_real(s) for s in col] for col in columns]
    param_dtype = params[0].dtype
    if param_dtype not in DTYPES:
        raise Unsupported(f"the fused CPU kernel supports float32/float64/float16/bfloat16, got {first.dtype}")
    state_dtype = STATE_DTYPE[param_dtype]
    count = len(params)
    numels = [p.numel() for p in params]
    shapes = [p.shape for p in params]
    _check_column("a parameter", params, shapes, param_dtype)
    _check_column("a gradient", grads, shapes, param_dtype)
    for name, col in zip(names, columns):
        if col is not None:
            _check_column(f"state '{name}'", col, shapes, state_dtype)
    param_seeds = _param_seeds(rounding, param_dtype, count)
    writeback: list = []
    used = [col for col in columns if col is not None]
    if not (all(p.is_contiguous() for p in params) and all(g.is_contiguous() for g in grads)
            and all(s.is_contiguous() for col in used for s in col)):
        params, grads, columns = list(params), list(grads), [None if c is None else list(c) for c in columns]
        for i in range(count):
            ss = [None if col is None else col[i] for col in columns]
            if params[i].is_contiguous() and grads[i].is_contiguous() and all(
                s is None or s.is_contiguous() for s in ss
            ):
                continue
            # stochastic rounding numbers a parameter's elements in its memory order only where its state is
            # laid out alike (state_format.in_memory_order): otherwise a row-major copy is stepped
            memory_order = param_seeds is None or state_format.in_memory_order(params[i])
            params[i], grads[i], ss = _flat(params[i], grads[i], ss, writeback, memory_order)
            for col, s in zip(columns, ss):
                if col is not None:
                    col[i] = s
    n_states = len(names)
    ptrs = (ctypes.c_void_p * (count * (2 + n_states)))()
    ptrs[0:count] = [p.data_ptr() for p in params]
    ptrs[count:2 * count] = [g.data_ptr() for g in grads]
    for k, col in enumerate(columns):
        if col is not None:
            ptrs[(2 + k) * count:(3 + k) * count] = [s.data_ptr() for s in col]
    numel = (ctypes.c_int64 * count)(*numels)
    sc = (ctypes.c_double * 16)(*scalars)
    base = ctypes.addressof(ptrs)
    size = ctypes.sizeof(ctypes.c_void_p)
    rc = lib.adamkit_step(
        ALGORITHMS[algorithm], DTYPES[param_dtype], count, numel, base, base + count * size,
        base + 2 * count * size, n_states, sc, flags, torch.get_num_threads(), GRAIN,
        param_seeds, 0 if rounding is None else int(rounding.step),
    )
    if rc != 0:  # pragma: no cover - the checks above make this unreachable
        raise RuntimeError(f"adamkit fused kernel failed with code {rc}")
    for dst, src in writeback:
        dst.copy_(src)


#: parameter dtypes whose state a low-precision format can hold (float32 math)
LOW_PRECISION_PARAMS = (torch.float32, torch.float16, torch.bfloat16)


def _state_dtype_error(message: str) -> Unsupported:
    return Unsupported(f"fused kernel, state_dtype: {message}")


def launch_low_precision(call: "KernelCall", params: list[Tensor], grads: list[Tensor],
                         states: dict[str, list[Tensor]], storage: "state_format.Storage",
                         storage_names: tuple | None = None,
                         rounding: "state_format.ParamRounding | None" = None) -> "_LowPrecisionArgs | None":
    """One kernel call for a bucket whose state is stored in bfloat16 or as 8-bit codes (``storage.format``);
    returns its arguments (for :meth:`StoredLaunch.build`), None for an empty bucket.

    The kernel decodes each block of a state tensor (an int8 block of at most ``state_format.BLOCK``
    elements within a row, or 256 elements of bfloat16) into a small buffer, runs the float32 update on it
    and encodes it back, rounding as :mod:`adamkit.core.state_format` does with the bits of
    ``stream_key(storage.seeds[i], storage.step, storage.slots[k])`` at each element's position in the memory
    of its state tensor: no float32 copy of a state tensor is made. In a bucket of format "int8", tensors
    whose state is bfloat16 (vectors) are stepped in the same call. Parameters and gradients are stepped in
    the layout of their state tensors (copies where theirs differs); state tensors must cover their memory
    densely, all of one parameter in one layout, and int8 codes keep dim 0 outermost (as the engine creates
    them). ``rounding``: as :func:`launch`'s (a parameter's elements are numbered in its state's layout, which
    must then be the one the engine gives it, ``state_format.layout_like``). Every check happens before any
    tensor is written (:class:`Unsupported` otherwise).
    """
    if not params:
        return None
    args = _low_precision_args(call, params, grads, states, storage, storage_names, rounding)
    args.launch(call.scalars, call.flags, storage.step)
    for dst, src in args.writeback:
        dst.copy_(src)
    return args


class _LowPrecisionArgs:
    """The kernel's arguments for one bucket of low-precision state, but the step's scalars: its pointer
    table (parameters, gradients, state tensors, scales), element counts, row lengths, kinds, slots and
    rounding seeds, with the copies to write back (tensors stepped in another layout)."""

    __slots__ = ("algorithm", "dtype", "count", "n_states", "ptrs", "scale_ptrs", "numel", "row", "kinds",
                 "slots", "seeds", "writeback", "tensors", "param_seeds")

    def launch(self, scalars, flags: int, step: int) -> None:
        sc = (ctypes.c_double * 16)(*scalars)
        base = ctypes.addressof(self.ptrs)
        size = ctypes.sizeof(ctypes.c_void_p)
        count = self.count
        rc = load().adamkit_step_lowp(
            ALGORITHMS[self.algorithm], self.dtype, count, self.numel, base, base + count * size,
            base + 2 * count * size, self.n_states, sc, flags, torch.get_num_threads(), GRAIN,
            self.row, self.scale_ptrs, self.kinds, self.slots, self.seeds, int(step), self.param_seeds,
        )
        if rc != 0:  # pragma: no cover - the checks of _low_precision_args make this unreachable
            raise RuntimeError(f"adamkit fused kernel failed with code {rc}")


def _low_precision_args(call: "KernelCall", params: list[Tensor], grads: list[Tensor],
                        states: dict[str, list[Tensor]], storage: "state_format.Storage",
                        storage_names: tuple | None,
                        rounding: "state_format.ParamRounding | None" = None) -> _LowPrecisionArgs:
    """The checked arguments of :func:`launch_low_precision` (writes nothing; :class:`Unsupported` otherwise)."""
    algorithm, names, scalars, flags = call
    load()
    if storage.format not in FORMATS:
        raise _state_dtype_error(f"the kernel steps bfloat16 and int8 state, not {storage.format!r}")
    first = params[0]
    if first.device.type != "cpu":
        raise Unsupported(f"the fused CPU kernel got a tensor on {first.device}")
    param_dtype = first.dtype
    if param_dtype not in LOW_PRECISION_PARAMS:
        raise _state_dtype_error(f"low-precision state is for float32-math parameters "
                                 f"(float32, float16, bfloat16), got {param_dtype}")
    given = tuple(storage_names) if storage_names is not None else tuple(states)
    count = len(params)
    shapes = [p.shape for p in params]
    _check_column("a parameter", params, shapes, param_dtype)
    _check_column("a gradient", grads, shapes, param_dtype)
    param_seeds = _param_seeds(rounding, param_dtype, count)
    n_states = len(names)
    kinds = (ctypes.c_int32 * max(1, n_states))()
    slots = (ctypes.c_int32 * max(1, n_states))()
    used = []
    for k, name in enumerate(names):
        if name is None:
            kinds[k] = -1
            continue
        if name not in given:
            raise _state_dtype_error(f"no storage kind given for state '{name}'")
        j = given.index(name)
        kind = storage.kinds[j]
        if kind not in KINDS:
            raise _state_dtype_error(f"state '{name}' has kind {kind!r}; the kernel rounds {tuple(KINDS)}")
        kinds[k], slots[k] = KINDS[kind], storage.slots[j]
        used.append((k, name, states[name]))
    rows = [0] * count
    scale_cols = {k: [None] * count for k, _, _ in used}
    params, grads = list(params), list(grads)
    columns = {k: list(col) for k, _, col in used}
    writeback: list = []
    for i in range(count):
        p = params[i]
        layout = None
        fmt = None
        for k, name, col in used:
            s = col[i]
            if s.shape != shapes[i]:
                raise RuntimeError(f"fused kernel: state '{name}' has shape {tuple(s.shape)}, "
                                   f"its parameter {tuple(shapes[i])}")
            this = {torch.bfloat16: "bfloat16", torch.uint8: "int8"}.get(s.dtype)
            if this is None or (this == "int8" and storage.format != "int8"):
                raise _state_dtype_error(f"state '{name}' is {s.dtype}, not the storage of a "
                                         f"{storage.format} state (load_state_dict or the conversion call "
                                         "keeps it so; a state set by hand must be too)")
            if fmt is not None and this != fmt:
                raise _state_dtype_error("the states of one parameter are stored in different formats")
            fmt = this
            if not _dense_strides(s) or (layout is not None and s.stride() != layout):
                raise _state_dtype_error(f"state '{name}' does not cover its memory densely in the layout "
                                         "of the parameter's other state tensors")
            layout = s.stride()
            if this == "int8":
                numel = s.numel()
                if s.dim() < 2:
                    raise _state_dtype_error(f"int8 state '{name}' needs two or more dimensions")
                if numel and s.shape[0] > 1 and s.stride(0) != numel // s.shape[0]:
                    raise _state_dtype_error(f"int8 state '{name}' must keep dim 0 outermost in memory")
                rows[i] = numel // s.shape[0] if numel else 0
                try:
                    scales = storage.scales[name][i]
                except (KeyError, IndexError, TypeError):
                    raise _state_dtype_error(f"no scales given for int8 state '{name}'") from None
                expected = state_format.scale_shape(s.shape)
                if scales.dtype != torch.float32 or tuple(scales.shape) != expected:
                    raise _state_dtype_error(f"the scales of int8 state '{name}' are {scales.dtype} "
                                             f"{tuple(scales.shape)}, expected float32 {expected}")
                if not scales.is_contiguous():
                    work = scales.contiguous()
                    writeback.append((scales, work))
                    scales = work
                scale_cols[k][i] = scales
        if layout is None:
            continue
        if param_seeds is not None and not _same_order(layout, torch.empty_like(
                p, device="meta", **state_format.layout_like(p)).stride(), p.shape):
            raise _state_dtype_error("stochastic parameter rounding numbers the elements in the layout the "
                                     "engine gives the state (state_format.layout_like); this state has another")
        if p.stride() != layout or not _dense_strides(p):
            work = torch.empty_like(columns[used[0][0]][i], dtype=p.dtype).copy_(p)
            writeback.append((p, work))
            params[i] = work
        if grads[i].stride() != layout:
            grads[i] = torch.empty_like(columns[used[0][0]][i], dtype=grads[i].dtype).copy_(grads[i])
    seeds = storage.seeds
    if len(seeds) != count:
        raise _state_dtype_error(f"{len(seeds)} rounding seeds for {count} tensors")
    args = _LowPrecisionArgs()
    args.algorithm, args.dtype, args.count, args.n_states = algorithm, DTYPES[param_dtype], count, n_states
    args.ptrs = ptrs = (ctypes.c_void_p * (count * (2 + n_states)))()
    args.scale_ptrs = scale_ptrs = (ctypes.c_void_p * max(1, count * n_states))()
    ptrs[0:count] = [p.data_ptr() for p in params]
    ptrs[count:2 * count] = [g.data_ptr() for g in grads]
    for k, _, _ in used:
        ptrs[(2 + k) * count:(3 + k) * count] = [s.data_ptr() for s in columns[k]]
        scale_ptrs[k * count:(k + 1) * count] = [None if s is None else s.data_ptr() for s in scale_cols[k]]
    args.numel = (ctypes.c_int64 * count)(*(p.numel() for p in params))
    args.row = (ctypes.c_int64 * count)(*rows)
    args.seeds = (ctypes.c_uint32 * count)(*(int(x) & 0xFFFFFFFF for x in seeds))
    args.kinds, args.slots, args.writeback = kinds, slots, writeback
    args.param_seeds = param_seeds
    args.tensors = (params, grads)  # the copies made here stay allocated while their pointers are in use
    return args


_DTYPE_OF = operator.attrgetter("dtype")
_GRAD = operator.attrgetter("grad")
_STEP = operator.itemgetter("step")
_DATA_PTR = Tensor.data_ptr


class CachedLaunch:
    """The kernel's pointer table for one bucket, kept between steps.

    For a group of plain contiguous CPU tensors the pointers of the parameters
    and of the state tensors stay the same from step to step; only the
    gradients change. Rebuilding the table costs a few microseconds per tensor,
    which for thousands of small tensors is most of a step, so the engine keeps
    one of these and, each step, checks that it still applies (:meth:`check`)
    before one kernel call (:meth:`launch`).

    Memory safety: the table holds the storages its pointers point into, so
    that memory stays allocated while the table exists, and each step it
    compares the current data pointers of every parameter and state tensor
    with the kept ones (C-level ``map`` over the tensors; for groups of
    ``fused_check.MIN_TENSORS`` or more, one native pass, :mod:`.fused_check`,
    which also checks their dtypes and shapes). A tensor whose
    storage was swapped (``p.data = ...``, ``state["exp_avg"].data = ...``, a
    new state tensor) has another pointer (no new allocation can start where a
    kept storage lies), so the table is not used and the general path steps
    the new tensors and rebuilds it.
    """

    def __init__(self, names: tuple, params: list[Tensor], states: dict[str, list[Tensor]], state_dicts: list[dict]):
        self.names = names
        self.count = count = len(params)
        self.param_ptrs = list(map(_DATA_PTR, params))
        self.state_dicts = list(state_dicts)  # the per-parameter state dicts the state tensors are found in
        self.state_changes = None  # the owner's count of changes of opt.state when the table was built
        self.shapes = list(map(Tensor.size, params))  # a gradient of another shape, even of the same size, is refused
        # (item getter, pointers, dtype, shapes) of each state column the kernel reads (see _check_kept)
        self.columns = [(operator.itemgetter(name), list(map(_DATA_PTR, states[name])), states[name][0].dtype,
                         self.shapes) for name in names if name is not None]
        # the memory the pointers point into stays allocated while the table exists
        self._storages = [list(map(Tensor.untyped_storage, params))] + [
            list(map(Tensor.untyped_storage, states[name])) for name in names if name is not None]
        self.numel = (ctypes.c_int64 * count)(*map(Tensor.numel, params))
        self.torch_dtype = params[0].dtype
        self.dtype = DTYPES[params[0].dtype]
        self.ptrs = (ctypes.c_void_p * (count * (2 + len(names))))()
        self.ptrs[0:count] = self.param_ptrs
        for k, name in enumerate(names):
            if name is not None:
                self.ptrs[(2 + k) * count:(3 + k) * count] = list(map(_DATA_PTR, states[name]))
        # groups of many tensors are checked in native code (fused_check), which writes the gradients'
        # pointers straight into self.ptrs; None: the Python check below
        self.native = None
        from . import fused_check  # noqa: PLC0415 - it imports this module
        if count >= fused_check.MIN_TENSORS and (lib := fused_check.native(
                loaded_build().origin == FIRST_USE_ORIGIN, parallel_run_address())) is not None:
            grad_slots = ctypes.addressof(self.ptrs) + count * ctypes.sizeof(ctypes.c_void_p)
            try:
                self.native = fused_check.NativeCheck(lib, names, params, states, grad_slots)
            except fused_check.NativeCheckUnavailable:
                pass

    @staticmethod
    def eligible(names: tuple, params: list[Tensor], states: dict[str, list[Tensor]]) -> bool:
        """Whether a table can stand for these tensors: contiguous, real, the kernel's dtypes, on the CPU."""
        if not params or params[0].device.type != "cpu" or params[0].dtype not in DTYPES:
            return False
        dtype, state_dtype = params[0].dtype, STATE_DTYPE[params[0].dtype]
        if any(type(p) is not torch.Tensor and type(p) is not torch.nn.Parameter for p in params):
            return False  # tensor subclasses (DTensor, ...) take the general path
        if not all(p.dtype == dtype and p.is_contiguous() for p in params):
            return False
        for name in names:
            if name is not None and not all(
                type(s) is torch.Tensor and s.dtype == state_dtype and s.is_contiguous() and s.shape == p.shape
                for s, p in zip(states[name], params)
            ):
                return False
        return True

    def check(self, names: tuple, params: list[Tensor], state_dicts: list[dict]) -> tuple | None:
        """The step count and the gradients' pointers if the table still applies to these tensors, else None.

        Writes nothing. It applies while the state dicts, the parameters' and the state tensors' storages are
        the ones the table points at (contiguous, of the kept dtypes and shapes), every parameter has one step
        count, and every gradient is a dense contiguous tensor of its parameter's shape and dtype (torch checks
        assigned gradients, but
        ``p.grad.data = ...`` goes around it; the general path then raises, naming the parameter).
        """
        if names != self.names or len(params) != self.count:
            return None
        if state_dicts is not self.state_dicts and not all(map(operator.is_, state_dicts, self.state_dicts)):
            return None
        if self.native is not None and type(params) is list:
            # the same conditions, checked per tensor in C++ (fused_check.cpp): each parameter's storage,
            # dtype, shape and contiguity, each gradient's, each state tensor's, and one step count (an int);
            # the gradients' pointers are then already in self.ptrs
            step = self.native(params, self.state_dicts)
            return None if step is None else (step, None)
        return _check_kept(params, state_dicts, self.param_ptrs, self.torch_dtype, self.shapes, self.columns)

    def launch(self, call: "KernelCall", grad_ptrs: list[int]) -> None:
        """One kernel call with the gradients :meth:`check` accepted (call it right after that check;
        ``grad_ptrs`` None: the native check wrote them into the table)."""
        count = self.count
        if grad_ptrs is not None:
            self.ptrs[count:2 * count] = grad_ptrs
        sc = (ctypes.c_double * 16)(*call.scalars)
        base = ctypes.addressof(self.ptrs)
        size = ctypes.sizeof(ctypes.c_void_p)
        rc = load().adamkit_step(
            ALGORITHMS[call.algorithm], self.dtype, count, self.numel, base, base + count * size,
            base + 2 * count * size, len(self.names), sc, call.flags, torch.get_num_threads(), GRAIN, None, 0,
        )
        if rc != 0:  # pragma: no cover - eligible() and check() make this unreachable
            raise RuntimeError(f"adamkit fused kernel failed with code {rc}")


_SEED = operator.itemgetter("rounding_seed")
_PLAIN = (torch.Tensor, torch.nn.Parameter)


class StoredLaunch:
    """The kernel's arguments for one bucket of low-precision state (bfloat16, or int8 codes with their scales),
    kept between steps as :class:`CachedLaunch` keeps a float32 bucket's table.

    Built (:meth:`build`) after a step of plain contiguous CPU tensors the kernel stepped without copies. Each
    step :meth:`check` compares the current parameters', state tensors' and scales' data pointers, dtypes,
    shapes and contiguity with the kept ones (C-level ``map`` over the tensors), and the state dicts' rounding
    seeds and step counts; only the gradients' pointers are then new. The table holds the storages its
    pointers point into, so that memory stays allocated while it exists.
    """

    def __init__(self, call: "KernelCall", params: list[Tensor], states: dict[str, list[Tensor]],
                 scales: dict[str, list[Tensor]], state_dicts: list[dict], args: "_LowPrecisionArgs"):
        self.names = call.names
        self.args = args
        self.count = len(params)
        self.params = list(params)
        self.state_dicts = list(state_dicts)
        self.param_ptrs = list(map(_DATA_PTR, params))
        self.shapes = list(map(Tensor.size, params))
        self.torch_dtype = params[0].dtype
        self.seeds = list(map(_SEED, state_dicts))
        # (item getter, pointers, dtype, shapes) of each stored column the kernel reads: codes or bfloat16
        # tensors (the parameters' shapes), and int8 scales (their own shapes)
        self.columns = []
        for name in (n for n in call.names if n is not None):
            col = states[name]
            self.columns.append((operator.itemgetter(name), list(map(_DATA_PTR, col)), col[0].dtype, self.shapes))
            if name in scales:
                sc = scales[name]
                self.columns.append((operator.itemgetter(state_format.scale_name(name)), list(map(_DATA_PTR, sc)),
                                     torch.float32, list(map(Tensor.size, sc))))
        self._storages = [list(map(Tensor.untyped_storage, params))] + [
            list(map(Tensor.untyped_storage, map(get, state_dicts))) for get, _, _, _ in self.columns]

    @classmethod
    def build(cls, call: "KernelCall", params: list[Tensor], grads: list[Tensor], states: dict[str, list[Tensor]],
              storage: "state_format.Storage", state_dicts: list[dict],
              args: "_LowPrecisionArgs | None") -> "StoredLaunch | None":
        """The kept table of a bucket the kernel just stepped with ``args`` (what :func:`launch_low_precision`
        returned), or None where one cannot stand for it."""
        if args is None or None in state_dicts:  # local tensors of DTensor parameters: not the optimizer's keys
            return None
        used = [n for n in call.names if n is not None]
        scales = {n: storage.scales[n] for n in used if n in storage.scales}
        cols = [states[n] for n in used] + list(scales.values())
        if params[0].device.type != "cpu" or args.writeback or any(
                type(t) not in _PLAIN or not t.is_contiguous() for t in (*params, *grads, *(x for c in cols for x in c))):
            return None
        args.tensors = None  # no copies: the table keeps the storages it points into, not the first gradients
        return cls(call, params, states, scales, state_dicts, args)

    def check(self) -> tuple | None:
        """The step count and the gradients' pointers if the table still applies to its parameters (the caller
        checks that they are still the group's), else None (writes nothing)."""
        params, dicts = self.params, self.state_dicts
        try:
            if list(map(_SEED, dicts)) != self.seeds:
                return None
        except (TypeError, KeyError):
            return None
        return _check_kept(params, dicts, self.param_ptrs, self.torch_dtype, self.shapes, self.columns)

    def launch(self, call: "KernelCall", grad_ptrs: list[int], step: int) -> None:
        """One kernel call with the gradients :meth:`check` accepted (call it right after that check)."""
        self.args.ptrs[self.count:2 * self.count] = grad_ptrs
        self.args.launch(call.scalars, call.flags, step)


def _check_kept(params: list[Tensor], state_dicts: list[dict], param_ptrs: list[int], dtype: torch.dtype,
                shapes: list, columns: list) -> tuple | None:
    """The Python check of a kept table (:class:`CachedLaunch`, :class:`StoredLaunch`): the step count and the
    gradients' pointers while the parameters' pointers are ``param_ptrs`` and each column of ``columns``
    (item getter, pointers, dtype, shapes) is what it was, all contiguous and of their kept dtypes and shapes,
    every state dict has one step count, and every gradient is a dense contiguous tensor of its parameter's
    shape and dtype; else None (writes nothing). A same-storage view of another dtype, shape or order
    (``p.data = p.data.t()``, ...) keeps the pointer: the layout is compared too."""
    try:
        if list(map(_DATA_PTR, params)) != param_ptrs or not _same_layout(params, dtype, shapes):
            return None
        for get, ptrs, col_dtype, col_shapes in columns:
            col = list(map(get, state_dicts))
            if list(map(_DATA_PTR, col)) != ptrs or not _same_layout(col, col_dtype, col_shapes):
                return None
        steps = set(map(_STEP, state_dicts))
        grads = list(map(_GRAD, params))
        grad_ptrs = list(map(_DATA_PTR, grads))  # None or a tensor without storage (sparse) raise here
        if not _same_layout(grads, dtype, shapes):
            return None
    except (TypeError, RuntimeError, KeyError, AttributeError):
        return None
    if len(steps) != 1:
        return None
    return steps.pop(), grad_ptrs


def _same_layout(col: list[Tensor], dtype: torch.dtype, shapes: list) -> bool:
    """Every tensor of ``col`` contiguous, of ``dtype`` and of the kept shapes."""
    return (all(map(Tensor.is_contiguous, col)) and set(map(_DTYPE_OF, col)) == {dtype}
            and list(map(Tensor.size, col)) == shapes)


def encode(x: Tensor, format: str, kind: str, key: int) -> tuple[Tensor, Tensor | None]:
    """The kernel's rounding of given float32 values, for tests: ``x`` encoded as the kernel's step encodes.

    ``format`` "bfloat16" returns (bfloat16 tensor, None), like ``state_format.encode_bfloat16``; "int8" returns
    (uint8 codes, float32 scales) of a tensor of two or more dimensions, like ``state_format.quantize_int8``.
    ``x`` is read in its contiguous layout (row-major memory order).
    """
    if x.dtype != torch.float32:
        raise TypeError(f"encode takes a float32 tensor, got {x.dtype}")
    lib = load()
    work = x.contiguous().clone()  # the kernel clamps in place
    if format == "bfloat16":
        out = torch.empty_like(work, dtype=torch.bfloat16)
        rows, row, scales, scale_ptr = 1, work.numel(), None, None
    elif format == "int8":
        out = torch.empty_like(work, dtype=torch.uint8)
        rows, row = state_format.scale_shape(work.shape)[0], work.numel() // max(1, work.shape[0])
        scales = torch.empty(state_format.scale_shape(work.shape), dtype=torch.float32)
        scale_ptr = scales.data_ptr()
    else:
        raise ValueError(f'format must be "bfloat16" or "int8", got {format!r}')
    rc = lib.adamkit_encode(FORMATS[format], KINDS[kind], rows, row, work.data_ptr(), out.data_ptr(), scale_ptr,
                            key & 0xFFFFFFFF)
    if rc != 0:
        raise RuntimeError(f"adamkit_encode failed with code {rc}")
    return out, scales


def decode(codes: Tensor, scales: Tensor, kind: str) -> Tensor:
    """The kernel's float32 values of int8 codes (contiguous, two or more dimensions), for tests: as
    ``state_format.dequantize_int8``."""
    lib = load()
    codes = codes.contiguous()
    scales = scales.contiguous().float()
    out = torch.empty_like(codes, dtype=torch.float32)
    rows = codes.shape[0]
    rc = lib.adamkit_decode(KINDS[kind], rows, codes.numel() // max(1, rows), codes.data_ptr(), scales.data_ptr(),
                            out.data_ptr())
    if rc != 0:
        raise RuntimeError(f"adamkit_decode failed with code {rc}")
    return out
