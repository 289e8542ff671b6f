"""adamkit's optimizers: one engine (``base``), one module per algorithm."""
from .adabelief import AdaBelief
from .adam import Adam, AdamW, AMSGrad
from .adopt import ADOPT
from .agd import AGD
from .base import AdamkitOptimizer
from .eadam import EAdam

__all__ = ["AdamkitOptimizer", "Adam", "AdamW", "AMSGrad", "EAdam", "AdaBelief", "ADOPT", "AGD"]
