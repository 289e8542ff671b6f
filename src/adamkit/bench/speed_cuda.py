"""``adamkit speed --device cuda``: step time, HBM roofline and peak memory of every optimizer and path on a GPU.

Every candidate is timed side by side, in one process, against ``torch.optim.AdamW(fused=True)`` on the same
device (AMSGrad also against torch's fused ``Adam(amsgrad=True)``): within each repetition torch's steps are
timed first and each candidate's step is divided by them, so the ratios compare like with like.

* **Step time**: each candidate is built on fresh copies of the layout's parameters, stepped
  :data:`WARMUP` times untimed (state created, kernels compiled), then each timed step runs between two
  CUDA events after a device synchronisation, so a step costs the longer of its host work (launches) and
  its device work. Reported: the median over the repetitions (min-max), and the ratio to torch's fused
  AdamW of the same repetition (median, min-max, geometric mean with its 95 % bootstrap interval).
* **Roofline**: the least memory traffic of a step, from the declarations (:func:`step_bytes`): read and
  write each parameter, read its gradient, read and write every state tensor the group keeps
  (``state_names``) in its stored format (``state_format.tensor_format``: float32, bfloat16, or int8
  codes plus their float32 scales, one per block of a row). For parameters of ``b`` bytes and ``S`` state
  tensors of ``s`` bytes per element, a parameter moves ``3b + 2Ss`` bytes: float32 Adam/AdamW
  ``12 + 16 = 28``, bfloat16 state ``12 + 8 = 20``, int8 state ``12 + 4 + 16/256 ≈ 16.06``. Divided by the
  peak bandwidth, measured first by a large device-to-device copy (:func:`copy_bandwidth`: reads and
  writes ``nbytes`` each), it gives the roofline time; the achieved share is the roofline time over the
  step time.
* **Peak extra memory**: ``torch.cuda.max_memory_allocated`` during a step (after
  ``reset_peak_memory_stats``) above ``memory_allocated`` before it, the largest over the timed steps, as a
  share of the optimizer state's bytes (measured: every state tensor, int8 scales included).
* **Low-precision state**: on ``state_layouts``, each algorithm and ``state_paths`` path with
  ``state_dtype`` bfloat16 and "int8" too, each also as a ratio to the float32-state step of the same path
  and repetition.

Layouts: ``resnet18``, ``one-big`` and ``many-small`` are those of the CPU command
(:func:`adamkit.bench.speed.layout_shapes`); ``decoder-1b`` is the parameters of a ~1B decoder
(:func:`decoder_shapes`): untied embedding and output matrices of a 50,304-token vocabulary, 16 layers of
width 2,048 with four attention matrices, two MLP matrices of 4x width and two norm vectors, and a final
norm: 1,011,419,136 parameters; ``--scale s`` shrinks it to about ``s`` times that (width and vocabulary
times ``sqrt(s)``).

``--dry-run`` prints the plan (layouts, sizes, candidates, the bytes of each step and the roofline
arithmetic) without a GPU. :func:`bf16_training` trains a small model with bfloat16 parameters (and
``param_rounding="stochastic"`` where the optimizer accepts it) against float32 parameters, and
:func:`readme` writes the results' README of ``scripts/gpu_check.sh`` with each target of the work's
issue met or not, from the measurements.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Callable

import torch
from torch import Tensor

from ..core import state_format
from ..registry import get_optimizer_class, list_optimizers

ALGORITHMS = tuple(list_optimizers())
#: the layouts of the GPU command, smallest parameter count per tensor first
LAYOUTS = ("resnet18", "many-small", "one-big", "decoder-1b")
#: adamkit's paths on CUDA, by the keyword arguments that choose them ("default": what users get)
PATHS = {"default": {}, "foreach": {"foreach": True}, "triton": {"fused": "triton"},
         "compiled": {"fused": "compiled"}, "loop": {"foreach": False}}
DEFAULT_PATHS = ("default", "foreach", "triton", "compiled")
STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": "int8"}
DEFAULT_STATE_LAYOUTS = ("one-big",)
DEFAULT_STATE_PATHS = ("default", "triton")
#: untimed steps of each candidate before its timed ones (state created, kernels compiled, first-step flags)
WARMUP = 3
#: bytes of each buffer of the bandwidth probe (a copy reads and writes this much)
COPY_BYTES = 1 << 30
#: the decoder layout at scale 1: vocabulary, width, layers, MLP width per unit of width
DECODER = dict(vocab=50304, width=2048, layers=16, mlp=4)
#: the yardstick's row name
TORCH_ADAMW = "adamw"
#: bytes per state element of each stored format (int8 scales counted separately)
_FORMAT_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}


# ------------------------------------------------------------------ layouts
def decoder_shapes(scale: float = 1.0) -> list[tuple[int, ...]]:
    """The parameter shapes of a ~1B decoder (:data:`DECODER`), or about ``scale`` times as many parameters:
    width and vocabulary times ``sqrt(scale)``, rounded to multiples of 64 (at least 64), 16 layers always."""
    check_scale(scale)
    root = math.sqrt(scale)
    d = 64 * max(1, round(DECODER["width"] * root / 64))
    vocab = 64 * max(1, round(DECODER["vocab"] * root / 64))
    f = DECODER["mlp"] * d
    shapes: list[tuple[int, ...]] = [(vocab, d)]  # token embedding
    for _ in range(DECODER["layers"]):
        shapes += [(d,), (d, d), (d, d), (d, d), (d, d),  # attention norm, q, k, v, o
                   (d,), (f, d), (d, f)]  # MLP norm, up, down
    return shapes + [(d,), (vocab, d)]  # final norm, output matrix (untied)


def check_scale(scale: float) -> float:
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise ValueError(f"--scale must be in (0, 1] (it shrinks the decoder-1b layout), got {scale!r}")
    return float(scale)


def layout_shapes(name: str, scale: float = 1.0) -> list[tuple[int, ...]]:
    """Parameter shapes of a GPU layout (``scale`` applies to ``decoder-1b`` only)."""
    if name == "decoder-1b":
        return decoder_shapes(scale)
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose from {', '.join(LAYOUTS)}")
    from .speed import layout_shapes as cpu_shapes

    return cpu_shapes(name)


def layout_label(name: str, scale: float = 1.0) -> str:
    return name if name != "decoder-1b" or scale == 1.0 else f"decoder-1b x{scale:g}"


# ------------------------------------------------------------- byte arithmetic
@lru_cache(maxsize=None)
def state_names(algorithm: str) -> tuple[str, ...]:
    """The state tensors a group with the algorithm's default hyperparameters keeps (``state_names``)."""
    cls = get_optimizer_class(algorithm)
    opt = cls([torch.nn.Parameter(torch.zeros(1))])
    names = tuple(opt.state_names(opt.param_groups[0]))
    undeclared = set(names) - set(cls.state_formats)
    if undeclared:  # every kept tensor has a declared kind
        raise AssertionError(f"{cls.__name__} keeps {sorted(undeclared)}, not in its state_formats")
    return names


def stored_format(state_dtype: str, shape: tuple[int, ...]) -> str:
    """How a state tensor of a float32-math parameter of ``shape`` is stored under ``state_dtype``."""
    if state_dtype == "float32":
        return "float32"
    return state_format.tensor_format(STATE_DTYPES[state_dtype], torch.empty(shape, device="meta"))


def step_bytes(algorithm: str, shapes, state_dtype: str = "float32", param_dtype: torch.dtype = torch.float32) -> dict:
    """The least memory traffic of one step of ``algorithm`` on parameters of ``shapes``, from its declaration.

    ``bytes_per_step = 2 * param_bytes + grad_bytes + 2 * state_bytes``: each parameter read and written, its
    gradient (of the parameter's dtype) read, each state tensor (its stored bytes, int8 scales included)
    read and written.
    """
    if state_dtype not in STATE_DTYPES:
        raise ValueError(f"state_dtype must be one of {', '.join(STATE_DTYPES)}, got {state_dtype!r}")
    names = state_names(algorithm)
    size = torch.empty((), dtype=param_dtype).element_size()
    params = state = 0
    formats: dict[str, int] = {}
    for shape in shapes:
        n = math.prod(shape)
        params += n
        fmt = stored_format(state_dtype, tuple(shape))
        formats[fmt] = formats.get(fmt, 0) + n
        per_tensor = _FORMAT_BYTES[fmt] * n
        if fmt == "int8":
            per_tensor += 4 * math.prod(state_format.scale_shape(tuple(shape)))
        state += len(names) * per_tensor
    param_bytes = grad_bytes = params * size
    return dict(algorithm=algorithm, state_dtype=state_dtype, state_names=names, params=params,
                param_bytes=param_bytes, grad_bytes=grad_bytes, state_bytes=state,
                stored_formats=formats, bytes_per_step=2 * param_bytes + grad_bytes + 2 * state)


# ------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class Candidate:
    library: str  # adamkit / torch
    optimizer: str
    path: str
    state_dtype: str = "float32"
    make: Callable = field(compare=False, repr=False, default=None)

    @property
    def label(self) -> str:
        return f"{self.library}:{self.optimizer}:{self.path}:{self.state_dtype}"


def candidates(layout: str, algorithms, paths, state_layouts=(), state_dtypes=(), state_paths=(),
               state_algorithms=None) -> list[Candidate]:
    """torch's fused AdamW first (the yardstick), the torch references the algorithms declare, then adamkit's
    algorithms on each path with float32 state, and on ``state_layouts`` the ``state_paths`` with each
    low-precision ``state_dtypes`` (for ``state_algorithms``; None: every one of ``algorithms``)."""
    out = [Candidate("torch", TORCH_ADAMW, "fused", make=lambda ps: torch.optim.AdamW(ps, fused=True))]
    for algo in algorithms:
        ref = get_optimizer_class(algo).torch_reference
        if ref is not None:
            name, kwargs = ref
            out.append(Candidate("torch", algo, "fused",
                                 make=lambda ps, f=getattr(torch.optim, name), kw=kwargs: f(ps, fused=True, **kw)))
    low = [d for d in state_dtypes if d != "float32"] if layout in state_layouts else []
    for algo in algorithms:
        cls = get_optimizer_class(algo)
        low_here = low if state_algorithms is None or algo in state_algorithms else []
        runs = [(p, "float32") for p in paths]
        runs += [(p, "float32") for p in state_paths if low_here and p not in paths]
        runs += [(p, d) for d in low_here for p in state_paths]
        for path, dtype in runs:
            kw = dict(PATHS[path])
            if dtype != "float32":
                kw["state_dtype"] = STATE_DTYPES[dtype]
            out.append(Candidate("adamkit", algo, path, dtype, make=lambda ps, cls=cls, kw=kw: cls(ps, **kw)))
    return out


# ------------------------------------------------------------------ the device
class Clock:
    """Timing and memory on a device: CUDA events and the caching allocator's statistics on CUDA; on CPU (for
    tests of this module only) the host clock and no memory figures."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time(self, fn) -> float:
        """Seconds ``fn`` takes: from an idle device to the end of the work it enqueued."""
        self.sync()
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def allocated(self) -> int | None:
        return torch.cuda.memory_allocated(self.device) if self.cuda else None

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else None

    def release(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def copy_bandwidth(device="cuda", nbytes: int = COPY_BYTES, repeats: int = 10) -> float:
    """Peak memory bandwidth in bytes/s: the best of ``repeats`` device-to-device copies of ``nbytes`` (each
    reads and writes ``nbytes``)."""
    clock = Clock(device)
    src = torch.ones(nbytes // 4, device=clock.device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # every page touched, the copy kernel loaded
    best = min(clock.time(lambda: dst.copy_(src)) for _ in range(repeats))
    del src, dst
    clock.release()
    return 2 * nbytes / best


def _state_bytes(opt) -> int:
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
               if isinstance(v, Tensor) and v.dim() > 0)


@dataclass
class Sample:
    seconds: float  # median of the timed steps
    state_bytes: int
    peak_extra_bytes: int | None  # the largest over the timed steps
    implementation: str


def _time_candidate(cand: Candidate, init, grads, steps: int, clock: Clock) -> Sample:
    params = [t.clone() for t in init]
    for p, g in zip(params, grads):
        p.grad = g  # shared: no optimizer writes to the gradient
    opt = cand.make(params)
    try:
        for _ in range(WARMUP):
            opt.step()
        clock.sync()
        if cand.library == "adamkit":
            from ..kernels import implementation_of

            implementation = implementation_of(opt)
        else:
            implementation = cand.path
        times, peak = [], None
        for _ in range(steps):
            clock.sync()
            before = clock.allocated()
            clock.reset_peak()
            times.append(clock.time(opt.step))
            top = clock.peak()
            if top is not None:
                peak = max(peak or 0, top - before)
        return Sample(statistics.median(times), _state_bytes(opt), peak, implementation)
    finally:
        del opt, params
        clock.release()


def _spread(values):
    return [min(values), max(values)] if values else None


def _interval(ratios):
    from .speed import _ratio_interval

    return _ratio_interval(ratios)


def _layout_tensors(shapes, device):
    gen = torch.Generator(device=device).manual_seed(0)
    init = [torch.randn(s, generator=gen, device=device) for s in shapes]
    grads = [torch.randn(s, generator=gen, device=device).mul_(1e-2) for s in shapes]
    return init, grads


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text[:300]


def measure(layouts=LAYOUTS, algorithms=ALGORITHMS, paths=DEFAULT_PATHS, state_layouts=DEFAULT_STATE_LAYOUTS,
            state_dtypes=tuple(STATE_DTYPES), state_paths=DEFAULT_STATE_PATHS, state_algorithms=None,
            repeats: int = 5, steps: int = 3, scale: float = 1.0, device="cuda", log=print, on_layout=None, bandwidth: float | None = None,
            shapes_of=layout_shapes) -> dict:
    """Time every candidate (:func:`candidates`) on every layout; returns ``dict(machine=..., rows=[...])``.

    A candidate that raises (a path that cannot step here, memory) gets a row with its ``error`` and the run
    goes on. ``on_layout(result)`` is called after each layout with the rows so far (the command writes its
    JSON there, so a run cut short keeps its finished layouts).
    """
    clock = Clock(device)
    if bandwidth is None:
        bandwidth = copy_bandwidth(clock.device, COPY_BYTES if clock.cuda else 1 << 24)
    log(f"peak bandwidth (device copy): {bandwidth / 1e9:.0f} GB/s")
    result = dict(machine=machine_info(bandwidth, clock.device), rows=[], scale=scale, warmup=WARMUP,
                  repeats=repeats, steps=steps)
    for layout in layouts:
        shapes = shapes_of(layout, scale) if layout == "decoder-1b" else shapes_of(layout)
        label = layout_label(layout, scale)
        init, grads = _layout_tensors(shapes, clock.device)
        n = sum(t.numel() for t in init)
        cands = candidates(layout, algorithms, paths, state_layouts, state_dtypes, state_paths, state_algorithms)
        log(f"{label}: {len(shapes)} tensors, {n / 1e6:.2f}M parameters, {len(cands)} candidates")
        samples: dict[str, list[Sample]] = {c.label: [] for c in cands}
        errors: dict[str, str] = {}
        ratios = {c.label: [] for c in cands}
        to_ref = {c.label: [] for c in cands}
        to_f32 = {c.label: [] for c in cands}
        for rep in range(repeats):
            now: dict[str, Sample] = {}
            for cand in cands:
                if cand.label in errors:
                    continue
                try:
                    now[cand.label] = _time_candidate(cand, init, grads, steps, clock)
                except Exception as exc:  # noqa: BLE001 - a row says what failed; the other candidates go on
                    errors[cand.label] = _error_text(exc)
                    log(f"  {cand.label}: {errors[cand.label]}")
                    clock.release()
                    continue
                samples[cand.label].append(now[cand.label])
            yard = now.get(f"torch:{TORCH_ADAMW}:fused:float32")
            for cand in cands:
                s = now.get(cand.label)
                if s is None:
                    continue
                if yard is not None:
                    ratios[cand.label].append(s.seconds / yard.seconds)
                ref = now.get(f"torch:{cand.optimizer}:fused:float32", yard)
                if ref is not None:
                    to_ref[cand.label].append(s.seconds / ref.seconds)
                base = now.get(f"{cand.library}:{cand.optimizer}:{cand.path}:float32")
                if base is not None:
                    to_f32[cand.label].append(s.seconds / base.seconds)
        for cand in cands:
            result["rows"].append(_row(cand, label, layout, shapes, samples[cand.label], errors.get(cand.label),
                                       ratios[cand.label], to_ref[cand.label], to_f32[cand.label], bandwidth,
                                       repeats))
        del init, grads
        clock.release()
        if on_layout is not None:
            on_layout(result)
    return result


def _row(cand, label, layout, shapes, ss, error, ratios, to_ref, to_f32, bandwidth, repeats) -> dict:
    plan = step_bytes(cand.optimizer, shapes, cand.state_dtype)
    row = dict(layout=label, layout_name=layout, library=cand.library, optimizer=cand.optimizer, path=cand.path,
               state_dtype=cand.state_dtype, params=plan["params"], bytes_per_step=plan["bytes_per_step"],
               planned_state_bytes=plan["state_bytes"], roofline_ms=plan["bytes_per_step"] / bandwidth * 1e3,
               repeats=len(ss), error=error)
    if not ss:
        return row
    secs = [s.seconds for s in ss]
    med = statistics.median(secs)
    peaks = [s.peak_extra_bytes for s in ss if s.peak_extra_bytes is not None]
    state = ss[0].state_bytes
    row.update(
        implementation=ss[0].implementation, step_ms=med * 1e3, step_ms_spread=[x * 1e3 for x in _spread(secs)],
        ratio_to_torch_fused_adamw=statistics.median(ratios) if ratios else None, ratio_spread=_spread(ratios),
        ratio_interval=_interval(ratios),
        ratio_to_reference=statistics.median(to_ref) if to_ref else None, ratio_to_reference_interval=_interval(to_ref),
        ratio_to_float32=statistics.median(to_f32) if to_f32 else None, ratio_to_float32_spread=_spread(to_f32),
        ratio_to_float32_interval=_interval(to_f32),
        roofline_share=row["roofline_ms"] / (med * 1e3), state_bytes=state,
        state_bytes_per_param=state / plan["params"],
        peak_extra_bytes=max(peaks) if peaks else None,
        peak_extra_share=(max(peaks) / state if state else None) if peaks else None,
    )
    return row


# ------------------------------------------------------------------ environment
def machine_info(bandwidth: float | None = None, device="cuda") -> dict:
    device = torch.device(device)
    info = dict(date=date.today().isoformat(), torch=torch.__version__, cuda=torch.version.cuda,
                triton=_version("triton"), device=str(device),
                peak_bandwidth_gbs=None if bandwidth is None else bandwidth / 1e9)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=props.total_memory / 2**30, driver=_driver())
    return info


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - absent or broken: no version
        return None


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------ the plan
def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def plan(layouts=LAYOUTS, algorithms=ALGORITHMS, paths=DEFAULT_PATHS, state_layouts=DEFAULT_STATE_LAYOUTS,
         state_dtypes=tuple(STATE_DTYPES), state_paths=DEFAULT_STATE_PATHS, state_algorithms=None, repeats: int = 5,
         steps: int = 3, scale: float = 1.0) -> str:
    """What ``adamkit speed --device cuda`` would do, as text (``--dry-run``): no tensor is allocated."""
    lines = [
        "adamkit speed --device cuda: plan (dry run, nothing is timed)",
        f"yardstick: torch.optim.AdamW(fused=True) on the same device; every ratio within one repetition; "
        f"{repeats} repetitions x {steps} timed steps per candidate, after {WARMUP} warm-up steps, each step "
        "between CUDA events after a device synchronisation",
        f"peak bandwidth: measured first, the best of 10 device-to-device copies of {COPY_BYTES / 2**30:g} GiB "
        f"(each moves {2 * COPY_BYTES / 2**30:g} GiB)",
        "bytes per step = 2 x parameter bytes + gradient bytes + 2 x state bytes (int8 scales included); "
        "roofline ms = bytes per step / peak bandwidth (column: at 1 TB/s; divide by the measured TB/s)",
        "peak extra memory: max_memory_allocated during a step - memory_allocated before it, as % of the state bytes",
        "",
    ]
    for layout in layouts:
        shapes = layout_shapes(layout, scale)
        cands = candidates(layout, algorithms, paths, state_layouts, state_dtypes, state_paths, state_algorithms)
        n = sum(math.prod(s) for s in shapes)
        lines += [f"layout {layout_label(layout, scale)}: {len(shapes)} tensors, {n:,} parameters "
                  f"({_mb(4 * n)} float32), {len(cands)} candidates",
                  "| library | optimizer | path | state_dtype | state tensors | state bytes | bytes/step "
                  "| B/param/step | roofline ms at 1 TB/s |", "|---|---|---|---|---|---|---|---|---|"]
        for cand in cands:
            p = step_bytes(cand.optimizer, shapes, cand.state_dtype)
            lines.append(f"| {cand.library} | {cand.optimizer} | {cand.path} | {cand.state_dtype} | "
                         f"{','.join(p['state_names'])} | {_mb(p['state_bytes'])} | {_mb(p['bytes_per_step'])} | "
                         f"{p['bytes_per_step'] / n:.3f} | {p['bytes_per_step'] / 1e12 * 1e3:.3f} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------ reporting
def _ratio_text(r, key="ratio_to_torch_fused_adamw", spread="ratio_spread", interval="ratio_interval") -> str:
    if r.get(key) is None:
        return "n/a"
    text = f"{r[key]:.2f}"
    if r.get(spread):
        text += f" ({r[spread][0]:.2f}-{r[spread][1]:.2f})"
    iv = r.get(interval)
    if iv:
        text += f", {iv[0]:.2f} [{iv[1]:.2f}-{iv[2]:.2f}]"
    return text


def _peak_text(r) -> str:
    if r.get("peak_extra_bytes") is None:
        return "n/a"
    share = r.get("peak_extra_share")
    return f"{r['peak_extra_bytes'] / 2**20:,.1f} MiB" + ("" if share is None else f" ({100 * share:.1f}%)")


def _path_text(r) -> str:
    impl = r.get("implementation")
    return r["path"] if r["library"] != "adamkit" or r["path"] != "default" or not impl else f"default ({impl})"


def markdown(result: dict) -> str:
    """The speed table (float32 state) and the low-precision state table."""
    m = result["machine"]
    bw = m.get("peak_bandwidth_gbs")
    lines = [
        f"Measured {m['date']} on {m.get('gpu', m['device'])} (driver {m.get('driver') or 'n/a'}), torch "
        f"{m['torch']} (CUDA {m.get('cuda') or 'n/a'}), triton {m.get('triton') or 'n/a'}; peak bandwidth "
        f"{'n/a' if bw is None else f'{bw:,.0f} GB/s'} (device copy). Step times: median over "
        f"{result.get('repeats')} repetitions (min-max) of the median of {result.get('steps')} steps timed with "
        f"CUDA events after {result.get('warmup')} warm-up steps. Ratios (lower is faster): median (min-max), "
        "geometric mean [95 % bootstrap interval], each to the step of the same repetition. Roofline: the "
        "declared bytes of a step over the peak bandwidth. Peak extra: max_memory_allocated during a step above "
        "the memory before it (% of the state's bytes).",
        "",
        "| layout | library | optimizer | path | step ms (min-max) | x torch fused AdamW | roofline ms | % roofline "
        "| state B/param | peak extra (% state) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = result["rows"]
    for r in rows:
        if r["state_dtype"] != "float32":
            continue
        lines.append(_line(r, [_ratio_text(r)]))
    low = [r for r in rows if r["state_dtype"] != "float32" or any(
        o["state_dtype"] != "float32" and o["layout"] == r["layout"] and o["optimizer"] == r["optimizer"]
        and o["path"] == r["path"] for o in rows)]
    low = [r for r in low if r["library"] == "adamkit"]
    if low:
        lines += ["", "Low-precision state: each step also over the float32-state step of the same path and "
                      "repetition.", "",
                  "| layout | optimizer | path | state_dtype | step ms (min-max) | x float32 state | roofline ms "
                  "| % roofline | state B/param | peak extra (% state) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in low:
            ratio = _ratio_text(r, "ratio_to_float32", "ratio_to_float32_spread", "ratio_to_float32_interval")
            lines.append(_line(r, [ratio], state=True))
    return "\n".join(lines)


def _line(r, ratio, state=False) -> str:
    head = ([r["layout"], r["optimizer"], _path_text(r), r["state_dtype"]] if state
            else [r["layout"], r["library"], r["optimizer"], _path_text(r)])
    if r.get("step_ms") is None:
        return "| " + " | ".join(head + [f"failed: {r.get('error') or 'not measured'}"] + [""] * 5) + " |"
    cells = head + [f"{r['step_ms']:.3f} ({r['step_ms_spread'][0]:.3f}-{r['step_ms_spread'][1]:.3f})", *ratio,
                    f"{r['roofline_ms']:.3f}", f"{100 * r['roofline_share']:.0f}%",
                    f"{r['state_bytes_per_param']:.2f}", _peak_text(r)]
    return "| " + " | ".join(cells) + " |"


# ------------------------------------------------------------------ targets
#: the targets of the GPU work (issue 23), each checked from the measurements by :func:`targets`
TARGET_TEXT = {
    "speed": "every algorithm's default CUDA step <= 1.1x torch's fused AdamW on resnet18, one-big and decoder-1b",
    "roofline": "every algorithm's default CUDA step >= 80 % of the HBM roofline on one-big",
    "many-small": "every algorithm's default CUDA step <= 1.0x torch's fused AdamW on many-small",
    "int8": "int8 state <= 1.0x the float32-state step on one-big (default path)",
    "bfloat16": "bfloat16 state <= 1.0x the float32-state step on one-big (default path)",
    "memory": "peak extra memory of a default CUDA step <= 5 % of the state's size, for every state format",
    "bf16-params": "bfloat16 parameters with param_rounding=\"stochastic\" train a small model to the float32 loss",
}


def _ratio(r, key="ratio_to_torch_fused_adamw", interval="ratio_interval"):
    iv = r.get(interval)
    return iv[0] if iv else r.get(key)


def _check(rows, value, limit, above=False, what="") -> tuple[str, str]:
    """(status, evidence) of ``value(row) <= limit`` (``>=`` with ``above``) over ``rows``."""
    if not rows:
        return "not measured", "no rows"
    missing = [r for r in rows if value(r) is None]
    vals = [(value(r), r) for r in rows if value(r) is not None]
    if not vals:
        return "not measured", f"{len(missing)} rows without a figure (" + "; ".join(
            sorted({str(r.get("error")) for r in missing}))[:200] + ")"
    worst, wr = (min if above else max)(vals, key=lambda v: v[0])
    ok = all((v >= limit) if above else (v <= limit) for v, _ in vals)
    evidence = (f"worst {what}{worst:.3g} ({wr['layout']} {wr['optimizer']} {_path_text(wr)} {wr['state_dtype']}); "
                f"{len(vals)} rows")
    if missing:
        evidence += f", {len(missing)} not measured"
        if ok:
            return "not measured", evidence
    return ("met" if ok else "not met"), evidence


def targets(result: dict | None, bf16: dict | None = None) -> list[dict]:
    """Each target of :data:`TARGET_TEXT` with ``status`` ("met", "not met", "not measured") and ``evidence``."""
    rows = [r for r in (result or {}).get("rows", []) if r["library"] == "adamkit" and r["path"] == "default"]
    f32 = [r for r in rows if r["state_dtype"] == "float32"]

    def on(layouts, rs=f32):
        return [r for r in rs if r["layout_name"] in layouts]

    out = {}
    big3 = on(("resnet18", "one-big", "decoder-1b"))
    status, ev = _check(big3, _ratio, 1.1, what="x")
    if status == "met" and {r["layout_name"] for r in big3} != {"resnet18", "one-big", "decoder-1b"}:
        status, ev = "not measured", ev + "; not every layout measured"
    if status != "not measured" and any(r["layout"] != r["layout_name"] for r in big3):
        ev += " (decoder-1b scaled down)"
    out["speed"] = (status, ev)
    out["roofline"] = _check(on(("one-big",)), lambda r: r.get("roofline_share"), 0.8, above=True, what="share ")
    out["many-small"] = _check(on(("many-small",)), _ratio, 1.0, what="x")
    for dtype in ("int8", "bfloat16"):
        out[dtype] = _check(on(("one-big",), [r for r in rows if r["state_dtype"] == dtype]),
                            lambda r: _ratio(r, "ratio_to_float32", "ratio_to_float32_interval"), 1.0, what="x")
    formats = {r["state_dtype"] for r in rows}
    status, ev = _check(rows, lambda r: r.get("peak_extra_share"), 0.05, what="share ")
    if status == "met" and formats != set(STATE_DTYPES):
        status, ev = "not measured", ev + f"; state formats measured: {sorted(formats)}"
    out["memory"] = (status, ev)
    out["bf16-params"] = _bf16_target(bf16)
    return [dict(key=k, target=TARGET_TEXT[k], status=out[k][0], evidence=out[k][1]) for k in TARGET_TEXT]


def _bf16_target(bf16: dict | None) -> tuple[str, str]:
    if not bf16:
        return "not measured", "no bf16 training result"
    if bf16.get("skipped"):
        return "not measured", bf16["skipped"]
    f32, sr = bf16["final_loss"]["float32"], bf16["final_loss"].get("bfloat16-stochastic")
    if sr is None:
        return "not measured", "no stochastic-rounding run"
    rel = sr / f32 - 1
    near = bf16["final_loss"].get("bfloat16-nearest")
    ev = (f"final loss float32 {f32:.4g}, bfloat16 stochastic {sr:.4g} ({100 * rel:+.1f}%)"
          + ("" if near is None else f", bfloat16 nearest {near:.4g}") + f"; tolerance {100 * bf16['tolerance']:.0f}%")
    return ("met" if rel <= bf16["tolerance"] else "not met"), ev


# ------------------------------------------------------------------ bf16 parameters
def bf16_training(device="cuda", steps: int = 400, algorithm: str = "adamw", tolerance: float = 0.05,
                  seed: int = 0, path: str = "default") -> dict:
    """A small MLP fitted to a fixed teacher with float32 parameters, with bfloat16 parameters and
    ``param_rounding="stochastic"``, and with bfloat16 parameters rounded to nearest; the final loss is the
    mean over the last tenth of the steps of the float32 evaluation of the parameters on a fixed set.

    Returns ``final_loss`` per run and ``tolerance`` (the stochastic run meets the float32 loss when it is at
    most ``1 + tolerance`` times it); ``skipped`` says why where the optimizer refuses ``param_rounding``.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    d_in, width, d_out, batch = 64, 256, 16, 256
    teacher = [torch.randn(d_in, width, generator=gen) / d_in ** 0.5, torch.randn(width, d_out, generator=gen) / width ** 0.5]
    init = [torch.randn(d_in, width, generator=gen) / d_in ** 0.5, torch.zeros(width),
            torch.randn(width, d_out, generator=gen) / width ** 0.5, torch.zeros(d_out)]
    xs = torch.randn(steps, batch, d_in, generator=gen)
    x_eval = torch.randn(1024, d_in, generator=gen)

    def forward(ps, x):
        return torch.tanh(x @ ps[0] + ps[1]) @ ps[2] + ps[3]

    def target(x):
        return torch.tanh(x @ teacher[0]) @ teacher[1]

    y_eval = target(x_eval).to(device)
    x_eval = x_eval.to(device)
    cls = get_optimizer_class(algorithm)
    runs = {"float32": (torch.float32, {}), "bfloat16-stochastic": (torch.bfloat16, {"param_rounding": "stochastic"}),
            "bfloat16-nearest": (torch.bfloat16, {})}
    out = dict(algorithm=algorithm, path=path, steps=steps, tolerance=tolerance, device=str(device), final_loss={},
               curves={})
    try:  # before any training: an optimizer without the key is said so at once
        cls([torch.zeros(2, dtype=torch.bfloat16, device=device, requires_grad=True)], param_rounding="stochastic")
    except (TypeError, ValueError) as exc:
        if "param_rounding" not in str(exc):
            raise
        out["skipped"] = (f'{cls.__name__} refuses param_rounding="stochastic" in this version '
                          f"({_error_text(exc)}): the bf16-parameter check is skipped")
        return out
    for name, (dtype, extra) in runs.items():
        ps = [t.to(device=device, dtype=dtype, copy=True).requires_grad_() for t in init]  # init stays as it is
        opt = cls(ps, lr=1e-3, weight_decay=0.01, **PATHS[path], **extra)
        evals = []
        for i in range(steps):
            x = xs[i].to(device)
            loss = torch.nn.functional.mse_loss(forward(ps, x.to(dtype)).float(), target(xs[i]).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                evals.append(torch.nn.functional.mse_loss(forward([p.float() for p in ps], x_eval), y_eval))
        curve = torch.stack(evals).cpu()
        tail = max(1, steps // 10)
        out["final_loss"][name] = curve[-tail:].mean().item()
        out["curves"][name] = curve[:: max(1, steps // 20)].tolist()
    return out


def bf16_markdown(bf16: dict) -> str:
    if bf16.get("skipped"):
        return f"bfloat16 parameters: skipped: {bf16['skipped']}"
    lines = [f"bfloat16 parameters: {bf16['algorithm']} ({bf16['path']} path), {bf16['steps']} steps of a small MLP "
             "fitted to a fixed teacher; final loss = mean float32 evaluation loss over the last tenth of the steps.",
             "", "| parameters | final loss | x float32 |", "|---|---|---|"]
    f32 = bf16["final_loss"]["float32"]
    for name, loss in bf16["final_loss"].items():
        lines.append(f"| {name} | {loss:.5g} | {loss / f32:.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ the results README
_PYTEST_LINE = re.compile(r"^(\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")
_SKIP_LINE = re.compile(r"^SKIPPED \[(\d+)\] [^:]+:\d+: (.*)$")


def pytest_summary(log_text: str) -> dict:
    """Counts of a ``pytest -v -rs`` log's outcomes (readable from a run cut short), its skip reasons, and the
    failed tests."""
    counts: dict[str, int] = {}
    failed = []
    for line in log_text.splitlines():
        m = _PYTEST_LINE.match(line)
        if m:
            counts[m.group(2)] = counts.get(m.group(2), 0) + 1
            if m.group(2) in ("FAILED", "ERROR"):
                failed.append(m.group(1))
    reasons = {}
    for line in log_text.splitlines():
        m = _SKIP_LINE.match(line)
        if m:
            reasons[m.group(2)] = reasons.get(m.group(2), 0) + int(m.group(1))
    return dict(counts=counts, skip_reasons=reasons, failed=failed)


def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def _json(path):
    text = _read(path)
    try:
        return None if text is None else json.loads(text)
    except json.JSONDecodeError:
        return None


def readme(out: str) -> str:
    """The README of a ``scripts/gpu_check.sh`` results folder, from what its sections left in ``out``."""
    env = _json(os.path.join(out, "env.json")) or {}
    speed = _json(os.path.join(out, "speed.json"))
    extra = [_json(os.path.join(out, f)) for f in sorted(os.listdir(out)) if f.startswith("speed-") and f.endswith(".json")]
    bf16 = _json(os.path.join(out, "bf16.json"))
    sections = []
    for line in (_read(os.path.join(out, "sections.tsv")) or "").splitlines():
        name, rc, secs, limit = (line.split("\t") + ["", "", "", ""])[:4]
        sections.append((name, rc, secs, limit))
    lines = [f"# GPU check, {env.get('date', date.today().isoformat())}", "",
             "Written by `scripts/gpu_check.sh` (the command that reproduces every figure below); each section's "
             "log is beside this file.", "",
             "## Machine", ""]
    for key in ("gpu", "capability", "gpu_memory_gib", "driver", "torch", "cuda", "triton", "python", "adamkit",
                "git"):
        if env.get(key) is not None:
            value = env[key]
            lines.append(f"- {key}: {value:.1f}" if isinstance(value, float) else f"- {key}: {value}")
    if not env:
        lines.append("- not recorded (env.json missing)")
    lines += ["", "## Sections", "", "| section | exit | seconds | limit s |", "|---|---|---|---|"]
    for name, rc, secs, limit in sections:
        state = {"0": "0 (ok)", "124": "124 (timed out)", "137": "137 (killed)"}.get(rc, rc)
        lines.append(f"| {name} | {state} | {secs} | {limit} |")
    lines += ["", "## Tests on CUDA", ""]
    for name, *_ in sections:
        if not name.startswith("tests"):
            continue
        summary = pytest_summary(_read(os.path.join(out, f"{name}.log")) or "")
        counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(summary["counts"].items())) or "no test ran"
        lines.append(f"- {name}: {counts}")
        lines += [f"  - failed: {t}" for t in summary["failed"][:30]]
        lines += [f"  - skipped ({n}): {reason}" for reason, n in summary["skip_reasons"].items()]
    lines += ["", "## Speed and memory", ""]
    results = [r for r in [speed, *extra] if r]
    if not results:
        lines.append("Not measured (no speed JSON: see the speed section's log).")
    for r in results:
        lines += [markdown(r), ""]
    lines += ["## bfloat16 parameters", "", bf16_markdown(bf16) if bf16 else "Not measured (no bf16.json).", ""]
    merged = None
    if results:
        merged = dict(rows=[row for r in results for row in r["rows"]])
    lines += ["## Targets (issue 23)", "", "| target | status | evidence |", "|---|---|---|"]
    for t in targets(merged, bf16):
        lines.append(f"| {t['target']} | **{t['status']}** | {t['evidence']} |")
    return "\n".join(lines) + "\n"


def environment() -> dict:
    """What ``scripts/gpu_check.sh`` records about the machine (env.json)."""
    import platform

    from .._version import __version__

    info = machine_info(None, "cuda" if torch.cuda.is_available() else "cpu")
    info.update(python=platform.python_version(), adamkit=__version__, cuda_available=torch.cuda.is_available())
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    return info


def main(argv=None) -> int:
    """``python -m adamkit.bench.speed_cuda env | bf16 OUT.json | readme DIR``: the pieces of gpu_check.sh."""
    parser = argparse.ArgumentParser(prog="python -m adamkit.bench.speed_cuda")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("env", help="print the machine's description as JSON")
    p = sub.add_parser("bf16", help="bfloat16 parameters against float32 parameters, as JSON")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--json", required=True)
    p = sub.add_parser("readme", help="write DIR/README.md from the results in DIR")
    p.add_argument("dir")
    args = parser.parse_args(argv)
    if args.what == "env":
        print(json.dumps(environment(), indent=1))
    elif args.what == "bf16":
        result = bf16_training(args.device, args.steps)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(bf16_markdown(result))
    else:
        text = readme(args.dir)
        with open(os.path.join(args.dir, "README.md"), "w") as fh:
            fh.write(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
