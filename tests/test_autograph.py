"""gradfit traces its own code as plain Python and converts only the code a user brings.

:mod:`gradfit._autograph` decides, callable by callable, what autograph
converts: a fresh process's first fit spent most of its time converting
gradfit's own functions, which need no conversion, while a user's model,
loss, metric, rule, schedule, transform or Task must keep Python control
flow over tensors (tests/training/test_autograph.py fits them).
"""

from __future__ import annotations

import functools
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit import _autograph
from gradfit.losses import align


def users_sign(x):
    """-1 or 1 by the sign of the sum: a Python ``if`` on a tensor."""
    if tf.reduce_sum(x) > 0:
        return tf.ones_like(x)
    return -tf.ones_like(x)


class UsersScaler:
    """A callable object of a user's, branching on a tensor."""

    def __call__(self, x):
        if tf.reduce_sum(x) > 0:
            return x * 3.0
        return x


def in_graph(fn, *args):
    """``fn(*args)`` run inside a ``tf.function`` traced without autograph, as gradfit's are."""
    return _autograph.function(lambda *a: _autograph.traced(fn)(*a))(*args).numpy()


@pytest.mark.parametrize(
    ("fn", "arg", "expected"),
    [
        (users_sign, [1.0, 2.0], [1.0, 1.0]),
        (users_sign, [-1.0, -2.0], [-1.0, -1.0]),
        (UsersScaler(), [1.0, 1.0], [3.0, 3.0]),
        (UsersScaler().__call__, [-1.0, 0.5], [-1.0, 0.5]),
        (functools.partial(users_sign), [-3.0, 1.0], [-1.0, -1.0]),
    ],
    ids=["function", "function-else", "object", "method", "partial"],
)
def test_a_users_callables_are_converted(fn, arg, expected):
    x = tf.constant(arg)
    with pytest.raises(TypeError, match="Python `bool`"):  # as it is, it cannot be traced
        _autograph.function(fn)(x)
    np.testing.assert_array_equal(in_graph(fn, x), expected)


@pytest.mark.parametrize(
    "fn",
    [align, gf.L2(), gf.SGD(0.1).current_learning_rate, tf.nn.relu, keras.activations.relu],
    ids=["gradfit-function", "gradfit-object", "gradfit-method", "tensorflow", "keras"],
)
def test_gradfits_tensorflows_and_keras_callables_run_as_they_are(fn):
    seen = []
    _autograph.function(lambda: seen.append(_autograph.traced(fn) is fn))()
    assert seen == [True]


def test_a_users_lambda_is_converted():
    x = tf.constant([1.0, 0.0])
    np.testing.assert_array_equal(
        in_graph(lambda t: t * 2.0 if tf.reduce_sum(t) > 0 else t, x), [2.0, 0.0]
    )


def test_a_users_subclass_of_a_gradfit_class_is_converted_through_inherited_methods():
    class Halving(gf.L2):
        def per_example(self, y_true, y_pred):  # called by L2's own __call__
            values = super().per_example(y_true, y_pred)
            if tf.reduce_mean(values) > 5.0:
                values = values / 2.0
            return values

    weighted, y, one = Halving().weighted, tf.constant([[0.0]]), tf.constant([1.0])
    assert in_graph(weighted, y, tf.constant([[3.0]]), one) == pytest.approx(4.5)  # 9 > 5: halved
    assert in_graph(weighted, y, tf.constant([[2.0]]), one) == pytest.approx(4.0)


def test_eagerly_every_callable_is_returned_as_it_is():
    assert _autograph.traced(users_sign) is users_sign


def test_a_callable_without_readable_source_runs_unconverted():
    namespace: dict = {}
    exec("def doubled(x):\n    return x * 2.0\n", {"tf": tf}, namespace)  # no source file
    np.testing.assert_array_equal(in_graph(namespace["doubled"], tf.constant([1.5])), [3.0])


def _generated_frames(run):
    """How many Python calls ``run()`` made into code that autograph generated."""
    calls = []

    def profile(frame, event, arg):
        if event == "call" and "__autograph_generated" in frame.f_code.co_filename:
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return len(calls)


def _fit(loss, metrics=()):
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    trainer = gf.Trainer(gf.MLP((4,), seed=0), loss, gf.Adam(0.01), metrics=metrics)
    return lambda: trainer.fit(x, 2 * x, epochs=2, batch_size=8, validation_data=(x, x))


def test_a_fit_of_gradfits_own_parts_converts_nothing():
    assert _generated_frames(_fit(gf.L2(), metrics=["mae", gf.metrics.MeanSquaredError()])) == 0


def test_a_fit_with_a_users_loss_runs_converted_code():
    def users_loss(y_true, y_pred):
        return tf.reduce_mean(tf.square(y_true - y_pred))

    assert _generated_frames(_fit(users_loss)) > 0
