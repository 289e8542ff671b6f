"""The paths the cross-path tests step with, read from ``adamkit.kernels.BACKENDS``: each backend's name and the
options that choose it, so that no test restates them and a new backend is covered wherever it runs."""
from __future__ import annotations

from adamkit.kernels import BACKENDS

#: the backends the cross-path tests leave to their own files: the compiled path (seconds of compilation per
#: graph: tests/kernels/test_compiled.py) and Triton (its interpreter on CPU: tests/kernels/test_triton.py)
SLOW = ("compiled", "triton")


def paths(exclude=SLOW, default: bool = False) -> dict[str, dict]:
    """``{backend name: its options}`` of every backend that runs here (``backend.available()``: without a C
    compiler the fused one does not, and test_golden / test_fused say why), in the order of ``BACKENDS``, but
    those in ``exclude``; with ``default``, also ``"default": {}`` (no option: the engine's choice) where the
    CPU default is not the loop, that is where the fused kernel runs."""
    out = {name: dict(b.options) for name, b in BACKENDS.items() if name not in exclude and b.available()}
    if default and BACKENDS["fused"].available():
        out["default"] = {}
    return out
