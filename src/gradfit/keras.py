"""KerasModel: a Keras 3 model (Sequential, functional or subclassed) as a gradfit Model.

``gf.Trainer(keras_model, loss, rule)`` wraps it for you. The wrapper hands
the Trainer what a gradfit model has and a Keras model keeps elsewhere:

- its weights as ``tf.Variable`` objects (``trainable_variables``; Keras 3
  variables wrap them, and ``tf.Module`` does not find them itself);
- ``training=True`` in training steps and ``False`` in evaluation and
  prediction (Dropout, BatchNormalization);
- ``losses``: the regularization penalties and ``add_loss`` terms of the
  latest call, which the supervised step adds to the loss;
- its non-trainable variables (BatchNormalization's moving statistics),
  which are state like the rest: rolled back after a non-finite step,
  saved by checkpoints and backups;
- its compute dtype: a model of ``"mixed_float16"`` layers trains with
  dynamic loss scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from gradfit import _validation as v
from gradfit.models import Model


def _half(dtype: Any) -> tf.DType | None:
    resolved = tf.as_dtype(dtype)
    return resolved if resolved in (tf.float16, tf.bfloat16) else None


class KerasModel(Model):
    """A Keras 3 model as a gradfit :class:`~gradfit.Model`.

    Args:
        model: A ``keras.Model`` (``keras.Sequential``, a functional model or
            a subclass), built or not: the Trainer builds it by calling it
            once, eagerly, on an all-zero batch shaped like the data.
        name: Name of the module.

    Example::

        net = keras.Sequential([keras.layers.Dense(64, activation="relu"),
                                keras.layers.Dense(10)])
        trainer = gf.Trainer(gf.KerasModel(net), keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), gf.Adam(1e-3), metrics=[gf.metrics.SparseCategoricalAccuracy()])
    """

    def __init__(self, model: Any, *, name: str | None = None) -> None:
        if not isinstance(model, keras.Model):
            raise TypeError(
                "`model` must be a keras.Model (Sequential, functional or subclassed). "
                f"{v.received('model', model)}"
            )
        dtype = tf.as_dtype(model.dtype_policy.variable_dtype)
        super().__init__(name=name or f"keras_{model.name}", dtype=dtype)
        self.keras_model = model
        self._built_shapes: Any = None  # per-example input shapes, nested like the inputs

    # -- what the Trainer asks of a model ----------------------------------

    @property
    def built(self) -> bool:
        """Whether the Keras model has its weights."""
        return bool(self.keras_model.built) and bool(self.keras_model.weights)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The per-example input shape the wrapper built the model for (one input), or ``None``.

        A Keras model checks its inputs itself; this is what checkpoints
        record so that a restore can build a fresh model first.
        """
        shapes = self._built_shapes
        return shapes if isinstance(shapes, tuple) else None

    @property
    def input_signature(self) -> Any:
        """The spec of a batch of inputs (nested like them) the model was built for, or ``None``."""
        if self._built_shapes is None:
            return None
        return _map_shapes(
            lambda shape: tf.TensorSpec([None, *shape], self.dtype), self._built_shapes
        )

    @property
    def compute_dtype(self) -> tf.DType:
        """float16 or bfloat16 when a layer computes in it (a mixed policy), else ``dtype``."""
        for layer in _layers(self.keras_model):
            half = _half(layer.dtype_policy.compute_dtype)
            if half is not None:
                return half
        return self.dtype

    @tf.autograph.experimental.do_not_convert
    def maybe_build(self, input_shape: Any) -> None:
        """Builds the Keras model once, by calling it eagerly on zeros of ``input_shape``.

        Args:
            input_shape: The shape of a batch of inputs (nested like the
                inputs for a model of several inputs).
        """
        if self._built_shapes is None:
            self._built_shapes = _map_shapes(
                lambda shape: tuple(tf.TensorShape(shape).as_list()[1:]), input_shape
            )
        if self.built:
            return

        def zeros(shape: Any) -> tf.Tensor:
            dims = [1 if d is None else d for d in tf.TensorShape(shape).as_list()]
            return tf.zeros(dims, self.dtype)

        with tf.init_scope():
            self.keras_model(_map_shapes(zeros, input_shape), training=False)

    def __call__(self, x: Any, training: bool = False) -> Any:
        """The Keras model's outputs for ``x``."""
        return self.keras_model(x, training=training)

    @property
    def losses(self) -> list[tf.Tensor]:
        """The model's regularization and ``add_loss`` terms from its latest call."""
        return list(self.keras_model.losses)

    # -- variables: the tf.Variables under Keras's ---------------------------

    @property
    def trainable_variables(self) -> Sequence[tf.Variable]:  # type: ignore[override]
        """The Keras model's trainable weights, as ``tf.Variable`` objects."""
        return tuple(var.value for var in self.keras_model.trainable_variables)

    @property
    def non_trainable_variables(self) -> Sequence[tf.Variable]:
        """The Keras model's other weights (BatchNormalization's statistics)."""
        return tuple(var.value for var in self.keras_model.non_trainable_variables)

    @property
    def variables(self) -> Sequence[tf.Variable]:  # type: ignore[override]
        """All the Keras model's weights, as ``tf.Variable`` objects."""
        return tuple(var.value for var in self.keras_model.variables)


def _layers(layer: Any) -> list[Any]:
    """``layer`` and every layer inside it, depth first."""
    found = [layer]
    for inner in getattr(layer, "layers", ()):
        found.extend(_layers(inner))
    return found


def _map_shapes(fn: Any, shapes: Any) -> Any:
    """``fn`` applied to every shape in a (possibly nested) structure of shapes."""
    if isinstance(shapes, dict):
        return {key: _map_shapes(fn, item) for key, item in shapes.items()}
    if isinstance(shapes, list | tuple) and shapes and not isinstance(shapes[0], int | None):
        items = [_map_shapes(fn, item) for item in shapes]
        return tuple(items) if isinstance(shapes, tuple) else items
    return fn(shapes)


def as_model(model: Any) -> Any:
    """``model`` as a gradfit model: a ``keras.Model`` wrapped in :class:`KerasModel`."""
    return KerasModel(model) if isinstance(model, keras.Model) else model
