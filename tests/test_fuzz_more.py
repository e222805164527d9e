"""More fuzzed inputs (issue 13, "Extend the fuzz suite"): datasets, structures, weights, Keras.

The companion of ``tests/test_fuzz_inputs.py``, in its style and with its
rules (read its docstring first). Hypothesis draws, most of them malformed
and some valid:

* ``tf.data.Dataset`` inputs to fit, evaluate and predict, and as
  ``validation_data``: ``x`` alone, ``(x, y)``, ``(x, y, w)``, dicts, wrong
  ranks and widths, strings, NaN features, empty and unbatched datasets;
* nested inputs: dict, tuple and list ``x`` for Keras functional models of
  several inputs, dict ``y`` for a Keras model of several outputs with a
  dict of losses; missing, extra and renamed keys, entries of different
  lengths;
* ``sample_weight`` and ``class_weight``: wrong lengths, ranks and types,
  negative and non-finite weights, keys that are not class indices, both
  together, with datasets;
* Keras models (``keras.Sequential``, functional) given to ``gf.Trainer``
  with Keras losses and metrics and gradfit losses.

Every case succeeds with a sane result (a History of finite logs and one
update per batch, predictions of the right structure and shape; evaluating
and predicting change nothing) or is rejected by gradfit itself with a
``ValueError`` or ``TypeError`` naming the offending argument in backticks
(a path such as ```x['a']``` names ``x``), with every variable of the
model (Keras's included) and of the update rule exactly as it was and no
file written. One family has a third outcome, said where it is drawn: NaN
inside a dataset cannot be seen before training reaches it, and ``fit``
may stop at that (first) step with ``gf.NonFiniteError``, as
``on_nonfinite="raise"`` documents, having changed nothing.

Left out here, as they have tests of their own: class labels out of range
inside a dataset, and datasets whose later batches change shape or
structure or whose generator raises mid-iteration. The lines marked
``# excluded:`` leave out inputs that expose known faults (reported).
"""

from __future__ import annotations

import collections
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import gradfit as gf
from tests.test_fuzz_inputs import PHASES, CaseCountReport, _finite, _raised_in_gradfit, _summary
from tests.test_fuzz_inputs import Snapshot as _ModuleSnapshot

# -- bookkeeping -------------------------------------------------------------

CASE_COUNTS: collections.Counter[str] = collections.Counter()
"""Generated cases run, per test (hypothesis calls of the test body)."""

# One worker runs the whole module (pytest-xdist), so the last test sees every count.
pytestmark = [
    pytest.mark.xdist_group("fuzz_more"),
    # Keras warns when it is given inputs of another structure than the model's (dict for list).
    pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning"),
]

MIN_TOTAL_CASES = 800
FUZZ_TESTS: list[str] = []  # filled by `fuzz_test`
OUTCOMES: collections.Counter[tuple[str, str]] = collections.Counter()
"""Cases per test and outcome ("accepted" or "rejected")."""
_current_test = ""


def _examples(n: int) -> int:
    """``n`` examples (per parameter), times ten under a profile of ten times the examples."""
    return n * max(1, settings.default.max_examples // 30)


def fuzz_test(max_examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for a fuzz test; registers it for the case count."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        FUZZ_TESTS.append(test.__name__)
        return settings(max_examples=_examples(max_examples), deadline=None, phases=PHASES)(test)

    return decorate


def _count(test: str) -> None:
    """Counts one generated case of ``test``."""
    global _current_test
    _current_test = test
    CASE_COUNTS[test] += 1


@pytest.fixture(scope="module", autouse=True)
def _report_case_counts(request: pytest.FixtureRequest) -> None:
    report = CaseCountReport(
        "gradfit input fuzzing (more): generated cases", CASE_COUNTS, OUTCOMES, FUZZ_TESTS
    )
    report.register(request, "gradfit-fuzz-more-case-count")


@pytest.fixture(scope="module", autouse=True)
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An empty working directory for the module: no case may write a file into it."""
    path = tmp_path_factory.mktemp("fuzz_more")
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)


# -- trainers and data -------------------------------------------------------

CLASSES = 3
X_WIDTHS: dict[str, Any] = {
    "seq": 3,
    "clf": 3,
    "kclf": 3,
    "multi_in": {"a": 3, "b": 2},
    "pair_in": (3, 2),
    "multi_out": 3,
}
"""Each trainer's features: one width, a dict of widths (inputs by name) or a tuple (a list)."""
PREDICTION_WIDTHS: dict[str, Any] = {
    "seq": 1,
    "clf": CLASSES,
    "kclf": CLASSES,
    "multi_in": 1,
    "pair_in": 1,
    "multi_out": {"value": 1, "kind": CLASSES},
}
LABELS = ("clf", "kclf")
"""Trainers of a sparse cross-entropy: their targets are class labels."""
SINGLE = ("seq", "clf", "kclf")
"""Trainers of one input and one output."""
N = 4
BATCH_SIZES = (None, 2)
"""Examples and batch sizes of in-memory data: few, for few compiled loops (they are cached
per array shape and batch size); datasets, whose loops are cached per element spec, vary more."""


def _init(seed: int) -> keras.initializers.Initializer:
    return keras.initializers.GlorotUniform(seed=seed)


def _dense(units: int, seed: int, **kwargs: Any) -> keras.layers.Dense:
    return keras.layers.Dense(units, kernel_initializer=_init(seed), **kwargs)


def _make_trainers() -> dict[str, gf.Trainer]:
    """Keras models of one or several inputs and outputs, with Keras and gradfit parts."""
    found: dict[str, gf.Trainer] = {}
    seq = keras.Sequential([keras.Input((3,)), _dense(1, 0)])
    found["seq"] = gf.Trainer(
        seq,
        keras.losses.MeanSquaredError(),
        gf.SGD(0.05),
        metrics=[keras.metrics.MeanAbsoluteError()],
        jit_compile=False,
    )
    inputs = keras.Input((3,))
    hidden = _dense(4, 1, activation="tanh")(inputs)
    clf = keras.Model(inputs, _dense(CLASSES, 2)(hidden))
    found["clf"] = gf.Trainer(
        clf,
        gf.SparseCategoricalCrossentropy(from_logits=True),
        gf.Adam(0.01),
        metrics=["accuracy"],
        weighted_metrics={"weighted_acc": gf.metrics.SparseCategoricalAccuracy()},
        jit_compile=False,
    )
    kclf = keras.Sequential([keras.Input((3,)), _dense(CLASSES, 3)])
    found["kclf"] = gf.Trainer(
        kclf,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        gf.RMSProp(0.01),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        jit_compile=False,
    )
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    multi_in = keras.Model({"a": a, "b": b}, _dense(1, 4)(joined))
    found["multi_in"] = gf.Trainer(
        multi_in, gf.L2(), gf.SGD(0.05), metrics=["mae"], jit_compile=False
    )
    first, second = keras.Input((3,)), keras.Input((2,))
    pair = keras.layers.Concatenate()([first, second])
    pair_in = keras.Model([first, second], _dense(1, 5)(pair))
    found["pair_in"] = gf.Trainer(pair_in, keras.losses.Huber(), gf.Adam(0.01), jit_compile=False)
    inputs = keras.Input((3,))
    hidden = _dense(4, 6, activation="tanh")(inputs)
    multi_out = keras.Model(inputs, {"value": _dense(1, 7)(hidden), "kind": _dense(3, 8)(hidden)})
    found["multi_out"] = gf.Trainer(
        multi_out,
        {
            "value": keras.losses.MeanSquaredError(),
            "kind": gf.SparseCategoricalCrossentropy(from_logits=True),
        },
        gf.Adam(0.01),
        jit_compile=False,
    )
    return found


def _x(name: str, n: int, rng: np.random.Generator) -> Any:
    def one(width: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, (n, width)).astype(np.float32)

    widths = X_WIDTHS[name]
    if isinstance(widths, dict):
        return {key: one(width) for key, width in widths.items()}
    if isinstance(widths, tuple):
        return [one(width) for width in widths]
    return one(widths)


def _y(name: str, n: int, rng: np.random.Generator) -> Any:
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    values = rng.uniform(-1.0, 1.0, n).astype(np.float32)
    if name in LABELS:
        return labels
    if name == "multi_out":
        return {"value": values, "kind": labels}
    return values


def _prediction_shape(name: str, n: int) -> Any:
    widths = PREDICTION_WIDTHS[name]
    if isinstance(widths, dict):
        return {key: (n, width) for key, width in widths.items()}
    return (n, widths)


@pytest.fixture(scope="module")
def trainers() -> dict[str, gf.Trainer]:
    """One built trainer per model, shared by every case (variables are restored)."""
    found = _make_trainers()
    rng = np.random.default_rng(0)
    for name, trainer in found.items():
        trainer.fit(_x(name, 4, rng), _y(name, 4, rng))
    return found


# -- state snapshots ---------------------------------------------------------


class Snapshot(_ModuleSnapshot):
    """Every model and update-rule variable of a trainer, Keras's weights included."""

    def _variables(self) -> dict[str, tf.Variable]:
        found = super()._variables()
        for i, variable in enumerate(self.trainer.model.variables):
            found.setdefault(f"keras/{i}/{variable.name}", variable)
        return found


# -- the oracle --------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a case allows.

    Attributes:
        outcome: ``"ok"`` (must succeed), ``"raise"`` (must be rejected) or
            ``"either"``.
        names: Arguments a rejection may name (in backticks, or a path of
            them such as ```x['a']```); one is enough.
        why: The case, for failure messages.
        nonfinite_step: ``fit`` may also stop with ``gf.NonFiniteError`` at
            its first step, having changed nothing (NaN inside a dataset).
    """

    outcome: str
    names: tuple[str, ...] = ()
    why: str = "valid input"
    nonfinite_step: bool = False


def ok(why: str) -> Expect:
    return Expect("ok", (), why)


def reject(names: tuple[str, ...] | str, why: str) -> Expect:
    return Expect("raise", (names,) if isinstance(names, str) else names, why)


def either(names: tuple[str, ...] | str, why: str) -> Expect:
    return Expect("either", (names,) if isinstance(names, str) else names, why)


def _names(message: str, names: tuple[str, ...]) -> bool:
    """Whether ``message`` names one of ``names`` in backticks, alone or as a path's root."""
    return any(re.search(rf"`{re.escape(name)}(\[[^`]*\])*`", message) for name in names)


def _check_rejection(error: Exception, snapshot: Snapshot, expect: Expect) -> None:
    shown = f"{type(error).__module__}.{type(error).__qualname__}: {_summary(error)}"
    changed = snapshot.changes()
    assert not changed, f"{expect.why}: {changed} changed before the error {shown}"
    assert not isinstance(error, tf.errors.OpError), f"{expect.why}: raw TensorFlow error {shown}"
    assert _raised_in_gradfit(error), f"{expect.why}: error not raised by gradfit: {shown}"
    if expect.nonfinite_step and isinstance(error, gf.NonFiniteError):
        assert (error.epoch, error.step) == (0, 0), f"{expect.why}: {shown}"
        return
    assert isinstance(error, ValueError | TypeError), f"{expect.why}: wrong error type {shown}"
    assert _names(str(error), expect.names), (
        f"{expect.why}: none of {[f'`{n}`' for n in expect.names]} is named in {shown}"
    )
    assert expect.outcome != "ok", f"{expect.why}: valid input rejected: {shown}"


@dataclass
class Run:
    """How a successful call must look.

    Attributes:
        method: ``"fit"``, ``"evaluate"`` or ``"predict"``.
        epochs: Epochs of a fit.
        steps: Batches per epoch of a fit (``None``: not checked).
        prediction_shape: What ``predict`` must return: a shape, or a dict of shapes.
        validation: Whether the fit had validation data.
        logs: Logs the History (or evaluate) must hold besides ``loss``.
    """

    method: str
    epochs: int = 1
    steps: int | None = None
    prediction_shape: Any = None
    validation: bool = False
    logs: tuple[str, ...] = field(default_factory=tuple)


def _check_predictions(result: Any, expected: Any, why: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(result, dict), f"{why}: predict gave {type(result)}, not a dict"
        assert set(result) == set(expected), f"{why}: predicted keys {sorted(result)}"
        for key, shape in expected.items():
            _check_predictions(result[key], shape, f"{why} [{key!r}]")
        return
    assert isinstance(result, np.ndarray), f"{why}: predict gave {type(result)}"
    assert result.shape == expected, f"{why}: predictions of shape {result.shape}, not {expected}"
    assert _finite(result), f"{why}: predictions are not finite"


def _check_result(result: Any, snapshot: Snapshot, run: Run, expect: Expect) -> None:
    why = expect.why
    assert expect.outcome != "raise", f"{why}: accepted, but must be rejected: {result!r:.300}"
    trainer = snapshot.trainer
    if run.method == "fit":
        assert isinstance(result, gf.History), f"{why}: fit returned {result!r:.200}"
        assert result.epoch == list(range(run.epochs)), f"{why}: epochs {result.epoch}"
        for name in ("loss", *run.logs):
            assert name in result.history, f"{why}: no {name} in {result.history}"
        assert ("val_loss" in result.history) == run.validation, f"{why}: {result.history}"
        for key, values in result.history.items():
            assert len(values) == run.epochs, f"{why}: {key} has {len(values)} entries"
            assert _finite(values), f"{why}: {key} is not finite: {values}"
        if run.steps is not None:
            done = int(trainer.update_rule.iterations.numpy()) - snapshot.iterations
            assert done == run.epochs * run.steps, f"{why}: {done} updates, not {run.steps}/epoch"
        for variable in trainer.model.variables:
            assert _finite(variable.numpy()), f"{why}: {variable.name} is not finite"
        return
    changed = snapshot.changes()
    assert not changed, f"{why}: {run.method} changed {changed}"
    if run.method == "evaluate":
        assert isinstance(result, dict), f"{why}: evaluate gave {result!r:.200}"
        for name in ("loss", *run.logs):
            assert name in result, f"{why}: no {name} in {result}"
        assert _finite(list(result.values())), f"{why}: evaluate gave {result}"
        return
    _check_predictions(result, run.prediction_shape, why)


def check_call(trainer: gf.Trainer, call: Callable[[], Any], expect: Expect, run: Run) -> None:
    """Runs ``call`` and judges its outcome; the trainer's variables are restored after."""
    snapshot = Snapshot(trainer)
    error: Exception | None = None
    try:
        try:
            result = call()
        except Exception as caught:  # judged below: only gradfit's own rejections pass
            error = caught
        # Judged outside the `except`, so that a failure does not chain TensorFlow's trace.
        OUTCOMES[_current_test, "rejected" if error is not None else "accepted"] += 1
        written = sorted(os.listdir("."))
        assert not written, f"{expect.why}: the call wrote {written}"
        if error is not None:
            _check_rejection(error, snapshot, expect)
        else:
            _check_result(result, snapshot, run, expect)
    finally:
        snapshot.restore()


def _steps(n: int, batch_size: Any) -> int:
    size = n if batch_size is None else min(int(batch_size), n)
    return math.ceil(n / size)


def _logs(name: str) -> tuple[str, ...]:
    """Logs besides ``loss`` that every fit and evaluate of trainer ``name`` must give."""
    return {
        "seq": ("mean_absolute_error",),
        "clf": ("accuracy", "weighted_acc"),
        "kclf": ("sparse_categorical_accuracy",),
        "multi_in": ("mae",),
        "pair_in": (),
        "multi_out": ("value_loss", "kind_loss"),
    }[name]


def _show(value: Any) -> str:
    """A short rendering of an input for a falsifying example."""
    if isinstance(value, tf.data.Dataset):
        return f"Dataset(element_spec={value.element_spec})"
    if isinstance(value, dict):
        inner = ", ".join(f"{k!r}: {_show(v)}" for k, v in list(value.items())[:4])
        return f"{{{inner}}}"
    if isinstance(value, tuple | list) and len(value) <= 3:
        inner = ", ".join(_show(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(value).__name__}{tuple(shape)}:{dtype}"
    return repr(value)[:80]


@dataclass
class Case:
    """One call: ``trainer.<method>(x, y, **kwargs)`` and what it must do."""

    layout: str
    method: str
    x: Any
    y: Any
    kwargs: dict[str, Any]
    expect: Expect
    run: Run

    def __repr__(self) -> str:
        kwargs = {key: _show(value) for key, value in self.kwargs.items()}
        return (
            f"Case({self.expect.why!r}, {self.layout}, {self.method}, x={_show(self.x)}, "
            f"y={_show(self.y)}, {kwargs})"
        )


def _check_case(trainers: dict[str, gf.Trainer], case: Case) -> None:
    trainer = trainers[case.layout]

    def call() -> Any:
        if case.method == "fit":
            return trainer.fit(case.x, case.y, **case.kwargs)
        if case.method == "evaluate":
            return trainer.evaluate(case.x, case.y, **case.kwargs)
        return trainer.predict(case.x, **case.kwargs)

    check_call(trainer, call, case.expect, case.run)


def _run(draw: st.DrawFn, layout: str, method: str, n: int, steps: int | None) -> Run:
    epochs = draw(st.integers(1, 2)) if method == "fit" else 1
    return Run(method, epochs, steps, _prediction_shape(layout, n), logs=_logs(layout))


METHODS = ("fit", "evaluate", "predict")


def _seed(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


# -- leaves: valid forms and corruptions of one array --------------------------


def _valid_leaf(draw: st.DrawFn, a: np.ndarray, labels: bool = False) -> tuple[Any, str]:
    """``a`` in another valid container or dtype."""
    forms = ["same", "list", "tensor", "int64"] if labels else ["same", "float64", "list", "tensor"]
    form = draw(st.sampled_from(forms))
    if form == "list":
        return a.tolist(), form
    if form == "tensor":
        return tf.constant(a), form
    if form in ("int64", "float64"):
        return a.astype(form), form
    return a, form


def _bad_leaf(draw: st.DrawFn, a: np.ndarray) -> tuple[Any, str]:
    """``a`` made unusable as any input: NaN, strings, None, empty, a scalar, ragged, complex."""
    kind = draw(st.sampled_from(["nan", "inf", "str", "None", "empty", "scalar", "ragged", "cplx"]))
    if kind in ("nan", "inf"):
        value = np.array(a, np.float64)
        value.flat[draw(st.integers(0, a.size - 1))] = math.nan if kind == "nan" else -math.inf
        return value, kind
    if kind == "str":
        return a.astype(str), kind
    if kind == "None":
        return None, kind
    if kind == "empty":
        return a[:0], kind
    if kind == "scalar":
        return a.flat[0], kind
    if kind == "ragged":
        rows: list[Any] = a.tolist()
        rows[-1] = [*rows[-1], 0.5] if a.ndim == 2 else [rows[-1], 0.5]
        return rows, kind
    return a.astype(np.complex64), kind


def _set(a: np.ndarray, index: int, value: Any) -> np.ndarray:
    """A copy of ``a`` with ``a[index] = value``."""
    copy = np.array(a)
    copy[index] = value
    return copy


# -- Keras models on in-memory arrays --------------------------------------------


KERAS_ARRAY_KINDS = ("valid", "width", "rank", "length", "bad-leaf", "targets")


@st.composite
def keras_array_cases(draw: st.DrawFn, kind: str) -> Case:
    """A Sequential or functional model with Keras or gradfit losses, on good or bad arrays."""
    layout = draw(st.sampled_from(SINGLE))
    method = draw(st.sampled_from(["fit", "evaluate", "predict"]))
    n = N
    rng = _seed(draw)
    x, y = _x(layout, n, rng), _y(layout, n, rng)
    labels = layout in LABELS
    role = draw(st.sampled_from(["x", "y"] if method != "predict" else ["x"]))
    expect = ok("valid arrays")
    if kind == "valid":
        x, x_form = _valid_leaf(draw, x)
        y, y_form = _valid_leaf(draw, y, labels=labels)
        if draw(st.booleans()):
            y = np.asarray(y)[:, None]
            y_form += " column"
        expect = ok(f"valid x ({x_form}), y ({y_form})")
    elif kind == "width":
        width = draw(st.sampled_from([1, 2, 4]))
        x = np.resize(x, (n, width))
        expect = reject("x", f"x of {width} features for a model of 3")
    elif kind == "rank":
        options = {
            "rank-1": (x[:, 0], reject("x", "")),
            "[N, 1, 3]": (x[:, None, :], reject("x", "")),
            "batch-of-1": (x[None], reject(("x", "y"), "")),
            # Keras squeezes a trailing axis of 1 off inputs one rank too high.
            "[N, 3, 1]": (x[:, :, None], either("x", "")),
        }
        name = draw(st.sampled_from(sorted(options)))
        x, expect = options[name]
        expect = Expect(expect.outcome, expect.names, f"x {name}")
    elif kind == "length":
        m = draw(st.sampled_from([1, 3, 6]))
        if role == "x":
            x = np.resize(x, (m, 3))
        else:
            y = np.resize(y, (m,))
        expect = reject(("x", "y"), f"{role} of {m} examples, not {n}")
        if method == "predict":
            n, expect = m, ok("predict takes any number of examples")
    elif kind == "bad-leaf":
        value, name = _bad_leaf(draw, x if role == "x" else y)
        if role == "x":
            x = value
        else:
            y = value
        expect = reject(role, f"{role} {name}")
    else:
        assert kind == "targets", kind
        if layout == "clf" or layout == "kclf":
            options = {
                "one-hot": (np.eye(CLASSES, dtype=np.float32)[y], reject(("y", "loss"), "")),
                "fractional": (y + np.float32(0.5), either(("y", "loss"), "")),
                "out-of-range": (_set(y, 0, CLASSES), reject(("y", "loss"), "")),
                "negative": (_set(y, n - 1, -1), reject(("y", "loss"), "")),
                "rank-3": (y[:, None, None], reject(("y", "loss"), "")),
            }
        else:
            # In-memory targets [N, 2] for one output are refused (a known, accepted change).
            options = {
                "two-columns": (np.stack([y, y], axis=1), reject(("y", "loss"), "")),
                "rank-3": (y[:, None, None], reject(("y", "loss"), "")),
                "int": (np.round(y * 3).astype(np.int32), ok("")),
                "bool": (y > 0, ok("")),
            }
        name = draw(st.sampled_from(sorted(options)))
        y, expect = options[name]
        expect = Expect(expect.outcome, expect.names, f"targets {name} ({layout})")
        if method == "predict":
            expect = ok("predict ignores the targets")
    batch_size = draw(st.sampled_from(BATCH_SIZES))
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    run = _run(draw, layout, method, n, _steps(n, batch_size))
    if method == "fit":
        kwargs.update(epochs=run.epochs)
    return Case(layout, method, x, None if method == "predict" else y, kwargs, expect, run)


@pytest.mark.parametrize("kind", KERAS_ARRAY_KINDS)
@fuzz_test(max_examples=25)
@given(data=st.data())
def test_fuzzed_keras_models(
    trainers: dict[str, gf.Trainer], kind: str, data: st.DataObject
) -> None:
    """keras.Sequential and functional models with Keras and gradfit losses and metrics."""
    _count("test_fuzzed_keras_models")
    _check_case(trainers, data.draw(keras_array_cases(kind), label="case"))


# -- nested inputs and targets ---------------------------------------------------


DICT_X_KINDS = (
    "valid",
    "as-list",
    "as-tuple",
    "missing-key",
    "extra-key",
    "renamed-key",
    "swapped",
    "lengths",
    "width",
    "bad-leaf",
    "int-keys",
    "empty-dict",
    "deeper",
    "one-array",
)


def _corrupt_dict_x(
    draw: st.DrawFn, x: dict[str, np.ndarray], n: int, kind: str
) -> tuple[Any, Expect]:
    """``x`` for the model of inputs ``a`` (3 features) and ``b`` (2 features)."""
    a, b = x["a"], x["b"]
    if kind == "valid":
        (a, form_a), (b, form_b) = _valid_leaf(draw, a), _valid_leaf(draw, b)
        return {"a": a, "b": b}, ok(f"dict x ({form_a}, {form_b})")
    if kind in ("as-list", "as-tuple"):
        # Keras maps a list to the inputs in order (with a warning); gradfit may refuse it.
        value = [a, b] if kind == "as-list" else (a, b)
        return value, either("x", f"x {kind} for a model of named inputs")
    if kind == "missing-key":
        key = draw(st.sampled_from(["a", "b"]))
        return {key: x[key]}, reject("x", f"x without {'b' if key == 'a' else 'a'!r}")
    if kind == "extra-key":
        return {"a": a, "b": b, "c": b}, either("x", "x with an extra key 'c'")
    if kind == "renamed-key":
        return {"a": a, "c": b}, reject("x", "x keyed 'a', 'c'")
    if kind == "swapped":
        return {"a": b, "b": a}, reject("x", "x['a'] and x['b'] swapped")
    if kind == "lengths":
        m = draw(st.sampled_from([n - 1, n + 1]))
        return {"a": a, "b": np.resize(b, (m, 2))}, reject("x", f"x['b'] of {m} examples")
    if kind == "width":
        width = draw(st.sampled_from([1, 3]))
        return {"a": a, "b": np.resize(b, (n, width))}, reject("x", f"x['b'] of {width} features")
    if kind == "bad-leaf":
        key = draw(st.sampled_from(["a", "b"]))
        value, name = _bad_leaf(draw, x[key])
        return {**x, key: value}, reject("x", f"x[{key!r}] {name}")
    if kind == "int-keys":
        return {0: a, 1: b}, reject("x", "x keyed 0, 1")
    if kind == "empty-dict":
        return {}, reject("x", "x = {}")
    if kind == "deeper":
        # Keras flattens the inputs it is given (with a warning), so this one can pass.
        return {"a": {"inner": a}, "b": b}, either("x", "x['a'] a dict")
    return np.concatenate([a, b], axis=1), reject("x", "x one array of 5 features")


LIST_X_KINDS = (
    "valid",
    "tuple",
    "lists",
    "as-dict",
    "one",
    "three",
    "swapped",
    "lengths",
    "width",
    "bad-leaf",
    "list-of-lists",
    "empty",
)


def _corrupt_list_x(draw: st.DrawFn, x: list[np.ndarray], n: int, kind: str) -> tuple[Any, Expect]:
    """``x`` for the model of a list of inputs (3 features, 2 features)."""
    a, b = x
    if kind == "valid":
        (a, form_a), (b, form_b) = _valid_leaf(draw, a), _valid_leaf(draw, b)
        if isinstance(a, list) and isinstance(b, list):  # (a list of lists is one array)
            return (a, b), ok("tuple x (list, list)")
        return [a, b], ok(f"list x ({form_a}, {form_b})")
    if kind == "tuple":
        return (a, b), ok("tuple x")
    if kind == "lists":  # a tuple of nested lists is two inputs (NumPy could not stack them)
        return (a.tolist(), b.tolist()), ok("tuple of lists x")
    if kind == "as-dict":
        return {"a": a, "b": b}, either("x", "dict x for a model of a list of inputs")
    if kind == "one":
        return [a], reject("x", "x of one input, not two")
    if kind == "three":
        return [a, b, b], either("x", "x of three inputs, not two")
    if kind == "swapped":
        return [b, a], reject("x", "x[0] and x[1] swapped")
    if kind == "lengths":
        m = draw(st.sampled_from([n - 1, n + 1]))
        return [a, np.resize(b, (m, 2))], reject("x", f"x[1] of {m} examples")
    if kind == "width":
        return [np.resize(a, (n, 4)), b], reject("x", "x[0] of 4 features")
    if kind == "bad-leaf":
        i = draw(st.sampled_from([0, 1]))
        value, name = _bad_leaf(draw, x[i])
        parts: list[Any] = [a, b]
        parts[i] = value
        return parts, reject("x", f"x[{i}] {name}")
    if kind == "list-of-lists":  # a list of lists is one array, and these rows are ragged
        return [a.tolist(), b.tolist()], reject("x", "x a list of two lists")
    return [], reject("x", "x = []")


DICT_Y_KINDS = (
    "valid",
    "missing-key",
    "extra-key",
    "renamed-key",
    "lengths",
    "as-tuple",
    "one-array",
    "value-columns",
    "kind-one-hot",
    "kind-out-of-range",
    "bad-leaf",
    "int-keys",
    "empty-dict",
)


def _corrupt_dict_y(
    draw: st.DrawFn, y: dict[str, np.ndarray], n: int, kind: str
) -> tuple[Any, Expect]:
    """``y`` for the model of outputs ``value`` (one number) and ``kind`` (class labels)."""
    value, kind_ = y["value"], y["kind"]
    names = ("y", "loss")
    if kind == "valid":
        (value, form_v), (kind_, form_k) = (
            _valid_leaf(draw, value),
            _valid_leaf(draw, kind_, labels=True),
        )
        if draw(st.booleans()):
            value, form_v = np.asarray(value)[:, None], f"{form_v} column"
        return {"value": value, "kind": kind_}, ok(f"dict y ({form_v}, {form_k})")
    if kind == "missing-key":
        key = draw(st.sampled_from(["value", "kind"]))
        return {key: y[key]}, reject(names, f"y with only {key!r}")
    if kind == "extra-key":
        return {**y, "other": value}, either(names, "y with an extra key 'other'")
    if kind == "renamed-key":
        return {"value": value, "kinds": kind_}, reject(names, "y keyed 'value', 'kinds'")
    if kind == "lengths":
        m = draw(st.sampled_from([n - 1, n + 1]))
        return {"value": value, "kind": np.resize(kind_, (m,))}, reject(
            ("x", "y"), f"y['kind'] of {m} examples"
        )
    if kind == "as-tuple":
        return (value, kind_), reject(names, "y a tuple for a dict of losses")
    if kind == "one-array":
        return value, reject(names, "y one array for a dict of losses")
    if kind == "value-columns":
        return {"value": np.stack([value] * 2, axis=1), "kind": kind_}, reject(
            names, "y['value'] [N, 2] for one output"
        )
    if kind == "kind-one-hot":
        return {"value": value, "kind": np.eye(CLASSES, dtype=np.float32)[kind_]}, reject(
            names, "y['kind'] one-hot for a sparse cross-entropy"
        )
    if kind == "kind-out-of-range":
        bad = np.array(kind_)
        bad[draw(st.integers(0, n - 1))] = draw(st.sampled_from([CLASSES, -1]))
        return {"value": value, "kind": bad}, reject(names, f"y['kind'] labels {bad}")
    if kind == "bad-leaf":
        key = draw(st.sampled_from(["value", "kind"]))
        leaf, name = _bad_leaf(draw, y[key])
        return {**y, key: leaf}, reject("y", f"y[{key!r}] {name}")
    if kind == "int-keys":
        return {0: value, 1: kind_}, reject("y", "y keyed 0, 1")
    return {}, reject("y", "y = {}")


ONE_INPUT_X_KINDS = ("x-valid", "x-width", "x-dict", "x-list")
"""x for the model of one input and several outputs."""
NESTED_KINDS = (
    *(f"multi_in:{kind}" for kind in (*DICT_X_KINDS, "y-parts")),
    *(f"pair_in:{kind}" for kind in (*LIST_X_KINDS, "y-parts")),
    *(f"multi_out:{kind}" for kind in (*DICT_Y_KINDS, *ONE_INPUT_X_KINDS)),
)


@st.composite
def nested_cases(draw: st.DrawFn, kinds: str) -> Case:
    """Dict, tuple and list x for models of several inputs, dict y for several outputs.

    ``kinds`` is ``"<trainer>:<kind>"``: which model, and what is wrong (or not).
    """
    layout, kind = kinds.split(":")
    targets_wrong = kind == "y-parts" or (layout == "multi_out" and kind in DICT_Y_KINDS)
    method = draw(st.sampled_from(["fit", "evaluate"] if targets_wrong else METHODS))
    n = N
    rng = _seed(draw)
    x, y = _x(layout, n, rng), _y(layout, n, rng)
    if kind == "y-parts":
        # Targets of several parts for a model of one output and one loss.
        y = draw(st.sampled_from([{"out": y}, (y, y), [y, y]]))
        expect = reject(("y", "loss"), f"y {_show(y)} for one loss")
    elif layout == "multi_in":
        x, expect = _corrupt_dict_x(draw, x, n, kind)
    elif layout == "pair_in":
        x, expect = _corrupt_list_x(draw, x, n, kind)
    elif kind in ONE_INPUT_X_KINDS:
        x, expect = {
            "x-valid": (x, ok("x")),
            "x-width": (x[:, :2], reject("x", "x of 2 features")),
            "x-dict": ({"input": x}, either("x", "x a dict for a model of one input")),
            "x-list": ([x, x], either("x", "x a list of two for a model of one input")),
        }[kind]
    else:
        y, expect = _corrupt_dict_y(draw, y, n, kind)
    batch_size = draw(st.sampled_from(BATCH_SIZES))
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    run = _run(draw, layout, method, n, _steps(n, batch_size))
    if method == "fit":
        kwargs.update(epochs=run.epochs)
    return Case(layout, method, x, None if method == "predict" else y, kwargs, expect, run)


@pytest.mark.parametrize("kinds", NESTED_KINDS)
@fuzz_test(max_examples=5)
@given(data=st.data())
def test_fuzzed_nested_structures(
    trainers: dict[str, gf.Trainer], kinds: str, data: st.DataObject
) -> None:
    """Mismatched, missing and extra keys, lengths and widths of nested x and y."""
    _count("test_fuzzed_nested_structures")
    _check_case(trainers, data.draw(nested_cases(kinds), label="case"))


# -- datasets --------------------------------------------------------------------


def _batches(*parts: Any, batch_size: int = 2) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else parts[0]).batch(
        batch_size
    )


def _nothing(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with every element filtered out: empty, of unknown cardinality."""
    return dataset.filter(lambda *element: tf.constant(False))


def _first(x: Any) -> np.ndarray:
    """The first leaf of ``x`` (in the order ``tf.nest`` flattens it)."""
    return tf.nest.flatten(x)[0]


def _with_first(x: Any, leaf: Any) -> Any:
    """``x`` with its first leaf replaced by ``leaf``."""
    return tf.nest.pack_sequence_as(x, [leaf, *tf.nest.flatten(x)[1:]])


def _nan_first_batch(draw: st.DrawFn, x: Any) -> Any:
    """``x`` with a NaN in its first example (so in the first batch)."""
    leaf = np.array(_first(x))
    leaf[0, draw(st.integers(0, leaf.shape[1] - 1))] = math.nan
    return _with_first(x, leaf)


DATASET_LAYOUTS = ("seq", "clf", "kclf", "multi_in", "multi_out")


DATASET_KINDS = (
    "valid",
    "valid-forms",
    "x-only",
    "unbatched",
    "rank",
    "width",
    "strings",
    "dict-element",
    "arguments",
    "empty",
    "static-lengths",
    "nan-features",
    "keys",
)


@st.composite
def dataset_cases(draw: st.DrawFn, kind: str) -> Case:
    """A dataset of good or bad elements for fit, evaluate or predict."""
    nested = ("multi_in", "multi_out")
    layout = draw(st.sampled_from(nested if kind == "keys" else DATASET_LAYOUTS))
    # excluded: evaluate/predict on a dataset holding NaN give NaN logs or predictions, and
    # nothing names `x`, reported
    methods = ["fit"] if kind == "nan-features" else ["fit", "fit", "evaluate", "predict"]
    method = draw(st.sampled_from(methods))
    n = draw(st.sampled_from([4, 5]))
    size = draw(st.sampled_from([2, 3]))
    rng = _seed(draw)
    x, y = _x(layout, n, rng), _y(layout, n, rng)
    steps: int | None = math.ceil(n / size)
    predict = method == "predict"
    extra_y: Any = None
    kwargs: dict[str, Any] = {}
    expect = ok(f"{kind}: (x, y) batches of {size}")

    def raise_(names: tuple[str, ...] | str, why: str) -> Expect:
        return reject(names, f"{kind}: {why}")

    if kind in ("valid", "valid-forms"):
        options = ["pair", "x-only"] if kind == "valid" else ["int-x", "float64-x", "column-y"]
        option = draw(st.sampled_from(options))
        if option in ("int-x", "float64-x"):
            dtype = np.int64 if option == "int-x" else np.float64
            x = tf.nest.map_structure(lambda a: np.round(a * 3).astype(dtype), x)
        elif option == "column-y" and layout != "multi_out":
            y = y[:, None]
        if option == "x-only" and predict:
            dataset = _batches(x, batch_size=size)
        else:
            dataset = _batches(x, y, batch_size=size)
        expect = ok(f"valid dataset ({option})")
    elif kind == "x-only":
        dataset = _batches(x, batch_size=size)
        if not predict:
            expect = raise_("x", "a dataset of x batches only")
    elif kind == "unbatched":
        dataset = tf.data.Dataset.from_tensor_slices(x if predict else (x, y))
        expect = raise_("x", "elements of single examples")
    elif kind == "rank":
        option = draw(st.sampled_from(["[B, 1, F]", "[B]", "[B, F, 1]"]))
        leaf = _first(x)
        leaf = {"[B, 1, F]": leaf[:, None, :], "[B]": leaf[:, 0], "[B, F, 1]": leaf[:, :, None]}[
            option
        ]
        dataset = _batches(_with_first(x, leaf), y, batch_size=size)
        expect = raise_("x", f"features of shape {option}")
        if option == "[B, F, 1]":  # Keras squeezes a trailing axis of 1 off such inputs
            expect = either("x", f"features of shape {option}")
    elif kind == "width":
        leaf = _first(x)
        width = draw(st.sampled_from([1, leaf.shape[1] + 1]))
        dataset = _batches(_with_first(x, np.resize(leaf, (n, width))), y, batch_size=size)
        expect = raise_("x", f"a first input of {width} features, not {leaf.shape[1]}")
    elif kind == "strings":
        role = draw(st.sampled_from(["x", "y"]))
        if role == "x":
            dataset = _batches(_with_first(x, _first(x).astype(str)), y, batch_size=size)
        else:
            dataset = _batches(x, _with_first(y, _first(y).astype(str)), batch_size=size)
        expect = ok("predict ignores the targets") if predict and role == "y" else None
        expect = expect or raise_("x", f"string {role}")
    elif kind == "dict-element":
        dataset = _batches({"x": x, "y": y}, batch_size=size)
        expect = raise_("x", "elements {'x': ..., 'y': ...}")
        if predict and layout == "multi_in":  # a dict of x: the model picks its inputs
            expect = either("x", "elements {'x': ..., 'y': ...}")
    elif kind == "arguments":
        dataset = _batches(x, y, batch_size=size)
        options = ["batch_size"] if predict else ["batch_size", "y", "sample_weight"]
        option = draw(st.sampled_from(options))
        if option == "batch_size":
            kwargs["batch_size"] = draw(st.sampled_from([1, 2, 4]))
        elif option == "y":
            extra_y = draw(st.sampled_from([y, "y", 0.0]))
        else:
            kwargs["sample_weight"] = np.ones(n, np.float32)
        expect = raise_(option, f"{option} with a dataset")
    elif kind == "empty":
        if draw(st.booleans()):
            dataset = _batches(tf.nest.map_structure(lambda a: a[:0], x), batch_size=size)
            if not predict:
                dataset = _batches(
                    tf.nest.map_structure(lambda a: a[:0], x),
                    tf.nest.map_structure(lambda a: a[:0], y),
                    batch_size=size,
                )
            expect = raise_("x", "an empty dataset")
        else:
            dataset = _nothing(_batches(x, y, batch_size=size))
            expect = raise_("x", "a dataset filtered empty (unknown cardinality)")
    elif kind == "static-lengths":
        k = draw(st.integers(1, n - 1))
        first = _with_first(x, _first(x)[:k])
        rest = tf.nest.map_structure(lambda a: a[: k + 1], x)
        shorter_first = tf.nest.pack_sequence_as(
            x, [tf.nest.flatten(first)[0], *tf.nest.flatten(rest)[1:]]
        )
        targets = tf.nest.map_structure(lambda a: a[: k + 1], y)
        dataset = tf.data.Dataset.from_tensors((shorter_first, targets))
        steps, n = 1, k
        expect = raise_("x", f"an element of {k} features and {k + 1} targets (static shapes)")
        if predict and isinstance(x, np.ndarray):
            expect = ok("predict ignores the targets")
    elif kind == "nan-features":
        dataset = _batches(_nan_first_batch(draw, x), y, batch_size=size)
        expect = Expect("either", ("x",), "NaN features in the first batch", True)
    else:
        assert kind == "keys", kind
        if layout == "multi_in":
            option = draw(st.sampled_from(["missing", "renamed", "swapped"]))
            bad = {
                "missing": {"a": x["a"]},
                "renamed": {"a": x["a"], "c": x["b"]},
                "swapped": {"a": x["b"], "b": x["a"]},
            }[option]
            dataset = _batches(bad, y, batch_size=size)
            expect = raise_("x", f"features with keys {option}")
        else:
            option = draw(st.sampled_from(["missing", "renamed", "tuple", "one-array"]))
            bad = {
                "missing": {"value": y["value"]},
                "renamed": {"value": y["value"], "kinds": y["kind"]},
                "tuple": (y["value"], y["kind"]),
                "one-array": y["value"],
            }[option]
            dataset = _batches(x, bad, batch_size=size)
            expect = raise_(("x", "y", "loss"), f"targets {option}")
        if predict and layout == "multi_out":
            expect = ok("predict ignores the targets")
    run = _run(draw, layout, method, n, steps)
    if method == "fit":
        kwargs["epochs"] = run.epochs
    return Case(layout, method, dataset, extra_y, kwargs, expect, run)


@pytest.mark.parametrize("kind", DATASET_KINDS)
@fuzz_test(max_examples=17)
@given(data=st.data())
def test_fuzzed_keras_datasets(
    trainers: dict[str, gf.Trainer], kind: str, data: st.DataObject
) -> None:
    """tf.data inputs of the wrong element structure, types, ranks, keys or emptiness."""
    _count("test_fuzzed_keras_datasets")
    _check_case(trainers, data.draw(dataset_cases(kind), label="case"))


# -- validation_data -------------------------------------------------------------

VAL_NAMES = ("validation_data",)


# excluded: NaN inside a validation dataset gives a History with val_loss NaN, and nothing
# names `validation_data`, reported
VALIDATION_KINDS = (
    "valid",
    "triple",
    "weights-dataset",
    "x-only",
    "unbatched",
    "width",
    "strings",
    "empty",
    "filtered-empty",
    "dict-element",
    "pair-of-datasets",
    "keys",
)


@st.composite
def validation_cases(draw: st.DrawFn, kind: str) -> Case:
    """A fit of valid arrays with ``validation_data`` a dataset, or a triple with weights."""
    layout = draw(st.sampled_from(DATASET_LAYOUTS))
    n, m = 4, draw(st.sampled_from([3, 4]))
    rng = _seed(draw)
    x, y = _x(layout, n, rng), _y(layout, n, rng)
    xv, yv = _x(layout, m, rng), _y(layout, m, rng)
    wv = rng.uniform(0.0, 2.0, m).astype(np.float32)
    expect = ok(f"validation_data {kind}")
    value: Any
    if kind == "valid":
        value = _batches(xv, yv, batch_size=draw(st.sampled_from([2, 3])))
    elif kind == "triple":
        form = draw(st.sampled_from(["array", "list", "column", "tuple"]))
        weights: Any = {"array": wv, "list": wv.tolist(), "column": wv[:, None]}.get(form, wv)
        value = (xv, yv, weights) if form != "tuple" else [xv, yv, weights]
        # excluded: bad weights of a validation triple are named `sample_weight` (an argument
        # the caller did not pass), not `validation_data`, reported
    elif kind == "weights-dataset":
        value = _batches(xv, yv, wv)
    elif kind == "x-only":
        value = _batches(xv)
        expect = reject(VAL_NAMES, "validation dataset of x only")
    elif kind == "unbatched":
        value = tf.data.Dataset.from_tensor_slices((xv, yv))
        expect = reject(VAL_NAMES, "validation dataset of single examples")
    elif kind == "width":
        leaf = _first(xv)
        value = _batches(_with_first(xv, np.resize(leaf, (m, leaf.shape[1] + 2))), yv)
        expect = reject(VAL_NAMES, "validation features of the wrong width")
    elif kind == "strings":
        value = _batches(_with_first(xv, _first(xv).astype(str)), yv)
        expect = reject(VAL_NAMES, "validation features of strings")
    elif kind == "empty":
        empty_x = tf.nest.map_structure(lambda a: a[:0], xv)
        value = _batches(empty_x, tf.nest.map_structure(lambda a: a[:0], yv))
        expect = reject(VAL_NAMES, "empty validation dataset")
    elif kind == "filtered-empty":
        value = _nothing(_batches(xv, yv))
        expect = reject(VAL_NAMES, "validation dataset filtered empty")
    elif kind == "dict-element":
        value = _batches({"x": xv, "y": yv})
        expect = reject(VAL_NAMES, "validation elements {'x': ..., 'y': ...}")
    elif kind == "pair-of-datasets":
        value = (_batches(xv), _batches(yv))
        expect = reject(VAL_NAMES, "validation_data a pair of datasets")
    else:
        assert kind == "keys", kind
        if layout == "multi_in":
            value = _batches({"a": xv["a"], "c": xv["b"]}, yv)
            expect = reject(VAL_NAMES, "validation features keyed 'a', 'c'")
        elif layout == "multi_out":
            value = _batches(xv, {"value": yv["value"]})
            expect = reject((*VAL_NAMES, "loss"), "validation targets without 'kind'")
        else:
            value = _batches(xv, {"out": yv})
            expect = reject((*VAL_NAMES, "loss"), "validation targets a dict for one loss")
    batch_size = draw(st.sampled_from([None, 2]))
    epochs = draw(st.integers(1, 2))
    run = Run("fit", epochs, _steps(n, batch_size), validation=True, logs=_logs(layout))
    kwargs = {
        "epochs": epochs,
        "batch_size": batch_size,
        "validation_data": value,
        "shuffle": False,
    }
    return Case(layout, "fit", x, y, kwargs, expect, run)


@pytest.mark.parametrize("kind", VALIDATION_KINDS)
@fuzz_test(max_examples=7)
@given(data=st.data())
def test_fuzzed_validation_datasets(
    trainers: dict[str, gf.Trainer], kind: str, data: st.DataObject
) -> None:
    """validation_data as datasets of good and bad elements, and as weighted triples."""
    _count("test_fuzzed_validation_datasets")
    _check_case(trainers, data.draw(validation_cases(kind), label="case"))


# -- sample weights --------------------------------------------------------------

WEIGHT_LAYOUTS = ("seq", "clf", "kclf", "multi_in", "multi_out")


ARRAY_WEIGHT_KINDS = (
    "valid",
    "forms",
    "signs",
    "length",
    "nonfinite",
    "rank",
    "scalar",
    "strings",
    "none-inside",
    "structure",
    "empty",
    "complex",
    "ragged",
    "dataset",
)
DATASET_WEIGHT_KINDS = (
    "valid",
    "forms",
    "two-columns",
    "strings",
    "complex",
    "scalar-weights",
    "static",
    "nan",
)
WEIGHT_KINDS = (*ARRAY_WEIGHT_KINDS, *(f"dataset:{kind}" for kind in DATASET_WEIGHT_KINDS))


def _sample_weight(
    draw: st.DrawFn, n: int, rng: np.random.Generator, kind: str
) -> tuple[Any, Expect]:
    """``sample_weight=`` for ``n`` examples: valid in several forms, or wrong."""
    w = rng.uniform(0.0, 2.0, n).astype(np.float32)
    name = "sample_weight"
    if kind in ("valid", "forms", "signs"):
        options: dict[str, Any] = {
            "float32": w,
            "float64": w.astype(np.float64),
            "list": w.tolist(),
        }
        if kind == "forms":
            options = {
                "column": w[:, None],
                "tensor": tf.constant(w),
                "int": np.round(w).astype(np.int64),
                "bool": w > 1.0,
            }
        elif kind == "signs":  # Keras takes any finite weights
            options = {"zeros": np.zeros(n, np.float32), "negative": -w, "mixed": w - 1.0}
        form = draw(st.sampled_from(sorted(options)))
        return options[form], ok(f"sample_weight {form}")
    if kind == "length":
        m = draw(st.sampled_from([1, n - 1, n + 1, 2 * n]))
        return np.resize(w, (m,)), reject(name, f"sample_weight of {m} for {n} examples")
    if kind == "nonfinite":
        bad = np.array(w, np.float64)
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e39]))
        bad[draw(st.integers(0, n - 1))] = value
        return bad, reject(name, f"sample_weight holding {value}")
    if kind == "rank":
        options = {
            "[N, 2]": np.stack([w, w], axis=1),
            "[1, N]": w[None],
            "[N, 1, 1]": w[:, None, None],
        }
        shape = draw(st.sampled_from(sorted(options)))
        return options[shape], reject(name, f"sample_weight of shape {shape}")
    if kind == "scalar":
        return draw(st.sampled_from([1.0, 2, np.float32(0.5)])), reject(name, "scalar")
    if kind == "strings":
        options = {"str-array": w.astype(str), "str": "balanced", "bytes": b"\x00\x01"}
        form = draw(st.sampled_from(sorted(options)))
        return options[form], reject(name, f"sample_weight {form}")
    if kind == "none-inside":
        return [*w.tolist()[:-1], None], reject(name, "sample_weight list with None")
    if kind == "structure":
        options = {
            "dict": {"value": w, "kind": w},
            "tuple": (w, w),
            "list-of-arrays": [w, w],
        }
        form = draw(st.sampled_from(sorted(options)))
        return options[form], reject(name, f"sample_weight a {form}")
    if kind == "empty":
        return np.zeros(0, np.float32), reject(name, "empty sample_weight")
    if kind == "complex":
        return w.astype(np.complex64), reject(name, "complex sample_weight")
    if kind == "ragged":
        return [[v] for v in w.tolist()[:-1]] + [[1.0, 2.0]], reject(name, "ragged")
    return _batches(w), reject(name, "sample_weight a dataset")


@st.composite
def sample_weight_cases(draw: st.DrawFn, kind: str) -> Case:
    """``sample_weight=`` for fit or evaluate of in-memory data, or weights in a dataset."""
    layout = draw(st.sampled_from(WEIGHT_LAYOUTS))
    # excluded: evaluate on a dataset holding a NaN weight gives a NaN loss, and nothing
    # names `x`, reported
    method = draw(st.sampled_from(["fit"] if kind == "dataset:nan" else ["fit", "evaluate"]))
    n = N
    rng = _seed(draw)
    x, y = _x(layout, n, rng), _y(layout, n, rng)
    kwargs: dict[str, Any] = {}
    if not kind.startswith("dataset:"):
        weights, expect = _sample_weight(draw, n, rng, kind)
        batch_size = draw(st.sampled_from(BATCH_SIZES))
        kwargs.update(sample_weight=weights, batch_size=batch_size)
        steps = _steps(n, batch_size)
    else:
        x, expect, steps = _weights_dataset(draw, x, y, n, rng, kind.split(":")[1])
        y = None
    run = _run(draw, layout, method, n, steps)
    if method == "fit":
        kwargs["epochs"] = run.epochs
    return Case(layout, method, x, y, kwargs, expect, run)


def _weights_dataset(
    draw: st.DrawFn, x: Any, y: Any, n: int, rng: np.random.Generator, kind: str
) -> tuple[tf.data.Dataset, Expect, int]:
    """A dataset of ``(x, y, w)`` batches, with good or bad weights ``w``."""
    w = rng.uniform(0.0, 2.0, n).astype(np.float32)
    size = 2
    steps = math.ceil(n / size)
    if kind in ("valid", "forms"):
        options: dict[str, Any] = {"float32": w, "negative": -w}
        if kind == "forms":
            options = {
                "column": w[:, None],
                "int": np.round(w).astype(np.int32),
                "float64": w.astype(np.float64),
            }
        form = draw(st.sampled_from(sorted(options)))
        return _batches(x, y, options[form], batch_size=size), ok(f"dataset weights {form}"), steps
    if kind == "two-columns":
        wide = np.stack([w, w], axis=1)
        return _batches(x, y, wide), reject("x", "dataset weights of shape [B, 2]"), steps
    if kind == "strings":
        return _batches(x, y, w.astype(str)), reject("x", "dataset of string weights"), steps
    if kind == "complex":
        return _batches(x, y, w.astype(np.complex64)), reject("x", "complex weights"), steps
    if kind == "scalar-weights":
        dataset = _batches(x, y).map(lambda a, b: (a, b, tf.constant(1.0)))
        return dataset, reject("x", "dataset weights of rank 0"), steps
    if kind == "static":
        dataset = tf.data.Dataset.from_tensors((x, y, w[:-1]))
        return dataset, reject("x", f"{n} examples and {n - 1} weights (static)"), 1
    assert kind == "nan", kind
    bad = np.array(w)
    bad[0] = math.nan
    dataset = _batches(x, y, bad, batch_size=size)
    return dataset, Expect("either", ("x",), "NaN weight in the first batch", True), steps


@pytest.mark.parametrize("kind", WEIGHT_KINDS)
@fuzz_test(max_examples=8)
@given(data=st.data())
def test_fuzzed_sample_weights(
    trainers: dict[str, gf.Trainer], kind: str, data: st.DataObject
) -> None:
    """Wrong lengths, ranks, types and non-finite sample weights, in arrays and datasets."""
    _count("test_fuzzed_sample_weights")
    _check_case(trainers, data.draw(sample_weight_cases(kind), label="case"))


# -- class weights ---------------------------------------------------------------

GOOD_CLASS_WEIGHTS: dict[str, Any] = {
    "two classes": {0: 2.0, 2: 0.5},
    "an int weight": {1: 3},
    "every class": {0: 1.0, 1: 2.0, 2: 0.25},
    "numpy keys and values": {np.int64(0): np.float32(2.0), np.uint8(2): np.float64(0.5)},
    "a class beyond the labels": {7: 4.0},
    "zero weight": {0: 0.0, 1: 1.0},
    "negative weight": {1: -0.5},
}
BAD_CLASS_WEIGHTS: dict[str, Any] = {
    "string key": {"0": 1.0},
    "float key": {0.0: 2.0},
    "fractional key": {0.5: 2.0},
    "bool key": {True: 2.0},
    "negative key": {-1: 2.0},
    "None key": {None: 2.0},
    "tuple key": {(0,): 2.0},
    "NaN value": {0: math.nan},
    "inf value": {1: math.inf},
    "string value": {0: "2"},
    "None value": {0: None},
    "list value": {0: [2.0]},
    "bool value": {0: True},
    "complex value": {0: 1j},
    "empty dict": {},
    "a list": [1.0, 2.0, 0.5],
    "a number": 2.0,
    "'balanced'": "balanced",
    "a set": {0, 1},
    "an array": np.ones(3),
}


@st.composite
def class_weight_cases(draw: st.DrawFn, name: str) -> Case:
    """``class_weight=`` for a fit of arrays or a dataset, alone or with sample weights."""
    layout = draw(st.sampled_from(["clf", "clf", "kclf", "seq", "multi_in", "multi_out"]))
    n = N
    rng = _seed(draw)
    x, y = _x(layout, n, rng), _y(layout, n, rng)
    good = name in GOOD_CLASS_WEIGHTS
    class_weight = GOOD_CLASS_WEIGHTS[name] if good else BAD_CLASS_WEIGHTS[name]
    expect = ok(f"class_weight {name}") if good else reject("class_weight", name)
    as_dataset = draw(st.booleans())
    if good and layout == "multi_out":
        expect = reject("class_weight", f"class_weight {name} for a dict of targets")
    kwargs: dict[str, Any] = {"class_weight": class_weight}
    together = draw(st.integers(0, 4)) == 0
    if as_dataset:
        size = draw(st.sampled_from([2, 3]))
        steps = math.ceil(n / size)
        if together:
            data: Any = _batches(x, y, np.ones(n, np.float32), batch_size=size)
            expect = reject("class_weight", f"{expect.why}, with a dataset of (x, y, w)")
        else:
            data = _batches(x, y, batch_size=size)
        x, y = data, None
    else:
        batch_size = draw(st.sampled_from(BATCH_SIZES))
        kwargs["batch_size"] = batch_size
        steps = _steps(n, batch_size)
        if together:
            kwargs["sample_weight"] = np.ones(n, np.float32)
            names = ("class_weight", "sample_weight")
            expect = reject(names, f"{expect.why}, with sample_weight")
    run = _run(draw, layout, "fit", n, steps)
    kwargs.update(epochs=run.epochs)
    return Case(layout, "fit", x, y, kwargs, expect, run)


@pytest.mark.parametrize("name", [*GOOD_CLASS_WEIGHTS, *BAD_CLASS_WEIGHTS])
@fuzz_test(max_examples=4)
@given(data=st.data())
def test_fuzzed_class_weights(
    trainers: dict[str, gf.Trainer], name: str, data: st.DataObject
) -> None:
    """Class weights with keys that are not class indices, bad values, with sample weights."""
    _count("test_fuzzed_class_weights")
    _check_case(trainers, data.draw(class_weight_cases(name), label="case"))


# -- the count -------------------------------------------------------------------


def test_zz_at_least_800_cases_were_generated() -> None:
    """Runs last in the module: its fuzz tests together ran at least 800 generated cases."""
    missing = [name for name in FUZZ_TESTS if name not in CASE_COUNTS]
    if missing:
        pytest.skip(f"not every fuzz test ran (missing {missing})")
    total = sum(CASE_COUNTS.values())
    assert total >= MIN_TOTAL_CASES, f"only {total} generated cases: {dict(CASE_COUNTS)}"
