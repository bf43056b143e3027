"""zoo serve beyond the shared conformance suite: the batcher's guarantees, the raw-input endpoint, errors and
limits on the wire, metrics, SIGTERM, how names resolve, and Triton model repositories."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from typer.testing import CliRunner

import zoo.runtime as rt
import zoo.serve
from servers import ROOT, Server
from zoo import registry
from zoo.cli import app
from zoo.errors import ZooError

from conftest import manifest_of, one_line, zoo_serve

SKY = ROOT / "examples" / "images" / "sky.jpg"


def post(url: str, body: bytes, content_type: str, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def png(mode: str, size=(40, 30), value=1000) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the batcher -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def water(bundle):
    with rt.load(bundle("water-mlp"), threads=1) as session:
        yield session


@pytest.fixture(scope="module")
def gru(bundle):
    with rt.load(bundle("electricity-gru"), threads=1) as session:
        yield session


def run_batcher(session, calls, **options):
    """Start a Batcher, run `calls(batcher)` (a coroutine function), record every batch, close it."""
    batches = []

    async def main():
        batcher = zoo.serve.Batcher(session, on_batch=lambda batch: batches.append((batch.rows, len(batch.waits))),
                                    **options)
        batcher.start()
        try:
            return await calls(batcher)
        finally:
            await batcher.close()
    return asyncio.run(main()), batches


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows(water, gru):
    rng = np.random.default_rng(0)
    requests = [(water, {"features": rng.random((1 + i % 5, 9)).astype(np.float32)}) for i in range(40)]
    series = [(gru, {"series": rng.normal(size=(2, 6 + 3 * (i % 2), 1)).astype(np.float32)}) for i in range(10)]

    async def calls(batcher):
        return await asyncio.gather(*(batcher.predict(arrays) for _, arrays in requests))

    results, batches = run_batcher(water, calls, max_batch_size=16, max_queue_delay=0.05)
    for (session, arrays), result in zip(requests, results):
        np.testing.assert_array_equal(result["probability"], session.predict(arrays)["probability"])
    assert sum(rows for rows, _ in batches) == sum(len(a["features"]) for _, a in requests)
    assert max(rows for rows, _ in batches) <= 16 and len(batches) < len(requests)   # batched, never over the max

    async def mixed(batcher):   # two sequence lengths never share a batch
        return await asyncio.gather(*(batcher.predict(arrays) for _, arrays in series))

    results, batches = run_batcher(gru, mixed, max_batch_size=64, max_queue_delay=0.05)
    for (session, arrays), result in zip(series, results):
        np.testing.assert_allclose(result["next_value"], session.predict(arrays)["next_value"], rtol=1e-6, atol=1e-6)
    assert len(batches) >= 2


def test_the_queue_delay_bounds_the_wait_and_a_full_batch_does_not_wait(water):
    x = {"features": np.zeros((1, 9), np.float32)}

    async def one(batcher):
        start = time.perf_counter()
        await batcher.predict(x)
        return time.perf_counter() - start

    waited, _ = run_batcher(water, one, max_batch_size=8, max_queue_delay=0.2)
    assert 0.2 <= waited < 2.0   # alone, it waits for company up to the delay, then runs

    async def full(batcher):
        start = time.perf_counter()
        await asyncio.gather(*(batcher.predict(x) for _ in range(4)))
        return time.perf_counter() - start

    waited, batches = run_batcher(water, full, max_batch_size=4, max_queue_delay=30)
    assert waited < 10 and batches == [(4, 4)]   # a full batch runs at once


def test_a_bad_request_fails_alone_and_oversized_ones_are_refused(water):
    good = {"features": np.ones((2, 9), np.float32)}
    bad = {"features": np.full((1, 9), np.nan, np.float32)}

    async def calls(batcher):
        return await asyncio.gather(batcher.predict(good), batcher.predict(bad), batcher.predict(good),
                                    batcher.predict({"features": np.ones((9, 9), np.float32)}), return_exceptions=True)

    results, _ = run_batcher(water, calls, max_batch_size=8, max_queue_delay=0.05)
    np.testing.assert_array_equal(results[0]["probability"], water.predict(good)["probability"])
    assert "expected finite values" in str(results[1]) and "at most 8 per request" in str(results[3])
    assert not isinstance(results[2], Exception)


# --- zoo serve on the wire ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(bundle, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    server = Server([bundle("clouds-cnn"), bundle("water-mlp"), bundle("electricity-gru")], "zoo",
                    ["--threads", "1", "--max-body-mb", "0.5"], log)
    yield server
    assert server.stop() == 0, server.log_tail()


def infer_url(served, model: str = "water-mlp") -> str:
    return f"{served.http}/v2/models/{model}/infer"


BINARY_HEADER = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 36}}]}).encode()


@pytest.mark.parametrize("body, headers, status, message", [
    (b"{not json", {}, 400, "not valid JSON"),
    (b"[]", {}, 400, "expected a JSON object"),
    (b'{"inputs": []}', {}, 400, "non-empty list"),
    (json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": [1] * 8}]}).encode(),
     {}, 400, "shape [1, 9] has 9 elements but `data` has 8"),
    (json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": ["a"] * 9}]}).encode(),
     {}, 400, "must hold numbers"),
    (json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "INT64", "data": [1] * 9}]}).encode(),
     {}, 400, "expected datatype FP32, got 'INT64'"),
    (json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": [1] * 9}] * 2}).encode(),
     {}, 400, "given more than once"),
    (BINARY_HEADER + b"\0" * 20, {"Inference-Header-Content-Length": str(len(BINARY_HEADER))}, 400,
     "binary_data_size 36 runs past the 20 binary bytes"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, 400, "Inference-Header-Content-Length"),
    (json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": [1] * 9}],
                 "outputs": [{"name": "logits"}]}).encode(), {}, 400, "unknown output 'logits'"),
])
def test_malformed_infer_requests_name_the_problem(served, body, headers, status, message):
    code, answer = post(infer_url(served), body, "application/json", headers)
    assert code == status and message in answer["error"], answer


def test_errors_are_json_with_4xx_never_500(served):
    assert post(f"{served.http}/v2/models/nope/infer", b"{}", "application/json")[0] == 404
    code, body = get(f"{served.http}/v2/models/water-mlp/versions/2")
    assert code == 404 and "only version 1" in json.loads(body)["error"]
    code, body = get(f"{served.http}/no/such/page")
    assert code == 404 and "no such endpoint" in json.loads(body)["error"]
    code, body = get(infer_url(served))
    assert code == 405 and "GET is not allowed" in json.loads(body)["error"]
    code, answer = post(f"{served.http}/v2/models/clouds-cnn/classify", b"x" * (600 * 1024), "image/png")
    assert code == 413 and "at most 524288 bytes" in answer["error"]
    code, answer = post(f"{served.http}/v2/models/clouds-cnn/classify", b"not an image", "image/png")
    assert code == 400 and "cannot read image" in answer["error"]
    code, answer = post(f"{served.http}/v2/models/clouds-cnn/classify", b"a,b", "application/xml")
    assert code == 415 and "unsupported content type" in answer["error"]
    code, answer = post(f"{served.http}/v2/models/clouds-cnn/classify?top_k=0", SKY.read_bytes(), "image/jpeg")
    assert code == 400 and "top_k" in answer["error"]


def test_the_classify_endpoint_takes_uploads_forms_csv_and_json(served, bundle):
    clouds = rt.load(bundle("clouds-cnn"), threads=1)
    water = rt.load(bundle("water-mlp"), threads=1)
    code, answer = post(f"{served.http}/v2/models/clouds-cnn/classify?top_k=2", SKY.read_bytes(), "image/jpeg")
    ((label, p), _) = clouds.classify(str(SKY), top_k=2)[0]["logits"]
    assert code == 200 and answer["model"] == "clouds-cnn"
    top = answer["predictions"][0]["outputs"]["logits"]
    assert len(top) == 2 and top[0]["label"] == label and top[0]["probability"] == pytest.approx(p, abs=1e-6)
    columns = water.manifest.preprocess["features"].columns
    rows = [{c: 0.2 * (i + 1) for c in columns} for i in range(3)]
    expected = [r["probability"] for r in water.classify(rows, top_k=2)]
    code, answer = post(f"{served.http}/v2/models/water-mlp/classify?top_k=2", json.dumps(rows).encode(),
                        "application/json")
    assert code == 200 and [[(x["label"], pytest.approx(x["probability"], abs=1e-6)) for x in r["outputs"]["probability"]]
                            for r in answer["predictions"]] == expected
    csv_text = ",".join(columns) + "\n" + "\n".join(",".join(str(r[c]) for c in columns) for r in rows)
    code, answer = post(f"{served.http}/v2/models/water-mlp/classify?top_k=2", csv_text.encode(), "text/csv")
    assert code == 200 and len(answer["predictions"]) == 3
    code, answer = post(f"{served.http}/v2/models/electricity-gru/classify", json.dumps([0.1] * 100).encode(),
                        "application/json")
    assert code == 200 and len(answer["predictions"][0]["outputs"]["next_value"]) == 1


def test_warnings_are_returned_and_strict_refuses(served):
    sixteen_bit = png("I;16")
    code, answer = post(f"{served.http}/v2/models/clouds-cnn/classify", sixteen_bit, "image/png")
    assert code == 200 and "16-bit image" in answer["predictions"][0]["warnings"][0]
    code, answer = post(f"{served.http}/v2/models/clouds-cnn/classify?strict=true", sixteen_bit, "image/png")
    assert code == 400 and "refused because strict" in answer["error"]


def test_metrics_count_requests_errors_batches_and_latency(served):
    x = np.zeros((3, 9), np.float32)
    body = json.dumps({"inputs": [{"name": "features", "shape": [3, 9], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    assert post(infer_url(served), body, "application/json")[0] == 200
    post(infer_url(served), b"{", "application/json")
    code, text = get(f"{served.http}/metrics")
    text = text.decode()
    assert code == 200
    for line in ('zoo_requests_total{endpoint="infer",model="water-mlp"}',
                 'zoo_request_errors_total{endpoint="infer",model="water-mlp",status="400"}',
                 'zoo_batch_rows_bucket{le="4.0",model="water-mlp"}', 'zoo_queue_seconds_count{model="water-mlp"}',
                 'zoo_inference_seconds_count{model="water-mlp"}',
                 'zoo_request_seconds_count{endpoint="infer",model="water-mlp"}'):
        assert line in text, line


def test_answers_are_not_held_back_by_delayed_acks(served):
    """The server sets TCP_NODELAY: without it, each small answer's second write waited for the client's
    delayed ACK (about 40 ms per request at concurrency 1, whatever the model)."""
    import http.client
    import statistics

    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": [0.5] * 9}]})
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    times = []
    for _ in range(25):
        start = time.perf_counter()
        connection.request("POST", "/v2/models/water-mlp/infer", body, {"Content-Type": "application/json"})
        assert connection.getresponse().read()
        times.append(time.perf_counter() - start)
    connection.close()
    assert statistics.median(times) < 0.02, times


def test_the_page_lists_the_models(served):
    code, page = get(f"{served.http}/")
    assert code == 200 and b"zoo serve" in page
    listing = json.loads(page.decode().split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert [m["name"] for m in listing] == ["clouds-cnn", "water-mlp", "electricity-gru"]
    assert listing[1]["inputs"][0]["kind"] == "tabular" and "ph" in listing[1]["inputs"][0]["columns"]


def test_sigterm_lets_in_flight_requests_finish(bundle, tmp_path):
    """A request waiting in the queue (a 1.5 s queue delay) when SIGTERM arrives still gets its answer; then
    the server exits 0 and takes no new connections."""
    server = Server([bundle("water-mlp")], "zoo", ["--threads", "1", "--max-queue-delay-ms", "1500"],
                    tmp_path / "server.log")
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": [0.5] * 9}]})
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(
        result=post(infer_url(server), body.encode(), "application/json")))
    thread.start()
    time.sleep(0.5)
    start = time.perf_counter()
    server.process.send_signal(signal.SIGTERM)
    thread.join(60)
    assert answer["result"][0] == 200 and answer["result"][1]["outputs"][0]["shape"] == [1, 1]
    assert server.process.wait(60) == 0 and time.perf_counter() - start < 30, server.log_tail()
    assert not server.ready()


# --- the command: names, defaults, one-line errors ----------------------------------------------------------

def test_zoo_serve_binds_localhost_by_default_and_names_what_it_serves(bundle):
    process = subprocess.Popen([sys.executable, "-m", "zoo.cli", "serve", str(bundle("water-mlp")), "--port", "0",
                                "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving water-mlp, water-mlp-raw on http://127.0.0.1:"), line
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0


@pytest.mark.parametrize("args, message", [
    (["not-a-model"], "unknown model 'not-a-model'"),
    (["./no/such/folder"], "no bundle folder at ./no/such/folder"),
    (["water-mlp", "--engine", "tensorflow"], "--engine must be zoo or triton"),
])
def test_zoo_serve_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2 and message in one_line(result), result.output
    assert "Traceback" not in result.output


def test_a_name_resolves_to_its_bundle_or_says_how_to_make_one(tmp_path, monkeypatch, bundle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bundles").mkdir()
    source = bundle("water-mlp")
    (tmp_path / "bundles" / "water-mlp-onnx").symlink_to(source)
    result, sessions = zoo_serve(monkeypatch, "water-mlp", str(source))
    assert result.exit_code == 0, result.output
    assert [s.manifest.bundle.resolve() for s in sessions] == [source.resolve()] * 2
    # a name suggests the shipped weights: it says whose they are
    assert "note: serving bundles/water-mlp-onnx, exported from random weights" in one_line(result)
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    result, sessions = zoo_serve(monkeypatch, "circles-mlp")
    assert result.exit_code == 2 and not sessions
    assert ("no bundle for circles-mlp at bundles/circles-mlp-onnx: export one with `zoo export circles-mlp "
            "--format onnx`") in one_line(result)


def test_a_missing_name_is_exported_when_the_training_extra_is_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result, sessions = zoo_serve(monkeypatch, "thermometer-linear")
    assert result.exit_code == 0, result.output
    (session,) = sessions
    assert session.manifest.bundle == Path("bundles/thermometer-linear-onnx")
    assert "exported bundles/thermometer-linear-onnx" in one_line(result)
    assert session.manifest.data["weights"]["random"] is False


def test_the_triton_engine_without_tritonserver_says_what_to_install(bundle, tmp_path):
    result = CliRunner().invoke(app, ["serve", str(bundle("water-mlp")), "--engine", "triton",
                                      "--triton-env", str(tmp_path / "nowhere")])
    text = one_line(result)
    assert result.exit_code == 2 and "is not a virtual environment" in text and "pip install -e '.[triton]'" in text


# --- Triton model repositories -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend, raw", [("onnxruntime", False), ("python", False), ("python", True)])
def test_every_model_config_parses_with_tritons_own_schema(backend, raw):
    """No optional inputs (perf_analyzer and shared memory fill every declared input): the tensor models take
    the tensors, the raw-input model `<name>-raw` only the raw forms."""
    from tritonclient.grpc import model_config_pb2

    for spec in registry.specs():
        manifest = manifest_of(spec)
        if raw and not all(t.name in spec.preprocess for t in spec.inputs):
            continue
        text = zoo.serve.config_text(zoo.serve.model_config(manifest, spec.name, backend, 32, 500, 2, "KIND_GPU", 3,
                                                            raw=raw))
        config = text_format.Parse(text, model_config_pb2.ModelConfig())   # unknown fields are errors
        assert config.name == spec.name and config.max_batch_size == 32
        assert (config.platform, config.backend) == (("onnxruntime_onnx", "") if backend == "onnxruntime"
                                                     else ("", "python"))
        inputs = [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims), i.optional) for i in config.input]
        expected = ([(f"{t.name}_raw", "TYPE_STRING", [1], False) for t in spec.inputs] if raw else
                    [(t.name, "TYPE_FP32", [-1 if isinstance(d, str) else d for d in t.shape[1:]], False)
                     for t in spec.inputs])
        assert inputs == expected
        assert [(o.name, list(o.dims)) for o in config.output] == [(t.name, list(t.shape[1:])) for t in spec.outputs]
        labelled = {o.name: o.label_filename for o in config.output if o.label_filename}
        assert labelled == {t.name: f"{t.name}.labels.txt" for t in spec.outputs
                            if len(spec.labels.get(t.name, ())) == t.shape[-1]}
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        group = config.instance_group[0]
        assert group.count == 2 and model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_GPU"
        parameters = {k: v.string_value for k, v in config.parameters.items()}
        assert parameters[{"onnxruntime": "intra_op_thread_count", "python": "threads"}[backend]] == "3"
        if backend == "python":
            assert parameters["inputs"] == ("raw" if raw else "tensors")
    with pytest.raises(ValueError, match="raw-input model runs on the Python backend"):
        zoo.serve.model_config(manifest_of(registry.get("water-mlp")), "w", "onnxruntime", raw=True)


def test_zoo_export_format_triton_writes_a_repository(tmp_path):
    result = CliRunner().invoke(app, ["export", "water-mlp", "--format", "triton", "--random-weights",
                                      "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    repo = tmp_path / "triton"
    assert (tmp_path / "water-mlp-onnx" / "manifest.json").is_file()   # the ONNX bundle it is made from
    onnx, python, raw = repo / "water-mlp", repo / "water-mlp-python", repo / "water-mlp-raw"
    assert sorted(p.relative_to(onnx).as_posix() for p in onnx.rglob("*")) == ["1", "1/model.onnx", "config.pbtxt"]
    for folder in (python, raw):
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == \
               ["1", "1/manifest.json", "1/model.onnx", "1/model.py", "config.pbtxt"]
    assert 'string_value: "raw"' in (raw / "config.pbtxt").read_text()
    assert (python / "1" / "model.py").read_text() == (ROOT / "zoo" / "serve" / "triton_model.py").read_text()
    assert 'platform: "onnxruntime_onnx"' in (onnx / "config.pbtxt").read_text()
    assert "kind: KIND_AUTO" in (onnx / "config.pbtxt").read_text()
    entries = [e for e in json.loads(result.stdout) if e["format"] == "triton"]
    assert entries[0]["models"] == [str(onnx), str(python), str(raw)]
    # the python variant is itself a loadable, verified bundle
    with rt.load(python / "1", threads=1) as session:
        assert session.manifest.model == "water-mlp"


def test_a_classifier_repository_has_label_files(bundle, tmp_path):
    manifest = rt.read_manifest(bundle("clouds-cnn"))
    (folder, _, _) = zoo.serve.export_repository([manifest], tmp_path)
    assert (folder / "logits.labels.txt").read_text().splitlines() == manifest.labels["logits"]
    with pytest.raises(ZooError, match="Triton repositories are made from ONNX"):
        zoo.serve.write_model(tmp_path, rt.read_manifest(bundle("water-mlp", "torchscript")), "w", "python")
