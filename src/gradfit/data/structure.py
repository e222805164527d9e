"""Nested inputs: dicts, tuples and lists of arrays for multi-input and multi-output models.

A structure is a ``Mapping`` (``{"image": ..., "meta": ...}``), or a tuple
or list whose elements are arrays, tensors or structures themselves
(``(x_a, x_b)``). A list or tuple of plain numbers, or of lists of numbers,
is one array (``[[1.0, 2.0], [3.0, 4.0]]``), as NumPy reads it: two
inputs are never stacked into one array. Every leaf is checked on its own
and named in messages as a path, ``x['image']`` or ``x[1]``. Leaves are
ordered as ``tf.nest`` orders them (dict keys sorted), so the flat list of
tensors and the structure round-trip with ``tf.nest``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v


def _is_array_like(value: Any) -> bool:
    return isinstance(value, np.ndarray) or tf.is_tensor(value)


def is_structure(value: Any) -> bool:
    """Whether ``value`` is a nested structure of inputs rather than one array-like."""
    if isinstance(value, Mapping):
        return True
    if isinstance(value, tuple | list) and value:
        return any(_is_array_like(e) or is_structure(e) for e in value) or (
            isinstance(value, tuple) and all(isinstance(e, list | tuple) for e in value)
        )
    return False


def _key(key: Any) -> str:
    return f"[{key!r}]"


def convert(name: str, value: Any, leaf: Callable[[str, Any], Any]) -> Any:
    """``value`` with every leaf replaced by ``leaf(path, leaf_value)``; same structure.

    Args:
        name: The argument's name, the root of every leaf's path.
        value: An array-like or a structure of them.
        leaf: Converts (and checks) one leaf, given its path for messages.

    Raises:
        ValueError: An empty dict, tuple or list; a dict key that is not a string.
    """
    if not is_structure(value):
        return leaf(name, value)
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"`{name}` is an empty dict. {v.received(name, value)}")
        for key in value:
            if not isinstance(key, str):
                raise TypeError(
                    f"`{name}` must have string keys (the model's input or output names). "
                    f"Received a key {key!r} in {name}"
                )
        return {key: convert(f"{name}{_key(key)}", item, leaf) for key, item in value.items()}
    items = [convert(f"{name}{_key(i)}", item, leaf) for i, item in enumerate(value)]
    return tuple(items) if isinstance(value, tuple) else items


def paths(name: str, structure: Any) -> list[str]:
    """Each leaf's path (``x['image']``) in ``tf.nest.flatten`` order (dict keys sorted)."""
    if isinstance(structure, Mapping):
        return [
            path for key in sorted(structure) for path in paths(name + _key(key), structure[key])
        ]
    if isinstance(structure, tuple | list):
        return [path for i, item in enumerate(structure) for path in paths(name + _key(i), item)]
    return [name]


def check_same_examples(named: list[tuple[str, tf.Tensor]]) -> int:
    """The number of examples every leaf holds; a ``ValueError`` naming two that differ."""
    first_name, first = named[0]
    n = int(first.shape[0])
    for leaf_name, tensor in named[1:]:
        if int(tensor.shape[0]) != n:
            raise ValueError(
                f"`{first_name}` and `{leaf_name}` must have the same number of examples. "
                f"Received: {first_name}.shape={tuple(first.shape)}, "
                f"{leaf_name}.shape={tuple(tensor.shape)}"
            )
    return n


def batch_spec(structure: Any) -> Any:
    """The spec of a batch of ``structure`` (nested tensors): examples axis of unknown size."""
    return tf.nest.map_structure(lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), structure)


def batch_of(x: Any, y: Any, weights: Any) -> Any:
    """The batch a task sees from its parts: ``x``, ``(x, y)`` or ``(x, y, weights)``."""
    if y is None:
        return x
    return (x, y) if weights is None else (x, y, weights)
