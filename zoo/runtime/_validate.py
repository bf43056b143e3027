"""Checks model inputs against the manifest before any backend sees them.

Every problem is a ValueError that names the input, says what was expected and what was given."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from zoo.runtime._bundle import TensorInfo

_NUMERIC_KINDS = "iuf"  # signed / unsigned integers and floats; bool, complex, strings, objects are refused


def _as_array(name: str, value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"input {name!r}: expected a numeric array, got a {type(value).__name__} that numpy "
                         f"cannot turn into one ({e})") from None
    return array


def _check_one(spec: TensorInfo, value, sizes: dict[str, tuple[int, str]]) -> np.ndarray:
    name, expected = spec.name, spec.describe()
    array = _as_array(name, value)
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"input {name!r}: expected a numeric array (cast to {spec.dtype}), "
                         f"got dtype {array.dtype}")
    if array.ndim != len(spec.shape):
        hint = " (add the batch axis: x[None])" if array.ndim == len(spec.shape) - 1 else ""
        raise ValueError(f"input {name!r}: expected rank {len(spec.shape)} with shape {expected}, "
                         f"got rank {array.ndim} with shape {tuple(array.shape)}{hint}")
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if isinstance(want, str):
            if got == 0:
                raise ValueError(f"input {name!r}: axis {axis} ({want}) is empty; expected shape {expected} "
                                 f"with at least one {want} item, got shape {tuple(array.shape)}")
            seen = sizes.setdefault(want, (got, name))
            if seen[0] != got:
                raise ValueError(f"input {name!r}: axis {axis} ({want}) has size {got} but input {seen[1]!r} "
                                 f"has {want} size {seen[0]}; they must agree")
        elif want != got:
            raise ValueError(f"input {name!r}: expected shape {expected}, got {tuple(array.shape)} "
                             f"(axis {axis} must be {want}, not {got})")
    dtype = np.dtype(spec.dtype)
    if array.dtype != dtype:
        if array.dtype.kind == "f" or dtype.kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                array = array.astype(dtype)
        else:
            array = array.astype(dtype)
    if dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"input {name!r}: expected finite values, got {bad} NaN or infinite value(s) "
                         f"(after conversion to {spec.dtype})")
    return np.ascontiguousarray(array)


def check_inputs(inputs, specs: tuple[TensorInfo, ...]) -> dict[str, np.ndarray]:
    """Named arrays (or one array for a single-input model) -> contiguous arrays of the declared dtype."""
    names = [s.name for s in specs]
    if not isinstance(inputs, Mapping):
        if len(specs) != 1:
            raise ValueError(f"this model has {len(specs)} inputs, so pass a dict with keys {names}, "
                             f"got a single {type(inputs).__name__}")
        inputs = {specs[0].name: inputs}
    keys = [str(k) if isinstance(k, str) else repr(k) for k in inputs]
    unknown = [k for k, key in zip(keys, inputs) if not isinstance(key, str) or key not in names]
    if unknown:
        raise ValueError(f"unknown input name(s) {unknown}; expected {names}")
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"missing input(s) {missing}; expected {names}, got {keys}")
    sizes: dict[str, tuple[int, str]] = {}
    return {s.name: _check_one(s, inputs[s.name], sizes) for s in specs}
