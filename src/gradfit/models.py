"""Models: a ``tf.Module`` with a ``__call__`` and, optionally, a lazy ``build``.

A gradfit model is any subclass of :class:`Model` that implements
``__call__(x)``. Variables are tracked by ``tf.Module``, so
``model.trainable_variables`` finds them wherever they live in the object.
A model may create its variables in ``build(input_shape)``; the Trainer
calls :meth:`Model.maybe_build` eagerly, once, before anything is traced.

A model's ``dtype`` is a float dtype or a Keras mixed-precision policy name,
``"mixed_float16"`` or ``"mixed_bfloat16"``: variables in float32, computation
in half precision (:attr:`Model.compute_dtype`).
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import keras
import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit._autograph import traced

Initializer: TypeAlias = Any
"""A number, an array, a Keras initializer (name, config or object) or
``callable(shape, dtype) -> tensor``."""

_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_MIXED_POLICIES = {"mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}


def _dtype_policy(name: str, dtype: Any) -> tuple[str, tf.DType, tf.DType]:
    """Returns ``(policy name, variable dtype, compute dtype)`` for a dtype or policy.

    ``dtype`` is a float dtype (a ``tf.DType``, NumPy dtype or name), a mixed
    policy name (``"mixed_float16"``, ``"mixed_bfloat16"``) or a
    ``keras.DTypePolicy`` with one of those names.
    """
    value = dtype.name if isinstance(dtype, keras.DTypePolicy) else dtype
    if isinstance(value, str) and value in _MIXED_POLICIES:
        return value, tf.float32, _MIXED_POLICIES[value]
    try:
        resolved = tf.as_dtype(value)
    except TypeError:
        resolved = None
    if resolved not in _FLOAT_DTYPES:
        raise ValueError(
            f"`{name}` must be a floating-point dtype (float16, bfloat16, float32, float64) "
            f"or a mixed-precision policy ('mixed_float16', 'mixed_bfloat16'). "
            f"{v.received(name, dtype)}"
        )
    return resolved.name, resolved, resolved


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _as_float_tensor(x: Any, dtype: tf.DType) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    return x if x.dtype == dtype else tf.cast(x, dtype)


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _output(model: Model, out: tf.Tensor) -> tf.Tensor:
    """``out`` in float32 under a mixed policy (a stable loss), else as computed."""
    return _as_float_tensor(out, tf.float32) if model.dtype != model.compute_dtype else out


class Model(tf.Module, abc.ABC):
    """Base class of every gradfit model.

    Subclasses implement ``__call__(x)``; those that need to know the shape
    of their input before creating variables implement ``build(input_shape)``
    too. ``input_shape`` includes the leading examples axis.

    ``dtype`` is a float dtype, or a mixed-precision policy:
    ``"mixed_float16"`` or ``"mixed_bfloat16"`` (a name, or a
    ``keras.DTypePolicy`` of that name). Under a mixed policy :attr:`dtype`
    (variables and inputs) is float32 and :attr:`compute_dtype` is the half
    type; a model that honours it casts its input and variables to
    ``compute_dtype`` inside ``__call__``, as :class:`LinearModel` and
    :class:`MLP` do.

    Example::

        class Quadratic(gf.Model):
            def __init__(self):
                super().__init__()
                self.a = tf.Variable(0.0)

            def __call__(self, x):
                return self.a * x**2
    """

    # Class-level defaults keep a subclass that forgot `super().__init__()` usable.
    _dtype: tf.DType = tf.float32
    _compute_dtype: tf.DType = tf.float32
    _policy: str = "float32"
    _built: bool = False
    _input_shape: tuple[int | None, ...] | None = None

    def __init__(self, name: str | None = None, *, dtype: Any = tf.float32) -> None:
        super().__init__(name=name)
        self._policy, self._dtype, self._compute_dtype = _dtype_policy("dtype", dtype)
        self._built = False
        self._input_shape: tuple[int | None, ...] | None = None

    @property
    def dtype(self) -> tf.DType:
        """The floating-point dtype of the model's inputs and variables.

        float32 under a mixed policy; the Trainer casts input data to it.
        """
        return self._dtype

    @property
    def compute_dtype(self) -> tf.DType:
        """The dtype the model computes in: the half type of a mixed policy, else :attr:`dtype`."""
        return self._compute_dtype if self._policy in _MIXED_POLICIES else self._dtype

    @property
    def policy(self) -> str:
        """The dtype policy's name: ``"mixed_float16"``, ``"mixed_bfloat16"`` or a dtype's name."""
        return self._policy

    @property
    def built(self) -> bool:
        """Whether :meth:`build` has run (models without a ``build`` are always built)."""
        return self._built or type(self).build is Model.build

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The per-example input shape the model was built for, or ``None``."""
        return self._input_shape

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the model's variables for inputs of ``input_shape``.

        The default does nothing: models that create their variables in
        ``__init__`` need no ``build``.

        Args:
            input_shape: Shape of a batch of inputs, examples axis first.
        """

    @tf.autograph.experimental.do_not_convert  # plain Python, also when called in a trace
    def maybe_build(self, input_shape: Sequence[int | None] | tf.TensorShape) -> None:
        """Builds the model once, eagerly, or checks a later input against it.

        Args:
            input_shape: Shape of a batch of inputs, examples axis first.

        Raises:
            ValueError: If the model was built for a different per-example shape.
        """
        shape = tf.TensorShape(input_shape)
        features = tuple(shape.as_list()[1:]) if shape.rank else ()
        if self._input_shape is not None:
            if not _compatible(self._input_shape, features):
                raise ValueError(
                    f"`x` has per-example shape {features}, but the model was built for "
                    f"inputs of per-example shape {self._input_shape}. "
                    f"Received: x.shape={tuple(shape.as_list())}"
                )
            return
        if not self.built:
            with tf.init_scope():
                self.build(shape)
            self._built = True
        self._input_shape = features

    @abc.abstractmethod
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Returns the model's predictions for the batch ``x``."""


def _compatible(built: tuple[int | None, ...], got: tuple[int | None, ...]) -> bool:
    if len(built) != len(got):
        return False
    return all(a is None or b is None or a == b for a, b in zip(built, got, strict=True))


def _resolve_initializer(name: str, init: Initializer, seed: int | None) -> Initializer:
    """Validates an initializer argument eagerly and returns a usable form."""
    if isinstance(init, bool):
        raise TypeError(
            f"`{name}` must be a number, an array or an initializer. {v.received(name, init)}"
        )
    if isinstance(init, numbers.Real):
        if not math.isfinite(float(init)):
            raise ValueError(f"`{name}` must be finite. {v.received(name, init)}")
        return float(init)
    if isinstance(init, np.ndarray | tf.Tensor | list | tuple):
        array = np.asarray(init)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"`{name}` must be numeric. {v.received(name, init)}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"`{name}` must be finite. {v.received(name, init)}")
        return array.astype(np.float64)
    if isinstance(init, str | dict | keras.initializers.Initializer):
        try:
            resolved = keras.initializers.get(init)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"`{name}` is not a known Keras initializer. {v.received(name, init)}"
            ) from err
        if seed is not None and "seed" in resolved.get_config():
            resolved = type(resolved).from_config({**resolved.get_config(), "seed": seed})
        return resolved
    if callable(init):
        return init
    raise TypeError(
        f"`{name}` must be a number, an array, a Keras initializer or "
        f"`callable(shape, dtype)`. {v.received(name, init)}"
    )


def _initial_value(name: str, init: Initializer, shape: Sequence[int], dtype: tf.DType) -> Any:
    shape = list(shape)
    if isinstance(init, float):
        return tf.fill(shape, tf.constant(init, dtype))
    if isinstance(init, np.ndarray):
        if init.size != math.prod(shape):
            raise ValueError(
                f"`{name}` has shape {init.shape}, but the variable needs shape {tuple(shape)}. "
                f"{v.received(name, init)}"
            )
        return tf.constant(init.reshape(shape), dtype)
    value = init(shape, dtype=dtype)
    return tf.cast(tf.convert_to_tensor(value), dtype)


class LinearModel(Model):
    """An affine map ``f(x) = x W + b``, the model of the TF2 tutorial.

    Inputs of shape ``[N]`` (one feature per example) with ``units=1`` give
    predictions of shape ``[N]`` and scalar ``W`` and ``b``, exactly as in the
    tutorial; inputs of shape ``[N, d]`` give ``[N, units]`` with ``W`` of
    shape ``[d, units]`` and ``b`` of shape ``[units]``.

    Variables are created lazily, on the first call or when the Trainer
    builds the model, and are available as ``model.W`` and ``model.b``.

    Args:
        units: Number of outputs per example.
        weight_init: Initial ``W``: a number, an array of ``W``'s shape, a Keras
            initializer (name, config or object) or ``callable(shape, dtype)``.
            Defaults to ``"glorot_uniform"``.
        bias_init: Initial ``b``, in the same forms. Defaults to ``0.0``.
        seed: Seed for random initializers, for reproducible starts.
        dtype: Floating-point dtype of the variables and inputs, or a mixed
            policy (``"mixed_float16"``, ``"mixed_bfloat16"``): float32
            variables, ``x W + b`` computed in the half type and returned in
            float32.
        name: Name of the module.

    Example::

        model = gf.LinearModel(weight_init=5.0, bias_init=0.0)  # the tutorial's start
        model(tf.constant([3.0]))  # -> [15.0]
    """

    def __init__(
        self,
        units: int = 1,
        *,
        weight_init: Initializer = "glorot_uniform",
        bias_init: Initializer = 0.0,
        seed: int | None = None,
        dtype: Any = tf.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        self.units = v.positive_int("units", units)
        seed = v.optional_seed("seed", seed)
        self._weight_init = _resolve_initializer("weight_init", weight_init, seed)
        self._bias_init = _resolve_initializer(
            "bias_init", bias_init, None if seed is None else seed + 1
        )
        self._scalar_features = False

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``W`` and ``b`` for inputs of ``input_shape``."""
        shape = tf.TensorShape(input_shape)
        if shape.rank is None:
            raise ValueError(f"`x` must have a known rank. Received: x.shape={shape}")
        self._scalar_features = shape.rank <= 1
        if self._scalar_features:
            w_shape: list[int] = [] if self.units == 1 else [self.units]
            b_shape: list[int] = [] if self.units == 1 else [self.units]
        else:
            features = shape[-1]
            if features is None:
                raise ValueError(f"`x` must have a known last dimension. Received: x.shape={shape}")
            w_shape, b_shape = [features, self.units], [self.units]
        self.W = tf.Variable(
            _initial_value("weight_init", self._weight_init, w_shape, self.dtype), name="W"
        )
        self.b = tf.Variable(
            _initial_value("bias_init", self._bias_init, b_shape, self.dtype), name="b"
        )

    def __call__(self, x: Any) -> tf.Tensor:
        """Returns ``x W + b``; see the class docstring for shapes.

        Computed in :attr:`compute_dtype`; under a mixed policy the result is
        cast to float32.
        """
        return _output(self, self._forward(x))

    def _forward(self, x: Any) -> tf.Tensor:
        """``x W + b`` in :attr:`compute_dtype` (casting a variable keeps its gradient)."""
        x = _as_float_tensor(x, self.compute_dtype)
        self.maybe_build(x.shape if x.shape.rank else tf.TensorShape([]))
        w = _as_float_tensor(self.W, self.compute_dtype)
        b = _as_float_tensor(self.b, self.compute_dtype)
        if self._scalar_features:
            if self.units == 1:
                return x * w + b
            return x[..., None] * w + b
        return tf.matmul(x, w) + b


class MLP(Model):
    """A multilayer perceptron: dense hidden layers with an activation, then a linear output.

    Variables live in ``model.layers`` (``"layers/0/W"``, ``"layers/0/b"``, ...).
    Inputs of shape ``[N]`` are treated as one feature per example; with
    ``units=1`` the predictions then have shape ``[N]``, like
    :class:`LinearModel`.

    Args:
        hidden_units: Width of each hidden layer, in order.
        activation: A Keras activation name (``"relu"``, ``"tanh"``, ...) or a
            callable applied after every hidden layer.
        units: Number of outputs per example (no activation on the output).
        seed: Seed for the Glorot-uniform weight initialisation.
        dtype: Floating-point dtype of the variables and inputs, or a mixed
            policy (``"mixed_float16"``, ``"mixed_bfloat16"``): float32
            variables, every layer and activation computed in the half type,
            and the output returned in float32.
        name: Name of the module.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (64,),
        *,
        activation: str | Callable[[tf.Tensor], tf.Tensor] = "relu",
        units: int = 1,
        seed: int | None = None,
        dtype: Any = tf.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        if isinstance(hidden_units, str | bytes) or not isinstance(hidden_units, Sequence):
            raise TypeError(
                "`hidden_units` must be a sequence of positive integers. "
                f"{v.received('hidden_units', hidden_units)}"
            )
        widths = [v.positive_int("hidden_units", h) for h in hidden_units]
        self.units = v.positive_int("units", units)
        seed = v.optional_seed("seed", seed)
        self.activation = _resolve_activation(activation)
        self.layers = [
            LinearModel(
                width,
                weight_init="glorot_uniform",
                seed=None if seed is None else seed + 2 * i,
                dtype=dtype,
                name=f"dense_{i}",
            )
            for i, width in enumerate([*widths, self.units])
        ]

    def build(self, input_shape: tf.TensorShape) -> None:
        """Builds every layer for inputs of ``input_shape``."""
        shape = tf.TensorShape(input_shape)
        if shape.rank is None:
            raise ValueError(f"`x` must have a known rank. Received: x.shape={shape}")
        if shape.rank <= 1:  # one feature per example (a lone scalar is one example)
            shape = tf.TensorShape([shape[0] if shape.rank else 1, 1])
        for layer in self.layers:
            layer.maybe_build(shape)
            shape = shape[:-1].concatenate([layer.units])

    def __call__(self, x: Any) -> tf.Tensor:
        """Returns the network's outputs for the batch ``x``.

        Computed in :attr:`compute_dtype`; under a mixed policy the outputs
        are cast to float32.
        """
        x = _as_float_tensor(x, self.compute_dtype)
        self.maybe_build(x.shape if x.shape.rank else tf.TensorShape([]))
        rank = x.shape.rank
        h = tf.reshape(x, [-1, 1]) if rank <= 1 else x
        for layer in self.layers[:-1]:
            h = traced(self.activation)(layer._forward(h))
        out = self.layers[-1]._forward(h)
        if rank == 0:
            out = out[0]
        return _output(self, out[..., 0] if rank <= 1 and self.units == 1 else out)


def _resolve_activation(
    activation: str | Callable[[tf.Tensor], tf.Tensor],
) -> Callable[[tf.Tensor], tf.Tensor]:
    if isinstance(activation, str):
        try:
            return keras.activations.get(activation)
        except ValueError as err:
            raise ValueError(
                f"`activation` is not a known activation. {v.received('activation', activation)}"
            ) from err
    if callable(activation):
        return activation
    raise TypeError(
        f"`activation` must be a name or a callable. {v.received('activation', activation)}"
    )


def variables_by_path(module: Any, *, trainable_only: bool = False) -> dict[str, tf.Variable]:
    """Returns a module's variables keyed by their path.

    Paths join attribute names and list indices with ``/``: ``"W"``,
    ``"layers/0/W"``. The order is the one ``tf.Module`` uses. A Keras
    model (a ``keras.Model``, or a :class:`~gradfit.KerasModel` wrapping
    one, as the Trainer does) has its variables keyed by their Keras
    ``path`` instead (``"sequential/dense/kernel"``), in the model's order,
    as the ``tf.Variable`` objects the Trainer updates.

    Args:
        module: Any ``tf.Module`` (a gradfit Model, an UpdateRule, ...) or a
            ``keras.Model``.
        trainable_only: Keep only trainable variables.
    """
    keras_model = module if isinstance(module, keras.Model) else None
    if keras_model is None and isinstance(getattr(module, "keras_model", None), keras.Model):
        keras_model = module.keras_model
    if keras_model is not None:
        return _keras_variables_by_path(keras_model, trainable_only=trainable_only)

    def wanted(obj: Any) -> bool:
        return isinstance(obj, tf.Variable) and (obj.trainable or not trainable_only)

    found: dict[str, tf.Variable] = {}
    for path, variable in module._flatten(predicate=wanted, with_path=True):
        found.setdefault("/".join(str(part) for part in path), variable)
    return found


def _keras_variables_by_path(model: Any, *, trainable_only: bool) -> dict[str, tf.Variable]:
    """A Keras model's ``tf.Variable`` objects by Keras path (``"#2"`` added to a repeat)."""
    variables = model.trainable_variables if trainable_only else model.variables
    found: dict[str, tf.Variable] = {}
    for variable in variables:
        path = str(getattr(variable, "path", None) or variable.name)
        key, count = path, 1
        while key in found:
            count += 1
            key = f"{path}#{count}"
        found[key] = variable if isinstance(variable, tf.Variable) else variable.value
    return found
