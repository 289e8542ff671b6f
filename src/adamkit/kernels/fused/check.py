"""The kept pointer table's per-step check, in native code (``check.cpp``).

:class:`adamkit.kernels.fused.kept.CachedLaunch` decides each step whether the
table it kept still applies: the same state dicts, parameter and state storages,
one step count, every gradient a dense contiguous tensor of its parameter's
shape and dtype. In Python that is nine C-level passes over the tensors through
torch's bindings, about 3 µs a tensor a step: for 2,000 small tensors (6 ms) as
long as the kernel call itself. :class:`NativeCheck` does the same walk in C++,
reading the tensors' C++ objects (0.2-0.4 µs a tensor, cache misses included)
and writing the gradients' pointers straight into the table. The Python objects
(types, the state dicts' entries) are read on the calling thread, which holds
the GIL; the C++ objects behind them, most of the memory the check waits for,
are read on up to ``torch.get_num_threads()`` threads of the fused kernel's
own pool (no OpenMP), each on its own share of at least 128 tensors.

It reads torch's internals, so no wheel can ship it: it is an optional build
on first use. ``ADAMKIT_NATIVE_CHECK=1`` opts in, ``ADAMKIT_NATIVE_CHECK=0``
(or ``ADAMKIT_DISABLE_NATIVE_CHECK=1``) opts out; unset, it is used where the
kernel itself was built on first use (a source checkout, where a compiler is
at hand), and the Python check where the kernel came prebuilt in a wheel
(:func:`enabled`). It is built for a group of at least :data:`MIN_TENSORS` tensors
(smaller groups gain too little to pay a build) with the system C++ compiler
(``$CXX``, else ``c++``/``g++``/``clang++``) against the installed torch's
headers (``ATen/core/Tensor.h``, about 5 s; no network, no pybind11) and linked
to its ``libc10``. The build is cached beside the fused kernel's
(:func:`adamkit.kernels.fused.build.cache_dir`), keyed by the source, the
compiler, its flags, torch's and Python's versions, and verified against its
integrity record before every load, as the kernel is.

Where it is wanted but cannot be built or loaded (no C++ compiler, no torch
headers, a torch whose Python tensor objects are laid out otherwise), the
Python check is used instead (correct, slower on many small tensors), and a
RuntimeWarning says so once per process, with the reason.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import sys
import sysconfig
import warnings
from pathlib import Path

import torch

from . import build

SOURCE = Path(__file__).with_name("check.cpp")

#: the native check's interface version (adamkit_check_abi_version in check.cpp)
ABI_VERSION = 3

#: groups with fewer tensors keep the Python check (a few µs a tensor: not worth a build of seconds); from
#: here on the native one pays (ResNet-18's 62 tensors: 0.32 ms a step in Python, 0.09 ms native)
MIN_TENSORS = 16

#: tried in order; the first that compiles is used
_FLAG_SETS = (["-std=c++20"], ["-std=c++17"])
#: the environment variable that opts in (1) or out (0) of the native check (:func:`enabled`)
ENV = "ADAMKIT_NATIVE_CHECK"
_BASE_FLAGS = ["-O2", "-fPIC", "-shared", "-fvisibility=hidden"]


class NativeCheckUnavailable(RuntimeError):
    """The native check could not be built or loaded here."""


_warned = False


def _compiler() -> str | None:
    return build.find_compiler("CXX", ["c++", "g++", "clang++"])


def _torch_flags() -> list[str]:
    """Include and link flags for the installed torch and Python (raises when a header is missing)."""
    root = Path(torch.__file__).parent
    include, lib = root / "include", root / "lib"
    python_include = sysconfig.get_paths().get("include") or ""
    if not (include / "ATen" / "core" / "Tensor.h").is_file():
        raise NativeCheckUnavailable(f"torch's C++ headers are not installed ({include}/ATen/core/Tensor.h is missing)")
    if not (Path(python_include) / "Python.h").is_file():
        raise NativeCheckUnavailable(f"Python's C headers are not installed (no Python.h in {python_include!r})")
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    return [f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{include}", f"-I{python_include}",
            f"-L{lib}", "-lc10", f"-Wl,-rpath,{lib}"]


def _key(source: bytes, cxx: str, flags: list[str]) -> str:
    parts = [source, cxx.encode(), " ".join(flags).encode(), torch.__version__.encode(),
             str(getattr(torch.version, "git_version", "")).encode(), sys.version.encode(), platform.machine().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]


def _build(cxx: str) -> Path:
    """The verified build of the check for compiler ``cxx`` (:func:`.build.cached_build`), compiled if needed."""
    source = SOURCE.read_bytes()
    torch_flags = _torch_flags()
    return build.cached_build(
        "fused_check", [_BASE_FLAGS + extra + torch_flags for extra in _FLAG_SETS],
        lambda flags: _key(source, cxx, flags),
        # the link flags (torch's libc10) after the source
        lambda flags, out: [cxx, *flags[:len(flags) - len(torch_flags)], str(SOURCE), "-o", out, *torch_flags],
        NativeCheckUnavailable, "the C++ compiler", timeout=300,
        after=lambda directory, target: prune(directory, keep=target))


def prune(directory: Path, keep: Path | None = None, max_age_s: float = build.STALE_AFTER_S) -> list[Path]:
    """Remove builds of this check (``fused_check-*.so``) unused for ``max_age_s``; returns what was removed.
    (Compiler leftovers, ``tmp*.so``, are removed with the kernel's: :func:`.build.prune_cache`.)"""
    return build.prune(directory, "fused_check-*.so", keep, max_age_s)


def _verify_layout(lib) -> None:
    """Refuse a torch whose Python tensor objects do not hold their tensor where the build reads it."""
    tensor_type, param_type = torch.Tensor, torch.nn.Parameter
    probes = [torch.zeros(3), torch.nn.Parameter(torch.zeros(2, 2)), torch.zeros(5)[1:], torch.zeros((), dtype=torch.float64)]
    for t in probes:
        cdata = getattr(t, "_cdata", None)
        if not isinstance(cdata, int) or lib.adamkit_check_impl(t, tensor_type, param_type) != cdata:
            raise NativeCheckUnavailable(f"torch {torch.__version__} lays out its Python tensor objects otherwise "
                                         "than this check reads them")
    if lib.adamkit_check_dtype(probes[0], tensor_type, param_type) == lib.adamkit_check_dtype(probes[3], tensor_type, param_type):
        raise NativeCheckUnavailable("the check cannot tell float32 from float64 tensors here")


def _open():
    """Build (on first use) and open the check, and verify that it reads this torch's tensors."""
    if sys.platform == "win32":
        raise NativeCheckUnavailable("it is built for POSIX systems only")
    cxx = _compiler()
    if cxx is None:
        raise NativeCheckUnavailable("no C++ compiler found (set $CXX, or install g++ or clang++)")
    lib = ctypes.PyDLL(str(_build(cxx)))  # PyDLL: called with the GIL held, Python errors propagate
    if lib.adamkit_check_abi_version() != ABI_VERSION:
        raise NativeCheckUnavailable("stale build in the cache (ABI mismatch)")
    obj = ctypes.py_object
    lib.adamkit_check_impl.restype = ctypes.c_ssize_t
    lib.adamkit_check_impl.argtypes = [obj, obj, obj]
    lib.adamkit_check_dtype.restype = ctypes.c_int64
    lib.adamkit_check_dtype.argtypes = [obj, obj, obj]
    lib.adamkit_check_table.restype = obj
    lib.adamkit_check_table.argtypes = [obj] * 6 + [ctypes.c_int64] + [ctypes.c_void_p] * 6 + [ctypes.c_int64]
    lib.adamkit_check_use_pool.restype = None
    lib.adamkit_check_use_pool.argtypes = [ctypes.c_void_p]
    lib.adamkit_check_set_steps.restype = ctypes.c_int
    lib.adamkit_check_set_steps.argtypes = [obj, obj, obj]
    _verify_layout(lib)
    return lib


#: the check, opened on first use (:class:`.build.Lazy`)
_library = build.Lazy(_open, NativeCheckUnavailable, "adamkit's native table check")


def load():
    """The loaded native check (built on first use); raises :class:`NativeCheckUnavailable` saying why."""
    return _library.get()


def enabled(kernel_built_here: bool) -> bool:
    """Whether the native check is wanted: ``$ADAMKIT_NATIVE_CHECK`` 1 or 0 (``ADAMKIT_DISABLE_NATIVE_CHECK=1``:
    0) where set, else where the fused kernel was built on first use (``kernel_built_here``: a source install,
    a compiler at hand) rather than prebuilt in a wheel."""
    value = os.environ.get(ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{ENV}={value!r}: set it to 1 (use the native table check) or 0 (the Python check)")
    if value:
        return value == "1"
    if os.environ.get("ADAMKIT_DISABLE_NATIVE_CHECK", "") not in ("", "0"):
        return False
    return kernel_built_here


def native(kernel_built_here: bool, pool: int):
    """The loaded check, or None (the Python check then runs): not wanted (:func:`enabled`), or unavailable
    (said once, with why). ``pool``: the address of the fused kernel's ``adamkit_parallel_run``, whose threads
    the check reads on (one thread pool in the process)."""
    global _warned
    if not enabled(kernel_built_here):
        return None
    try:
        lib = load()
        lib.adamkit_check_use_pool(pool)
        return lib
    except NativeCheckUnavailable as exc:
        if not _warned:
            _warned = True
            warnings.warn(
                f"{exc}. The fused kernel's kept pointer table is checked in Python instead: steps stay "
                "correct, about 3 µs a tensor slower (noticeable with thousands of small tensors); fix the "
                "cause above, or set ADAMKIT_NATIVE_CHECK=0 to choose the Python check and silence this",
                RuntimeWarning, stacklevel=5,
            )
        return None


class NativeCheck:
    """One table's check: what the table was built for, kept in arrays the native code compares with.

    ``grad_slots`` is the address of the table's ``count`` gradient pointers (written by a check that succeeds).
    The caller keeps the memory at ``grad_slots`` alive as long as this object.
    """

    def __init__(self, lib, names: tuple, params: list, states: dict, grad_slots: int):
        count = len(params)
        used = [n for n in names if n is not None]
        tensor_type, param_type = torch.Tensor, torch.nn.Parameter
        dtypes = [lib.adamkit_check_dtype(params[0], tensor_type, param_type)]
        dtypes += [lib.adamkit_check_dtype(states[n][0], tensor_type, param_type) for n in used]
        if min(dtypes) < 0:
            raise NativeCheckUnavailable("a tensor of the table is not a plain torch.Tensor")
        dims = [0]
        flat_sizes: list[int] = []
        for p in params:
            flat_sizes.extend(p.shape)
            dims.append(len(flat_sizes))
        i64 = ctypes.c_int64
        self._arrays = (
            (i64 * count)(*map(torch.Tensor.data_ptr, params)),
            (i64 * max(1, count * len(used)))(*[s.data_ptr() for n in used for s in states[n]]),
            (i64 * len(dtypes))(*dtypes),
            (i64 * (count + 1))(*dims),
            (i64 * max(1, len(flat_sizes)))(*flat_sizes),
        )
        self._args = (tuple(used), "step", tensor_type, param_type, count,
                      *map(ctypes.addressof, self._arrays), grad_slots)
        self._check = lib.adamkit_check_table
        self._set_steps = lib.adamkit_check_set_steps

    def __call__(self, params: list, state_dicts: list):
        """The common step count, with the gradients' pointers written into the table; None where it does not apply."""
        return self._check(params, state_dicts, *self._args, torch.get_num_threads())

    def set_steps(self, state_dicts: list, step: int) -> None:
        self._set_steps(state_dicts, "step", step)
