"""Inputs: validation, conversion, and batching.

Everything a user hands to ``fit``, ``evaluate`` or ``predict`` passes
through here once, before any variable changes. Arrays, tensors and Python
lists are checked (numeric, rectangular, non-empty, finite, matching
lengths), converted to tensors of the model's float dtype (integer and
boolean features too; integer targets stay integers, for class labels) and
then sliced into batches. A ``tf.data.Dataset`` of ``(x, y)`` batches is
checked through its ``element_spec`` and its features cast the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v

_NUMERIC_KINDS = "biuf"

CHUNKED_BYTES = 64 * 2**20
"""Arrays at least this large are copied to the device in slices (see ``to_tensor``)."""
CHUNK_BYTES = 16 * 2**20


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    return v.echo(value)


def _kind(dtype: tf.DType) -> str:
    """NumPy's kind letter for a TensorFlow dtype (bfloat16 and float8 included)."""
    if dtype.is_bool:
        return "b"
    if dtype.is_floating:
        return "f"
    if dtype.is_integer:
        return "u" if dtype.is_unsigned else "i"
    if dtype.is_complex:
        return "c"
    return "U" if dtype == tf.string else "O"


def to_tensor(name: str, value: Any, float_dtype: tf.DType, *, keep_int: bool = False) -> tf.Tensor:
    """Checks an array-like input and returns it as a tensor.

    Args:
        name: The argument's name, for error messages (``"x"``, ``"y"``, ...).
        value: A NumPy array, a tensor, a Python list or a number sequence.
        float_dtype: The dtype floating-point (and, unless ``keep_int``,
            integer and boolean) data is cast to.
        keep_int: Keep integer data as integers (class labels).

    Returns:
        The tensor. NumPy arrays of ``CHUNKED_BYTES`` or more are copied in
        slices, so the conversion never holds two copies at once.

    Raises:
        TypeError: ``None``, strings, objects, complex numbers, ragged or
            sparse tensors.
        ValueError: Ragged lists, scalars, empty data, NaN or infinity.
    """
    if value is None:
        raise TypeError(f"`{name}` must be an array, a tensor or a list; got None.")
    if isinstance(value, tf.data.Dataset):
        raise TypeError(
            f"`{name}` cannot be a tf.data.Dataset here; pass a Dataset of (x, y) batches as `x`. "
            f"{v.received(name, value)}"
        )
    if isinstance(value, tf.RaggedTensor | tf.SparseTensor):
        raise TypeError(
            f"`{name}` must be a dense array or tensor, not a {type(value).__name__}. "
            f"{v.received(name, value)}"
        )
    if tf.is_tensor(value):
        tensor = tf.convert_to_tensor(value)
        kind = _kind(tensor.dtype)
        shape: tuple[int, ...] = tuple(tensor.shape.as_list())
    else:
        array, tensor, kind = _as_array(name, value)
        shape = array.shape
    if kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"`{name}` must hold numbers (bool, int or float), not dtype "
            f"{'string' if kind in 'USa' else 'object' if kind == 'O' else kind!r}. "
            f"Received: {name}={_describe(value)}"
        )
    if len(shape) == 0:
        raise ValueError(
            f"`{name}` must have an examples axis (rank >= 1); got a scalar. "
            f"{v.received(name, value)}"
        )
    if math.prod(shape) == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name}.shape={shape}")
    target = None if (kind in "iu" and keep_int) else float_dtype
    # Finiteness is checked after the cast: 1e300 is finite in float64, not in float32.
    if tensor is None and array.nbytes >= CHUNKED_BYTES:
        return _chunked_to_device(name, value, array, target)
    if tensor is None and target != tf.bfloat16:  # NumPy has no bfloat16
        if target is not None and array.dtype != target.as_numpy_dtype:
            with np.errstate(over="ignore", invalid="ignore"):
                array = array.astype(target.as_numpy_dtype)
        if array.dtype.kind == "f":
            finite = np.isfinite(array)
            if not finite.all():
                _not_finite(name, value, array.dtype.name, np.argwhere(~finite)[0])
        return tf.convert_to_tensor(array)
    if tensor is None:
        tensor = tf.convert_to_tensor(array)
    if target is not None and tensor.dtype != target:
        tensor = tf.cast(tensor, target)
    return _check_finite(name, value, tensor)


def _as_array(name: str, value: Any) -> tuple[np.ndarray, tf.Tensor | None, str]:
    """``value`` as a NumPy array, a tensor for NumPy extension floats, and its kind letter."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"`{name}` must be rectangular (all rows of equal length), numeric data. "
            f"Could not convert it to an array ({err}). {v.received(name, value)}"
        ) from None
    kind, tensor = array.dtype.kind, None
    if kind == "V":  # NumPy extension floats from ml_dtypes (bfloat16, float8...)
        try:
            extension = tf.as_dtype(array.dtype)
        except TypeError:
            extension = None
        if extension is not None and extension.is_floating:
            tensor, kind = tf.convert_to_tensor(array), "f"
    return array, tensor, kind


def _chunked_to_device(
    name: str, value: Any, array: np.ndarray, target: tf.DType | None
) -> tf.Tensor:
    """Copies a large array to the device in slices, checking and casting each one.

    ``tf.convert_to_tensor`` on a NumPy array briefly holds two copies of it
    (three times the data in all, with the user's own array). Here the device
    tensor is allocated once, uninitialised, and ~16 MiB slices are written
    into it with ``InplaceUpdate``, which updates the buffer in place in
    eager mode, so the extra memory is one copy plus a slice. Should a
    TensorFlow version copy instead, the first slice shows it and the whole
    array is converted the ordinary way.
    """
    dtype = target if target is not None else tf.as_dtype(array.dtype)
    rows = max(1, CHUNK_BYTES // max(1, array[:1].nbytes))
    with tf.init_scope():
        data = tf.raw_ops.Empty(shape=array.shape, dtype=dtype)
        for start in range(0, array.shape[0], rows):
            chunk = tf.convert_to_tensor(array[start : start + rows])
            if chunk.dtype != dtype:
                chunk = tf.cast(chunk, dtype)
            if dtype.is_floating:
                finite = tf.math.is_finite(chunk)
                if not bool(tf.reduce_all(finite)):
                    first = tf.where(tf.logical_not(finite))[0].numpy()
                    first[0] += start
                    _not_finite(name, value, dtype.name, first)
            before = data
            data = tf.raw_ops.InplaceUpdate(
                x=data, i=tf.range(start, start + int(chunk.shape[0])), v=chunk
            )
            if start == 0 and not bool(tf.reduce_all(tf.equal(before[:1], chunk[:1]))):
                # Not updated in place: fall back to one ordinary conversion.
                del before, data
                tensor = tf.convert_to_tensor(array)
                if tensor.dtype != dtype:
                    tensor = tf.cast(tensor, dtype)
                return _check_finite(name, value, tensor)
    return data


def _check_finite(name: str, value: Any, tensor: tf.Tensor) -> tf.Tensor:
    if tensor.dtype.is_floating:
        finite = tf.math.is_finite(tensor)
        if not bool(tf.reduce_all(finite)):
            _not_finite(name, value, tensor.dtype.name, tf.where(tf.logical_not(finite))[0].numpy())
    return tensor


def _not_finite(name: str, value: Any, dtype: str, first: Any) -> None:
    index = tuple(int(i) for i in first)
    raise ValueError(
        f"`{name}` must be finite in {dtype}; it holds NaN, infinity or a value too large "
        f"for {dtype}, first at index {index}. Received: {name}={_describe(value)}"
    )


@dataclass
class ArrayData:
    """In-memory examples, sliced into batches of ``batch_size``.

    Attributes:
        x: Features, examples first.
        y: Targets (``None`` for ``predict``), examples first.
        batch_size: Examples per batch; the last batch may be smaller.
    """

    x: tf.Tensor
    y: tf.Tensor | None
    batch_size: int

    @property
    def num_examples(self) -> int:
        """Number of examples."""
        return int(self.x.shape[0])

    @property
    def steps(self) -> int:
        """Number of batches per pass over the data."""
        return math.ceil(self.num_examples / self.batch_size)

    @property
    def x_spec(self) -> tf.TensorSpec:
        """Spec of a batch of features (examples axis of unknown size)."""
        return tf.TensorSpec([None, *self.x.shape[1:]], self.x.dtype)

    @property
    def y_spec(self) -> tf.TensorSpec | None:
        """Spec of a batch of targets (examples axis of unknown size)."""
        if self.y is None:
            return None
        return tf.TensorSpec([None, *self.y.shape[1:]], self.y.dtype)

    @property
    def arrays(self) -> tuple[tf.Tensor, ...]:
        """The tensors a batch is sliced from: ``(x,)``, or ``(x, y)``."""
        return (self.x,) if self.y is None else (self.x, self.y)

    @property
    def batch_spec(self) -> Any:
        """The spec of a batch as a task sees it: ``x_spec``, or ``(x_spec, y_spec)``."""
        return self.x_spec if self.y_spec is None else (self.x_spec, self.y_spec)

    def pack(self, tensors: Sequence[tf.Tensor]) -> Any:
        """The batch a task sees from tensors sliced like :attr:`arrays`: ``x`` or ``(x, y)``."""
        return tensors[0] if self.y is None else tuple(tensors)

    def batches(self) -> Iterator[tuple[tf.Tensor, tf.Tensor | None, int]]:
        """Yields ``(x_batch, y_batch, batch_size)`` for one pass over the data, in order."""
        n, size = self.num_examples, self.batch_size
        for start in range(0, n, size):
            stop = min(start + size, n)
            if start == 0 and stop == n:
                yield self.x, self.y, n
            else:
                y_batch = None if self.y is None else self.y[start:stop]
                yield self.x[start:stop], y_batch, stop - start


@dataclass
class DatasetData:
    """A ``tf.data.Dataset`` of ``(x, y)`` batches, features cast to the model's dtype."""

    dataset: tf.data.Dataset
    x_spec: tf.TensorSpec
    y_spec: tf.TensorSpec | None

    @property
    def steps(self) -> int | None:
        """Batches per pass, if the dataset knows its length."""
        cardinality = int(self.dataset.cardinality())
        return cardinality if cardinality >= 0 else None

    @property
    def batch_spec(self) -> Any:
        """The spec of an element as a task sees it: ``x_spec``, or ``(x_spec, y_spec)``."""
        return self.x_spec if self.y_spec is None else (self.x_spec, self.y_spec)

    def batches(self) -> Iterator[tuple[tf.Tensor, tf.Tensor | None, int | None]]:
        """Yields ``(x_batch, y_batch, None)`` for one pass over the dataset."""
        for element in self.dataset:
            if self.y_spec is None:
                yield element, None, None
            else:
                yield element[0], element[1], None


Data = ArrayData | DatasetData


def example_batch(spec: Any) -> Any:
    """An all-zero batch of the structure ``spec`` (nested ``tf.TensorSpec``), static shapes.

    Unknown per-example sizes are 1; the number of examples is one no
    per-example dimension has, so shapes cannot match by luck.
    """
    specs = tf.nest.flatten(spec)
    dims = [[d or 1 for d in s.shape[1:]] for s in specs]
    n = next(k for k in range(2, 2**31) if all(k not in d for d in dims))
    zeros = [tf.zeros([n, *d], s.dtype) for s, d in zip(specs, dims, strict=True)]
    return tf.nest.pack_sequence_as(spec, zeros)


def _dataset_spec(
    name: str, part: str, spec: Any, float_dtype: tf.DType, *, keep_int: bool
) -> tf.TensorSpec:
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(
            f"`{name}` must yield dense tensors; its {part} are not. Received: {part} spec {spec}"
        )
    if spec.dtype == tf.string or not (
        spec.dtype.is_floating or spec.dtype.is_integer or spec.dtype.is_bool
    ):
        raise TypeError(
            f"`{name}` must yield numeric {part}. Received: {part} dtype {spec.dtype.name}"
        )
    if spec.shape.rank is None or spec.shape.rank == 0:
        raise ValueError(
            f"`{name}` must yield batches: its {part} need rank >= 1. "
            f"Received: {part} shape {spec.shape}"
        )
    dtype = spec.dtype if keep_int and spec.dtype.is_integer else float_dtype
    return tf.TensorSpec([None, *spec.shape[1:]], dtype)


def from_dataset(
    name: str,
    dataset: tf.data.Dataset,
    float_dtype: tf.DType,
    *,
    with_targets: bool | None = True,
) -> DatasetData:
    """Checks a dataset's ``element_spec`` and casts its features.

    Args:
        name: The argument's name for messages.
        dataset: Elements are ``(x, y)`` batches (or ``x`` batches when
            ``with_targets`` is false).
        float_dtype: The model's float dtype.
        with_targets: Whether elements carry targets; ``None``: they do when
            they are pairs.
    """
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"`{name}` is an infinite tf.data.Dataset (it repeats forever), so an epoch would "
            f"never end; pass a finite dataset, e.g. without `.repeat()` or with `.take(n)`. "
            f"Received: {name}={dataset}"
        )
    if cardinality == 0:
        raise ValueError(f"`{name}` is an empty tf.data.Dataset. Received: {name}={dataset}")
    spec = dataset.element_spec
    if with_targets is None:
        with_targets = isinstance(spec, tuple) and len(spec) == 2
    if with_targets:
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError(
                f"`{name}` must be a tf.data.Dataset of (x, y) batches. "
                f"Received: a Dataset with element_spec={spec}"
            )
        x_spec = _dataset_spec(name, "features", spec[0], float_dtype, keep_int=False)
        y_spec = _dataset_spec(name, "targets", spec[1], float_dtype, keep_int=True)
        x_rows, y_rows = spec[0].shape[0], spec[1].shape[0]
        if x_rows is not None and y_rows is not None and x_rows != y_rows:
            raise ValueError(
                f"`{name}` yields batches whose features and targets have different numbers of "
                f"examples: {x_rows} and {y_rows}. Received: element_spec={spec}"
            )

        def cast(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return tf.cast(x, x_spec.dtype), tf.cast(y, y_spec.dtype)

        dataset = dataset.map(cast)
        return DatasetData(dataset.prefetch(tf.data.AUTOTUNE), x_spec, y_spec)
    if isinstance(spec, tuple) and len(spec) == 2:
        spec = spec[0]
        dataset = dataset.map(lambda x, _y: x)
    x_spec = _dataset_spec(name, "features", spec, float_dtype, keep_int=False)
    dataset = dataset.map(lambda x: tf.cast(x, x_spec.dtype))
    return DatasetData(dataset.prefetch(tf.data.AUTOTUNE), x_spec, None)


def prepare(
    x: Any,
    y: Any,
    *,
    float_dtype: tf.DType,
    batch_size: int | None,
    names: tuple[str, str] = ("x", "y"),
    with_targets: bool | None = True,
) -> Data:
    """Validates ``x`` and ``y`` and returns batchable data.

    Args:
        x: Features, or a ``tf.data.Dataset`` of ``(x, y)`` batches.
        y: Targets; must be ``None`` when ``x`` is a dataset.
        float_dtype: The model's float dtype.
        batch_size: Examples per batch; ``None`` means all in one batch. Must
            be ``None`` for datasets, which are batched already.
        names: The names of the two arguments, for messages.
        with_targets: ``False`` for ``predict``, where ``y`` is not used;
            ``None`` when targets are optional (used when given).
    """
    x_name, y_name = names
    batch_size = v.optional_positive_int("batch_size", batch_size)
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                f"`{y_name}` must be None when `{x_name}` is a tf.data.Dataset (the dataset "
                f"yields the targets). Received: {y_name}={_describe(y)}"
            )
        if batch_size is not None:
            raise ValueError(
                f"`batch_size` must be None when `{x_name}` is a tf.data.Dataset (it is batched "
                f"already). Received: batch_size={batch_size}"
            )
        return from_dataset(x_name, x, float_dtype, with_targets=with_targets)
    x_tensor = to_tensor(x_name, x, float_dtype)
    y_tensor = None
    if with_targets is None:
        with_targets = y is not None
    if with_targets:
        if y is None:
            raise TypeError(
                f"`{y_name}` is required when `{x_name}` is an array; got None. Pass targets, or "
                f"a tf.data.Dataset of (x, y) batches as `{x_name}`."
            )
        y_tensor = to_tensor(y_name, y, float_dtype, keep_int=True)
        if y_tensor.shape[0] != x_tensor.shape[0]:
            raise ValueError(
                f"`{x_name}` and `{y_name}` must have the same number of examples. Received: "
                f"{x_name}.shape={tuple(x_tensor.shape)}, {y_name}.shape={tuple(y_tensor.shape)}"
            )
    n = int(x_tensor.shape[0])
    return ArrayData(x_tensor, y_tensor, n if batch_size is None else min(batch_size, n))
