"""One conformance suite, two engines, two protocols: the same tests, written against tritonclient (the client
users would use: its HTTP and its gRPC flavour, through one small adapter), run against `zoo serve` and against
the real Triton server (`zoo serve --engine triton`), and compared with in-process zoo.runtime on the same
inputs. The Triton engine is skipped, with the reason, where tritonserver is not installed (CI installs it)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import zoo.runtime as rt
from servers import ROOT, Server, triton_missing

from conftest import valid_inputs

MODELS = ("clouds-cnn", "water-mlp", "omniglot-two-input", "electricity-gru")
SKY = ROOT / "examples" / "images" / "sky.jpg"
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}   # the same onnxruntime; batch composition may change the last bits
GRPC_STATUS = {"StatusCode.INVALID_ARGUMENT": 400, "StatusCode.NOT_FOUND": 404, "StatusCode.UNAVAILABLE": 503,
               "StatusCode.RESOURCE_EXHAUSTED": 413, "StatusCode.INTERNAL": 500}


@pytest.fixture(scope="module")
def sessions(bundle):
    loaded = {name: rt.load(bundle(name), threads=1) for name in MODELS}
    yield loaded
    for s in loaded.values():
        s.close()


@pytest.fixture(scope="module", params=["zoo", pytest.param("triton", marks=pytest.mark.slow)])   # a tritonserver
def server(request, bundle, sessions, tmp_path_factory):
    if request.param == "triton" and (why := triton_missing()):
        pytest.skip(why)
    log = tmp_path_factory.mktemp(f"serve-{request.param}") / "server.log"
    # a 5 ms queue delay lets concurrent requests meet in one batch on both engines; zoo in two worker
    # processes (its default on two cores), Triton with one instance per model (each is a process too)
    instances = "2" if request.param == "zoo" else "1"
    s = Server([bundle(m) for m in MODELS], request.param,
               ["--threads", "1", "--instances", instances, "--max-queue-delay-ms", "5"], log)
    yield s
    assert s.stop() in (0, -15), s.log_tail()


class Client:
    """tritonclient.http or tritonclient.grpc behind the calls these tests make, answers as plain values."""

    def __init__(self, protocol: str, server):
        self.protocol, self.module = protocol, httpclient if protocol == "http" else grpcclient
        self.url = server.url if protocol == "http" else server.grpc_url
        self.raw = (httpclient.InferenceServerClient(self.url, concurrency=16, network_timeout=120)
                    if protocol == "http" else grpcclient.InferenceServerClient(self.url))

    def tensor(self, name: str, array: np.ndarray, binary: bool = True):
        datatype = "BYTES" if array.dtype == object else {"float32": "FP32", "float64": "FP64"}[str(array.dtype)]
        t = self.module.InferInput(name, list(array.shape), datatype)
        if self.protocol == "http":
            t.set_data_from_numpy(array, binary_data=binary)
        else:
            t.set_data_from_numpy(array)
        return t

    def output(self, name: str, class_count: int = 0, binary: bool = True):
        if self.protocol == "http":
            return httpclient.InferRequestedOutput(name, binary_data=binary, class_count=class_count)
        return grpcclient.InferRequestedOutput(name, class_count=class_count)

    def infer(self, model: str, inputs: list, outputs=None, **options):
        return self.raw.infer(model, inputs, outputs=outputs, **options)

    def metadata(self, model: str) -> dict:
        meta = self.raw.get_model_metadata(model, **self._json)
        for t in (*meta["inputs"], *meta["outputs"]):
            t["shape"] = [int(d) for d in t["shape"]]   # gRPC's JSON writes int64 as strings
        return meta

    def config(self, model: str) -> dict:
        config = self.raw.get_model_config(model, **self._json)
        return config if self.protocol == "http" else config["config"]

    def statistics(self, model: str) -> dict:
        (entry,) = self.raw.get_inference_statistics(model, **self._json)["model_stats"]
        return entry

    def index(self) -> list[dict]:
        index = self.raw.get_model_repository_index(**self._json)
        return index if self.protocol == "http" else index["models"]

    @property
    def _json(self) -> dict:
        return {} if self.protocol == "http" else {"as_json": True}

    def status(self, error: InferenceServerException) -> int:
        """The HTTP status of an error, or the one its gRPC status code stands for."""
        code = str(error.status())
        return int(code) if code.isdigit() else GRPC_STATUS.get(code, 500)


@pytest.fixture(scope="module", params=["http", "grpc"])
def client(request, server):
    c = Client(request.param, server)
    yield c
    c.raw.close()


def model_inputs(session, rows: int, seed: int = 0, sequence: int = 12) -> dict[str, np.ndarray]:
    return valid_inputs(session.manifest, batch=rows, raw=False, seed=seed, sequence=sequence)


def infer(client, model: str, arrays: dict, binary: bool = True, outputs=None, **options):
    return client.infer(model, [client.tensor(n, a, binary) for n, a in arrays.items()], outputs=outputs, **options)


# --- health and metadata ------------------------------------------------------------------------------

def test_health_and_readiness(client):
    assert client.raw.is_server_live() and client.raw.is_server_ready()
    assert all(client.raw.is_model_ready(m) and client.raw.is_model_ready(f"{m}-raw") for m in MODELS)
    assert not client.raw.is_model_ready("no-such-model")


@pytest.mark.parametrize("model", MODELS)
def test_metadata_comes_from_the_manifest(client, sessions, model):
    manifest = sessions[model].manifest

    def dims(shape):
        return [-1 if isinstance(d, str) else d for d in shape]
    meta = client.metadata(model)
    assert meta["name"] == model and meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == \
           [(t.name, "FP32", dims(t.shape)) for t in manifest.inputs]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == \
           [(t.name, "FP32", dims(t.shape)) for t in manifest.outputs]
    raw = client.metadata(f"{model}-raw")   # its raw inputs: one model of their own, one value per row
    assert [(t["name"], t["datatype"], t["shape"]) for t in raw["inputs"]] == \
           [(f"{t.name}_raw", "BYTES", [-1, 1]) for t in manifest.inputs]
    assert raw["outputs"] == meta["outputs"]
    config = client.config(model)
    assert config["max_batch_size"] == 64 and int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 5000


# --- predictions -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", MODELS)
def test_predictions_match_the_runtime(client, sessions, model, binary):
    if client.protocol == "grpc" and not binary:
        pytest.skip("tritonclient.grpc always sends binary tensors (raw_input_contents)")
    session = sessions[model]
    arrays = model_inputs(session, rows=3, seed=len(model))
    result = infer(client, model, arrays, binary)
    expected = session.predict(arrays)
    for name, values in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), values, **TOLERANCE)


def test_raw_inputs_go_through_the_manifest_preprocessing(client, sessions):
    clouds, water, omniglot = sessions["clouds-cnn"], sessions["water-mlp"], sessions["omniglot-two-input"]
    image = SKY.read_bytes()
    result = client.infer("clouds-cnn-raw", [client.tensor("image_raw", np.array([[image], [image]], dtype=object))])
    np.testing.assert_allclose(result.as_numpy("logits"), clouds.predict(clouds.prepare([str(SKY)] * 2))["logits"],
                               **TOLERANCE)
    rows = [{c: 0.1 * (i + 1) for c in water.manifest.preprocess["features"].columns} for i in range(2)]
    records = np.array([[json.dumps(r).encode()] for r in rows], dtype=object)
    result = client.infer("water-mlp-raw", [client.tensor("features_raw", records)])
    np.testing.assert_allclose(result.as_numpy("probability"), water.predict(water.prepare(rows))["probability"],
                               **TOLERANCE)
    alphabet = omniglot.manifest.preprocess["alphabet"].vocabulary[3]
    result = client.infer("omniglot-two-input-raw", [
        client.tensor("image_raw", np.array([[image]], dtype=object)),
        client.tensor("alphabet_raw", np.array([[alphabet.encode()]], dtype=object))])
    expected = omniglot.predict(omniglot.prepare({"image": [str(SKY)], "alphabet": [alphabet]}))
    np.testing.assert_allclose(result.as_numpy("character"), expected["character"], **TOLERANCE)


def test_the_classification_extension_gives_labels(client, sessions):
    session = sessions["clouds-cnn"]
    arrays = model_inputs(session, rows=2, seed=5)
    logits = session.predict(arrays)["logits"]
    for binary in (True, False) if client.protocol == "http" else (True,):
        result = infer(client, "clouds-cnn", arrays, outputs=[client.output("logits", class_count=3, binary=binary)])
        got = result.as_numpy("logits")
        assert got.shape == (2, 3)
        for row, values in zip(got, logits):
            parts = [(v.decode() if isinstance(v, bytes) else v).split(":", 2) for v in row]
            order = np.argsort(-values)[:3]
            assert [int(p[1]) for p in parts] == order.tolist()
            assert [p[2] for p in parts] == [session.manifest.labels["logits"][j] for j in order]
            np.testing.assert_allclose([float(p[0]) for p in parts], values[order], atol=1e-5)


def test_compressed_requests_and_answers(client, sessions):
    """tritonclient's compression: HTTP Content-Encoding and Accept-Encoding (gzip, deflate), gRPC's own."""
    session = sessions["water-mlp"]
    arrays = model_inputs(session, rows=4, seed=9)
    expected = session.predict(arrays)["probability"]
    for algorithm in ("gzip", "deflate"):
        options = ({"request_compression_algorithm": algorithm, "response_compression_algorithm": algorithm}
                   if client.protocol == "http" else {"compression_algorithm": algorithm})
        result = infer(client, "water-mlp", arrays, **options)
        np.testing.assert_allclose(result.as_numpy("probability"), expected, **TOLERANCE)


def test_concurrent_callers_each_get_their_own_rows(client, sessions):
    """Requests of different sizes, and series of different lengths (which cannot share a batch), at once
    (tritonclient's asyncio clients: the plain HTTP client is gevent-based and not for threads)."""
    import tritonclient.grpc.aio as grpcaio
    import tritonclient.http.aio as httpaio

    jobs = [("water-mlp", model_inputs(sessions["water-mlp"], rows=1 + i % 4, seed=i)) for i in range(24)]
    jobs += [("electricity-gru", model_inputs(sessions["electricity-gru"], rows=2, seed=i, sequence=8 + 4 * (i % 3)))
             for i in range(9)]

    async def burst():
        aio = httpaio.InferenceServerClient(client.url, conn_limit=len(jobs)) if client.protocol == "http" \
            else grpcaio.InferenceServerClient(client.url)
        try:
            return await asyncio.gather(*(aio.infer(model, [client.tensor(n, a) for n, a in arrays.items()])
                                          for model, arrays in jobs))
        finally:
            await aio.close()

    results = asyncio.run(burst())
    for (model, arrays), result in zip(jobs, results):
        for name, values in sessions[model].predict(arrays).items():
            np.testing.assert_allclose(result.as_numpy(name), values, **TOLERANCE)


# --- statistics and the model repository ---------------------------------------------------------------------

def test_statistics_count_requests_rows_and_times(client, sessions):
    """Triton's statistics extension: after a request of 3 rows, one more success, 3 more rows inferred, at
    least one more execution, and cumulative times that grew (read until they show: either engine may count
    just after it answers)."""
    before = client.statistics("water-mlp")
    infer(client, "water-mlp", model_inputs(sessions["water-mlp"], rows=3, seed=11))

    def count(stats, *path):
        for key in path:
            stats = stats[key]
        return int(stats)
    deadline = time.monotonic() + 10
    while True:
        after = client.statistics("water-mlp")
        if count(after, "inference_stats", "success", "count") > count(before, "inference_stats", "success", "count") \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after["name"] == "water-mlp" and after["version"] == "1"
    assert count(after, "inference_stats", "success", "count") == count(before, "inference_stats", "success", "count") + 1
    assert count(after, "inference_count") == count(before, "inference_count") + 3
    assert count(after, "execution_count") >= count(before, "execution_count") + 1
    for phase in ("success", "queue", "compute_infer"):
        assert count(after, "inference_stats", phase, "ns") > count(before, "inference_stats", phase, "ns"), phase
    assert any(int(b["batch_size"]) >= 1 for b in after["batch_stats"])


def test_the_repository_index_lists_every_model_ready(client):
    index = {m["name"]: m for m in client.index()}
    for model in MODELS:
        for name in (model, f"{model}-raw"):
            assert index[name]["state"] == "READY" and index[name].get("version", "1") == "1", index[name]


# --- errors: a 4xx naming the problem, never a crash -------------------------------------------------------

def test_bad_requests_are_client_errors(client, sessions):
    water = model_inputs(sessions["water-mlp"], rows=2)["features"]
    nan = water.copy()
    nan[1, 4] = np.nan
    omniglot = model_inputs(sessions["omniglot-two-input"], rows=1)
    cases = {
        "unknown model": lambda: infer(client, "no-such-model", {"features": water}),
        "wrong shape": lambda: infer(client, "water-mlp", {"features": water[:, :5]}),
        "wrong datatype": lambda: infer(client, "water-mlp", {"features": water.astype(np.float64)}),
        "unknown input": lambda: infer(client, "water-mlp", {"features": water, "extra": water}),
        "missing input": lambda: infer(client, "omniglot-two-input", {"image": omniglot["image"]}),
        "raw input to the tensor model": lambda: client.infer("clouds-cnn", [client.tensor(
            "image_raw", np.array([[SKY.read_bytes()]], dtype=object))]),
        "NaN": lambda: infer(client, "water-mlp", {"features": nan}),
        "undecodable image": lambda: client.infer("clouds-cnn-raw", [client.tensor(
            "image_raw", np.array([[b"not an image"]], dtype=object))]),
        "over the max batch size": lambda: infer(client, "water-mlp", {"features": np.zeros((65, 9), np.float32)}),
    }
    statuses = {}
    for what, call in cases.items():
        with pytest.raises(InferenceServerException) as error:
            call()
        statuses[what] = client.status(error.value)
    assert all(400 <= s < 500 for s in statuses.values()), statuses
    assert client.raw.is_server_live()   # and the server is still there
    np.testing.assert_allclose(infer(client, "water-mlp", {"features": water}).as_numpy("probability"),
                               sessions["water-mlp"].predict(water)["probability"], **TOLERANCE)
