"""How the update rules run: per tensor (reference), multi-tensor (``TensorList``), fused."""
from .tensorlist import TensorList

__all__ = ["TensorList"]
