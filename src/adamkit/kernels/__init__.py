"""How the update rules run: backends behind one interface (:mod:`.backend`), as peers.

``BACKENDS`` maps each implementation name to its backend, in this order:
``loop`` (``update`` per tensor, the reference), ``foreach`` (``update`` on
TensorLists), ``fused`` (the C kernel, CPU), ``compiled`` (``torch.compile`` of
``update`` with tensor scalars), ``triton`` (a Triton kernel generated from ``update``, one launch per
bucket; chosen with ``fused="triton"`` only). The engine chooses one per bucket; tests iterate
over this table (``backend.options`` selects it, ``backend.available()`` says
whether it runs here).
"""
from . import compiled, eager, fused, gpu  # noqa: F401 - each registers its backend
from .backend import BACKENDS, Backend
from .tensorlist import TensorList

__all__ = ["BACKENDS", "Backend", "TensorList"]
