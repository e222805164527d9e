"""Compiling: ``jit_compile`` resolved per function, and a bounded cache of compiled functions.

:class:`Compiled` wraps a ``tf.function`` whose ``jit_compile="auto"`` is
settled on its first call from its graph: XLA where a cost model
(:class:`StepCost`) says compiling pays for itself over the run and XLA can
compile the graph faithfully (:func:`xla_obstacle`).
:class:`FunctionCache` keeps a trainer's compiled functions across fits,
for one task structure at a time and a bounded number of data shapes, so
that replacing the task (or one of its parts) frees what the old one held.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np

logger = logging.getLogger("gradfit")


@dataclasses.dataclass(frozen=True)
class Jit:
    """A function's ``jit_compile`` mode, and for ``"auto"`` what its calls will cost.

    Only ``mode`` takes part in equality and hashing: functions cached
    under a ``Jit`` are shared by fits of any length (each run's ``steps``
    reach the cached function through :meth:`Compiled.plan`).

    Args:
        mode: ``True``, ``False`` or ``"auto"``.
        steps: How many times the function will be called in this run (a
            loop's steps); ``None`` when unknown (a dataset of unknown
            length): ``"auto"`` then stays without XLA.
        flops: The floating-point operations of one step (estimated: see
            :func:`step_flops`).
    """

    mode: bool | str
    steps: int | None = dataclasses.field(default=None, compare=False)
    flops: float = dataclasses.field(default=0.0, compare=False)

    def runs(self, steps: int | None) -> Jit:
        """The same mode and flops for a function called ``steps`` times."""
        return dataclasses.replace(self, steps=steps)


def step_flops(variables: Any, batch_size: int | None, *, training: bool) -> float:
    """A dense network's FLOPs per step: 2 per parameter and example forward, 4 more backward."""
    parameters = sum(int(np.prod(var.shape)) for var in variables)
    return (6.0 if training else 2.0) * parameters * (batch_size or 1)


def jit_for(
    jit_compile: bool | str, data: Any, variables: Any, *, epochs: int = 1, training: bool = True
) -> Jit:
    """The mode of ``epochs`` passes over ``data`` (its ``steps``, ``None`` if unknown).

    Args:
        jit_compile: The trainer's ``jit_compile``.
        data: The prepared data (``steps``, and ``batch_size`` for in-memory data).
        variables: The task's trainable variables (for :func:`step_flops`).
        epochs: Passes over the data.
        training: Whether the steps train (else they evaluate or predict).
    """
    steps = None if data is None or data.steps is None else data.steps * epochs
    size = getattr(data, "batch_size", None)
    return Jit(jit_compile, steps, step_flops(variables, size, training=training))


# jit_compile="auto"'s cost model, measured on the 2-core development CPU (TF 2.21; see
# benchmarks/RESULTS.md, "Choosing XLA"). XLA pays back its compile time by removing the
# executor's per-op overhead from every step and by fusing the elementwise work around the
# matrix products; compiling costs a few milliseconds an op and more for each product.
SECONDS_SAVED_PER_OP = 0.75e-6  # linear regression's 108-op loop: 86 us a step, 4.5 with XLA
SECONDS_SAVED_PER_FLOP = 2.4e-12  # the 784-256-256-10 MLP (206 MFLOP): 2.86 ms, 2.22 with XLA
COMPILE_SECONDS_PER_OP = 2.5e-3  # linear regression's loop compiled in 0.3 s
COMPILE_SECONDS_PER_DOT = 0.25  # beyond 3 matmuls (the MLPs' loops compiled in 1.6-5 s)
XLA_MARGIN = 1.5  # XLA only where the model says it gains half its compile time again

_DOTS = frozenset({"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"})


@dataclasses.dataclass(frozen=True)
class StepCost:
    """A compiled function's graph, counted for ``"auto"``'s estimate.

    Args:
        ops: Its ops, with those of the functions it calls (loop bodies...).
        dots: Its matrix products and convolutions.
    """

    ops: int
    dots: int

    @classmethod
    def of(cls, graph: Any) -> StepCost:
        """The counts of a ``FuncGraph``."""
        graph_def = graph.as_graph_def()
        nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
        return cls(len(nodes), sum(1 for n in nodes if n.op in _DOTS or "Conv" in n.op))

    def xla_gain(self, steps: int | None, flops: float) -> float:
        """Seconds XLA is estimated to save over ``steps`` steps of ``flops``, net of compiling.

        Compiling is counted :data:`XLA_MARGIN` times; unknown ``steps`` never gain.
        """
        if not steps:
            return float("-inf")
        per_step = self.ops * SECONDS_SAVED_PER_OP + flops * SECONDS_SAVED_PER_FLOP
        products = max(self.dots - 3, 0) * COMPILE_SECONDS_PER_DOT
        return steps * per_step - XLA_MARGIN * (self.ops * COMPILE_SECONDS_PER_OP + products)


# Ops XLA compiles away rather than runs: a graph holding them changes meaning under XLA.
_DROPPED_BY_XLA = frozenset({"Assert", "PrintV2", "Print"})


def _op_types(graph: Any) -> set[str]:
    """Every op type in a FuncGraph, including the functions it calls (while bodies...)."""
    graph_def = graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types.update(node.op for node in function.node_def)
    return types


def xla_obstacle(function: Any, *args: Any) -> str | None:
    """Why ``function`` (a ``jit_compile=True`` tf.function) should not use XLA, or ``None``.

    Looks, without running anything, for ops XLA would silently drop
    (``tf.debugging`` assertions, prints) and lowers the graph to HLO, which
    fails for ops without an XLA kernel.
    """
    concrete = function.get_concrete_function(*args)
    dropped = _op_types(concrete.graph) & _DROPPED_BY_XLA
    if dropped:
        return f"it holds {sorted(dropped)} ops, which XLA would silently drop"
    try:
        function.experimental_get_compiler_ir(*args)(stage="hlo")
    except Exception as err:
        return str(err).strip().splitlines()[0]
    return None


class Compiled:
    """A ``tf.function`` built by ``make(jit)``, with ``jit_compile="auto"`` resolved lazily.

    With ``"auto"`` the function starts without XLA; its first call (or
    :meth:`resolve`) traces it and estimates from its graph and the steps
    it will run whether compiling it with XLA would pay for itself
    (:meth:`StepCost.xla_gain`); if so it checks, without running anything,
    that XLA compiles the graph faithfully (:func:`xla_obstacle`; if not, a
    note is logged and XLA stays off for good). A function that stays
    without XLA is reconsidered when a later run uses it (:meth:`plan`),
    counting the steps run so far: XLA's compile is paid once the runs
    together repay it. The estimate reads no clock, so the same script
    always takes the same path and gives the same numbers.

    Args:
        make: Builds the ``tf.function`` for a given ``jit_compile`` flag.
        jit: The mode (and, for ``"auto"``, the run's length and FLOPs).
        name: What the function does, for the log note.
    """

    def __init__(self, make: Callable[[bool], Any], jit: Jit, name: str) -> None:
        self._make = make
        self._name = name
        self._jit = jit
        self._steps_before = 0  # the steps of earlier runs (for "auto")
        self._cost: StepCost | None = None
        self._pending_auto = jit.mode == "auto"
        self.jit_compile = jit.mode is True
        self.function = make(self.jit_compile)

    @property
    def pending(self) -> bool:
        """Whether ``jit_compile="auto"`` is still to be settled."""
        return self._pending_auto

    def plan(self, jit: Jit) -> None:
        """A run about to use the function: ``"auto"`` without XLA reconsiders at its next call."""
        if jit is self._jit or self._pending_auto or self._cost is None or self.jit_compile:
            return
        self._steps_before += self._jit.steps or 0
        self._jit = jit
        self._pending_auto = True

    def resolve(self, *args: Any, xla_check: Callable[[Any], str | None] | None = None) -> None:
        """Settles ``"auto"`` for calls on ``args`` (no-op otherwise).

        Args:
            *args: Arguments of a call (none for a function with an input signature).
            xla_check: ``xla_check(xla_function)`` gives why XLA cannot compile
                it faithfully, or ``None``; by default :func:`xla_obstacle` on
                ``args``.
        """
        if not self._pending_auto:
            return
        self._pending_auto = False
        if self._cost is None:
            self._cost = StepCost.of(self.function.get_concrete_function(*args).graph)
        steps = None if self._jit.steps is None else self._steps_before + self._jit.steps
        if self._cost.xla_gain(steps, self._jit.flops) <= 0:
            logger.debug("jit_compile='auto': no XLA for the %s (%s)", self._name, self._cost)
            return
        candidate = self._make(True)
        check = xla_check or (lambda function: xla_obstacle(function, *args))
        reason = check(candidate)
        if reason is not None:
            logger.info("jit_compile='auto': not using XLA for the %s: %s", self._name, reason)
            self._cost = None  # for good: plan() never reconsiders
            return
        self.function, self.jit_compile = candidate, True

    def __call__(self, *args: Any) -> Any:
        """Calls the function (settling ``"auto"`` first)."""
        self.resolve(*args)
        return self.function(*args)

    def get_concrete_function(self, *args: Any) -> Any:
        """The concrete function for ``args`` (tracing it if needed), ``"auto"`` settled.

        Calling it skips the ``tf.function``'s argument matching (about 0.15 ms
        a call); it accepts only arguments of the same specs as ``args``.
        """
        self.resolve(*args)
        return self.function.get_concrete_function(*args)

    def experimental_get_tracing_count(self) -> int:
        """How many times the current ``tf.function`` has been traced."""
        return int(self.function.experimental_get_tracing_count())


def hashable(key: Any) -> Hashable:
    """``key``, with any dicts and lists in it (nested data specs) made hashable."""
    try:
        hash(key)
    except TypeError:
        return _frozen(key)
    return key


def _frozen(value: Any) -> Hashable:
    if isinstance(value, dict):
        return ("dict", tuple((k, _frozen(item)) for k, item in sorted(value.items())))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_frozen(item) for item in value))
    return value


class FunctionCache:
    """Compiled functions by key, for one task structure at a time, at most ``size`` of them.

    Compiled functions capture the objects they were traced with (models,
    rules, data specs). Keys are looked up under the task's
    ``cache_key()``: when it changes (a new task, or a part of it
    replaced), every function of the old structure is dropped, so the
    cache never keeps replaced objects alive; within one structure the
    least recently used function goes past ``size`` entries.

    Args:
        size: The most functions kept.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._owner: Hashable = None
        self._functions: OrderedDict[Hashable, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._functions)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._functions))

    def keys(self) -> list[Hashable]:
        """The keys held, least recently used first."""
        return list(self._functions)

    def items(self) -> list[tuple[Hashable, Any]]:
        """The ``(key, function)`` pairs held, least recently used first."""
        return list(self._functions.items())

    def owner(self, key: Hashable) -> None:
        """Sets the task structure functions are cached for; a new one empties the cache."""
        if key != self._owner:
            self._functions.clear()
            self._owner = key

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The function under ``key``, made by ``make()`` when missing."""
        key = hashable(key)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = make()
            while len(self._functions) > self._size:
                self._functions.popitem(last=False)
        else:
            self._functions.move_to_end(key)
        return fn

    def compiled(self, key: Hashable, make: Callable[[bool], Any], name: str, jit: Jit) -> Compiled:
        """A :class:`Compiled` of ``make`` under ``(key, jit)``, planned for ``jit``'s run."""
        compiled: Compiled = self.get((key, jit), lambda: Compiled(make, jit, name))
        compiled.plan(jit)
        return compiled
