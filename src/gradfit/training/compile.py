"""Compiling: ``jit_compile`` resolved per function, and a bounded cache of compiled functions.

:class:`Compiled` wraps a ``tf.function`` whose ``jit_compile="auto"`` is
settled on its first call by looking at its graph (:func:`xla_obstacle`).
:class:`FunctionCache` keeps a trainer's compiled functions across fits,
for one task structure at a time and a bounded number of data shapes, so
that replacing the task (or one of its parts) frees what the old one held.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

logger = logging.getLogger("gradfit")

AUTO_JIT_MIN_STEPS = 100
"""With ``jit_compile="auto"``, fits of fewer steps than this skip XLA.

XLA compilation costs about 0.05-0.1 s per function on a CPU (measured on
the 2-core development machine: the tutorial's step traces in 34 ms without
XLA and 99 ms with it); a fit of a few dozen steps cannot win that back, and
the tutorial itself (10 steps) would take 3x longer.
"""


def jit_for(jit_compile: bool | str, steps: int | None) -> bool | str:
    """The jit mode for a run of ``steps`` steps: ``"auto"`` skips XLA for short runs."""
    if jit_compile == "auto" and steps is not None and steps < AUTO_JIT_MIN_STEPS:
        return False
    return jit_compile


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

    With ``"auto"`` the first call (or :meth:`resolve`) checks, without
    running anything, whether XLA can compile the graph faithfully (see
    :func:`xla_obstacle`); if not, the function is rebuilt without XLA and a
    note is logged.

    Args:
        make: Builds the ``tf.function`` for a given ``jit_compile`` flag.
        jit_compile: ``True``, ``False`` or ``"auto"``.
        name: What the function does, for the log note.
    """

    def __init__(self, make: Callable[[bool], Any], jit_compile: bool | str, name: str) -> None:
        self._make = make
        self._name = name
        self._pending_auto = jit_compile == "auto"
        self.jit_compile = jit_compile is True or jit_compile == "auto"
        self.function = make(self.jit_compile)

    @property
    def pending(self) -> bool:
        """Whether ``jit_compile="auto"`` is still to be settled."""
        return self._pending_auto

    def resolve(self, *args: Any) -> None:
        """Settles ``"auto"`` by checking the function on ``args`` (no-op otherwise)."""
        if self._pending_auto:
            self.settle(xla_obstacle(self.function, *args))

    def settle(self, reason: str | None) -> None:
        """Settles ``"auto"``: XLA stays on when ``reason`` is ``None``, else it goes off."""
        if not self._pending_auto:
            return
        self._pending_auto = False
        if reason is not None:
            logger.info("jit_compile='auto': not using XLA for the %s: %s", self._name, reason)
            self.jit_compile = False
            self.function = self._make(False)

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

    def compiled(
        self, key: Hashable, make: Callable[[bool], Any], name: str, jit: bool | str
    ) -> Compiled:
        """A :class:`Compiled` of ``make`` under ``(key, jit)``."""
        return self.get((key, jit), lambda: Compiled(make, jit, name))
