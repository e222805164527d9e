"""A Task of one's own: two models and two rules trained by ``gf.Trainer(task)``.

The task is a tiny GAN on 1-D data, two linear models (each XLA compile of
an MLP's step costs a second more): a generator (SGD with momentum) and a
discriminator (Adam), noise drawn from a ``tf.random.Generator`` the task
owns. Its fits are compared with the same step run by hand in a plain
``tf.function`` loop over the same batches, with a reference run for a
non-finite step, and with an uninterrupted run for a crash and resume.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.callbacks import BackupAndRestore
from tests.callbacks.test_backup import CrashAt, CrashAtStep, CrashError

N, B, EPOCHS, SEED = 37, 8, 3, 11  # 4 batches of 8 and a ragged 5: 5 steps an epoch
STEPS = 5
PENALTY = 1e-3  # on the real logits' squares: a huge input makes d_loss infinite
X = np.random.default_rng(0).normal(1.0, 0.3, size=(N, 1)).astype(np.float32)
X_VAL = np.random.default_rng(1).normal(1.0, 0.3, size=(13, 1)).astype(np.float32)


class GANWithoutTestStep(gf.Task):
    """A generator and a discriminator, each with its own rule; noise from its own generator."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.gen = gf.LinearModel(seed=seed + 1)  # noise -> a 1-D Gaussian
        self.disc = gf.LinearModel(seed=seed + 2)  # logistic regression on the sample
        self.d_rule = gf.Adam(0.05)
        self.g_rule = gf.SGD(0.05, momentum=0.9)
        self.noise = tf.random.Generator.from_seed(seed + 3)

    def build(self, batch):
        self.gen.maybe_build([None, 1])
        self.disc.maybe_build(batch.shape)
        self.d_rule.build(self.disc.trainable_variables)
        self.g_rule.build(self.gen.trainable_variables)

    def train_step(self, batch):
        n = tf.shape(batch)[0]
        fake = self.gen(self.noise.normal([n, 1]))
        with tf.GradientTape() as tape:
            real_logits = self.disc(batch)
            d_loss = (
                tf.reduce_mean(tf.nn.softplus(-real_logits))
                + tf.reduce_mean(tf.nn.softplus(self.disc(fake)))
                + PENALTY * tf.reduce_mean(tf.square(real_logits))
            )
        d_vars = self.disc.trainable_variables
        self.d_rule.apply(tape.gradient(d_loss, d_vars), d_vars)
        with tf.GradientTape() as tape:
            g_loss = tf.reduce_mean(tf.nn.softplus(-self.disc(self.gen(self.noise.normal([n, 1])))))
        g_vars = self.gen.trainable_variables
        self.g_rule.apply(tape.gradient(g_loss, g_vars), g_vars)
        return {"d_loss": d_loss, "g_loss": g_loss}


class TinyGAN(GANWithoutTestStep):
    def test_step(self, batch):
        logits = self.disc(batch)
        return {"d_real": tf.reduce_mean(tf.nn.softplus(-logits)), "logit": tf.reduce_mean(logits)}


def state(task: TinyGAN) -> list[np.ndarray]:
    """Every variable of the task (models, both rules' slots and iterations), then its noise."""
    return [v.numpy() for v in task.variables] + [task.noise.state.numpy()]


def variables(task: TinyGAN) -> list[np.ndarray]:
    """``task.variables``: both models' variables, both rules' slots and iterations."""
    return [v.numpy() for v in task.variables]


@functools.cache
def initial_state() -> tuple[np.ndarray, ...]:
    """What ``state`` holds for a fresh ``TinyGAN()``, built as the Trainer builds it."""
    task = TinyGAN()
    task.build(tf.zeros([2, 1]))
    return tuple(state(task))


def restart(task: TinyGAN) -> TinyGAN:
    """Puts ``task`` back in the state of a fresh ``TinyGAN()``; its trainer keeps its traces."""
    task.build(tf.zeros([2, 1]))  # (idempotent)
    values = initial_state()
    for var, value in zip([*task.variables, task.noise.state], values, strict=True):
        var.assign(value)
    return task


def assert_bitwise(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for i, (left, right) in enumerate(zip(a, b, strict=True)):
        assert left.dtype == right.dtype and left.shape == right.shape, i
        assert left.tobytes() == right.tobytes(), f"entry {i}: {left} != {right}"


@functools.cache
def permutations() -> list[np.ndarray]:
    """The trainer's shuffled orders for ``fit(seed=SEED)``, drawn as the Trainer draws them."""
    algorithm = gf.Trainer(TinyGAN()).generator.algorithm
    generator = tf.random.Generator.from_seed(SEED, alg=algorithm)
    return [
        tf.random.experimental.stateless_shuffle(
            tf.range(N), seed=generator.make_seeds(1)[:, 0]
        ).numpy()
        for _ in range(EPOCHS)
    ]


def weighted_means(logs: list[dict[str, float]], sizes: list[int]) -> dict[str, float]:
    weights = np.asarray(sizes, np.float64)
    return {
        name: float(np.sum(np.array([row[name] for row in logs]) * weights) / weights.sum())
        for name in logs[0]
    }


class HandRun(NamedTuple):
    state: list[np.ndarray]
    history: dict[str, list[float]]


def batch_logs(fn, batches: list[np.ndarray]) -> dict[str, float]:
    """``fn`` on each batch; the example-weighted means of what it returns."""
    logs = [{k: float(v.numpy()) for k, v in fn(tf.constant(b)).items()} for b in batches]
    return weighted_means(logs, [len(b) for b in batches])


@functools.cache
def hand_runs(jit: bool) -> dict[bool, HandRun]:
    """The task's step by hand, ordered and shuffled: a plain tf.function loop, means by hand.

    Without ``jit`` the History also gets ``test_step``'s means on ``X_VAL``
    after every epoch. With ``jit`` the tf.function is compiled with XLA:
    XLA's kernels for TensorFlow's random ops draw other numbers from the
    same generator state (which advances alike), so only an XLA step draws
    the noise an XLA Trainer draws.
    """
    task = restart(TinyGAN())
    step = tf.function(task.train_step, jit_compile=jit)
    test = tf.function(task.test_step)
    val_batches = [X_VAL[i : i + B] for i in range(0, len(X_VAL), B)]
    runs = {}
    for shuffle in (False, True):
        restart(task)  # one task for both orders: the step is traced once
        history: dict[str, list[float]] = {}
        for epoch in range(EPOCHS):
            order = permutations()[epoch] if shuffle else np.arange(N)
            epoch_logs = batch_logs(step, [X[order[i : i + B]] for i in range(0, N, B)])
            if not jit:
                means = batch_logs(test, val_batches)
                epoch_logs.update({f"val_{name}": value for name, value in means.items()})
            for name, value in epoch_logs.items():
                history.setdefault(name, []).append(value)
        runs[shuffle] = HandRun(state(task), history)
    return runs


class TrainerRun(NamedTuple):
    trainer: gf.Trainer
    state: list[np.ndarray]
    history: dict[str, list[float]]
    epoch: list[int]
    iterations: tuple[int, int]  # the discriminator's rule's, the generator's


@functools.cache
def trainer_run(shuffle: bool, jit: bool) -> TrainerRun:
    """``gf.Trainer(TinyGAN()).fit(X, ...)``; later tests reuse its trainer (and its traces)."""
    trainer = gf.Trainer(TinyGAN(), jit_compile=jit)
    history = trainer.fit(
        X, epochs=EPOCHS, batch_size=B, shuffle=shuffle, seed=SEED if shuffle else None
    )
    task = trainer.task
    iterations = int(task.d_rule.iterations), int(task.g_rule.iterations)
    return TrainerRun(trainer, state(task), dict(history.history), list(history.epoch), iterations)


# -- a. the Trainer runs the task's step as a plain loop would ---------------------


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_two_model_task_equals_its_step_in_a_plain_tf_function_loop(shuffle, jit):
    run, hand = trainer_run(shuffle, jit), hand_runs(jit)[shuffle]
    # Every variable of both models, both rules' slots and iterations, the noise's state.
    assert len(run.state) == len(hand.state) == len(initial_state())
    for got, expected in zip(run.state, hand.state, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert run.iterations == (EPOCHS * STEPS, EPOCHS * STEPS)
    # The History: epoch means of both losses, weighted by batch size (the last batch is 5).
    assert run.epoch == list(range(EPOCHS))
    assert set(run.history) == {"d_loss", "g_loss"}
    for name in ("d_loss", "g_loss"):
        np.testing.assert_allclose(run.history[name], hand.history[name], rtol=1e-6)


# -- b. a non-finite step ------------------------------------------------------------


def test_a_nonfinite_step_raises_with_every_task_variable_as_after_the_last_finite_step():
    bad_step = 2  # the shuffled epoch 0's batch 2 holds the huge example: d_loss is inf
    x = X.copy()
    x[permutations()[0][bad_step * B]] = 1e30
    # The loop runs the epoch's 4 full batches in one call, then rolls back and replays 2.
    trainer = trainer_run(True, False).trainer  # on_nonfinite="raise", the default
    task = restart(trainer.task)
    with pytest.raises(gf.NonFiniteError) as raised:
        trainer.fit(x, epochs=EPOCHS, batch_size=B, seed=SEED)
    assert (raised.value.epoch, raised.value.step) == (0, bad_step)
    after = variables(task), task.noise.state.numpy()

    # The reference stops after the last finite step: its first call runs steps 0 and 1.
    restart(task)
    trainer.steps_per_execution = bad_step
    try:
        with pytest.raises(CrashError):
            trainer.fit(
                x, epochs=EPOCHS, batch_size=B, seed=SEED, callbacks=[CrashAtStep(bad_step)]
            )
    finally:
        trainer.steps_per_execution = None
    assert int(task.d_rule.iterations) == int(task.g_rule.iterations) == bad_step
    # The noise the task draws is its state too: after the error it is where it was (else
    # the finite steps replayed after the rollback drew other noise than they first did).
    assert_bitwise([after[1]], [task.noise.state.numpy()])
    assert_bitwise(after[0], variables(task))


def passes(bad: tuple[int, int] | None) -> tf.data.Dataset:
    """X in batches of B, in order; with ``bad=(p, s)``, pass ``p``'s batch ``s`` holds 1e30."""
    count = itertools.count()

    def batches():
        this_pass = next(count)
        for s, start in enumerate(range(0, N, B)):
            batch = X[start : start + B].copy()
            if (this_pass, s) == bad:
                batch[0] = 1e30
            yield batch

    return tf.data.Dataset.from_generator(
        batches, output_signature=tf.TensorSpec([None, 1], tf.float32)
    )


def test_a_nonfinite_step_of_a_dataset_in_a_later_epoch_is_rolled_back_in_the_graph():
    trainer = gf.Trainer(TinyGAN(), jit_compile=False)
    task = restart(trainer.task)
    with pytest.raises(gf.NonFiniteError) as raised:
        trainer.fit(passes((1, 2)), epochs=EPOCHS)
    assert (raised.value.epoch, raised.value.step) == (1, 2)
    after = variables(task), task.noise.state.numpy()

    # The reference stops after epoch 1's step 1, the run's 7th step (chunks of 2 steps).
    restart(task)
    trainer.steps_per_execution = 2
    with pytest.raises(CrashError):
        trainer.fit(passes(None), epochs=EPOCHS, callbacks=[CrashAtStep(STEPS + 2)])
    assert int(task.d_rule.iterations) == STEPS + 2
    assert_bitwise(after[0], variables(task))
    assert_bitwise([after[1]], [task.noise.state.numpy()])  # the noise is rolled back too


# -- c. crash and resume -------------------------------------------------------------


@pytest.mark.parametrize(
    ("save_every", "crash", "restored"),
    [
        ("epoch", lambda: CrashAt(1), (0, 0)),  # epoch 1 crashed before its save
        (3, lambda: CrashAtStep(10), (0, 4)),  # saves after steps 3, 5 (epoch 0's end), 6, 9
    ],
    ids=["epoch", "every-3-steps"],
)
def test_a_crashed_fit_of_the_task_resumes_bitwise(tmp_path, save_every, crash, restored):
    reference = trainer_run(True, False)
    trainer = reference.trainer
    restart(trainer.task)
    directory = tmp_path / "backup"
    with pytest.raises(CrashError):
        trainer.fit(
            X,
            epochs=EPOCHS,
            batch_size=B,
            seed=SEED,
            callbacks=[BackupAndRestore(directory, save_every=save_every), crash()],
        )
    assert (directory / "checkpoint").exists()

    # A fresh trainer and task, with other initial values and noise, and no seed: the
    # backup supplies all of it.
    resumed = gf.Trainer(TinyGAN(seed=5), jit_compile=False)
    backup = BackupAndRestore(directory, save_every=save_every)
    history = resumed.fit(X, epochs=EPOCHS, batch_size=B, callbacks=[backup])
    assert (backup.restored_epoch, backup.restored_step) == restored
    assert history.epoch == reference.epoch
    assert history.history == reference.history  # floats compared exactly
    assert_bitwise(state(resumed.task), reference.state)
    assert not directory.exists()  # a finished run removes its backup


def test_trainer_save_and_restore_of_the_task_continue_bitwise(tmp_path):
    reference = trainer_run(True, False)  # EPOCHS epochs, seeded, in one fit
    trainer = gf.Trainer(restart(TinyGAN()), jit_compile=False)
    trainer.fit(X, epochs=1, batch_size=B, seed=SEED)
    trainer.save(tmp_path / "run")
    # A fresh trainer and task made the same way (built, other values) restore everything:
    # both models, both rules' slots and iterations, the task's noise and the shuffling.
    fresh = gf.Trainer(TinyGAN(seed=5), jit_compile=False)
    fresh.task.build(tf.zeros([2, 1]))
    fresh.restore(tmp_path / "run")
    assert_bitwise(state(fresh.task), state(trainer.task))
    fresh.fit(X, epochs=EPOCHS - 1, batch_size=B)
    assert_bitwise(state(fresh.task), reference.state)


# -- d. validation through test_step -------------------------------------------------


def test_validation_data_logs_the_task_test_step_as_val_logs():
    trainer = trainer_run(False, False).trainer
    restart(trainer.task)
    history = trainer.fit(X, epochs=EPOCHS, batch_size=B, shuffle=False, validation_data=X_VAL)
    hand = hand_runs(False)[False]
    assert set(history.history) == {"d_loss", "g_loss", "val_d_real", "val_logit"}
    for name, expected in hand.history.items():
        np.testing.assert_allclose(history.history[name], expected, rtol=1e-6, atol=1e-7)


def test_validation_data_without_a_test_step_is_refused_before_training():
    with pytest.raises(TypeError, match="test_step"):
        gf.Trainer(GANWithoutTestStep()).fit(
            X, epochs=1, batch_size=B, validation_data=(X_VAL, None)
        )


class _TrainingFlag(gf.Model):
    """Adds 10 to its output in training: the flag shows in the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(1.0)

    def __call__(self, x, training=False):  # type: ignore[no-untyped-def]
        return x * self.w + (10.0 if training else 0.0)


def test_a_gradfit_model_taking_training_gets_true_in_fit_and_false_elsewhere() -> None:
    x = np.zeros(4, np.float32)
    trainer = gf.Trainer(_TrainingFlag(), gf.L2(), gf.SGD(0.0))
    assert trainer.fit(x, x, epochs=1).history["loss"] == [100.0]
    assert trainer.evaluate(x, x)["loss"] == 0.0
    np.testing.assert_array_equal(trainer.predict(x), x)
