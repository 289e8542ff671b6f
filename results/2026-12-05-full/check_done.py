"""Issue 22's "done when" for this folder's full run, checked from its store and its report alone:
seeds and searches of every final arm, the budgets the runs actually took, and what the report prints.

    python results/2026-12-05-full/check_done.py results/2026-12-05-full

Prints one line per check (ok / NOT MET, with the figures) and exits 1 if any is not met.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from adamkit.bench import analysis, judge

where = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
res = analysis.load(where)
insts = {i.key: i for i in res.instances}
failed: list[str] = []


def check(ok: bool, what: str, figures: str) -> None:
    print(f"{'ok     ' if ok else 'NOT MET'}  {what}: {figures}")
    if not ok:
        failed.append(what)


def taken(inst) -> list[dict]:
    """The final metrics of the instance's stored final runs."""
    hashes = [h for (key, _, _), arm in res.arms.items() if key == inst.key for h in arm.hashes]
    return [f for h in hashes if (f := res.finals.get(h))]


# 1. every final arm of a Tier B task has >= 10 paired seeds
tier_b = [a for (key, _, _), a in sorted(res.arms.items()) if insts[key].tier == "B"]
short = [f"{a.instance}/{a.optimizer}/{a.arm} n={a.n}" for a in tier_b if a.n < 10]
check(bool(tier_b) and not short, "every final arm of a Tier B task has >= 10 seeds",
      f"{len(tier_b)} arms, seeds {min((a.n for a in tier_b), default=0)}–{max((a.n for a in tier_b), default=0)}"
      + (f"; short: {', '.join(short[:8])}{' …' if len(short) > 8 else ''}" if short else ""))

# 2. every final arm's configuration was searched over >= 8 learning rates (or is the defaults arm, a fixed
#    instance's arm, or the paper's own rate, labelled paper-lr)
unsearched, few = [], []
for (key, opt, arm), a in sorted(res.arms.items()):
    inst = insts[key]
    if arm in ("defaults", "fixed") or arm.startswith(("paper-lr:", "variant:")) or not inst.tune:
        continue
    label = opt if arm == "tuned" else f"{opt}@{arm.split(':', 1)[1]}"
    search = res.searches.get((key, label))
    if search is None:
        unsearched.append(f"{key}/{opt}/{arm}")
    elif "lr" not in inst.hparams and "lr" not in search.held and len(search.lr_grid) < 8:
        few.append(f"{key}/{label} ({len(search.lr_grid)} rates)")
n_lr = [len(s.lr_grid) for s in res.searches.values() if s.lr_grid]
check(not unsearched and not few, "every tuned or paper final arm was searched over >= 8 learning rates",
      f"{len(res.searches)} searches, {min(n_lr, default=0)}–{max(n_lr, default=0)} rates each"
      + (f"; no search: {', '.join(unsearched)}" if unsearched else "") + (f"; fewer: {', '.join(few)}" if few else ""))

# 3. the budgets, as the stored runs took them
reddi = [i for i in insts.values() if i.problem == "reddi_counterexample"]
reddi_steps = [f["steps"] for i in reddi for f in taken(i)]
check(bool(reddi_steps) and min(reddi_steps) >= 100_000, "Reddi's problem at >= 1e5 steps",
      f"{len(reddi_steps)} runs, fewest steps {min(reddi_steps, default=0)}")
settings = {}
for i in insts.values():
    if i.problem == "adopt_counterexample":
        steps = [f["steps"] for f in taken(i)]
        if steps and min(steps) >= 1_000_000:
            settings[(i.params.get("k"), i.params.get("beta2"))] = min(steps)
check(len(settings) >= 6, "ADOPT's counterexample at >= 1e6 steps for >= 6 (k, beta2) settings",
      f"{len(settings)} settings: {sorted(settings)}")
gpt = [f["steps"] for f in taken(insts["gpt_noclip_b8"])]
check(bool(gpt) and min(gpt) >= 2000, "the batch-8 GPT at >= 2000 steps",
      f"{len(gpt)} final runs, fewest steps {min(gpt, default=0)}")
vae = [f["steps"] / f["steps_per_epoch"] if f.get("steps_per_epoch") else 0.0 for f in taken(insts["vae_fmnist"])]
check(bool(vae) and min(vae) >= 10, "the VAE at >= 10 epochs", f"{len(vae)} final runs, fewest epochs "
      f"{min(vae, default=0):g} (0: steps per epoch not recorded)")

# 4. the verdicts (recomputed by the report's judge) and what the committed report prints
comparisons = [c for v in judge.judge_all(res) for c in v.comparisons if c.verdict != judge.NOT_MEASURED]
zero = [f"{c.instance} ({c.row})" for c in comparisons
        if c.n > 1 and not c.deterministic and c.low is not None and not c.high > c.low]
check(not zero, "no zero-width interval with n > 1", f"{len(comparisons)} comparisons measured"
      + (f"; zero width: {', '.join(zero)}" if zero else ""))
firm = [f"{c.instance} ({c.row}): {c.verdict}" for c in comparisons
        if c.experiment == "stand-in" and c.verdict in judge.FIRM]
check(not firm, "no firm verdict on a stand-in task",
      f"{sum(c.experiment == 'stand-in' for c in comparisons)} stand-in comparisons" + (f"; {firm}" if firm else ""))
report = where / "report" / "report.md"
if not report.exists():
    check(False, "the committed report", f"{report} is missing (adamkit bench report {where})")
else:
    text = report.read_text()
    first = re.search(r"^## (.+)$", text, re.M)
    check(bool(first) and "practitioner" in first.group(1).lower(), "its first section is the practitioner table",
          f"first section: {first.group(1) if first else 'none'!r}")
    printed = [m.group(0) for m in re.finditer(r"\[([-+0-9.e]+), ([-+0-9.e]+)\],? n ?= ?(\d+)", text)
               if float(m.group(1)) == float(m.group(2)) and int(m.group(3)) > 1]
    check(not printed, "no zero-width interval with n > 1 anywhere in the report",
          f"{len(printed)} found" + (f": {', '.join(printed[:5])}" if printed else ""))
    mixed = re.findall(r"\d[\d,]* steps < the claim's [\d.]+ epochs", text)
    check(not mixed, "no steps-against-epochs regime comparison", f"{len(mixed)} found")
    incomplete = "Incomplete sweep" in text
    check(not incomplete, "the sweep is complete",
          "the report says 'Incomplete sweep'" if incomplete else "every final run stored")

sys.exit(1 if failed else 0)
