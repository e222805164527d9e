"""Composing update rules: gradient transforms, ``chain`` and ``accumulate``.

There is one way to compose, and every composition is itself an
:class:`~gradfit.UpdateRule`, so it goes wherever a rule goes (the Trainer,
a checkpoint, another composition):

* ``gf.chain(*transforms, rule)`` passes the gradients through each
  :class:`GradientTransform` in order, then lets ``rule`` update the
  variables. The transforms are ``gf.clip_by_global_norm(max_norm)``,
  ``gf.clip_by_value(limit)``, or any ``callable(gradients) -> gradients``.
* ``gf.accumulate(steps, rule)`` sums the gradients of ``steps``
  micro-batches and lets ``rule`` make one update with their mean.

Nesting says what happens in which order::

    # Clip each update's (averaged) gradient, then Adam; one update every 4 micro-batches.
    rule = gf.accumulate(4, gf.chain(gf.clip_by_global_norm(1.0), gf.Adam(1e-3)))

    # Clip every micro-batch's gradient before it is accumulated.
    rule = gf.chain(gf.clip_by_global_norm(1.0), gf.accumulate(4, gf.Adam(1e-3)))

The inner rule's ``iterations`` counts its real updates, so its schedule and
bias correction advance, and its weight decay applies, once per update, not
once per micro-batch; the accumulated sums are slots, saved by ``tf.train.Checkpoint``
with the rest of the state. The decision to update is made in-graph
(``tf.cond``), so the compiled step never retraces.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from gradfit import _validation as v
from gradfit._autograph import traced
from gradfit.distribute import sync
from gradfit.update_rules.base import UpdateRule, check_positive, sum_duplicates

GradientList = list[Any]
"""A list of gradients, each a ``tf.Tensor`` or a ``tf.IndexedSlices``."""


class GradientTransform(abc.ABC):
    """A stateless map from a list of gradients to a list of gradients.

    It receives the gradients of the variables being updated (never ``None``;
    dense tensors or ``tf.IndexedSlices``) and returns as many. Any plain
    ``callable(gradients) -> gradients`` may be used in :func:`chain` too.
    """

    @abc.abstractmethod
    def __call__(self, gradients: GradientList) -> GradientList:
        """Returns the transformed gradients, one per input gradient."""


class ClipByGlobalNorm(GradientTransform):
    """Scales all gradients by ``max_norm / max(global_norm, max_norm)``.

    ``global_norm`` is the L2 norm of all gradients together, as
    ``tf.clip_by_global_norm`` computes it (and Keras's ``global_clipnorm``).
    Made with :func:`clip_by_global_norm`.
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm = check_positive("max_norm", max_norm)

    def __call__(self, gradients: GradientList) -> GradientList:
        """Returns the gradients, scaled so that their global norm is at most ``max_norm``."""
        unique = [sum_duplicates(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]
        clipped, _ = tf.clip_by_global_norm(unique, self.max_norm)
        return list(clipped)

    def __repr__(self) -> str:
        return f"clip_by_global_norm({self.max_norm})"


class ClipByValue(GradientTransform):
    """Clips every gradient element to ``[-limit, limit]`` (Keras's ``clipvalue``).

    Made with :func:`clip_by_value`.
    """

    def __init__(self, limit: float) -> None:
        self.limit = check_positive("limit", limit)

    def __call__(self, gradients: GradientList) -> GradientList:
        """Returns the gradients with every element clipped to ``[-limit, limit]``."""
        return [self._clip(g) for g in gradients]

    def _clip(self, g: Any) -> Any:
        if isinstance(g, tf.IndexedSlices):
            g = sum_duplicates(g)
            values = tf.clip_by_value(g.values, -self.limit, self.limit)
            return tf.IndexedSlices(values, g.indices, g.dense_shape)
        return tf.clip_by_value(g, -self.limit, self.limit)

    def __repr__(self) -> str:
        return f"clip_by_value({self.limit})"


def clip_by_global_norm(max_norm: float) -> ClipByGlobalNorm:
    """A transform that rescales the gradients so their global L2 norm is at most ``max_norm``.

    Args:
        max_norm: Finite, positive bound on the global norm.

    Example::

        rule = gf.chain(gf.clip_by_global_norm(1.0), gf.Adam(1e-3))
    """
    return ClipByGlobalNorm(max_norm)


def clip_by_value(limit: float) -> ClipByValue:
    """A transform that clips every gradient element to ``[-limit, limit]``.

    Args:
        limit: Finite, positive bound.

    Example::

        rule = gf.chain(gf.clip_by_value(0.5), gf.SGD(0.1))
    """
    return ClipByValue(limit)


def _check_rule(name: str, rule: Any) -> UpdateRule:
    if not isinstance(rule, UpdateRule):
        raise TypeError(
            f"`{name}` must be a gradfit UpdateRule such as gf.Adam(1e-3); wrap a Keras "
            f"optimizer with gf.KerasOptimizer. {v.received(name, rule)}"
        )
    return rule


class _Wrapper(UpdateRule):
    """A rule that delegates its learning rate and state building to an inner ``rule``."""

    def __init__(self, rule: UpdateRule, name: str | None) -> None:
        super().__init__(0.0, name=name)
        del self._learning_rate  # the inner rule's rate is the one used (and saved)
        self._learning_rate = None
        self.rule = rule

    @property
    def learning_rate(self) -> Any:
        """The inner rule's learning rate (variable or schedule); assigning sets the inner's."""
        return self.rule.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.rule.learning_rate = value

    def current_learning_rate(self) -> tf.Tensor:
        """The learning rate of the inner rule's next update."""
        return self.rule.current_learning_rate()

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Builds the inner rule on the new variables."""
        if variables:
            self.rule.build(variables)


class Chain(_Wrapper):
    """Gradient transforms, then an update rule. Made with :func:`chain`.

    Its ``iterations`` and its inner rule's both count the updates made.
    ``tf.IndexedSlices`` gradients reach the transforms as they are, and the
    rule as the transforms return them.
    """

    supports_sparse = True

    def __init__(
        self,
        transforms: Sequence[Callable[[GradientList], GradientList]],
        rule: UpdateRule,
        *,
        name: str | None = None,
    ) -> None:
        for transform in transforms:
            if not callable(transform) or isinstance(transform, UpdateRule):
                raise TypeError(
                    "`transforms` must be GradientTransforms such as gf.clip_by_global_norm(1.0) "
                    "(or callables `gradients -> gradients`), and only the last argument of "
                    f"gf.chain an UpdateRule. Received a transform: {v.echo(transform)}"
                )
        super().__init__(_check_rule("rule", rule), name)
        self.transforms = tuple(transforms)

    def apply(self, gradients: Sequence[Any], variables: Sequence[tf.Variable]) -> None:
        """Transforms ``gradients`` in order, then lets the inner rule apply them."""
        gradients = list(gradients)
        for transform in self.transforms:
            out = list(traced(transform)(gradients))
            if len(out) != len(gradients):
                raise ValueError(
                    f"A gradient transform must return one gradient per input gradient; "
                    f"{transform!r} returned {len(out)} for {len(gradients)}."
                )
            gradients = out
        self.rule.apply(gradients, variables)

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, (*self.transforms, self.rule)))})"


class Accumulate(_Wrapper):
    """Gradient accumulation over ``steps`` micro-batches. Made with :func:`accumulate`.

    Its ``iterations`` counts micro-batches; the inner rule's counts real
    updates (one per ``steps`` micro-batches). The running sums are slots
    named ``"gradient_sum"`` (float32 for half-precision variables).
    """

    def __init__(self, steps: int, rule: UpdateRule, *, name: str | None = None) -> None:
        steps = v.positive_int("steps", steps)
        super().__init__(_check_rule("rule", rule), name)
        self.steps = steps

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Creates a ``gradient_sum`` slot per variable and builds the inner rule."""
        for var in variables:
            self.add_slot(var, "gradient_sum")
        super().create_state(variables)

    def apply(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Adds ``gradients`` to the sums; on every ``steps``-th call, updates with their mean."""
        sums = [self.get_slot(var, "gradient_sum") for var in variables]
        gradients = [tf.cast(g, s.dtype) for g, s in zip(gradients, sums, strict=True)]

        def update() -> None:
            means = [
                tf.cast((s + g) / self.steps, var.dtype)
                for s, g, var in zip(sums, gradients, variables, strict=True)
            ]
            self.rule.apply(means, variables)
            for s in sums:
                s.assign(tf.zeros_like(s))

        def add() -> None:
            for s, g in zip(sums, gradients, strict=True):
                s.assign_add(g)

        is_update = (self.iterations + 1) % self.steps == 0
        sync.cond(is_update, update, add)  # (a Keras optimizer's merge_call may run in `update`)

    def __repr__(self) -> str:
        return f"accumulate({self.steps}, {self.rule!r})"


def chain(*transforms_then_rule: Any, name: str | None = None) -> Chain:
    """An update rule that transforms the gradients, then lets a rule apply them.

    Args:
        *transforms_then_rule: Zero or more :class:`GradientTransform`
            (or ``callable(gradients) -> gradients``), applied in order,
            then the :class:`~gradfit.UpdateRule` that makes the update.
        name: Name of the module.

    Returns:
        A :class:`Chain`, itself an UpdateRule.

    Example::

        rule = gf.chain(gf.clip_by_global_norm(1.0), gf.AdamW(1e-3))
    """
    if not transforms_then_rule:
        raise TypeError(
            "gf.chain needs an UpdateRule as its last argument, e.g. "
            "gf.chain(gf.clip_by_global_norm(1.0), gf.Adam(1e-3)). Received no arguments."
        )
    *transforms, rule = transforms_then_rule
    return Chain(transforms, rule, name=name)


def accumulate(steps: int, rule: UpdateRule, *, name: str | None = None) -> Accumulate:
    """An update rule that updates once per ``steps`` micro-batches, with their mean gradient.

    With equal micro-batches of a mean loss, ``steps`` micro-batches of size
    ``b`` update exactly as one batch of size ``steps * b``.

    Args:
        steps: Positive number of micro-batches per update.
        rule: The UpdateRule that makes the updates.
        name: Name of the module.

    Returns:
        An :class:`Accumulate`, itself an UpdateRule.

    Example::

        rule = gf.accumulate(4, gf.Adam(1e-3))
    """
    return Accumulate(steps, rule, name=name)
