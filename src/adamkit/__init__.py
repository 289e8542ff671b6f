"""adamkit: the modern Adam family of optimizers for PyTorch, exact to the authors' code."""
from ._version import __version__
from .optim import ADOPT, AGD, AdaBelief, Adam, AdamkitOptimizer, AdamW, AMSGrad, EAdam, convert_state_dtype
from . import distributed
from .param_groups import param_groups_weight_decay
from .registry import (
    create_optimizer,
    create_optimizer_from_config,
    get_optimizer_class,
    list_optimizers,
    load_optimizer_config,
)

__all__ = [
    "AdamkitOptimizer",
    "Adam",
    "AdamW",
    "AMSGrad",
    "EAdam",
    "AdaBelief",
    "ADOPT",
    "AGD",
    "convert_state_dtype",
    "create_optimizer",
    "create_optimizer_from_config",
    "get_optimizer_class",
    "list_optimizers",
    "load_optimizer_config",
    "param_groups_weight_decay",
]
