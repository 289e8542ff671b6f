"""The fused GPU backend (``fused="triton"``): one Triton kernel launch per bucket, generated from ``update``.

How a kernel is made (:func:`kernel_source` shows one): the algorithm's ``update`` is traced once per set of
flags with stand-in tensors (:mod:`.trace`), which records each tensor method it calls; the recorded graph
is written out as the body of a Triton kernel (:mod:`.source`), between the loads of the parameter, the
gradient and every state element (decoded from bfloat16 or int8 codes in registers) and the stores of the
parameter and the encoded state (:mod:`.codec`, ``state_format``'s rounding bit for bit). One kernel runs over
all the tensors of a bucket: a table of their addresses and sizes maps each program to a tile of one tensor
(:mod:`.launch`). Flags, dtypes and the state format choose the kernel; the step's numbers are data, so a
learning-rate schedule or a new step count never recompiles, and a step never reads a device value.

CUDA tensors run compiled kernels; CPU tensors run only in Triton's interpreter (``TRITON_INTERPRET=1`` set
before triton is imported: the tests), where the kernel computes the same bits as on a GPU.
"""
from __future__ import annotations

from ..backend import Backend, register
from .launch import Unsupported, available, step_bucket
from .source import KernelSpec
from .source import kernel_source as _module_source

__all__ = ["TRITON", "Unsupported", "available", "kernel_source", "step_bucket"]


def kernel_source(cls, flags, names=None, *, param_dtype=None, state="float32", maximize=False) -> str:
    """The generated Triton source of ``cls``'s kernel for ``flags`` (e.g. ``c.flags`` of a step).

    ``names``: the state tensors (all of ``cls.state_formats`` by default); ``state``: "float32",
    "bfloat16" or "int8"; ``param_dtype``: the parameters' dtype (float32 by default).
    """
    import torch

    names = tuple(cls.state_formats) if names is None else tuple(names)
    kinds = tuple(cls.state_formats[n] for n in names)
    spec = KernelSpec(cls, flags, names, param_dtype or torch.float32, state, kinds, bool(maximize))
    return _module_source(spec)


class Triton(Backend):
    """``fused="triton"``: chosen explicitly only (the default on CUDA is decided by measurement)."""

    name = "triton"
    options = {"fused": "triton"}
    storage_formats = ("bfloat16", "int8")

    def available(self) -> bool:
        return available()

    def require(self, cls) -> None:
        if not available():
            raise RuntimeError('fused="triton" needs the triton package and a CUDA device (or, for tests, '
                               "TRITON_INTERPRET=1 set before triton is imported, for CPU tensors)")

    def takes(self, cls, params) -> bool:
        return False

    def step(self, cls, bucket, c, *, explicit):
        try:
            step_bucket(cls, c, bucket.params, bucket.grads, bucket.states, bucket.names, bucket.maximize,
                        bucket.storage, bucket.rounding)
        except Unsupported:  # raised before any tensor is written
            if explicit:
                raise
            return False
        return True


TRITON = register(Triton())
