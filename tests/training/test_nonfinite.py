"""The non-finite policy: a NaN or infinite loss or gradient never reaches the variables."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 2)).astype(np.float32)  # 5 batches of 8
Y = (X @ np.array([[1.5], [-0.5]], np.float32) + 0.2).astype(np.float32)
POISONED = X.copy()
POISONED[32:] = 1e30  # the last batch: predictions ~1e30, squared errors overflow to inf


def trainer(policy, **kwargs):
    model = gf.LinearModel(weight_init=0.1, bias_init=0.0)
    return gf.Trainer(model, gf.L2(), gf.SGD(0.05), on_nonfinite=policy, **kwargs)


def values(t):
    return [v.numpy() for v in t.model.trainable_variables]


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_raise_stops_at_the_poisoned_step_with_the_last_finite_values(jit):
    reference = trainer("raise", jit_compile=jit)
    reference.fit(X[:32], Y[:32], epochs=1, batch_size=8, shuffle=False)  # steps 0-3 only

    t = trainer("raise", jit_compile=jit)
    with pytest.raises(gf.NonFiniteError, match="epoch 0, step 4") as info:
        t.fit(POISONED, Y, epochs=3, batch_size=8, shuffle=False)
    assert (info.value.epoch, info.value.step) == (0, 4)
    for got, want in zip(values(t), values(reference), strict=True):
        assert np.all(np.isfinite(got))
        np.testing.assert_array_equal(got, want)
    assert int(t.update_rule.iterations.numpy()) == 4


def test_raise_on_a_ragged_last_batch_and_in_a_later_epoch():
    x = X.copy()
    x[-3:] = 1e30  # 40 = 4 * 9 + a ragged batch of 4 holding the poison
    t = trainer("raise")
    with pytest.raises(gf.NonFiniteError) as info:
        t.fit(x, Y, epochs=2, batch_size=9, shuffle=False)
    assert (info.value.epoch, info.value.step) == (0, 4)
    assert all(np.all(np.isfinite(v)) for v in values(t))


def test_skip_equals_the_run_without_the_poisoned_batch():
    t = trainer("skip")
    history = t.fit(POISONED, Y, epochs=3, batch_size=8, shuffle=False)
    reference = trainer("skip")
    ref_history = reference.fit(X[:32], Y[:32], epochs=3, batch_size=8, shuffle=False)
    for got, want in zip(values(t), values(reference), strict=True):
        np.testing.assert_array_equal(got, want)
    assert history.history["nonfinite_steps"] == [1.0, 1.0, 1.0]
    assert ref_history.history["nonfinite_steps"] == [0.0, 0.0, 0.0]
    # Skipped steps are left out of the epoch's mean loss.
    np.testing.assert_allclose(history.history["loss"], ref_history.history["loss"], rtol=1e-6)
    assert int(t.update_rule.iterations.numpy()) == 12


def test_skip_raises_only_after_max_consecutive_non_finite_steps():
    x = X.copy()
    x[8:] = 1e30  # steps 1-4 of every epoch are poisoned; step 0 is finite and resets the run
    t = trainer("skip", max_consecutive_nonfinite=5)
    history = t.fit(x, Y, epochs=3, batch_size=8, shuffle=False)
    assert history.history["nonfinite_steps"] == [4.0, 4.0, 4.0]
    assert int(t.update_rule.iterations.numpy()) == 3
    t = trainer("skip", max_consecutive_nonfinite=4)
    with pytest.raises(gf.NonFiniteError, match="4 training steps in a row") as info:
        t.fit(x, Y, epochs=3, batch_size=8, shuffle=False)
    assert (info.value.epoch, info.value.step) == (0, 4)


def test_skip_counts_runs_across_epoch_boundaries():
    x = X.copy()
    x[24:] = 1e30  # steps 3 and 4 poisoned; step 0 of the next epoch is finite
    t = trainer("skip", max_consecutive_nonfinite=2)
    with pytest.raises(gf.NonFiniteError, match="2 training steps in a row") as info:
        t.fit(x, Y, epochs=2, batch_size=8, shuffle=False)
    assert (info.value.epoch, info.value.step) == (0, 4)
    assert int(t.update_rule.iterations.numpy()) == 3


def test_a_non_finite_gradient_with_a_finite_loss_is_caught():
    def sqrt_loss(y_true, y_pred):
        # d/dp sqrt(|p - y|) is infinite where p == y, although the loss is finite (0).
        return tf.reduce_mean(tf.sqrt(tf.abs(y_pred - tf.cast(y_true, y_pred.dtype))))

    model = gf.LinearModel(weight_init=1.0, bias_init=0.0)
    t = gf.Trainer(model, sqrt_loss, gf.SGD(0.1))
    x = np.array([1.0, 2.0], np.float32)
    with pytest.raises(gf.NonFiniteError):
        t.fit(x, x, epochs=1)  # predictions equal targets: loss 0, gradient inf
    assert model.W.numpy() == 1.0


def test_ignore_lets_the_update_through():
    t = trainer("ignore")
    history = t.fit(POISONED, Y, epochs=1, batch_size=8, shuffle=False)
    assert not all(np.all(np.isfinite(v)) for v in values(t))
    assert "nonfinite_steps" not in history.history


@pytest.mark.parametrize("in_loop", [False, True], ids=["blocks", "gathered-in-loop"])
def test_fused_and_one_step_per_call_agree_under_skip(monkeypatch, in_loop):
    if in_loop:
        monkeypatch.setattr(gf.training.loops, "GATHER_IN_LOOP_BYTES", 1)
    x = X.copy()
    x[8:16] = 1e30
    fused, single = trainer("skip"), trainer("skip", steps_per_execution=1)
    h1 = fused.fit(x, Y, epochs=2, batch_size=8, seed=3)
    h2 = single.fit(x, Y, epochs=2, batch_size=8, seed=3)
    for a, b in zip(values(fused), values(single), strict=True):
        np.testing.assert_array_equal(a, b)
    # Shuffled, the poisoned rows spread over several batches; an epoch whose every step
    # was skipped has a NaN mean loss. assert_equal treats NaN as equal to NaN.
    np.testing.assert_equal(h1.history, h2.history)
    assert sum(h1.history["nonfinite_steps"]) >= 2


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_wrapped_keras_optimizer_is_rolled_back_too(policy):
    import keras

    def make():
        model = gf.LinearModel(weight_init=0.1, bias_init=0.0)
        rule = gf.KerasOptimizer(keras.optimizers.Adam(0.05))
        return gf.Trainer(model, gf.L2(), rule, on_nonfinite=policy)

    reference = make()
    reference.fit(X[:32], Y[:32], epochs=1, batch_size=8, shuffle=False)
    t = make()
    if policy == "raise":
        with pytest.raises(gf.NonFiniteError):
            t.fit(POISONED, Y, epochs=1, batch_size=8, shuffle=False)
    else:
        history = t.fit(POISONED, Y, epochs=1, batch_size=8, shuffle=False)
        assert history.history["nonfinite_steps"] == [1.0]
    for got, want in zip(values(t), values(reference), strict=True):
        np.testing.assert_array_equal(got, want)
    optimizer = t.update_rule.optimizer
    assert all(np.all(np.isfinite(np.asarray(v))) for v in optimizer.variables)


def test_datasets_follow_the_policy():
    dataset = tf.data.Dataset.from_tensor_slices((POISONED, Y)).batch(8)
    t = trainer("raise")
    with pytest.raises(gf.NonFiniteError) as info:
        t.fit(dataset, epochs=2)
    assert (info.value.epoch, info.value.step) == (0, 4)
    skipping = trainer("skip")
    history = skipping.fit(dataset, epochs=2)
    assert history.history["nonfinite_steps"] == [1.0, 1.0]
    reference = trainer("skip")
    reference.fit(X[:32], Y[:32], epochs=2, batch_size=8, shuffle=False)
    for a, b in zip(values(skipping), values(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"on_nonfinite": "warn"}, ValueError, "on_nonfinite"),
        ({"max_consecutive_nonfinite": 0}, ValueError, "max_consecutive_nonfinite"),
        ({"max_consecutive_nonfinite": 2.5}, TypeError, "max_consecutive_nonfinite"),
    ],
)
def test_bad_policy_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=f"`{name}`"):
        gf.Trainer(gf.LinearModel(), gf.L2(), **kwargs)
