"""An algorithm's ``update``, traced once per set of flags into the expression graph a kernel is written from.

``update(param, grad, state, c)`` is called with stand-ins: :class:`Tensor` for the parameter, the gradient
and each state tensor, and :class:`Scalar` for each field of ``c.scalars``; ``c.flags`` are the real flags, so
the Python branches of ``update`` choose the ops as they do for real tensors. Every tensor method ``update``
calls is recorded as a :class:`Node`; an in-place method rebinds its tensor to the new node (as it changes a
real tensor), so at the end each tensor's node is its final value. Arithmetic among scalars (``1 - s.beta1``)
is not an op of the kernel: it is a :class:`Scalar` expression, evaluated on the host in double precision at
every step, exactly as Python computes it for the loop; the kernel receives its value.

The vocabulary is :class:`adamkit.kernels.TensorList`'s (what every ``update`` may use) plus the Python
operators. A method outside it raises :class:`UnknownOp`, naming it; a value used for a Python decision
(``bool``, ``float``, a comparison) raises :class:`TraceError` (an ``update`` branches on flags only).
"""
from __future__ import annotations

import numbers
import operator
from typing import Any, NamedTuple

#: the ops of a :class:`Node` (each has exactly one emitter in ``source.EMIT``)
OPS = ("load", "add", "sub", "mul", "div", "neg", "sqrt", "sign", "fma", "lerp", "addcdiv", "maximum",
       "clamp_min", "clamp_max")


class TraceError(TypeError):
    """``update`` did something the kernel generator cannot follow."""


class UnknownOp(TraceError, AttributeError):
    """``update`` called a tensor method the tracer does not know."""


# ------------------------------------------------------------------------------------------------ scalars
_SCALAR_OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
               "neg": operator.neg}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


class Scalar:
    """A number of one step: a field of ``Scalars`` (``slot``), a constant, or arithmetic among them."""

    __slots__ = ("op", "args")

    def __init__(self, op: str, *args):
        self.op, self.args = op, args

    @staticmethod
    def of(value) -> "Scalar":
        if isinstance(value, Scalar):
            return value
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return Scalar("const", float(value))
        raise TraceError(f"expected a number or a scalar of the step, got {type(value).__name__}")

    @property
    def key(self) -> tuple:
        return (self.op,) + tuple(a.key if isinstance(a, Scalar) else a for a in self.args)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):  # structural, between scalars only (de-duplication); never a comparison of values
        if not isinstance(other, Scalar):
            self._decision()
        return self.key == other.key

    def is_const(self, value: float) -> bool:
        return self.op == "const" and self.args[0] == value

    def evaluate(self, values) -> float:
        """The value at one step, from ``c.scalars`` (Python floats), in double precision."""
        if self.op == "slot":
            return float(values[self.args[0]])
        if self.op == "const":
            return self.args[0]
        return _SCALAR_OPS[self.op](*(a.evaluate(values) for a in self.args))

    def describe(self, fields) -> str:
        if self.op == "slot":
            return fields[self.args[0]]
        if self.op == "const":
            return repr(self.args[0])
        if self.op == "neg":
            return f"-({self.args[0].describe(fields)})"
        a, b = (x.describe(fields) for x in self.args)
        return f"({a} {_SYMBOL[self.op]} {b})"

    def _binary(self, op, other, reflected=False):
        if isinstance(other, Tensor):
            return NotImplemented
        a, b = self, Scalar.of(other)
        return Scalar(op, b, a) if reflected else Scalar(op, a, b)

    def __add__(self, o): return self._binary("add", o)
    def __radd__(self, o): return self._binary("add", o, True)
    def __sub__(self, o): return self._binary("sub", o)
    def __rsub__(self, o): return self._binary("sub", o, True)
    def __mul__(self, o): return self._binary("mul", o)
    def __rmul__(self, o): return self._binary("mul", o, True)
    def __truediv__(self, o): return self._binary("div", o)
    def __rtruediv__(self, o): return self._binary("div", o, True)
    def __neg__(self): return Scalar("neg", self)
    def __pos__(self): return self

    def _decision(self, *_):
        raise TraceError("update used a scalar of the step for a Python decision (bool, float, a comparison); "
                         "update branches on flags only, so that one kernel serves every step")

    __bool__ = __float__ = __int__ = __index__ = __lt__ = __le__ = __gt__ = __ge__ = _decision


# ------------------------------------------------------------------------------------------------ tensors
class Node:
    """One element-wise value: ``op`` of ``args`` (Nodes or Scalars); ``load`` nodes name their input."""

    __slots__ = ("op", "args")

    def __init__(self, op: str, *args):
        self.op, self.args = op, args


class Tensor:
    """A stand-in for a tensor of ``update``: records the methods called on it."""

    __slots__ = ("node", "_recorder")

    def __init__(self, recorder: "_Recorder", node: Node):
        self._recorder, self.node = recorder, node

    def _operand(self, x):
        return x.node if isinstance(x, Tensor) else self._recorder.scalar(Scalar.of(x))

    def _new(self, op, *args) -> Node:
        return self._recorder.record(Node(op, *(self._operand(a) for a in args)))

    def _out(self, op, *args) -> "Tensor":
        return Tensor(self._recorder, self._new(op, *args))

    def _in_place(self, op, *args) -> "Tensor":
        self.node = self._new(op, *args)
        return self

    # -- the vocabulary of TensorList, with torch's semantics (and torch's formulas, see source.EMIT)
    def clone(self):
        return Tensor(self._recorder, self.node)

    def copy_(self, other):
        if not isinstance(other, Tensor):
            raise TraceError("copy_ takes a tensor")
        self.node = other.node
        return self

    def _add(self, other, alpha, in_place, op="add"):
        alpha = Scalar.of(alpha)
        if alpha.is_const(1.0):
            args = (op, self, other)
        elif not isinstance(other, Tensor):  # a number: alpha·other is a number of the step (as TensorList does)
            args = (op, self, Scalar.of(other) * alpha)
        else:  # torch: self + alpha·other in one fused multiply-add
            args = ("fma", other, alpha if op == "add" else -alpha, self)
        return self._in_place(*args) if in_place else self._out(*args)

    def add(self, other, alpha=1):
        return self._add(other, alpha, False)

    def add_(self, other, alpha=1):
        return self._add(other, alpha, True)

    def sub(self, other, alpha=1):
        return self._add(other, alpha, False, "sub")

    def sub_(self, other, alpha=1):
        return self._add(other, alpha, True, "sub")

    def mul(self, other):
        return self._out("mul", self, other)

    def mul_(self, other):
        return self._in_place("mul", self, other)

    def div(self, other):
        return self._out("div", self, other)

    def div_(self, other):
        return self._in_place("div", self, other)

    def neg(self):
        return self._out("neg", self)

    def sqrt(self):
        return self._out("sqrt", self)

    def sqrt_(self):
        return self._in_place("sqrt", self)

    def sign(self):
        return self._out("sign", self)

    def lerp_(self, end, weight):
        return self._in_place("lerp", self, end, weight)

    def addcmul_(self, a, b, value=1):
        value = Scalar.of(value)
        first = a if value.is_const(1.0) else a.mul(value)  # torch: (value·a)·b + self, one rounding for the add
        return self._in_place("fma", first, b, self)

    def addcdiv_(self, a, b, value=1):
        value = Scalar.of(value)
        first = a if value.is_const(1.0) else a.mul(value)  # torch: self + (value·a)/b
        return self._in_place("addcdiv", self, first, b)

    def maximum(self, other):
        if not isinstance(other, Tensor):
            raise TraceError("maximum takes a tensor (torch.maximum)")
        return self._out("maximum", self, other)

    def clamp_min(self, minimum):
        return self._out("clamp_min", self, minimum)

    def clamp_min_(self, minimum):
        return self._in_place("clamp_min", self, minimum)

    def clamp(self, min=None, max=None):  # noqa: A002 - torch's names
        return self.clone().clamp_(min, max)

    def clamp_(self, min=None, max=None):  # noqa: A002 - torch's names
        if min is not None:
            self._in_place("clamp_min", self, min)
        if max is not None:
            self._in_place("clamp_max", self, max)
        return self

    # -- Python operators
    def __add__(self, o): return self.add(o)
    def __radd__(self, o): return self.add(o)
    def __sub__(self, o): return self.sub(o)
    def __rsub__(self, o): return self._out("sub", Scalar.of(o), self)
    def __mul__(self, o): return self.mul(o)
    def __rmul__(self, o): return self.mul(o)
    def __truediv__(self, o): return self.div(o)
    def __rtruediv__(self, o): return self._out("div", Scalar.of(o), self)
    def __neg__(self): return self.neg()

    def _decision(self, *_):
        raise TraceError("update used a tensor's value for a Python decision (bool, a comparison, an index); "
                         "update branches on flags only")

    __bool__ = __float__ = __int__ = __index__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _decision
    __hash__ = object.__hash__

    def __getattr__(self, name):
        owner = self._recorder.owner
        raise UnknownOp(f"{owner}.update calls Tensor.{name}, which the Triton kernel generator does not know "
                        f"(adamkit.kernels.gpu.trace knows TensorList's methods: add it there and its emitter in "
                        f"adamkit.kernels.gpu.source.EMIT)")


class _Recorder:
    def __init__(self, owner: str):
        self.owner = owner
        self.nodes: list[Node] = []
        self.scalars: dict[Scalar, Scalar] = {}

    def record(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def scalar(self, s: Scalar) -> Scalar:
        return self.scalars.setdefault(s, s)


# ------------------------------------------------------------------------------------------------ a trace
class Trace(NamedTuple):
    """``update`` of one algorithm for one set of flags, as an expression graph.

    ``inputs``: the load node of "param", "grad" and each state name; ``outputs``: the final node of "param"
    and of each state name (the load node itself where ``update`` left it unchanged); ``nodes``: the nodes
    the outputs need, in the order ``update`` made them; ``scalars``: the scalar values the nodes use,
    one slot of the kernel's scalar vector each; ``fields``: the names of ``c.scalars``.
    """

    owner: str
    inputs: dict[str, Node]
    outputs: dict[str, Node]
    nodes: list[Node]
    scalars: list[Scalar]
    fields: tuple[str, ...]

    def scalar_values(self, scalars) -> list[float]:
        """The kernel's scalar vector for one step's ``c.scalars``."""
        return [s.evaluate(scalars) for s in self.scalars]


def trace(cls, flags, names: tuple[str, ...]) -> Trace:
    """Trace ``cls.update`` for ``flags`` (a ``cls.Flags``) with the state tensors ``names``."""
    from ...core.declaration import Coefficients

    recorder = _Recorder(cls.__name__)
    fields = tuple(cls.Scalars._fields)
    scalars = cls.Scalars(*(Scalar("slot", i) for i in range(len(fields))))
    inputs = {name: Node("load", name) for name in ("param", "grad", *names)}
    tensors = {name: Tensor(recorder, node) for name, node in inputs.items()}
    cls.update(tensors["param"], tensors["grad"], {n: tensors[n] for n in names}, Coefficients(flags, scalars))
    outputs = {name: tensors[name].node for name in ("param", *names)}
    nodes = _needed(recorder.nodes, outputs.values())
    used = {id(a) for node in nodes for a in node.args if isinstance(a, Scalar)}
    return Trace(cls.__name__, inputs, outputs, nodes,
                 [s for s in recorder.scalars.values() if id(s) in used], fields)


def _needed(nodes: list[Node], outputs) -> list[Node]:
    """The recorded nodes that the outputs depend on, in recording order (dead code dropped)."""
    needed: set[int] = set()
    stack = [n for n in outputs if n.op != "load"]
    while stack:
        node = stack.pop()
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(a for a in node.args if isinstance(a, Node) and a.op != "load")
    return [n for n in nodes if id(n) in needed]


def flag_sets(cls) -> list[Any]:
    """Every combination of ``cls.Flags`` values (bools and IntEnum members): a superset of the reachable ones."""
    from itertools import product

    from ...core.declaration import flag_fields

    choices = [(False, True) if kind is bool else tuple(kind) for kind in flag_fields(cls.Flags).values()]
    return [cls.Flags(*values) for values in product(*choices)]
