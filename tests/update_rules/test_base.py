"""Tests of the UpdateRule base class: what every subclass gets for free."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradfit as gf


class SignSGD(gf.UpdateRule):
    """A user's rule: param <- param - lr * sign(g)."""

    def apply(self, gradients, variables):
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            var.assign_sub(tf.cast(lr, var.dtype) * tf.sign(g))


class SignMomentum(gf.UpdateRule):
    """A user's rule with state: m <- 0.5 * m + sign(g) ; param <- param - lr * m."""

    def __init__(self, learning_rate=0.01):
        super().__init__(learning_rate)
        self.created_for = []  # one list of variable names per create_state call

    def create_state(self, variables):
        self.created_for.append([var.name for var in variables])
        for var in variables:
            self.add_slot(var, "m")

    def apply(self, gradients, variables):
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            m = self.get_slot(var, "m")
            m.assign(0.5 * m + tf.sign(g))
            var.assign_sub(tf.cast(lr, var.dtype) * m)


class RecordIterations(gf.UpdateRule):
    """Writes the ``iterations`` value its apply sees into every variable."""

    def apply(self, gradients, variables):
        for var in variables:
            var.assign(tf.cast(self.iterations, var.dtype))


class ClippedSGD(gf.SGD):
    """A subclass of SGD that clips gradients to [-1, 1], then lets SGD step."""

    def apply(self, gradients, variables):
        super().apply([tf.clip_by_value(g, -1.0, 1.0) for g in gradients], variables)


# -- the user's rule works, with the wrapper's checks -------------------------


def test_sign_sgd_golden_step():
    w = tf.Variable([1.0, -2.0, 3.0])
    rule = SignSGD(0.1)
    rule.apply([tf.constant([0.5, -3.0, 0.0])], [w])
    # w - 0.1 * sign(g) = [1 - 0.1, -2 + 0.1, 3 - 0] = [0.9, -1.9, 3.0]
    np.testing.assert_allclose(w.numpy(), [0.9, -1.9, 3.0], rtol=1e-6)
    assert int(rule.iterations) == 1


@given(
    hnp.arrays(
        np.float32,
        st.integers(1, 6),
        # TensorFlow's CPU kernels flush subnormals to zero, so sign(1e-45) == 0 there.
        elements=st.floats(-100, 100, width=32, allow_subnormal=False),
    ),
    st.floats(0, 1, width=32),
)
def test_sign_sgd_matches_numpy(gradient, learning_rate):
    start = np.linspace(-1.0, 1.0, gradient.size).astype(np.float32)
    w = tf.Variable(start)
    rule = SignSGD(float(learning_rate))
    rule.apply([tf.constant(gradient)], [w])
    expected = start - np.float32(learning_rate) * np.sign(gradient)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_user_rule_skips_none_gradients():
    a, b = tf.Variable([1.0, 2.0]), tf.Variable(3.0)
    rule = SignSGD(0.5)
    rule.apply([None, tf.constant(-4.0)], [a, b])
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    # 3 - 0.5 * sign(-4) = 3.5
    np.testing.assert_allclose(b.numpy(), 3.5)
    assert int(rule.iterations) == 1


def test_user_rule_all_none_raises():
    a, b = tf.Variable([1.0, 2.0]), tf.Variable(3.0)
    rule = SignSGD(0.5)
    with pytest.raises(ValueError, match="No gradients provided"):
        rule.apply([None, None], [a, b])
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(b.numpy(), 3.0)
    assert int(rule.iterations) == 0


def test_user_rule_argument_errors():
    a, b = tf.Variable([1.0, 2.0]), tf.Variable(3.0)
    rule = SignSGD(0.5)
    with pytest.raises(ValueError, match="same length"):
        rule.apply([tf.constant([1.0, 1.0])], [a, b])
    with pytest.raises(TypeError, match="dtype"):
        rule.apply([tf.constant([1.0, 1.0]), tf.constant(1, tf.int32)], [a, b])
    with pytest.raises(ValueError, match="shape"):
        rule.apply([tf.constant([1.0, 1.0]), tf.constant([1.0])], [a, b])
    with pytest.raises(TypeError, match="`variables`"):
        rule.apply([tf.constant([1.0, 1.0])], [np.array([1.0, 2.0])])
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(b.numpy(), 3.0)
    assert int(rule.iterations) == 0


def test_user_rule_sparse_shape_mismatch_raises_before_any_change():
    # Densified, these slices are [2, 1]; the variable is [2, 3].
    a, table = tf.Variable([1.0, 2.0]), tf.Variable(tf.ones([2, 3]))
    bad = tf.IndexedSlices(tf.constant([[1.0]]), tf.constant([1]), tf.constant([2, 1]))
    rule = SignSGD(0.5)
    with pytest.raises(ValueError, match="shape"):
        rule.apply([tf.constant([1.0, 1.0]), bad], [a, table])
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(table.numpy(), np.ones([2, 3]))
    assert int(rule.iterations) == 0


def test_kth_apply_sees_iterations_k():
    w = tf.Variable(-1.0)
    rule = RecordIterations()

    @tf.function
    def step():
        rule.apply([tf.constant(1.0)], [w])

    rule.apply([tf.constant(1.0)], [w])
    assert w.numpy() == 0.0  # the first call (k = 0) sees iterations == 0
    step()
    step()
    assert w.numpy() == 2.0  # the third call sees iterations == 2
    assert int(rule.iterations) == 3


def test_user_rule_receives_dense_gradients_for_indexed_slices():
    seen = []

    class Recorder(gf.UpdateRule):
        def apply(self, gradients, variables):
            for g, var in zip(gradients, variables, strict=True):
                seen.append(type(g))
                var.assign_sub(g)

    assert not Recorder.supports_sparse
    table = tf.Variable(tf.zeros([3, 2]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, [2, 0, 2]) * tf.constant([[1.0], [2.0], [3.0]]))
    grad = tape.gradient(loss, table)
    assert isinstance(grad, tf.IndexedSlices)
    Recorder().apply([grad], [table])
    assert len(seen) == 1
    assert issubclass(seen[0], tf.Tensor)
    assert not issubclass(seen[0], tf.IndexedSlices)
    # dense gradient: row 0 -> 2, row 1 -> 0, row 2 -> 1 + 3 = 4 (duplicates summed)
    np.testing.assert_array_equal(table.numpy(), [[-2.0, -2.0], [0.0, 0.0], [-4.0, -4.0]])


# -- build ------------------------------------------------------------------------


def test_build_is_idempotent_and_adds_new_variables():
    a, b, c = tf.Variable([1.0, 2.0]), tf.Variable(3.0), tf.Variable(tf.ones([2, 3]))
    rule = SignMomentum()
    assert not rule.built
    assert len(rule.variables) == 2  # learning rate and iterations

    rule.build([a, b])
    assert rule.built
    assert len(rule.variables) == 4
    rule.build([a, b])
    rule.build([b, a])
    assert len(rule.variables) == 4
    assert rule.created_for == [[a.name, b.name]]

    rule.build([b, c])
    assert len(rule.variables) == 5
    assert rule.created_for == [[a.name, b.name], [c.name]]
    assert rule.get_slot(c, "m").shape == c.shape
    slots = {id(rule.get_slot(var, "m")) for var in (a, b, c)}
    assert len(slots) == 3


def test_apply_builds_the_rule():
    w = tf.Variable([1.0, -1.0])
    rule = SignMomentum(0.1)
    rule.apply([tf.constant([2.0, -2.0])], [w])
    assert rule.built
    # m = 0.5 * 0 + sign(g) = [1, -1] ; w = [1 - 0.1, -1 + 0.1] = [0.9, -0.9]
    np.testing.assert_array_equal(rule.get_slot(w, "m").numpy(), [1.0, -1.0])
    np.testing.assert_allclose(w.numpy(), [0.9, -0.9], rtol=1e-6)
    rule.apply([tf.constant([2.0, -2.0])], [w])
    # m = 0.5 * [1, -1] + [1, -1] = [1.5, -1.5] ; w = [0.9 - 0.15, -0.9 + 0.15] = [0.75, -0.75]
    np.testing.assert_allclose(w.numpy(), [0.75, -0.75], rtol=1e-6)
    assert rule.created_for == [[w.name]]


def test_apply_in_function_builds_once_and_traces_once():
    w = tf.Variable([1.0, -1.0])
    rule = SignMomentum(0.1)
    rule.build([w])

    @tf.function
    def step(grad):
        rule.apply([grad], [w])

    step(tf.constant([2.0, -2.0]))
    step(tf.constant([2.0, -2.0]))
    # the same two steps as test_apply_builds_the_rule
    np.testing.assert_allclose(w.numpy(), [0.75, -0.75], rtol=1e-6)
    assert step.experimental_get_tracing_count() == 1
    assert rule.created_for == [[w.name]]
    assert int(rule.iterations) == 2


def test_build_rejects_non_variables():
    with pytest.raises(TypeError, match="`variables`"):
        SignMomentum().build([tf.constant(1.0)])


# -- slots ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "slot_dtype"),
    [
        (tf.float32, tf.float32),
        (tf.float64, tf.float64),
        (tf.float16, tf.float32),
        (tf.bfloat16, tf.float32),
    ],
)
def test_add_slot_get_slot_round_trip(dtype, slot_dtype):
    a = tf.Variable(tf.zeros([2, 3], dtype), name="layer/kernel")
    b = tf.Variable(tf.zeros([4], dtype), name="layer/bias")
    rule = SignSGD()
    rule.build([a, b])
    slot = rule.add_slot(a, "accumulator", initial_value=0.5)
    other = rule.add_slot(b, "accumulator")
    assert rule.get_slot(a, "accumulator") is slot
    assert rule.get_slot(b, "accumulator") is other
    assert slot.dtype == slot_dtype
    assert slot.shape == a.shape
    assert not slot.trainable
    np.testing.assert_array_equal(slot.numpy(), np.full([2, 3], 0.5))
    np.testing.assert_array_equal(other.numpy(), np.zeros([4]))
    with pytest.raises(KeyError):
        rule.get_slot(a, "missing")


# -- subclasses of a concrete rule ------------------------------------------------


def test_sgd_subclass_calling_super_increments_iterations_once():
    w = tf.Variable(1.0)
    rule = ClippedSGD(0.1)
    rule.apply([tf.constant(5.0)], [w])
    # g clipped to 1 ; w = 1 - 0.1 * 1 = 0.9
    np.testing.assert_allclose(w.numpy(), 0.9, rtol=1e-6)
    assert int(rule.iterations) == 1

    step = tf.function(lambda grad: rule.apply([grad], [w]))
    step(tf.constant(-5.0))
    step(tf.constant(0.5))
    # 0.9 + 0.1 * 1 - 0.1 * 0.5 = 0.95
    np.testing.assert_allclose(w.numpy(), 0.95, rtol=1e-6)
    assert int(rule.iterations) == 3


def test_error_inside_apply_does_not_break_later_calls():
    class FailsOnce(gf.SGD):
        failed = False

        def apply(self, gradients, variables):
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("boom")
            super().apply(gradients, variables)

    w = tf.Variable(1.0)
    rule = FailsOnce(0.1)
    with pytest.raises(RuntimeError, match="boom"):
        rule.apply([tf.constant(2.0)], [w])
    assert int(rule.iterations) == 0
    rule.apply([tf.constant(2.0)], [w])
    np.testing.assert_allclose(w.numpy(), 0.8, rtol=1e-6)  # 1 - 0.1 * 2
    assert int(rule.iterations) == 1


def test_update_rule_is_abstract():
    with pytest.raises(TypeError):
        gf.UpdateRule()


# -- checkpoints ------------------------------------------------------------------


def test_checkpoint_restores_slots_created_in_create_state(tmp_path):
    init = [np.array([1.0, -2.0], np.float32), np.array(0.5, np.float32)]
    grads = [[np.array([1.0, -1.0]), np.array(-2.0)], [np.array([-3.0, 0.0]), np.array(1.0)]]
    grads = [[tf.constant(g, tf.float32) for g in pair] for pair in grads * 2]

    straight_vars = [tf.Variable(x) for x in init]
    straight = SignMomentum(0.1)
    for pair in grads:
        straight.apply(pair, straight_vars)

    first_vars = [tf.Variable(x) for x in init]
    first = SignMomentum(0.1)
    for pair in grads[:2]:
        first.apply(pair, first_vars)
    path = tf.train.Checkpoint(rule=first, vars=first_vars).save(str(tmp_path / "ckpt"))

    resumed_vars = [tf.Variable(tf.zeros_like(x)) for x in init]
    resumed = SignMomentum(0.1)
    resumed.build(resumed_vars)
    tf.train.Checkpoint(rule=resumed, vars=resumed_vars).restore(path).assert_consumed()
    assert int(resumed.iterations) == 2
    for mine, theirs in zip(resumed_vars, first_vars, strict=True):
        saved = first.get_slot(theirs, "m").numpy()
        assert np.any(saved != 0)
        np.testing.assert_array_equal(resumed.get_slot(mine, "m").numpy(), saved)

    for pair in grads[2:]:
        resumed.apply(pair, resumed_vars)
    for mine, theirs in zip(resumed_vars, straight_vars, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
