"""The engine shared by every adamkit optimizer.

An algorithm module declares
  * its hyperparameters and their checks (``hyperparameters``),
  * the state tensors it keeps (``state_names``),
  * the per-step scalars, computed in double precision from an integer step
    count (``coefficients``), and
  * its element-wise update, written once (``update``): a function of the
    parameter, the gradient, the state tensors and those scalars.

The engine does the rest, the same way for every algorithm: argument checks,
param groups, lazy state, one step counter per parameter, grouping tensors by
device / dtype / step so that one call covers many tensors, choosing the
implementation, mixed precision, complex parameters, ``maximize``, closures and
an optional loss value, and a ``state_dict`` that keeps every flag and every
state dtype.

Implementations (selected per group, like torch):
  * ``foreach=False``: ``update`` is called with one tensor at a time (the
    readable reference path);
  * ``foreach=True``: ``update`` is called with :class:`TensorList` arguments,
    i.e. as ``torch._foreach_*`` multi-tensor kernels;
  * ``fused=True``: on CPU the fused C kernel (``adamkit.kernels.fused_cpu``,
    one pass over memory, one call per bucket), registered per algorithm; on
    other devices the compiled path;
  * ``fused="compiled"``: each rule restated with its scalars as tensors
    (``adamkit.kernels.compiled``, checked against ``update``) and compiled with
    ``torch.compile``, so that a learning-rate schedule never recompiles (CPU and CUDA).

With neither given, each device gets its fastest correct path, chosen by
measurement (``adamkit speed``): the fused kernel on CPU (the loop where no C
compiler is available; never foreach, slower than the loop on CPU), multi-tensor
foreach elsewhere.
"""
from __future__ import annotations

import difflib
import inspect
import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import Tensor

from ..kernels import fused_cpu
from ..kernels.tensorlist import TensorList
from . import _checks, checkpoint

_LOW_PRECISION = (torch.float16, torch.bfloat16)

#: hyperparameters every adamkit optimizer has, with their checks
COMMON_HYPERPARAMETERS: dict[str, _checks.Check] = {
    "lr": _checks.learning_rate,
    "maximize": _checks.flag,
    "foreach": _checks.optional_flag,
    "fused": lambda name, value: _fused_flag(name, value),
}


def _fused_flag(name: str, value: Any) -> bool | str | None:
    """``fused``: None, True, False or "compiled" (the torch.compile path)."""
    if isinstance(value, str):
        if value != "compiled":
            raise ValueError(f'{name} must be None, True, False or "compiled", got {value!r}')
        return value
    return _checks.optional_flag(name, value)


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the update is computed in (and the state is kept in) for a parameter dtype."""
    if dtype in _LOW_PRECISION:
        return torch.float32
    if dtype == torch.complex32:
        return torch.complex64
    return dtype


def _real_view(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


try:  # DTensor (FSDP2, tensor parallel); absent from very old torch builds
    from torch.distributed.tensor import DTensor, Partial
except ImportError:  # pragma: no cover
    DTensor = Partial = None


def local_tensor(t: Tensor) -> Tensor:
    """The local shard of a DTensor (the tensor itself otherwise).

    Every update rule is element-wise, so stepping each rank's shard of the
    parameter, gradient and state is exact; no kernel needs a sharding rule.
    """
    if DTensor is not None and isinstance(t, DTensor):
        if any(isinstance(placement, Partial) for placement in t.placements):
            raise RuntimeError(
                "adamkit got a DTensor with a Partial placement (an unreduced gradient); "
                "reduce it before optimizer.step()"
            )
        return t.to_local()
    return t


_FOREIGN: dict[str, str] | None = None


def _foreign_hyperparameters() -> dict[str, str]:
    """Hyperparameter name -> the optimizers that take it, over every adamkit optimizer class and the
    constructors of ``torch.optim``: param-group keys that are settings somewhere, so never mere metadata."""
    global _FOREIGN
    if _FOREIGN is None:
        owners: dict[str, list[str]] = defaultdict(list)
        pending = list(AdamkitOptimizer.__subclasses__())
        while pending:
            cls = pending.pop()
            pending += cls.__subclasses__()
            for key in {**COMMON_HYPERPARAMETERS, **cls.hyperparameters}:
                owners[key].append(f"adamkit.{cls.__name__}")
        for name in dir(torch.optim):
            cls = getattr(torch.optim, name)
            if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer:
                try:
                    names = inspect.signature(cls.__init__).parameters
                except (TypeError, ValueError):
                    continue
                for key in names:
                    if key not in ("self", "params", "args", "kwargs"):
                        owners[key].append(f"torch.optim.{name}")
        _FOREIGN = {k: ", ".join(sorted(set(v))[:3]) + (" and others" if len(set(v)) > 3 else "")
                    for k, v in owners.items()}
    return _FOREIGN


class AdamkitOptimizer(torch.optim.Optimizer):
    """Base class of adamkit's optimizers (see the module docstring)."""

    #: name in the registry (``adamkit.create_optimizer``)
    name: ClassVar[str] = ""
    #: hyperparameter name -> check, on top of COMMON_HYPERPARAMETERS
    hyperparameters: ClassVar[dict[str, _checks.Check]] = {}
    #: True for an optimizer whose update uses the loss value (AdamL): step() then needs a closure or loss=
    requires_loss: ClassVar[bool] = False

    def __init__(self, params: Iterable, defaults: Mapping[str, Any]):
        missing = set(self._checks) - set(defaults)
        if missing:  # a programming error in a subclass, not a user error
            raise AssertionError(f"{type(self).__name__} gives no default for {sorted(missing)}")
        defaults = self._checked(dict(defaults))
        super().__init__(params, defaults)

    @property
    def _checks(self) -> dict[str, _checks.Check]:
        """Hyperparameter name -> check (of the class, so that copies and unpickled optimizers have them)."""
        return {**COMMON_HYPERPARAMETERS, **type(self).hyperparameters}

    # ------------------------------------------------------------------ groups
    def _checked(self, group: dict[str, Any]) -> dict[str, Any]:
        for key, check in self._checks.items():
            if key in group:
                group[key] = check(key, group[key])
        if group.get("foreach") and group.get("fused"):
            raise ValueError("foreach=True and fused=True cannot both be set; choose one implementation")
        self.check_group(group)
        return group

    def check_group(self, group: dict[str, Any]) -> None:
        """Checks across hyperparameters of one group (override where needed)."""

    def _check_extra_group_key(self, key: Any) -> None:
        valid = sorted(self.defaults)
        owner = _foreign_hyperparameters().get(key)
        if owner is not None:
            raise ValueError(f"param group key {key!r} is a hyperparameter of {owner}, not of "
                             f"{type(self).__name__}, which would ignore it; valid: {valid}")
        if isinstance(key, str):
            near = difflib.get_close_matches(key, valid, n=1, cutoff=0.8)
            if near:
                raise ValueError(f"unknown hyperparameter {key!r} for {type(self).__name__}: did you mean "
                                 f"{near[0]!r}? valid: {valid}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; its hyperparameters are checked like the constructor's.

        Other keys are kept in the group and not used, as torch does: metadata such as a group's ``name`` or
        timm's ``lr_scale`` (read by its schedulers). A key that would be a silently ignored *setting* raises:
        a hyperparameter of another adamkit or ``torch.optim`` optimizer (``momentum``, ``delta``,
        ``capturable``, ...) and a near-miss of one of this optimizer's own (``weight_decy``).
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        for key in set(param_group) - set(self.defaults) - {"params", "param_names", "initial_lr"}:
            self._check_extra_group_key(key)
        merged = {**self.defaults, **param_group}
        self._checked(merged)
        param_group.update({k: merged[k] for k in param_group if k in self._checks})
        super().add_param_group(param_group)

    # ------------------------------------------------------------ per algorithm
    def state_names(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        """Names of the state tensors kept for each parameter of ``group``."""
        raise NotImplementedError

    def init_param_state(self, param: Tensor, group: Mapping[str, Any], names: tuple[str, ...] | None = None) -> dict:
        """The state of ``param``: created lazily (step 0 and every state tensor ``group`` needs), as a first step would."""
        state = self.state[param]
        if not state:
            state["step"] = 0
        for name in self.state_names(group) if names is None else names:
            if name not in state:
                state[name] = self.init_state_tensor(name, param, group)
        return state

    def init_state_tensor(self, name: str, param: Tensor, group: Mapping[str, Any]) -> Tensor:
        """A new state tensor for ``param``: zeros in the parameter's math dtype."""
        return torch.zeros_like(param, dtype=math_dtype(param.dtype), memory_format=torch.preserve_format)

    def coefficients(self, group: Mapping[str, Any], step: int, loss: float | None) -> SimpleNamespace:
        """Scalars of one step, in double precision; ``step`` counts the calls made before this one."""
        raise NotImplementedError

    @staticmethod
    def update(param, grad, state: dict, c: SimpleNamespace) -> None:
        """The element-wise update: tensors (or TensorLists) in, state and ``param`` changed in place.

        ``grad`` is never written to (it may be the user's ``p.grad``).
        """
        raise NotImplementedError

    #: the fused CPU kernel's arguments for a step, ``fused_call(c, maximize) -> KernelCall``, or None
    fused_call: ClassVar[Callable | None] = None

    # ------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:
        """Perform one optimisation step.

        Args:
            closure: re-evaluates the model and returns the loss (as in torch.optim).
            loss: the current loss value, for loss-aware optimizers; the other
                optimizers accept and return it, so one training loop serves all.

        Returns:
            The loss returned by ``closure``, else ``loss``.
        """
        if closure is not None:
            if loss is not None:
                raise ValueError("pass either closure or loss=, not both")
            with torch.enable_grad():
                loss = closure()
        loss_value = None
        if self.requires_loss:
            if loss is None:
                raise ValueError(
                    f"{type(self).__name__} uses the loss value: call step(closure) or step(loss=loss)"
                )
            loss_value = _loss_to_float(loss)
        if len(self.param_groups) > 1:  # a bad tensor in a later group raises before an earlier one is stepped
            checkpoint.check_groups_before_step(self)
        for group in self.param_groups:
            self._step_group(group, loss_value)
        return loss

    def _step_group(self, group: dict[str, Any], loss: float | None) -> None:
        names = self.state_names(group)
        if self._cached_fused_step(group, names, loss):
            return
        params = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            self.init_param_state(p, group, names)
            params.append(p)
        if not params:
            return
        impl = self._implementation(group, params)
        # every path checks shapes (and dtypes) before any tensor of the group is written
        checkpoint.check_step_tensors(self, params, [local_tensor(p) for p in params],
                                      [local_tensor(p.grad) for p in params],
                                      {n: [local_tensor(self.state[p][n]) for p in params] for n in names},
                                      check_dtypes=impl != "fused")
        # one call covers the tensors that share the per-step scalars
        buckets: dict[tuple, list[Tensor]] = defaultdict(list)
        for p in params:
            buckets[(p.device, p.dtype, self.state[p]["step"])].append(p)
        for bucket in buckets.values():
            call = self._step_bucket(group, bucket, names, loss, impl)
        if call is not None and len(buckets) == 1 and len(params) == len(group["params"]):
            self._remember_fused_table(group, names, params, call.names)

    # The fused kernel's pointer table of a group, kept between steps: with
    # thousands of small tensors, building it is most of a step's cost. It is
    # used only while it provably still applies (same parameter objects and
    # storage, same state tensors, one step count, every gradient present and
    # contiguous); otherwise the general path above runs and may rebuild it.
    def _remember_fused_table(self, group, names, params, kernel_names) -> None:
        states = {n: [self.state[p][n] for p in params] for n in kernel_names if n is not None}
        tables = self.__dict__.setdefault("_fused_tables", {})
        if fused_cpu.CachedLaunch.eligible(kernel_names, params, states):
            tables[id(group)] = (group, self.state, names, fused_cpu.CachedLaunch(kernel_names, params, states))
        else:
            tables.pop(id(group), None)

    def _cached_fused_step(self, group, names, loss) -> bool:
        entry = self.__dict__.get("_fused_tables", {}).get(id(group))
        if entry is None:
            return False
        cached_group, cached_state, cached_names, table = entry
        params = group["params"]
        if (cached_group is not group or cached_state is not self.state or cached_names != names
                or len(params) != table.count or self._implementation(group, params) != "fused"):
            return False
        grads = [p.grad for p in params]
        if any(g is None or g.layout != torch.strided for g in grads):
            return False
        states = [self.state.get(p) for p in params]
        if any(s is None for s in states):
            return False
        step = states[0]["step"]
        if any(s["step"] != step for s in states):
            return False
        c = self.coefficients(group, step, loss)
        call = type(self).fused_call(c, group["maximize"])
        if not table.matches(call.names, params, states) or not table.run(call, grads):
            return False
        for s in states:
            s["step"] = step + 1
        return True

    def _implementation(self, group: Mapping[str, Any], params: list[Tensor]) -> str:
        if group["fused"]:
            if group["fused"] == "compiled" or params[0].device.type != "cpu":
                return "compiled"
            if type(self).fused_call is None:
                raise RuntimeError(f"{type(self).__name__} has no fused implementation in this build")
            fused_cpu.load()  # raises FusedKernelUnavailable, saying why
            return "fused"
        if group["foreach"]:
            return "foreach"
        if group["foreach"] is None and group["fused"] is None:
            return self._default_implementation(params)
        return "loop"

    def _default_implementation(self, params: list[Tensor]) -> str:
        """With neither foreach nor fused given: the fused kernel on CPU (else the loop), multi-tensor elsewhere."""
        if params[0].device.type != "cpu":
            return "foreach"
        if type(self).fused_call is not None and fused_cpu.supports(params):
            if fused_cpu.available():
                return "fused"
            fused_cpu.warn_fallback()  # once per process: why, and how to fix it
        return "loop"

    def _step_bucket(self, group, bucket: list[Tensor], names, loss, impl: str):
        """Step one bucket; returns the fused kernel's call when the fused kernel ran it, else None."""
        step = self.state[bucket[0]]["step"]
        c = self.coefficients(group, step, loss)
        params = [local_tensor(p) for p in bucket]
        grads = [local_tensor(p.grad) for p in bucket]
        states = {name: [local_tensor(self.state[p][name]) for p in bucket] for name in names}
        call = self._fused_step(group, params, grads, states, c) if impl == "fused" else None
        if impl == "fused" and call is None:  # the default path met tensors the kernel does not take
            impl = "loop"
            checkpoint.check_step_tensors(self, bucket, params, grads, states, check_dtypes=True)
        if impl == "compiled":
            from ..kernels import compiled

            compiled.step(self, group, params, grads, states, c)
        elif impl == "foreach":
            self._eager_step(params, grads, states, c, group["maximize"], multi_tensor=True)
        elif impl == "loop":
            for i, (p, g) in enumerate(zip(params, grads)):
                one = {name: [tensors[i]] for name, tensors in states.items()}
                self._eager_step([p], [g], one, c, group["maximize"], multi_tensor=False)
        for p in bucket:
            self.state[p]["step"] = step + 1
        return call

    def _fused_step(self, group, params, grads, states, c):
        """Run the fused kernel and return its call; None when the default path meets tensors it does not take."""
        call = type(self).fused_call(c, group["maximize"])
        try:
            fused_cpu.launch(call, params, grads, states)
        except fused_cpu.Unsupported:  # raised before any tensor is written
            if group["fused"]:
                raise
            return None
        return call

    def _eager_step(self, params, grads, states, c, maximize: bool, multi_tensor: bool) -> None:
        """Run ``update`` on the real views, in float32 for half parameters: on one tensor or as TensorLists."""
        params = [_real_view(p) for p in params]
        grads = [_real_view(g) for g in grads]
        states = {name: [_real_view(s) for s in tensors] for name, tensors in states.items()}
        low = params[0].dtype in _LOW_PRECISION
        work = [p.float() for p in params] if low else params
        if low:  # float32 copies; the user's gradient is never written to
            grads = [g.to(torch.float32, copy=True) for g in grads]
        if maximize:
            grads = [g.neg_() for g in grads] if low else [torch.neg(g) for g in grads]
        if multi_tensor:
            self.update(TensorList(work), TensorList(grads), {n: TensorList(s) for n, s in states.items()}, c)
        else:
            self.update(work[0], grads[0], {n: s[0] for n, s in states.items()}, c)
        if low:
            torch._foreach_copy_(params, work)

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, with the algorithm named in each param group (``checkpoint.MARKER``)."""
        return checkpoint.state_dict(self, super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict: validated whole before anything changes (see ``adamkit.optim.checkpoint``).

        torch's load hooks are honoured as ``torch.optim.Optimizer`` does; a
        checkpoint of another algorithm, a missing state entry, a state of another
        shape or a bad hyperparameter raises and leaves the optimizer as it was.
        State tensors are kept in the parameter's math dtype (float32 for half
        parameters); a step saved as a tensor (as the references do) becomes an int.
        """
        checkpoint.load_state_dict(self, state_dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        checkpoint.after_setstate(self)

    # ------------------------------------------------------------ utilities
    @staticmethod
    def bias_corrections(betas: tuple[float, float], t: int) -> tuple[float, float]:
        """``(1 - beta1**t, 1 - beta2**t)`` in double precision."""
        beta1, beta2 = betas
        return 1.0 - beta1**t, 1.0 - beta2**t


def _loss_to_float(loss: Any) -> float:
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(f"the loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
        loss = loss.detach().item()
    value = float(loss)
    if not math.isfinite(value):
        raise ValueError(f"the loss must be finite, got {value}")
    return value
