"""Array-likes to tensors: the checks every in-memory input leaf passes.

Arrays, tensors and Python lists are checked (numeric, rectangular,
non-empty, finite), then converted to tensors of the task's float dtype
(integer and boolean features too; integer targets stay integers, for
class labels). Large NumPy arrays are copied to the device in slices.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v

_NUMERIC_KINDS = "biuf"

CHUNKED_BYTES = 64 * 2**20
"""Arrays at least this large are copied to the device in slices (see ``to_tensor``)."""
CHUNK_BYTES = 16 * 2**20


def describe(value: Any) -> str:
    """A short description of an input for messages: its type, shape and dtype."""
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
            f"Received: {name}={describe(value)}"
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
        f"for {dtype}, first at index {index}. Received: {name}={describe(value)}"
    )
