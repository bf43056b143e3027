"""Export a model to ONNX / TorchScript / torch.export bundles, with parity measured before anything is
written, and re-verify existing bundles. See docs/formats.md for the bundle layout.

A bundle is built in a staging folder: the converted model file with the manifest sealed into it, the
manifest beside it; then the staged bundle is loaded with `zoo.runtime.load` exactly as users load it,
and its parity against eager PyTorch is measured through that session. Only a bundle that passes is
renamed into place. ONNX bundles also come in reduced precisions (fp16, int8-dynamic, int8-static), made
from the fp32 export; those differ from eager by design and are judged by their accuracy on held-out
data against a budget (`_accuracy`) instead of an element-wise tolerance. Export uses nothing of the
runtime but its public API."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zoo.runtime as runtime
from zoo import registry
from zoo.errors import ParityError, PrecisionRefused, RawInputsRefused, ZooError, interrupted
from zoo.export import (_accuracy, _manifest, _onnx, _parity, _precision, _pt2, _raw, _rawparity, _torchscript,
                        _vectors)
from zoo.export._accuracy import Budget
from zoo.export._common import EXAMPLE_SIZES, first_line, quiet
from zoo.export._precision import PRECISIONS
from zoo.outputs import RUNS, clean_stale_staging, staging_folder, swap_into_place, writable_folder
from zoo.weights import load_model, preprocessing, read_card, resolve, sha256_file, weights_dir

__all__ = ["export", "verify", "bundle_name", "find_weights", "weights_text", "same_weights", "FORMATS", "PRECISIONS",
           "Budget", "RAW", "PARITY_COLUMNS", "parity_rows", "ACCURACY_COLUMNS", "accuracy_rows", "RAW_PARITY_COLUMNS",
           "raw_parity_rows"]

FORMATS = {"onnx": _onnx, "torchscript": _torchscript, "pt2": _pt2}
PARITY_COLUMNS = _parity.COLUMNS
parity_rows = _parity.rows
ACCURACY_COLUMNS = _accuracy.COLUMNS
accuracy_rows = _accuracy.rows
RAW_PARITY_COLUMNS = _rawparity.COLUMNS
raw_parity_rows = _rawparity.rows
RANDOM_SEED = 0   # the seed `--random-weights` builds the model with
RAW = "raw"       # the raw-input bundle's suffix: <model>-onnx-raw/
RAW_SAMPLES = 16  # raw samples read for the raw-input parity and every ONNX bundle's test vectors
BUNDLE_FILES = frozenset({runtime.MANIFEST_NAME, runtime.SIGNATURE_NAME, *runtime.MODEL_FILES.values()})   # what zoo writes in a bundle


def zoo_writes(name: str) -> bool:
    """Whether an entry of a bundle folder is one zoo writes (model, manifest, signature, test vectors,
    golden cases), as opposed to a file a user added, which a re-export keeps."""
    return name in BUNDLE_FILES or name == "golden" or re.fullmatch(r"test_data_set_\d+", name) is not None


def choices(values, allowed, what: str) -> list[str]:
    """A name or names from `allowed` (or "all"), in order, without repeats; else one line naming the bad one."""
    values = [values] if isinstance(values, str) else list(values)
    if "all" in values:
        return list(allowed)
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ZooError(f"unknown {what} {unknown[0] if unknown else '(none)'}: choose from "
                       f"{', '.join(allowed)} or all")
    return list(dict.fromkeys(values))


def _formats(formats) -> list[str]:
    return choices(formats, list(FORMATS), "format")


def _precisions(precisions) -> list[str]:
    return choices(precisions, list(PRECISIONS), "precision")


def bundle_name(model: str, fmt: str, precision: str = "fp32") -> str:
    """`<model>-<format>`, `<model>-onnx-<precision>` for a reduced precision, `<model>-onnx-raw` (precision
    RAW) for the raw-input bundle."""
    return f"{model}-{fmt}" if precision == "fp32" else f"{model}-{fmt}-{precision}"


def _for_inference(model):
    model.eval().requires_grad_(False)   # inference only; autograd bookkeeping slows tracing a lot
    still_training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
    if still_training:   # BatchNorm / Dropout would export their training behaviour
        raise AssertionError(f"modules still in training mode: {still_training}")
    return model


def _load_weights(spec, weights, random_weights: bool):
    """(model in eval mode, the manifest's `weights` record, the weights card or None, the weights file or
    None)."""
    if random_weights:
        if weights is not None:
            raise ZooError("--weights and --random-weights exclude each other: pick one")
        record = {"sha256": None, "random": True, "seed": RANDOM_SEED, "source": None, "metrics": None}
        return _for_inference(registry.build(spec, seed=RANDOM_SEED)), record, None, None
    path = resolve(spec, weights)
    if path is None:
        raise ZooError(f"no weights for {spec.name}: none shipped in {weights_dir()} and no --weights given. "
                       f"Train them (`zoo train {spec.name}`), pass --weights PATH, or use --random-weights "
                       "to export untrained weights (for testing only)")
    card = read_card(path.stem, path.parent)
    record = {"sha256": sha256_file(path), "random": False, "seed": None, "source": path.name,
              "metrics": (card or {}).get("metrics"), "caveat": (card or {}).get("caveat")}
    return _for_inference(load_model(spec, path)), record, card, path


def find_weights(model: str, sha256: str | None, source: str | None = None) -> Path | None:
    """The weights file whose sha256 is `sha256` (the source weights a bundle names), looked for where
    `zoo export` takes weights from: the shipped weights folder and zoo train's runs/ (and the folders in
    it), the model's own file and the one named `source` first. A card's recorded sha256 skips the files
    that cannot match before any is hashed. None when no file there matches."""
    if not isinstance(sha256, str):
        return None
    names = [f"{model}.safetensors"] + ([Path(source).name] if isinstance(source, str) and source else [])
    folders = [weights_dir(), RUNS, *sorted(p for p in RUNS.glob("*") if p.is_dir())]
    candidates = [folder / name for folder in folders for name in names]
    candidates += [p for folder in folders for p in sorted(folder.glob("*.safetensors"))]
    for path in dict.fromkeys(candidates):
        if not path.is_file():
            continue
        card = path.with_suffix(".json")
        try:
            recorded = json.loads(card.read_text()).get("sha256") if card.is_file() else None
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded in (None, sha256) and sha256_file(path) == sha256:
            return path
    return None


def weights_text(record: dict | None, path: Path | None = None) -> str:
    """A manifest's `weights` record in words: random weights, or the file and the start of its sha256."""
    if not isinstance(record, dict):
        return "unknown weights (the manifest cannot be read)"
    if record.get("random"):
        return f"random weights (seed {record.get('seed')})"
    where = str(path) if path is not None else str(record.get("source") or "a weights file")
    return f"{where} (sha256 {str(record.get('sha256'))[:12]}…)"


def same_weights(a: dict, b: dict) -> bool:
    """Whether two manifests' `weights` records name the same weights (the same file, or the same seed of
    random weights)."""
    if a.get("random") or b.get("random"):
        return bool(a.get("random")) and bool(b.get("random")) and a.get("seed") == b.get("seed")
    return a.get("sha256") is not None and a.get("sha256") == b.get("sha256")


def _replaceable(folder: Path, model: str, weights: dict, source: Path | None, replace: bool) -> bool:
    """Whether the existing bundle `folder` may be replaced by an export of `weights` (the manifest record;
    `source`: their file): it is a bundle (has a manifest) exported from the same weights, or `replace` says
    any bundle may go. A bundle of other weights is a ZooError that names both and says how to proceed; a
    folder that is no bundle is False."""
    if not (folder / runtime.MANIFEST_NAME).is_file():
        return False
    if replace:
        return True
    try:
        old = runtime.read_manifest(folder).data.get("weights")
    except runtime.BundleError:
        old = None
    if isinstance(old, dict) and same_weights(old, weights):
        return True
    found = find_weights(model, old.get("sha256"), old.get("source")) if isinstance(old, dict) else None
    again = f"re-export those with --weights {found}, " if found is not None else ""
    raise ZooError(f"{folder} holds an export of {weights_text(old, found)}, not of {weights_text(weights, source)}: "
                   f"not replacing it; {again}choose another --out, or pass --replace to replace it")


@dataclass
class _Job:
    """What every bundle of one export shares."""
    spec: object
    model: object                  # eager, in eval mode
    weights: dict                  # the manifest's `weights` record
    source: Path | None            # their file (None: random weights)
    card: dict | None
    preprocess: dict
    real: dict | None              # real samples for the parity matrix (--data)
    atol: float
    rtol: float
    out: Path
    optimize: bool = False
    budget: Budget = Budget()
    signer: runtime.BundleSigner | None = None   # --sign: signs each finished bundle
    held: _accuracy.HeldOut | None = None   # reduced precisions: calibration and validation samples
    reference: dict | None = None           # eager outputs on the validation samples
    replace: bool = False                   # replace bundles exported from other weights
    notes: list | None = None               # what the caller is told besides the bundles (files kept, ...)
    samples: list | None = None             # raw samples (zoo.data.raw): test vectors, raw-input parity
    samples_about: dict | None = None


def _convert(spec, fmt, model):
    try:
        converted, exporter = FORMATS[fmt].convert(model, spec)
    except Exception as e:  # noqa: BLE001 - an exporter crash is reported as one line
        if interrupted(e):   # torch wraps a Ctrl-C during export in its own error types
            raise KeyboardInterrupt from e
        raise ZooError(f"{fmt} export of {spec.name} failed: {first_line(e)}") from e
    exporter["example_sizes"] = dict(EXAMPLE_SIZES)
    return converted, exporter


def _write_model(spec, fmt: str, artefact, folder: Path, manifest: dict) -> None:
    """Seal `manifest` into the model file, write it and the manifest (with the file's sha256) into `folder`."""
    file = folder / FORMATS[fmt].FILE
    try:
        FORMATS[fmt].write(artefact, file, runtime.seal_text(manifest))
    except OSError:
        raise   # a full disk: reported by export() in one line
    except Exception as e:  # noqa: BLE001 - onnx.checker's ValidationError and friends
        if interrupted(e):
            raise KeyboardInterrupt from e
        raise ZooError(f"{spec.name}: the {fmt} file fails its checks: {first_line(e)}") from e
    manifest["file_sha256"] = sha256_file(file)
    _manifest.write(folder, manifest)


def _staged(job: _Job, name: str, build) -> Path:
    """Build bundle `name` with `build(staging folder)` beside its target (same filesystem, so the final rename
    is atomic), in a dot-folder no one mistakes for a bundle, removed whatever happens; then swap it in."""
    target = job.out / name
    clean_stale_staging(job.out, target.name)   # what killed exports of this bundle left behind
    staging = staging_folder(job.out, target.name)
    try:
        build(staging)
        # a signature covers every file of the finished folder, the user's files carried over included
        sign = None if job.signer is None else job.signer.sign
        kept = swap_into_place(staging, target, lambda folder: _replaceable(folder, job.spec.name, job.weights,
                                                                             job.source, job.replace),
                               zoo_writes=zoo_writes, before_rename=sign)
        if kept and job.notes is not None:
            job.notes.append(f"{target}: kept {', '.join(kept)} (not written by zoo) from the bundle it replaced")
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _test_data(job: _Job, folder: Path, session, precision: str) -> dict:
    """Write the bundle's test vectors (and golden cases) through `session`, then check that bare onnxruntime
    reproduces them and the runtime its golden cases: a bundle whose own vectors fail is not written."""
    record = _vectors.write(folder, job.spec, session, job.samples, job.samples_about, precision)
    checks = [_vectors.check_vectors(folder, session.manifest.file, record)]
    if "golden" in record:
        checks.append(_vectors.check_golden(folder, record, session))
    failures = [f for c in checks for f in c["failures"]]
    if failures:
        raise ParityError(f"{job.spec.name}: the bundle does not reproduce its own test vectors: {'; '.join(failures)}")
    return record


def _bundle(job: _Job, fmt: str, converted, exporter: dict, precision: str = "fp32") -> Path:
    spec, exporter = job.spec, dict(exporter)
    label = f"{spec.name} {fmt}" + ("" if precision == "fp32" else f" {precision}")

    def build(staging: Path) -> None:
        artefact, record = converted, None
        if precision != "fp32":
            about = {"source": job.held.about["source"], "fingerprint": job.held.about["fingerprint"],
                     "split": job.held.about["calibration"]}
            with quiet():
                artefact, record = _precision.reduce(converted, precision, job.held.calibration, about, spec.name)
            record["budget"] = job.budget.to_dict()
        if fmt == "onnx":
            exporter["optimized"] = None
            if job.optimize:
                artefact, exporter["optimized"] = _precision.optimize(artefact)
        manifest = _manifest.build(spec, fmt, FORMATS[fmt].FILE, job.preprocess, job.weights, exporter, record)
        _write_model(spec, fmt, artefact, staging, manifest)
        accuracy = test_data = None
        # as users load it (checksum and seal verified); its code is trusted: this process wrote it just now
        with quiet(), runtime.load(staging, trust_code=True) as session:
            report = _parity.measure(spec, job.model, session, job.preprocess, job.atol, job.rtol, job.real,
                                     judge=precision == "fp32")
            if precision != "fp32":
                produced = _accuracy.bundle_outputs(spec, session, job.held.inputs)
                accuracy = {"backend": report["backend"], **_accuracy.measure(
                    spec, job.reference, produced, job.held, job.budget, job.card)}
            if fmt == "onnx" and report["passed"] and (accuracy is None or accuracy["passed"]):
                test_data = _test_data(job, staging, session, precision)
        if not report["passed"]:
            error = ParityError(_parity.text_table(report, f"{label}: parity failed, no bundle written"))
            error.reports = [{"model": spec.name, "format": fmt, "precision": precision, **report}]
            raise error
        if accuracy is not None and not accuracy["passed"]:
            error = PrecisionRefused(_accuracy.refusal(spec.name, precision, accuracy))
            error.reports = [{"model": spec.name, "format": fmt, "precision": precision, "accuracy": accuracy,
                              "reason": str(error)}]
            raise error
        manifest["parity"] = report
        if accuracy is not None:
            manifest["accuracy"] = accuracy
        if test_data is not None:
            manifest["test_data"] = test_data
        _manifest.write(staging, manifest)

    return _staged(job, bundle_name(spec.name, fmt, precision), build)


@contextlib.contextmanager
def _reference(spec, converted, exporter: dict, preprocess: dict, weights: dict):
    """zoo.runtime on the fp32 network with the manifest's preprocessing: what `zoo predict` answers with the
    fp32 ONNX bundle, staged in a temporary folder. The raw-input bundle's parity is measured against it."""
    with tempfile.TemporaryDirectory(prefix="zoo-reference-") as tmp:
        manifest = _manifest.build(spec, "onnx", _onnx.FILE, preprocess, weights, dict(exporter, optimized=None))
        _write_model(spec, "onnx", converted, Path(tmp), manifest)
        with runtime.load(tmp) as session:
            yield session


def _raw_manifest(spec, converted, exporter: dict, preprocess: dict, weights: dict):
    """(the raw-input model, its manifest before what is measured on it), or RawInputsRefused in one line."""
    try:
        proto, tensors, raw = _raw.compose(spec, converted, preprocess)
    except ZooError as e:
        raise RawInputsRefused(f"{e}; no raw-input bundle written") from None
    manifest = _manifest.build(spec, "onnx", _onnx.FILE, preprocess, weights, dict(exporter, optimized=None))
    manifest.update(tensors)
    manifest[runtime.RAW_KEY] = raw
    return proto, manifest


def _raw_bundle(job: _Job, converted, exporter: dict) -> Path:
    """`<name>-onnx-raw/`: the fp32 network with its preprocessing in the graph, written when its answers on
    raw samples stay within `_rawparity`'s budget against zoo.runtime on the fp32 network."""
    spec = job.spec
    proto, manifest = _raw_manifest(spec, converted, exporter, job.preprocess, job.weights)

    def build(staging: Path) -> None:
        _write_model(spec, "onnx", proto, staging, manifest)
        test_data = None
        with quiet(), _reference(spec, converted, exporter, job.preprocess, job.weights) as reference, \
                runtime.load(staging) as session:
            report = _rawparity.measure(spec, reference, session, job.samples, job.samples_about)
            if report["passed"]:
                test_data = _test_data(job, staging, session, "fp32")
        if not report["passed"]:
            error = ParityError(_rawparity.text(report, f"{spec.name} onnx {RAW}: parity with zoo.runtime failed, "
                                                        "no bundle written"))
            error.reports = [{"model": spec.name, "format": "onnx", "precision": "fp32", "raw_inputs": True, **report}]
            raise error
        manifest.update(parity=report, test_data=test_data)
        _manifest.write(staging, manifest)

    return _staged(job, bundle_name(spec.name, "onnx", RAW), build)


def export(name: str, formats=("onnx",), weights: str | Path | None = None, out: str | Path = "bundles",
           random_weights: bool = False, data: str | Path | None = None, atol: float | None = None,
           rtol: float | None = None, precisions=("fp32",), optimize: bool = False,
           budget: Budget | None = None, sign: str | Path | None = None, replace: bool = False,
           notes: list | None = None, raw_inputs: bool = False) -> list[Path]:
    """Export model `name` to each format ("onnx", "torchscript", "pt2" or "all") as a bundle folder
    `<out>/<name>-<format>/`, measuring parity against eager PyTorch first. Weights: `weights`, else
    the shipped ones; `random_weights=True` exports an untrained model (marked so in the manifest).
    `data` adds real samples to the parity matrix.

    ONNX also in `precisions` ("fp32", "fp16", "int8-dynamic", "int8-static" or "all"; other formats are
    fp32): `<out>/<name>-onnx-<precision>/`, written only when its accuracy on held-out data (the
    validation split of `data`, else the built-in sample) stays within `budget`. `optimize` saves ONNX
    Runtime's offline-optimised graph (for onnxruntime on CPU). `sign`: a private key file (`zoo keygen`) that
    signs each bundle (`model.sig`, checked by `zoo.runtime.load(..., trusted_keys=...)`).

    A bundle in `out` exported from other weights is not replaced (a ZooError naming both, before any work)
    unless `replace`; files a user added to a replaced bundle are carried over. `notes`, when given,
    collects what to tell the user besides the bundles: files kept, bundles beside them from other weights.

    `raw_inputs` also writes
    `<out>/<name>-onnx-raw/`: the fp32 network with its preprocessing in the graph (`_raw`), written when its
    answers on raw samples stay within budget against zoo.runtime (`_rawparity`). Every ONNX bundle gets test
    vectors (`_vectors`) made from the raw samples of `data`, else of the built-in sample.

    Returns the bundle folders; after writing the bundles that passed, raises ParityError (with
    `.reports`: one per bundle not written) if a bundle failed parity, else PrecisionRefused if a reduced
    precision missed its budget or does not fit the model."""
    spec = registry.get(name)
    formats = _formats(formats)
    precisions = _precisions(precisions)
    if "onnx" not in formats and (precisions != ["fp32"] or optimize):
        raise ZooError("--precision and --optimize apply to ONNX bundles: add --format onnx")
    if "onnx" not in formats and raw_inputs:
        raise ZooError("--raw-inputs makes an ONNX bundle: add --format onnx")
    budget = budget or Budget()
    signer = None if sign is None else runtime.BundleSigner(sign)   # a bad key is refused before the work
    model, weights_record, card, source = _load_weights(spec, weights, random_weights)
    preprocess = preprocessing(spec, card, random_weights)
    atol = spec.atol if atol is None else float(atol)
    rtol = spec.rtol if rtol is None else float(rtol)
    if not (0 <= atol < math.inf and 0 <= rtol < math.inf):   # nan or inf would pass any difference
        raise ZooError(f"--atol and --rtol must be finite numbers >= 0, got {atol:g} and {rtol:g}")
    out = writable_folder(out, "--out")
    for fmt in formats:   # refused before the work (and checked again under the lock when swapped in)
        for precision in [*precisions, *([RAW] if raw_inputs else [])] if fmt == "onnx" else ["fp32"]:
            target = out / bundle_name(spec.name, fmt, precision)
            if target.exists() and not _replaceable(target, spec.name, weights_record, source, replace):
                raise ZooError(f"{target} exists and is not what zoo writes there: not replacing it")
    dataset = _load_data(spec, data)
    job = _Job(spec, model, weights_record, source, card, preprocess, _real_samples(spec, dataset, preprocess),
               atol, rtol, out, optimize, budget, signer, replace=replace, notes=notes)
    if any(p != "fp32" for p in precisions) and "onnx" in formats:
        job.held = _accuracy.held_out(spec, dataset, preprocess, card, _precision.CALIBRATION_SAMPLES)
        job.reference = _accuracy.eager_outputs(spec, model, job.held.inputs)
    if "onnx" in formats:
        from zoo.data.raw import raw_samples

        job.samples, job.samples_about = raw_samples(spec, data, RAW_SAMPLES)
    paths, failures = [], []
    for fmt in formats:
        converted, exporter = _convert(spec, fmt, model)
        variants = [*precisions, *([RAW] if raw_inputs else [])] if fmt == "onnx" else ["fp32"]
        for precision in variants:
            try:
                paths.append(_raw_bundle(job, converted, exporter) if precision == RAW
                             else _bundle(job, fmt, converted, exporter, precision))
            except OSError as e:   # a full disk: the staging folder is gone, an existing bundle untouched
                raise ZooError(f"cannot write the {spec.name} {fmt} bundle in {out}: {e.strerror or e}") from None
            except ParityError as e:
                failures.append(e)
            except PrecisionRefused as e:   # the budget (with its report), or a precision that does not fit
                e.reports = getattr(e, "reports", None) or [{"model": spec.name, "format": fmt, "precision": "fp32"
                                                             if precision == RAW else precision, "accuracy": None,
                                                             "raw_inputs": precision == RAW, "reason": str(e)}]
                failures.append(e)
    if failures:
        kind = ParityError if any(isinstance(e, ParityError) for e in failures) else PrecisionRefused
        error = kind("\n\n".join(str(e) for e in failures))
        error.reports = [r for e in failures for r in e.reports]
        error.bundles = paths
        raise error
    if notes is not None:
        notes.extend(_other_weights_beside(out, spec.name, weights_record, paths))
    return paths


def _other_weights_beside(out: Path, model: str, weights: dict, written: list[Path]) -> list[str]:
    """A line for each bundle of `model` in `out` this export did not write that holds other weights."""
    lines = []
    for fmt in FORMATS:
        for precision in PRECISIONS if fmt == "onnx" else ["fp32"]:
            folder = out / bundle_name(model, fmt, precision)
            if folder in written or not (folder / runtime.MANIFEST_NAME).is_file():
                continue
            try:
                old = runtime.read_manifest(folder).data.get("weights") or {}
            except runtime.BundleError:
                continue
            if not same_weights(old, weights):
                lines.append(f"{folder} beside it still holds {weights_text(old)}: re-export it (zoo bench "
                             "compares only bundles of the same weights)")
    return lines


def _load_data(spec, data):
    if data is None:
        return None
    from zoo.data import load

    return load(spec, data, "train")


def _real_samples(spec, dataset, preprocess: dict):
    if dataset is None:
        return None
    from zoo.data import real_samples

    return real_samples(spec, dataset, preprocess, n=32)


def _source_weights(spec, manifest: dict, weights) -> Path:
    """The weights file the bundle was exported from: `weights` (checked), else the file whose sha256 is
    the manifest's, where export takes weights from (`find_weights`)."""
    record = manifest["weights"]
    wanted = record.get("sha256")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ZooError(f"weights file {path} does not exist")
        actual = sha256_file(path)
        if actual != wanted:
            raise ZooError(f"{path} (sha256 {actual[:12]}…) is not the weights this bundle was exported from "
                           f"(sha256 {str(wanted)[:12]}…)", exit_code=1)
        return path
    found = find_weights(spec.name, wanted, record.get("source"))
    if found is None:
        raise ZooError(f"the weights this bundle was exported from ({weights_text(record)}) are neither among the "
                       f"shipped weights in {weights_dir()} nor in {RUNS}/: pass them with --weights PATH")
    return found


def verify(bundle: str | Path, weights: str | Path | None = None, data: str | Path | None = None,
           trust_code: bool = False, trusted_keys=None) -> dict:
    """Check an existing bundle: load it as users do (the model file's sha256, the manifest against the
    copy sealed into the file), compare the manifest with the registry and the source weights' card, then
    re-run the parity matrix against the source weights (`weights`, else found by sha256 where export
    takes weights from: the shipped weights and runs/). A reduced-precision bundle's accuracy is measured
    again (on `data`'s validation split, else the built-in sample when the export used it) and judged
    against the budget sealed into its manifest.
    Returns the report; raises ZooError (exit 1) for a corrupted or tampered bundle, ParityError when
    parity fails and PrecisionRefused when the accuracy misses the budget. `trust_code` and `trusted_keys`
    as in `zoo.runtime.load` (a TorchScript or pt2 bundle is loaded only with trust_code=True)."""
    bundle = Path(bundle)
    manifest = runtime.read_manifest(bundle, require=_manifest.REQUIRED)
    spec = registry.get(manifest.model)
    note = None
    try:
        with quiet():
            trust = {"trust_code": trust_code, "trusted_keys": trusted_keys}
            try:
                session = runtime.load(bundle, **trust)
            except runtime.UnsealedBundle:   # the checksum passed; only the seal is missing
                session = runtime.load(bundle, verify=False, **trust)
                note = ("exported before zoo sealed manifests into model files: the checks below pass, but "
                        "zoo.runtime.load and zoo predict refuse it unless told not to verify (--no-verify); "
                        "re-export it to seal it")
    except runtime.BackendError as e:
        raise ZooError(f"{manifest.file} does not load: {str(e)[:200]}", exit_code=1) from None
    with session:
        result = _verify_loaded(bundle, manifest, session, spec, weights, data)
    if note:
        result["note"] = f"{result['note']}; {note}" if result["note"] else note
    return result


def _declared(bundle: Path, manifest, spec) -> dict:
    """The manifest's inputs and outputs against the model's (for a raw-input bundle, the graph's that the
    spec and its preprocessing give), its task, output kind and labels; returns the declared tensors."""
    if manifest.raw is None:
        inputs, outputs, raw = spec.inputs, spec.outputs, None
    else:
        inputs, outputs, raw = _raw.tensors(spec, spec.preprocess)
        if manifest.raw.network_inputs != spec.inputs:
            raise ZooError(f"{bundle}: manifest raw_inputs.network_inputs {_io_text(manifest.raw.network_inputs)} "
                           f"don't match {spec.name}'s {_io_text(spec.inputs)}", exit_code=1)
        given = manifest.raw.to_dict()
        for key in ("sources", "probabilities"):
            if given[key] != raw[key]:
                raise ZooError(f"{bundle}: manifest raw_inputs.{key} {_short(given[key])} is not "
                               f"{_short(raw[key])}", exit_code=1)
    for side, expected in (("inputs", inputs), ("outputs", outputs)):
        given = getattr(manifest, side)
        if given != tuple(expected):
            raise ZooError(f"{bundle}: manifest {side} {_io_text(given)} don't match {spec.name}'s "
                           f"{_io_text(expected)}", exit_code=1)
    for key, expected in (("task", spec.task), ("output_kind", spec.output_kind)):
        if getattr(manifest, key) != expected:
            raise ZooError(f"{bundle}: manifest {key} is {getattr(manifest, key)!r}, {spec.name}'s is {expected!r}",
                           exit_code=1)
    if manifest.labels != {k: list(v) for k, v in spec.labels.items()}:
        raise ZooError(f"{bundle}: manifest labels {_short(manifest.labels)} are not {spec.name}'s "
                       f"{_short({k: list(v) for k, v in spec.labels.items()})}", exit_code=1)
    return {"inputs": [t.to_dict() for t in inputs], "outputs": [t.to_dict() for t in outputs]}


def _check_test_data(bundle: Path, manifest, session) -> dict | None:
    """The bundle's test vectors with bare onnxruntime, and its golden cases through the runtime; None for a
    bundle without them (exported before zoo wrote them). Raises ZooError (exit 1) when they fail."""
    record = manifest.data.get("test_data")
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ZooError(f"{bundle}: manifest test_data is not an object", exit_code=1)
    report = {"vectors": _vectors.check_vectors(bundle, manifest.file, record), "golden": None}
    if manifest.raw is not None:
        report["golden"] = _vectors.check_golden(bundle, record, session)
    failures = [f for part in report.values() if part for f in part["failures"]]
    if failures:
        raise ZooError(f"{bundle}: its test vectors are not reproduced: {'; '.join(failures[:3])}", exit_code=1)
    return report


def _verify_loaded(bundle: Path, manifest, session, spec, weights, data) -> dict:
    declared = _declared(bundle, manifest, spec)
    random = manifest.random_weights
    path = None if random else _source_weights(spec, manifest.data, weights)
    card = None if path is None else read_card(path.stem, path.parent)
    expected = preprocessing(spec, card, random)
    for name in sorted(set(manifest.preprocess) | set(expected)):
        if manifest.preprocess.get(name) != expected.get(name):
            what = f"{spec.name} with the card of {path.name}" if path else spec.name
            raise ZooError(f"{bundle}: manifest preprocess.{name} is not the preprocessing of {what}", exit_code=1)
    checks = _parity.check_structure(session.signature(), declared["inputs"], declared["outputs"])
    bad = [f"{c['check']}: {c['detail']}" for c in checks if c["passed"] is False]
    if bad:
        raise ZooError(f"{bundle}: the manifest does not match {manifest.file.name}: {'; '.join(bad)}", exit_code=1)
    precision = manifest.precision
    result = {"bundle": str(bundle), "model": spec.name, "format": manifest.format, "precision": precision,
              "raw_inputs": manifest.raw is not None, "file_sha256": manifest.data["file_sha256"], "checks": checks,
              "weights": None, "parity": None, "accuracy": None, "test_data": None, "note": None, "passed": True}
    if manifest.format == "onnx":
        result["test_data"] = _check_test_data(bundle, manifest, session)
    if random:
        if manifest.raw is None:
            _probe(spec, session, manifest, bundle)
        result["note"] = ("exported with --random-weights: there are no source weights to re-run parity "
                          "against; checked the file's sha256, the sealed manifest, the manifest against the "
                          "model and a test run")
        return result
    model = _for_inference(load_model(spec, path))
    result["weights"] = str(path)
    if manifest.raw is not None:
        return _reverify_raw(bundle, spec, model, session, manifest, data, result)
    tolerance = (manifest.data.get("parity") or {}).get("tolerance") or {}
    dataset = _load_data(spec, data)
    report = _parity.measure(spec, model, session, manifest.preprocess,
                             tolerance.get("atol", spec.atol), tolerance.get("rtol", spec.rtol),
                             _real_samples(spec, dataset, manifest.preprocess), judge=precision == "fp32")
    result.update(weights=str(path), parity=report, passed=report["passed"])
    if not report["passed"]:
        error = ParityError(_parity.text_table(report, f"{bundle}: parity failed"))
        error.reports = [{"model": spec.name, "format": manifest.format, "precision": precision, **report}]
        raise error
    if precision != "fp32":
        result["accuracy"], result["note"] = _reverify_accuracy(spec, model, session, manifest, dataset, card)
        if result["accuracy"] is not None and not result["accuracy"]["passed"]:
            error = PrecisionRefused(f"{bundle}: " + _accuracy.refusal(spec.name, precision, result["accuracy"])
                                     .replace("; no bundle written", ""))
            error.reports = [{"model": spec.name, "format": manifest.format, "precision": precision,
                              "accuracy": result["accuracy"], "reason": str(error)}]
            raise error
    return result


def _reverify_raw(bundle: Path, spec, model, session, manifest, data, result: dict) -> dict:
    """A raw-input bundle's parity against zoo.runtime on the fp32 network converted again from the source
    weights, on the raw samples of `data` (else the built-in sample), judged by the same budget."""
    from zoo.data.raw import raw_samples

    converted, exporter = _convert(spec, "onnx", model)
    samples, about = raw_samples(spec, data, RAW_SAMPLES)
    with quiet(), _reference(spec, converted, exporter, manifest.preprocess, manifest.data["weights"]) as reference:
        report = _rawparity.measure(spec, reference, session, samples, about)
    result.update(parity=report, passed=report["passed"])
    if not report["passed"]:
        error = ParityError(_rawparity.text(report, f"{bundle}: parity with zoo.runtime failed"))
        error.reports = [{"model": spec.name, "format": "onnx", "precision": "fp32", "raw_inputs": True, **report}]
        raise error
    return result


def _reverify_accuracy(spec, model, session, manifest, dataset, card) -> tuple[dict | None, str | None]:
    """A reduced-precision bundle's accuracy, measured again on the same kind of held-out data and judged
    against the budget sealed into its manifest: (report, note)."""
    recorded = (manifest.data.get("accuracy") or {}).get("data") or {}
    if dataset is None and recorded.get("source") == "files":
        return None, (f"accuracy not re-measured: the export measured it on the training data's validation split "
                      f"(fingerprint {str(recorded.get('fingerprint'))[:12]}…); pass --data DIR to re-check it")
    held = _accuracy.held_out(spec, dataset, manifest.preprocess, card, _precision.CALIBRATION_SAMPLES)
    budget = Budget.from_dict((manifest.data.get("precision") or {}).get("budget"))
    with quiet():
        produced = _accuracy.bundle_outputs(spec, session, held.inputs)
    report = {"backend": _parity.backend_label(session),
              **_accuracy.measure(spec, _accuracy.eager_outputs(spec, model, held.inputs), produced, held, budget, card)}
    note = None
    if recorded and recorded.get("fingerprint") != held.about["fingerprint"]:
        note = (f"accuracy re-measured on other data than the export's (fingerprint "
                f"{held.about['fingerprint'][:12]}…, the export's {str(recorded.get('fingerprint'))[:12]}…)")
    return report, note


def _short(value) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _io_text(tensors) -> str:
    return ", ".join(f"{t.name}{tuple(t.shape)}" for t in tensors)


def _probe(spec, session, manifest, bundle: Path) -> None:
    """Run one batch through the model file and check the outputs against the manifest."""
    import numpy as np

    arrays = _parity.random_inputs(spec, manifest.preprocess, 2, EXAMPLE_SIZES["sequence"],
                                   np.random.default_rng(_parity.SEED))
    try:
        with quiet():
            produced = session.predict(arrays)
    except Exception as e:  # noqa: BLE001
        raise ZooError(f"{bundle}: the model file rejects the manifest's inputs: {first_line(e)[:200]}",
                       exit_code=1) from None
    for t in manifest.outputs:
        shape = produced[t.name].shape
        if len(shape) != len(t.shape) or any(isinstance(d, int) and d != g for d, g in zip(t.shape, shape)):
            raise ZooError(f"{bundle}: the model file returns {t.name} {shape}, the manifest declares {t.shape}",
                           exit_code=1)
