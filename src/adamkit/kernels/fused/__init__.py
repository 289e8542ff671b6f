"""The fused backend (``fused=True`` on CPU, and the CPU default where available): a C kernel, by job.

* ``kernel.c``: the dispatch (the generated layout, the range functions of every body and dtype, the two
  threaded entry points), with ``pool.h`` (its thread pool), ``codec.h`` (the bfloat16 and int8 codec of
  low-precision state) and ``bodies/<body>.h`` (one algorithm each, its loop body beside its range
  function), all one translation unit;
* :mod:`.spec`: the seam with the declarations (the generated block of ``kernel.c``, the argument packer);
* :mod:`.cpu_variants`: the builds (instruction-set variants, flags, sources), shared with ``setup.py``;
* :mod:`.build`: the one builder and lazy loader (prebuilt in a wheel, else built on first use);
* :mod:`.launch`: the arguments of one call, checked and packed; :mod:`.kept`: the pointer tables kept
  between steps; :mod:`.check` and ``check.cpp``: their optional native check;
* :mod:`.backend`: the backend the engine steps through (:data:`FUSED`).
"""
from .backend import FUSED, Fused, Stepped, StoredGroup

__all__ = ["FUSED", "Fused", "Stepped", "StoredGroup"]
