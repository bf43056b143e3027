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
import importlib.util
import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace as dataclass_replace
from pathlib import Path

import zoo.runtime as runtime
from zoo import registry
from zoo.contract import Signature
from zoo.errors import ParityError, PrecisionRefused, RawInputsRefused, ZooError, interrupted
from zoo.export import (_accuracy, _manifest, _onnx, _ortweb, _parity, _precision, _pt2, _raw, _rawparity,
                        _torchscript, _vectors, _web)
from zoo.export._accuracy import Budget
from zoo.export._common import EXAMPLE_SIZES, first_line, quiet
from zoo.export._precision import PRECISIONS
from zoo.export._result import ExportResult, Outcome, Repository, Verification
from zoo.outputs import RUNS, clean_stale_staging, staging_folder, swap_into_place, writable_folder
from zoo.weights import Card, latest_trained, load_model, preprocessing, read_card, resolve, sha256_file, weights_dir

__all__ = ["export", "export_models", "export_targets", "bundle_for", "verify", "ExportResult", "Outcome",
           "Repository", "Verification", "bundle_name", "find_weights", "FORMATS", "PRECISIONS",
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
WEB = "web"       # the static web folder: <model>-web/
RAW_SAMPLES = 16  # raw samples read for the raw-input parity and every ONNX bundle's test vectors
BUNDLE_FILES = frozenset({runtime.MANIFEST_NAME, runtime.SIGNATURE_NAME, *runtime.MODEL_FILES.values()})   # what zoo writes in a bundle


def zoo_writes(name: str) -> bool:
    """Whether an entry of a bundle folder is one zoo writes (model, manifest, signature, test vectors,
    golden cases), as opposed to a file a user added, which a re-export keeps (a web folder's page and
    onnxruntime-web files are in every new one, so they are replaced, never kept)."""
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
        record = runtime.WeightsRecord(random=True, seed=RANDOM_SEED)
        return _for_inference(registry.build(spec, seed=RANDOM_SEED)), record, None, None
    path = resolve(spec, weights)
    if path is None:
        raise ZooError(f"no weights for {spec.name}: none shipped in {weights_dir()} and no --weights given. "
                       f"Train them (`zoo train {spec.name}`), pass --weights PATH, or use --random-weights "
                       "to export untrained weights (for testing only)")
    card = read_card(path.stem, path.parent)
    record = runtime.WeightsRecord(sha256_file(path), source=path.name, metrics=card.metrics if card else None,
                                   caveat=card.caveat if card else None)
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
        try:
            card = read_card(path.stem, path.parent)
        except ZooError:   # a broken card beside a weights file says nothing of it: hash the file
            card = None
        if (card is None or card.sha256 in (None, sha256)) and sha256_file(path) == sha256:
            return path
    return None


def _replaceable(folder: Path, model: str, weights: runtime.WeightsRecord, source: Path | None, replace: bool) -> bool:
    """Whether the existing bundle `folder` may be replaced by an export of `weights` (the manifest record;
    `source`: their file): it is a bundle (has a manifest) exported from the same weights, or `replace` says
    any bundle may go. A bundle of other weights is a ZooError that names both and says how to proceed; a
    folder that is no bundle is False."""
    if not (folder / runtime.MANIFEST_NAME).is_file():
        return False
    if replace:
        return True
    try:
        old = runtime.read_manifest(folder).weights
    except runtime.BundleError:
        old = None
    if old is not None and old.same_as(weights):
        return True
    found = find_weights(model, old.sha256, old.source) if old is not None else None
    again = f"re-export those with --weights {found}, " if found is not None else ""
    held = old.describe(found) if old is not None else "unknown weights (the manifest cannot be read)"
    raise ZooError(f"{folder} holds an export of {held}, not of {weights.describe(source)}: "
                   f"not replacing it; {again}choose another --out, or pass --replace to replace it")


@dataclass
class _Job:
    """What every bundle of one export shares."""
    spec: object
    model: object                  # eager, in eval mode
    weights: runtime.WeightsRecord
    source: Path | None            # their file (None: random weights)
    card: Card | None
    signature: Signature           # the model's, with the weights' fitted preprocessing
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
    notes: list = field(default_factory=list)   # what the caller is told besides the bundles (files kept, ...)
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


def _staged(job: _Job, name: str, build) -> Outcome:
    """Build bundle `name` with `build(staging folder) -> Outcome` beside its target (same filesystem, so the final
    rename is atomic), in a dot-folder no one mistakes for a bundle, removed whatever happens; then swap it in,
    unless the outcome says it is not to be written."""
    target = job.out / name
    clean_stale_staging(job.out, target.name)   # what killed exports of this bundle left behind
    staging = staging_folder(job.out, target.name)
    try:
        outcome = build(staging)
        if outcome.refusal is not None:
            return outcome
        # a signature covers every file of the finished folder, the user's files carried over included
        sign = None if job.signer is None else job.signer.sign
        kept = swap_into_place(staging, target, lambda folder: _replaceable(folder, job.spec.name, job.weights,
                                                                             job.source, job.replace),
                               zoo_writes=zoo_writes, before_rename=sign)
        if kept:
            job.notes.append(f"{target}: kept {', '.join(kept)} (not written by zoo) from the bundle it replaced")
        return dataclass_replace(outcome, bundle=target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _test_data(job: _Job, folder: Path, session, precision: str) -> tuple[dict, str]:
    """Write the bundle's test vectors (and golden cases) through `session`, then check that bare onnxruntime
    reproduces them and the runtime its golden cases: (the manifest's `test_data`, why the bundle is not to be
    written: its own vectors fail, or "")."""
    record = _vectors.write(folder, job.spec, session, job.samples, job.samples_about, precision)
    checks = [_vectors.check_vectors(folder, session.manifest.file, record)]
    if "golden" in record:
        checks.append(_vectors.check_golden(folder, record, session))
    failures = [f for c in checks for f in c["failures"]]
    if failures:
        return record, f"{job.spec.name}: the bundle does not reproduce its own test vectors: {'; '.join(failures)}"
    return record, ""


def _bundle(job: _Job, fmt: str, converted, exporter: dict, precision: str = "fp32") -> Outcome:
    spec, exporter = job.spec, dict(exporter)
    label = f"{spec.name} {fmt}" + ("" if precision == "fp32" else f" {precision}")

    def build(staging: Path) -> Outcome:
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
        manifest = _manifest.build(spec.name, job.signature, fmt, FORMATS[fmt].FILE, job.weights, exporter, record)
        _write_model(spec, fmt, artefact, staging, manifest)
        accuracy = test_data = None
        vectors_fail = ""
        # as users load it (checksum and seal verified); its code is trusted: this process wrote it just now
        with quiet(), runtime.load(staging, trust_code=True) as session:
            report = _parity.measure(job.signature, job.model, session, job.atol, job.rtol, job.real,
                                     judge=precision == "fp32")
            if precision != "fp32":
                produced = _accuracy.bundle_outputs(spec, session, job.held.inputs)
                accuracy = _accuracy.measure(spec, job.reference, produced, job.held, job.budget, report.backend,
                                             job.card)
            if fmt == "onnx" and report.passed and (accuracy is None or accuracy.passed):
                test_data, vectors_fail = _test_data(job, staging, session, precision)
        outcome = Outcome(spec.name, fmt, precision, exporter=exporter, parity=report, accuracy=accuracy)
        if not report.passed:
            return dataclass_replace(outcome, refusal=ParityError, reason=_parity.text_table(
                report, f"{label}: parity failed, no bundle written"))
        if accuracy is not None and not accuracy.passed:
            return dataclass_replace(outcome, refusal=PrecisionRefused,
                                     reason=_accuracy.refusal(spec.name, precision, accuracy))
        if vectors_fail:
            return dataclass_replace(outcome, refusal=ParityError, reason=vectors_fail)
        manifest["parity"] = report.to_dict()
        if accuracy is not None:
            manifest["accuracy"] = accuracy.to_dict()
        if test_data is not None:
            manifest["test_data"] = test_data
        _manifest.write(staging, manifest)
        return outcome

    return _staged(job, bundle_name(spec.name, fmt, precision), build)


@contextlib.contextmanager
def _reference(spec, converted, exporter: dict, signature: Signature, weights: runtime.WeightsRecord):
    """zoo.runtime on the fp32 network with the manifest's preprocessing: what `zoo predict` answers with the
    fp32 ONNX bundle, staged in a temporary folder. The raw-input bundle's parity is measured against it."""
    with tempfile.TemporaryDirectory(prefix="zoo-reference-") as tmp:
        manifest = _manifest.build(spec.name, signature, "onnx", _onnx.FILE, weights, dict(exporter, optimized=None))
        _write_model(spec, "onnx", converted, Path(tmp), manifest)
        with runtime.load(tmp) as session:
            yield session


def _raw_manifest(spec, converted, exporter: dict, signature: Signature, weights: runtime.WeightsRecord):
    """(the raw-input model, its manifest before what is measured on it), or RawInputsRefused in one line."""
    try:
        proto, tensors, raw = _raw.compose(spec, converted, signature.preprocess)
    except ZooError as e:
        raise RawInputsRefused(f"{e}; no raw-input bundle written") from None
    manifest = _manifest.build(spec.name, signature, "onnx", _onnx.FILE, weights, dict(exporter, optimized=None))
    manifest.update(tensors)
    manifest[runtime.RAW_KEY] = raw
    return proto, manifest


def _raw_bundle(job: _Job, converted, exporter: dict) -> Outcome:
    """`<name>-onnx-raw/`: the fp32 network with its preprocessing in the graph, written when its answers on
    raw samples stay within `_rawparity`'s budget against zoo.runtime on the fp32 network."""
    spec = job.spec
    proto, manifest = _raw_manifest(spec, converted, exporter, job.signature, job.weights)

    def build(staging: Path) -> Outcome:
        _write_model(spec, "onnx", proto, staging, manifest)
        test_data, vectors_fail = None, ""
        with quiet(), _reference(spec, converted, exporter, job.signature, job.weights) as reference, \
                runtime.load(staging) as session:
            report = _rawparity.measure(spec, reference, session, job.samples, job.samples_about)
            if report.passed:
                test_data, vectors_fail = _test_data(job, staging, session, "fp32")
        outcome = Outcome(spec.name, "onnx", "fp32", raw_inputs=True, exporter=manifest["exporter"], parity=report)
        if not report.passed:
            return dataclass_replace(outcome, refusal=ParityError, reason=_rawparity.text(
                report, f"{spec.name} onnx {RAW}: parity with zoo.runtime failed, no bundle written"))
        if vectors_fail:
            return dataclass_replace(outcome, refusal=ParityError, reason=vectors_fail)
        manifest.update(parity=report.to_dict(), test_data=test_data)
        _manifest.write(staging, manifest)
        return outcome

    return _staged(job, bundle_name(spec.name, "onnx", RAW), build)


def _variants(fmt: str, precisions: list[str], raw_inputs: bool) -> list[str]:
    """The bundles of one format: ONNX in each precision (and raw inputs), the others in fp32."""
    return [*precisions, *([RAW] if raw_inputs else [])] if fmt == "onnx" else ["fp32"]


def _checked(spec, formats, precisions, optimize: bool, raw_inputs: bool, web: bool, atol, rtol) -> tuple:
    """(formats, precisions, atol, rtol) as export takes them; a bad combination is one line."""
    formats, precisions = _formats(formats), _precisions(precisions)
    if "onnx" not in formats and (precisions != ["fp32"] or optimize):
        raise ZooError("--precision and --optimize apply to ONNX bundles: add --format onnx")
    if "onnx" not in formats and (raw_inputs or web):
        raise ZooError(f"--{'raw-inputs' if raw_inputs else 'format web'} makes an ONNX bundle: add --format onnx")
    atol = spec.atol if atol is None else float(atol)
    rtol = spec.rtol if rtol is None else float(rtol)
    if not (0 <= atol < math.inf and 0 <= rtol < math.inf):   # nan or inf would pass any difference
        raise ZooError(f"--atol and --rtol must be finite numbers >= 0, got {atol:g} and {rtol:g}")
    return formats, precisions, atol, rtol


def _measuring_data(job: _Job, dataset, data, formats: list[str], precisions: list[str]) -> None:
    """What the job measures with besides the random cases: held-out data for the reduced precisions, raw
    samples for the test vectors (and the raw-input parity) of ONNX bundles."""
    if "onnx" not in formats:
        return
    if any(p != "fp32" for p in precisions):
        job.held = _accuracy.held_out(job.spec, dataset, job.signature.preprocess, job.card,
                                      _precision.CALIBRATION_SAMPLES)
        job.reference = _accuracy.eager_outputs(job.spec, job.model, job.held.inputs)
    from zoo.data.raw import raw_samples

    job.samples, job.samples_about = raw_samples(job.spec, data, RAW_SAMPLES)


def _attempt(job: _Job, fmt: str, converted, exporter: dict, precision: str) -> Outcome:
    """One bundle, written or not as its Outcome says; a full disk is a ZooError."""
    try:
        if precision == RAW:
            return _raw_bundle(job, converted, exporter)
        return _bundle(job, fmt, converted, exporter, precision)
    except OSError as e:   # a full disk: the staging folder is gone, an existing bundle untouched
        raise ZooError(f"cannot write the {job.spec.name} {fmt} bundle in {job.out}: {e.strerror or e}") from None
    except PrecisionRefused as e:   # a precision, or raw inputs, that do not fit the model
        return Outcome(job.spec.name, fmt, "fp32" if precision == RAW else precision, raw_inputs=precision == RAW,
                       refusal=PrecisionRefused, reason=str(e))


def _web_bundle(job: _Job, raw: Path, runtime_files: dict[str, Path]) -> Outcome:
    """`<name>-web/`: the finished raw-input bundle `raw` (its graph, resealed with the `web` record in the
    manifest; its test files) with a page that runs it in the browser and onnxruntime-web's files (`_web`)."""
    import onnx

    spec, source = job.spec, runtime.read_manifest(raw)
    manifest, page = _web.manifest(source, runtime_files)

    def build(staging: Path) -> Outcome:
        _web.write(staging, source, runtime_files, page)
        _write_model(spec, "onnx", onnx.load(str(source.file)), staging, manifest)
        with quiet(), runtime.load(staging) as session:   # the checksum and the seal, as users load it
            report = _vectors.check_vectors(staging, session.manifest.file, manifest["test_data"])
        outcome = Outcome(spec.name, WEB, "fp32", raw_inputs=True, exporter=manifest.get("exporter"))
        if report["failures"]:
            return dataclass_replace(outcome, refusal=ParityError, reason=f"{spec.name} {WEB}: the folder does not "
                                     f"reproduce its test vectors: {'; '.join(report['failures'])}")
        _web.check(staging, manifest[WEB])
        return outcome

    return _staged(job, bundle_name(spec.name, WEB), build)


def _web_outcome(job: _Job, result: ExportResult, runtime_files: dict[str, Path]) -> Outcome:
    """The web folder, made from the raw-input bundle this export wrote (refused when it wrote none)."""
    raw = job.out / bundle_name(job.spec.name, "onnx", RAW)
    if raw not in result.bundles:
        return Outcome(job.spec.name, WEB, "fp32", raw_inputs=True, refusal=PrecisionRefused,
                       reason=f"{job.spec.name}: no {WEB} folder written: it is made from the raw-input bundle")
    try:
        return _web_bundle(job, raw, runtime_files)
    except OSError as e:
        raise ZooError(f"cannot write the {job.spec.name} {WEB} folder in {job.out}: {e.strerror or e}") from None


def export(name: str, formats=("onnx",), weights: str | Path | None = None, out: str | Path = "bundles",
           random_weights: bool = False, data: str | Path | None = None, atol: float | None = None,
           rtol: float | None = None, precisions=("fp32",), optimize: bool = False,
           budget: Budget | None = None, sign: str | Path | None = None, replace: bool = False,
           raw_inputs: bool = False, web: bool = False, onnxruntime_web: str | Path | None = None,
           check: bool = True) -> ExportResult:
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
    unless `replace`; files a user added to a replaced bundle are carried over.

    `raw_inputs` also writes
    `<out>/<name>-onnx-raw/`: the fp32 network with its preprocessing in the graph (`_raw`), written when its
    answers on raw samples stay within budget against zoo.runtime (`_rawparity`). Every ONNX bundle gets test
    vectors (`_vectors`) made from the raw samples of `data`, else of the built-in sample.

    `web` (with raw_inputs, implied) also writes `<out>/<name>-web/`: the raw-input bundle with a page that runs it
    in the browser and onnxruntime-web's files (`_web`), taken from `onnxruntime_web` (the package's tarball or a
    folder holding its files) or else zoo's cache, fetched there with npm the first time (`_ortweb`).

    Returns an ExportResult: per bundle an Outcome (written, or not and why, with its parity and accuracy
    reports), and notes for the user (files kept, bundles beside of other weights); as a sequence, the bundle
    folders written. With `check`, after writing the bundles that passed, the others are raised as one error
    (`ExportResult.error`): ParityError if one failed parity, else PrecisionRefused (a reduced precision that
    missed its budget or does not fit the model); `check=False` returns them in the result instead."""
    spec = registry.get(name)
    formats, precisions, atol, rtol = _checked(spec, formats, precisions, optimize, raw_inputs, web, atol, rtol)
    raw_inputs = raw_inputs or web
    signer = None if sign is None else runtime.BundleSigner(sign)   # a bad key is refused before the work
    model, record, card, source = _load_weights(spec, weights, random_weights)
    signature = spec.signature.with_preprocess(preprocessing(spec, card, random_weights))
    out = writable_folder(out, "--out")
    names = [bundle_name(spec.name, fmt, p) for fmt in formats for p in _variants(fmt, precisions, raw_inputs)]
    for target in [out / n for n in names + ([bundle_name(spec.name, WEB)] if web else [])]:
        # refused before the work (and checked again under the lock when swapped in)
        if target.exists() and not _replaceable(target, spec.name, record, source, replace):
            raise ZooError(f"{target} exists and is not what zoo writes there: not replacing it")
    runtime_files = _ortweb.files(onnxruntime_web) if web else None   # npm missing: said before the work
    dataset = _load_data(spec, data)
    job = _Job(spec, model, record, source, card, signature, _real_samples(spec, dataset, signature.preprocess),
               atol, rtol, out, optimize, budget or Budget(), signer, replace=replace)
    _measuring_data(job, dataset, data, formats, precisions)
    result = ExportResult(notes=job.notes)
    for fmt in formats:
        converted, exporter = _convert(spec, fmt, model)
        result.outcomes += [_attempt(job, fmt, converted, exporter, p) for p in _variants(fmt, precisions, raw_inputs)]
    if web:
        result.outcomes.append(_web_outcome(job, result, runtime_files))
    result.notes += _other_weights_beside(out, spec.name, record, result.bundles)
    error = result.error() if check else None
    if error is not None:
        raise error
    return result


def export_targets(name: str | None, weights=None, all_models: bool = False) -> tuple[list[tuple], list[str]]:
    """What `zoo export` exports: ([(model, weights)], notes): `name` with `weights`; every model with shipped
    weights (`all_models`); with neither, the model last trained into runs/, with those weights."""
    if all_models and name is not None:
        raise ZooError("give a model name or --all (not both)")
    if all_models:
        return [(spec.name, None) for spec in registry.specs() if resolve(spec, None) is not None], []
    if name is not None:
        return [(name, weights)], []
    last = latest_trained(RUNS)
    if last is None:
        raise ZooError(f"no model name given and nothing trained in {RUNS}/ yet: name a model "
                       "(zoo export clouds-cnn --format onnx), train one first, or pass --all")
    if weights is not None:
        raise ZooError("--weights needs a model name")
    return [(last.stem, last)], [f"exported {last.stem}, the model last trained into {RUNS}/ ({last})"]


def export_models(name: str | None, weights=None, all_models: bool = False, formats=("onnx",),
                  out: str | Path = "bundles", progress=None, **options) -> ExportResult:
    """`zoo export`: `export` of each of `export_targets`, every outcome gathered (none raised: see
    `ExportResult.error`). `formats` may name "triton": each model's fp32 ONNX bundle (written too) then also
    goes into the Triton model repository `<out>/triton/`; and "web": export's `web`. `progress(model)` is told each model before its work;
    `options` are export's."""
    formats = [formats] if isinstance(formats, str) else list(formats)
    choices(formats, [*FORMATS, "triton", WEB], "format")   # one line naming a bad one
    triton, web = "triton" in formats, WEB in formats
    if triton or web:   # a Triton repository is made from the ONNX bundles, a web folder from the raw-input one
        formats = [f for f in formats if f not in ("triton", WEB)]
        formats = formats if "onnx" in formats or "all" in formats else [*formats, "onnx"]
    if options.get("onnxruntime_web") is not None and not web:
        raise ZooError("--onnxruntime-web is for --format web")
    jobs, notes = export_targets(name, weights, all_models)
    writable_folder(out, "--out")
    result = ExportResult(notes=notes)
    for model, model_weights in jobs:
        if progress is not None:
            progress(model)
        done = export(model, formats, weights=model_weights, out=out, check=False, web=web, **options)
        result.extend(done)
        if triton:
            result.repositories += _triton_repositories(done, Path(out) / "triton")
    return result


def _triton_repositories(result: ExportResult, folder: Path) -> list[Repository]:
    from zoo.serve import export_repository

    manifests = [runtime.read_manifest(b) for b in result.bundles]
    return [Repository(m.model, folder, export_repository([m], folder)) for m in manifests
            if m.format == "onnx" and m.raw is None and WEB not in m.data]


def bundle_for(target: str, out: str | Path = "bundles", progress=None) -> tuple[Path, list[str]]:
    """The bundle `target` names, for serving: a bundle folder as given, or a model name's
    `<out>/<name>-onnx`, exported first (the shipped weights) when it is missing and the training extra is
    installed. Returns (the folder, notes: that it was exported now, or that it holds other weights than the
    shipped ones its name suggests). `progress(message)` is told before an export."""
    path = Path(target)
    if path.is_dir():
        return path, []
    if "/" in target or target.startswith("."):
        raise ZooError(f"no bundle folder at {target}")
    spec = registry.get(target)   # an unknown name: one line with the closest names
    bundle = Path(out) / bundle_name(spec.name, "onnx")
    if (bundle / runtime.MANIFEST_NAME).is_file():
        return bundle, _not_shipped(bundle, spec)
    if any(importlib.util.find_spec(m) is None for m in ("torch", "onnx", "onnxscript")):
        raise ZooError(f"no bundle for {spec.name} at {bundle}: export one with `zoo export {spec.name} --format "
                       "onnx` (it needs the training extra: pip install -e '.[train]'), or pass a bundle folder")
    if progress is not None:
        progress(f"no bundle at {bundle}: exporting {spec.name} (shipped weights) and measuring parity")
    export(spec.name, ["onnx"], out=out)
    return bundle, [f"exported {bundle}"]


def _not_shipped(bundle: Path, spec) -> list[str]:
    """A model name serves <out>/<name>-onnx whatever weights it was exported from: a note when they are not
    the shipped ones, which the name suggests."""
    try:
        record = runtime.read_manifest(bundle).weights
    except runtime.BundleError:
        return []   # loading it says what is wrong
    shipped = resolve(spec, None)
    if not record.random and shipped is not None and sha256_file(shipped) == record.sha256:
        return []
    whose = "random weights" if record.random else f"{record.source} (sha256 {str(record.sha256)[:12]}…)"
    return [f"serving {bundle}, exported from {whose}, not from the shipped weights"]


def _other_weights_beside(out: Path, model: str, weights: runtime.WeightsRecord, written: list[Path]) -> list[str]:
    """A line for each bundle of `model` in `out` this export did not write that holds other weights."""
    lines = []
    for fmt in FORMATS:
        for precision in PRECISIONS if fmt == "onnx" else ["fp32"]:
            folder = out / bundle_name(model, fmt, precision)
            if folder in written or not (folder / runtime.MANIFEST_NAME).is_file():
                continue
            try:
                old = runtime.read_manifest(folder).weights
            except runtime.BundleError:
                continue
            if not old.same_as(weights):
                lines.append(f"{folder} beside it still holds {old.describe()}: re-export it (zoo bench "
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


def _source_weights(spec, manifest: runtime.Manifest, weights) -> Path:
    """The weights file the bundle was exported from: `weights` (checked), else the file whose sha256 is
    the manifest's, where export takes weights from (`find_weights`)."""
    record = manifest.weights
    wanted = record.sha256
    if weights is not None:
        path = resolve(spec, weights)
        actual = sha256_file(path)
        if actual != wanted:
            raise ZooError(f"{path} (sha256 {actual[:12]}…) is not the weights this bundle was exported from "
                           f"(sha256 {str(wanted)[:12]}…)", exit_code=1)
        return path
    found = find_weights(spec.name, wanted, record.source)
    if found is None:
        raise ZooError(f"the weights this bundle was exported from ({record.describe()}) are neither among the "
                       f"shipped weights in {weights_dir()} nor in {RUNS}/: pass them with --weights PATH")
    return found


def verify(bundle: str | Path, weights: str | Path | None = None, data: str | Path | None = None,
           trust_code: bool = False, trusted_keys=None, check: bool = True) -> Verification:
    """Check an existing bundle: load it as users do (the model file's sha256, the manifest against the
    copy sealed into the file), compare the manifest with the registry and the source weights' card, then
    re-run the parity matrix against the source weights (`weights`, else found by sha256 where export
    takes weights from: the shipped weights and runs/). A reduced-precision bundle's accuracy is measured
    again (on `data`'s validation split, else the built-in sample when the export used it) and judged
    against the budget sealed into its manifest.
    Returns a Verification; raises ZooError (exit 1) for a corrupted or tampered bundle and, with `check`,
    ParityError when parity fails and PrecisionRefused when the accuracy misses the budget (`check=False`:
    the Verification says so). `trust_code` and `trusted_keys` as in `zoo.runtime.load` (a TorchScript or
    pt2 bundle is loaded only with trust_code=True)."""
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
    result.notes += [note] if note else []
    if check and result.error() is not None:
        raise result.error()
    return result


def _declared(bundle: Path, manifest, spec, expected: Signature, what: str) -> None:
    """The manifest's signature against `expected` (the spec's, with the preprocessing of the source weights'
    card, said in `what`), field by field; for a raw-input bundle also the graph's tensors and wiring that the
    spec and its preprocessing give."""
    difference = manifest.signature.difference(expected)
    if difference is not None:
        key, mine, theirs = difference
        raise ZooError(f"{bundle}: manifest {key} is {_short(mine)}, {what}'s is {_short(theirs)}", exit_code=1)
    if manifest.raw is None:
        return
    inputs, outputs, raw = _raw.tensors(spec, expected.preprocess)
    given = manifest.raw.to_dict()
    for key, mine, theirs in (("inputs", manifest.inputs, inputs), ("outputs", manifest.outputs, outputs),
                              *((f"{runtime.RAW_KEY}.{k}", given[k], raw[k]) for k in ("sources", "probabilities"))):
        if mine != theirs:
            text = _io_text if key in ("inputs", "outputs") else _short
            shown = [text(mine), text(theirs)]
            raise ZooError(f"{bundle}: manifest {key} {shown[0]} are not the raw-input model's {shown[1]}", exit_code=1)


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


def _verify_loaded(bundle: Path, manifest, session, spec, weights, data) -> Verification:
    random = manifest.random_weights
    path = None if random else _source_weights(spec, manifest, weights)
    card = None if path is None else read_card(path.stem, path.parent)
    expected = spec.signature.with_preprocess(preprocessing(spec, card, random))
    _declared(bundle, manifest, spec, expected, f"{spec.name} with the card of {path.name}" if path else spec.name)
    checks = _parity.check_structure(session.file_io(), [t.to_dict() for t in manifest.inputs],
                                     [t.to_dict() for t in manifest.outputs])
    bad = [f"{c['check']}: {c['detail']}" for c in checks if c["passed"] is False]
    if bad:
        raise ZooError(f"{bundle}: the manifest does not match {manifest.file.name}: {'; '.join(bad)}", exit_code=1)
    result = Verification(str(bundle), spec.name, manifest.format, manifest.precision, manifest.raw is not None,
                          manifest.data["file_sha256"], checks)
    if manifest.format == "onnx":
        result.test_data = _check_test_data(bundle, manifest, session)
    if WEB in manifest.data:
        result.web = _web.check(bundle, manifest.data[WEB])
    if random:
        if manifest.raw is None:
            _probe(session, manifest, bundle)
        result.notes.append("exported with --random-weights: there are no source weights to re-run parity "
                            "against; checked the file's sha256, the sealed manifest, the manifest against the "
                            "model and a test run")
        return result
    model = _for_inference(load_model(spec, path))
    result.weights = str(path)
    if manifest.raw is not None:
        _reverify_raw(bundle, spec, model, session, manifest, data, result)
    else:
        _reverify(bundle, spec, model, session, manifest, data, card, result)
    return result


def _reverify(bundle: Path, spec, model, session, manifest, data, card, result: Verification) -> None:
    """Parity against the source weights, within the tolerance the export used; a reduced precision's accuracy
    against its budget."""
    atol, rtol = _parity.recorded_tolerance(manifest.data.get("parity"), spec.atol, spec.rtol)
    dataset = _load_data(spec, data)
    real = _real_samples(spec, dataset, manifest.preprocess)
    result.parity = _parity.measure(manifest.signature, model, session, atol, rtol, real,
                                    judge=manifest.precision == "fp32")
    if not result.parity.passed:
        result.refusal, result.reason = ParityError, _parity.text_table(result.parity, f"{bundle}: parity failed")
        return
    if manifest.precision == "fp32":
        return
    result.accuracy, note = _reverify_accuracy(spec, model, session, manifest, dataset, card)
    result.notes += [note] if note else []
    if result.accuracy is not None and not result.accuracy.passed:
        result.refusal = PrecisionRefused
        result.reason = f"{bundle}: " + _accuracy.refusal(spec.name, manifest.precision, result.accuracy).replace(
            "; no bundle written", "")


def _reverify_raw(bundle: Path, spec, model, session, manifest, data, result: Verification) -> None:
    """A raw-input bundle's parity against zoo.runtime on the fp32 network converted again from the source
    weights, on the raw samples of `data` (else the built-in sample), judged by the same budget."""
    from zoo.data.raw import raw_samples

    converted, exporter = _convert(spec, "onnx", model)
    samples, about = raw_samples(spec, data, RAW_SAMPLES)
    with quiet(), _reference(spec, converted, exporter, manifest.signature, manifest.weights) as reference:
        result.parity = _rawparity.measure(spec, reference, session, samples, about)
    if not result.parity.passed:
        result.refusal = ParityError
        result.reason = _rawparity.text(result.parity, f"{bundle}: parity with zoo.runtime failed")


def _reverify_accuracy(spec, model, session, manifest, dataset, card) -> tuple:
    """A reduced-precision bundle's accuracy, measured again on the same kind of held-out data and judged
    against the budget sealed into its manifest: (AccuracyReport or None, note or None)."""
    recorded, budget = _accuracy.recorded(manifest)
    if dataset is None and recorded.get("source") == "files":
        return None, (f"accuracy not re-measured: the export measured it on the training data's validation split "
                      f"(fingerprint {str(recorded.get('fingerprint'))[:12]}…); pass --data DIR to re-check it")
    held = _accuracy.held_out(spec, dataset, manifest.preprocess, card, _precision.CALIBRATION_SAMPLES)
    with quiet():
        produced = _accuracy.bundle_outputs(spec, session, held.inputs)
    report = _accuracy.measure(spec, _accuracy.eager_outputs(spec, model, held.inputs), produced, held, budget,
                               _parity.backend_label(session), card)
    note = None
    if recorded and recorded.get("fingerprint") != held.about["fingerprint"]:
        note = (f"accuracy re-measured on other data than the export's (fingerprint "
                f"{held.about['fingerprint'][:12]}…, the export's {str(recorded.get('fingerprint'))[:12]}…)")
    return report, note


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _io_text(tensors) -> str:
    return ", ".join(f"{t.name}{tuple(t.shape)}" for t in tensors)


def _probe(session, manifest, bundle: Path) -> None:
    """Run one batch through the model file and check the outputs against the manifest."""
    import numpy as np

    arrays = manifest.signature.random_inputs(2, EXAMPLE_SIZES["sequence"], np.random.default_rng(_parity.SEED))
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
