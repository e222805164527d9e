"""``prepare``: what ``fit``, ``evaluate`` and ``predict`` receive, checked and made batchable."""

from __future__ import annotations

from typing import Any, NoReturn

import tensorflow as tf

from gradfit import _validation as v
from gradfit.data.arrays import ArrayData
from gradfit.data.datasets import DatasetData, from_dataset
from gradfit.data.structure import check_same_examples, convert, paths
from gradfit.data.tensors import describe, to_tensor
from gradfit.data.weights import check_class_weight, class_weights, sample_weights

Data = ArrayData | DatasetData


def _check_dataset_args(
    names: tuple[str, str], y: Any, batch_size: int | None, sample_weight: Any
) -> None:
    x_name, y_name = names
    given = ((y_name, y), ("sample_weight", sample_weight))
    for name, value in given:
        if value is not None:
            raise ValueError(
                f"`{name}` must be None when `{x_name}` is a tf.data.Dataset (the dataset "
                f"yields it). Received: {name}={describe(value)}"
            )
    if batch_size is not None:
        raise ValueError(
            f"`batch_size` must be None when `{x_name}` is a tf.data.Dataset (it is batched "
            f"already). Received: batch_size={batch_size}"
        )


def _tensors(name: str, value: Any, float_dtype: tf.DType, *, keep_int: bool) -> Any:
    """``value`` (an array-like or a structure of them) as tensors, every leaf checked."""

    def leaf(path: str, array: Any) -> tf.Tensor:
        return to_tensor(path, array, float_dtype, keep_int=keep_int)

    return convert(name, value, leaf)


def _named(name: str, structure: Any) -> list[tuple[str, tf.Tensor]]:
    return list(zip(paths(name, structure), tf.nest.flatten(structure), strict=True))


def _weights(
    sample_weight: Any,
    class_weight: dict[int, float] | None,
    y: Any,
    n: int,
    float_dtype: tf.DType,
    names: tuple[str, str, str],
) -> tf.Tensor | None:
    """The ``[N]`` weights of in-memory data; ``names``: those of ``x``, ``y``, the weights."""
    x_name, y_name, weight_name = names
    if sample_weight is not None and class_weight is not None:
        raise ValueError(
            f"`{weight_name}` and `class_weight` cannot both be given (as in Keras); multiply "
            "the class weights into the sample weights instead."
        )
    if sample_weight is not None:
        return sample_weights(weight_name, sample_weight, n, float_dtype, x_name)
    if class_weight is not None:
        return class_weights(class_weight, y, float_dtype, y_name)
    return None


def _refuse_weights_without_targets(
    sample_weight: Any, class_weight: Any, y_name: str, weight_name: str
) -> NoReturn:
    if sample_weight is not None:
        raise ValueError(
            f"`{weight_name}` needs targets `{y_name}`. "
            f"Received: {weight_name}={describe(sample_weight)}"
        )
    raise ValueError(
        f"`class_weight` needs targets `{y_name}`. {v.received('class_weight', class_weight)}"
    )


def _refuse_distributed(name: str, x: Any) -> None:
    """A ``TypeError`` for a dataset a strategy has distributed already (gradfit does that)."""
    if isinstance(x, tf.distribute.DistributedDataset):
        raise TypeError(
            f"`{name}` must be a tf.data.Dataset of global batches, not one that a strategy "
            "has distributed already: pass the dataset itself (the Trainer's `strategy` splits "
            f"every batch over its replicas). {v.received(name, x)}"
        )


def prepare(
    x: Any,
    y: Any,
    *,
    float_dtype: tf.DType,
    batch_size: int | None,
    names: tuple[str, str] = ("x", "y"),
    with_targets: bool | None = True,
    sample_weight: Any = None,
    class_weight: Any = None,
    weight_name: str = "sample_weight",
) -> Data:
    """Validates ``x``, ``y`` and the weights, and returns batchable data.

    Args:
        x: Features (an array-like or a nested structure of them), or a
            ``tf.data.Dataset`` of ``(x, y)`` / ``(x, y, w)`` batches.
        y: Targets, likewise; must be ``None`` when ``x`` is a dataset.
        float_dtype: The task's float dtype.
        batch_size: Examples per batch; ``None`` means all in one batch. Must
            be ``None`` for datasets, which are batched already.
        names: The names of the two arguments, for messages.
        with_targets: ``False`` for ``predict``, where ``y`` is not used;
            ``None`` when targets are optional (used when given).
        sample_weight: One weight per example (in-memory data only).
        class_weight: ``{class: weight}``, turned into sample weights.
        weight_name: The name of ``sample_weight`` for messages
            (``"validation_data[2]"`` for a validation triple).
    """
    x_name, y_name = names
    batch_size = v.optional_positive_int("batch_size", batch_size)
    class_weight = check_class_weight(class_weight)
    _refuse_distributed(x_name, x)
    if isinstance(x, tf.data.Dataset):
        _check_dataset_args(names, y, batch_size, sample_weight)
        return from_dataset(
            x_name, x, float_dtype, with_targets=with_targets, class_weight=class_weight
        )
    x_tensors = _tensors(x_name, x, float_dtype, keep_int=False)
    named = _named(x_name, x_tensors)
    y_tensors = None
    if with_targets is None:
        with_targets = y is not None
    if with_targets:
        if y is None:
            raise TypeError(
                f"`{y_name}` is required when `{x_name}` is an array; got None. Pass targets, or "
                f"a tf.data.Dataset of (x, y) batches as `{x_name}`."
            )
        y_tensors = _tensors(y_name, y, float_dtype, keep_int=True)
        named += _named(y_name, y_tensors)
    elif sample_weight is not None or class_weight is not None:
        _refuse_weights_without_targets(sample_weight, class_weight, y_name, weight_name)
    n = check_same_examples(named)
    weight_names = (x_name, y_name, weight_name)
    weights = _weights(sample_weight, class_weight, y_tensors, n, float_dtype, weight_names)
    return ArrayData(x_tensors, y_tensors, n if batch_size is None else min(batch_size, n), weights)
