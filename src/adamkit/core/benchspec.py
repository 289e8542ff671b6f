"""What the benchmark needs to know of an optimizer, declared once on its class (``bench = BenchSpec(...)``).

``adamkit bench`` discovers optimizers from the registry and reads this record: the learning-rate scale
of its search, the ε/δ hyperparameter it searches (on the optimizer's *own* scale: AdaBelief's ε sits
inside the square root and is about Adam's ε squared, EAdam's ε accumulates in v, ADOPT's ε is a floor
on sqrt(v), AGD's δ is the switch to SGD), the values the papers used, the paper configurations the
claims are tested in (named arms), and a plot colour. No list of optimizer names lives in the bench.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class BenchSpec:
    """The bench's declaration of one optimizer.

    ``lr_scale``: this optimizer's learning rates relative to Adam's; the search of a problem runs over the
    problem's (Adam-scale) range times ``lr_scale`` (AGD's README: about 1/10 of AdamW's; SGD: ~30×).
    ``eps_name`` / ``eps_range``: the ε-like hyperparameter searched and its range on this optimizer's
    scale (``None``: none searched). ``paper_eps``: the values the papers used; each lies in the range.
    ``paper_configs``: arm name -> the hyperparameters of a paper's configuration (e.g. AdaBelief's CNN
    runs: ``{"rectify": False, "eps": 1e-8, "lr": 1e-3}``); claims name them as ``optimizer@arm``. The bench
    tunes each as an optimizer of its own: its keys are held but ``lr``, which its own search tunes (arm
    ``paper:<arm>``); a configuration that gives ``lr`` (the paper's own rate) also runs at that rate, untuned
    (arm ``paper-lr:<arm>``).
    ``color``: the optimizer's colour in every plot (``#rrggbb``).
    """

    color: str
    lr_scale: float = 1.0
    eps_name: str | None = "eps"
    eps_range: tuple[float, float] | None = None
    paper_eps: tuple[float, ...] = ()
    paper_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        if not (isinstance(self.color, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", self.color)):
            raise ValueError(f"BenchSpec color: expected '#rrggbb', got {self.color!r}")
        if not (isinstance(self.lr_scale, (int, float)) and math.isfinite(self.lr_scale) and self.lr_scale > 0):
            raise ValueError(f"BenchSpec lr_scale: expected a positive number, got {self.lr_scale!r}")
        if (self.eps_name is None) != (self.eps_range is None):
            raise ValueError("BenchSpec: give eps_name and eps_range together (or neither)")
        if self.eps_range is not None:
            low, high = self.eps_range
            if not (0 < low < high):
                raise ValueError(f"BenchSpec eps_range: expected 0 < low < high, got {self.eps_range!r}")
            for v in self.paper_eps:
                if not (low <= v <= high):
                    raise ValueError(f"BenchSpec paper_eps: {v!r} lies outside eps_range {self.eps_range!r}; "
                                     "the search must cover each paper's own value")
        for arm, config in self.paper_configs.items():
            if not (isinstance(arm, str) and re.fullmatch(r"[a-z0-9_]+", arm)):
                raise ValueError(f"BenchSpec paper_configs: arm names are [a-z0-9_]+, got {arm!r}")
            if not isinstance(config, Mapping):
                raise ValueError(f"BenchSpec paper_configs[{arm!r}]: expected a mapping of hyperparameters")
            lr = config.get("lr")
            if "lr" in config and not (isinstance(lr, (int, float)) and not isinstance(lr, bool)
                                       and math.isfinite(lr) and lr > 0):
                raise ValueError(f"BenchSpec paper_configs[{arm!r}].lr: expected the paper's learning rate, a "
                                 f"positive number, got {lr!r}")

    def search_space(self) -> dict[str, tuple[float, float]]:
        """{eps_name: eps_range}, or {} when nothing but the learning rate is searched."""
        return {} if self.eps_name is None else {self.eps_name: tuple(self.eps_range)}
