"""Shared test helpers: random problems, compiled runs, and the table of every rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

import gradfit as gf


def random_shapes(rng: np.random.Generator) -> list[tuple[int, ...]]:
    """A scalar, a vector and a matrix of random small sizes."""
    return [(), (int(rng.integers(1, 6)),), (int(rng.integers(1, 4)), int(rng.integers(1, 5)))]


def random_problem(
    seed: int, steps: int, shapes: Sequence[tuple[int, ...]] | None = None
) -> tuple[list[np.ndarray], list[tf.Tensor]]:
    """Initial values and ``steps`` random gradients per variable, stacked on axis 0."""
    rng = np.random.default_rng(seed)
    shapes = random_shapes(rng) if shapes is None else shapes
    init = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    grads = [
        tf.constant(rng.standard_normal((steps, *shape)).astype(np.float32)) for shape in shapes
    ]
    return init, grads


def variables(arrays: Sequence[np.ndarray]) -> list[tf.Variable]:
    return [tf.Variable(x) for x in arrays]


def run_side_by_side(
    mine: gf.UpdateRule,
    theirs: keras.optimizers.Optimizer,
    init: Sequence[np.ndarray],
    grads: Sequence[tf.Tensor],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Applies every step of ``grads`` with both rules in one compiled loop; returns both."""
    mine_vars, their_vars = variables(init), variables(init)
    mine.build(mine_vars)
    theirs.build(their_vars)
    steps = int(grads[0].shape[0])

    @tf.function
    def loop() -> None:
        for i in tf.range(steps):
            step = [g[i] for g in grads]
            mine.apply(step, mine_vars)
            theirs.apply(step, their_vars)

    loop()
    assert int(mine.iterations) == steps
    return [v.numpy() for v in mine_vars], [v.numpy() for v in their_vars]


def assert_matches_keras(
    mine: gf.UpdateRule, theirs: keras.optimizers.Optimizer, seed: int, steps: int = 100
) -> None:
    """``mine`` and ``theirs`` agree to rtol 1e-5 over ``steps`` random float32 steps."""
    init, grads = random_problem(seed, steps)
    ours, keras_values = run_side_by_side(mine, theirs, init, grads)
    for m, k, start in zip(ours, keras_values, init, strict=True):
        np.testing.assert_allclose(m, k, rtol=1e-5, atol=1e-6)
        assert not np.allclose(m, start)  # the variables really moved


# -- every rule, for the table-driven tests ---------------------------------------------------

RuleFactory = Callable[[float], gf.UpdateRule]

# name -> factory(learning_rate) -> a fresh rule with non-default hyperparameters,
# so that every slot the rule can have is exercised.
RULES: dict[str, RuleFactory] = {
    "sgd": lambda lr: gf.SGD(lr),
    "sgd-nesterov-decay": lambda lr: gf.SGD(lr, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda lr: gf.Adam(lr),
    "adam-amsgrad": lambda lr: gf.Adam(lr, beta_1=0.8, amsgrad=True),
    "adamw": lambda lr: gf.AdamW(lr, weight_decay=0.05, amsgrad=True),
    "rmsprop": lambda lr: gf.RMSProp(lr),
    "rmsprop-centered-momentum": lambda lr: gf.RMSProp(lr, momentum=0.5, centered=True),
    "adagrad": lambda lr: gf.Adagrad(lr),
    "lion": lambda lr: gf.Lion(lr, weight_decay=0.1),
    "keras-adam": lambda lr: gf.KerasOptimizer(keras.optimizers.Adam(lr)),
    "chain-clip-adam": lambda lr: gf.chain(
        gf.clip_by_global_norm(1.0), gf.clip_by_value(0.8), gf.Adam(lr)
    ),
    "accumulate-adam": lambda lr: gf.accumulate(2, gf.Adam(lr)),
}

HAND_WRITTEN = [
    "sgd",
    "sgd-nesterov-decay",
    "adam",
    "adam-amsgrad",
    "adamw",
    "rmsprop",
    "rmsprop-centered-momentum",
    "adagrad",
    "lion",
]


def assert_bad_hyperparameter(
    make: Callable[..., object], kwargs: dict[str, object], error: type[Exception], echo: str
) -> None:
    """``make(**kwargs)`` raises ``error`` naming the argument in backticks and echoing it."""
    (name,) = kwargs
    try:
        make(**kwargs)
    except error as err:
        message = str(err)
    else:
        raise AssertionError(f"{make.__name__}(**{kwargs}) did not raise {error.__name__}")
    assert f"`{name}`" in message, message
    assert f"Received: {echo}" in message, message
