"""Hypothesis strategies for property-based tests of models, losses and update rules.

Needs ``hypothesis`` (``pip install hypothesis``); the rest of
:mod:`gradfit.testing` does not.

* :func:`finite_arrays`: finite float arrays of given or generated shapes,
  with controlled magnitude (and, optionally, kept away from zero).
* :func:`regression_data`, :func:`classification_data`: ``(x, y)`` data sets.
* :func:`models`: built-in models, built, with random initial values.
* :func:`losses`: built-in losses for a task.
* :func:`update_rules`, :func:`update_rule_factories`: built-in update rules
  with random valid hyperparameters.
* :func:`gradient_check_cases`: a model, a loss and one batch ``(x, y)`` on
  which the loss is smooth: residuals of ``L1`` and ``Huber`` stay away from
  their kinks, and probabilities given to cross-entropies away from their
  clipping, so a gradient check cannot fail falsely.

Example::

    from hypothesis import given
    from gradfit.testing import check_model_gradients
    from gradfit.testing import strategies as gfst

    @given(gfst.gradient_check_cases())
    def test_gradients(case):
        check_model_gradients(case.model, case.loss, case.x, case.y)
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradfit import losses as losses_lib
from gradfit import models as models_lib
from gradfit import update_rules as rules_lib

__all__ = [
    "GradientCheckCase",
    "RuleFactory",
    "available_rules",
    "classification_data",
    "finite_arrays",
    "gradient_check_cases",
    "losses",
    "models",
    "regression_data",
    "update_rule_factories",
    "update_rules",
]

Shape = tuple[int, ...]
_KINK_MARGIN = 0.1  # how far residuals stay from the kinks of L1 and Huber


def _ints(value: int | st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


# -- arrays and data -----------------------------------------------------


def finite_arrays(
    shape: Shape | st.SearchStrategy[Shape] | None = None,
    *,
    dtype: Any = np.float32,
    max_magnitude: float = 10.0,
    min_magnitude: float = 0.0,
    min_dims: int = 0,
    max_dims: int = 2,
    min_side: int = 1,
    max_side: int = 4,
) -> st.SearchStrategy[np.ndarray]:
    """Finite float arrays whose entries have ``min_magnitude <= |x| <= max_magnitude``.

    Args:
        shape: A shape, a strategy of shapes, or ``None`` to draw one with
            ``min_dims``..``max_dims`` axes of ``min_side``..``max_side`` entries.
        dtype: A NumPy float dtype.
        max_magnitude: Largest absolute value of an entry.
        min_magnitude: Smallest absolute value of an entry (``> 0`` keeps
            entries away from zero, e.g. from the kink of ``abs``).
        min_dims: Fewest axes of a drawn shape.
        max_dims: Most axes of a drawn shape.
        min_side: Fewest entries along an axis of a drawn shape.
        max_side: Most entries along an axis of a drawn shape.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"`dtype` must be a float dtype. Received: dtype={dtype}")
    if not 0.0 <= min_magnitude <= max_magnitude:
        raise ValueError(
            "`min_magnitude` and `max_magnitude` must satisfy 0 <= min <= max. Received: "
            f"min_magnitude={min_magnitude}, max_magnitude={max_magnitude}"
        )
    if shape is None:
        shapes: st.SearchStrategy[Shape] = hnp.array_shapes(
            min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
        )
    elif isinstance(shape, st.SearchStrategy):
        shapes = shape
    else:
        shapes = st.just(tuple(shape))
    width = dtype.itemsize * 8
    low, high = _inside(min_magnitude, dtype, up=True), _inside(max_magnitude, dtype, up=False)
    if min_magnitude > 0:
        magnitudes = st.floats(low, high, width=width, allow_subnormal=False)
        elements = st.tuples(magnitudes, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
    else:
        elements = st.floats(-high, high, width=width, allow_nan=False, allow_subnormal=False)
    return hnp.arrays(dtype, shapes, elements=elements)


def _inside(value: float, dtype: np.dtype, *, up: bool) -> float:
    """The nearest number of ``dtype`` to ``value`` on the inner side of a bound."""
    rounded = dtype.type(value)
    if (up and rounded < value) or (not up and rounded > value):
        rounded = np.nextafter(rounded, dtype.type(np.inf if up else -np.inf))
    return float(rounded)


def _features_shape(n: int, features: int) -> Shape:
    return (n,) if features == 0 else (n, features)


def regression_data(
    *,
    min_examples: int = 1,
    max_examples: int = 8,
    features: int | st.SearchStrategy[int] | None = None,
    outputs: int = 1,
    dtype: Any = np.float32,
    max_magnitude: float = 4.0,
) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """Data sets ``(x, y)`` with float targets.

    Args:
        min_examples: Fewest examples.
        max_examples: Most examples.
        features: Features per example (0 gives ``x`` of shape ``[N]``, as in
            the tutorial); ``None`` draws 0 to 3.
        outputs: Targets per example (1 gives ``y`` of shape ``[N]``).
        dtype: NumPy float dtype of ``x`` and ``y``.
        max_magnitude: Largest absolute value of an entry.
    """
    return _regression_data(
        min_examples=min_examples,
        max_examples=max_examples,
        features=features,
        outputs=outputs,
        dtype=dtype,
        max_magnitude=max_magnitude,
    )


@st.composite
def _regression_data(
    draw: st.DrawFn,
    *,
    min_examples: int = 1,
    max_examples: int = 8,
    features: int | st.SearchStrategy[int] | None = None,
    outputs: int = 1,
    dtype: Any = np.float32,
    max_magnitude: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(min_examples, max_examples))
    d = draw(_ints(features) if features is not None else st.integers(0, 3))
    x = draw(finite_arrays(_features_shape(n, d), dtype=dtype, max_magnitude=max_magnitude))
    y_shape = (n,) if outputs == 1 else (n, outputs)
    y = draw(finite_arrays(y_shape, dtype=dtype, max_magnitude=max_magnitude))
    return x, y


def classification_data(
    *,
    classes: int | st.SearchStrategy[int] | None = None,
    min_examples: int = 1,
    max_examples: int = 8,
    features: int | st.SearchStrategy[int] | None = None,
    dtype: Any = np.float32,
    max_magnitude: float = 4.0,
) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """Data sets ``(x, labels)``: float features, integer class labels of shape ``[N]``.

    Args:
        classes: Number of classes (2 for binary labels 0/1); ``None`` draws 2 to 4.
        min_examples: Fewest examples.
        max_examples: Most examples.
        features: Features per example (0 gives ``x`` of shape ``[N]``);
            ``None`` draws 0 to 3.
        dtype: NumPy float dtype of ``x``.
        max_magnitude: Largest absolute value of a feature.
    """
    return _classification_data(
        classes=classes,
        min_examples=min_examples,
        max_examples=max_examples,
        features=features,
        dtype=dtype,
        max_magnitude=max_magnitude,
    )


@st.composite
def _classification_data(
    draw: st.DrawFn,
    *,
    classes: int | st.SearchStrategy[int] | None = None,
    min_examples: int = 1,
    max_examples: int = 8,
    features: int | st.SearchStrategy[int] | None = None,
    dtype: Any = np.float32,
    max_magnitude: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    k = draw(_ints(classes) if classes is not None else st.integers(2, 4))
    n = draw(st.integers(min_examples, max_examples))
    d = draw(_ints(features) if features is not None else st.integers(0, 3))
    x = draw(finite_arrays(_features_shape(n, d), dtype=dtype, max_magnitude=max_magnitude))
    labels = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, k - 1)))
    return x, labels


# -- models and losses -----------------------------------------------------

_ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus")


def models(
    features: int | st.SearchStrategy[int] = 2,
    *,
    units: int | st.SearchStrategy[int] = 1,
    kinds: Sequence[str] = ("linear", "mlp"),
    activations: Sequence[str] = _ACTIVATIONS,
    max_hidden_layers: int = 2,
    max_width: int = 4,
    max_magnitude: float = 1.5,
    dtype: Any = tf.float32,
) -> st.SearchStrategy[models_lib.Model]:
    """Built-in models, built for ``features`` inputs, with random initial values.

    Every variable (biases too) is drawn uniformly from ``[-s, s]`` with
    ``s`` itself drawn from ``[0.1, max_magnitude]``, from a seeded NumPy
    generator: values are continuous, so no ReLU sits exactly at its kink.

    Args:
        features: Features per example; 0 builds for inputs of shape ``[N]``.
        units: Outputs per example.
        kinds: Which models: ``"linear"`` (:class:`gradfit.LinearModel`) and
            ``"mlp"`` (:class:`gradfit.MLP`).
        activations: Activations an MLP may use.
        max_hidden_layers: Most hidden layers of an MLP.
        max_width: Widest hidden layer.
        max_magnitude: Largest scale of the initial values.
        dtype: The model's dtype.
    """
    return _models(
        features,
        units=units,
        kinds=kinds,
        activations=activations,
        max_hidden_layers=max_hidden_layers,
        max_width=max_width,
        max_magnitude=max_magnitude,
        dtype=dtype,
    )


@st.composite
def _models(
    draw: st.DrawFn,
    features: int | st.SearchStrategy[int] = 2,
    *,
    units: int | st.SearchStrategy[int] = 1,
    kinds: Sequence[str] = ("linear", "mlp"),
    activations: Sequence[str] = _ACTIVATIONS,
    max_hidden_layers: int = 2,
    max_width: int = 4,
    max_magnitude: float = 1.5,
    dtype: Any = tf.float32,
) -> models_lib.Model:
    d = draw(_ints(features))
    k = draw(_ints(units))
    kind = draw(st.sampled_from(list(kinds)))
    model: models_lib.Model
    if kind == "linear":
        model = models_lib.LinearModel(k, weight_init=0.0, dtype=dtype)
    elif kind == "mlp":
        hidden = draw(
            st.lists(st.integers(1, max_width), min_size=1, max_size=max(1, max_hidden_layers))
        )
        activation = draw(st.sampled_from(list(activations)))
        # Keras initializers draw a default seed from `random`, which strategies must not
        # disturb; the values are replaced below anyway.
        state = random.getstate()
        try:
            model = models_lib.MLP(hidden, activation=activation, units=k, seed=0, dtype=dtype)
        finally:
            random.setstate(state)
    else:
        raise ValueError(f"`kinds` must hold 'linear' or 'mlp'. Received: kinds={kinds}")
    model.maybe_build((None,) if d == 0 else (None, d))
    scale = draw(st.floats(0.1, max_magnitude))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for var in model.trainable_variables:
        var.assign(rng.uniform(-scale, scale, var.shape).astype(var.dtype.as_numpy_dtype))
    return model


def losses(task: str | None = None) -> st.SearchStrategy[losses_lib.Loss]:
    """Built-in losses for a task.

    Args:
        task: ``"regression"`` (L2, L1, Huber with a random ``delta``),
            ``"binary"`` (binary cross-entropy, on logits or probabilities),
            ``"categorical"`` (sparse categorical cross-entropy, likewise), or
            ``None`` for any of them.
    """
    regression = st.one_of(
        st.just(losses_lib.L2()),
        st.just(losses_lib.L1()),
        st.floats(0.3, 3.0).map(losses_lib.Huber),
    )
    binary = st.booleans().map(lambda logits: losses_lib.BinaryCrossentropy(from_logits=logits))
    categorical = st.booleans().map(
        lambda logits: losses_lib.SparseCategoricalCrossentropy(from_logits=logits)
    )
    by_task = {"regression": regression, "binary": binary, "categorical": categorical}
    if task is None:
        return st.one_of(regression, binary, categorical)
    if task not in by_task:
        raise ValueError(
            f"`task` must be one of {sorted(by_task)} or None. Received: task={task!r}"
        )
    return by_task[task]


def _task(loss: Any) -> str:
    if isinstance(loss, losses_lib.BinaryCrossentropy):
        return "binary"
    if isinstance(loss, losses_lib.SparseCategoricalCrossentropy):
        return "categorical"
    return "regression"


class GradientCheckCase(NamedTuple):
    """A model, a loss and one batch on which the loss is smooth."""

    model: models_lib.Model
    loss: Any
    x: np.ndarray
    y: np.ndarray


def _output_layer(model: models_lib.Model) -> models_lib.LinearModel:
    return model.layers[-1] if isinstance(model, models_lib.MLP) else model  # type: ignore[return-value]


def _squash_outputs(model: models_lib.Model, x: np.ndarray, low: float, high: float) -> None:
    """Rescales the output layer so that every prediction on ``x`` lies in ``[low, high]``."""
    pred = np.asarray(model(x), np.float64)
    flat = pred.reshape(pred.shape[0], -1) if pred.ndim else pred.reshape(1, 1)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    a = np.minimum((high - low) / np.maximum(hi - lo, 1e-12), 1.0)
    c = (low + high) / 2 - a * (lo + hi) / 2
    layer = _output_layer(model)
    if layer.b.shape.rank == 0:
        a, c = a[0], c[0]
    dtype = layer.W.dtype.as_numpy_dtype
    layer.W.assign((layer.W.numpy() * a).astype(dtype))
    layer.b.assign((layer.b.numpy() * a + c).astype(dtype))


def _signed(magnitudes: np.ndarray, signs: np.ndarray) -> np.ndarray:
    return np.where(signs, -magnitudes, magnitudes)


def gradient_check_cases(
    loss: losses_lib.Loss | st.SearchStrategy[Any] | None = None,
    *,
    kinds: Sequence[str] = ("linear", "mlp"),
    activations: Sequence[str] = _ACTIVATIONS,
    max_examples: int = 6,
    max_features: int = 3,
    max_magnitude: float = 4.0,
    dtype: Any = tf.float32,
) -> st.SearchStrategy[GradientCheckCase]:
    """A model, a loss and a batch ``(x, y)`` away from every kink of the loss.

    * ``L1`` and ``Huber``: targets are ``y = model(x) + r`` with ``|r|`` at
      least 0.1 from 0 (and from Huber's ``delta``).
    * Cross-entropies on probabilities: the model's output layer is rescaled
      so that every prediction lies in ``[0.1, 0.9]``, away from the clipping
      at ``1e-7`` and ``1 - 1e-7``.
    * Binary targets are in ``[0, 1]``; class labels in ``[0, classes)``.

    Args:
        loss: A loss, a strategy of losses, or ``None`` for any built-in one.
        kinds: Model kinds; see :func:`models`.
        activations: Activations an MLP may use.
        max_examples: Most examples in the batch.
        max_features: Most features per example (0 means ``x`` of shape ``[N]``).
        max_magnitude: Largest absolute value of a feature or regression target.
        dtype: The model's dtype.
    """
    return _gradient_check_cases(
        loss,
        kinds=kinds,
        activations=activations,
        max_examples=max_examples,
        max_features=max_features,
        max_magnitude=max_magnitude,
        dtype=dtype,
    )


@st.composite
def _gradient_check_cases(
    draw: st.DrawFn,
    loss: losses_lib.Loss | st.SearchStrategy[Any] | None = None,
    *,
    kinds: Sequence[str] = ("linear", "mlp"),
    activations: Sequence[str] = _ACTIVATIONS,
    max_examples: int = 6,
    max_features: int = 3,
    max_magnitude: float = 4.0,
    dtype: Any = tf.float32,
) -> GradientCheckCase:
    if loss is None:
        loss = losses()
    chosen = draw(loss) if isinstance(loss, st.SearchStrategy) else loss
    task = _task(chosen)
    units = {
        "regression": st.integers(1, 2),
        "binary": st.just(1),
        "categorical": st.integers(2, 3),
    }
    k = draw(units[task])
    n = draw(st.integers(1, max_examples))
    d = draw(st.integers(0, max_features))
    np_dtype = tf.as_dtype(dtype).as_numpy_dtype
    x = draw(finite_arrays(_features_shape(n, d), dtype=np_dtype, max_magnitude=max_magnitude))
    model = draw(models(d, units=k, kinds=kinds, activations=activations, dtype=dtype))
    from_logits = getattr(chosen, "from_logits", True)
    if not from_logits:
        _squash_outputs(model, x, 0.1, 0.9)
    pred = np.asarray(model(x))
    y: np.ndarray
    if task == "binary":
        y = draw(hnp.arrays(np_dtype, pred.shape, elements=st.floats(0.0, 1.0, width=32)))
    elif task == "categorical":
        y = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, k - 1)))
    elif isinstance(chosen, losses_lib.L1 | losses_lib.Huber):
        delta = getattr(chosen, "delta", None)
        bands = [(_KINK_MARGIN, 2.0)]
        if delta is not None:
            bands = [(_KINK_MARGIN, delta - _KINK_MARGIN), (delta + _KINK_MARGIN, delta + 2.0)]
            bands = [(lo, hi) for lo, hi in bands if hi > lo]
        band = st.sampled_from(bands).flatmap(lambda b: st.floats(b[0], b[1]))
        magnitudes = draw(hnp.arrays(np.float64, pred.shape, elements=band))
        signs = draw(hnp.arrays(np.bool_, pred.shape))
        y = (pred.astype(np.float64) + _signed(magnitudes, signs)).astype(np_dtype)
    else:
        y = draw(finite_arrays(pred.shape, dtype=np_dtype, max_magnitude=max_magnitude))
    return GradientCheckCase(model, chosen, x, y)


# -- update rules ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RuleFactory:
    """Makes fresh update rules with fixed hyperparameters (for twins and contracts).

    Attributes:
        name: What it makes, e.g. ``"Adam"`` or ``"KerasOptimizer(SGD)"``.
        make: A callable returning a new rule.
        hyperparameters: The keyword arguments it uses.
    """

    name: str
    make: Callable[..., Any]
    hyperparameters: dict[str, Any]

    def __call__(self) -> rules_lib.UpdateRule:
        """Returns a new rule."""
        return self.make(**self.hyperparameters)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{self.name}({args})"


def _keras(cls: Any) -> Callable[..., rules_lib.UpdateRule]:
    return lambda **kwargs: rules_lib.KerasOptimizer(cls(**kwargs))


_RATES = st.floats(1e-4, 0.5)
_DECAYS = st.floats(0.0, 0.999)
_EPSILONS = st.floats(1e-8, 1e-3)
_RULES: dict[str, tuple[str, dict[str, st.SearchStrategy[Any]]]] = {
    "SGD": ("SGD", {"momentum": st.one_of(st.just(0.0), _DECAYS), "nesterov": st.booleans()}),
    "Adam": (
        "Adam",
        {"beta_1": _DECAYS, "beta_2": _DECAYS, "epsilon": _EPSILONS, "amsgrad": st.booleans()},
    ),
    "AdamW": (
        "AdamW",
        {"weight_decay": st.floats(0.0, 0.1), "beta_1": _DECAYS, "beta_2": _DECAYS},
    ),
    "RMSProp": (
        "RMSProp",
        {"rho": _DECAYS, "momentum": _DECAYS, "epsilon": _EPSILONS, "centered": st.booleans()},
    ),
    "Adagrad": (
        "Adagrad",
        {"initial_accumulator_value": st.floats(0.01, 1.0), "epsilon": _EPSILONS},
    ),
    "Lion": ("Lion", {"beta_1": _DECAYS, "beta_2": _DECAYS, "weight_decay": st.floats(0.0, 0.1)}),
}
_KERAS_RULES: dict[str, tuple[Any, dict[str, st.SearchStrategy[Any]]]] = {
    "KerasOptimizer(SGD)": (
        keras.optimizers.SGD,
        {"momentum": st.one_of(st.just(0.0), _DECAYS), "nesterov": st.booleans()},
    ),
    "KerasOptimizer(Adam)": (keras.optimizers.Adam, {"beta_1": _DECAYS, "beta_2": _DECAYS}),
    "KerasOptimizer(RMSprop)": (keras.optimizers.RMSprop, {"rho": _DECAYS}),
}


def available_rules() -> list[str]:
    """Names :func:`update_rule_factories` can draw (gradfit's own rules, then Keras ones)."""
    own = [name for name, (attr, _) in _RULES.items() if hasattr(rules_lib, attr)]
    return own + list(_KERAS_RULES)


def update_rule_factories(
    names: Sequence[str] | None = None,
    *,
    learning_rates: st.SearchStrategy[float] = _RATES,
) -> st.SearchStrategy[RuleFactory]:
    """Factories of built-in update rules with random valid hyperparameters.

    A factory makes any number of identical fresh rules: a twin for a
    hand-written reference, or a rule per test of a contract.

    Args:
        names: Which rules (see :func:`available_rules`); ``None`` for all.
        learning_rates: Strategy of learning rates.
    """
    known = available_rules()
    chosen = known if names is None else list(names)
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise ValueError(f"`names` must be drawn from {known}. Received: names={names!r}")
    options = []
    for name in chosen:
        if name in _KERAS_RULES:
            cls, params = _KERAS_RULES[name]
            make = _keras(cls)
        else:
            attr, params = _RULES[name]
            make = getattr(rules_lib, attr)
        fields = {"learning_rate": learning_rates, **params}
        options.append(st.fixed_dictionaries(fields).map(_factory(name, make)))
    return st.one_of(options)


def _factory(name: str, make: Callable[..., Any]) -> Callable[[dict[str, Any]], RuleFactory]:
    return lambda hyperparameters: RuleFactory(name, make, hyperparameters)


def update_rules(
    names: Sequence[str] | None = None,
    *,
    learning_rates: st.SearchStrategy[float] = _RATES,
) -> st.SearchStrategy[rules_lib.UpdateRule]:
    """Built-in update rules with random valid hyperparameters.

    Args:
        names: Which rules (see :func:`available_rules`); ``None`` for all.
        learning_rates: Strategy of learning rates.
    """
    return update_rule_factories(names, learning_rates=learning_rates).map(lambda make: make())
