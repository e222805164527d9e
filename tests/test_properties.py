"""Property-based tests of gradfit itself, with gradfit.testing's own tools.

* Every built-in model x loss pair passes ``check_model_gradients`` on
  hypothesis-generated data (at least 200 cases under the default profile;
  ``GRADFIT_HYPOTHESIS_PROFILE=thorough`` runs ten times as many). Run with
  ``-s`` to see how many cases ran.
* A full-batch ``Trainer.fit`` step equals a hand-written ``GradientTape`` step.
* The full-batch gradient does not depend on the order of the examples.
* The mean gradient over a batch equals the size-weighted mean of the mean
  gradients over any split of it.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradfit as gf
from gradfit.testing import check_model_gradients
from gradfit.testing import strategies as gfst


def _examples(n: int) -> int:
    """``n`` examples under the default profile (30 examples), scaled with the active one."""
    return max(1, round(n * settings.default.max_examples / 30))


# -- every model x loss pair passes the gradient check ------------------------

LOSSES = {
    "L2": gf.L2(),
    "L1": gf.L1(),
    "Huber": gfst.losses("regression").filter(lambda loss: isinstance(loss, gf.Huber)),
    "BCE-logits": gf.BinaryCrossentropy(from_logits=True),
    "BCE-probabilities": gf.BinaryCrossentropy(),
    "SCCE-logits": gf.SparseCategoricalCrossentropy(from_logits=True),
    "SCCE-probabilities": gf.SparseCategoricalCrossentropy(),
}
MODELS = ["linear", "mlp"]
CASES: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_cases():
    yield
    if CASES:
        print(
            f"\ncheck_model_gradients passed {sum(CASES.values())} generated cases over "
            f"{len(CASES)} model x loss pairs: {dict(CASES)}"
        )


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("kind", MODELS)
def test_every_model_loss_pair_passes_the_gradient_check(kind, loss_name):
    @settings(max_examples=_examples(15))
    @given(gfst.gradient_check_cases(LOSSES[loss_name], kinds=(kind,)))
    def check(case):
        check_model_gradients(case.model, case.loss, case.x, case.y)
        CASES[f"{kind} x {loss_name}"] += 1

    check()


# -- a full-batch fit step is the tutorial's hand-written step -----------------

STRUCTURES = {
    # name: (make model, loss, features (0: x of shape [N]), task)
    "tutorial": (lambda: gf.LinearModel(weight_init=5.0), gf.L2(), 0, "regression"),
    "linear-2d": (lambda: gf.LinearModel(2), gf.L2(), 3, "regression"),
    "mlp-huber": (lambda: gf.MLP((4,), activation="tanh", seed=0), gf.Huber(), 2, "regression"),
    "mlp-bce": (
        lambda: gf.MLP((3,), activation="relu", seed=0),
        gf.BinaryCrossentropy(from_logits=True),
        2,
        "binary",
    ),
    "mlp-scce": (
        lambda: gf.MLP((4,), activation="softplus", units=3, seed=0),
        gf.SparseCategoricalCrossentropy(from_logits=True),
        2,
        "categorical",
    ),
}


@functools.cache
def _trainer_and_twin(name: str) -> tuple[gf.Trainer, gf.Model]:
    """One Trainer per structure, shared by all examples: its step is compiled once."""
    make, loss, features, _ = STRUCTURES[name]
    shape = (None,) if features == 0 else (None, features)
    model, twin = make(), make()
    model.maybe_build(shape)
    twin.maybe_build(shape)
    return gf.Trainer(model, loss, gf.SGD(0.1)), twin


@st.composite
def _fit_data(draw, name):
    _, _, features, task = STRUCTURES[name]
    trainer, _ = _trainer_and_twin(name)
    n = draw(st.integers(1, 8))
    x = draw(gfst.finite_arrays((n,) if features == 0 else (n, features), max_magnitude=3.0))
    if task == "regression":
        per_example = tuple(trainer.model(x).shape[1:])
        y = draw(gfst.finite_arrays((n, *per_example), max_magnitude=3.0))
    elif task == "binary":
        y = draw(hnp.arrays(np.float32, (n,), elements=st.sampled_from([0.0, 1.0])))
    else:
        y = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, 2)))
    values = [
        draw(gfst.finite_arrays(tuple(v.shape), max_magnitude=1.0))
        for v in trainer.model.trainable_variables
    ]
    rate = draw(st.floats(1e-3, 0.3))
    epochs = draw(st.integers(1, 3))
    return x, y, values, rate, epochs


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_a_full_batch_fit_step_equals_a_hand_written_gradient_tape_step(name):
    trainer, twin = _trainer_and_twin(name)
    loss = trainer.loss

    @settings(max_examples=_examples(10))
    @given(_fit_data(name))
    def check(data):
        x, y, values, rate, epochs = data
        for model in (trainer.model, twin):
            for var, value in zip(model.trainable_variables, values, strict=True):
                var.assign(value)
        trainer.update_rule.learning_rate = rate
        history = trainer.fit(x, y, epochs=epochs, shuffle=False)

        hand_losses = []
        for _ in range(epochs):  # the TF2 tutorial's loop
            with tf.GradientTape() as tape:
                current = loss(y, twin(x))
            grads = tape.gradient(current, twin.trainable_variables)
            for var, grad in zip(twin.trainable_variables, grads, strict=True):
                var.assign_sub(rate * grad)
            hand_losses.append(float(current))

        for mine, theirs in zip(
            trainer.model.trainable_variables, twin.trainable_variables, strict=True
        ):
            np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(history.history["loss"], hand_losses, rtol=1e-5, atol=1e-6)

    check()
    # New data, values and learning rates every example, and one trace in all.
    assert trainer.train_function.experimental_get_tracing_count() == 1


# -- gradients of a mean over examples -----------------------------------------


def _gradient(case, index):
    with tf.GradientTape() as tape:
        value = case.loss(tf.gather(case.y, index), case.model(tf.gather(case.x, index)))
    return [g.numpy() for g in tape.gradient(value, case.model.trainable_variables)]


_FLOAT64_CASES = gfst.gradient_check_cases(dtype=tf.float64, max_examples=8)


@settings(max_examples=_examples(30))
@given(_FLOAT64_CASES, st.data())
def test_the_full_batch_gradient_is_invariant_to_permuting_the_examples(case, data):
    n = case.x.shape[0]
    order = np.array(data.draw(st.permutations(range(n))), np.int32)
    expected = _gradient(case, np.arange(n))
    for got, want in zip(_gradient(case, order), expected, strict=True):
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * scale)


@settings(max_examples=_examples(30))
@given(_FLOAT64_CASES, st.data())
def test_the_mean_gradient_is_the_size_weighted_mean_over_any_split(case, data):
    n = case.x.shape[0]
    order = np.array(data.draw(st.permutations(range(n))), np.int32)
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=n - 1)) if n > 1 else [])
    parts = np.split(order, cuts)
    expected = _gradient(case, np.arange(n))
    weighted = [np.zeros_like(g) for g in expected]
    for part in parts:
        for total, g in zip(weighted, _gradient(case, part), strict=True):
            total += len(part) / n * g
    for got, want in zip(weighted, expected, strict=True):
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * scale)
