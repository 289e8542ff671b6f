"""One table of facts about every optimizer; the generic tests are driven by it.

Each entry says how to build the optimizer, which golden file replays it, how the
upstream keyword names of that file translate to adamkit's, and which
hyperparameter settings exercise every branch of its update.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import adamkit

#: the public golden cases, shipped with the tests
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def golden_dirs() -> list[Path]:
    """tests/golden, then each folder of ``$ADAMKIT_GOLDEN_DIR`` (``os.pathsep``-separated), e.g. a private split."""
    extra = [Path(d) for d in os.environ.get("ADAMKIT_GOLDEN_DIR", "").split(os.pathsep) if d]
    return [GOLDEN_DIR] + [d for d in extra if d.resolve() != GOLDEN_DIR]


def _same(hyper: dict[str, Any]) -> dict[str, Any]:
    out = dict(hyper)
    if "betas" in out:
        out["betas"] = tuple(out["betas"])
    return out


def _adopt(hyper: dict[str, Any]) -> dict[str, Any]:
    out = _same(hyper)
    if "clip_lambda" in out:
        spec = out["clip_lambda"]
        if spec is None:
            out["clip_lambda"] = None
        elif spec.get("type") == "power":
            out["clip_lambda"] = float(spec["exponent"])
        else:  # pragma: no cover - a new encoding in the golden files
            raise ValueError(f"unknown clip_lambda encoding {spec!r}")
    return out


def _amsgrad(hyper: dict[str, Any]) -> dict[str, Any]:
    out = _same(hyper)
    if out.pop("amsgrad", True) is not True:
        raise ValueError("amsgrad golden cases must have amsgrad=True")
    return out


def clip_one_plus_half_t(t: int) -> float:
    """A custom ADOPT clipping schedule (module-level, so it pickles)."""
    return 1.0 + 0.5 * t


@dataclasses.dataclass(frozen=True)
class OptimizerInfo:
    name: str
    cls: type
    golden: str | None  # stem of the golden file
    translate: Callable[[dict[str, Any]], dict[str, Any]]
    #: settings that together reach every branch of the update (used by the path-agreement tests)
    variants: tuple[dict[str, Any], ...]
    #: name of the epsilon-like hyperparameter
    eps_name: str = "eps"
    #: ADOPT's first call does not move the parameter
    first_step_moves: bool = True

    def make(self, params, **kwargs):
        return self.cls(params, **kwargs)


OPTIMIZERS: tuple[OptimizerInfo, ...] = (
    OptimizerInfo(
        "adam", adamkit.Adam, "adam", _same,
        ({}, {"weight_decay": 0.1}, {"amsgrad": True}, {"decoupled_weight_decay": True, "weight_decay": 0.1}),
    ),
    OptimizerInfo("adamw", adamkit.AdamW, "adamw", _same, ({}, {"amsgrad": True}, {"weight_decay": 0.0})),
    OptimizerInfo(
        "amsgrad", adamkit.AMSGrad, "amsgrad", _amsgrad,
        ({}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ),
    OptimizerInfo("eadam", adamkit.EAdam, "eadam", _same, ({}, {"weight_decay": 0.1}, {"amsgrad": True})),
    OptimizerInfo(
        "adabelief", adamkit.AdaBelief, "adabelief", _same,
        (
            {},
            {"rectify": False},
            {"rectify": False, "amsgrad": True},
            {"amsgrad": True},
            {"amsgrad": True, "rectified_amsgrad": True},
            {"degenerated_to_sgd": False, "weight_decay": 0.1},
            {"weight_decouple": False, "weight_decay": 0.1},
            {"fixed_decay": True, "weight_decay": 0.01},
        ),
    ),
    OptimizerInfo(
        "adopt", adamkit.ADOPT, "adopt", _adopt,
        ({}, {"clip_lambda": None}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decouple": True},
         {"clip_lambda": clip_one_plus_half_t}),
        first_step_moves=False,
    ),
    OptimizerInfo(
        "agd", adamkit.AGD, "agd", _same,
        (
            {},
            {"amsgrad": True},
            {"clip": 0.5},
            {"weight_decouple": False, "weight_decay": 0.1},
            {"fixed_decay": True, "weight_decay": 0.01},
            {"win": True, "weight_decay": 0.1},
            {"win": True, "win_z_init": "params"},
            {"delta": 1e-2},
        ),
        eps_name="delta",
    ),
)

BY_NAME = {info.name: info for info in OPTIMIZERS}


def variant_id(info: OptimizerInfo, kwargs: dict[str, Any]) -> str:
    """A test id for ``info`` at ``kwargs`` that is the same in every process: a callable setting is named by
    its ``__name__``, not by its address (a test run split over processes, as pytest-xdist splits it, must collect
    the same ids, and ``-k`` must find them again)."""
    shown = ", ".join(f"{k}={v.__name__ if callable(v) else repr(v)}" for k, v in kwargs.items())
    return f"{info.name}-{{{shown}}}"


def golden_cases():
    """(info, document, case) for every case of every golden file of :func:`golden_dirs`.

    A case met twice (same optimizer, split and name, e.g. an extra folder holding the public files
    again) is replayed once.
    """
    seen = set()
    for directory in golden_dirs():
        for info in OPTIMIZERS:
            if info.golden is None:
                continue
            path = directory / f"{info.golden}.json"
            if not path.exists():
                continue
            doc = json.loads(path.read_text())
            for case in doc["cases"]:
                key = (info.name, doc.get("split"), case["name"])
                if key not in seen:
                    seen.add(key)
                    yield info, doc, case
