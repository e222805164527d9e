"""Fuzzed inputs to ``fit``, ``evaluate`` and ``predict`` (issue 6, "Input fuzzing").

Hypothesis draws inputs, most of them malformed and some valid: wrong ranks
and shapes, mismatched lengths, NaN and infinity at random positions, empty
data, ragged lists, strings and objects, wrong dtypes, bad
``validation_data``, bad ``epochs``/``batch_size``/``shuffle``/``seed``, bad
callbacks and datasets of the wrong element structure. Every case must do
one of two things (DESIGN.md, "Errors"):

* succeed with a sane result: a History of finite logs and one update per
  batch, finite metrics, predictions of the right shape; evaluating and
  predicting change nothing;
* or be rejected by gradfit itself: a ``ValueError`` or ``TypeError`` raised
  in gradfit's code, whose message names the offending argument in
  backticks, with every model variable and the update rule's ``iterations``
  exactly as they were. A raw ``tf.errors.OpError``, a TensorFlow tracing
  error or any other exception type fails the case.

Each case says which outcome it allows ("ok", "raise" or "either": inputs
such as targets of shape ``[N, 2]`` for a one-output model broadcast, and
gradfit may take or refuse them). Inputs that only the data's values or the
loss can expose (class labels out of range, low-precision floats, validation
targets, batches whose sizes disagree) have tests of their own, so that one
fault stops one test and leaves the others' cases running. Shrinking is off
(see ``PHASES``). The trainers are built once per module and
shared; their variables are restored after every case, so cases are
independent. The number of generated cases is counted per test, printed in
the terminal summary and checked by the last test of the module.
"""

from __future__ import annotations

import collections
import math
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import gradfit as gf
from gradfit.models import variables_by_path

# -- bookkeeping -------------------------------------------------------------

CASE_COUNTS: collections.Counter[str] = collections.Counter()
"""Generated cases run, per test (hypothesis calls of the test body)."""

# One worker runs the whole module (pytest-xdist), so the last test sees every count.
pytestmark = pytest.mark.xdist_group("fuzz_inputs")

MIN_TOTAL_CASES = 500
FUZZ_TESTS: list[str] = []  # filled by `fuzz_test`

PHASES = (Phase.explicit, Phase.reuse, Phase.generate)
"""No shrinking: a failing case is small by construction and its message says what it was,
and shrinking a TensorFlow call costs more than the whole run is allowed (~60 s on 2 cores)."""


def _examples(n: int) -> int:
    """``n`` examples, or more under a profile that asks for more (``thorough``)."""
    return max(n, settings.default.max_examples)


def fuzz_test(max_examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for a fuzz test; registers it for the case count."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        FUZZ_TESTS.append(test.__name__)
        return settings(max_examples=_examples(max_examples), deadline=None, phases=PHASES)(test)

    return decorate


OUTCOMES: collections.Counter[tuple[str, str]] = collections.Counter()
"""Cases per test and outcome ("accepted" or "rejected")."""
_current_test = ""


def _begin(test: str) -> None:
    """Names the test whose outcomes `check_call` counts."""
    global _current_test
    _current_test = test


def _count(test: str) -> None:
    """Counts one generated case of ``test``."""
    _begin(test)
    CASE_COUNTS[test] += 1


class CaseCountReport:
    """Pytest plugin that prints a fuzz module's generated case counts at the end of the run.

    Args:
        title: The summary's heading.
        counts: Cases run, per test.
        outcomes: ``(test, "accepted" | "rejected")`` counts.
        tests: The tests, in the order to print.
    """

    def __init__(
        self,
        title: str,
        counts: collections.Counter[str],
        outcomes: collections.Counter[tuple[str, str]],
        tests: list[str],
    ) -> None:
        self.title, self.counts, self.outcomes, self.tests = title, counts, outcomes, tests

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.counts:
            return
        terminalreporter.write_sep("-", self.title)
        for name in self.tests:
            if name in self.counts:
                accepted = self.outcomes[name, "accepted"]
                rejected = self.outcomes[name, "rejected"]
                terminalreporter.write_line(
                    f"{name}: {self.counts[name]} ({accepted} accepted, {rejected} rejected)"
                )
        terminalreporter.write_line(f"total: {sum(self.counts.values())}")

    def register(self, request: pytest.FixtureRequest, name: str) -> None:
        """Registers the plugin as ``name`` (once per session)."""
        manager = request.config.pluginmanager
        if not manager.has_plugin(name):
            manager.register(self, name)


@pytest.fixture(scope="module", autouse=True)
def _report_case_counts(request: pytest.FixtureRequest) -> None:
    report = CaseCountReport(
        "gradfit input fuzzing: generated cases", CASE_COUNTS, OUTCOMES, FUZZ_TESTS
    )
    report.register(request, "gradfit-fuzz-case-count")


# -- trainers and data -------------------------------------------------------

CLASSES = 3
LAYOUTS = ("2d", "1d", "clf")
"""A LinearModel on 2 features, a LinearModel on 1-D x, an MLP classifier on 2 features."""


def _x(layout: str, n: int, rng: np.random.Generator) -> np.ndarray:
    shape = (n,) if layout == "1d" else (n, 2)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def _y(layout: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if layout == "clf":
        return rng.integers(0, CLASSES, n).astype(np.int32)
    return rng.uniform(-1.0, 1.0, n).astype(np.float32)


def _prediction_shape(layout: str, n: int) -> tuple[int, ...]:
    return {"2d": (n, 1), "1d": (n,), "clf": (n, CLASSES)}[layout]


@pytest.fixture(scope="module")
def trainers() -> dict[str, gf.Trainer]:
    """One built trainer per layout, shared by every case (variables are restored)."""
    found = {
        "2d": gf.Trainer(
            gf.LinearModel(weight_init=0.5, bias_init=0.25), gf.L2(), gf.SGD(0.1), jit_compile=False
        ),
        "1d": gf.Trainer(
            gf.LinearModel(weight_init=0.5, bias_init=0.25), gf.L2(), gf.SGD(0.1), jit_compile=False
        ),
        "clf": gf.Trainer(
            gf.MLP((4,), units=CLASSES, seed=0),
            gf.SparseCategoricalCrossentropy(from_logits=True),
            gf.SGD(0.1),
            jit_compile=False,
        ),
    }
    rng = np.random.default_rng(0)
    for layout, trainer in found.items():
        trainer.fit(_x(layout, 4, rng), _y(layout, 4, rng))
    return found


# -- state snapshots ---------------------------------------------------------


class Snapshot:
    """Every model and update-rule variable of a trainer, and ``iterations``."""

    def __init__(self, trainer: gf.Trainer) -> None:
        self.trainer = trainer
        self.values = {
            key: (variable, np.array(variable.numpy(), copy=True))
            for key, variable in self._variables().items()
        }
        self.iterations = int(trainer.update_rule.iterations.numpy())
        assert trainer.model.built and self.values, "the trainer must be built"

    def _variables(self) -> dict[str, tf.Variable]:
        found = {f"model/{k}": v for k, v in variables_by_path(self.trainer.model).items()}
        found.update(
            {f"rule/{k}": v for k, v in variables_by_path(self.trainer.update_rule).items()}
        )
        return found

    def changes(self) -> list[str]:
        """Names of what differs from the snapshot (``iterations`` included)."""
        now = self._variables()
        changed = sorted(set(now) ^ set(self.values))
        for key, (_, value) in self.values.items():
            if key in now and not np.array_equal(now[key].numpy(), value, equal_nan=True):
                changed.append(key)
        if int(self.trainer.update_rule.iterations.numpy()) != self.iterations:
            changed.append("iterations")
        return changed

    def restore(self) -> None:
        for variable, value in self.values.values():
            variable.assign(value)


# -- the oracle --------------------------------------------------------------

GRADFIT_DIR = Path(gf.__file__).resolve().parent


@dataclass(frozen=True)
class Expect:
    """What a case allows.

    Attributes:
        outcome: ``"ok"`` (must succeed), ``"raise"`` (must be rejected) or
            ``"either"``.
        names: Arguments a rejection may name (in backticks); one is enough.
        why: The case, for failure messages.
    """

    outcome: str
    names: tuple[str, ...] = ()
    why: str = "valid input"


OK = Expect("ok")


def _raise(names: tuple[str, ...] | str, why: str) -> Expect:
    return Expect("raise", (names,) if isinstance(names, str) else names, why)


def _either(names: tuple[str, ...] | str, why: str) -> Expect:
    return Expect("either", (names,) if isinstance(names, str) else names, why)


def _raised_in_gradfit(error: BaseException) -> bool:
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(GRADFIT_DIR)


def _summary(error: Exception) -> str:
    """The message without TensorFlow's "Detected at node ... defined at" stack."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 6:
        lines = [*lines[:2], "...", *lines[-3:]]
    return "\n".join(line[:300] for line in lines)


def _check_rejection(error: Exception, snapshot: Snapshot, expect: Expect) -> None:
    shown = f"{type(error).__module__}.{type(error).__qualname__}: {_summary(error)}"
    changed = snapshot.changes()
    assert not changed, f"{expect.why}: {changed} changed before the error {shown}"
    assert not isinstance(error, tf.errors.OpError), f"{expect.why}: raw TensorFlow error {shown}"
    assert isinstance(error, ValueError | TypeError), f"{expect.why}: wrong error type {shown}"
    assert _raised_in_gradfit(error), f"{expect.why}: error not raised by gradfit: {shown}"
    message = str(error)
    assert any(f"`{name}`" in message for name in expect.names), (
        f"{expect.why}: none of {[f'`{n}`' for n in expect.names]} is named in {shown}"
    )
    assert expect.outcome != "ok", f"{expect.why}: valid input rejected: {shown}"


def _finite(value: Any) -> bool:
    return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))


@dataclass
class Run:
    """How a successful call must look.

    Attributes:
        method: ``"fit"``, ``"evaluate"`` or ``"predict"``.
        epochs: Epochs of a fit.
        steps: Batches per epoch of a fit (``None``: not checked).
        prediction_shape: Shape ``predict`` must return.
        validation: Whether the fit had validation data.
    """

    method: str
    epochs: int = 1
    steps: int | None = None
    prediction_shape: tuple[int, ...] | None = None
    validation: bool = False


def _check_result(result: Any, snapshot: Snapshot, run: Run, expect: Expect) -> None:
    why = expect.why
    assert expect.outcome != "raise", f"{why}: accepted, but must be rejected: {result!r:.300}"
    trainer = snapshot.trainer
    if run.method == "fit":
        assert isinstance(result, gf.History), f"{why}: fit returned {result!r:.200}"
        assert result.epoch == list(range(run.epochs)), f"{why}: epochs {result.epoch}"
        assert "loss" in result.history, f"{why}: no loss in {result.history}"
        assert ("val_loss" in result.history) == run.validation, f"{why}: {result.history}"
        for key, values in result.history.items():
            assert len(values) == run.epochs, f"{why}: {key} has {len(values)} entries"
            assert _finite(values), f"{why}: {key} is not finite: {values}"
        if run.steps is not None:
            done = int(trainer.update_rule.iterations.numpy()) - snapshot.iterations
            assert done == run.epochs * run.steps, f"{why}: {done} updates, not {run.steps}/epoch"
        for variable in trainer.model.trainable_variables:
            assert _finite(variable.numpy()), f"{why}: {variable.name} is not finite"
        return
    changed = snapshot.changes()
    assert not changed, f"{why}: {run.method} changed {changed}"
    if run.method == "evaluate":
        assert isinstance(result, dict) and "loss" in result, f"{why}: evaluate gave {result}"
        assert _finite(list(result.values())), f"{why}: evaluate gave {result}"
        return
    assert isinstance(result, np.ndarray), f"{why}: predict gave {type(result)}"
    assert result.shape == run.prediction_shape, (
        f"{why}: predictions of shape {result.shape}, not {run.prediction_shape}"
    )
    assert _finite(result), f"{why}: predictions are not finite"


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
        if error is not None:
            _check_rejection(error, snapshot, expect)
        else:
            _check_result(result, snapshot, run, expect)
    finally:
        snapshot.restore()


def _call(trainer: gf.Trainer, method: str, x: Any, y: Any, kwargs: dict[str, Any]) -> Any:
    if method == "fit":
        return trainer.fit(x, y, **kwargs)
    if method == "evaluate":
        return trainer.evaluate(x, y, **kwargs)
    return trainer.predict(x, **kwargs)


def _steps(n: int, batch_size: Any) -> int:
    size = n if batch_size is None else min(int(batch_size), n)
    return math.ceil(n / size)


# -- containers ----------------------------------------------------------------


def _container(draw: st.DrawFn, value: Any) -> Any:
    """``value`` as an array, a (nested) list or a tensor; the values are kept."""
    array = np.asarray(value)
    form = draw(st.sampled_from(["array", "list", "tensor"]))
    if form == "list":
        return array.tolist()
    if form == "tensor":
        return tf.constant(array)
    return array


def _valid_form(draw: st.DrawFn, layout: str, role: str, array: np.ndarray) -> tuple[Any, str]:
    """A valid rendering of valid data: other containers and numeric dtypes, a column of y."""
    if role == "y" and layout == "clf":
        forms = ["int32", "int64", "uint8", "float32", "list", "tuple", "tensor", "column"]
    elif role == "y":
        forms = ["float32", "float64", "float16", "list", "tuple", "tensor", "column", "int"]
    else:
        forms = ["float32", "float64", "float16", "list", "tensor", "variable", "int", "bool"]
    form = draw(st.sampled_from(forms))
    if form in ("float32", "float64", "float16", "int32", "int64", "uint8"):
        return array.astype(form), form
    if form == "int":
        return np.round(array).astype(np.int64), form
    if form == "bool":
        return array > 0, form
    if form == "list":
        return array.tolist(), form
    if form == "tuple":
        return tuple(array.tolist()), form
    if form == "tensor":
        return tf.constant(array), form
    if form == "variable":
        return tf.Variable(array), form
    return array[:, None], form  # column


# -- corruptions of x or y (in-memory data) ------------------------------------

Corruption = Callable[[st.DrawFn, str, str, np.ndarray], tuple[Any, Expect]]


def _rank(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    if role == "x":
        if layout == "1d":
            options = {
                "column": a[:, None],
                "two-columns": np.stack([a, a], axis=1),
                "rank-3": a[:, None, None],
                "scalar": a[0],
            }
        else:
            options = {
                "rank-1": a[:, 0],
                "one-column": a[:, :1],
                "three-columns": np.concatenate([a, a[:, :1]], axis=1),
                "rank-3": a[:, :, None],
                "transposed": a.T,
                "scalar": a[0, 0],
            }
        name = draw(st.sampled_from(sorted(options)))
        names = ("x", "y") if name == "transposed" else ("x",)
        return _container(draw, options[name]), _raise(names, f"x {name} ({layout})")
    options = {
        "scalar": (a[0], _raise("y", "y scalar")),
        "column": (a[:, None], Expect("ok", (), "y [N, 1]")),
        "two-columns": (np.stack([a, a], axis=1), _either(("y", "loss"), "y [N, 2]")),
        "rank-3": (a[:, None, None], _either(("y", "loss"), "y [N, 1, 1]")),
        "row": (a[None, :], _raise(("x", "y"), "y [1, N]")),
    }
    name = draw(st.sampled_from(sorted(options)))
    value, expect = options[name]
    return _container(draw, value), expect


def _length(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    m = draw(st.integers(1, 7).filter(lambda m: m != len(a)))
    value = np.resize(a, (m, *a.shape[1:]))
    return _container(draw, value), _raise(("x", "y"), f"{role} of {m} examples, not {len(a)}")


def _nonfinite(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    value = np.array(a, dtype=np.float64)
    index = tuple(draw(st.integers(0, side - 1)) for side in value.shape)
    bad = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -1e300]))
    value[index] = bad
    return _container(draw, value), _raise(role, f"{role}{list(index)} = {bad}")


def _empty(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    options: dict[str, Any] = {
        "no-examples": np.zeros((0, *a.shape[1:]), a.dtype),
        "empty-list": [],
        "nested-empty-list": [[]],
        "no-features": np.zeros((len(a), 0), np.float32),
        "empty-tensor": tf.zeros((0, *a.shape[1:])),
    }
    name = draw(st.sampled_from(sorted(options)))
    return options[name], _raise(role, f"{role} empty ({name})")


def _ragged(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    i = draw(st.integers(0, len(a) - 1))
    rows: list[Any] = a.tolist()
    if a.ndim == 1:
        rows = [[v] for v in rows] if draw(st.booleans()) else rows
        rows[i] = [float(a[i]), float(a[i])] if isinstance(rows[i], list) else [float(a[i])]
        return rows, _raise(role, f"ragged list {role}")
    rows[i] = rows[i][:1] if draw(st.booleans()) else [*rows[i], 0.5]
    if draw(st.booleans()):
        return tf.ragged.constant(rows), _raise(role, f"RaggedTensor {role}")
    return rows, _raise(role, f"ragged list {role}")


def _strings(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    options: dict[str, Any] = {
        "str-list": np.char.mod("%.3f", a).tolist(),
        "str-array": a.astype(str),
        "bytes-array": a.astype(bytes),
        "str-tensor": tf.constant(a.astype(str)),
        "str": "0.1, 0.2, 0.3",
        "bytes": b"\x00\x01\x02\x03",
        "mixed-list": [*a.tolist()[:-1], "oops"],
    }
    name = draw(st.sampled_from(sorted(options)))
    return options[name], _raise(role, f"{role} {name}")


def _generator(a: np.ndarray) -> Iterator[Any]:
    yield from a


def _objects(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    with_none = a.astype(object)
    with_none.flat[draw(st.integers(0, a.size - 1))] = None
    options: dict[str, Any] = {
        "None": None,
        "object": object(),
        "dict": {role: a},
        "set": {1.0, 2.0},
        "object-array": a.astype(object),
        "object-array-with-None": with_none,
        "list-with-None": [*a.tolist()[:-1], None],
        "function": lambda: a,
        "generator": _generator(a),
        "Ellipsis": Ellipsis,
        "huge-int-list": [10**400] * len(a),
    }
    name = draw(st.sampled_from(sorted(options)))
    return options[name], _raise(role, f"{role} {name}")


def _dtype(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    options: dict[str, tuple[Any, Expect]] = {
        "complex64": (a.astype(np.complex64), _raise(role, "complex64")),
        "complex128": (a.astype(np.complex128) + 1j, _raise(role, "complex128")),
        "complex-tensor": (tf.constant(a.astype(np.complex64)), _raise(role, "complex tensor")),
        "datetime64": (np.zeros(a.shape, "datetime64[s]"), _raise(role, "datetime64")),
        "timedelta64": (np.zeros(a.shape, "timedelta64[s]"), _raise(role, "timedelta64")),
        "bool": (a > 0, OK),
        "uint64": (np.abs(a).astype(np.uint64), OK),
        "int8": (a.astype(np.int8), OK),
        "longdouble": (a.astype(np.longdouble), OK),
        "float16-tensor": (tf.constant(a.astype(np.float16)), OK),
        "bool-tensor": (tf.constant(a > 0), OK),
    }
    name = draw(st.sampled_from(sorted(options)))
    value, expect = options[name]
    return value, Expect(expect.outcome, expect.names, f"{role} {name}")


def _scalar(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    options: dict[str, Any] = {
        "float": 1.5,
        "int": 3,
        "numpy": np.float32(1.0),
        "0-d-array": np.array(2.0),
        "0-d-tensor": tf.constant(2.0),
        "bool": True,
    }
    name = draw(st.sampled_from(sorted(options)))
    return options[name], _raise(role, f"{role} scalar {name}")


def _labels(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    """Class labels outside ``[0, CLASSES)`` (the classifier's targets)."""
    value = np.array(a, dtype=np.int64)
    index = draw(st.integers(0, len(a) - 1))
    bad = draw(st.sampled_from([CLASSES, CLASSES + 1, 100, -1, -7]))
    value[index] = bad
    form = draw(st.sampled_from(["int", "float", "list"]))
    data: Any = value.astype(np.float32) if form == "float" else value
    data = value.tolist() if form == "list" else data
    return data, _raise(("y", "loss"), f"class label {bad} of {CLASSES} classes at {index}")


def _fractional_labels(
    draw: st.DrawFn, layout: str, role: str, a: np.ndarray
) -> tuple[Any, Expect]:
    value = np.array(a, dtype=np.float32)
    value[draw(st.integers(0, len(a) - 1))] += 0.5
    return value, _either(("y", "loss"), "fractional class labels")


def _low_precision(draw: st.DrawFn, layout: str, role: str, a: np.ndarray) -> tuple[Any, Expect]:
    """Floating-point dtypes below float16: gradfit may take them or name them."""
    floats = tf.constant(a, tf.float32)  # TensorFlow casts no integers to float8
    options: dict[str, Any] = {
        "bfloat16-tensor": tf.cast(floats, tf.bfloat16),
        "bfloat16-array": a.astype(ml_dtypes.bfloat16),
        "float8-tensor": tf.cast(floats, tf.dtypes.experimental.float8_e4m3fn),
        "float8-array": a.astype(ml_dtypes.float8_e5m2),
    }
    name = draw(st.sampled_from(sorted(options)))
    return options[name], _either(role, f"{role} {name}")


ARRAY_CORRUPTIONS: dict[str, Corruption] = {
    "rank": _rank,
    "length": _length,
    "nonfinite": _nonfinite,
    "empty": _empty,
    "ragged": _ragged,
    "strings": _strings,
    "objects": _objects,
    "dtype": _dtype,
    "scalar": _scalar,
}


def _show(value: Any) -> str:
    """A short rendering of an input for a falsifying example."""
    if isinstance(value, tf.data.Dataset):
        return f"Dataset(element_spec={value.element_spec})"
    if isinstance(value, tuple | list) and len(value) <= 3:
        inner = ", ".join(_show(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(value).__name__}{tuple(shape)}:{dtype}"
    return repr(value)[:80]


@dataclass
class ArrayCase:
    layout: str
    method: str
    x: Any
    y: Any
    kwargs: dict[str, Any]
    expect: Expect
    run: Run

    def __repr__(self) -> str:
        return (
            f"ArrayCase({self.expect.why!r}, {self.layout}, {self.method}, x={_show(self.x)}, "
            f"y={_show(self.y)}, {self.kwargs})"
        )


@st.composite
def array_cases(
    draw: st.DrawFn,
    corruptions: dict[str, Corruption],
    layouts: tuple[str, ...] = LAYOUTS,
    roles: tuple[str, ...] = ("x", "y"),
    valid_weight: int = 1,
) -> ArrayCase:
    """A call of fit, evaluate or predict with one of x and y corrupted (or neither)."""
    layout = draw(st.sampled_from(layouts))
    method = draw(st.sampled_from(["fit", "evaluate", "predict"] if "x" in roles else ["fit"]))
    n = draw(st.sampled_from([4, 5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    clean = {"x": _x(layout, n, rng), "y": _y(layout, n, rng)}
    data: dict[str, Any] = {}
    for role in ("x", "y"):
        data[role], _ = _valid_form(draw, layout, role, clean[role])
    kinds = ["valid"] * valid_weight + sorted(corruptions)
    kind = draw(st.sampled_from(kinds))
    role = draw(st.sampled_from(roles if method != "predict" else ("x",)))
    expect = OK
    if kind != "valid":
        data[role], expect = corruptions[kind](draw, layout, role, clean[role])
        expect = Expect(expect.outcome, expect.names, f"{kind}: {expect.why}")
    if method == "predict" and kind == "length":
        expect = OK  # predict takes no targets: any number of examples is fine
        n = len(np.asarray(data["x"]))
    batch_size = draw(st.sampled_from([None, 2, 3]))
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    epochs = 1
    if method == "fit":
        epochs = draw(st.integers(1, 2))
        kwargs.update(epochs=epochs, shuffle=draw(st.booleans()))
    run = Run(method, epochs, _steps(n, batch_size), _prediction_shape(layout, n))
    return ArrayCase(layout, method, data["x"], data["y"], kwargs, expect, run)


def _check_array_case(trainers: dict[str, gf.Trainer], case: ArrayCase) -> None:
    trainer = trainers[case.layout]
    check_call(
        trainer,
        lambda: _call(trainer, case.method, case.x, case.y, case.kwargs),
        case.expect,
        case.run,
    )


@fuzz_test(max_examples=300)
@given(case=array_cases(ARRAY_CORRUPTIONS, valid_weight=2))
def test_fuzzed_arrays(trainers: dict[str, gf.Trainer], case: ArrayCase) -> None:
    """Shapes, ranks, lengths, NaN/inf, empty, ragged, strings, objects, dtypes of x and y."""
    _count("test_fuzzed_arrays")
    _check_array_case(trainers, case)


@fuzz_test(max_examples=40)
@given(
    case=array_cases(
        {"labels": _labels, "fractional": _fractional_labels}, layouts=("clf",), roles=("y",)
    )
)
def test_fuzzed_class_labels(trainers: dict[str, gf.Trainer], case: ArrayCase) -> None:
    """Labels outside the classifier's classes are the user's mistake; gradfit must name `y`."""
    _count("test_fuzzed_class_labels")
    _check_array_case(trainers, case)


@fuzz_test(max_examples=30)
@given(case=array_cases({"low-precision": _low_precision}))
def test_fuzzed_low_precision_floats(trainers: dict[str, gf.Trainer], case: ArrayCase) -> None:
    """bfloat16 and float8 data: taken (cast to the model's dtype) or refused by name."""
    _count("test_fuzzed_low_precision_floats")
    _check_array_case(trainers, case)


# -- fit arguments -------------------------------------------------------------

BAD_EPOCHS = [0, -1, -(10**9), 1.0, 1.5, "2", b"1", None, True, False, [1], np.float64(2.0)]
BAD_EPOCHS += [math.nan, math.inf, 1j]
GOOD_EPOCHS = [1, 2, np.int64(2), np.int32(1), np.uint8(1)]
BAD_BATCH_SIZES = [0, -1, -3, 2.0, "2", True, False, [2], (2,), np.float32(2.0), math.nan]
GOOD_BATCH_SIZES = [None, 1, 2, 3, 4, 7, 10**12, np.int64(3), np.uint16(2)]
BAD_SHUFFLES = [0, 1, "True", "", None, [], np.int64(1), 1.0, "false"]
GOOD_SHUFFLES = [True, False, np.True_, np.False_]
BAD_SEEDS = [-1, -(2**70), 1.5, "1", True, False, [1], np.float64(1.0), math.nan, b"7"]
GOOD_SEEDS = [None, 0, 42, 2**31, 2**63 - 1, 2**64 + 3, np.int64(7), np.uint32(5)]
FIT_ARGUMENTS = {
    "epochs": (GOOD_EPOCHS, BAD_EPOCHS),
    "batch_size": (GOOD_BATCH_SIZES, BAD_BATCH_SIZES),
    "shuffle": (GOOD_SHUFFLES, BAD_SHUFFLES),
    "seed": (GOOD_SEEDS, BAD_SEEDS),
}


@st.composite
def fit_arguments(draw: st.DrawFn) -> dict[str, Any]:
    """Values of epochs, batch_size, shuffle and seed; each bad with probability 1/3."""
    kwargs: dict[str, Any] = {}
    for name, (good, bad) in FIT_ARGUMENTS.items():
        pool = bad if draw(st.integers(0, 2)) == 0 else good
        kwargs[name] = draw(st.sampled_from(pool))
    return kwargs


def _bad(name: str, value: Any) -> bool:
    return any(value is bad for bad in FIT_ARGUMENTS[name][1])


@fuzz_test(max_examples=100)
@given(kwargs=fit_arguments(), layout=st.sampled_from(LAYOUTS))
def test_fuzzed_fit_arguments(
    trainers: dict[str, gf.Trainer], kwargs: dict[str, Any], layout: str
) -> None:
    """Bad epochs/batch_size/shuffle/seed (often several at once) among good ones."""
    _count("test_fuzzed_fit_arguments")
    rng = np.random.default_rng(1)
    n = 4
    x, y = _x(layout, n, rng), _y(layout, n, rng)
    bad = tuple(name for name, value in kwargs.items() if _bad(name, value))
    expect = _raise(bad, f"bad {bad}: {kwargs}") if bad else Expect("ok", (), f"good {kwargs}")
    epochs = int(kwargs["epochs"]) if not bad else 1
    run = Run("fit", epochs, None if bad else _steps(n, kwargs["batch_size"]))
    trainer = trainers[layout]
    check_call(trainer, lambda: trainer.fit(x, y, **kwargs), expect, run)


# -- validation_data -------------------------------------------------------------

VAL_NAMES = ("validation_data", "validation_data[0]", "validation_data[1]")


def _batches(*parts: Any, batch_size: int = 2) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else parts[0]).batch(
        batch_size
    )


def _nothing(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with every element filtered out: empty, of unknown cardinality."""
    return dataset.filter(lambda *element: tf.constant(False))


def _validation_value(draw: st.DrawFn, layout: str, kinds: tuple[str, ...]) -> tuple[Any, Expect]:
    m = draw(st.sampled_from([3, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    xv, yv = _x(layout, m, rng), _y(layout, m, rng)
    kind = draw(st.sampled_from(kinds))
    pair = list if draw(st.booleans()) else tuple

    def bad(value: Any, why: str) -> tuple[Any, Expect]:
        return value, _raise(VAL_NAMES, f"validation_data {kind}: {why}")

    if kind == "valid":
        option = draw(st.sampled_from(["pair", "dataset", "other-forms"]))
        if option == "dataset":
            return _batches(xv, yv), Expect("ok", (), "validation dataset")
        if option == "other-forms":
            return pair(
                (_valid_form(draw, layout, "x", xv)[0], _valid_form(draw, layout, "y", yv)[0])
            ), Expect("ok", (), "validation pair of other forms")
        return pair((xv, yv)), Expect("ok", (), "validation pair")
    if kind == "not-a-pair":
        options: dict[str, Any] = {
            "array": xv,
            "dict": {"x": xv, "y": yv},
            "str": "validation",
            "int": 3,
            "bool": True,
            "one": (xv,),
            "three": (xv, yv, yv),
            "three-with-None": (xv, yv, None),
            "empty": (),
            "set": {1, 2},
            "generator": (part for part in (xv, yv)),
        }
        name = draw(st.sampled_from(sorted(options)))
        return bad(options[name], name)
    if kind == "none-member":
        name = draw(st.sampled_from(["x-None", "y-None", "both-None"]))
        value = {"x-None": (None, yv), "y-None": (xv, None), "both-None": (None, None)}[name]
        return bad(pair(value), name)
    if kind == "length":
        k = draw(st.sampled_from([1, 2, 5]))
        return bad(pair((xv, np.resize(yv, (k,)))), f"{m} vs {k} examples")
    if kind == "features":
        wrong = xv[:, None] if layout == "1d" else np.concatenate([xv, xv], axis=1)
        if draw(st.booleans()):
            wrong = xv[:, 0] if layout != "1d" else np.stack([xv] * 3, axis=1)
        return bad(pair((wrong, yv)), f"x_val of shape {wrong.shape}")
    if kind in ("nonfinite", "strings", "empty", "ragged", "dtype", "objects", "scalar"):
        role = draw(st.sampled_from(["x", "y"]))
        corrupt = ARRAY_CORRUPTIONS[kind]
        value, expect = corrupt(draw, layout, role, xv if role == "x" else yv)
        if expect.outcome != "raise":
            value = value.astype(np.complex64) if isinstance(value, np.ndarray) else None
        members = (value, yv) if role == "x" else (xv, value)
        return bad(pair(members), f"{role} {expect.why}")
    if kind == "dataset-in-pair":
        ds = _batches(xv, yv)
        name = draw(st.sampled_from(["(ds, None)", "(ds, y)", "(x, ds)"]))
        value = {"(ds, None)": (ds, None), "(ds, y)": (ds, yv), "(x, ds)": (xv, ds)}[name]
        return bad(pair(value), name)
    if kind == "bad-dataset":
        options = {
            "x-only": _batches(xv),
            "triple": _batches(xv, yv, yv),
            "dict": _batches({"x": xv, "y": yv}),
            "unbatched": tf.data.Dataset.from_tensor_slices((xv, yv)),
            "strings": _batches(xv.astype(str), yv),
            "complex": _batches(xv.astype(np.complex64), yv),
            "wrong-width": _batches(np.stack([xv] * 3, axis=-1), yv),
        }
        name = draw(st.sampled_from(sorted(options)))
        if name == "triple":  # (x, y, sample_weight): the targets double as weights
            return options[name], Expect("ok", (), "validation dataset with sample weights")
        return bad(options[name], name)
    # Inputs that only the loss can judge: they must be probed before training.
    if kind == "target-shape":
        wrong = np.stack([yv, yv], axis=1)
        as_dataset = draw(st.booleans())
        value = _batches(xv, wrong) if as_dataset else pair((xv, wrong))
        return value, _either((*VAL_NAMES, "loss"), f"validation targets [M, 2] ({layout})")
    if kind == "labels":
        labels = np.array(yv, np.int64)
        labels[draw(st.integers(0, m - 1))] = draw(st.sampled_from([CLASSES, 9, -1]))
        value = _batches(xv, labels) if draw(st.booleans()) else pair((xv, labels))
        return value, _raise((*VAL_NAMES, "loss"), f"validation label out of range {labels}")
    assert kind == "empty-dataset", kind
    if draw(st.booleans()):
        return _batches(xv[:0], yv[:0]), _raise(VAL_NAMES, "empty validation dataset")
    # Its cardinality is unknown: only its first (missing) batch shows it is empty.
    return _nothing(_batches(xv, yv)), _raise(VAL_NAMES, "validation dataset filtered empty")


VALIDATION_KINDS = (
    "valid",
    "valid",
    "not-a-pair",
    "none-member",
    "length",
    "features",
    "nonfinite",
    "strings",
    "empty",
    "ragged",
    "dtype",
    "objects",
    "scalar",
    "dataset-in-pair",
    "bad-dataset",
)
PROBED_VALIDATION_KINDS = ("valid", "target-shape", "labels", "empty-dataset")


@dataclass
class ValidationCase:
    layout: str
    value: Any
    epochs: int
    batch_size: int | None
    expect: Expect

    def __repr__(self) -> str:
        return (
            f"ValidationCase({self.expect.why!r}, {self.layout}, epochs={self.epochs}, "
            f"batch_size={self.batch_size}, validation_data={_show(self.value)})"
        )


@st.composite
def validation_cases(draw: st.DrawFn, kinds: tuple[str, ...]) -> ValidationCase:
    """A fit of valid data with ``validation_data`` of one of ``kinds``."""
    layout = draw(st.sampled_from(LAYOUTS))
    if layout != "clf":
        kinds = tuple(k for k in kinds if k != "labels")
    value, expect = _validation_value(draw, layout, kinds)
    epochs = draw(st.integers(1, 2))
    batch_size = draw(st.sampled_from([None, 2]))
    return ValidationCase(layout, value, epochs, batch_size, expect)


def _check_validation(trainers: dict[str, gf.Trainer], case: ValidationCase) -> None:
    n = 4
    rng = np.random.default_rng(2)
    x, y = _x(case.layout, n, rng), _y(case.layout, n, rng)
    trainer = trainers[case.layout]
    run = Run("fit", case.epochs, _steps(n, case.batch_size), validation=True)
    check_call(
        trainer,
        lambda: trainer.fit(
            x,
            y,
            epochs=case.epochs,
            batch_size=case.batch_size,
            validation_data=case.value,
            shuffle=False,
        ),
        case.expect,
        run,
    )


@fuzz_test(max_examples=100)
@given(case=validation_cases(VALIDATION_KINDS))
def test_fuzzed_validation_data(trainers: dict[str, gf.Trainer], case: ValidationCase) -> None:
    """Wrong tuple sizes, None members, mismatched shapes, NaN, bad datasets as validation_data."""
    _count("test_fuzzed_validation_data")
    _check_validation(trainers, case)


@fuzz_test(max_examples=30)
@given(case=validation_cases(PROBED_VALIDATION_KINDS))
def test_fuzzed_validation_targets(trainers: dict[str, gf.Trainer], case: ValidationCase) -> None:
    """Validation data that only the loss can judge must be judged before the first update."""
    _count("test_fuzzed_validation_targets")
    _check_validation(trainers, case)


# -- callbacks -------------------------------------------------------------------


class _Noop(gf.Callback):
    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        assert logs is not None and "loss" in logs


class _NoSuperInit(gf.Callback):
    def __init__(self) -> None:  # forgets super().__init__(): still a Callback
        self.seen = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        self.seen += 1


class _DuckCallback:
    """Has the hooks, but is not a gradfit Callback."""

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        pass


def _hook(epoch: int, logs: Any = None) -> None:
    pass


GOOD_CALLBACKS: dict[str, Callable[[], Any]] = {
    "History()": gf.callbacks.History,
    "LambdaCallback(on_epoch_end=...)": lambda: gf.callbacks.LambdaCallback(on_epoch_end=_hook),
    "RecordVariables()": gf.callbacks.RecordVariables,
    "EarlyStopping(loss, patience=5)": lambda: gf.callbacks.EarlyStopping("loss", patience=5),
    "_Noop()": _Noop,
    "_NoSuperInit()": _NoSuperInit,
}
BAD_CALLBACKS: dict[str, tuple[Callable[[], Any], tuple[str, ...]]] = {
    "History (the class)": (lambda: gf.callbacks.History, ("callbacks",)),
    "_Noop (the class)": (lambda: _Noop, ("callbacks",)),
    "a function": (lambda: _hook, ("callbacks",)),
    "a lambda": (lambda: lambda epoch, logs: None, ("callbacks",)),
    "3": (lambda: 3, ("callbacks",)),
    "'history'": (lambda: "history", ("callbacks",)),
    "None": (lambda: None, ("callbacks",)),
    "keras History": (keras.callbacks.History, ("callbacks",)),
    "keras EarlyStopping": (keras.callbacks.EarlyStopping, ("callbacks",)),
    "duck-typed object": (_DuckCallback, ("callbacks",)),
    "a list": (lambda: [gf.callbacks.History()], ("callbacks",)),
    "EarlyStopping(monitor='nope')": (
        lambda: gf.callbacks.EarlyStopping("nope"),
        ("monitor", "callbacks"),
    ),
}


@st.composite
def callback_arguments(draw: st.DrawFn) -> tuple[str, Any, Expect]:
    """``callbacks=`` for fit or Trainer: a container of good and bad elements, or no container."""
    shape = draw(st.sampled_from(["list", "list", "tuple", "generator", "single", "none", "bad"]))
    if shape == "none":
        return "None", None, OK
    if shape == "bad":
        name = draw(st.sampled_from(["'History'", "{'h': History()}", "3", "History", "True"]))
        value = {
            "'History'": "History",
            "{'h': History()}": {"h": gf.callbacks.History()},
            "3": 3,
            "History": gf.callbacks.History,
            "True": True,
        }[name]
        return name, value, _raise("callbacks", f"callbacks={name}")
    count = 1 if shape == "single" else draw(st.integers(0, 3))
    names, items, bad_names = [], [], set()
    for _ in range(count):
        if draw(st.integers(0, 2)) == 0:
            name = draw(st.sampled_from(sorted(BAD_CALLBACKS)))
            make, accepted = BAD_CALLBACKS[name]
            bad_names.update(accepted)
        else:
            name = draw(st.sampled_from(sorted(GOOD_CALLBACKS)))
            make = GOOD_CALLBACKS[name]
        names.append(name)
        items.append(make())
    described = f"{shape} of {names}"
    value: Any = items
    if shape == "single":
        value = items[0]
        if names[0] in ("a list", "None"):
            bad_names.clear()  # a list of one History, or None, is a fine `callbacks=`
    elif shape == "tuple":
        value = tuple(items)
    elif shape == "generator":
        value = (item for item in items)
    expect = (
        _raise(tuple(sorted(bad_names)), described) if bad_names else Expect("ok", (), described)
    )
    return described, value, expect


@fuzz_test(max_examples=60)
@given(case=callback_arguments(), where=st.sampled_from(["fit", "fit", "Trainer"]))
def test_fuzzed_callbacks(
    trainers: dict[str, gf.Trainer], case: tuple[str, Any, Expect], where: str
) -> None:
    """Non-Callbacks, classes instead of instances, functions, Keras callbacks, in any container."""
    _count("test_fuzzed_callbacks")
    _, value, expect = case
    base = trainers["2d"]
    rng = np.random.default_rng(3)
    x, y = _x("2d", 4, rng), _y("2d", 4, rng)
    run = Run("fit", 2, 2)

    def call() -> Any:
        if where == "Trainer":
            trainer = gf.Trainer(
                base.model, base.loss, base.update_rule, callbacks=value, jit_compile=False
            )
            return trainer.fit(x, y, epochs=2, batch_size=2)
        return base.fit(x, y, epochs=2, batch_size=2, callbacks=value)

    check_call(base, call, expect, run)


# -- datasets --------------------------------------------------------------------


@dataclass
class DatasetCase:
    layout: str
    method: str
    dataset: tf.data.Dataset
    y: Any
    kwargs: dict[str, Any]
    expect: Expect
    run: Run

    def __repr__(self) -> str:
        return (
            f"DatasetCase({self.expect.why!r}, {self.layout}, {self.method}, "
            f"element_spec={self.dataset.element_spec}, y={self.y is not None}, {self.kwargs})"
        )


def _generated(
    x: np.ndarray, y: np.ndarray, size: int, x_shape: Any, with_y: bool = True
) -> tf.data.Dataset:
    def generate() -> Iterator[Any]:
        for start in range(0, len(x), size):
            if with_y:
                yield x[start : start + size], y[start : start + size]
            else:
                yield x[start : start + size]

    x_spec = tf.TensorSpec(x_shape, tf.float32)
    y_spec = tf.TensorSpec([None, *y.shape[1:]], tf.as_dtype(y.dtype))
    signature = (x_spec, y_spec) if with_y else x_spec
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


@st.composite
def dataset_cases(draw: st.DrawFn, kinds: tuple[str, ...]) -> DatasetCase:
    """A dataset (with the wrong element structure, or not) for fit, evaluate or predict."""
    layout = draw(st.sampled_from(LAYOUTS))
    method = draw(st.sampled_from(["fit", "evaluate", "predict"]))
    n = draw(st.sampled_from([4, 5]))
    size = draw(st.sampled_from([2, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x, y = _x(layout, n, rng), _y(layout, n, rng)
    kind = draw(st.sampled_from(kinds))
    steps = math.ceil(n / size)
    predict = method == "predict"
    extra_y: Any = None
    kwargs: dict[str, Any] = {}

    def raise_(names: tuple[str, ...] | str, why: str) -> Expect:
        return _raise(names, f"{kind}: {why}")

    expect = Expect("ok", (), f"{kind}: a dataset of (x, y) batches of {size}")
    if kind == "valid":
        option = draw(st.sampled_from(["pair", "int-x", "bool-x", "column-y", "x-only"]))
        if option == "int-x":
            x = np.round(x * 3).astype(np.int64)
        elif option == "bool-x":
            x = x > 0
        elif option == "column-y":
            y = y[:, None]
        if option == "x-only":
            dataset = _batches(x, batch_size=size)
            if not predict:
                expect = raise_("x", "a dataset of x batches only")
        else:
            dataset = _batches(x, y, batch_size=size)
            expect = Expect("ok", (), f"valid dataset ({option})")
    elif kind == "unknown-dims":
        if layout == "1d":
            dataset = _generated(x, y, size, [None], with_y=not predict)
        else:
            dataset = _generated(x, y, size, [None, None], with_y=not predict)
        expect = Expect("ok", (), "dataset with unknown batch and feature sizes")
    elif kind == "structure":
        options = {
            "triple": _batches(x, y, y, batch_size=size),
            "single-tuple": _batches((x,), batch_size=size),
            "dict": _batches({"x": x, "y": y}, batch_size=size),
            "nested": _batches((x,), y, batch_size=size),
            "unbatched": tf.data.Dataset.from_tensor_slices((x, y)),
            "unbatched-x-only": tf.data.Dataset.from_tensor_slices(x),
            "nested-targets": _batches(x, (y, y), batch_size=size),
            "unknown-rank": tf.data.Dataset.from_generator(
                lambda: iter([x]), output_signature=tf.TensorSpec(None, tf.float32)
            ),
        }
        name = draw(st.sampled_from(sorted(options)))
        dataset = options[name]
        if predict and name in ("nested-targets", "triple"):
            expect = Expect("ok", (), "predict ignores the targets")
        elif name == "triple":  # (x, y, sample_weight): the targets double as weights
            expect = Expect("ok", (), "a dataset with sample weights")
        else:
            expect = raise_("x", name)
    elif kind == "element-types":
        options = {
            "string-x": _batches(x.astype(str), y, batch_size=size),
            "complex-x": _batches(x.astype(np.complex64), y, batch_size=size),
            "string-y": _batches(x, y.astype(str), batch_size=size),
            "complex-y": _batches(x, y.astype(np.complex128), batch_size=size),
            "ragged-x": tf.data.Dataset.from_tensors((tf.ragged.constant([[1.0, 2.0], [3.0]]), y)),
            "sparse-x": tf.data.Dataset.from_tensors((tf.sparse.from_dense(x), y)),
        }
        name = draw(st.sampled_from(sorted(options)))
        dataset = options[name]
        if predict and name.endswith("-y"):
            expect = Expect("ok", (), "predict ignores the targets")
        else:
            expect = raise_("x", name)
    elif kind == "features":
        wrong = np.stack([x] * 3, axis=-1) if layout != "1d" else np.stack([x, x], axis=1)
        if layout != "1d" and draw(st.booleans()):
            wrong = x[:, 0]
        dataset = _batches(wrong, y, batch_size=size)
        expect = raise_("x", f"features of shape {wrong.shape[1:]}")
    elif kind == "arguments":
        dataset = _batches(x, y, batch_size=size)
        if predict or draw(st.booleans()):
            kwargs["batch_size"] = draw(st.sampled_from([1, 2, 4]))
            expect = raise_("batch_size", "batch_size with a dataset")
        else:
            extra_y = draw(st.sampled_from([y, y.tolist(), "y", 0.0]))
            expect = raise_("y", "y with a dataset")
    elif kind == "target-shape":
        dataset = _batches(x, np.stack([y, y], axis=1), batch_size=size)
        expect = (
            Expect("ok", (), "predict ignores the targets")
            if predict
            else _either(("x", "y", "loss"), "dataset targets [B, 2]")
        )
    # Bad batches that only running the data (or comparing static shapes) reveals.
    elif kind == "mismatched-batch":
        k = draw(st.integers(1, n - 1))
        dataset = tf.data.Dataset.from_tensors((x[:k], y[: k + 1]))
        steps = 1
        expect = (
            Expect("ok", (), "predict ignores the targets")
            if predict
            else raise_(("x", "y"), f"x batch of {k}, y batch of {k + 1}")
        )
        n = k
    elif kind == "labels":
        labels = np.array(y, np.int64)
        labels[draw(st.integers(0, n - 1))] = draw(st.sampled_from([CLASSES, 11, -1]))
        dataset = _batches(x, labels, batch_size=size)
        if layout != "clf" or predict:
            expect = Expect("ok", (), "labels for a regression, or ignored")
        else:
            expect = raise_(("x", "y", "loss"), f"labels {labels} of {CLASSES} classes")
    else:
        assert kind == "empty", kind
        if draw(st.booleans()):
            dataset = _batches(x[:0], y[:0], batch_size=size)
            expect = raise_("x", "an empty dataset")
        else:
            dataset = _nothing(_batches(x, y, batch_size=size))
            expect = raise_("x", "a dataset filtered empty (unknown cardinality)")
    epochs = 1
    if method == "fit":
        epochs = draw(st.integers(1, 2))
        kwargs["epochs"] = epochs
    run = Run(method, epochs, steps, _prediction_shape(layout, n))
    return DatasetCase(layout, method, dataset, extra_y, kwargs, expect, run)


DATASET_KINDS = (
    "valid",
    "valid",
    "unknown-dims",
    "structure",
    "element-types",
    "features",
    "arguments",
    "target-shape",
)
BATCH_KINDS = ("valid", "mismatched-batch", "labels", "empty")


def _check_dataset_case(trainers: dict[str, gf.Trainer], case: DatasetCase) -> None:
    trainer = trainers[case.layout]

    def call() -> Any:
        if case.method == "predict":
            return trainer.predict(case.dataset, **case.kwargs)
        return _call(trainer, case.method, case.dataset, case.y, case.kwargs)

    check_call(trainer, call, case.expect, case.run)


@fuzz_test(max_examples=100)
@given(case=dataset_cases(DATASET_KINDS))
def test_fuzzed_datasets(trainers: dict[str, gf.Trainer], case: DatasetCase) -> None:
    """tf.data inputs of the wrong element structure, types or shapes, among valid ones."""
    _count("test_fuzzed_datasets")
    _check_dataset_case(trainers, case)


@fuzz_test(max_examples=30)
@given(case=dataset_cases(BATCH_KINDS))
def test_fuzzed_dataset_batches(trainers: dict[str, gf.Trainer], case: DatasetCase) -> None:
    """Datasets whose element_spec passes but whose batches are wrong (or missing)."""
    _count("test_fuzzed_dataset_batches")
    _check_dataset_case(trainers, case)


# -- datasets without end --------------------------------------------------------


class _RunawayError(Exception):
    """Raised when a call keeps consuming an endless dataset."""


class _StopRunaway(gf.Callback):
    requires_every_step = True

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if batch >= 20:
            raise _RunawayError(f"still training at step {batch} of an endless dataset")


def _on_alarm(signum: int, frame: Any) -> None:
    raise _RunawayError("still running after 2 s on an endless dataset")


# The alarm repeats: a signal handler's exception that lands in a __del__ is swallowed.
ALARM = (2.0, 0.25)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict", "validation_data"])
def test_endless_dataset_is_rejected(trainers: dict[str, gf.Trainer], method: str) -> None:
    """``dataset.repeat()`` has infinite cardinality: a pass over it never ends.

    gradfit knows that from ``dataset.cardinality()`` before it starts, and
    must say so (as Keras asks for ``steps_per_epoch``) rather than train or
    evaluate forever. A guard callback (fit) and an alarm stop the runaway.
    """
    _begin("test_endless_dataset_is_rejected")
    trainer = trainers["2d"]
    rng = np.random.default_rng(4)
    x, y = _x("2d", 4, rng), _y("2d", 4, rng)
    endless = _batches(x, y).repeat()
    assert int(endless.cardinality()) == tf.data.INFINITE_CARDINALITY
    calls = {
        "fit": lambda: trainer.fit(endless, callbacks=[_StopRunaway()]),
        "evaluate": lambda: trainer.evaluate(endless),
        "predict": lambda: trainer.predict(endless),
        "validation_data": lambda: trainer.fit(x, y, validation_data=endless),
    }
    names = ("validation_data",) if method == "validation_data" else ("x",)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, *ALARM)
    try:
        check_call(
            trainer, calls[method], _raise(names, f"endless dataset to {method}"), Run("fit")
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- the count -------------------------------------------------------------------


def test_zz_at_least_500_cases_were_generated() -> None:
    """Runs last in the module: the fuzz tests together ran at least 500 generated cases."""
    missing = [name for name in FUZZ_TESTS if name not in CASE_COUNTS]
    if missing:
        pytest.skip(f"not every fuzz test ran (missing {missing})")
    total = sum(CASE_COUNTS.values())
    assert total >= MIN_TOTAL_CASES, f"only {total} generated cases: {dict(CASE_COUNTS)}"
