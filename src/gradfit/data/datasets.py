"""``tf.data`` inputs: elements checked through the ``element_spec``, features cast.

A dataset yields batches: ``(x, y)``, ``(x, y, w)`` with sample weights, or
``x`` alone (``predict``, or a task that trains on features); ``x`` and
``y`` may be nested structures, as for in-memory data. Every leaf must be
a dense numeric tensor with an examples axis; float features are cast to
the task's float dtype, integer targets stay integers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from gradfit.data.structure import batch_of, paths
from gradfit.data.weights import class_weight_map


@dataclass
class DatasetData:
    """A ``tf.data.Dataset`` of batches as a task sees them, features cast to its dtype.

    Attributes:
        dataset: The dataset, elements in :attr:`batch_spec`'s structure.
        x_spec: Spec of the features (nested as they are).
        y_spec: Spec of the targets, or ``None``.
        weight_spec: Spec of the sample weights, or ``None``.
    """

    dataset: tf.data.Dataset
    x_spec: Any
    y_spec: Any
    weight_spec: tf.TensorSpec | None = None

    @property
    def steps(self) -> int | None:
        """Batches per pass, if the dataset knows its length."""
        cardinality = int(self.dataset.cardinality())
        return cardinality if cardinality >= 0 else None

    @property
    def batch_spec(self) -> Any:
        """The spec of an element as a task sees it: ``x``, ``(x, y)`` or ``(x, y, w)``."""
        return batch_of(self.x_spec, self.y_spec, self.weight_spec)

    def elements(self) -> Iterator[tuple[Any, None]]:
        """Yields ``(batch, None)`` for one pass over the dataset (sizes are not known ahead)."""
        for element in self.dataset:
            yield element, None

    def batches(self) -> Iterator[tuple[Any, Any, None]]:
        """Yields ``(x_batch, y_batch, None)`` for one pass over the dataset."""
        for element in self.dataset:
            if self.y_spec is None:
                yield element, None, None
            else:
                yield element[0], element[1], None


def _leaf_spec(
    name: str, where: str, spec: Any, float_dtype: tf.DType, *, keep_int: bool
) -> tf.TensorSpec:
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(
            f"`{name}` must yield dense tensors; its {where} are not. Received: {where} spec {spec}"
        )
    dtype = spec.dtype
    if dtype == tf.string or not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        raise TypeError(
            f"`{name}` must yield numeric {where}. Received: {where} dtype {dtype.name}"
        )
    if spec.shape.rank is None or spec.shape.rank == 0:
        raise ValueError(
            f"`{name}` must yield batches: its {where} need rank >= 1. "
            f"Received: {where} shape {spec.shape}"
        )
    cast_to = dtype if keep_int and dtype.is_integer else float_dtype
    return tf.TensorSpec([None, *spec.shape[1:]], cast_to)


def _part_spec(
    name: str, part: str, root: str, spec: Any, float_dtype: tf.DType, *, keep_int: bool
) -> Any:
    """The batch spec of one part (features, targets, weights), every leaf checked."""
    leaves = tf.nest.flatten(spec)
    nested = len(leaves) > 1 or not isinstance(spec, tf.TensorSpec)
    wheres = [f"{part} {path}" for path in paths(root, spec)] if nested else [part]
    checked = [
        _leaf_spec(name, where, leaf, float_dtype, keep_int=keep_int)
        for where, leaf in zip(wheres, leaves, strict=True)
    ]
    return tf.nest.pack_sequence_as(spec, checked)


def _unpack(spec: Any, with_targets: bool | None) -> tuple[Any, Any, Any, bool]:
    """``(x, y, w)`` specs of an element, and whether it carried targets."""
    is_tuple = isinstance(spec, tuple) and len(spec) in (2, 3)
    if with_targets is None:
        with_targets = is_tuple
    if not with_targets:
        return (spec[0] if is_tuple else spec), None, None, is_tuple
    if not is_tuple:
        raise ValueError("must be a tf.data.Dataset of (x, y) or (x, y, sample_weight) batches")
    weights = spec[2] if len(spec) == 3 else None
    return spec[0], spec[1], weights, True


def _first_dims(spec: Any) -> list[int | None]:
    return [s.shape[0] if s.shape.rank else None for s in tf.nest.flatten(spec)]


def _check_batch_sizes(name: str, spec: Any) -> None:
    known = {d for d in _first_dims(spec) if d is not None}
    if len(known) > 1:
        raise ValueError(
            f"`{name}` yields batches whose parts have different numbers of examples: "
            f"{sorted(known)}. Received: element_spec={spec}"
        )


def _check_length(name: str, dataset: tf.data.Dataset) -> None:
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"`{name}` is an infinite tf.data.Dataset (it repeats forever), so an epoch would "
            f"never end; pass a finite dataset, e.g. without `.repeat()` or with `.take(n)`. "
            f"Received: {name}={dataset}"
        )
    if cardinality == 0:
        raise ValueError(f"`{name}` is an empty tf.data.Dataset. Received: {name}={dataset}")


def _check_class_weight_targets(name: str, spec: Any, y_raw: Any, w_raw: Any) -> None:
    """A ``ValueError`` naming ``class_weight`` unless elements are ``(x, y)`` with one ``y``."""
    if w_raw is not None:
        raise ValueError(
            f"`class_weight` cannot be combined with a dataset that yields sample weights "
            f"(as in Keras). Received: element_spec={spec}"
        )
    if y_raw is None or not isinstance(y_raw, tf.TensorSpec):
        raise ValueError(
            f"`class_weight` needs a dataset `{name}` whose targets are a single tensor (one "
            "output); for several outputs, have the dataset yield (x, y, sample_weight) "
            f"batches instead. Received: element_spec={spec}"
        )


def _weight_spec(name: str, w_raw: Any, float_dtype: tf.DType) -> tf.TensorSpec:
    """The spec of a dataset's sample weights: one per example, ``[B]`` (or ``[B, 1]``)."""
    if tf.nest.is_nested(w_raw):
        raise TypeError(
            f"`{name}` must yield one tensor of sample weights, one weight per example (shape "
            f"[B]), for all outputs. Received: sample weights spec {w_raw}"
        )
    w_spec = _leaf_spec(name, "sample weights", w_raw, float_dtype, keep_int=False)
    shape = w_spec.shape
    if shape.rank > 2 or (shape.rank == 2 and shape[1] not in (1, None)):
        raise ValueError(
            f"`{name}` must yield sample weights of one weight per example: shape [B] (or "
            f"[B, 1]). Received: sample weights of shape {w_raw.shape}"
        )
    return w_spec


def from_dataset(
    name: str,
    dataset: tf.data.Dataset,
    float_dtype: tf.DType,
    *,
    with_targets: bool | None = True,
    class_weight: dict[int, float] | None = None,
) -> DatasetData:
    """Checks a dataset's ``element_spec`` and casts its features (and weights).

    Args:
        name: The argument's name for messages.
        dataset: Elements are ``(x, y)`` or ``(x, y, w)`` batches (``x``
            batches when ``with_targets`` is false).
        float_dtype: The task's float dtype.
        with_targets: Whether elements carry targets; ``None``: they do when
            they are pairs or triples.
        class_weight: Checked class weights, turned into sample weights.
    """
    _check_length(name, dataset)
    spec = dataset.element_spec
    try:
        x_raw, y_raw, w_raw, is_tuple = _unpack(spec, with_targets)
    except ValueError as err:
        raise ValueError(f"`{name}` {err}. Received: a Dataset with element_spec={spec}") from None
    x_spec = _part_spec(name, "features", "x", x_raw, float_dtype, keep_int=False)
    y_spec = None
    if y_raw is not None:
        y_spec = _part_spec(name, "targets", "y", y_raw, float_dtype, keep_int=True)
    if class_weight is not None:
        _check_class_weight_targets(name, spec, y_raw, w_raw)
        dataset = dataset.map(class_weight_map(class_weight, float_dtype))
        w_raw = tf.TensorSpec([None], float_dtype)
    w_spec = None
    if w_raw is not None:
        w_spec = _weight_spec(name, w_raw, float_dtype)
    _check_batch_sizes(name, [part for part in (x_raw, y_raw, w_raw) if part is not None])
    data = DatasetData(dataset, x_spec, y_spec, w_spec)
    target = data.batch_spec

    @tf.autograph.experimental.do_not_convert  # plain Python over static values
    def cast(*element: Any) -> Any:
        # Dataset.map passes a tuple element's parts as separate arguments.
        if y_spec is not None:
            parts = element[: 3 if w_spec is not None else 2]
        elif is_tuple:
            parts = element[0]
        else:
            parts = element if isinstance(x_raw, tuple) else element[0]
        return tf.nest.map_structure(lambda t, s: tf.cast(t, s.dtype), parts, target)

    data.dataset = dataset.map(cast).prefetch(tf.data.AUTOTUNE)
    return data
