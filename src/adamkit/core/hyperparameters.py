"""The hyperparameters every adamkit optimizer declares (``lr``'s default is each algorithm's own)."""
from __future__ import annotations

from typing import Any

import torch

from . import checks, state_format
from .declaration import Hyperparameter


def learning_rate(default: float = 1e-3) -> Hyperparameter:
    """The ``lr`` every adamkit optimizer takes."""
    return Hyperparameter(default, checks.learning_rate, "learning rate α (a number, or a one-element tensor)")


def _fused_flag(name: str, value: Any) -> bool | str | None:
    """``fused``: None, True, False, "compiled" (the torch.compile path) or "triton" (the generated Triton kernel)."""
    if isinstance(value, str):
        if value not in ("compiled", "triton"):
            raise ValueError(f'{name} must be None, True, False, "compiled" or "triton", got {value!r}')
        return value
    return checks.optional_flag(name, value)


MAXIMIZE = Hyperparameter(False, checks.flag, "maximise the objective", keyword_only=True)
FOREACH = Hyperparameter(None, checks.optional_flag,
                         "True: multi-tensor (torch._foreach_*); False: one tensor at a time; None: adamkit chooses",
                         keyword_only=True)
FUSED = Hyperparameter(None, _fused_flag, 'True: the fused kernel (C on CPU, compiled elsewhere); "compiled": '
                       'torch.compile of the update; "triton": one Triton kernel per bucket (CUDA); None: adamkit '
                       "chooses", keyword_only=True)
STATE_DTYPE = Hyperparameter(torch.float32, state_format.check_state_dtype,
                             'how the moments are stored: torch.float32, torch.bfloat16 (stochastic rounding) or '
                             '"int8" (blockwise 8-bit codes); the math is float32 either way (docs/low-precision.md)',
                             keyword_only=True)
PARAM_ROUNDING = Hyperparameter("nearest", state_format.check_param_rounding,
                                'how bfloat16/float16 parameters are written: "nearest" (round to nearest even, as '
                                'torch) or "stochastic" (unbiased stochastic rounding of the float32 result, so '
                                'that small updates are kept in expectation; docs/low-precision.md); float32 and '
                                'float64 parameters are written exactly either way', keyword_only=True)

#: hyperparameters every adamkit optimizer has (``lr``'s default is the algorithm's own)
COMMON_HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "lr": learning_rate(), "maximize": MAXIMIZE, "foreach": FOREACH, "fused": FUSED, "state_dtype": STATE_DTYPE,
    "param_rounding": PARAM_ROUNDING,
}
