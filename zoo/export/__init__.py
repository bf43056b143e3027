"""Export a model to ONNX / TorchScript / torch.export bundles, with parity measured before anything
is written, and re-verify existing bundles. See docs/formats.md for the bundle layout."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from zoo import registry
from zoo.errors import ParityError, ZooError
from zoo.export import _manifest, _onnx, _parity, _pt2, _torchscript
from zoo.export._common import EXAMPLE_SIZES, first_line, quiet
from zoo.runtime._bundle import read_manifest as _read_bundle
from zoo.weights import load_state_dict, preprocess_for, read_card, resolve, sha256_file, weights_dir

__all__ = ["export", "verify", "read_manifest", "FORMATS", "PARITY_COLUMNS", "parity_rows"]

FORMATS = {"onnx": _onnx, "torchscript": _torchscript, "pt2": _pt2}
PARITY_COLUMNS = _parity.COLUMNS
parity_rows = _parity.rows
RANDOM_SEED = 0   # the seed `--random-weights` builds the model with


def read_manifest(bundle: str | Path) -> dict:
    """The manifest of a bundle folder as a dict, read and checked by the runtime's reader
    (zoo.runtime.read_manifest) with the keys export and verify need; BundleError (exit 1) if corrupted."""
    return _read_bundle(bundle, verify=False, require=_manifest.REQUIRED).data


def _formats(formats) -> list[str]:
    formats = [formats] if isinstance(formats, str) else list(formats)
    if "all" in formats:
        return list(FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ZooError(f"unknown format {unknown[0] if unknown else '(none)'}: choose from "
                       f"{', '.join(FORMATS)} or all")
    return list(dict.fromkeys(formats))


def _eval_model(spec, state: dict | None):
    model = registry.build(spec, seed=RANDOM_SEED)
    if state is not None:
        model.load_state_dict(state)
    model.eval().requires_grad_(False)   # inference only; autograd bookkeeping slows tracing a lot
    still_training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
    if still_training:   # BatchNorm / Dropout would export their training behaviour
        raise AssertionError(f"{spec.name}: modules still in training mode: {still_training}")
    return model


def _load_weights(spec, weights, random_weights: bool):
    """(model in eval mode, the manifest's `weights` record, the weights card or None)."""
    if random_weights:
        if weights is not None:
            raise ZooError("--weights and --random-weights exclude each other: pick one")
        record = {"sha256": None, "random": True, "seed": RANDOM_SEED, "source": None, "metrics": None}
        return _eval_model(spec, None), record, None
    path = resolve(spec, weights)
    if path is None:
        raise ZooError(f"no weights for {spec.name}: none shipped in {weights_dir()} and no --weights given. "
                       f"Train them (`zoo train {spec.name}`), pass --weights PATH, or use --random-weights "
                       "to export untrained weights (for testing only)")
    card = read_card(path.stem, path.parent)
    record = {"sha256": sha256_file(path), "random": False, "seed": None, "source": path.name,
              "metrics": (card or {}).get("metrics")}
    return _eval_model(spec, load_state_dict(spec, path)), record, card


def _install(staging: Path, target: Path) -> None:
    """Move a finished bundle into place with renames only, so `target` is never half-written."""
    if target.exists():
        if not (target / _manifest.NAME).is_file():
            raise ZooError(f"{target} exists and is not a zoo bundle: not replacing it")
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, target)


def _bundle(spec, fmt, model, weights_record, preprocess, real, atol, rtol, out: Path) -> Path:
    module = FORMATS[fmt]
    target = out / f"{spec.name}-{fmt}"
    # built beside the target (same filesystem, so the final rename is atomic); a dot-name that
    # no one mistakes for a bundle, removed whatever happens
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=out))
    staging.chmod(0o755)   # mkdtemp makes it private; a bundle is meant to be shared
    try:
        file = staging / module.FILE
        try:
            exporter = module.save(model, spec, file)
            artefact = module.Artefact(file)
        except Exception as e:  # noqa: BLE001 - an exporter crash is reported as one line
            raise ZooError(f"{fmt} export of {spec.name} failed: {first_line(e)}") from e
        declared = {"inputs": [t.to_dict() for t in spec.inputs], "outputs": [t.to_dict() for t in spec.outputs]}
        report = _parity.measure(spec, model, artefact, declared, preprocess, atol, rtol, real)
        if not report["passed"]:
            error = ParityError(_parity.text_table(report, f"{spec.name} {fmt}: parity failed, no bundle written"))
            error.reports = [{"model": spec.name, "format": fmt, **report}]
            raise error
        manifest = _manifest.build(spec, fmt, module.FILE, preprocess, weights_record, exporter, report)
        manifest["exporter"]["example_sizes"] = dict(EXAMPLE_SIZES)
        if fmt == "onnx":
            try:
                _onnx.finish(file, manifest)
            except Exception as e:  # noqa: BLE001 - onnx.checker's ValidationError and friends
                raise ZooError(f"{spec.name}: the ONNX file fails onnx.checker: {first_line(e)}") from e
        manifest["file_sha256"] = sha256_file(file)
        _manifest.write(staging, manifest)
        _install(staging, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export(name: str, formats=("onnx",), weights: str | Path | None = None, out: str | Path = "bundles",
           random_weights: bool = False, data: str | Path | None = None, atol: float | None = None,
           rtol: float | None = None) -> list[Path]:
    """Export model `name` to each format ("onnx", "torchscript", "pt2" or "all") as a bundle folder
    `<out>/<name>-<format>/`, measuring parity against eager PyTorch first. Weights: `weights`, else
    the shipped ones; `random_weights=True` exports an untrained model (marked so in the manifest).
    `data` adds real samples to the parity matrix. Returns the bundle folders; raises ParityError
    (with `.reports`) if any format fails parity, after writing the formats that passed."""
    spec = registry.get(name)
    formats = _formats(formats)
    model, weights_record, card = _load_weights(spec, weights, random_weights)
    preprocess = preprocess_for(spec, card, random_weights)
    real = _real_samples(spec, data, preprocess)
    atol = spec.atol if atol is None else float(atol)
    rtol = spec.rtol if rtol is None else float(rtol)
    if atol < 0 or rtol < 0:
        raise ZooError("--atol and --rtol must be >= 0")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths, failures = [], []
    for fmt in formats:
        try:
            paths.append(_bundle(spec, fmt, model, weights_record, preprocess, real, atol, rtol, out))
        except ParityError as e:
            failures.append(e)
    if failures:
        error = ParityError("\n\n".join(str(e) for e in failures))
        error.reports = [r for e in failures for r in e.reports]
        error.bundles = paths
        raise error
    return paths


def _real_samples(spec, data, preprocess: dict):
    if data is None:
        return None
    from zoo.data import real_samples

    return real_samples(spec, data, preprocess, n=32)


def _source_weights(spec, manifest: dict, weights) -> Path:
    """The weights file the bundle was exported from: `weights` (checked), else the shipped file
    whose sha256 is the manifest's."""
    wanted = manifest["weights"].get("sha256")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ZooError(f"weights file {path} does not exist")
        actual = sha256_file(path)
        if actual != wanted:
            raise ZooError(f"{path} (sha256 {actual[:12]}…) is not the weights this bundle was exported from "
                           f"(sha256 {str(wanted)[:12]}…)", exit_code=1)
        return path
    directory = weights_dir()
    shipped = directory / f"{spec.name}.safetensors"
    candidates = [shipped] if shipped.is_file() else []
    candidates += sorted(p for p in directory.glob("*.safetensors") if p != shipped) if directory.is_dir() else []
    for path in candidates:
        if sha256_file(path) == wanted:
            return path
    raise ZooError(f"the weights this bundle was exported from (sha256 {str(wanted)[:12]}…) are not among the "
                   f"shipped weights in {directory}: pass them with --weights PATH")


def verify(bundle: str | Path, weights: str | Path | None = None, data: str | Path | None = None) -> dict:
    """Check an existing bundle: the model file's sha256, the manifest against the registry and the
    model file, then re-run the parity matrix against the source weights (found by sha256 among
    the shipped weights, or `weights`). Returns the report; raises ZooError (exit 1) for a corrupted
    or tampered bundle and ParityError when parity fails."""
    bundle = Path(bundle)
    parsed = _read_bundle(bundle, verify=False, require=_manifest.REQUIRED)
    manifest, fmt = parsed.data, parsed.format
    module = FORMATS[fmt]
    file = parsed.file
    actual = sha256_file(file)
    if actual != manifest["file_sha256"]:
        raise ZooError(f"{file}: sha256 is {actual[:12]}…, the manifest says {str(manifest['file_sha256'])[:12]}… "
                       "(the model file was changed or truncated)", exit_code=1)
    spec = registry.get(manifest["model"])
    declared = {"inputs": manifest["inputs"], "outputs": manifest["outputs"]}
    for side in ("inputs", "outputs"):
        expected = [t.to_dict() for t in getattr(spec, side)]
        if declared[side] != expected:
            raise ZooError(f"{bundle}: manifest {side} {_io_text(declared[side])} don't match {spec.name}'s "
                           f"{_io_text(expected)}", exit_code=1)
    for key, expected in (("task", spec.task), ("output_kind", spec.output_kind)):
        if manifest[key] != expected:
            raise ZooError(f"{bundle}: manifest {key} is {manifest[key]!r}, {spec.name}'s is {expected!r}", exit_code=1)
    _same(bundle, "labels", parsed.labels, {k: list(v) for k, v in spec.labels.items()}, spec.name + "'s labels")
    random = bool(manifest["weights"].get("random"))
    path = None if random else _source_weights(spec, manifest, weights)
    card = None if path is None else read_card(path.stem, path.parent)
    _same(bundle, "preprocess", parsed.preprocess, preprocess_for(spec, card, random),
          "the preprocessing of " + (f"{spec.name} with the card of {path.name}" if path else spec.name))
    try:
        artefact = module.Artefact(file)
        described = artefact.describe()
    except Exception as e:  # noqa: BLE001 - a file that does not load is a corrupted bundle
        raise ZooError(f"{file} does not load: {first_line(e)[:200]}", exit_code=1) from None
    checks = _parity.check_structure(described, declared["inputs"], declared["outputs"])
    bad = [f"{c['check']}: {c['detail']}" for c in checks if c["passed"] is False]
    if bad:
        raise ZooError(f"{bundle}: the manifest does not match {file.name}: {'; '.join(bad)}", exit_code=1)
    result = {"bundle": str(bundle), "model": spec.name, "format": fmt, "file_sha256": actual, "checks": checks,
              "weights": None, "parity": None, "note": None, "passed": True}
    if random:
        _probe(spec, artefact, manifest, bundle)
        result["note"] = ("exported with --random-weights: there are no source weights to re-run parity "
                          "against; checked the file's sha256, the manifest against the model and a test run")
        return result
    model = _eval_model(spec, load_state_dict(spec, path))
    tolerance = (manifest.get("parity") or {}).get("tolerance") or {}
    preprocess = manifest.get("preprocess") or {}
    report = _parity.measure(spec, model, artefact, declared, preprocess,
                             tolerance.get("atol", spec.atol), tolerance.get("rtol", spec.rtol),
                             _real_samples(spec, data, preprocess))
    result.update(weights=str(path), parity=report, passed=report["passed"])
    if not report["passed"]:
        error = ParityError(_parity.text_table(report, f"{bundle}: parity failed"))
        error.reports = [{"model": spec.name, "format": fmt, **report}]
        raise error
    return result


def _same(bundle: Path, key: str, given, expected, what: str) -> None:
    """ZooError (exit 1) naming the first differing entry when the manifest's `key` is not `expected`."""
    given, expected = json.loads(json.dumps(given)), json.loads(json.dumps(expected))   # tuples -> lists
    if given == expected:
        return
    for name in sorted(set(given) | set(expected)):
        g, e = given.get(name), expected.get(name)
        if g == e:
            continue
        if isinstance(g, dict) and isinstance(e, dict):
            field = next(f for f in sorted(set(g) | set(e)) if g.get(f) != e.get(f))
            name, g, e = f"{name}.{field}", g.get(field), e.get(field)
        raise ZooError(f"{bundle}: manifest {key}.{name} is {_short(g)}, {what} says {_short(e)} "
                       "(the manifest was edited)", exit_code=1)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _io_text(tensors: list) -> str:
    return ", ".join(f"{t.get('name')}{tuple(t.get('shape', ()))}" for t in tensors) if isinstance(tensors, list) else repr(tensors)


def _probe(spec, artefact, manifest: dict, bundle: Path) -> None:
    """Run one batch through the model file and check the outputs against the manifest."""
    import numpy as np

    arrays = _parity.random_inputs(spec, manifest.get("preprocess") or {}, 2, EXAMPLE_SIZES["sequence"],
                                   np.random.default_rng(_parity.SEED))
    try:
        with quiet():
            produced = artefact.run(arrays)
    except Exception as e:  # noqa: BLE001
        raise ZooError(f"{bundle}: the model file rejects the manifest's inputs: {first_line(e)[:200]}",
                       exit_code=1) from None
    expected = [tuple(t["shape"]) for t in manifest["outputs"]]
    shapes = [tuple(o.shape) for o in produced]
    if len(shapes) != len(expected) or any(len(s) != len(e) or any(isinstance(d, int) and d != g for d, g in zip(e, s))
                                           for s, e in zip(shapes, expected)):
        raise ZooError(f"{bundle}: the model file returns {shapes}, the manifest declares {expected}", exit_code=1)
