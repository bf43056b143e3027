"""One conformance suite, two engines: the same tests, written against tritonclient.http (the client users would
use), run against `zoo serve` and against the real Triton server (`zoo serve --engine triton`), and compared
with in-process zoo.runtime on the same inputs. The Triton engine is skipped, with the reason, where
tritonserver is not installed (CI installs it)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import zoo.runtime as rt
from servers import ROOT, Server, triton_missing

from conftest import valid_inputs

MODELS = ("clouds-cnn", "water-mlp", "omniglot-two-input", "electricity-gru")
SKY = ROOT / "examples" / "images" / "sky.jpg"
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}   # the same onnxruntime; batch composition may change the last bits


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
    # a 5 ms queue delay lets concurrent requests meet in one batch on both engines
    s = Server([bundle(m) for m in MODELS], request.param, ["--threads", "1", "--max-queue-delay-ms", "5"], log)
    yield s
    assert s.stop() in (0, -15), s.log_tail()


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.url, concurrency=16, network_timeout=120)
    yield c
    c.close()


def tensor(name: str, array: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    datatype = "BYTES" if array.dtype == object else {"float32": "FP32", "float64": "FP64"}[str(array.dtype)]
    t = httpclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array, binary_data=binary)
    return t


def model_inputs(session, rows: int, seed: int = 0, sequence: int = 12) -> dict[str, np.ndarray]:
    return valid_inputs(session.manifest, batch=rows, raw=False, seed=seed, sequence=sequence)


def infer(client, model: str, arrays: dict, binary: bool = True, outputs=None):
    return client.infer(model, [tensor(n, a, binary) for n, a in arrays.items()], outputs=outputs)


# --- health and metadata ------------------------------------------------------------------------------

def test_health_and_readiness(client):
    assert client.is_server_live() and client.is_server_ready()
    assert all(client.is_model_ready(m) for m in MODELS)
    assert not client.is_model_ready("no-such-model")


@pytest.mark.parametrize("model", MODELS)
def test_metadata_comes_from_the_manifest(client, sessions, model):
    manifest = sessions[model].manifest
    meta = client.get_model_metadata(model)
    assert meta["name"] == model and meta["versions"] == ["1"]
    tensors = [t for t in meta["inputs"] if not t["name"].endswith("_raw")]   # Triton lists the raw inputs too
    assert [(t["name"], t["datatype"], t["shape"]) for t in tensors] == \
           [(t.name, "FP32", [-1 if isinstance(d, str) else d for d in t.shape]) for t in manifest.inputs]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == \
           [(t.name, "FP32", [-1 if isinstance(d, str) else d for d in t.shape]) for t in manifest.outputs]
    config = client.get_model_config(model)
    assert config["max_batch_size"] == 64 and config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000


# --- predictions -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", MODELS)
def test_predictions_match_the_runtime(client, sessions, model, binary):
    session = sessions[model]
    arrays = model_inputs(session, rows=3, seed=len(model))
    result = infer(client, model, arrays, binary)
    expected = session.predict(arrays)
    for name, values in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), values, **TOLERANCE)


def test_raw_inputs_go_through_the_manifest_preprocessing(client, sessions):
    clouds, water, omniglot = sessions["clouds-cnn"], sessions["water-mlp"], sessions["omniglot-two-input"]
    image = SKY.read_bytes()
    result = client.infer("clouds-cnn", [tensor("image_raw", np.array([[image], [image]], dtype=object))])
    np.testing.assert_allclose(result.as_numpy("logits"), clouds.predict(clouds.prepare([str(SKY)] * 2))["logits"],
                               **TOLERANCE)
    rows = [{c: 0.1 * (i + 1) for c in water.manifest.preprocess["features"].columns} for i in range(2)]
    records = np.array([[json.dumps(r).encode()] for r in rows], dtype=object)
    result = client.infer("water-mlp", [tensor("features_raw", records)])
    np.testing.assert_allclose(result.as_numpy("probability"), water.predict(water.prepare(rows))["probability"],
                               **TOLERANCE)
    alphabet = omniglot.manifest.preprocess["alphabet"].vocabulary[3]
    result = client.infer("omniglot-two-input", [tensor("image_raw", np.array([[image]], dtype=object)),
                                                 tensor("alphabet_raw", np.array([[alphabet.encode()]], dtype=object))])
    expected = omniglot.predict(omniglot.prepare({"image": [str(SKY)], "alphabet": [alphabet]}))
    np.testing.assert_allclose(result.as_numpy("character"), expected["character"], **TOLERANCE)


def test_the_classification_extension_gives_labels(client, sessions):
    session = sessions["clouds-cnn"]
    arrays = model_inputs(session, rows=2, seed=5)
    logits = session.predict(arrays)["logits"]
    for binary in (True, False):
        result = infer(client, "clouds-cnn", arrays,
                       outputs=[httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=3)])
        got = result.as_numpy("logits")
        assert got.shape == (2, 3)
        for row, values in zip(got, logits):
            parts = [(v.decode() if isinstance(v, bytes) else v).split(":", 2) for v in row]
            order = np.argsort(-values)[:3]
            assert [int(p[1]) for p in parts] == order.tolist()
            assert [p[2] for p in parts] == [session.manifest.labels["logits"][j] for j in order]
            np.testing.assert_allclose([float(p[0]) for p in parts], values[order], atol=1e-5)


def test_concurrent_callers_each_get_their_own_rows(server, sessions):
    """Requests of different sizes, and series of different lengths (which cannot share a batch), at once
    (tritonclient.http.aio: the plain client is gevent-based and not for threads)."""
    import tritonclient.http.aio as aioclient

    jobs = [("water-mlp", model_inputs(sessions["water-mlp"], rows=1 + i % 4, seed=i)) for i in range(24)]
    jobs += [("electricity-gru", model_inputs(sessions["electricity-gru"], rows=2, seed=i, sequence=8 + 4 * (i % 3)))
             for i in range(9)]

    async def burst():
        client = aioclient.InferenceServerClient(server.url, conn_limit=len(jobs))
        try:
            return await asyncio.gather(*(client.infer(model, [tensor(n, a) for n, a in arrays.items()])
                                          for model, arrays in jobs))
        finally:
            await client.close()

    results = asyncio.run(burst())
    for (model, arrays), result in zip(jobs, results):
        for name, values in sessions[model].predict(arrays).items():
            np.testing.assert_allclose(result.as_numpy(name), values, **TOLERANCE)


# --- errors: a 4xx naming the problem, never a crash -------------------------------------------------------

def _status(call) -> int:
    with pytest.raises(InferenceServerException) as error:
        call()
    return int(error.value.status())


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
        "NaN": lambda: infer(client, "water-mlp", {"features": nan}),
        "undecodable image": lambda: client.infer("clouds-cnn", [tensor("image_raw", np.array([[b"not an image"]],
                                                                                                dtype=object))]),
        "over the max batch size": lambda: infer(client, "water-mlp", {"features": np.zeros((65, 9), np.float32)}),
    }
    statuses = {what: _status(call) for what, call in cases.items()}
    assert all(400 <= s < 500 for s in statuses.values()), statuses
    assert client.is_server_live()   # and the server is still there
    np.testing.assert_allclose(infer(client, "water-mlp", {"features": water}).as_numpy("probability"),
                               sessions["water-mlp"].predict(water)["probability"], **TOLERANCE)
