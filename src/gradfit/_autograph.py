"""gradfit's compiled functions trace its own code as plain Python; users' code keeps autograph.

Autograph rewrites a Python function's source so that ``if``/``for``/
``while`` on tensors become graph control flow. It is what lets a user's
model, loss or rule branch on a tensor, but it is also most of a fresh
process's first ``fit``: converting gradfit's own thirty-odd traced
functions cost 1.4 s of the tutorial's 1.6 s. gradfit's code needs none of
it (its control flow is explicit ``tf.cond``/``tf.while_loop``), so:

* :func:`function` builds every gradfit ``tf.function`` with
  ``autograph=False``;
* :func:`traced` is applied where gradfit calls something a user brought
  (a model, a loss, a metric, a rule's ``apply``, a schedule, a transform,
  a Task's steps): a user's callable comes back converted by
  ``tf.autograph.to_graph`` (recursively, as ``tf.function`` would have
  converted it), gradfit's own and TensorFlow's or Keras's come back as
  they are (autograph never converts TensorFlow or Keras either).

A user's subclass of a gradfit class counts as the user's: its inherited
methods are converted too, so that whatever it overrides is. Conversions
are cached by autograph; a callable whose source cannot be read (defined
in an interactive shell, a C function) runs unconverted, as autograph
itself would run it.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, TypeVar

import tensorflow as tf

F = TypeVar("F", bound=Callable[..., Any])

# Top-level packages whose code is never converted: gradfit's own (plain
# Python over static values), and what autograph itself leaves alone.
_AS_IS = frozenset({"gradfit", "tensorflow", "keras", "tf_keras", "numpy", "builtins"})


def function(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """``tf.function(fn, autograph=False, **kwargs)``: gradfit's code traced as it is."""
    return tf.function(fn, autograph=False, **kwargs)


def _package(module: str | None) -> str:
    return (module or "").partition(".")[0]


def _is_users(*modules: str | None) -> bool:
    return any(_package(module) not in _AS_IS for module in modules)


def traced(fn: F) -> F:
    """``fn`` as a compiled gradfit function should call it: a user's code converted.

    Eagerly, and for gradfit's, TensorFlow's and Keras's own callables,
    ``fn`` itself. Bound methods, callable objects and ``functools.partial``
    are converted through the function they run.
    """
    if tf.executing_eagerly():
        return fn
    converted = _converted(fn)
    return fn if converted is None else converted  # type: ignore[return-value]


def _converted(fn: Any) -> Callable[..., Any] | None:
    """The converted callable, or ``None`` where ``fn`` runs as it is."""
    if isinstance(fn, functools.partial):
        inner = _converted(fn.func)
        return None if inner is None else functools.partial(inner, *fn.args, **fn.keywords)
    if isinstance(fn, types.MethodType):
        owner = type(fn.__self__).__module__
        if not _is_users(owner, fn.__func__.__module__) or _is_library(fn.__func__):
            return None
        code = _to_graph(fn.__func__)
        return None if code is None else types.MethodType(code, fn.__self__)
    if inspect.isfunction(fn):
        return _to_graph(fn) if _is_users(fn.__module__) else None
    if callable(fn) and inspect.isfunction(type(fn).__call__):
        return _converted(types.MethodType(type(fn).__call__, fn))
    return None


def _is_library(function: Any) -> bool:
    """Whether ``function`` is TensorFlow's or Keras's (a user's Keras subclass's ``__call__``)."""
    return _package(function.__module__) in _AS_IS - {"gradfit"}


@functools.lru_cache(maxsize=1024)
def _to_graph(function: Callable[..., Any]) -> Callable[..., Any] | None:
    """``tf.autograph.to_graph(function)``; ``None`` where its source cannot be converted."""
    try:
        return tf.autograph.to_graph(function)
    except Exception:  # unreadable source, or a construct autograph cannot convert
        return None
