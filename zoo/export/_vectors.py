"""Test vectors in every ONNX bundle, laid out as the ONNX Model Zoo lays them out, so that any ONNX backend
can check a bundle without zoo; and golden cases for raw-input bundles (docs/formats.md, "Test vectors").

    test_data_set_<k>/input_<i>.pb    one serialized onnx.TensorProto per graph input, named after it
    test_data_set_<k>/output_<j>.pb   the outputs onnxruntime (CPU) computed from them, named likewise
    golden/cases.json, golden/*.png   raw-input bundles: an image file, a CSV row, a series or a category
                                      name -> the expected top-k labels with probabilities, or values

The inputs come from the raw samples the export used (the dataset's files with --data, else its built-in
sample), prepared as `zoo.runtime` prepares them; the outputs are the bundle's own, through `zoo.runtime`,
on the finished model file. The manifest's `test_data` lists every file with its sha256 (`files`), the
tolerance to check them with and where the samples came from. Like `file_sha256` and the parity report it
is measured on the finished model file, so it is not sealed into it: a vector is valid exactly when the model
reproduces it, which `check` tests.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

# |got - expected| <= atol + rtol * |expected|, element-wise. Measured (benchmarks/RESULTS.md, "Test vectors"):
# other thread counts, no graph optimisation and onnxruntime-web's wasm backend use at most a tenth of the fp32
# tolerance on every bundle. fp16 and int8 are looser for backends that really run float16 kernels (11-bit
# activations) or requantise with other rounding (a step of the output's scale), which this CPU-only
# project could not measure (no GPU).
TOLERANCES = {"fp32": {"rtol": 1e-3, "atol": 1e-4}, "fp16": {"rtol": 1e-2, "atol": 1e-2},
              "int8-dynamic": {"rtol": 5e-2, "atol": 5e-2}, "int8-static": {"rtol": 5e-2, "atol": 5e-2}}
GOLDEN_TOLERANCE = {"probability": 1e-3, "rtol": 1e-4, "atol": 1e-4}
TOP_K = 3
MAX_FILE_BYTES = 64 << 20      # a test file larger than this is refused before it is read
MAX_FILES = 64
MAX_SET_BYTES = 8 << 20        # a sample whose prepared arrays exceed this is left out of the vectors
FILE_NAME = re.compile(r"(test_data_set_\d{1,2}/(input|output)_\d{1,3}\.pb|golden/[A-Za-z0-9_.-]{1,64})")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _save(folder: Path, relative: str, data: bytes, files: dict) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    files[relative] = hashlib.sha256(data).hexdigest()


def _sets(spec, session, samples) -> list[dict]:
    """Graph feeds: the first sample alone, then the next three as one batch (images of different sizes as
    sets of their own), and for image models one sample of an odd size (the derived ones)."""
    groups = [samples[:1], samples[1:4]]
    odd = [s for s in samples if "resized to" in s.label]
    if odd:
        groups.append(odd[2:3] or odd[:1])
    out = []
    for group in groups:
        feeds = [session.prepare({k: [v] if not spec.is_sequence else v for k, v in s.inputs.items()}) for s in group]
        feeds = [f for f in feeds if sum(a.nbytes for a in f.values()) <= MAX_SET_BYTES]
        shapes = {tuple(tuple(a.shape[1:]) for a in f.values()) for f in feeds}
        if len(shapes) == 1:
            out.append({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
        else:
            out += feeds
    return out


def write(folder: Path, spec, session, samples, about: dict, precision: str) -> dict:
    """Write the vectors (and a raw-input bundle's golden cases) into bundle `folder`, computed through
    `session` (the bundle, loaded with zoo.runtime); returns the manifest's `test_data`."""
    from onnx import numpy_helper

    files: dict[str, str] = {}
    inputs, outputs = session.manifest.inputs, session.manifest.outputs
    sets = _sets(spec, session, samples)
    for k, feeds in enumerate(sets):
        produced = session.predict(feeds)
        for i, t in enumerate(inputs):
            _save(folder, f"test_data_set_{k}/input_{i}.pb", numpy_helper.from_array(feeds[t.name], t.name)
                  .SerializeToString(), files)
        for j, t in enumerate(outputs):
            _save(folder, f"test_data_set_{k}/output_{j}.pb", numpy_helper.from_array(produced[t.name], t.name)
                  .SerializeToString(), files)
    record = {"files": files, "sets": len(sets), "samples": dict(about),
              "tolerance": dict(TOLERANCES[precision], rule="|got - expected| <= atol + rtol * |expected|"),
              "produced_by": f"zoo.runtime {session.backend} on {', '.join(session.providers)}"}
    if session.manifest.raw is not None:
        record["golden"] = _write_golden(folder, spec, session, samples, files)
    return record


def _golden_inputs(folder: Path, session, sample, index: int, files: dict) -> dict:
    out = {}
    for name, value in sample.inputs.items():
        pre = session.manifest.preprocess[name]
        if pre.kind == "image":
            import io

            buffer = io.BytesIO()
            pre.image(value).save(buffer, format="PNG")
            relative = f"golden/case_{index}_{name}.png"
            _save(folder, relative, buffer.getvalue(), files)
            out[name] = {"file": relative}
        elif pre.kind == "tabular":
            wanted = {c.lower() for c in pre.columns}   # the model's columns, as the CSV spells them
            out[name] = {"row": {c: str(v) for c, v in value.items() if str(c).strip().lower() in wanted}}
        elif pre.kind == "series":
            out[name] = {"readings": [float(v) for v in value]}
        else:
            out[name] = {"name": value}
    return out


def _write_golden(folder: Path, spec, session, samples, files: dict) -> dict:
    odd = [s for s in samples if "resized to" in s.label]
    chosen = samples[:2] + odd[2:3]
    cases = []
    for i, sample in enumerate(chosen):
        inputs = _golden_inputs(folder, session, sample, i, files)
        raw = _raw_value(folder, inputs)
        if spec.is_classifier:
            (ranked,) = session.classify(raw, top_k=TOP_K)
            expected = {k: [[label, p] for label, p in v] for k, v in ranked.items()}
        else:
            outputs = session.predict_raw(raw)
            expected = {t.name: np.asarray(outputs[t.name][0], np.float64).tolist() for t in spec.outputs}
        cases.append({"source": sample.label, "inputs": inputs, "expected": expected})
    text = json.dumps({"top_k": TOP_K, "tolerance": GOLDEN_TOLERANCE, "cases": cases}, indent=1) + "\n"
    _save(folder, "golden/cases.json", text.encode(), files)
    return {"cases": "golden/cases.json", "count": len(cases)}


def _raw_value(folder: Path, inputs: dict) -> dict:
    """A golden case's inputs -> raw values for Session.predict_raw (image files by path)."""
    out = {}
    for name, entry in inputs.items():
        if "file" in entry:
            out[name] = [str(folder / entry["file"])]
        elif "row" in entry:
            out[name] = [entry["row"]]
        elif "readings" in entry:
            out[name] = entry["readings"]
        else:
            out[name] = [entry["name"]]
    return out


# --- checking ---------------------------------------------------------------------------------------------

def _verified_files(bundle: Path, record: dict) -> dict[str, Path]:
    """The test files named in `test_data.files`: names confined to the bundle, sizes bounded, sha256 as listed.
    A problem is a ZooError (exit 1) naming the file."""
    files = record.get("files")
    if not isinstance(files, dict) or not files or len(files) > MAX_FILES:
        raise ZooError(f"{bundle}: manifest test_data.files must list 1 to {MAX_FILES} files, got "
                       f"{len(files) if isinstance(files, dict) else type(files).__name__}", exit_code=1)
    out = {}
    for name, digest in files.items():
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or ".." in name:
            raise ZooError(f"{bundle}: test_data.files names {name!r}, not a test file of the bundle "
                           "(test_data_set_<k>/input_<i>.pb, output_<j>.pb or golden/<file>)", exit_code=1)
        path = bundle / name
        if not path.is_file():
            raise ZooError(f"{bundle}: test file {name} is missing", exit_code=1)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ZooError(f"{bundle}: test file {name} is {size:,} bytes, over the {MAX_FILE_BYTES:,} allowed",
                           exit_code=1)
        if _sha256(path) != digest:
            raise ZooError(f"{bundle}: test file {name} was changed after export (its sha256 is not the manifest's)",
                           exit_code=1)
        out[name] = path
    return out


def _tensor(path: Path) -> tuple[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return tensor.name, numpy_helper.to_array(tensor)


def _within(got: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> tuple[bool, float]:
    if expected.dtype.kind in "OUS":
        return bool(np.array_equal(got, expected)), 0.0
    a, b = got.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - b)
    return bool(a.shape == b.shape and np.all(diff <= atol + rtol * np.abs(b))), float(diff.max(initial=0.0))


def check_vectors(bundle: Path, model_file: Path, record: dict) -> dict:
    """Run every vector set with bare onnxruntime (CPU, defaults) on `model_file` and compare with its outputs
    within the recorded tolerance. Returns {"sets", "max_abs": {output: error}, "failures", "passed"}."""
    import onnxruntime as ort

    paths = _verified_files(bundle, record)
    tolerance = record.get("tolerance") or {}
    rtol, atol = float(tolerance.get("rtol", 0.0)), float(tolerance.get("atol", 0.0))
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    sets = sorted({name.split("/")[0] for name in paths if name.startswith("test_data_set_")})
    report = {"sets": len(sets), "max_abs": {}, "failures": []}
    for folder in sets:
        feeds = dict(_tensor(p) for n, p in sorted(paths.items()) if n.startswith(f"{folder}/input_"))
        expected = dict(_tensor(p) for n, p in sorted(paths.items()) if n.startswith(f"{folder}/output_"))
        try:
            got = dict(zip(names, session.run(None, feeds)))
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error types
            report["failures"].append(f"{folder}: the model rejects its own test inputs: {' '.join(str(e).split())[:200]}")
            continue
        for name, want in expected.items():
            ok, error = _within(got[name], want, rtol, atol) if name in got else (False, float("inf"))
            report["max_abs"][name] = max(report["max_abs"].get(name, 0.0), error)
            if not ok:
                report["failures"].append(f"{folder}: {name} differs from the vector by up to {error:.3g} "
                                          f"(tolerance atol {atol:g} + rtol {rtol:g})")
    report["passed"] = not report["failures"]
    return report


def check_golden(bundle: Path, record: dict, session) -> dict:
    """Every golden case through `session` (zoo.runtime): the same top-1 label and listed probabilities within
    GOLDEN_TOLERANCE, or the values within it."""
    paths = _verified_files(bundle, record)
    name = (record.get("golden") or {}).get("cases")
    if name not in paths:
        raise ZooError(f"{bundle}: test_data.golden.cases names {name!r}, which is not among its listed files", exit_code=1)
    try:
        golden = json.loads(paths[name].read_text())
        cases, tolerance = golden["cases"], golden["tolerance"]
    except (ValueError, KeyError, TypeError) as e:
        raise ZooError(f"{bundle}: {name} is not a golden-cases file ({e})", exit_code=1) from None
    failures = []
    for case in cases:
        for entry in case["inputs"].values():   # the files it reads must be listed (checked) ones
            if "file" in entry and entry["file"] not in paths:
                raise ZooError(f"{bundle}: golden case reads {entry['file']!r}, not a listed test file", exit_code=1)
        failures += _golden_case(session, case, _raw_value(bundle, case["inputs"]), tolerance)
    return {"cases": len(cases), "failures": failures, "passed": not failures}


def _golden_case(session, case: dict, raw: dict, tolerance: dict) -> list[str]:
    where = f"golden case {case['source']!r}"
    if session.manifest.is_classifier:
        (ranked,) = session.classify(raw, top_k=max(len(v) for v in case["expected"].values()))
        out = []
        for output, expected in case["expected"].items():
            got = dict(ranked[output])
            if ranked[output][0][0] != expected[0][0]:
                out.append(f"{where}: {output} top class {ranked[output][0][0]!r}, expected {expected[0][0]!r}")
            worst = max(abs(got.get(label, 0.0) - p) for label, p in expected)
            if worst > tolerance["probability"]:
                out.append(f"{where}: {output} probabilities differ by up to {worst:.3g} "
                           f"(tolerance {tolerance['probability']:g})")
        return out
    produced = session.predict_raw(raw)
    out = []
    for output, expected in case["expected"].items():
        ok, error = _within(np.asarray(produced[output][0]), np.asarray(expected), tolerance["rtol"], tolerance["atol"])
        if not ok:
            out.append(f"{where}: {output} differs by {error:.3g} (tolerance atol {tolerance['atol']:g} + rtol "
                       f"{tolerance['rtol']:g})")
    return out
