"""Sample weights: ``sample_weight=`` arrays and ``class_weight=`` maps, as Keras reads them.

A sample weight is one finite number per example (shape ``[N]`` or
``[N, 1]``); losses and metrics weight each example's value by it.
``class_weight={class: weight}`` gives every example the weight of its
class (classes not in the map weigh 1.0): integer labels as they are,
one-hot targets by their ``argmax``, float labels rounded, exactly as
Keras's ``fit`` does. The two cannot be given together, as in Keras.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit.data.structure import is_structure
from gradfit.data.tensors import describe, to_tensor


def sample_weights(
    name: str, value: Any, num_examples: int, float_dtype: tf.DType, x_name: str = "x"
) -> tf.Tensor:
    """``value`` as a ``[N]`` tensor of ``float_dtype``; checked like any input, and its length.

    Args:
        name: The argument's name for messages (``"sample_weight"``, or
            ``"validation_data[2]"``).
        value: One weight per example, shape ``[N]`` or ``[N, 1]``.
        num_examples: ``N``, the number of examples of the features.
        float_dtype: The task's float dtype.
        x_name: The features' name for messages (``"x"``, or
            ``"validation_data[0]"``).
    """
    if is_structure(value):
        raise TypeError(
            f"`{name}` must be one array of weights, one per example, for all outputs. "
            f"{v.received(name, value)}"
        )
    weights = to_tensor(name, value, float_dtype)
    shape = tuple(weights.shape)
    if len(shape) == 2 and shape[1] == 1:
        weights = tf.reshape(weights, [-1])
    elif len(shape) != 1:
        raise ValueError(
            f"`{name}` must hold one weight per example: shape [N] or [N, 1]. "
            f"Received: {name}={describe(value)}"
        )
    if int(weights.shape[0]) != num_examples:
        raise ValueError(
            f"`{name}` must hold one weight per example of `{x_name}` ({num_examples}). "
            f"Received: {name}={describe(value)}"
        )
    return weights


def check_class_weight(class_weight: Any) -> dict[int, float] | None:
    """``class_weight`` as ``{int class: finite float}``; ``None`` stays ``None``."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, Mapping) or not class_weight:
        raise TypeError(
            "`class_weight` must be a non-empty dict {class index: weight}. "
            f"{v.received('class_weight', class_weight)}"
        )
    checked: dict[int, float] = {}
    for key, weight in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, numbers.Integral) or key < 0:
            raise TypeError(
                "`class_weight` keys must be class indices (integers >= 0). "
                f"Received a key {key!r} in class_weight={v.echo(class_weight)}"
            )
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TypeError(
                f"`class_weight` values must be numbers. Received {key!r}: {weight!r} in "
                f"class_weight={v.echo(class_weight)}"
            )
        if not math.isfinite(float(weight)):
            raise ValueError(f"`class_weight` values must be finite. Received {key!r}: {weight!r}")
        checked[int(key)] = float(weight)
    return checked


def _classes(y: tf.Tensor) -> tf.Tensor:
    """Each example's class: one-hot rows by ``argmax``, labels rounded, as Keras does."""
    if y.shape.rank is not None and y.shape.rank >= 2:
        if y.shape[-1] == 1:
            y = tf.squeeze(y, -1)
        else:
            return tf.argmax(y, axis=-1, output_type=tf.int32)
    if y.dtype.is_floating:
        y = tf.round(y)
    return tf.cast(y, tf.int32)


def class_table(class_weight: dict[int, float]) -> tf.Tensor:
    """The weight of every class ``0..max``, 1.0 where ``class_weight`` has none (float32)."""
    table = np.ones(max(class_weight) + 1, np.float32)
    for key, weight in class_weight.items():
        table[key] = weight
    return tf.constant(table)


def class_weights(
    class_weight: dict[int, float], y: Any, float_dtype: tf.DType, name: str = "y"
) -> tf.Tensor:
    """The ``[N]`` sample weights ``class_weight`` gives in-memory targets ``y``."""
    if is_structure(y) or not tf.is_tensor(y):
        raise ValueError(
            "`class_weight` needs a single array of targets `y` (one output); "
            f"for several outputs pass `sample_weight`. Received: {name}={v.echo(y)}"
        )
    classes = _classes(y).numpy()
    weights = np.array([class_weight.get(int(c), 1.0) for c in classes.reshape(-1)])
    return tf.constant(weights.reshape(classes.shape[:1]), float_dtype)


def class_weight_map(class_weight: dict[int, float], float_dtype: tf.DType) -> Any:
    """A ``tf.data`` map function turning ``(x, y)`` elements into ``(x, y, w)``.

    Labels beyond the largest class in ``class_weight`` weigh 1.0.
    """
    table = tf.cast(class_table(class_weight), float_dtype)
    size = int(table.shape[0])

    @tf.autograph.experimental.do_not_convert  # plain Python over static values
    def add_weights(x: Any, y: Any) -> tuple[Any, Any, tf.Tensor]:
        classes = _classes(tf.convert_to_tensor(y))
        inside = tf.logical_and(classes >= 0, classes < size)
        found = tf.gather(table, tf.clip_by_value(classes, 0, size - 1))
        return x, y, tf.where(inside, found, tf.ones_like(found))

    return add_weights
