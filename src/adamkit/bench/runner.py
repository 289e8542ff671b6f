"""One run: build the problem instance from its seed, train with one optimizer, record the metrics.

:func:`execute` never raises for a failing run: it returns ``status = "failed"`` with the error and its
traceback, so a sweep goes on. A run that fails because a third-party module is not installed also names it
(``missing_module``): the sweep skips such a run, with the install command, instead of storing it. A loss
that becomes non-finite ends the run early as ``diverged``.

A run computes on the sweep's device (``execute(spec, device)``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``) when its
task supports one, else on the CPU (:func:`adamkit.bench.devices.for_problem`); its result records where
(``result["device"]``: :func:`adamkit.bench.devices.describe`), failed runs included. The device is not part of
the run's configuration (its hash): a store holds the runs of one kind of device (``ResultStore.check_device``).

For testing the sweep's error handling, ``ADAMKIT_BENCH_FAIL=<optimizer>`` in the environment makes every
run of that optimizer raise.
"""
from __future__ import annotations

import math
import os
import socket
import time
import traceback
from typing import Any

import torch

import adamkit

from . import devices
from . import optimizers as bench_optimizers
from . import registry


class RunTimeout(RuntimeError):
    pass


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def execute(spec: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Run ``spec`` (see :func:`adamkit.bench.protocol.make_spec`) on ``device`` (where its task supports one);
    return status, final metrics, curves and the device record."""
    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    where: dict[str, Any] = {}
    try:
        torch.set_num_threads(1)
        final, curve = _train(spec, started, device, where)
        return {"status": "done", "final": final, "curve": curve, "error": None,
                "seconds": time.perf_counter() - started, "worker": worker, "device": where.get("record")}
    except ModuleNotFoundError as exc:
        module = (exc.name or "").split(".")[0]
        result = {"status": "failed", "final": None, "curve": None,
                  "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}",
                  "seconds": time.perf_counter() - started, "worker": worker, "device": where.get("record")}
        if module and module != "adamkit":  # a package is not installed: the sweep skips, never stores, this run
            result["missing_module"] = module
        return result
    except Exception as exc:  # recorded, the sweep goes on
        return {"status": "failed", "final": None, "curve": None,
                "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}",
                "seconds": time.perf_counter() - started, "worker": worker, "device": where.get("record")}


def optimizer_kwargs(problem, optimizer: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments a run gives its optimizer: the problem's overrides, then the run's hyperparameters.

    TOML has no null: the string "none" stands for None (e.g. ADOPT's clip_lambda = "none", no clipping);
    lists become tuples. (Suites check these values when they are loaded, with the optimizers' own checks.)
    """
    accepted = set(bench_optimizers.arguments(optimizer))  # (a baseline takes no betas of a β2 sweep)
    overrides = {k: v for k, v in problem.optimizer_overrides(optimizer).items() if k in accepted}
    merged = {**overrides, **hparams}
    return {k: tuple(v) if isinstance(v, list) else (None if v == "none" else v) for k, v in merged.items()}


def _train(spec: dict[str, Any], started: float, device: str = "cpu",
           where: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    if os.environ.get("ADAMKIT_BENCH_FAIL") and os.environ["ADAMKIT_BENCH_FAIL"] == spec["optimizer"]:
        raise RuntimeError("failure injected by ADAMKIT_BENCH_FAIL (testing the sweep's error handling)")
    problem = registry.create_problem(spec["problem"], spec["params"])
    dev = devices.for_problem(problem, device)
    if dev.type != "cpu":
        devices.configure(dev)
        problem.device = dev  # the task moves its model and data there (Task.device)
    if where is not None:
        where["record"] = devices.describe(dev)
    seed = int(spec["seed"])
    torch.manual_seed(seed)
    instance = problem.make(seed)
    if spec.get("steps"):
        steps = int(spec["steps"])
    elif spec.get("epochs"):
        if not instance.steps_per_epoch:
            raise ValueError(f"problem {spec['problem']!r} gives no steps_per_epoch; give `steps` in the suite")
        steps = int(spec["epochs"]) * int(instance.steps_per_epoch)
    else:
        steps = int(instance.default_steps)
    hparams = optimizer_kwargs(problem, spec["optimizer"], spec["hparams"])
    optimizer = bench_optimizers.create(spec["optimizer"], instance.parameters(), **hparams)
    scheduler = instance.lr_scheduler(optimizer, steps)
    eval_every, record_every = int(spec["eval_every"]), int(spec["record_every"])
    timeout = float(spec.get("timeout") or 0)

    train_steps: list[int] = []
    train_loss: list[float] = []
    eval_steps: list[int] = []
    evals: dict[str, list[float]] = {}

    def record_eval(step: int) -> dict[str, Any]:
        metrics = instance.evaluate()
        eval_steps.append(step)
        for k, v in metrics.items():
            if isinstance(v, (list, tuple)):  # per-chain values (``<metric>_chains``): final metrics only
                continue
            evals.setdefault(k, [math.nan] * (len(eval_steps) - 1)).append(float(v))
        for k in evals:
            if len(evals[k]) < len(eval_steps):
                evals[k].append(math.nan)
        return metrics

    metrics = record_eval(0)
    diverged = False
    done = 0
    for step in range(steps):
        loss = instance.train_step(optimizer, step)
        if scheduler is not None:
            scheduler.step()
        done = step + 1
        if done % record_every == 0 or done == steps:
            train_steps.append(done)
            train_loss.append(float(loss))
        if not _finite(loss):
            diverged = True
            break
        if done % eval_every == 0 or done == steps:
            metrics = record_eval(done)
        if timeout and time.perf_counter() - started > timeout:
            raise RunTimeout(f"run exceeded its timeout of {timeout:g} s after {done} of {steps} steps")
    if diverged and (not eval_steps or eval_steps[-1] != done):
        metrics = record_eval(done)
    final = {k: [float(x) for x in v] if isinstance(v, (list, tuple)) else float(v) for k, v in metrics.items()}
    final.update({"diverged": diverged, "steps": done, "budget_steps": steps,
                  **({"steps_per_epoch": int(instance.steps_per_epoch)} if instance.steps_per_epoch else {}),
                  "final_loss": float(train_loss[-1]) if train_loss else math.nan})
    curve = {"train_step": train_steps, "loss": train_loss, "eval_step": eval_steps, **{f"eval:{k}": v for k, v in evals.items()}}
    return final, curve
