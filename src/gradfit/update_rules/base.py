"""The UpdateRule interface: ``build`` state once, ``apply`` gradients in place.

A rule is a ``tf.Module``: its learning rate, its ``iterations`` counter and
its slot variables are all trackable, so ``tf.train.Checkpoint`` saves and
restores them with the model. Writing one takes a few lines::

    class SignSGD(gf.UpdateRule):
        def apply(self, gradients, variables):
            lr = self.current_learning_rate()
            for g, var in zip(gradients, variables):
                var.assign_sub(tf.cast(lr, var.dtype) * tf.sign(g))

The learning rate is a number (held in a ``tf.Variable``) or a schedule: any
``callable(step) -> rate``, such as :mod:`gradfit.schedules` or a Keras
``LearningRateSchedule``. :meth:`UpdateRule.current_learning_rate` computes it
in-graph from ``iterations``, so the k-th update (from 0) uses ``schedule(k)``
and nothing retraces as it changes.

gradfit wraps every subclass's ``apply`` so that, before the subclass's own
code runs, the arguments are checked (equal lengths, matching dtypes and
shapes), pairs whose gradient is ``None`` are dropped (all ``None`` is an
error), state is built if it was not, and ``tf.IndexedSlices`` gradients are
made dense unless the class sets ``supports_sparse = True``; under a
``tf.distribute`` strategy, the gradients are all-reduced across replicas
(:mod:`gradfit.distribute.sync`), so the rule sees the gradient of the
global batch. After it runs,
``iterations`` is incremented. A subclass's ``apply`` therefore only ever
sees matched, non-``None`` pairs, and the k-th call (from 0) sees
``iterations == k``.
"""

from __future__ import annotations

import abc
import functools
import math
import types
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeAlias

import tensorflow as tf

from gradfit import _validation as v
from gradfit._autograph import traced
from gradfit.distribute import sync

Gradient: TypeAlias = "tf.Tensor | tf.IndexedSlices | None"
Schedule: TypeAlias = Callable[[tf.Tensor], Any]
"""A learning-rate schedule: ``schedule(step) -> rate`` for an int64 scalar tensor ``step``."""
LearningRate: TypeAlias = "float | Schedule"

_HALF_DTYPES = (tf.float16, tf.bfloat16)


class _VariableIndex:
    """Maps variables to their position in the rule's state (not tracked by tf.Module)."""

    def __init__(self) -> None:
        self.positions: dict[Any, int] = {}
        self.variables: list[tf.Variable] = []

    def add(self, variable: tf.Variable) -> bool:
        key = variable.ref()
        if key in self.positions:
            return False
        self.positions[key] = len(self.variables)
        self.variables.append(variable)
        return True

    def remove(self, variable: tf.Variable) -> None:
        position = self.positions.pop(variable.ref())
        del self.variables[position]
        self.positions = {var.ref(): i for i, var in enumerate(self.variables)}

    def __contains__(self, variable: tf.Variable) -> bool:
        return variable.ref() in self.positions

    def __getitem__(self, variable: tf.Variable) -> int:
        return self.positions[variable.ref()]


def _check_learning_rate(value: Any) -> float:
    number = v.real_number("learning_rate", value)
    if math.isnan(number) or math.isinf(number) or number < 0:
        raise ValueError(
            "`learning_rate` must be a finite, non-negative number. "
            f"{v.received('learning_rate', value)}"
        )
    return number


def _check_schedule(schedule: Any) -> Schedule:
    """Checks that ``schedule(0)`` is a finite, non-negative real scalar (called eagerly)."""
    expected = (
        "`learning_rate` must be a number or a schedule `callable(step) -> rate` returning a "
        "finite, non-negative real scalar"
    )
    try:
        with tf.init_scope():
            rate = tf.convert_to_tensor(schedule(tf.constant(0, tf.int64)))
            value = rate.numpy() if rate.shape.rank == 0 else None
    except Exception as err:
        raise TypeError(
            f"{expected}; calling it at step 0 failed with {type(err).__name__}: {err}. "
            f"{v.received('learning_rate', schedule)}"
        ) from err
    if value is None or not (rate.dtype.is_floating or rate.dtype.is_integer):
        raise TypeError(
            f"{expected}; at step 0 it returned shape {rate.shape} and dtype {rate.dtype.name}. "
            f"{v.received('learning_rate', schedule)}"
        )
    if not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(
            f"{expected}; at step 0 it returned {float(value)}. "
            f"{v.received('learning_rate', schedule)}"
        )
    return schedule


def check_positive(name: str, value: Any) -> float:
    """Checks that hyperparameter ``value`` is a finite real number > 0."""
    number = v.real_number(name, value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"`{name}` must be a finite, positive number. {v.received(name, value)}")
    return number


def weight_decay_step(param: tf.Tensor, lr: tf.Tensor, weight_decay: float) -> tf.Tensor:
    """Returns ``param * weight_decay * lr``: Keras's decoupled decay is ``param -= it``."""
    return param * weight_decay * lr


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def apply_weight_decay(variable: tf.Variable, lr: tf.Tensor, weight_decay: float) -> None:
    """Decays ``variable`` in place by :func:`weight_decay_step` (nothing if the rate is 0).

    Computed in float32 for half-precision variables, then cast back.
    """
    if not weight_decay:
        return
    dtype = tf.float32 if variable.dtype in _HALF_DTYPES else variable.dtype
    step = weight_decay_step(tf.cast(variable, dtype), tf.cast(lr, dtype), weight_decay)
    variable.assign_sub(tf.cast(step, variable.dtype))


def sum_duplicates(gradient: tf.IndexedSlices) -> tf.IndexedSlices:
    """Returns ``gradient`` with the rows of repeated indices summed (unique indices).

    Updates that are not linear in the gradient (squares, norms, clipping) must
    see each row once, as the dense gradient has it. Works under XLA.
    """
    indices, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(indices)[0])
    return tf.IndexedSlices(values, indices, gradient.dense_shape)


class UpdateRule(tf.Module, abc.ABC):
    """Base class of update rules (optimizers).

    Subclasses implement :meth:`apply`; rules with state override
    :meth:`create_state` and create slots there with :meth:`add_slot`.

    Args:
        learning_rate: A finite, non-negative number, or a schedule
            ``callable(step) -> rate`` (:mod:`gradfit.schedules`, a Keras
            ``LearningRateSchedule``, a function of a tensor). A number is held
            in a ``tf.Variable``, so setting ``rule.learning_rate = 0.01`` later
            (from a callback, say) never retraces the compiled step. A schedule
            is evaluated in-graph at ``iterations``: the k-th update uses
            ``schedule(k)``.
        name: Name of the module.
    """

    supports_sparse: ClassVar[bool] = False
    """Whether :meth:`apply` handles ``tf.IndexedSlices`` gradients itself."""

    def __init__(self, learning_rate: LearningRate = 0.01, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._schedule: Schedule | None = None
        self._learning_rate: tf.Variable | None = None
        if callable(learning_rate) and not isinstance(learning_rate, tf.Variable):
            self._schedule = _check_schedule(learning_rate)
        rate = None if self._schedule is not None else _check_learning_rate(learning_rate)
        with tf.init_scope():
            if rate is not None:
                self._learning_rate = tf.Variable(
                    rate, dtype=tf.float32, trainable=False, name="learning_rate"
                )
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._slots: dict[str, tf.Variable] = {}  # "<variable position>/<slot name>" -> slot
        self._index = _VariableIndex()
        self._built = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        apply = cls.__dict__.get("apply")
        if apply is not None and not getattr(apply, "__isabstractmethod__", False):
            cls.apply = _checked_apply(apply)  # type: ignore[method-assign]

    # -- hyperparameters -------------------------------------------------

    @property
    def learning_rate(self) -> Any:
        """The learning-rate variable, or the schedule the rule was given.

        Assign a number to change a constant rate without retracing. A rule
        built with a schedule follows it; its rate cannot be assigned.
        """
        return self._learning_rate if self._schedule is None else self._schedule

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if self._learning_rate is None:
            raise TypeError(
                f"`learning_rate` cannot be set on a rule that follows a schedule "
                f"({self._schedule!r}); create the rule with a number to change its rate "
                f"by assignment. {v.received('learning_rate', value)}"
            )
        if callable(value) and not isinstance(value, tf.Variable):
            raise TypeError(
                "`learning_rate` can only be set to a number; pass a schedule when creating "
                f"the rule. {v.received('learning_rate', value)}"
            )
        self._learning_rate.assign(_check_learning_rate(value))

    def current_learning_rate(self) -> tf.Tensor:
        """The learning rate for the update about to be made (a float32 tensor).

        Computed in-graph: ``schedule(iterations)`` for a schedule, so it never
        retraces and the k-th update (from 0) uses ``schedule(k)``.
        """
        if self._schedule is not None:
            return tf.cast(traced(self._schedule)(self.iterations.read_value()), tf.float32)
        return tf.convert_to_tensor(self._learning_rate)

    def _learning_rate_repr(self) -> str:
        if self._learning_rate is None:
            return repr(self._schedule)
        return str(self._learning_rate.numpy())

    # -- state -----------------------------------------------------------

    @property
    def built(self) -> bool:
        """Whether :meth:`build` has created state for some variables."""
        return self._built

    def build(self, variables: Sequence[tf.Variable]) -> None:
        """Creates the rule's state for ``variables``, eagerly; idempotent.

        Calling it again with the same variables does nothing; variables it
        has not seen get their state added.

        Args:
            variables: The variables the rule will update.
        """
        variables = _check_variables(variables)
        new = list({var.ref(): var for var in variables if var not in self._index}.values())
        if new or not self._built:
            for var in new:
                self._index.add(var)
            try:
                with tf.init_scope():
                    self.create_state(new)
            except Exception:
                for var in new:  # not registered: a later build retries them
                    self._index.remove(var)
                raise
        self._built = True

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Creates slot variables for ``variables`` (called once per variable by build).

        The default creates nothing. Override it in rules with state, using
        :meth:`add_slot`.
        """

    def add_slot(self, variable: tf.Variable, name: str, initial_value: float = 0.0) -> tf.Variable:
        """Creates a slot of ``variable``'s shape, filled with ``initial_value``.

        Slots of half-precision variables are kept in float32.

        Args:
            variable: The variable the slot belongs to (already seen by build).
            name: The slot's name, e.g. ``"momentum"``.
            initial_value: Its initial value.
        """
        dtype = tf.float32 if variable.dtype in _HALF_DTYPES else variable.dtype
        slot_name = variable.name.split(":")[0].replace("/", "_") + "_" + name
        with tf.init_scope():
            slot = tf.Variable(
                tf.fill(variable.shape, tf.constant(initial_value, dtype)),
                trainable=False,
                name=slot_name,
            )
        self._slots[f"{self._index[variable]}/{name}"] = slot
        return slot

    def get_slot(self, variable: tf.Variable, name: str) -> tf.Variable:
        """Returns the slot ``name`` of ``variable``."""
        return self._slots[f"{self._index[variable]}/{name}"]

    # -- the update ------------------------------------------------------

    @abc.abstractmethod
    def apply(self, gradients: Sequence[Gradient], variables: Sequence[tf.Variable]) -> None:
        """Updates ``variables`` in place from ``gradients`` (one per variable).

        Runs inside the compiled training step. See the module docstring for
        the checks gradfit makes before a subclass's ``apply`` runs.
        """


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _check_variables(variables: Any) -> list[tf.Variable]:
    if isinstance(variables, tf.Variable):
        variables = [variables]
    try:
        variables = list(variables)
    except TypeError:
        raise TypeError(
            f"`variables` must be a sequence of tf.Variable. {v.received('variables', variables)}"
        ) from None
    for var in variables:
        if not isinstance(var, tf.Variable):
            raise TypeError(
                "`variables` must contain only tf.Variable objects. "
                f"Received an element of type {type(var).__name__}: {var!r}"
            )
    return variables


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _check_gradient_shape(g: tf.Tensor | tf.IndexedSlices, var: tf.Variable) -> None:
    if isinstance(g, tf.IndexedSlices):
        rows = tf.TensorShape([None]).concatenate(var.shape[1:])
        dense_shape = tf.get_static_value(g.dense_shape)
        ok = var.shape.rank is not None and var.shape.rank >= 1
        ok = ok and g.values.shape.is_compatible_with(rows)
        if ok and dense_shape is not None:
            ok = tf.TensorShape(list(dense_shape)).is_compatible_with(var.shape)
        shape = f"values shape {g.values.shape} (dense shape {dense_shape})"
    else:
        ok = g.shape.is_compatible_with(var.shape)
        shape = f"shape {g.shape}"
    if not ok:
        raise ValueError(
            f"`gradients` for variable {var.name!r} has {shape}, but the variable has shape "
            f"{var.shape}."
        )


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _check_pairs(
    rule: UpdateRule, gradients: Any, variables: Any
) -> tuple[list[Gradient], list[tf.Variable]]:
    variables = _check_variables(variables)
    if isinstance(gradients, tf.Tensor | tf.IndexedSlices):
        gradients = [gradients]
    gradients = list(gradients)
    if len(gradients) != len(variables):
        raise ValueError(
            "`gradients` and `variables` must have the same length. Received: "
            f"len(gradients)={len(gradients)}, len(variables)={len(variables)}"
        )
    kept_g: list[Gradient] = []
    kept_v: list[tf.Variable] = []
    for g, var in zip(gradients, variables, strict=True):
        if g is None:
            continue
        if not isinstance(g, tf.IndexedSlices):
            g = tf.convert_to_tensor(g)
        if g.dtype != var.dtype:
            raise TypeError(
                f"`gradients` for variable {var.name!r} has dtype {g.dtype.name}, but the "
                f"variable has dtype {var.dtype.name}."
            )
        _check_gradient_shape(g, var)
        if isinstance(g, tf.IndexedSlices) and not rule.supports_sparse:
            g = tf.convert_to_tensor(g)
        kept_g.append(g)
        kept_v.append(var)
    if not kept_v:
        names = [var.name for var in variables]
        raise ValueError(
            f"No gradients provided for any variable (every gradient is None). Variables: {names}. "
            "Check that the loss depends on the model's variables."
        )
    return kept_g, kept_v


def _checked_apply(apply: Callable[..., None]) -> Callable[..., None]:
    @tf.autograph.experimental.do_not_convert  # converts a user's `apply` itself (_autograph)
    @functools.wraps(apply)
    def checked(self: UpdateRule, gradients: Any, variables: Any) -> None:
        if sync.applying(self):  # a subclass's apply calling super().apply (on this thread)
            traced(types.MethodType(apply, self))(gradients, variables)
            return
        gradients, variables = _check_pairs(self, gradients, variables)
        if any(var not in self._index for var in variables):
            self.build(variables)
        with sync.in_apply(self), sync.summed_gradients(gradients) as summed:
            traced(types.MethodType(apply, self))(summed, variables)  # (summed across replicas)
        # In a graph, count the update only once its gradients exist: a step whose loss
        # or gradients fail must not advance `iterations` (schedules depend on it).
        inputs = [g.values if isinstance(g, tf.IndexedSlices) else g for g in gradients]
        with tf.control_dependencies(inputs):
            self.iterations.assign_add(1)

    return checked
