"""The contract every update rule must pass, as a base class of tests.

Subclass :class:`UpdateRuleContract` in a test module, name the subclass
``Test...`` and implement :meth:`~UpdateRuleContract.make_rule`; pytest then
runs every check below against your rule::

    from gradfit.testing import UpdateRuleContract

    class TestSignSGD(UpdateRuleContract):
        def make_rule(self):
            return SignSGD(0.01)

The checks (one test method each):

* ``None`` gradients are skipped (the same as leaving the pair out), and all
  ``None`` raises ``ValueError``;
* a length mismatch raises ``ValueError``, a dtype mismatch ``TypeError``,
  and neither changes anything;
* variables keep their dtypes and shapes, for every dtype in ``dtypes``;
* dense and ``tf.IndexedSlices`` gradients (with repeated rows) give the same
  updates;
* eager and ``tf.function`` steps give identical results, XLA steps the
  same to ``xla_rtol`` (fused multiply-adds round differently on CPU), and
  each compiled step traces once, even when the learning rate changes;
* a checkpoint round trip restores all state: a restored rule continues
  exactly as the original;
* the rule descends on a convex quadratic for a small learning rate.

The base class is named so that pytest does not collect it; it needs
neither pytest nor hypothesis.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf


@contextlib.contextmanager
def _raises(error: type[BaseException], what: str) -> Iterator[None]:
    try:
        yield
    except error:
        return
    except Exception as other:
        raise AssertionError(
            f"{what} should raise {error.__name__}; it raised {type(other).__name__}: {other}"
        ) from other
    raise AssertionError(f"{what} should raise {error.__name__}; it raised nothing.")


def _values(variables: Sequence[tf.Variable]) -> list[np.ndarray]:
    return [var.numpy().copy() for var in variables]


def _assert_unchanged(
    variables: Sequence[tf.Variable], before: Sequence[np.ndarray], what: str
) -> None:
    for var, old in zip(variables, before, strict=True):
        np.testing.assert_array_equal(
            var.numpy(), old, err_msg=f"{what} changed variable {var.name!r}"
        )


def _set_learning_rate(rule: Any, value: float) -> bool:
    """Sets a constant learning rate; ``False`` where the rule follows a schedule."""
    try:
        rule.learning_rate = value
    except TypeError:
        return False
    return True


class UpdateRuleContract:
    """Checks that every gradfit update rule passes; subclass it as ``Test<YourRule>``.

    Override :meth:`make_rule`; adjust the class attributes where your rule
    needs it.

    Attributes:
        shapes: Shapes of the variables the checks update.
        dtypes: Variable dtypes the rule must support.
        steps: Updates made by each comparison.
        jit_compile: Whether the rule must run under XLA.
        xla_rtol: Relative tolerance between eager and XLA results.
        xla_atol: Absolute tolerance between eager and XLA results.
        sparse_rtol: Relative tolerance between dense and IndexedSlices updates.
        descent_learning_rate: The small learning rate set for the descent
            check (``None``: keep the rule's own; rules following a schedule
            keep theirs anyway).
        descent_steps: Updates made on the quadratic.
    """

    shapes: ClassVar[Sequence[tuple[int, ...]]] = ((), (3,), (2, 4))
    dtypes: ClassVar[Sequence[tf.DType]] = (tf.float32, tf.float64)
    steps: ClassVar[int] = 4
    jit_compile: ClassVar[bool] = True
    xla_rtol: ClassVar[float] = 1e-6
    xla_atol: ClassVar[float] = 1e-6
    sparse_rtol: ClassVar[float] = 1e-6
    descent_learning_rate: ClassVar[float | None] = 1e-3
    descent_steps: ClassVar[int] = 20

    def make_rule(self) -> Any:
        """Returns a new instance of the rule under test (called once per rule needed)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement make_rule() to return a new update rule."
        )

    # -- helpers -----------------------------------------------------------

    def make_variables(self, dtype: tf.DType = tf.float32, seed: int = 0) -> list[tf.Variable]:
        """Returns variables of ``shapes`` with random values."""
        rng = np.random.default_rng(seed)
        return [
            tf.Variable(rng.standard_normal(shape).astype(dtype.as_numpy_dtype), name=f"v{i}")
            for i, shape in enumerate(self.shapes)
        ]

    def make_gradients(
        self, variables: Sequence[tf.Variable], steps: int, seed: int = 1
    ) -> list[list[tf.Tensor]]:
        """Returns ``steps`` lists of random gradients for ``variables``."""
        rng = np.random.default_rng(seed)
        return [
            [
                tf.constant(rng.standard_normal(var.shape).astype(var.dtype.as_numpy_dtype))
                for var in variables
            ]
            for _ in range(steps)
        ]

    # -- the contract --------------------------------------------------------

    def test_none_gradients_are_skipped(self) -> None:
        """A ``None`` gradient leaves its variable alone: the same as leaving the pair out."""
        first = self.make_variables()
        second = [tf.Variable(var) for var in first]
        grads = self.make_gradients(first, self.steps)
        with_none, without = self.make_rule(), self.make_rule()
        with_none.build(first)  # as the Trainer does: state for every variable, then apply
        without.build(second[1:])
        before = _values(first)
        for step in grads:
            with_none.apply([None, *step[1:]], first)
            without.apply(step[1:], second[1:])
        _assert_unchanged(first[:1], before[:1], "a None gradient")
        for mine, theirs in zip(first[1:], second[1:], strict=True):
            np.testing.assert_array_equal(
                mine.numpy(),
                theirs.numpy(),
                err_msg="skipping a None gradient must equal leaving its pair out",
            )
        assert int(with_none.iterations) == self.steps, "`iterations` must count every apply"

    def test_all_none_gradients_raise(self) -> None:
        """Only ``None`` gradients raise ``ValueError`` and change nothing."""
        rule, variables = self.make_rule(), self.make_variables()
        before = _values(variables)
        with _raises(ValueError, "apply() with only None gradients"):
            rule.apply([None] * len(variables), variables)
        _assert_unchanged(variables, before, "a rejected apply()")
        assert int(rule.iterations) == 0, "a rejected apply() must not count"

    def test_length_mismatch_raises(self) -> None:
        """Fewer gradients than variables raise ``ValueError`` and change nothing."""
        rule, variables = self.make_rule(), self.make_variables()
        grads = self.make_gradients(variables, 1)[0]
        before = _values(variables)
        with _raises(ValueError, "apply() with fewer gradients than variables"):
            rule.apply(grads[:-1], variables)
        _assert_unchanged(variables, before, "a rejected apply()")
        assert int(rule.iterations) == 0, "a rejected apply() must not count"

    def test_dtype_mismatch_raises(self) -> None:
        """float64 gradients for float32 variables raise ``TypeError``, changing nothing."""
        rule, variables = self.make_rule(), self.make_variables(tf.float32)
        grads = [tf.cast(g, tf.float64) for g in self.make_gradients(variables, 1)[0]]
        before = _values(variables)
        with _raises(TypeError, "apply() with float64 gradients for float32 variables"):
            rule.apply(grads, variables)
        _assert_unchanged(variables, before, "a rejected apply()")
        assert int(rule.iterations) == 0, "a rejected apply() must not count"

    def test_dtypes_and_shapes_are_kept(self) -> None:
        """Every dtype in ``dtypes`` works; variables keep their dtypes and shapes."""
        for dtype in self.dtypes:
            rule, variables = self.make_rule(), self.make_variables(dtype)
            try:
                for step in self.make_gradients(variables, self.steps):
                    rule.apply(step, variables)
            except Exception as err:
                raise AssertionError(
                    f"the rule failed on {dtype.name} variables: {type(err).__name__}: {err}"
                ) from err
            for var, shape in zip(variables, self.shapes, strict=True):
                assert var.dtype == dtype, f"{var.name} became {var.dtype.name}, not {dtype.name}"
                assert tuple(var.shape) == tuple(shape), f"{var.name} changed shape to {var.shape}"
                assert np.all(np.isfinite(var.numpy())), f"{var.name} is not finite: {var.numpy()}"

    def test_dense_and_indexed_slices_agree(self) -> None:
        """``tf.IndexedSlices`` gradients (with a repeated row) update as dense ones."""
        rng = np.random.default_rng(2)
        table = rng.standard_normal((5, 3)).astype(np.float32)
        dense_var, sparse_var = tf.Variable(table), tf.Variable(table)
        dense_rule, sparse_rule = self.make_rule(), self.make_rule()
        indices = tf.constant([0, 2, 2, 4])  # row 2 twice: its rows must be summed
        for _ in range(self.steps):
            rows = tf.constant(rng.standard_normal((4, 3)).astype(np.float32))
            sparse = tf.IndexedSlices(rows, indices, tf.constant([5, 3]))
            dense_rule.apply([tf.convert_to_tensor(sparse)], [dense_var])
            sparse_rule.apply([sparse], [sparse_var])
        np.testing.assert_allclose(
            sparse_var.numpy(),
            dense_var.numpy(),
            rtol=self.sparse_rtol,
            atol=self.sparse_rtol,
            err_msg="IndexedSlices gradients must update as their dense equivalent",
        )

    def test_eager_function_and_xla_agree(self) -> None:
        """Eager, ``tf.function`` and XLA steps agree; compiled steps trace once."""
        modes = ["eager", "function"] + (["xla"] if self.jit_compile else [])
        results, traces = {}, {}
        for mode in modes:
            rule, variables = self.make_rule(), self.make_variables()
            rule.build(variables)  # state is created eagerly, before tracing, as the Trainer does

            def step(grads: list[tf.Tensor], rule: Any = rule, variables: Any = variables) -> None:
                rule.apply(grads, variables)

            fn: Any = step if mode == "eager" else tf.function(step, jit_compile=mode == "xla")
            grads = self.make_gradients(variables, self.steps)
            for i, g in enumerate(grads):
                if i == self.steps // 2:  # a new rate must not retrace the step
                    rate = rule.current_learning_rate()
                    _set_learning_rate(rule, float(rate) / 2)
                fn(g)
            results[mode] = (_values(variables), int(rule.iterations))
            if mode != "eager":
                traces[mode] = fn.experimental_get_tracing_count()
        eager, eager_iterations = results["eager"]
        for mode in modes[1:]:
            values, iterations = results[mode]
            assert iterations == eager_iterations == self.steps, f"{mode}: iterations {iterations}"
            assert traces[mode] == 1, f"the {mode} step traced {traces[mode]} times, not once"
            for mine, theirs in zip(values, eager, strict=True):
                if mode == "function":
                    np.testing.assert_array_equal(mine, theirs, err_msg="tf.function != eager")
                else:
                    np.testing.assert_allclose(
                        mine, theirs, rtol=self.xla_rtol, atol=self.xla_atol, err_msg="XLA != eager"
                    )

    def test_checkpoint_round_trip(self) -> None:
        """A restored rule has the original's state and continues exactly as it does."""
        original, variables = self.make_rule(), self.make_variables()
        grads = self.make_gradients(variables, 2 * self.steps)
        for step in grads[: self.steps]:
            original.apply(step, variables)
        with tempfile.TemporaryDirectory() as directory:
            path = tf.train.Checkpoint(rule=original, variables=variables).save(
                os.path.join(directory, "ckpt")
            )
            restored = self.make_rule()
            restored_variables = [
                tf.Variable(tf.zeros_like(var), name=var.name.split(":")[0]) for var in variables
            ]
            restored.build(restored_variables)
            checkpoint = tf.train.Checkpoint(rule=restored, variables=restored_variables)
            checkpoint.restore(path).assert_consumed()
        saved, loaded = list(original.variables), list(restored.variables)
        assert len(saved) == len(loaded), (
            f"the restored rule has {len(loaded)} state variables, the original {len(saved)}"
        )
        for mine, theirs in zip(loaded, saved, strict=True):
            np.testing.assert_array_equal(
                mine.numpy(), theirs.numpy(), err_msg=f"state {theirs.name!r} was not restored"
            )
        for step in grads[self.steps :]:
            original.apply(step, variables)
            restored.apply(step, restored_variables)
        for mine, theirs in zip(restored_variables, variables, strict=True):
            np.testing.assert_array_equal(
                mine.numpy(), theirs.numpy(), err_msg="a restored rule must continue exactly"
            )

    def test_descends_on_a_convex_quadratic(self) -> None:
        """With a small learning rate the rule never raises a convex quadratic."""
        rng = np.random.default_rng(3)
        rule = self.make_rule()
        if self.descent_learning_rate is not None:
            _set_learning_rate(rule, self.descent_learning_rate)
        shapes = [(3,), (2, 2)]
        curvature = [rng.uniform(0.5, 2.0, s).astype(np.float32) for s in shapes]
        center = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        offset = [
            (rng.uniform(0.5, 1.5, s) * rng.choice([-1, 1], s)).astype(np.float32) for s in shapes
        ]
        variables = [tf.Variable(c + o) for c, o in zip(center, offset, strict=True)]

        def loss() -> float:
            return sum(
                0.5 * float(np.sum(a * (var.numpy().astype(np.float64) - c) ** 2))
                for a, c, var in zip(curvature, center, variables, strict=True)
            )

        losses = [loss()]
        for _ in range(self.descent_steps):
            grads = [
                tf.constant(a * (var.numpy() - c))
                for a, c, var in zip(curvature, center, variables, strict=True)
            ]
            rule.apply(grads, variables)
            losses.append(loss())
        rises = [i for i in range(len(losses) - 1) if losses[i + 1] > losses[i] * (1 + 1e-6)]
        assert not rises, f"the loss rose at steps {rises}: {losses}"
        assert losses[-1] < losses[0], f"the loss did not decrease: {losses}"
