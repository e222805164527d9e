"""Bad arguments and inputs are rejected before any variable changes (DESIGN.md, "Errors").

Every rejection must be a ``ValueError`` or ``TypeError`` (never a raw
``tf.errors.OpError``) whose message names the argument in backticks and
echoes what was received, and it must leave every model variable and the
update rule's ``iterations`` exactly as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import gradfit as gf
from gradfit.models import variables_by_path

# -- data ------------------------------------------------------------------

X2 = np.arange(8, dtype=np.float32).reshape(4, 2) / 8.0  # d = 2
X1 = np.linspace(-1.0, 1.0, 4).astype(np.float32)  # one feature per example
Y = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def _with(array: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    out = np.array(array, dtype=np.float64)
    out[index] = value
    return out


def _make_trainer(x: np.ndarray) -> gf.Trainer:
    trainer = gf.Trainer(gf.LinearModel(weight_init=0.5, bias_init=0.25), gf.L2(), gf.SGD(0.1))
    trainer.fit(x, Y, epochs=1)
    return trainer


@pytest.fixture(scope="module")
def trainers() -> dict[str, gf.Trainer]:
    """One built trainer per feature layout, shared by every case (state is restored)."""
    return {"2d": _make_trainer(X2), "1d": _make_trainer(X1)}


# -- state snapshots -------------------------------------------------------


def _state(trainer: gf.Trainer) -> dict[str, tuple[tf.Variable, np.ndarray]]:
    found = {f"model/{k}": v for k, v in variables_by_path(trainer.model).items()}
    found.update({f"rule/{k}": v for k, v in variables_by_path(trainer.update_rule).items()})
    return {k: (v, np.array(v.numpy(), copy=True)) for k, v in found.items()}


@dataclass
class Unchanged:
    """Asserts on exit that a trainer's variables and ``iterations`` did not change.

    The variables are restored afterwards either way, so that a case that
    wrongly trains cannot leak into the next case sharing the trainer.
    """

    trainer: gf.Trainer
    before: dict[str, tuple[tf.Variable, np.ndarray]] = field(init=False)
    iterations: int = field(init=False)

    def __post_init__(self) -> None:
        self.before = _state(self.trainer)
        self.iterations = int(self.trainer.update_rule.iterations.numpy())
        assert self.trainer.model.built and self.before, "the trainer must be built"

    def check(self) -> None:
        after = _state(self.trainer)
        iterations = int(self.trainer.update_rule.iterations.numpy())
        try:
            assert iterations == self.iterations, "`iterations` changed"
            assert after.keys() == self.before.keys(), "variables were added or removed"
            for key, (_, value) in self.before.items():
                np.testing.assert_array_equal(after[key][1], value, err_msg=f"{key} changed")
        finally:
            for variable, value in self.before.values():
                variable.assign(value)


def assert_rejected(
    trainer: gf.Trainer,
    call: Callable[[], Any],
    exc: type[Exception],
    names: tuple[str, ...],
    echoes: tuple[str, ...],
) -> str:
    """Runs ``call`` and checks the rejection; returns the message."""
    guard = Unchanged(trainer)
    try:
        with pytest.raises(exc) as info:
            call()
    finally:
        guard.check()
    error = info.value
    message = str(error)
    assert not isinstance(error, tf.errors.OpError), f"raw TensorFlow error: {message}"
    for name in names:
        assert f"`{name}`" in message, f"`{name}` not named in: {message}"
    for echo in echoes:
        assert echo in message, f"{echo!r} not echoed in: {message}"
    return message


# -- bad x / y / fit arguments ---------------------------------------------


@dataclass
class Case:
    """One bad call: ``method(x, y, **kwargs)`` on the trainer built for ``layout``."""

    id: str
    make: Callable[[], tuple[Any, Any, dict[str, Any]]]
    exc: type[Exception]
    names: tuple[str, ...]
    echoes: tuple[str, ...]
    methods: tuple[str, ...] = ("fit", "evaluate")
    layout: str = "2d"


def _ds(*parts: Any) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else parts[0]).batch(2)


ALL = ("fit", "evaluate", "predict")
FIT = ("fit",)

CASES = [
    # examples / shapes
    Case("x-y-length", lambda: (X2, Y[:3], {}), ValueError, ("x", "y"), ("(4, 2)", "(3,)")),
    Case("x-empty-1d", lambda: (np.zeros((0,)), Y[:0], {}), ValueError, ("x",), ("(0,)",), ALL),
    Case("x-empty-2d", lambda: (np.zeros((0, 2)), Y[:0], {}), ValueError, ("x",), ("(0, 2)",), ALL),
    Case("y-empty", lambda: (X2, np.zeros((0,)), {}), ValueError, ("y",), ("(0,)",)),
    Case("x-scalar", lambda: (3.0, Y, {}), ValueError, ("x",), ("x=3.0",), ALL),
    Case("x-dim-3", lambda: (np.ones((4, 3)), Y, {}), ValueError, ("x",), ("(3,)",), ALL),
    Case("x-rank-3", lambda: (np.ones((4, 2, 1)), Y, {}), ValueError, ("x",), ("(2, 1)",), ALL),
    Case("x-none", lambda: (None, Y, {}), TypeError, ("x",), ("None",), ALL),
    Case("y-none", lambda: (X2, None, {}), TypeError, ("y",), ("None",)),
    Case("y-scalar", lambda: (X2, 2.0, {}), ValueError, ("y",), ("y=2.0",)),
    # values
    Case(
        "x-nan", lambda: (_with(X2, (1, 0), math.nan), Y, {}), ValueError, ("x",), ("(4, 2)",), ALL
    ),
    Case(
        "x-nan-tensor",
        lambda: (tf.constant(_with(X2, (0, 1), math.nan)), Y, {}),
        ValueError,
        ("x",),
        ("(4, 2)",),
        ALL,
    ),
    Case("y-inf", lambda: (X2, _with(Y, (2,), math.inf), {}), ValueError, ("y",), ("(4,)",)),
    Case(
        "y-minus-inf-list",
        lambda: (X2, [1.0, -math.inf, 0.0, 1.0], {}),
        ValueError,
        ("y",),
        ("-inf",),
    ),
    # finite as float64 but inf once cast to the model's float32
    Case(
        "x-overflows-float32",
        lambda: (_with(X2, (3, 1), 1e300), Y, {}),
        ValueError,
        ("x",),
        ("(4, 2)",),
        ALL,
    ),
    Case(
        "y-overflows-float32", lambda: (X2, _with(Y, (0,), 1e39), {}), ValueError, ("y",), ("(4,)",)
    ),
    # kinds of data
    Case(
        "x-list-of-str",
        lambda: (["a", "b", "c", "d"], Y, {}),
        TypeError,
        ("x",),
        ("'a'",),
        ALL,
        "1d",
    ),
    Case(
        "x-array-of-str",
        lambda: (np.array([["a", "b"]] * 4), Y, {}),
        TypeError,
        ("x",),
        ("(4, 2)", "string"),
        ALL,
    ),
    Case(
        "y-array-of-str",
        lambda: (X2, np.array(["1", "2", "3", "4"]), {}),
        TypeError,
        ("y",),
        ("(4,)", "string"),
    ),
    Case("x-str", lambda: ("abcd", Y, {}), TypeError, ("x",), ("'abcd'",), ALL, "1d"),
    Case(
        "x-object",
        lambda: (np.array([[1.0, None]] * 4, dtype=object), Y, {}),
        TypeError,
        ("x",),
        ("(4, 2)", "object"),
        ALL,
    ),
    Case(
        "y-object",
        lambda: (X2, np.array([1, "a", None, 2.0], dtype=object), {}),
        TypeError,
        ("y",),
        ("(4,)", "object"),
    ),
    Case(
        "x-complex",
        lambda: (X2.astype(np.complex64), Y, {}),
        TypeError,
        ("x",),
        ("complex64",),
        ALL,
    ),
    Case(
        "x-ragged-list",
        lambda: ([[1.0, 2.0], [3.0], [4.0, 5.0], [6.0, 7.0]], Y, {}),
        ValueError,
        ("x",),
        ("[[1.0, 2.0], [3.0]",),
        ALL,
    ),
    Case(
        "x-ragged-tensor",
        lambda: (tf.ragged.constant([[1.0, 2.0], [3.0]]), Y[:2], {}),
        TypeError,
        ("x",),
        ("RaggedTensor",),
        ALL,
    ),
    # fit arguments
    *[
        Case(
            f"epochs={value!r}",
            lambda value=value: (X2, Y, {"epochs": value}),
            exc,
            ("epochs",),
            (f"epochs={value!r}",),
            FIT,
        )
        for value, exc in [
            (0, ValueError),
            (-1, ValueError),
            (1.5, TypeError),
            ("3", TypeError),
            (True, TypeError),
            (None, TypeError),
        ]
    ],
    *[
        Case(
            f"batch_size={value!r}",
            lambda value=value: (X2, Y, {"batch_size": value}),
            exc,
            ("batch_size",),
            (f"batch_size={value!r}",),
            ALL,
        )
        for value, exc in [
            (0, ValueError),
            (-2, ValueError),
            (2.5, TypeError),
            ("8", TypeError),
            (False, TypeError),
        ]
    ],
    Case(
        "shuffle='yes'",
        lambda: (X2, Y, {"shuffle": "yes"}),
        TypeError,
        ("shuffle",),
        ("shuffle='yes'",),
        FIT,
    ),
    Case(
        "shuffle=1", lambda: (X2, Y, {"shuffle": 1}), TypeError, ("shuffle",), ("shuffle=1",), FIT
    ),
    Case("seed=-1", lambda: (X2, Y, {"seed": -1}), ValueError, ("seed",), ("seed=-1",), FIT),
    Case("seed=1.5", lambda: (X2, Y, {"seed": 1.5}), TypeError, ("seed",), ("seed=1.5",), FIT),
    Case(
        "callbacks-function",
        lambda: (X2, Y, {"callbacks": lambda logs: None}),
        TypeError,
        ("callbacks",),
        ("<function",),
        FIT,
    ),
    Case(
        "callbacks-list-with-int",
        lambda: (X2, Y, {"callbacks": [gf.History(), 7]}),
        TypeError,
        ("callbacks",),
        ("int", "7"),
        FIT,
    ),
    # validation_data
    Case(
        "val-single-array",
        lambda: (X2, Y, {"validation_data": X2}),
        ValueError,
        ("validation_data",),
        ("validation_data=array(",),
        FIT,
    ),
    Case(
        "val-4-tuple",  # (a 3-tuple is (x, y, sample_weight))
        lambda: (X2, Y, {"validation_data": (X2, Y, Y, Y)}),
        ValueError,
        ("validation_data",),
        ("validation_data=(array(",),
        FIT,
    ),
    Case(
        "val-y-none",
        lambda: (X2, Y, {"validation_data": (X2, None)}),
        TypeError,
        ("validation_data[1]",),
        ("None",),
        FIT,
    ),
    Case(
        "val-x-nan",
        lambda: (X2, Y, {"validation_data": (_with(X2, (2, 1), math.nan), Y)}),
        ValueError,
        ("validation_data[0]",),
        ("(4, 2)",),
        FIT,
    ),
    Case(
        "val-length",
        lambda: (X2, Y, {"validation_data": (X2, Y[:3])}),
        ValueError,
        ("validation_data[0]", "validation_data[1]"),
        ("(4, 2)", "(3,)"),
        FIT,
    ),
    Case(
        "val-dict",
        lambda: (X2, Y, {"validation_data": {"x": X2, "y": Y}}),
        ValueError,
        ("validation_data",),
        ("validation_data={'x'",),
        FIT,
    ),
    Case(
        "val-dim-3",
        lambda: (X2, Y, {"validation_data": (np.ones((4, 3)), Y)}),
        ValueError,
        ("validation_data[0]",),
        ("(3,)",),
        FIT,
    ),
    Case(
        "val-str",
        lambda: (X2, Y, {"validation_data": "val"}),
        ValueError,
        ("validation_data",),
        ("validation_data='val'",),
        FIT,
    ),
    Case(
        "val-dataset-of-x",
        lambda: (X2, Y, {"validation_data": _ds(X2)}),
        ValueError,
        ("validation_data",),
        ("element_spec=",),
        FIT,
    ),
    Case(
        "val-tuple-holding-dataset",
        lambda: (X2, Y, {"validation_data": (_ds(X2, Y), Y)}),
        ValueError,
        ("validation_data",),
        ("element_spec",),
        FIT,
    ),
    # tf.data.Dataset x
    Case("dataset-with-y", lambda: (_ds(X2, Y), Y, {}), ValueError, ("y",), ("(4,)",)),
    Case(
        "dataset-with-batch-size",
        lambda: (_ds(X2, Y), None, {"batch_size": 2}),
        ValueError,
        ("batch_size",),
        ("batch_size=2",),
        ALL,
    ),
    Case(
        "dataset-not-pairs",
        lambda: (_ds(X2), None, {}),
        ValueError,
        ("x",),
        ("element_spec=TensorSpec(shape=(None, 2)",),
    ),
    Case(
        "dataset-quadruples",  # (triples are (x, y, sample_weight))
        lambda: (_ds(X2, Y, Y, Y), None, {}),
        ValueError,
        ("x",),
        ("element_spec=(",),
    ),
    Case(
        "dataset-str-features",
        lambda: (_ds(np.array([["a", "b"]] * 4), Y), None, {}),
        TypeError,
        ("x",),
        ("string",),
        ALL,
    ),
    Case(
        "dataset-dim-3",
        lambda: (_ds(np.ones((4, 3), np.float32), Y), None, {}),
        ValueError,
        ("x",),
        ("(3,)",),
        ALL,
    ),
    Case(
        "dataset-unbatched",
        lambda: (tf.data.Dataset.from_tensor_slices((X1, Y)), None, {}),
        ValueError,
        ("x",),
        ("shape ()",),
        ALL,
        "1d",
    ),
]


def _call(trainer: gf.Trainer, method: str, x: Any, y: Any, kwargs: dict[str, Any]) -> Any:
    if method == "fit":
        return trainer.fit(x, y, **kwargs)
    if method == "evaluate":
        return trainer.evaluate(x, y, **kwargs)
    return trainer.predict(x, **kwargs)


@pytest.mark.parametrize(
    ("case", "method"),
    [
        pytest.param(case, method, id=f"{case.id}-{method}")
        for case in CASES
        for method in case.methods
    ],
)
def test_bad_input_is_rejected_before_any_change(
    trainers: dict[str, gf.Trainer], case: Case, method: str
) -> None:
    trainer = trainers[case.layout]
    x, y, kwargs = case.make()
    assert_rejected(
        trainer, lambda: _call(trainer, method, x, y, kwargs), case.exc, case.names, case.echoes
    )


def test_bad_input_does_not_spoil_a_later_fit(trainers: dict[str, gf.Trainer]) -> None:
    """After rejections the trainer fits exactly as a fresh one from the same start would."""
    trainer = trainers["2d"]
    with pytest.raises(ValueError):
        trainer.fit(X2, Y, epochs=0)
    with pytest.raises(ValueError):
        trainer.fit(X2, Y, validation_data=(np.ones((4, 3)), Y))
    with pytest.raises(TypeError):
        trainer.fit(np.array([["a", "b"]] * 4), Y)
    guard = Unchanged(trainer)
    try:
        reference = gf.Trainer(
            gf.LinearModel(weight_init=trainer.model.W.numpy(), bias_init=trainer.model.b.numpy()),
            gf.L2(),
            gf.SGD(0.1),
        )
        trainer.fit(X2, Y, epochs=2)
        reference.fit(X2, Y, epochs=2)
        np.testing.assert_allclose(trainer.model.W.numpy(), reference.model.W.numpy(), rtol=1e-6)
        np.testing.assert_allclose(trainer.model.b.numpy(), reference.model.b.numpy(), rtol=1e-6)
        assert not np.allclose(trainer.model.W.numpy(), guard.before["model/W"][1])
        assert int(trainer.update_rule.iterations.numpy()) == guard.iterations + 2
    finally:
        for variable, value in guard.before.values():  # restore for the cases sharing it
            variable.assign(value)


# -- targets whose shape does not match the predictions ----------------------


@pytest.mark.parametrize("method", ["fit", "evaluate"])
@pytest.mark.parametrize("num_examples", [3, 5])
def test_targets_with_an_extra_axis_are_rejected(
    trainers: dict[str, gf.Trainer], method: str, num_examples: int
) -> None:
    """A model of one feature predicts shape [N]; targets [N, 2] are a mistake, not a broadcast.

    The probe runs on two examples, where [2] and [2, 2] broadcast, so only
    the real batch can reveal the mismatch: it must not surface as a raw
    TensorFlow error, nor tick ``iterations``.
    """
    trainer = trainers["1d"]
    x = np.linspace(0.0, 1.0, num_examples).astype(np.float32)
    y = np.ones((num_examples, 2), np.float32)
    guard = Unchanged(trainer)
    try:
        with pytest.raises((ValueError, TypeError)) as info:
            _call(trainer, method, x, y, {})
    finally:
        guard.check()
    message = str(info.value)
    assert "`y`" in message or "`loss`" in message, message
    assert "(2,)" in message or f"({num_examples}, 2)" in message, message


# -- trainer and update-rule construction ----------------------------------


class _NotAGradfitModel(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(1.0)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.w * x


def _trainer_with(trainers: dict[str, gf.Trainer], **overrides: Any) -> Callable[[], Any]:
    def make() -> Any:
        base = trainers["2d"]
        args = {"model": base.model, "loss": gf.L2(), "update_rule": base.update_rule}
        args.update(overrides)
        return gf.Trainer(args.pop("model"), args.pop("loss"), args.pop("update_rule"), **args)

    return make


CONSTRUCTION = [
    ("loss-int", {"loss": 3}, TypeError, ("loss",), ("loss=3",)),
    ("loss-str", {"loss": "mse"}, TypeError, ("loss",), ("loss='mse'",)),
    ("rule-str", {"update_rule": "sgd"}, TypeError, ("update_rule",), ("update_rule='sgd'",)),
    (
        "rule-keras-sgd",
        {"update_rule": keras.optimizers.SGD(0.1)},
        TypeError,
        ("update_rule",),
        ("KerasOptimizer", "SGD"),
    ),
    ("model-str", {"model": "linear"}, TypeError, ("model",), ("model='linear'",)),
    (
        "model-tf-module",
        {"model": _NotAGradfitModel()},
        TypeError,
        ("model",),
        ("_NotAGradfitModel", "gradfit.Model"),
    ),
    ("model-function", {"model": lambda x: x}, TypeError, ("model",), ("<function",)),
    (
        "callbacks-function",
        {"callbacks": lambda logs: None},
        TypeError,
        ("callbacks",),
        ("<function",),
    ),
    ("callbacks-list-with-int", {"callbacks": [3]}, TypeError, ("callbacks",), ("int", "3")),
    ("callbacks-str", {"callbacks": "history"}, TypeError, ("callbacks",), ("'history'",)),
    ("metrics-str", {"metrics": "mae"}, TypeError, ("metrics",), ("'mae'",)),
    ("metrics-list-with-int", {"metrics": [gf.L1(), 2]}, TypeError, ("metrics",), ("2",)),
    ("metrics-clash", {"metrics": [gf.L1(), gf.L1()]}, ValueError, ("metrics",), ("'l1'",)),
    ("jit-compile-int", {"jit_compile": 1}, TypeError, ("jit_compile",), ("jit_compile=1",)),
    (
        "jit-compile-str",
        {"jit_compile": "yes"},
        ValueError,
        ("jit_compile",),
        ("jit_compile='yes'",),
    ),
]


@pytest.mark.parametrize(
    ("overrides", "exc", "names", "echoes"),
    [pytest.param(*rest, id=case_id) for case_id, *rest in CONSTRUCTION],
)
def test_bad_trainer_argument_is_rejected(
    trainers: dict[str, gf.Trainer],
    overrides: dict[str, Any],
    exc: type[Exception],
    names: tuple[str, ...],
    echoes: tuple[str, ...],
) -> None:
    assert_rejected(trainers["2d"], _trainer_with(trainers, **overrides), exc, names, echoes)


@pytest.mark.parametrize(
    ("kwargs", "name", "echo"),
    [
        pytest.param({"learning_rate": -0.1}, "learning_rate", "learning_rate=-0.1", id="lr<0"),
        pytest.param(
            {"learning_rate": math.nan}, "learning_rate", "learning_rate=nan", id="lr-nan"
        ),
        pytest.param(
            {"learning_rate": math.inf}, "learning_rate", "learning_rate=inf", id="lr-inf"
        ),
        pytest.param({"momentum": 1.0}, "momentum", "momentum=1.0", id="momentum=1"),
        pytest.param({"momentum": -0.1}, "momentum", "momentum=-0.1", id="momentum<0"),
        pytest.param({"momentum": math.nan}, "momentum", "momentum=nan", id="momentum-nan"),
    ],
)
def test_bad_sgd_hyperparameter_is_a_value_error(
    kwargs: dict[str, Any], name: str, echo: str
) -> None:
    with pytest.raises(ValueError) as info:
        gf.SGD(**kwargs)
    assert f"`{name}`" in str(info.value)
    assert echo in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "name", "echo"),
    [
        pytest.param({"learning_rate": "0.1"}, "learning_rate", "learning_rate='0.1'", id="lr-str"),
        pytest.param({"learning_rate": True}, "learning_rate", "learning_rate=True", id="lr-bool"),
        pytest.param({"momentum": "0.9"}, "momentum", "momentum='0.9'", id="momentum-str"),
        pytest.param({"nesterov": "yes"}, "nesterov", "nesterov='yes'", id="nesterov-str"),
    ],
)
def test_sgd_hyperparameter_of_wrong_type_is_a_type_error(
    kwargs: dict[str, Any], name: str, echo: str
) -> None:
    with pytest.raises(TypeError) as info:
        gf.SGD(**kwargs)
    assert f"`{name}`" in str(info.value)
    assert echo in str(info.value)


@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf])
def test_setting_a_bad_learning_rate_keeps_the_old_one(
    trainers: dict[str, gf.Trainer], value: float
) -> None:
    rule = trainers["2d"].update_rule

    def assign() -> None:
        rule.learning_rate = value

    message = assert_rejected(trainers["2d"], assign, ValueError, ("learning_rate",), ())
    assert f"learning_rate={value!r}" in message
    assert float(rule.learning_rate.numpy()) == pytest.approx(0.1)


# -- losses and metrics that do not fit the data ---------------------------


def _failing_metric(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    raise RuntimeError("metric exploded")


def _vector_metric(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    return tf.abs(y_true)


@pytest.mark.parametrize("layout", ["2d", "1d"])
@pytest.mark.parametrize("method", ["fit", "evaluate"])
@pytest.mark.parametrize(
    ("overrides", "name", "echoes"),
    [
        pytest.param(
            {"loss": lambda yt, yp: yt - yp}, "loss", ("returned shape",), id="loss-vector"
        ),
        pytest.param(
            {"loss": lambda yt, yp: tf.constant(1, tf.int32)}, "loss", ("int32",), id="loss-int"
        ),
        pytest.param(
            {"metrics": [_failing_metric]},
            "metrics",
            ("_failing_metric", "metric exploded"),
            id="metric-raises",
        ),
        pytest.param(
            {"metrics": {"vec": _vector_metric}}, "metrics", ("returned shape",), id="metric-vector"
        ),
    ],
)
def test_loss_or_metric_that_does_not_return_a_scalar_is_named(
    trainers: dict[str, gf.Trainer],
    layout: str,
    method: str,
    overrides: dict[str, Any],
    name: str,
    echoes: tuple[str, ...],
) -> None:
    base = trainers[layout]
    trainer = gf.Trainer(
        base.model,
        overrides.get("loss", gf.L2()),
        base.update_rule,
        metrics=overrides.get("metrics", ()),
    )
    x = X2 if layout == "2d" else X1
    assert_rejected(trainer, lambda: _call(trainer, method, x, Y, {}), ValueError, (name,), echoes)


def test_a_step_that_fails_at_run_time_does_not_tick_iterations(
    trainers: dict[str, gf.Trainer],
) -> None:
    """``iterations`` counts updates made; a step whose loss fails makes none."""

    def checked_l2(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        check = tf.debugging.assert_less(tf.reduce_max(tf.abs(y_true)), 100.0)
        with tf.control_dependencies([check]):
            return gf.L2()(y_true, y_pred)

    base = trainers["2d"]
    trainer = gf.Trainer(base.model, checked_l2, base.update_rule)
    guard = Unchanged(trainer)
    try:
        with pytest.raises(tf.errors.InvalidArgumentError):  # the user's own check
            trainer.fit(X2, Y * 1000.0)
    finally:
        guard.check()


# -- datasets the model should accept -------------------------------------


def test_built_model_accepts_a_dataset_of_unknown_feature_width(
    trainers: dict[str, gf.Trainer],
) -> None:
    """A generator dataset may leave the feature axis unknown; the data still fit the model."""

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield X2[:2], Y[:2]
        yield X2[2:], Y[2:]

    signature = (tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    trainer = trainers["2d"]
    guard = Unchanged(trainer)
    try:
        expected = trainer.evaluate(X2, Y)
        assert trainer.evaluate(dataset) == pytest.approx(expected, rel=1e-6)
    finally:
        guard.check()


# -- generated malformed inputs --------------------------------------------


@st.composite
def malformed_inputs(draw: st.DrawFn) -> tuple[str, Any, Any, str, int | None]:
    """Inputs for the one-feature model (per-example shape ()) that are certainly wrong."""
    n = draw(st.integers(1, 6))
    x: Any = np.linspace(-1.0, 1.0, n).astype(np.float32)
    y: Any = (2.0 * x + 1.0).astype(np.float32)
    kind = draw(st.sampled_from(["wrong_rank", "mismatched", "nonfinite", "empty", "strings"]))
    if kind == "wrong_rank":
        shape = draw(
            st.sampled_from(
                ["x-scalar", "x-column", "x-rank-3", "y-scalar", "y-two-columns", "y-rank-3"]
            )
        )
        if shape == "x-scalar":
            x = 1.0
        elif shape == "x-column":
            x = x.reshape(n, 1)
        elif shape == "x-rank-3":
            x = np.stack([x, x], axis=-1)[:, :, None]
        elif shape == "y-scalar":
            y = np.float32(1.0)
        elif shape == "y-two-columns":
            y = np.stack([y, y], axis=1)
        else:
            y = np.stack([y, y], axis=1)[:, None, :]
        kind = shape
    elif kind == "mismatched":
        m = draw(st.integers(1, 6).filter(lambda m: m != n))
        y = np.ones(m, np.float32)
    elif kind == "nonfinite":
        target = draw(st.sampled_from(["x", "y"]))
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        index = draw(st.integers(0, n - 1))
        as_tensor = draw(st.booleans())
        array = _with(x if target == "x" else y, (index,), value)
        array = tf.constant(array) if as_tensor else array
        x, y = (array, y) if target == "x" else (x, array)
    elif kind == "empty":
        which = draw(st.sampled_from(["x", "y", "both"]))
        if which in ("x", "both"):
            x = np.zeros((0,), np.float32)
        if which in ("y", "both"):
            y = np.zeros((0,), np.float32)
    else:
        target = draw(st.sampled_from(["x", "y"]))
        strings = [f"{v:.2f}" for v in (x if target == "x" else y)]
        data = np.array(strings) if draw(st.booleans()) else strings
        x, y = (data, y) if target == "x" else (x, data)
    method = draw(st.sampled_from(["fit", "evaluate"]))
    batch_size = draw(st.one_of(st.none(), st.integers(1, 4)))
    return kind, x, y, method, batch_size


@given(case=malformed_inputs())
def test_malformed_inputs_never_leak_tf_errors_or_change_variables(
    trainers: dict[str, gf.Trainer], case: tuple[str, Any, Any, str, int | None]
) -> None:
    kind, x, y, method, batch_size = case
    trainer = trainers["1d"]
    guard = Unchanged(trainer)
    try:
        with pytest.raises((ValueError, TypeError)) as info:
            _call(trainer, method, x, y, {"batch_size": batch_size})
    finally:
        guard.check()
    assert not isinstance(info.value, tf.errors.OpError), f"{kind}: {info.value}"
    assert "`" in str(info.value), f"{kind}: no argument named in {info.value}"
