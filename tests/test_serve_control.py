"""zoo serve's model control, statistics, cancellation, compression and worker processes: a reload under load
swaps atomically and a failed one leaves the old model serving; requests whose clients have gone are not
computed (counted in the backend's rows); compressed bodies are bounded; the gRPC endpoint's own paths;
metrics and statistics summed over the workers."""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

import zoo.runtime as rt
import zoo.serve
from servers import Server
from zoo.serve._batching import DeadlineExceeded
from zoo.serve._core import EXTENSIONS


def call(url: str, body: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, body bytes) of an HTTP request."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def infer_body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "features", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def answer(body: bytes) -> np.ndarray:
    (out,) = json.loads(body)["outputs"]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def statistics(server, model: str = "water-mlp") -> dict:
    status, body = call(f"{server.http}/v2/models/{model}/stats")
    assert status == 200, body
    (entry,) = json.loads(body)["model_stats"]
    return entry


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(3).random((4, 9)).astype(np.float32)


# --- model control -------------------------------------------------------------------------------------------

def test_a_reload_under_load_swaps_atomically_and_a_failed_one_keeps_the_old(bundle, tmp_path, rows):
    """Two workers, four clients sending all along: every answer is the old model's or the new one's, none
    failed; every request sent after the load returned gets the new one. Then a corrupted bundle: the load is a
    400 saying why, and the new model keeps answering everywhere."""
    from zoo.export import export

    old = bundle("water-mlp")                                          # random weights
    (new,) = export("water-mlp", out=tmp_path / "shipped")             # the shipped weights
    expected = {}
    for which, folder in (("old", old), ("new", new)):
        with rt.load(folder, threads=1) as session:
            expected[which] = session.predict(rows)["probability"]
    assert not np.allclose(expected["old"], expected["new"])
    served = tmp_path / "served" / "water-mlp-onnx"
    shutil.copytree(old, served)
    server = Server([served], "zoo", ["--threads", "1", "--instances", "2", "--model-control"],
                    tmp_path / "server.log")
    answers, stop, reloaded = [], threading.Event(), threading.Event()

    def client():
        while not stop.is_set():
            after = reloaded.is_set()
            status, body = call(f"{server.http}/v2/models/water-mlp/infer", infer_body(rows),
                                {"Content-Type": "application/json"})
            answers.append((after, status, answer(body) if status == 200 else body))
    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        for c in clients:
            c.start()
        time.sleep(1.0)
        shutil.rmtree(served)
        shutil.copytree(new, served)   # the folder now holds the new bundle; the server still serves the old
        status, body = call(f"{server.http}/v2/repository/models/water-mlp/load", b"", method="POST")
        assert status == 200, body
        reloaded.set()
        time.sleep(1.0)
        (served / "model.onnx").write_bytes(b"not a model")   # the next load must fail its checks
        status, body = call(f"{server.http}/v2/repository/models/water-mlp/load", b"", method="POST")
        error = json.loads(body)["error"]
        assert status == 400 and "was not loaded, the one before keeps serving" in error and "sha256" in error, body
        time.sleep(0.5)
    finally:
        stop.set()
        for c in clients:
            c.join(60)
    which = []
    for after, status, got in answers:
        assert status == 200, got
        match = [k for k, v in expected.items() if np.allclose(got, v, rtol=1e-5, atol=1e-6)]
        assert len(match) == 1, got   # one model's answer, never a mix
        which.append((after, match[0]))
    assert ("old" in [m for a, m in which if not a]) and all(m == "new" for a, m in which if a), which
    assert sum(1 for a, _ in which if a) > 10
    index = json.loads(call(f"{server.http}/v2/repository/index", b"", method="POST")[1])
    assert {m["name"]: m["state"] for m in index} == {"water-mlp": "READY", "water-mlp-raw": "READY"}
    assert server.stop() == 0, server.log_tail()


def test_load_and_unload_are_refused_unless_the_server_allows_model_control(bundle, tmp_path, rows):
    """Anyone who reaches the server could otherwise stop its models: by default both protocols refuse (403,
    PERMISSION_DENIED) and the model keeps serving."""
    server = Server([bundle("water-mlp")], "zoo", ["--threads", "1", "--instances", "1"], tmp_path / "server.log")
    try:
        for action in ("unload", "load"):
            status, body = call(f"{server.http}/v2/repository/models/water-mlp/{action}", b"", method="POST")
            assert status == 403 and "--model-control" in json.loads(body)["error"], body
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="water-mlp"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        status, body = call(f"{server.http}/v2/models/water-mlp/infer", infer_body(rows))
        assert status == 200 and answer(body).shape == (4, 1)
    finally:
        server.stop()


def test_unload_and_load_and_the_readiness_they_mean(bundle, tmp_path, rows):
    server = Server([bundle("water-mlp")], "zoo", ["--threads", "1", "--instances", "1", "--model-control"],
                    tmp_path / "server.log")
    try:
        assert call(f"{server.http}/v2/repository/models/water-mlp/unload", b"", method="POST")[0] == 200
        assert call(f"{server.http}/v2/models/water-mlp/ready")[0] == 503
        status, body = call(f"{server.http}/v2/models/water-mlp/infer", infer_body(rows))
        assert status == 503 and "is not loaded (unloaded by a repository request)" in json.loads(body)["error"]
        assert call(f"{server.http}/v2/health/ready")[0] == 200   # an unloaded model is not expected to be ready
        index = json.loads(call(f"{server.http}/v2/repository/index", json.dumps({"ready": True}).encode(),
                                method="POST")[1])
        assert index == []
        assert call(f"{server.http}/v2/repository/models/water-mlp/load", b"", method="POST")[0] == 200
        status, body = call(f"{server.http}/v2/models/water-mlp/infer", infer_body(rows))
        assert status == 200 and answer(body).shape == (4, 1)
        status, body = call(f"{server.http}/v2/repository/models/nope/load", b"", method="POST")
        assert status == 404 and "unknown model 'nope'" in json.loads(body)["error"]
        assert call(f"{server.http}/v2/models/nope/stats")[0] == 404
        assert call(f"{server.http}/v2/models/water-mlp/versions/2/stats")[0] == 404
    finally:
        assert server.stop() == 0, server.log_tail()


def test_a_bundle_that_fails_its_check_is_refused_at_start(bundle, tmp_path):
    from zoo.serve._warmup import CheckFailed, check_outputs

    manifest = rt.read_manifest(bundle("water-mlp"))
    inputs = {"features": np.zeros((2, 9), np.float32)}
    check_outputs(manifest, inputs, {"probability": np.zeros((2, 1), np.float32)}, None)
    for outputs, message in [({"probability": np.zeros((3, 1), np.float32)}, "has shape [3, 1], expected [2, 1]"),
                             ({"probability": np.full((2, 1), np.nan, np.float32)}, "not finite"),
                             ({}, "'probability' is missing")]:
        with pytest.raises(CheckFailed, match=message.replace("[", r"\[").replace("]", r"\]")):
            check_outputs(manifest, inputs, outputs, None)
    with pytest.raises(CheckFailed, match="differs from the bundle's test vector"):
        check_outputs(manifest, inputs, {"probability": np.ones((2, 1), np.float32)},
                      {"probability": np.zeros((2, 1), np.float32)})


def test_the_bundles_test_vectors_are_what_a_load_checks(bundle, tmp_path):
    """An ONNX bundle's test vectors (test_data_set_<k>/input_0.pb, output_0.pb: TensorProtos, listed with their
    sha256 in the manifest) are read without onnx as onnx reads them, and a (re)load checks the model through
    the serving path against them; a vector changed after export fails the load, the old model serving on."""
    import onnx.numpy_helper

    from zoo.serve._warmup import read_tensor, test_vectors

    folder = tmp_path / "water-mlp-onnx"
    shutil.copytree(bundle("water-mlp"), folder)
    manifest = rt.read_manifest(folder)
    vector = folder / "test_data_set_0" / "output_0.pb"
    name, array = read_tensor(vector)
    expected = onnx.numpy_helper.to_array(onnx.load_tensor(str(vector)))
    assert name == "probability" and array.dtype == expected.dtype and np.array_equal(array, expected)
    sets = test_vectors(folder, manifest)
    assert len(sets) == manifest.data["test_data"]["sets"] >= 1
    with rt.load(folder, threads=1) as session:
        for inputs, outputs in sets:
            np.testing.assert_allclose(session.predict(inputs)["probability"], outputs["probability"], rtol=1e-3,
                                       atol=1e-4)
    server = Server([folder], "zoo", ["--threads", "1", "--instances", "1", "--model-control"],
                    tmp_path / "server.log")
    try:
        index = json.loads(call(f"{server.http}/v2/repository/index", b"", method="POST")[1])
        assert f"matches its {len(sets)} test vector set(s)" in index[0]["reason"]
        changed = onnx.numpy_helper.from_array(expected + 0.5, "probability").SerializeToString()
        vector.write_bytes(changed)
        status, body = call(f"{server.http}/v2/repository/models/water-mlp/load", b"", method="POST")
        assert status == 400 and "test_data_set_0/output_0.pb was changed after export" in json.loads(body)["error"]
        assert call(f"{server.http}/v2/models/water-mlp/ready")[0] == 200
    finally:
        assert server.stop() == 0, server.log_tail()


# --- cancellation ----------------------------------------------------------------------------------------------

def test_requests_whose_clients_went_away_are_not_computed(bundle, tmp_path, rows):
    """A 2 s queue delay holds requests in the queue: 16 HTTP clients that disconnect and 8 gRPC calls whose
    deadline passes meanwhile leave no row computed (the backend's row count stays put); then a request that
    waits for its answer is computed."""
    server = Server([bundle("water-mlp")], "zoo", ["--threads", "1", "--instances", "1", "--max-queue-delay-ms",
                                                    "2000"], tmp_path / "server.log")
    try:
        before = statistics(server)["inference_count"]
        body = infer_body(rows[:1])
        sockets = []
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"POST /v2/models/water-mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            sockets.append(s)
        channel = grpc.insecure_channel(server.grpc_url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="water-mlp")
        request.inputs.add(name="features", datatype="FP32", shape=[1, 9])
        request.raw_input_contents.append(rows[:1].tobytes())
        calls = [stub.ModelInfer.future(request, timeout=0.3) for _ in range(8)]
        time.sleep(0.3)
        for s in sockets:
            s.close()
        for c in calls:
            with pytest.raises(grpc.RpcError) as error:
                c.result()
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(3)   # past the queue delay: the batch would have run by now
        assert statistics(server)["inference_count"] == before
        status, got = call(f"{server.http}/v2/models/water-mlp/infer", body)
        assert status == 200 and statistics(server)["inference_count"] == before + 1
        channel.close()
    finally:
        assert server.stop() == 0, server.log_tail()


def test_a_cancelled_caller_leaves_its_request_unrun(water_session):
    """The batcher itself: of 6 queued requests, the 3 whose callers were cancelled and the one whose deadline
    passed are not in the batch that runs."""
    import asyncio

    batches = []

    async def main():
        batcher = zoo.serve.Batcher(water_session, max_batch_size=64, max_queue_delay=0.3,
                                    on_batch=lambda b: batches.append(b.rows))
        batcher.start()
        x = {"features": np.ones((1, 9), np.float32)}
        tasks = [asyncio.create_task(batcher.predict(x)) for _ in range(5)]
        late = asyncio.create_task(batcher.predict(x, deadline=time.perf_counter() + 0.1))
        await asyncio.sleep(0.05)
        for t in tasks[:3]:
            t.cancel()
        results = await asyncio.gather(*tasks[3:], late, return_exceptions=True)
        await batcher.close()
        return results, batcher.dropped
    results, dropped = asyncio.run(main())
    assert batches == [2] and dropped == 4
    assert isinstance(results[-1], DeadlineExceeded)


@pytest.fixture(scope="module")
def water_session(bundle):
    with rt.load(bundle("water-mlp"), threads=1) as session:
        yield session


# --- compression, gRPC, workers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_workers(bundle, tmp_path_factory):
    server = Server([bundle("water-mlp")], "zoo", ["--threads", "1", "--instances", "2", "--max-body-mb", "0.5"],
                    tmp_path_factory.mktemp("workers") / "server.log")
    yield server
    assert server.stop() == 0, server.log_tail()


def test_compressed_bodies_are_bounded_after_decompression(two_workers, water_session, rows):
    url = f"{two_workers.http}/v2/models/water-mlp/infer"
    status, body = call(url, gzip.compress(infer_body(rows)), {"Content-Encoding": "gzip"})
    assert status == 200 and answer(body).shape == (4, 1)
    many = np.tile(rows, (16, 1))   # a JSON answer over 1 KB: compressed when asked
    status, body = call(url, zlib.compress(infer_body(many)), {"Content-Encoding": "deflate",
                                                                 "Accept-Encoding": "gzip"})
    assert status == 200 and answer(gzip.decompress(body)).shape == (64, 1)
    status, body = call(url, infer_body(rows), {"Accept-Encoding": "gzip"})   # a small one is not
    assert status == 200 and answer(body).shape == (4, 1)
    bomb = gzip.compress(b" " * (2 * 2**20))   # 2 MB of spaces: 2 KB on the wire, over the 0.5 MB limit inflated
    status, body = call(url, bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "once decompressed" in json.loads(body)["error"]
    status, body = call(url, b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"})
    assert status == 400 and "cannot be decompressed" in json.loads(body)["error"]
    status, body = call(url, infer_body(rows), {"Content-Encoding": "br"})
    assert status == 415 and "gzip or deflate" in json.loads(body)["error"]
    record = {c: 0.5 for c in water_session.manifest.preprocess["features"].columns}
    status, body = call(f"{two_workers.http}/v2/models/water-mlp/classify", gzip.compress(json.dumps(record).encode()),
                        {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 200 and len(json.loads(body)["predictions"]) == 1, body


def test_grpc_tensor_contents_errors_and_metadata(two_workers, water_session, rows):
    """What tritonclient does not send: typed `contents` instead of raw_input_contents; gRPC status codes."""
    with grpc.insecure_channel(two_workers.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="water-mlp", id="r1")
        request.inputs.add(name="features", datatype="FP32", shape=[4, 9]).contents.fp32_contents.extend(
            rows.ravel().tolist())
        response = stub.ModelInfer(request)
        assert response.id == "r1" and list(response.outputs[0].shape) == [4, 1]
        got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(4, 1)
        np.testing.assert_allclose(got, water_session.predict(rows)["probability"], rtol=1e-5, atol=1e-6)
        request.inputs[0].shape[:] = [4, 8]
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "shape [4, 8]" in error.value.details()
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        meta = stub.ServerMetadata(service_pb2.ServerMetadataRequest())
        assert set(meta.extensions) == set(EXTENSIONS)
        with pytest.raises(grpc.RpcError) as error:
            stub.SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest())
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metrics_and_statistics_are_summed_over_the_workers(two_workers, rows):
    """Each request on a new connection (the kernel spreads them over both workers); whichever worker answers
    /metrics and /stats counts them all."""
    before = statistics(two_workers)
    for _ in range(20):
        connection = http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=60)
        connection.request("POST", "/v2/models/water-mlp/infer", infer_body(rows[:2]))
        assert connection.getresponse().status == 200
        connection.close()
    for _ in range(10):   # each read on a new connection too: whichever worker answers, the same sums
        after = statistics(two_workers)
        assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 20
        assert after["inference_count"] == before["inference_count"] + 40
    counts = set()
    for _ in range(10):
        text = call(f"{two_workers.http}/metrics")[1].decode()
        counts.add(next(x for x in text.splitlines()
                        if x.startswith('zoo_requests_total{endpoint="infer",model="water-mlp"}')).split()[-1])
    assert len(counts) == 1 and float(counts.pop()) >= 20


def test_the_default_instances_and_threads_fit_the_cores(monkeypatch):
    """intra-op threads x instances never exceeds the cores unless both are given: by default one thread per
    instance and an instance per core (one on CUDA)."""
    import zoo.runtime

    for cores in (1, 2, 3, 8):
        monkeypatch.setattr(zoo.runtime, "default_threads", lambda cores=cores: cores)
        assert zoo.serve.fit_cores(None, None) == (cores, 1)
        assert zoo.serve.fit_cores(None, None, "cuda") == (1, 1)
        for instances in (1, 2, 4):
            got, threads = zoo.serve.fit_cores(instances, None)
            assert got == instances and threads == max(1, cores // instances)
        for threads in (1, 2, 4):
            instances, got = zoo.serve.fit_cores(None, threads)
            assert got == threads and instances == max(1, cores // threads)
            assert instances * threads <= max(cores, threads)
        assert zoo.serve.fit_cores(3, 5) == (3, 5)
