"""The papers' claims as data (``claims.toml`` beside this module), checked when loaded.

A claim compares an optimizer (optionally in a paper configuration, ``name@arm``) with a baseline on named
instances, on one metric, in one direction, within a regime; :mod:`adamkit.bench.judge` turns the stored
runs into its verdict. The protocol asks this module which paper arms to run (:func:`paper_arms`).
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from .. import optimizers as bench_optimizers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KEYS = {"id", "paper", "claim", "optimizer", "baseline", "instances", "metric", "direction", "regime", "margin"}
REGIME_KEYS = {"min_steps", "min_epochs"}


class ClaimsError(ValueError):
    """A claims file that cannot be used; the message names the claim and the key."""


@dataclass(frozen=True)
class Ref:
    """An optimizer as a claim names it: ``adabelief`` (its main arm) or ``adabelief@cnn`` (a paper arm)."""

    optimizer: str
    arm: str | None = None

    @property
    def label(self) -> str:
        return self.optimizer + (f"@{self.arm}" if self.arm else "")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    claim: str
    optimizer: Ref
    baseline: Ref
    instances: tuple[str, ...]
    metric: str
    direction: str  # "higher" | "lower": where the claim says `optimizer` is better
    regime: dict[str, int] = field(default_factory=dict)
    margin: float = 0.0

    def matches(self, inst) -> bool:
        return any(name in (inst.problem, inst.group, inst.key) for name in self.instances)


def _ref(where: str, text: Any) -> Ref:
    if not isinstance(text, str) or not text:
        raise ClaimsError(f"{where}: expected an optimizer name (or name@arm), got {text!r}")
    name, _, arm = text.partition("@")
    if name not in bench_optimizers.names():
        raise ClaimsError(f"{where}: unknown optimizer {name!r}; choose from {', '.join(bench_optimizers.names())}")
    if arm and arm not in bench_optimizers.spec(name).paper_configs:
        known = ", ".join(bench_optimizers.spec(name).paper_configs) or "none"
        raise ClaimsError(f"{where}: {name} declares no paper configuration {arm!r} (its BenchSpec has: {known})")
    return Ref(name, arm or None)


def parse_claims(data: dict[str, Any], source: str = "claims") -> list[Claim]:
    rows = data.get("claims")
    if not isinstance(rows, list) or not rows:
        raise ClaimsError(f"{source}: expected [[claims]] tables")
    out, seen = [], set()
    for i, row in enumerate(rows):
        where = f"{source}: claims[{i}]"
        unknown = sorted(set(row) - KEYS)
        if unknown:
            raise ClaimsError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(KEYS))}")
        for key in ("id", "paper", "claim", "metric"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ClaimsError(f"{where}.{key}: expected a non-empty string")
        if row["id"] in seen:
            raise ClaimsError(f"{where}.id: {row['id']!r} is used twice")
        seen.add(row["id"])
        if row.get("direction") not in ("higher", "lower"):
            raise ClaimsError(f"{where}.direction: expected 'higher' or 'lower', got {row.get('direction')!r}")
        instances = row.get("instances")
        if not (isinstance(instances, list) and instances and all(isinstance(x, str) for x in instances)):
            raise ClaimsError(f"{where}.instances: expected a non-empty list of instance names")
        regime = row.get("regime", {})
        if not isinstance(regime, dict) or set(regime) - REGIME_KEYS or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in regime.values()):
            raise ClaimsError(f"{where}.regime: expected a table of {', '.join(sorted(REGIME_KEYS))} (integers >= 0)")
        margin = row.get("margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
            raise ClaimsError(f"{where}.margin: expected a number >= 0, got {margin!r}")
        out.append(Claim(row["id"], row["paper"], row["claim"], _ref(f"{where}.optimizer", row.get("optimizer")),
                         _ref(f"{where}.baseline", row.get("baseline")), tuple(instances), row["metric"],
                         row["direction"], dict(regime), float(margin)))
    return out


def claims_text() -> str:
    return resources.files(__name__).joinpath("claims.toml").read_text(encoding="utf-8")


def claims_hash() -> str:
    """sha256 (first 12 hex digits) of the shipped claims file: part of the benchmark version."""
    return hashlib.sha256(claims_text().encode()).hexdigest()[:12]


@lru_cache(maxsize=1)
def load_claims() -> tuple[Claim, ...]:
    """The shipped claims."""
    return tuple(parse_claims(tomllib.loads(claims_text()), "claims.toml"))


def paper_arms(inst, optimizer: str) -> list[tuple[str, dict[str, Any]]]:
    """The paper configurations some claim asks for on ``inst`` for ``optimizer``: [(arm, hyperparameters)]."""
    arms: dict[str, dict[str, Any]] = {}
    if optimizer not in inst.optimizers:
        return []
    for claim in load_claims():
        if not claim.matches(inst):
            continue
        for ref in (claim.optimizer, claim.baseline):
            if ref.optimizer == optimizer and ref.arm:
                arms[ref.arm] = dict(bench_optimizers.spec(optimizer).paper_configs[ref.arm])
    return sorted(arms.items())
