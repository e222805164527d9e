"""Tests of gradfit.testing.UpdateRuleContract: a user's rule in three lines, and bugs caught.

Every built-in rule's contract subclass lives in tests/update_rules/test_contract.py.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.testing import UpdateRuleContract


class SignSGD(gf.UpdateRule):
    """The rule of gradfit's UpdateRule docstring: ``param <- param - lr * sign(g)``."""

    supports_sparse = False

    def apply(self, gradients, variables):
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            var.assign_sub(tf.cast(lr, var.dtype) * tf.sign(g))


# A user's rule, checked with three lines:
class TestSignSGD(UpdateRuleContract):
    def make_rule(self):
        return SignSGD(0.01)


def test_the_base_class_is_not_collected_and_needs_make_rule():
    assert not UpdateRuleContract.__name__.startswith("Test")
    with pytest.raises(NotImplementedError, match="must implement make_rule"):
        UpdateRuleContract().make_rule()


# -- broken rules: each must fail the check named with it --------------------


class Ascending(gf.UpdateRule):
    """Adds the gradient: a sign error."""

    def apply(self, gradients, variables):
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            var.assign_add(tf.cast(lr, var.dtype) * g)


class Float32Only(gf.UpdateRule):
    """Mixes a float32 constant into every update: float64 variables break."""

    def apply(self, gradients, variables):
        for g, var in zip(gradients, variables, strict=True):
            var.assign_sub(tf.constant(0.01) * g)


class PythonStateMomentum(gf.UpdateRule):
    """Keeps its velocity in Python tensors: neither checkpointed nor traceable."""

    def __init__(self, learning_rate):
        super().__init__(learning_rate)
        self.velocity = {}

    def apply(self, gradients, variables):
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            velocity = 0.9 * self.velocity.get(var.ref(), tf.zeros_like(g)) + g
            self.velocity[var.ref()] = velocity
            var.assign_sub(tf.cast(lr, var.dtype) * velocity)


class CountedInPython(gf.UpdateRule):
    """Decays its step with a Python counter: eager and compiled steps disagree."""

    def __init__(self, learning_rate):
        super().__init__(learning_rate)
        self.count = 0

    def apply(self, gradients, variables):
        self.count += 1
        lr = self.current_learning_rate() / self.count
        for g, var in zip(gradients, variables, strict=True):
            var.assign_sub(tf.cast(lr, var.dtype) * g)


class LastRowWins(gf.UpdateRule):
    """Handles IndexedSlices with scatter_update: repeated rows overwrite, not add."""

    supports_sparse = True

    def apply(self, gradients, variables):
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            if isinstance(g, tf.IndexedSlices):
                rows = tf.gather(var, g.indices) - tf.cast(lr, var.dtype) * g.values
                var.scatter_update(tf.IndexedSlices(rows, g.indices, g.dense_shape))
            else:
                var.assign_sub(tf.cast(lr, var.dtype) * g)


class DecaysEverything(gf.UpdateRule):
    """Decays every variable it was built on, even one whose gradient is None."""

    def create_state(self, variables):
        self.seen = list(variables)

    def apply(self, gradients, variables):
        for var in self.seen:
            var.assign(var * 0.99)
        for g, var in zip(gradients, variables, strict=True):
            var.assign_sub(0.1 * g)


@pytest.mark.parametrize(
    ("make_rule", "check"),
    [
        (lambda: Ascending(0.1), "test_descends_on_a_convex_quadratic"),
        (lambda: Float32Only(0.1), "test_dtypes_and_shapes_are_kept"),
        (lambda: PythonStateMomentum(0.1), "test_checkpoint_round_trip"),
        (lambda: PythonStateMomentum(0.1), "test_eager_function_and_xla_agree"),
        (lambda: CountedInPython(0.1), "test_eager_function_and_xla_agree"),
        (lambda: LastRowWins(0.1), "test_dense_and_indexed_slices_agree"),
        (DecaysEverything, "test_none_gradients_are_skipped"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_the_contract_catches_a_broken_rule(make_rule, check):
    contract = type("Contract", (UpdateRuleContract,), {"make_rule": lambda self: make_rule()})()
    with pytest.raises(AssertionError):
        getattr(contract, check)()


def test_the_broken_rules_pass_the_other_checks():
    # The failures above are specific: e.g. the ascending rule passes everything else.
    contract = type("Contract", (UpdateRuleContract,), {"make_rule": lambda self: Ascending(0.1)})()
    for name in dir(contract):
        if name.startswith("test_") and name != "test_descends_on_a_convex_quadratic":
            getattr(contract, name)()
