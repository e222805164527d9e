"""Gradient checks: reverse-mode gradients against finite differences.

:func:`check_gradients` compares the gradient that ``tf.GradientTape``
computes (the one training uses, honouring ``tf.custom_gradient``) with
central finite differences computed in float64. :func:`check_model_gradients`
does the same for the gradient of a loss with respect to a model's variables.

How a check works, for a function ``f`` of arguments ``x``:

* ``f``'s outputs are contracted with a random cotangent ``u`` (``u = 1``
  for a scalar loss), so the reverse-mode gradient checked is the
  vector-Jacobian product ``J(x)^T u``. Outputs with at most ``max_elements``
  entries are checked through the full Jacobian instead, one reverse pass
  per output entry.
* Arguments with at most ``max_elements`` entries are perturbed entry by
  entry; larger ones along ``num_directions`` random directions (the
  directional check of ``jax.test_util.check_grads``) and at a few random
  entries. A direction that fails is bisected to the entry at fault.
* The finite differences are Richardson-extrapolated central differences
  with steps ``h`` and ``h / 2``, with ``h = eps * max(1, |x_i|)``; a plain
  central difference first, the extrapolation only where that disagrees.
  The two estimates (and the curvatures they imply) also say when they
  cannot be trusted: near a kink of ``abs``, ``relu`` or a clip, or where
  ``f`` is noisy. There the step shrinks tenfold, twice; if the estimates
  still disagree, the check fails, saying that ``f`` is not differentiable
  at the point.
* The reverse-mode gradient is computed in the arguments' own dtype, the
  finite differences in float64 when ``f`` accepts float64 arguments (else in
  the arguments' dtype, with a larger step), and the tolerances follow the
  gradient's dtype: ``rtol=1e-3, atol=1e-5`` for float32. An error is measured
  relative to the larger of the two values and 1% of the largest gradient
  entry found at that order, so rounding in entries far smaller than the rest
  does not fail a float32 check.
* ``order=2`` also checks the derivative of the (contracted) gradient: the
  reverse-over-reverse Hessian-vector products against finite differences of
  the gradient, so a ``tf.custom_gradient`` whose backward pass is right but
  not itself differentiable correctly is caught.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v

_ZERO = tf.UnconnectedGradients.ZERO
_FLOOR = 1e-2  # errors are relative to at least 1% of the largest gradient entry
_SHRINKS = 2  # where finite differences look non-smooth, retry with 10x, 100x smaller steps
_PRECISION = {  # dtype -> (atol, rtol) of a gradient of that dtype, step eps differenced in it
    tf.float64: (1e-9, 1e-6, 1e-5),
    tf.float32: (1e-5, 1e-3, 1e-2),
    tf.float16: (1e-2, 5e-2, 1e-1),
    tf.bfloat16: (1e-2, 5e-2, 1e-1),
}
_ROWS_SHOWN = 5


# -- evaluating a function and its derivatives ------------------------------


def _float_outputs(outputs: Any) -> list[tf.Tensor]:
    flat = [tf.convert_to_tensor(o) for o in tf.nest.flatten(outputs)]
    return [o for o in flat if o.dtype.is_floating]


def _level(
    call: Callable[[list[Any]], Any], params: list[Any], chain: list[list[Any]]
) -> list[Any]:
    """Returns ``F_k(params)``, ``k = len(chain)``.

    ``F_0`` is the function's floating-point outputs; ``F_k`` is the gradient
    of ``<chain[k-1], F_{k-1}>`` with respect to ``params``, by reverse mode.
    """
    if not chain:
        return _float_outputs(call(params))
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(params)
        outputs = _level(call, params, chain[:-1])
    return _vjp(tape, outputs, params, chain[-1])


def _vjp(
    tape: tf.GradientTape, outputs: list[Any], params: list[Any], cotangent: list[Any]
) -> list[Any]:
    grads = tape.gradient(outputs, params, output_gradients=cotangent, unconnected_gradients=_ZERO)
    return [tf.convert_to_tensor(g) for g in grads]


def _vjps(
    call: Callable[[list[Any]], Any],
    params: list[Any],
    chain: list[list[Any]],
    cotangents: list[list[Any]],
) -> list[list[Any]]:
    """Returns ``F_{k+1}`` for each cotangent in ``cotangents``, from one forward pass."""
    with tf.GradientTape(persistent=len(cotangents) > 1, watch_accessed_variables=False) as tape:
        tape.watch(params)
        outputs = _level(call, params, chain)
    results = [_vjp(tape, outputs, params, c) for c in cotangents]
    del tape
    return results


def _flat64(tensors: Sequence[Any]) -> np.ndarray:
    if not tensors:
        return np.zeros([0])
    return np.concatenate([np.asarray(t, np.float64).reshape(-1) for t in tensors])


# -- what is checked: a function of arguments, or a loss of model variables ---

_Move = tuple[int, np.ndarray] | None
"""A point to evaluate at: parameter ``i`` moved to a new value, or ``None`` for the point."""


@dataclasses.dataclass
class _Param:
    name: str
    value: np.ndarray  # float64 copy of the point
    dtype: tf.DType  # the dtype the reverse-mode gradient is computed in

    @property
    def size(self) -> int:
        return int(self.value.size)

    def where(self, flat_index: int) -> str:
        if self.value.ndim == 0:
            return self.name
        index = np.unravel_index(flat_index, self.value.shape)
        return f"{self.name}[{', '.join(str(int(i)) for i in index)}]"


class _Target:
    """A function of a list of parameters, differentiated two ways.

    ``F_0`` is its floating-point outputs, ``F_k`` the reverse-mode gradient of
    ``<chain[k-1], F_{k-1}>`` (see :func:`_level`).
    """

    kind = "argument"  # what the parameters are called in reports
    output_name = "f"
    params: list[_Param]
    native_dtypes: list[tf.DType]  # of F_0's outputs
    reference_dtype: tf.DType
    reference_note: str

    def _call(self, params: list[Any]) -> Any:
        raise NotImplementedError

    def _native_params(self) -> list[Any]:
        raise NotImplementedError

    def _chain_dtypes(self, depth: int) -> list[list[tf.DType]]:
        params = [p.dtype for p in self.params]
        return ([self.native_dtypes] + [params] * depth)[:depth]

    def outputs(self, chain: list[list[np.ndarray]]) -> list[np.ndarray]:
        """``F_k`` at the point, in the native dtype (k = len(chain))."""
        native_chain = _cast_chain(chain, self._chain_dtypes(len(chain)))
        return [o.numpy() for o in _level(self._call, self._native_params(), native_chain)]

    def analytic(
        self, chain: list[list[np.ndarray]], cotangents: list[list[np.ndarray]]
    ) -> list[list[np.ndarray]]:
        """``F_{k+1}`` at the point, in the native dtype, for each of ``cotangents``."""
        depth = len(chain)
        dtypes = self._chain_dtypes(depth + 1)
        native_chain = _cast_chain(chain, dtypes[:depth])
        native_cots = _cast_chain(cotangents, [dtypes[depth]] * len(cotangents))
        results = _vjps(self._call, self._native_params(), native_chain, native_cots)
        return [[g.numpy() for g in result] for result in results]

    def _reference_chain(self, chain: list[list[np.ndarray]]) -> list[list[tf.Tensor]]:
        if self.reference_dtype == tf.float64:
            return _cast_chain(chain, [[tf.float64] * len(c) for c in chain])
        return _cast_chain(chain, self._chain_dtypes(len(chain)))

    def reference(self, moves: list[_Move], chain: list[list[np.ndarray]]) -> np.ndarray:
        """Flattened ``F_k`` at each point, in the reference dtype: ``[len(moves), m]``."""
        raise NotImplementedError


class _FunctionTarget(_Target):
    def __init__(self, f: Callable[..., Any], args: Any, argnums: Any) -> None:
        values, names, keys = _arguments(f, args)
        self._f, self._keys, self._values = f, keys, values
        self._index = _select(argnums, values, names, keys)
        self.params = [
            _Param(names[i], np.asarray(values[i].numpy(), np.float64), values[i].dtype)
            for i in self._index
        ]
        self._base: list[Any] = values
        outputs = _float_outputs(self._call(self._native_params()))
        if not outputs:
            raise TypeError("`f` must return at least one floating-point tensor.")
        self.native_dtypes = [o.dtype for o in outputs]
        self.reference_dtype, self.reference_note = self._choose_reference()

    def _native_params(self) -> list[Any]:
        return [self._values[i] for i in self._index]

    def _call(self, params: list[Any]) -> Any:
        merged = list(self._base)
        for i, p in zip(self._index, params, strict=True):
            merged[i] = p
        if self._keys is not None:
            return self._f(**dict(zip(self._keys, merged, strict=True)))
        return self._f(*merged)

    def _choose_reference(self) -> tuple[tf.DType, str]:
        lowest = _lowest([p.dtype for p in self.params] + self.native_dtypes)
        if lowest == tf.float64:
            return tf.float64, "float64"
        try:
            outputs = _float_outputs(self._call64([tf.constant(p.value) for p in self.params]))
        except Exception as err:  # f does not accept float64: differences in its own dtype
            return lowest, f"{lowest.name} (`f` failed on float64 arguments: {_short(err)})"
        if len(outputs) != len(self.native_dtypes):
            return lowest, f"{lowest.name} (`f` returns other outputs for float64 arguments)"
        out_lowest = _lowest([o.dtype for o in outputs])
        if out_lowest != tf.float64:
            return out_lowest, f"{out_lowest.name} (`f` computes in {out_lowest.name})"
        return tf.float64, "float64"

    def _call64(self, params: list[Any]) -> Any:
        native = self._base
        self._base = [tf.cast(x, tf.float64) if x.dtype.is_floating else x for x in native]
        try:
            return self._call(params)
        finally:
            self._base = native

    def reference(self, moves: list[_Move], chain: list[list[np.ndarray]]) -> np.ndarray:
        dtypes = (
            [tf.float64] * len(self.params)
            if self.reference_dtype == tf.float64
            else [p.dtype for p in self.params]
        )
        call = self._call64 if self.reference_dtype == tf.float64 else self._call
        ref_chain = self._reference_chain(chain)
        point = [tf.constant(p.value, d) for p, d in zip(self.params, dtypes, strict=True)]
        rows = []
        for move in moves:
            params = list(point)
            if move is not None:
                params[move[0]] = tf.constant(move[1], dtypes[move[0]])
            rows.append(_flat64(_level(call, params, ref_chain)))
        return np.stack(rows)


class _ModelTarget(_Target):
    kind = "variable"
    output_name = "loss"

    def __init__(self, model: Any, loss: Callable[..., Any], x: Any, y: Any) -> None:
        from gradfit.models import Model, variables_by_path

        if not callable(model) or not hasattr(model, "trainable_variables"):
            raise TypeError(
                "`model` must be a gradfit Model (or another callable with "
                f"`trainable_variables`, such as a tf.Module). {v.received('model', model)}"
            )
        if not callable(loss):
            raise TypeError(
                "`loss` must be a gradfit Loss or a callable `loss(y_true, y_pred)`. "
                f"{v.received('loss', loss)}"
            )
        dtype = model.dtype if isinstance(model, Model) else tf.float32
        self._x, self._y = _as_input(x, dtype, "x"), _as_input(y, dtype, "y")
        if isinstance(model, Model):
            model.maybe_build(self._x.shape if self._x.shape.rank else tf.TensorShape([]))
        else:
            model(self._x)  # builds Keras-style models
        self._model, self._loss = model, loss
        self._variables = [_tf_variable(var) for var in model.trainable_variables]
        if not self._variables:
            raise ValueError(
                f"`model` has no trainable variables to check. {v.received('model', model)}"
            )
        first_path: dict[Any, str] = {}
        if isinstance(model, tf.Module):
            for path, var in variables_by_path(model, trainable_only=True).items():
                first_path.setdefault(var.ref(), path)
        keras_paths = [getattr(var, "path", None) for var in model.trainable_variables]
        self._paths = [
            first_path.get(var.ref()) or keras_path or var.name.split(":")[0]
            for var, keras_path in zip(self._variables, keras_paths, strict=True)
        ]
        self.params = [
            _Param(path, np.asarray(var.numpy(), np.float64), var.dtype)
            for path, var in zip(self._paths, self._variables, strict=True)
        ]
        value = _float_outputs(self._call([]))
        if len(value) != 1 or value[0].shape.rank != 0:
            raise ValueError(
                "`loss` must return one floating-point scalar. Received outputs of shapes "
                f"{[tuple(o.shape) for o in value]}"
            )
        self.native_dtypes = [value[0].dtype]
        self._twin, self._twin_variables, self.reference_dtype, self.reference_note = (
            self._reference_model(float(value[0]))
        )

    def _native_params(self) -> list[Any]:
        return self._variables

    def _call(self, params: list[Any]) -> Any:
        del params  # the model's own variables
        return self._loss(self._y, self._model(self._x))

    def _reference_model(self, native_loss: float) -> tuple[Any, list[tf.Variable], tf.DType, str]:
        lowest = _lowest([var.dtype for var in self._variables])
        if lowest == tf.float64:
            return self._model, self._variables, tf.float64, "float64"
        twin, note = _float64_twin(self._model, self._paths)
        if twin is not None:
            try:
                value = self._loss(_to64(self._y), twin[0](_to64(self._x)))
                close = abs(float(value) - native_loss) <= 1e-3 * max(1.0, abs(native_loss))
                ok = value.dtype == tf.float64 and close
                note = "a float64 copy of the model computes another loss"
            except Exception as err:
                ok, note = False, f"a float64 copy of the model failed: {_short(err)}"
            if ok:
                return (*twin, tf.float64, "float64, on a float64 copy of the model")
        return self._model, self._variables, lowest, f"{lowest.name} ({note})"

    def reference(self, moves: list[_Move], chain: list[list[np.ndarray]]) -> np.ndarray:
        variables, twin = self._twin_variables, self._twin
        if twin is self._model:
            call = self._call
        else:
            x, y = _to64(self._x), _to64(self._y)

            def call(params: list[Any]) -> Any:
                del params
                return self._loss(y, twin(x))

        ref_chain = self._reference_chain(chain)
        saved = [tf.identity(var) for var in variables]
        rows = []
        try:
            for move in moves:
                if move is not None:
                    var = variables[move[0]]
                    var.assign(tf.cast(move[1], var.dtype))
                rows.append(_flat64(_level(call, variables, ref_chain)))
                if move is not None:
                    variables[move[0]].assign(saved[move[0]])
        finally:  # the point is never left perturbed, whatever happens
            for var, value in zip(variables, saved, strict=True):
                var.assign(value)
        return np.stack(rows)


def _tf_variable(variable: Any) -> tf.Variable:
    """The ``tf.Variable`` itself, or the one a Keras 3 variable holds."""
    if isinstance(variable, tf.Variable):
        return variable
    value = getattr(variable, "value", None)
    if isinstance(value, tf.Variable):
        return value
    raise TypeError(
        "`model.trainable_variables` must hold tf.Variable (or Keras) variables. "
        f"Received an element of type {type(variable).__name__}: {v.echo(variable)}"
    )


def _float64_twin(model: Any, paths: list[str]) -> tuple[tuple[Any, list[tf.Variable]] | None, str]:
    """Returns a deep copy of ``model`` whose floating-point variables are float64.

    Works for gradfit Models (whose ``dtype`` is switched to float64 too) and
    for other ``tf.Module`` models that hold their variables in attributes,
    lists or dicts and follow their variables' dtype. Returns
    ``(None, reason)`` where it cannot.
    """
    from gradfit.models import Model

    def is_variable(obj: Any) -> bool:
        return isinstance(obj, tf.Variable)

    try:
        twin = copy.deepcopy(model)
        replaced: dict[Any, tf.Variable] = {}
        for path, var in list(twin._flatten(predicate=is_variable, with_path=True)):
            if not var.dtype.is_floating or var.dtype == tf.float64:
                continue
            new = replaced.get(var.ref())
            if new is None:
                new = tf.Variable(
                    tf.cast(var, tf.float64), trainable=var.trainable, name=var.name.split(":")[0]
                )
                replaced[var.ref()] = new
            _set_path(twin, path, new)
        for module in [twin, *twin._flatten(predicate=lambda o: isinstance(o, Model))]:
            if isinstance(module, Model):
                module._dtype = tf.float64
        by_path: dict[str, tf.Variable] = {}
        for path, var in twin._flatten(predicate=is_variable, with_path=True):
            by_path.setdefault("/".join(str(p) for p in path), var)
        variables = [by_path[p] for p in paths]
    except Exception as err:
        return None, f"no float64 copy of the model: {_short(err)}"
    return (twin, variables), ""


def _set_path(root: Any, path: tuple[Any, ...], value: Any) -> None:
    parent = root
    for part in path[:-1]:
        is_item = isinstance(part, int) or isinstance(parent, Mapping)
        parent = parent[part] if is_item else getattr(parent, part)
    last = path[-1]
    if isinstance(parent, Mapping) or isinstance(last, int):
        parent[last] = value  # a tuple raises: no float64 copy, differences in native precision
    else:
        setattr(parent, last, value)


def _to64(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float64) if x.dtype.is_floating else x


def _as_input(value: Any, dtype: tf.DType, name: str) -> tf.Tensor:
    try:
        tensor = tf.convert_to_tensor(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`{name}` must be an array or a tensor. {v.received(name, value)}"
        ) from err
    if tensor.dtype.is_floating or name == "x":
        tensor = tf.cast(tensor, dtype) if tensor.dtype != dtype else tensor
    return tensor


def _lowest(dtypes: Sequence[tf.DType]) -> tf.DType:
    """The least precise of ``dtypes`` (bfloat16 < float16 < float32 < float64)."""
    floats = [d for d in dtypes if d.is_floating]
    if not floats:
        return tf.float64
    return min(floats, key=lambda d: (d.size, d != tf.bfloat16))


def _cast_chain(
    chain: Sequence[Sequence[np.ndarray]], dtypes: Sequence[Sequence[tf.DType]]
) -> list[list[tf.Tensor]]:
    return [
        [tf.constant(u, d) for u, d in zip(cot, cot_dtypes, strict=True)]
        for cot, cot_dtypes in zip(chain, dtypes, strict=True)
    ]


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# -- arguments -----------------------------------------------------------


def _arguments(
    f: Callable[..., Any], args: Any
) -> tuple[list[tf.Tensor], list[str], list[str] | None]:
    if not callable(f):
        raise TypeError(f"`f` must be callable. {v.received('f', f)}")
    if isinstance(args, Mapping):
        keys = [str(k) for k in args]
        raw = list(args.values())
        names = keys
    else:
        keys = None
        raw = list(args) if isinstance(args, list | tuple) else [args]
        try:
            params = list(inspect.signature(f).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [
            p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names = [positional[i] if i < len(positional) else f"args[{i}]" for i in range(len(raw))]
    values = []
    for name, value in zip(names, raw, strict=True):
        try:
            tensor = tf.convert_to_tensor(value)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"`args` must hold arrays, tensors or numbers. Received: {name}={v.echo(value)}"
            ) from err
        if tensor.dtype.is_complex:
            raise TypeError(f"`args` must be real; {name} has dtype {tensor.dtype.name}.")
        values.append(tensor)
    return values, names, keys


def _select(
    argnums: Any, values: list[tf.Tensor], names: list[str], keys: list[str] | None
) -> list[int]:
    if argnums is None:
        index = [i for i, x in enumerate(values) if x.dtype.is_floating]
        if not index:
            raise TypeError(
                "`args` holds no floating-point argument to differentiate. "
                f"Received dtypes: {[x.dtype.name for x in values]}"
            )
        return index
    wanted = [argnums] if isinstance(argnums, int | str) else list(argnums)
    index = []
    for item in wanted:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise TypeError(
                f"`argnums` must hold indices or names. {v.received('argnums', argnums)}"
            )
        if isinstance(item, str):
            if item not in names:
                raise ValueError(
                    f"`argnums` names an unknown argument {item!r}; the arguments are {names}. "
                    f"{v.received('argnums', argnums)}"
                )
            i = names.index(item)
        else:
            if not -len(values) <= item < len(values):
                raise ValueError(
                    f"`argnums` is out of range for {len(values)} arguments. "
                    f"{v.received('argnums', argnums)}"
                )
            i = item % len(values)
        if not values[i].dtype.is_floating:
            raise TypeError(
                f"`argnums` selects {names[i]}, which has non-floating dtype "
                f"{values[i].dtype.name}."
            )
        if i not in index:
            index.append(i)
    if not index:
        raise ValueError(f"`argnums` selects no argument. {v.received('argnums', argnums)}")
    return index


# -- the comparison ----------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Probe:
    param: int
    direction: np.ndarray  # float64, the param's shape: the derivative is taken along it
    coordinate: int | None  # the flat entry of a coordinate probe; None for a direction


@dataclasses.dataclass
class _Comparison:
    probe: _Probe
    output: int  # which readout (an output entry for a full Jacobian, else 0)
    analytic: float
    reference: float
    tolerance: float
    spread: float  # how far the finite-difference estimates disagree among themselves

    @property
    def error(self) -> float:
        return abs(self.analytic - self.reference)

    @property
    def relative(self) -> float:
        return self.error / max(abs(self.analytic), abs(self.reference), 1e-300)

    @property
    def failed(self) -> bool:
        return not self.error <= self.tolerance  # NaN fails

    @property
    def unreliable(self) -> bool:
        return self.failed and self.spread > self.tolerance / 2


@dataclasses.dataclass
class _Order:
    """Everything about one order of the check, for the comparisons and the report."""

    level: int
    chain: list[list[np.ndarray]]
    outputs: list[np.ndarray]  # F_{level-1} at the point (native), for output labels
    readout: np.ndarray  # [m, k]: identity (full Jacobian) or the cotangent u
    jacobian: list[np.ndarray]  # per param, [k, size]: the reverse-mode rows
    base: np.ndarray  # [k]: the readout of F_{level-1} at the point, reference precision
    cotangent: list[np.ndarray]  # u, the random cotangent the next order is built on
    floor: float = 0.0


@dataclasses.dataclass
class _Settings:
    eps: float | None
    atol: float | None
    rtol: float | None
    num_directions: int
    max_elements: int


class _Checker:
    def __init__(self, target: _Target, settings: _Settings, seed: int) -> None:
        self.t, self.s = target, settings
        self.rng = np.random.default_rng(seed)
        ref = target.reference_dtype
        default_eps = _PRECISION.get(ref, _PRECISION[tf.float32])[2]
        self.eps = settings.eps if settings.eps is not None else default_eps
        self.ref_eps = 2.0**-8 if ref == tf.bfloat16 else float(np.finfo(ref.as_numpy_dtype).eps)
        self.shrinks = _SHRINKS if ref == tf.float64 else 0

    def tolerances(self, param: _Param) -> tuple[float, float]:
        atol, rtol, _ = _PRECISION.get(param.dtype, _PRECISION[tf.float32])
        return (
            self.s.atol if self.s.atol is not None else atol,
            self.s.rtol if self.s.rtol is not None else rtol,
        )

    def run(self, order: int) -> None:
        chain: list[list[np.ndarray]] = []
        for level in range(1, order + 1):
            state = self.prepare(level, chain)
            comparisons = self.check(state)
            if any(c.failed for c in comparisons):
                raise AssertionError(self.report(state, comparisons))
            chain = [*chain, state.cotangent]

    def prepare(self, level: int, chain: list[list[np.ndarray]]) -> _Order:
        outputs = self.t.outputs(chain)
        m = sum(int(o.size) for o in outputs)
        if m == 0:
            raise ValueError("`f` returned only empty outputs; there is nothing to check.")
        if m == 1:
            u = [np.ones(o.shape) for o in outputs]
        else:  # a random cotangent, rounded to the outputs' dtype so both sides use the same
            u = [
                np.asarray(self.rng.standard_normal(o.shape).astype(o.dtype), np.float64)
                for o in outputs
            ]
        full = 1 < m <= self.s.max_elements
        cotangents = [u] + ([_unflatten(row, outputs) for row in np.eye(m)] if full else [])
        analytic = self.t.analytic(chain, cotangents)
        rows = analytic[1:] if full else analytic[:1]
        jacobian = [
            np.stack([np.asarray(row[i], np.float64).reshape(-1) for row in rows])
            for i in range(len(self.t.params))
        ]
        readout = np.eye(m) if full else _flat64(u)[:, None]
        # The point, twice: a function that differs between calls cannot be checked.
        twice = self.t.reference([None, None], chain)
        if not np.all(np.isfinite(twice[0])):
            raise AssertionError(
                "Gradient check failed: the function is not finite at the point "
                f"(order {level - 1} outputs: {twice[0][:8]}...)."
            )
        if not np.allclose(twice[0], twice[1], rtol=1e-12, atol=0.0):
            raise AssertionError(
                "Gradient check failed: the function is not deterministic: two evaluations "
                f"at the same point differ by up to {np.max(np.abs(twice[0] - twice[1])):.3g}. "
                "Fix its random seeds (or turn dropout off) to check its gradients."
            )
        return _Order(level, chain, outputs, readout, jacobian, twice[0] @ readout, u)

    def probes(self) -> list[_Probe]:
        probes = []
        for i, param in enumerate(self.t.params):
            size = param.size
            widths = np.maximum(1.0, np.abs(param.value)).reshape(-1)
            if size <= self.s.max_elements:
                coordinates: list[int] = list(range(size))
            else:
                count = min(self.s.num_directions, size)
                coordinates = sorted(int(k) for k in self.rng.choice(size, count, replace=False))
                for _ in range(self.s.num_directions):
                    direction = self.rng.standard_normal(size) * widths
                    probes.append(_Probe(i, direction, None))
            for k in coordinates:
                direction = np.zeros(size)
                direction[k] = widths[k]
                probes.append(_Probe(i, direction, k))
        return probes

    def evaluate(
        self, state: _Order, probes: list[_Probe], offsets: Sequence[float], h: float
    ) -> np.ndarray:
        """The readout of ``F`` at ``x + offset * h * direction``: ``[probes, offsets, k]``."""
        moves: list[_Move] = []
        for probe in probes:
            value = self.t.params[probe.param].value
            for offset in offsets:
                moved = value + (offset * h) * probe.direction.reshape(value.shape)
                moves.append((probe.param, moved))
        raw = self.t.reference(moves, state.chain)
        return (raw @ state.readout).reshape(len(probes), len(offsets), -1)

    def noise(self, state: _Order, values: np.ndarray, h: float) -> np.ndarray:
        """Rounding error of a difference quotient with step ``h``: ``[probes, k]``."""
        finite = np.where(np.isfinite(values), np.abs(values), 0.0)  # a step may leave f's domain
        magnitude = np.maximum(np.max(finite, axis=1), np.abs(state.base)[None, :])
        return 8 * self.ref_eps * magnitude / h

    def differences(
        self, state: _Order, probes: list[_Probe], h: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Derivatives along each probe's direction: ``(estimate, spread, noise)``.

        Each is ``[probes, k]``. The estimate is the Richardson extrapolation of
        central differences with steps ``h`` and ``h / 2``; the spread is how
        far those two (and the curvatures they imply) disagree: small where the
        function is smooth, large near a kink or where it is noisy.
        """
        values = self.evaluate(state, probes, (1.0, -1.0, 0.5, -0.5), h)
        plus, minus, half_plus, half_minus = (values[:, i] for i in range(4))
        base = state.base[None, :]
        d1 = (plus - minus) / (2 * h)
        d2 = (half_plus - half_minus) / h
        c1 = (plus - 2 * base + minus) / h**2
        c2 = (half_plus - 2 * base + half_minus) / (h / 2) ** 2
        spread = np.abs(d1 - d2) + (h / 2) * np.abs(c1 - c2)
        spread = np.where(np.isfinite(spread), spread, np.inf)  # a step left f's domain
        return (4 * d2 - d1) / 3, spread, self.noise(state, values, h / 2)

    def check(self, state: _Order) -> list[_Comparison]:
        probes = self.probes()
        # A central difference first; only where it disagrees, the full stencil.
        values = self.evaluate(state, probes, (1.0, -1.0), self.eps)
        central = (values[:, 0] - values[:, 1]) / (2 * self.eps)
        zeros = np.zeros_like(central)
        sizes = [
            np.max(np.abs(central[i])) / abs(p.direction[p.coordinate])
            if p.coordinate is not None
            else np.max(np.abs(central[i])) / max(float(np.linalg.norm(p.direction)), 1e-300)
            for i, p in enumerate(probes)
        ]
        state.floor = _FLOOR * float(max(sizes, default=0.0))  # 1% of the largest entry
        comparisons = self.compare(
            state, probes, central, zeros, self.noise(state, values, self.eps)
        )
        h = self.eps
        for attempt in range(self.shrinks + 1):
            retry = [p for p in probes if any(c.failed for c in comparisons if c.probe is p)]
            if attempt > 0:
                retry = [p for p in retry if any(c.unreliable for c in comparisons if c.probe is p)]
            if not retry:
                break
            redone = self.compare(state, retry, *self.differences(state, retry, h))
            comparisons = [c for c in comparisons if c.probe not in retry] + redone
            h /= 10.0
        return comparisons

    def compare(
        self,
        state: _Order,
        probes: list[_Probe],
        estimate: np.ndarray,
        spread: np.ndarray,
        noise: np.ndarray,
    ) -> list[_Comparison]:
        results = []
        for i, probe in enumerate(probes):
            atol, rtol = self.tolerances(self.t.params[probe.param])
            terms = state.jacobian[probe.param] * probe.direction[None, :]
            analytic = terms.sum(axis=1)
            if probe.coordinate is not None:  # report d/dx_j itself, not along a scaled e_j
                width = abs(probe.direction[probe.coordinate])
                analytic, reference = analytic / width, estimate[i] / width
                spread_i, noise_i = spread[i] / width, noise[i] / width
                dot, floor = np.zeros_like(analytic), state.floor
            else:
                reference, spread_i, noise_i = estimate[i], spread[i], noise[i]
                dot = np.sqrt(np.sum(terms**2, axis=1))
                floor = state.floor * float(np.linalg.norm(probe.direction))
            for k in range(len(analytic)):
                a, r = float(analytic[k]), float(reference[k])
                sizes = (abs(a), abs(r), float(dot[k]), floor)
                magnitude = max((s for s in sizes if math.isfinite(s)), default=0.0)
                results.append(
                    _Comparison(
                        probe=probe,
                        output=k,
                        analytic=a,
                        reference=r,
                        tolerance=atol + rtol * magnitude + float(noise_i[k]),
                        spread=float(spread_i[k]),
                    )
                )
        return results

    def localize(self, state: _Order, comparison: _Comparison) -> str:
        """Bisects a failing random direction down to the entry (or block) at fault."""
        probe = comparison.probe
        param = self.t.params[probe.param]
        support = np.flatnonzero(probe.direction)
        while len(support) > 1:
            halves = [support[: len(support) // 2], support[len(support) // 2 :]]
            masked = []
            for half in halves:
                direction = np.zeros_like(probe.direction)
                direction[half] = probe.direction[half]
                masked.append(_Probe(probe.param, direction, None))
            found = self.compare(state, masked, *self.differences(state, masked, self.eps))
            excess = [c.error - c.tolerance for c in found if c.output == comparison.output]
            best = int(np.argmax(excess))
            if excess[best] <= 0:
                break
            support = halves[best]
        if len(support) == 1:
            return param.where(int(support[0]))
        return f"{len(support)} entries of {param.name} (from {param.where(int(support[0]))})"

    # -- the report --

    def output_label(self, state: _Order, k: int, full: bool) -> str:
        if not full:
            name = self.t.output_name
            if state.level == 1:
                return f"<u, {name}>" if state.readout.shape[0] > 1 else name
            return f"<u, grad {name}>"
        index, start = k, 0
        for j, out in enumerate(state.outputs):
            if index < start + out.size:
                flat = index - start
                if state.level == 1:
                    name = self.t.output_name
                    name = name if len(state.outputs) == 1 else f"{name}[{j}]"
                    if out.ndim:
                        where = np.unravel_index(flat, out.shape)
                        name += f"[{', '.join(str(int(i)) for i in where)}]"
                    return name
                return "grad " + self.t.params[j].where(flat)
            start += out.size
        return f"output {k}"

    def report(self, state: _Order, comparisons: list[_Comparison]) -> str:
        failed = [c for c in comparisons if c.failed]
        conclusive = [c for c in failed if not c.unreliable]
        full = state.readout.shape[1] > 1
        what = "gradient" if state.level == 1 else f"order-{state.level} derivative"
        lines = []
        if conclusive:
            lines.append(
                f"Gradient check failed (order {state.level}): the reverse-mode {what} "
                "disagrees with finite differences."
            )
        else:
            lines.append(
                f"Gradient check failed (order {state.level}): the function is not "
                "differentiable at this point (or the steps leave its domain, or it is too "
                "noisy for them): finite differences with steps h and h/2, and the curvatures "
                "they imply, disagree. Check at another point, or pass another `eps`."
            )
        if state.level > 1:
            lines.append(
                f"  Checked: the derivative of the order-{state.level - 1} derivative, "
                "contracted with a random cotangent u (reverse over reverse mode)."
            )
        elif not full and state.readout.shape[0] > 1:
            lines.append("  Checked: the vector-Jacobian product J^T u for a random cotangent u.")
        for index, param in enumerate(self.t.params):
            mine = [c for c in comparisons if c.probe.param == index]
            bad = [c for c in mine if c.failed and (c.unreliable != bool(conclusive))]
            if not bad:
                continue
            atol, rtol = self.tolerances(param)
            shape = tuple(param.value.shape)
            lines.append(
                f"  {self.t.kind.capitalize()} {param.name!r} (shape {shape}, "
                f"{param.dtype.name}): {len(bad)} of "
                f"{len(mine)} checks out of tolerance (atol={atol:g}, rtol={rtol:g})."
            )
            worst_abs = max(bad, key=lambda c: c.error)
            worst_rel = max(bad, key=lambda c: c.relative)
            lines.append(
                f"    largest absolute error {worst_abs.error:.4g} at "
                f"{self.location(state, worst_abs, full)}"
            )
            lines.append(
                f"    largest relative error {worst_rel.relative:.4g} at "
                f"{self.location(state, worst_rel, full)}"
            )
            lines.append(
                f"    {'where':<32} {'reverse mode':>14} {'finite diff.':>14} {'abs. error':>11}"
                f" {'rel. error':>11}" + (f" {'fd spread':>11}" if not conclusive else "")
            )
            for c in sorted(bad, key=lambda c: -c.error)[:_ROWS_SHOWN]:
                lines.append(
                    f"    {self.location(state, c, full, short=True):<32} {c.analytic:>14.6g} "
                    f"{c.reference:>14.6g} {c.error:>11.3g} {c.relative:>11.3g}"
                    + (f" {c.spread:>11.3g}" if not conclusive else "")
                )
            if len(bad) > _ROWS_SHOWN:
                lines.append(f"    ... and {len(bad) - _ROWS_SHOWN} more")
        lines.append(
            f"  Finite differences: central, Richardson-extrapolated, in "
            f"{self.t.reference_note}, step eps={self.eps:g} (times max(1, |x_i|))."
        )
        lines.append(
            "  Tolerance: |reverse - finite| <= atol + rtol * max(|reverse|, |finite|, "
            "1% of the largest entry)."
        )
        return "\n".join(lines)

    def location(self, state: _Order, c: _Comparison, full: bool, short: bool = False) -> str:
        param = self.t.params[c.probe.param]
        if c.probe.coordinate is not None:
            wrt = param.where(c.probe.coordinate)
        else:
            wrt = f"{param.name} along a random direction"
            if c.failed and not c.unreliable and not short:
                wrt += f" (bisected to {self.localize(state, c)})"
        text = f"d {self.output_label(state, c.output, full)} / d {wrt}"
        if short:
            return text
        return f"{text}: reverse mode {c.analytic:.6g}, finite differences {c.reference:.6g}"


def _unflatten(flat: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    out, start = [], 0
    for o in like:
        out.append(np.asarray(flat[start : start + o.size], np.float64).reshape(o.shape))
        start += o.size
    return out


# -- public API ----------------------------------------------------------


def _settings(
    order: Any, eps: Any, atol: Any, rtol: Any, num_directions: Any, max_elements: Any, seed: Any
) -> tuple[int, _Settings, int]:
    order = v.positive_int("order", order)
    if eps is not None:
        eps = v.real_number("eps", eps)
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"`eps` must be a finite, positive number. {v.received('eps', eps)}")
    atol = None if atol is None else v.non_negative_float("atol", atol)
    rtol = None if rtol is None else v.non_negative_float("rtol", rtol)
    num_directions = v.positive_int("num_directions", num_directions)
    if isinstance(max_elements, bool) or not isinstance(max_elements, numbers.Integral):
        raise TypeError(
            f"`max_elements` must be a non-negative integer. "
            f"{v.received('max_elements', max_elements)}"
        )
    if max_elements < 0:
        raise ValueError(
            f"`max_elements` must be a non-negative integer. "
            f"{v.received('max_elements', max_elements)}"
        )
    seed = v.optional_seed("seed", seed)
    return order, _Settings(eps, atol, rtol, num_directions, int(max_elements)), seed or 0


def check_gradients(
    f: Callable[..., Any],
    args: Any,
    *,
    order: int = 1,
    argnums: int | str | Sequence[int | str] | None = None,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    num_directions: int = 3,
    max_elements: int = 32,
    seed: int = 0,
) -> None:
    """Checks the reverse-mode gradients of ``f`` against finite differences.

    The gradients checked are the ones ``tf.GradientTape`` computes, so a
    ``tf.custom_gradient`` is checked too. See the module docstring for how.

    Args:
        f: A function of tensors returning a tensor or a nest of tensors
            (non-scalar outputs are checked through vector-Jacobian products).
        args: ``f``'s arguments: a sequence (positional), a dict (keyword),
            or one array, tensor or number. Integer arguments (labels) are
            passed through unchanged.
        order: Check derivatives up to this order (2: the gradient's own
            derivative as well, reverse over reverse mode).
        argnums: Which arguments to differentiate, by position or name;
            ``None`` means every floating-point argument.
        eps: Finite-difference step, relative to ``max(1, |x_i|)``; by default
            1e-5 when the differences are computed in float64.
        atol: Absolute tolerance; by default from the gradient's dtype
            (float32: 1e-5, float64: 1e-9).
        rtol: Relative tolerance; by default from the gradient's dtype
            (float32: 1e-3, float64: 1e-6).
        num_directions: Random directions per argument larger than
            ``max_elements`` (and random entries of it checked one by one).
        max_elements: Arguments and outputs with at most this many entries are
            checked entry by entry: the full Jacobian.
        seed: Seed of the random directions and cotangents.

    Raises:
        AssertionError: With a report (which argument, the largest absolute
            and relative errors and where) if a gradient is wrong, or if ``f``
            is not differentiable (or not deterministic) at the point.
        TypeError: If ``f`` or ``args`` are not usable.
        ValueError: If an option is out of range.

    Example::

        @tf.custom_gradient
        def softplus(x):
            return tf.math.softplus(x), lambda dy: dy * tf.sigmoid(x)

        check_gradients(softplus, [np.linspace(-3.0, 3.0, 7, dtype=np.float32)])
    """
    order, settings, seed = _settings(order, eps, atol, rtol, num_directions, max_elements, seed)
    target = _FunctionTarget(f, args, argnums)
    _Checker(target, settings, seed).run(order)


def check_model_gradients(
    model: Any,
    loss: Callable[[Any, Any], Any],
    x: Any,
    y: Any,
    *,
    order: int = 1,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    num_directions: int = 3,
    max_elements: int = 32,
    seed: int = 0,
) -> None:
    """Checks ``d loss(y, model(x)) / d model.trainable_variables`` against finite differences.

    The model is built for ``x`` if it has not been. The reverse-mode gradient
    is the one the Trainer uses (a ``GradientTape`` over the model's own
    variables, in their dtype); the finite differences are computed on a
    float64 copy of the model where one can be made (gradfit models, and
    ``tf.Module`` models whose ``__call__`` follows their variables' dtype),
    else on the model itself, whose variables are always restored.

    Args:
        model: A :class:`gradfit.Model` (or another callable ``tf.Module``).
        loss: A :class:`gradfit.Loss` or any ``callable(y_true, y_pred) -> scalar``.
        x: Inputs of one batch.
        y: Targets of that batch.
        order: Check derivatives up to this order.
        eps: Finite-difference step; see :func:`check_gradients`.
        atol: Absolute tolerance; see :func:`check_gradients`.
        rtol: Relative tolerance; see :func:`check_gradients`.
        num_directions: Random directions per variable larger than ``max_elements``.
        max_elements: Variables with at most this many entries are checked entry by entry.
        seed: Seed of the random directions and cotangents.

    Raises:
        AssertionError: With a report naming the variable (by its path in the
            model, e.g. ``"layers/0/W"``) if a gradient is wrong.

    Example::

        check_model_gradients(gf.MLP((8,), activation="tanh"), gf.L2(), x, y)
    """
    order, settings, seed = _settings(order, eps, atol, rtol, num_directions, max_elements, seed)
    target = _ModelTarget(model, loss, x, y)
    _Checker(target, settings, seed).run(order)
