"""A bad ``tf.data`` batch mid-fit is a ValueError naming ``x``/``y`` and the step (issue 13, 8).

The variables (model, update rule, metrics) are then bitwise those of a fit
that stopped after the last good step, with and without XLA, whatever
``on_nonfinite`` says.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf

X = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
Y = np.array([0, 1, 2] * 4, np.int32)
SPEC = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.int32))


def trainer(jit, on_nonfinite="raise"):
    return gf.Trainer(
        gf.MLP((4,), units=3, seed=1),
        gf.SparseCategoricalCrossentropy(from_logits=True),
        gf.Adam(0.01),
        metrics=["accuracy"],
        jit_compile=jit,
        on_nonfinite=on_nonfinite,
    )


def values(t):
    return [v.numpy().tobytes() for v in [*t.model.variables, *t.update_rule.variables]]


def bad_labels():
    y = Y.copy()
    y[9] = 5  # in the third batch of 4
    return tf.data.Dataset.from_tensor_slices((X, y)).batch(4)


def wider_third_batch():
    def gen():
        yield X[:4], Y[:4]
        yield X[4:8], Y[4:8]
        yield np.zeros((4, 2), np.float32), Y[8:]

    return tf.data.Dataset.from_generator(gen, output_signature=SPEC)


def raising_generator():
    def gen():
        yield X[:4], Y[:4]
        yield X[4:8], Y[4:8]
        raise RuntimeError("the sensor feed went away")

    return tf.data.Dataset.from_generator(gen, output_signature=SPEC)


CASES = {
    "labels out of range": (bad_labels, "`y` holds class labels outside [0, 3)"),
    "a batch of another width": (wider_third_batch, "shape (4, 2)"),
    "a generator that raises": (raising_generator, "RuntimeError: the sensor feed went away"),
}


@pytest.mark.parametrize("jit", [False, True], ids=["no-xla", "xla"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_batch_names_x_and_the_step_and_keeps_the_last_good_steps_values(case, jit):
    make, message = CASES[case]
    reference = trainer(jit)
    reference.fit(tf.data.Dataset.from_tensor_slices((X[:8], Y[:8])).batch(4))  # steps 0, 1
    t = trainer(jit)
    with pytest.raises(ValueError) as info:
        t.fit(make(), epochs=2)
    text = str(info.value)
    assert text.startswith("`x` (a tf.data.Dataset)") and "at step 2 of epoch 0" in text
    assert message in text and "after step 1 of epoch 0" in text
    assert "Graph execution error" not in text and "node" not in text
    assert values(t) == values(reference)
    assert int(t.update_rule.iterations) == 2


def test_without_checks_a_bad_batch_is_still_explained_and_undone():
    reference = trainer(False, on_nonfinite="ignore")
    reference.fit(tf.data.Dataset.from_tensor_slices((X[:8], Y[:8])).batch(4))
    t = trainer(False, on_nonfinite="ignore")
    with pytest.raises(ValueError, match="outside"):
        t.fit(bad_labels())
    assert values(t) == values(reference)


def test_a_bad_batch_in_a_later_epoch_and_a_good_fit_after_it():
    t = trainer(False)
    t.fit(tf.data.Dataset.from_tensor_slices((X, Y)).batch(4), epochs=1)
    after_one = values(t)
    y = Y.copy()
    y[0] = -1  # the first batch
    with pytest.raises(ValueError, match=r"at step 0 of epoch 0.*from before this epoch"):
        t.fit(tf.data.Dataset.from_tensor_slices((X, y)).batch(4))
    assert values(t) == after_one
    t.fit(tf.data.Dataset.from_tensor_slices((X, Y)).batch(4))  # the trainer still trains
    assert values(t) != after_one


@pytest.mark.parametrize("jit", [False, True], ids=["no-xla", "xla"])
def test_evaluate_and_validation_name_their_argument_and_the_batch(jit):
    t = trainer(jit)
    with pytest.raises(ValueError, match=r"^`x` \(a tf.data.Dataset\) gave a bad batch at batch 2"):
        t.evaluate(bad_labels())
    with pytest.raises(ValueError, match=r"^`validation_data` .* at batch 2: `y` holds class"):
        t.fit(X, Y, batch_size=4, validation_data=bad_labels())
    with pytest.raises(ValueError, match="could not produce its batch at batch 2"):
        t.evaluate(raising_generator())
    good = t.evaluate(tf.data.Dataset.from_tensor_slices((X, Y)).batch(4))
    assert np.isfinite(good["loss"])
