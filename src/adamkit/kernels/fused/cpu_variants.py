"""The builds of the fused C kernel (``kernel.c`` and the files it includes): its sources, its instruction-set
variants and their compiler flags.

One table serves both builds: the wheel's (``setup.py`` compiles every variant of the machine it builds
for into ``adamkit/kernels/fused/prebuilt/``) and the first-use build of a source install
(:mod:`adamkit.kernels.fused.build`). This module imports nothing but the standard library, because
``setup.py`` loads it by path, without torch.

On x86-64 there are three variants, the x86-64 instruction-set levels: ``baseline`` (x86-64, every such
CPU), ``avx2`` (x86-64-v3: AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE) and ``avx512`` (x86-64-v4: AVX-512
F/BW/CD/DQ/VL, where the compiler can); elsewhere one ``portable`` build with the compiler's defaults.
The loader runs the highest variant the CPU supports (``adamkit_cpu_level()`` of the baseline build says
which); ``$ADAMKIT_KERNEL_VARIANT`` chooses one (for tests), or ``native``: a first-use build with
``-march=native`` (the compiler's choice for this very CPU, never shipped).

Every variant computes the same bits: ``-ffp-contract=off`` keeps the compiler from fusing a multiply and
an add into an FMA (one rounding instead of two), ``-fno-fast-math`` is the default (no reassociation, no
reciprocal approximations), the kernel has no floating-point reductions (the int8 block maxima compare
bits as integers, an order-free maximum), and its AVX2 code paths (the bfloat16 and int8 codecs) do the
portable loops' integer and IEEE operations lane by lane. The tests replay the golden cases and every
dtype and state format on each variant this CPU runs and compare the bits.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
from pathlib import Path
from typing import Sequence

#: the file the compiler is given; it includes the other sources (:func:`source_files`)
MAIN_SOURCE = "kernel.c"

#: the flags of every build: optimised, position-independent shared library, pthreads (the kernel's own
#: thread pool), no errno from math functions (sqrt stays one instruction; NaN and Inf propagate as in
#: torch), no contraction of a*b+c into an FMA (each variant rounds alike)
BASE_FLAGS = ("-O3", "-std=gnu11", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-ffp-contract=off")
#: libraries linked after the source
LIBS = ("-lm",)

_V3 = ("-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mmovbe")
_V4 = _V3 + ("-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl")

#: x86-64: name -> (the CPU level it needs, as ``adamkit_cpu_level()`` reports it; alternative flag sets, the
#: first the compiler takes is used: the level's name, then its features one by one for older compilers)
X86_VARIANTS = {
    "baseline": (1, (("-march=x86-64", "-mtune=generic"),)),
    "avx2": (3, (("-march=x86-64-v3", "-mtune=generic"), ("-march=x86-64", "-mtune=generic") + _V3)),
    "avx512": (4, (("-march=x86-64-v4", "-mtune=generic"), ("-march=x86-64", "-mtune=generic") + _V4)),
}
#: any other machine: one build with the compiler's defaults for it
OTHER_VARIANTS = {"portable": (0, ((),))}
#: the opt-in build for this very CPU (first use only); -mcpu=native where -march=native is not taken (clang
#: on arm64)
NATIVE = "native"
NATIVE_FLAGS = (("-march=native",), ("-mcpu=native",))
#: compile with OpenMP instead of the kernel's pool (only ``adamkit speed --kernels`` times it, beside the pool)
OPENMP = "openmp"
OPENMP_FLAGS = ("-fopenmp", "-DADAMKIT_THREADS_OPENMP")

#: the prebuilt libraries' folder inside the package (adamkit/kernels/fused/prebuilt) and their manifest there
PREBUILT_DIR = "prebuilt"
MANIFEST = "manifest.json"


def is_x86_64(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in ("x86_64", "amd64", "x64")


def variants(machine: str | None = None) -> dict[str, tuple[int, tuple[tuple[str, ...], ...]]]:
    """The variants built for ``machine`` (default: this one), lowest level first."""
    return dict(X86_VARIANTS) if is_x86_64(machine) else dict(OTHER_VARIANTS)


def source_files(directory: Path) -> list[Path]:
    """The kernel's source files in ``directory`` (its folder): ``kernel.c``, then the headers it includes
    (``*.h``, ``bodies/*.h``), in a fixed order."""
    directory = Path(directory)
    return [directory / MAIN_SOURCE, *sorted(directory.glob("*.h")), *sorted(directory.glob("bodies/*.h"))]


def source_digest(directory: Path) -> str:
    """The sha256 of the kernel's sources in ``directory``: each file's path within it and its bytes, in the
    order of :func:`source_files`; what a build is keyed by and a prebuilt library records."""
    digest = hashlib.sha256()
    for path in source_files(directory):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def library_name(variant: str) -> str:
    """The file name of a variant's prebuilt library."""
    return f"fused_cpu-{variant}.so"


def command(cc: str, flags, source: str, output: str) -> list[str]:
    """The compiler's argument list for one build (the flags, then the source, the output and the libraries)."""
    return [cc, *flags, source, "-o", output, *LIBS]


def find_compiler(variable: str, candidates: Sequence[str]) -> str | None:
    """The path of ``$variable`` (its first word) if set and found, else of the first candidate on PATH."""
    for cand in ([os.environ[variable]] if os.environ.get(variable) else []) + list(candidates):
        path = shutil.which(cand.split()[0])
        if path:
            return path
    return None


def compiler_version(cc: str) -> str:
    """The first line of ``cc --version`` (recorded beside a prebuilt kernel), or "" where it says nothing."""
    import subprocess

    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""
