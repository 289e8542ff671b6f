"""The engine shared by every adamkit optimizer.

An algorithm module declares (see :mod:`adamkit.core.declaration`)
  * its hyperparameters, once: default, check and doc (``hyperparameters``),
    from which its constructor, defaults and checks are generated,
  * the state tensors it keeps (``state_names``),
  * the coefficients of a step (``coefficients``): static flags and the scalars,
    computed in double precision from an integer step count,
  * its element-wise update, written once (``update``), and
  * its fused C kernel (``fused_kernel``).

The engine does the rest, the same way for every algorithm: argument checks,
param groups, lazy state, one step counter per parameter, grouping tensors by
device / dtype / step / state format so that one call covers many tensors,
closures and an optional loss value, and a ``state_dict`` that keeps every flag
and every state dtype. Which backend steps a group, and what happens where it
cannot, is :func:`adamkit.kernels.choose` and :func:`adamkit.kernels.run`; how a
bucket runs (mixed precision, complex parameters, ``maximize``) is the backend's
business. The engine names no backend.

A step has two phases. The check phase asks each group's backend whether it can
step the whole group from what it kept last time (the fused kernel's pointer
tables: :meth:`~adamkit.kernels.Backend.prepare`), and checks every other group's
tensors; nothing is written until every group passed. The launch phase then steps
each group, either from what was kept or on the general path (``_step_group``),
after which the backend is told how the group went
(:meth:`~adamkit.kernels.Backend.finish_group`).

Low-precision state (``state_dtype``, a common hyperparameter): the state of such
a group is created in the stored format with each parameter's ``rounding_seed``,
checked against the group's ``state_dtype`` every step (a value changed by hand
raises, naming ``convert_state_dtype``), bucketed by format too and handed to the
backend with a ``state_format.Storage``.
"""
from __future__ import annotations

import difflib
import math
import textwrap
from collections import defaultdict
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import Tensor

from ..core import checks, declaration, state_format
from ..core.declaration import Coefficients, FusedKernel, Hyperparameter, make_init
from ..core.hyperparameters import COMMON_HYPERPARAMETERS
from ..core.tensors import DTensor, is_dtensor, local_tensor, math_dtype
from .. import kernels
from . import checkpoint, step_checks


class OptimizerState(defaultdict):
    """``opt.state`` (parameter -> its state dict, as torch keeps it) that counts the changes of its entries.

    ``changes`` grows whenever an entry is set, replaced or removed, so that a backend that kept the state
    dicts of a group between steps (the fused kernel's pointer table) knows in O(1) that they are still the
    ones in ``opt.state``, instead of looking every parameter up again each step. What is inside a state dict
    is the backend's own business to check.
    """

    changes = 0

    def _changed(self) -> None:
        self.changes += 1

    def __setitem__(self, key, value):
        self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self._changed()
        super().__delitem__(key)

    def __ior__(self, other):
        self._changed()
        return super().__ior__(other)

    def __reduce__(self):  # copies and pickles are plain torch-style state (the engine wraps them again)
        return defaultdict, (self.default_factory,), None, None, iter(self.items())


def _counting(opt) -> None:
    if type(opt.state) is not OptimizerState:
        state = OptimizerState(dict)
        dict.update(state, opt.state)
        opt.state = state


for _name in ("pop", "popitem", "clear", "update", "setdefault"):
    def _method(self, *args, _inherited=getattr(defaultdict, _name), **kwargs):
        self._changed()
        return _inherited(self, *args, **kwargs)
    _method.__name__ = _name
    setattr(OptimizerState, _name, _method)
del _name, _method


def _foreign_hyperparameters() -> dict[str, str]:
    """Hyperparameter name -> the optimizers that take it (adamkit's and ``torch.optim``'s): param-group keys
    that are settings somewhere, so never mere metadata."""
    owners: dict[str, list[str]] = defaultdict(list)
    for owner, keys in declaration.optimizer_hyperparameters().items():
        for key in keys:
            owners[key].append(owner)
    return {k: ", ".join(sorted(set(v))[:3]) + (" and others" if len(set(v)) > 3 else "") for k, v in owners.items()}


class AdamkitOptimizer(torch.optim.Optimizer):
    """Base class of adamkit's optimizers (see the module docstring)."""

    #: name in the registry (``adamkit.create_optimizer``)
    name: ClassVar[str] = ""
    #: the declaration: ``{name: Hyperparameter}`` in signature order, the common ones included
    #: (see :mod:`adamkit.core.declaration`); the constructor, defaults and checks come from it
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {}
    #: the two records ``coefficients()`` returns (NamedTuple types): static choices, numbers of one step
    Flags: ClassVar[type] = tuple
    Scalars: ClassVar[type] = tuple
    #: the fused C kernel's body and state slots, or None (no fused kernel)
    fused_kernel: ClassVar[FusedKernel | None] = None
    #: the torch optimizer computing the same math, when its cost differs from torch's AdamW:
    #: ``(name in torch.optim, keyword arguments)``; ``adamkit speed`` times it as this optimizer's own reference
    torch_reference: ClassVar[tuple[str, dict] | None] = None
    #: the bitsandbytes 8-bit optimizer computing the same math (a name in ``bitsandbytes.optim``), or None;
    #: ``adamkit speed`` times it beside this optimizer's int8 state where bitsandbytes is installed
    bitsandbytes_reference: ClassVar[str | None] = None
    #: the torchao low-bit optimizer computing the same math: ``(name in torchao.optim, keyword arguments)``,
    #: or None; ``adamkit speed`` times it beside this optimizer's int8 state where torchao is installed
    torchao_reference: ClassVar[tuple[str, dict] | None] = None
    #: True for an optimizer whose update uses the loss value (AdamL): step() then needs a closure or loss=
    requires_loss: ClassVar[bool] = False
    #: ``{state name: kind}`` for EVERY state tensor the algorithm can keep, in slot order (the fused
    #: kernel's state slots, and the random-stream slots): how each is stored under a low-precision ``state_dtype`` ("signed" first
    #: moments, "unsigned" second moments, "upper" running maxima; see :mod:`adamkit.core.state_format`).
    #: The position of a name is its random-stream slot.
    state_formats: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declaration.declare(cls)
        if "hyperparameters" not in cls.__dict__:
            return
        missing = set(COMMON_HYPERPARAMETERS) - set(cls.hyperparameters)
        if missing:  # a programming error in an algorithm module, not a user error
            raise AssertionError(f"{cls.__name__} does not declare {sorted(missing)}")
        formats = cls.state_formats
        if not formats or set(formats.values()) - set(state_format.KINDS):
            raise AssertionError(f"{cls.__name__} must declare state_formats = {{state name: kind}} with kinds "
                                 f"in {state_format.KINDS}, got {formats!r}")
        if "__init__" not in cls.__dict__:
            cls.__init__ = make_init(cls, cls.hyperparameters, AdamkitOptimizer._init_declared)
            if cls.__doc__:
                cls.__doc__ = cls.__doc__.rstrip() + "\n\n" + textwrap.indent(cls.__init__.__doc__.split("\n\n", 1)[1], "    ")

    @staticmethod
    def _init_declared(self, params: Iterable, given: Mapping[str, Any]) -> None:
        """The generated constructors end here: fixed values added, compatibility-only arguments checked and dropped."""
        defaults = {}
        for name, h in type(self).hyperparameters.items():
            value = given[name] if h.in_signature else h.default
            if h.stored:
                defaults[name] = value
            else:
                h.check(name, value)
        AdamkitOptimizer.__init__(self, params, defaults)

    def __init__(self, params: Iterable, defaults: Mapping[str, Any]):
        missing = set(self._checks) - set(defaults)
        if missing:  # a programming error in a subclass, not a user error
            raise AssertionError(f"{type(self).__name__} gives no default for {sorted(missing)}")
        defaults = self._checked(dict(defaults))
        super().__init__(params, defaults)
        _counting(self)

    @property
    def _checks(self) -> dict[str, checks.Check]:
        """Hyperparameter name -> check (of the class, so that copies and unpickled optimizers have them)."""
        return {n: h.check for n, h in type(self).hyperparameters.items() if h.stored}

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
        params = param_group.get("params")
        if not isinstance(params, (Tensor, set)) and params is not None:
            param_group["params"] = params = list(params)  # as torch does next (a generator is read once)
        if not isinstance(params, set):  # (torch refuses a set next)
            _check_group_params(self.param_groups, [params] if isinstance(params, Tensor) else params or [],
                                merged.get("state_dtype", torch.float32))
        super().add_param_group(param_group)

    # ------------------------------------------------------------ per algorithm
    def state_names(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        """Names of the state tensors kept for each parameter of ``group``."""
        raise NotImplementedError

    def init_param_state(self, param: Tensor, group: Mapping[str, Any], names: tuple[str, ...] | None = None,
                         position: int | None = None) -> dict:
        """The state of ``param``: created lazily (step 0 and every state tensor ``group`` needs), as a first step would.

        Under a low-precision ``state_dtype`` the tensors are created in their stored format (see
        :mod:`adamkit.core.state_format`) with the parameter's ``rounding_seed``, from its ``position`` among
        all the optimizer's parameters (found when not given).
        """
        names = self.state_names(group) if names is None else names
        state_dtype = group.get("state_dtype", torch.float32)
        if state_dtype is not torch.float32:
            state_dtype = state_format.check_state_dtype("state_dtype", state_dtype)
            if state_dtype is not torch.float32:
                state = self.state[param]
                if not state:
                    state["step"] = 0
                self._init_stored_state(param, group, names, state, state_dtype, position)
                return state
        return self._init_float32_state(param, group, names)

    def _init_float32_state(self, param: Tensor, group: Mapping[str, Any], names: tuple[str, ...]) -> dict:
        """``init_param_state`` of a float32-state group (the engine's general path calls it per parameter)."""
        state = self.state[param]
        if not state:
            state["step"] = 0
        elif "rounding_seed" in state:
            self._check_state_format(group, param, state)  # raises: low-precision state in a float32 group
        for name in names:
            if name not in state:
                state[name] = self.init_state_tensor(name, param, group)
        if _rounds(group, param) and "rounding_seed" not in state:
            state["rounding_seed"] = state_format.rounding_seed(self._position(param))
        return state

    def _init_stored_state(self, param, group, names, state, state_dtype, position) -> None:
        """The missing state tensors of ``param`` in their low-precision format (and its ``rounding_seed``)."""
        missing = [name for name in names if name not in state]
        if not missing:
            return
        _check_low_precision_param(param, state_dtype, self._position(param) if position is None else position)
        if "rounding_seed" not in state:
            if len(state) > 1:  # float32 tensors of another state_dtype: refuse (names the conversion call)
                self._check_state_format(group, param, state)
            state["rounding_seed"] = state_format.rounding_seed(self._position(param) if position is None
                                                                else position)
        seed = state["rounding_seed"]
        fmt = state_format.tensor_format(state_dtype, param)
        formats = type(self).state_formats
        slots = {n: k for k, n in enumerate(formats)}
        for name in missing:
            kind = formats[name]
            initial = local_tensor(self.init_state_tensor(name, param, group)).float()
            key = state_format.init_key(seed, slots[name])
            layout = state_format.layout_like(param)
            # +0.0 everywhere (every state but AGD's z from the parameters): its encoding is exact and needs no
            # rounding (bfloat16 +0.0; int8 zero codes and zero scales), so the reference codec is skipped
            zeros = not initial.view(torch.int32).any()
            if fmt == "bfloat16":
                stored = torch.zeros_like(param, dtype=torch.bfloat16, **layout)
                if not zeros:
                    state_format.encode_bfloat16(initial, kind, key, out=local_tensor(stored))
                state[name] = stored
            else:
                codes = torch.full_like(param, state_format.ZERO_CODE[kind], dtype=torch.uint8, **layout)
                local = local_tensor(codes)
                scales = torch.zeros(state_format.scale_shape(local.shape), dtype=torch.float32, device=local.device)
                if not zeros:
                    state_format.quantize_int8(initial, kind, key, codes=local, scales=scales)
                state[name] = codes
                state[state_format.scale_name(name)] = _scales_like(param, scales)

    def _position(self, param: Tensor) -> int:
        """The position of ``param`` among all the optimizer's parameters, over its groups in order (a map
        kept while the groups' parameter lists are the same lists of the same lengths, checked on use)."""
        groups = self.param_groups
        key = tuple((id(g["params"]), len(g["params"])) for g in groups)
        kept = self.__dict__.get("_positions")
        for attempt in (0, 1):
            if kept is None or kept[0] != key or attempt:
                kept = (key, {id(p): i for i, p in enumerate(p for g in groups for p in g["params"])})
                self.__dict__["_positions"] = kept
            i = kept[1].get(id(param))
            if i is not None:
                offset = i
                for g in groups:  # still there? (a list changed in place keeps its id and length)
                    if offset < len(g["params"]):
                        if g["params"][offset] is param:
                            return i
                        break
                    offset -= len(g["params"])
        raise ValueError("the parameter is not in any of this optimizer's param groups")

    def _check_state_format(self, group: Mapping[str, Any], param: Tensor, state: Mapping[str, Any]) -> None:
        """Raise where the stored format of ``param``'s state is not the one ``group``'s ``state_dtype`` makes."""
        state_dtype = group.get("state_dtype", torch.float32)
        if state_dtype is not torch.float32:
            state_dtype = state_format.check_state_dtype("state_dtype", state_dtype)
        want = "float32" if state_dtype is torch.float32 else state_format.tensor_format(state_dtype, param)
        for name in type(self).state_formats:
            stored = state.get(name)
            if not isinstance(stored, Tensor):
                continue
            have = _STORED_FORMATS.get(stored.dtype, "float32")
            # float32 state may have a rounding_seed too: that of the parameter's stochastic rounding
            if have != want or (want != "float32" and "rounding_seed" not in state):
                index = next((i for i, g in enumerate(self.param_groups) if g is group), "?")
                raise ValueError(
                    f"param group {index} has "
                    f"state_dtype={state_dtype!r}, but the state of parameter {self._position(param)} is stored as "
                    f"{have} ({name!r} is {stored.dtype}); setting state_dtype in param_groups by hand does not "
                    f"convert existing state: convert opt.state_dict() with "
                    f"adamkit.optim.convert_state_dtype(state_dict, state_dtype) and load_state_dict the result"
                )

    def init_state_tensor(self, name: str, param: Tensor, group: Mapping[str, Any]) -> Tensor:
        """A new state tensor for ``param``: zeros in the parameter's math dtype."""
        return torch.zeros_like(param, dtype=math_dtype(param.dtype), memory_format=torch.preserve_format)

    def coefficients(self, group: Mapping[str, Any], step: int, loss: float | None) -> Coefficients:
        """``Coefficients(Flags(...), Scalars(...))`` of one step: the static choices and the numbers, the
        numbers in double precision; ``step`` counts the calls made before this one."""
        raise NotImplementedError

    @staticmethod
    def update(param, grad, state: dict, c: Coefficients) -> None:
        """The element-wise update: tensors (or TensorLists) in, state and ``param`` changed in place.

        Branches on ``c.flags`` only; ``c.scalars`` may be numbers or 0-dim tensors (the compiled path).
        ``grad`` is never written to (it may be the user's ``p.grad``).
        """
        raise NotImplementedError

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

        Under ``torch.compile`` (``torch.compile(lambda: opt.step())``, or a compiled
        training step) the engine's bookkeeping (state, step counters, grouping)
        stays eager Python and the update is compiled: a bucket that would take the
        loop or foreach path takes the compiled path (:mod:`adamkit.kernels.compiled`),
        whose graph is specialised on the flags only, so a learning-rate schedule
        (``lr`` a float or a tensor) never recompiles; the fused C kernel, where it
        is the path, stays (it is faster than any compiled step on CPU).
        """
        return self._step(closure, loss, torch.compiler.is_compiling())

    @torch._disable_dynamo
    def _step(self, closure, loss, compiling: bool) -> Any:
        self._under_compile = compiling
        try:
            return self._step_groups(closure, loss)
        finally:
            self._under_compile = False

    def _step_groups(self, closure, loss) -> Any:
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
        # check phase: every group is checked before any is stepped, so that a bad tensor in a later group
        # raises before an earlier one moves. A group its backend can step from what it kept (the fused
        # kernel's pointer table) is checked by that backend; the others by the general path's checks.
        groups = self.param_groups
        names = [self.state_names(group) for group in groups]
        launches = [self._prepared(group, n, loss_value) for group, n in zip(groups, names)]
        if len(groups) > 1:
            step_checks.check_groups_before_step(self, skip=[run is not None for run in launches])
        # launch phase
        for group, n, run in zip(groups, names, launches):
            if run is not None:
                run()
            else:
                self._step_group(group, n, loss_value)
        return loss

    def _choice(self, group: Mapping[str, Any], params: list[Tensor]) -> kernels.Choice:
        return kernels.choose(type(self), group, params, compiling=self.__dict__.get("_under_compile", False))

    def _prepared(self, group: dict[str, Any], names: tuple, loss: float | None):
        """The group's step from what its backend kept, checked and ready to run; None: the general path."""
        if not group["params"]:
            return None
        return self._choice(group, group["params"]).backend.prepare(
            self, type(self), group, self.state, names, lambda step: self.coefficients(group, step, loss))

    def _step_group(self, group: dict[str, Any], names: tuple, loss: float | None) -> None:
        """The general path: every parameter with a gradient checked, its state created where missing, then
        stepped in buckets of one device, dtype, step count and state format (float32 state, or a low-precision
        ``state_dtype``: created in its stored format, checked against the group's ``state_dtype``, handed to the
        backend with a ``state_format.Storage``)."""
        state_dtype = group.get("state_dtype", torch.float32)
        if state_dtype is not torch.float32:
            state_dtype = state_format.check_state_dtype("state_dtype", state_dtype)
        stored = state_dtype is not torch.float32
        params = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state.get(p)
            if stored and state:
                self._check_state_format(group, p, state)
            params.append(p)
        if not params:
            return
        for p in params:
            if stored:
                state = self.state.get(p)
                if not state or any(n not in state for n in names):
                    self.init_param_state(p, group, names)
            else:
                self._init_float32_state(p, group, names)
        choice = self._choice(group, params)
        # every path checks shapes (and the float32 state's dtypes) before any tensor of the group is written
        local_params = [local_tensor(p) for p in params]
        step_checks.check_step_tensors(self, params, local_params, [local_tensor(p.grad) for p in params],
                                       {n: [local_tensor(self.state[p][n]) for p in params] for n in names},
                                       check_dtypes=not stored)
        if stored:
            step_checks.check_stored_state(self, params, local_params, names)
        # one call covers the tensors that share the per-step scalars (and the state's format)
        buckets: dict[tuple, list[Tensor]] = defaultdict(list)
        for p in params:
            fmt = state_format.tensor_format(state_dtype, p) if stored else "float32"
            buckets[(p.device, p.dtype, self.state[p]["step"], fmt)].append(p)
        receipts: list = []
        complete = False
        try:
            for (_, _, _, fmt), bucket in buckets.items():
                receipts.append(self._step_bucket(group, bucket, names, loss, choice, fmt))
            complete = (all(receipts) and len(params) == len(group["params"])
                        and len({self.state[p]["step"] for p in params}) == 1)
        finally:  # the backend keeps what it needs to step the whole group next time, or drops it
            choice.backend.finish_group(self, type(self), group, self.state, names, receipts, complete)

    def _storage(self, bucket: list[Tensor], names: tuple, fmt: str, step: int) -> state_format.Storage:
        formats = type(self).state_formats
        slots = list(formats)
        scales = {}
        if fmt == "int8":
            scales = {n: [local_tensor(self.state[p][state_format.scale_name(n)]) for p in bucket] for n in names}
        return state_format.Storage(fmt, tuple(formats[n] for n in names), tuple(slots.index(n) for n in names),
                                    [self.state[p]["rounding_seed"] for p in bucket], step, scales)

    def _step_bucket(self, group, bucket: list[Tensor], names, loss, choice: kernels.Choice, fmt: str) -> Any:
        """Step one bucket (one device, dtype, step count and state format) on the chosen backend (the loop
        takes what it refuses); returns what the backend returned, False where the loop stepped it."""
        step = self.state[bucket[0]]["step"]
        c = self.coefficients(group, step, loss)
        state = self.state
        rounding = None
        if _rounds(group, bucket[0]):
            rounding = state_format.ParamRounding([state[p]["rounding_seed"] for p in bucket], step)
        work = kernels.Bucket(
            params=[local_tensor(p) for p in bucket], grads=[local_tensor(p.grad) for p in bucket],
            states={name: [local_tensor(state[p][name]) for p in bucket] for name in names}, names=names,
            maximize=group["maximize"], storage=None if fmt == "float32" else self._storage(bucket, names, fmt, step),
            state_dicts=[None if is_dtensor(p) else state[p] for p in bucket], rounding=rounding)
        receipt = kernels.run(choice, type(self), work, c)
        for p in bucket:
            state[p]["step"] = step + 1
        return receipt

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
        _counting(self)
        checkpoint.after_setstate(self)

    # ------------------------------------------------------------ utilities
    @staticmethod
    def bias_corrections(betas: tuple[float, float], t: int) -> tuple[float, float]:
        """``(1 - beta1**t, 1 - beta2**t)`` in double precision."""
        beta1, beta2 = betas
        return 1.0 - beta1**t, 1.0 - beta2**t


_STORED_FORMATS = {torch.bfloat16: "bfloat16", torch.uint8: "int8"}
#: the parameter dtypes every path steps (float8 and the integer dtypes have no arithmetic for the update rules)
PARAM_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex32, torch.complex64,
                torch.complex128)


class ParameterDtypeError(TypeError, ValueError):
    """A parameter of a dtype adamkit does not step (a TypeError, and a ValueError as torch's other refusals of
    a param group's content are)."""


def _check_group_params(groups: list[dict], entries: list, state_dtype) -> None:
    """The parameters of a new param group (tensors, or ``(name, tensor)`` as torch takes them): each of a dtype
    every path steps, listed once, in no earlier group, and fit for the group's ``state_dtype``. torch.optim only
    warns about a parameter listed twice in one group (and means to raise); stepped twice in one step, it would
    take two steps of its learning rate, and the paths would not agree on how (one after the other, or both
    from the old values), so adamkit raises."""
    index = len(groups)
    earlier = {id(p): (g, i) for g, group in enumerate(groups) for i, p in enumerate(group["params"])}
    seen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        name, p = entry if isinstance(entry, tuple) and len(entry) == 2 else (None, entry)
        if not isinstance(p, Tensor):
            continue  # torch.optim refuses it next, naming its type
        what = f"parameter {i}{'' if name is None else f' ({name!r})'} of param group {index}"
        if p.dtype not in PARAM_DTYPES:
            raise ParameterDtypeError(
                f"{what} is {p.dtype}: adamkit steps parameters of dtype "
                f"{', '.join(str(d).removeprefix('torch.') for d in PARAM_DTYPES)}; keep it out of the optimizer "
                f"(an integer or bool tensor has no gradient), or optimize a float32 copy of it")
        if id(p) in seen:
            raise ValueError(
                f"{what} is the same tensor as parameter {seen[id(p)]}: list each parameter once (stepped twice "
                f"per step it would move by two steps; torch.optim warns about this and will refuse it)")
        seen[id(p)] = i
        if id(p) in earlier:
            g, j = earlier[id(p)]
            raise ValueError(f"{what} is already parameter {j} of param group {g}: a parameter belongs to one "
                             f"param group (torch.optim refuses this too)")
        if state_dtype is not torch.float32:
            _check_low_precision_param(p, state_dtype, i)


#: the parameter dtypes ``param_rounding="stochastic"`` rounds (complex32 as its float16 real view)
_ROUNDED_DTYPES = (*state_format.ROUNDED_PARAM_DTYPES, torch.complex32)


def _rounds(group: Mapping[str, Any], param: Tensor) -> bool:
    """Whether ``param`` is written with stochastic rounding under ``group`` (a bfloat16/float16 parameter of a
    group with ``param_rounding="stochastic"``): it then keeps a ``rounding_seed`` whatever its state_dtype."""
    return param.dtype in _ROUNDED_DTYPES and group.get("param_rounding", "nearest") == "stochastic"


def _check_low_precision_param(p: Tensor, state_dtype, index: int) -> None:
    """Low-precision state is for float32-math parameters only; other placements of DTensors than Shard(0) and
    Replicate() cannot keep int8 blocks whole."""
    if math_dtype(p.dtype) != torch.float32:
        raise ValueError(
            f"state_dtype={state_dtype!r} stores the state of float32-math parameters (float32, float16, "
            f"bfloat16); parameter {index} is {p.dtype}: put it in a param group with state_dtype=torch.float32"
        )
    if DTensor is not None and isinstance(p, DTensor) and state_format.tensor_format(state_dtype, p) == "int8":
        from torch.distributed.tensor import Replicate, Shard

        bad = [pl for pl in p.placements if not (isinstance(pl, Replicate) or (isinstance(pl, Shard) and pl.dim == 0))]
        if bad:
            raise ValueError(
                f'state_dtype="int8" keeps blocks within rows (dim 0), so it needs DTensor parameters placed by '
                f"Shard(0) or Replicate(); parameter {index} has {p.placements}: use state_dtype=torch.bfloat16 "
                f"for it (any placement works)"
            )


def _scales_like(param: Tensor, scales: Tensor) -> Tensor:
    """The int8 scales of ``param`` as the state keeps them: a DTensor placed as ``param`` for a DTensor parameter."""
    if DTensor is not None and isinstance(param, DTensor):
        shape = state_format.scale_shape(param.shape)
        return DTensor.from_local(scales, param.device_mesh, param.placements, run_check=False,
                                  shape=torch.Size(shape), stride=(shape[1], 1))
    return scales


def _loss_to_float(loss: Any) -> float:
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(f"the loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
        loss = loss.detach().item()
    value = float(loss)
    if not math.isfinite(value):
        raise ValueError(f"the loss must be finite, got {value}")
    return value
