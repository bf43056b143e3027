"""Checks model inputs against the manifest before any backend sees them.

Every problem is a ValueError that names the input, says what was expected and what was given. The
checker is built once per session and kept cheap: on the tiny course models the per-call Python work
is a visible share of the latency."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from zoo.contract import STRING, TensorSpec

_NUMERIC_KINDS = "iuf"  # signed / unsigned integers and floats; bool, complex, strings, objects are refused


class _Input:
    __slots__ = ("spec", "name", "rank", "dtype", "fixed", "dynamic", "check_finite")

    def __init__(self, spec: TensorSpec):
        self.spec, self.name, self.rank = spec, spec.name, len(spec.shape)
        self.dtype = np.dtype(object) if spec.dtype == STRING else np.dtype(spec.dtype)
        self.fixed = tuple((axis, d) for axis, d in enumerate(spec.shape) if not isinstance(d, str))
        self.dynamic = tuple((axis, d) for axis, d in enumerate(spec.shape) if isinstance(d, str))
        self.check_finite = self.dtype.kind == "f"

    def check(self, value, sizes: dict[str, tuple[int, str]]) -> np.ndarray:
        name, expected = self.name, self.spec.describe()
        array = value if type(value) is np.ndarray else _as_array(name, value)
        if self.dtype.kind == "O":
            _check_text(name, array)
        elif array.dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"input {name!r}: expected a numeric array (cast to {self.dtype}), got dtype {array.dtype}")
        shape = array.shape
        if len(shape) != self.rank:
            hint = " (add the batch axis: x[None])" if len(shape) == self.rank - 1 else ""
            raise ValueError(f"input {name!r}: expected rank {self.rank} with shape {expected}, "
                             f"got rank {len(shape)} with shape {tuple(shape)}{hint}")
        for axis, want in self.fixed:
            if shape[axis] != want:
                raise ValueError(f"input {name!r}: expected shape {expected}, got {tuple(shape)} "
                                 f"(axis {axis} must be {want}, not {shape[axis]})")
        for axis, dim in self.dynamic:
            got = shape[axis]
            if got == 0:
                raise ValueError(f"input {name!r}: axis {axis} ({dim}) is empty; expected shape {expected} "
                                 f"with at least one {dim} item, got shape {tuple(shape)}")
            seen = sizes.setdefault(dim, (got, name))
            if seen[0] != got:
                raise ValueError(f"input {name!r}: axis {axis} ({dim}) has size {got} but input {seen[1]!r} "
                                 f"has {dim} size {seen[0]}; they must agree")
        if array.dtype != self.dtype:
            with np.errstate(over="ignore", invalid="ignore"):
                converted = array.astype(self.dtype)
            if self.dtype.kind in "iu" and not np.array_equal(converted, array):   # 0-1 floats fed as pixels, 300
                info = np.iinfo(self.dtype)
                raise ValueError(f"input {name!r}: expected {self.dtype} values (whole numbers {info.min} to "
                                 f"{info.max}), got {array.dtype} values that are not")
            array = converted
        if self.check_finite and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise ValueError(f"input {name!r}: expected finite values, got {bad} NaN or infinite value(s) "
                             f"(after conversion to {self.dtype})")
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _check_text(name: str, array: np.ndarray) -> None:
    """A string input (category names of a raw-input model): str or object arrays of str only."""
    if array.dtype.kind == "U" or (array.dtype.kind == "O" and all(isinstance(v, str) for v in array.flat)):
        return
    raise ValueError(f"input {name!r}: expected text (category names), got dtype {array.dtype}")


def _as_array(name: str, value) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"input {name!r}: expected a numeric array, got a {type(value).__name__} that numpy "
                         f"cannot turn into one ({e})") from None


class InputChecker:
    """check(inputs) -> {name: contiguous array of the declared dtype}, or a ValueError."""

    def __init__(self, specs: tuple[TensorSpec, ...]):
        self.inputs = tuple(_Input(s) for s in specs)
        self.names = [s.name for s in specs]

    def __call__(self, inputs) -> dict[str, np.ndarray]:
        if not isinstance(inputs, dict) and not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise ValueError(f"this model has {len(self.inputs)} inputs, so pass a dict with keys {self.names}, "
                                 f"got a single {type(inputs).__name__}")
            (only,) = self.inputs
            return {only.name: only.check(inputs, {})}
        if len(inputs) != len(self.names) or any(n not in inputs for n in self.names):
            keys = [k if isinstance(k, str) else repr(k) for k in inputs]
            unknown = [k for k, key in zip(keys, inputs) if not isinstance(key, str) or key not in self.names]
            if unknown:
                raise ValueError(f"unknown input name(s) {unknown}; expected {self.names}")
            missing = [n for n in self.names if n not in inputs]
            raise ValueError(f"missing input(s) {missing}; expected {self.names}, got {keys}")
        sizes: dict[str, tuple[int, str]] = {}
        return {i.name: i.check(inputs[i.name], sizes) for i in self.inputs}
