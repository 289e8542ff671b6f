"""adamkit's optimizers: one engine (``base``), one module per algorithm; the registry lists ``__all__``'s."""
from .adam import Adam, AdamW, AMSGrad
from .eadam import EAdam
from .adabelief import AdaBelief
from .adopt import ADOPT
from .agd import AGD
from .base import AdamkitOptimizer
from .convert import convert_state_dtype

__all__ = ["AdamkitOptimizer", "Adam", "AdamW", "AMSGrad", "EAdam", "AdaBelief", "ADOPT", "AGD", "convert_state_dtype"]
