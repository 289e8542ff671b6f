"""The papers' claims as data (``claims.toml`` beside this module), checked when loaded.

A claim compares an optimizer (optionally in a paper configuration, ``name@arm``) with a baseline on named
instances, on one metric, in one direction ("better", or "as good as" within the band); it carries the paper's
own regime (:class:`Regime`: model, data, budget and hyperparameters, with a citation of ``PAPERS.md``), the
equivalence band of its metric, and optionally a :class:`Precondition` the data must meet for the comparison to
test the claim at all. :mod:`adamkit.bench.judge` turns the stored runs into its verdict. The protocol asks this
module which paper arms to run (:func:`paper_arms`).
"""
from __future__ import annotations

import hashlib
import math
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

KEYS = {"id", "paper", "claim", "optimizer", "baseline", "instances", "metric", "direction", "regime", "kind", "band",
        "precondition"}
REGIME_TEXT = ("source", "model", "data", "budget", "hyperparameters")
REGIME_KEYS = set(REGIME_TEXT) | {"epochs", "steps", "in_regime", "stand_in_epochs", "stand_in_steps", "verified",
                                  "note"}
PRECONDITION_KEYS = {"arm", "metric", "min", "max", "share", "text"}
#: what a claim says of its optimizer against the baseline: "better" in the claim's direction, or "as good as"
#: (no worse than the baseline by more than the band)
KINDS = ("better", "as good as")
#: the share of the paper's budget that counts as in regime when a claim does not say
IN_REGIME = 0.25


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
class Regime:
    """What the paper ran for a claim, with where it says so, and how much of it counts as in regime.

    ``epochs`` or ``steps`` is the paper's budget (None: not known; then no budget is in regime);
    ``in_regime`` the fraction of it a paper-kind experiment must run to be judged firmly;
    ``stand_in_epochs`` / ``stand_in_steps`` the smallest budget at which a stand-in experiment is read at all
    (None: any). ``verified``: whether ``../shared/PAPERS.md`` marks the budget's numbers verified."""

    source: str = ""
    model: str = ""
    data: str = ""
    budget: str = ""
    hyperparameters: str = ""
    epochs: float | None = None
    steps: int | None = None
    in_regime: float = IN_REGIME
    stand_in_epochs: float | None = None
    stand_in_steps: int | None = None
    verified: bool = False
    note: str = ""

    @property
    def unit(self) -> str | None:
        """"epochs" or "steps": the unit of the paper's budget (None: not known)."""
        return "epochs" if self.epochs is not None else "steps" if self.steps is not None else None

    @property
    def paper_budget(self) -> float | None:
        return self.epochs if self.epochs is not None else self.steps

    def text(self) -> str:
        """One line: model, data, budget, hyperparameters, source."""
        parts = [f"{k}: {getattr(self, k)}" for k in ("model", "data", "budget", "hyperparameters") if getattr(self, k)]
        return "; ".join(parts) + (f" [{self.source}" + ("" if self.verified else "; budget unverified") + "]"
                                   if self.source else "")


@dataclass(frozen=True)
class Precondition:
    """What must hold in the data for the comparison to test the claim at all: at least ``share`` of the runs
    (chains) of the claim's ``arm`` ("baseline" or "optimizer") have ``metric`` >= ``min`` (and/or <= ``max``);
    a diverged run counts as +inf."""

    arm: str
    metric: str
    min: float | None = None
    max: float | None = None
    share: float = 0.5
    text: str = ""

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


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
    regime: Regime = field(default_factory=Regime)
    band: float = 0.0  # the equivalence band, in the metric's units
    kind: str = "better"  # "better" | "as good as"
    precondition: Precondition | None = None

    @property
    def margin(self) -> float:
        """The non-inferiority margin of an "as good as" claim (its band), 0 for a "better" claim."""
        return self.band if self.kind == "as good as" else 0.0

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


def _number(where: str, value: Any, low: float = 0.0, integer: bool = False, high: float | None = None,
            open_low: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if ok:
        ok = math.isfinite(value) and (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        rng = f"{'(' if open_low else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ClaimsError(f"{where}: expected {'an integer' if integer else 'a number'} in {rng}, got {value!r}")
    return value


def _regime(where: str, raw: Any) -> Regime:
    if not isinstance(raw, dict):
        raise ClaimsError(f"{where}: expected a table with {', '.join(REGIME_TEXT)} (the paper's regime)")
    unknown = sorted(set(raw) - REGIME_KEYS)
    if unknown:
        raise ClaimsError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(REGIME_KEYS))}")
    for key in REGIME_TEXT:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ClaimsError(f"{where}.{key}: expected a non-empty string (what the paper ran, from PAPERS.md)")
    if "epochs" in raw and "steps" in raw:
        raise ClaimsError(f"{where}: give the paper's budget as epochs or as steps, not both")
    if "stand_in_epochs" in raw and "stand_in_steps" in raw:
        raise ClaimsError(f"{where}: give stand_in_epochs or stand_in_steps, not both")
    verified = raw.get("verified", False)
    if not isinstance(verified, bool):
        raise ClaimsError(f"{where}.verified: expected true or false, got {verified!r}")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise ClaimsError(f"{where}.note: expected a string")
    return Regime(
        **{k: raw[k].strip() for k in REGIME_TEXT},
        epochs=float(_number(f"{where}.epochs", raw["epochs"], open_low=True)) if "epochs" in raw else None,
        steps=int(_number(f"{where}.steps", raw["steps"], 1, integer=True)) if "steps" in raw else None,
        in_regime=float(_number(f"{where}.in_regime", raw.get("in_regime", IN_REGIME), 0.0, high=1.0, open_low=True)),
        stand_in_epochs=float(_number(f"{where}.stand_in_epochs", raw["stand_in_epochs"], open_low=True))
        if "stand_in_epochs" in raw else None,
        stand_in_steps=int(_number(f"{where}.stand_in_steps", raw["stand_in_steps"], 1, integer=True))
        if "stand_in_steps" in raw else None,
        verified=verified, note=note)


def _precondition(where: str, raw: Any) -> Precondition | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ClaimsError(f"{where}: expected a table of {', '.join(sorted(PRECONDITION_KEYS))}")
    unknown = sorted(set(raw) - PRECONDITION_KEYS)
    if unknown:
        raise ClaimsError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(PRECONDITION_KEYS))}")
    if raw.get("arm") not in ("baseline", "optimizer"):
        raise ClaimsError(f"{where}.arm: expected 'baseline' or 'optimizer', got {raw.get('arm')!r}")
    for key in ("metric", "text"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ClaimsError(f"{where}.{key}: expected a non-empty string")
    if "min" not in raw and "max" not in raw:
        raise ClaimsError(f"{where}: give min and/or max (the bound the arm's runs must meet)")
    bounds = {k: float(_number(f"{where}.{k}", raw[k], -math.inf)) for k in ("min", "max") if k in raw}
    share = float(_number(f"{where}.share", raw.get("share", 0.5), 0.0, high=1.0, open_low=True))
    return Precondition(raw["arm"], raw["metric"], bounds.get("min"), bounds.get("max"), share, raw["text"])


def parse_bands(data: dict[str, Any], source: str = "claims") -> dict[str, float]:
    """The ``[bands]`` table: metric -> equivalence band, in the metric's units."""
    bands = data.get("bands", {})
    if not isinstance(bands, dict):
        raise ClaimsError(f"{source}: [bands] must be a table of metric = band")
    return {k: float(_number(f"{source}: bands.{k}", v)) for k, v in bands.items()}


def parse_claims(data: dict[str, Any], source: str = "claims") -> list[Claim]:
    rows = data.get("claims")
    if not isinstance(rows, list) or not rows:
        raise ClaimsError(f"{source}: expected [[claims]] tables")
    bands = parse_bands(data, source)
    unknown_top = sorted(set(data) - {"claims", "bands"})
    if unknown_top:
        raise ClaimsError(f"{source}: unknown top-level key {unknown_top[0]!r}; allowed: bands, claims")
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
        kind = row.get("kind", "better")
        if kind not in KINDS:
            raise ClaimsError(f"{where}.kind: expected one of {', '.join(map(repr, KINDS))}, got {kind!r}")
        if "band" in row:
            band = float(_number(f"{where}.band", row["band"]))
        elif row["metric"] in bands:
            band = bands[row["metric"]]
        else:
            raise ClaimsError(f"{where}.band: no equivalence band for metric {row['metric']!r}: give `band` or "
                              f"add it to [bands]")
        out.append(Claim(row["id"], row["paper"], row["claim"], _ref(f"{where}.optimizer", row.get("optimizer")),
                         _ref(f"{where}.baseline", row.get("baseline")), tuple(instances), row["metric"],
                         row["direction"], _regime(f"{where}.regime", row.get("regime")), band, kind,
                         _precondition(f"{where}.precondition", row.get("precondition"))))
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


def load_bands() -> dict[str, float]:
    """The shipped equivalence bands per metric (``[bands]`` of ``claims.toml``), declared before any run."""
    return parse_bands(tomllib.loads(claims_text()), "claims.toml")


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
