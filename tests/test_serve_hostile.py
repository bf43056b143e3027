"""zoo serve against clients nobody vetted: image bombs, heads too large or too slow, JSON nested too deeply,
clients that vanish, requests cut off by the end of a drain. Each bound has its own test (each failed before
its fix), then a fuzz-style matrix feeds a real `zoo serve` every kind of hostile request at once, with
well-formed requests interleaved, and checks the answers, the log and the server's peak memory."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo.runtime as rt
import zoo.serve
from servers import ROOT, Server
from test_serve import run_batcher, water  # noqa: F401 - water: a fixture
from zoo.contract import ImagePreprocess, ImageTooLarge

SKY = ROOT / "examples" / "images" / "sky.jpg"
DEEP = b"[" * 100_000 + b"]" * 100_000
LIMITS = ["--threads", "1", "--instances", "1", "--max-body-mb", "4", "--max-header-kb", "16",   # one process:
          "--head-timeout", "1", "--body-timeout", "1.5", "--access-log"]                      # its memory is measured


def png_bomb(width: int, height: int, bit_depth: int) -> bytes:
    """A valid greyscale PNG of zeros: a few hundred KB that decode to width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = 1 + width * bit_depth // 8
    block, z = bytes(row * 500), zlib.compressobj(9)
    data = [z.compress(block) for _ in range(height // 500)] + [z.compress(block[:row * (height % 500)]), z.flush()]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(data)) + chunk(b"IEND", b"")


def image_file(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def bombs() -> dict[str, bytes]:
    """The issue's bombs: 13000x13000 16-bit (169 Mpx, 329 KB) and 12000x12000 8-bit (144 Mpx, 140 KB)."""
    return {"16-bit": png_bomb(13000, 13000, 16), "8-bit": png_bomb(12000, 12000, 8)}


# --- decoding: the contract and the runtime ------------------------------------------------------------------

def test_an_image_over_the_cap_is_refused_before_it_is_decoded(bombs, tmp_path):
    pre = ImagePreprocess(size=(64, 64))
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=r"image \(328\d+ bytes\) is 13000x13000 \(169.0 Mpx\): more than the "
                                            r"64 Mpx allowed"):
        pre.decode(bombs["16-bit"])
    assert time.perf_counter() - start < 1   # decoding it takes seconds and 4 GB
    (tmp_path / "bomb.png").write_bytes(bombs["8-bit"])
    with pytest.raises(ImageTooLarge, match="12000x12000 .* more than the 100 Mpx allowed"):
        pre.decode(tmp_path / "bomb.png", max_pixels=100_000_000)
    small = image_file(np.arange(40 * 30, dtype=np.uint8).reshape(30, 40))
    with pytest.raises(ImageTooLarge, match=r"40x30 \(0.0 Mpx\): more than the 0.001 Mpx allowed"):
        pre.decode(small, max_pixels=1000)
    assert pre.decode(small, max_pixels=1200).shape == (3, 64, 64)


def test_the_runtime_takes_a_pixel_cap_and_zoo_predict_refuses_a_bomb_in_one_line(bundle, bombs, tmp_path):
    from typer.testing import CliRunner

    from zoo.cli import app

    (tmp_path / "bomb.png").write_bytes(bombs["8-bit"])
    with rt.load(bundle("clouds-cnn"), threads=1) as session:
        with pytest.raises(ImageTooLarge, match="input 'image': image .* is 12000x12000 .* 64 Mpx"):
            session.predict_raw([bombs["8-bit"]])
        with pytest.raises(ImageTooLarge, match="more than the 0.01 Mpx allowed"):
            session.classify([SKY.read_bytes()], max_pixels=10_000)
        assert session.classify([SKY.read_bytes()], max_pixels=None)[0]["logits"]
    result = CliRunner().invoke(app, ["predict", str(bundle("clouds-cnn")), str(tmp_path / "bomb.png")])
    assert result.exit_code == 2 and "12000x12000" in result.output and "Traceback" not in result.output


def test_16_bit_images_are_scaled_without_a_float64_copy():
    import tracemalloc

    rng = np.random.default_rng(0)
    pre = ImagePreprocess(size=(50, 40), mode="L")
    small = rng.integers(0, 65536, (50, 40), dtype=np.uint16)
    np.testing.assert_array_equal(pre.decode(image_file(small))[0], np.round(small / 257).astype(np.uint8))
    deep = image_file(rng.integers(0, 65536, (1500, 2000), dtype=np.uint16))   # 3 Mpx
    tracemalloc.start()
    pre.decode(deep)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # what numpy and Python hold: the 16-bit values (twice for a moment, in Pillow's tobytes) and one byte per
    # pixel, 12 MB; the float64 path held 72 MB
    assert peak < 5 * 3_000_000, peak


def test_an_animation_and_a_flat_image_get_warnings(bundle):
    from PIL import Image

    frames = [Image.fromarray(np.full((32, 32, 3), (40 * i, 90, 200), np.uint8)) for i in range(3)]
    frames[0].paste((255, 255, 255), (0, 0, 8, 8))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    black = image_file(np.zeros((300, 400, 3), np.uint8))
    photo = SKY.read_bytes()
    with rt.load(bundle("clouds-cnn"), threads=1) as session:
        notes = []
        session.classify([buffer.getvalue(), black, photo], warnings=notes)
        assert notes[0] == ["input 'image': 3 frames (an animation or a multi-page file): only the first was used"]
        assert len(notes[1]) == 1 and "one flat colour (0, 0, 0)" in notes[1][0] and "means little" in notes[1][0]
        assert notes[2] == []
        with pytest.raises(ValueError, match="one flat colour .* refused because strict"):
            session.classify([black], strict=True)


# --- parsing: no request reaches the catch-all -----------------------------------------------------------------

@pytest.fixture(scope="module")
def clouds(bundle):
    with rt.load(bundle("clouds-cnn"), threads=1) as session:
        yield session


async def asgi(app, path: str, body: bytes, content_type: str, headers: dict | None = None) -> tuple[int, dict]:
    """One POST through the ASGI app in this process (no HTTP): (status, JSON answer)."""
    pairs = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    pairs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": pairs, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    given_body, sent = [False], []

    async def receive():
        if given_body[0]:
            await asyncio.Event().wait()
        given_body[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)
    await app(scope, receive, send)
    answer = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], json.loads(answer) if answer.startswith(b"{") else {}


def served(sessions, requests, options=zoo.serve.Options()):
    """Run (path, body, content type[, headers]) requests at once through a started app."""
    app = zoo.serve.create_app(sessions, options)

    async def main():
        async with app.router.lifespan_context(app):
            return await asyncio.gather(*(asgi(app, *r) for r in requests))
    return asyncio.run(main())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=4), max_leaves=12)
names = st.sampled_from(["features", "features_raw", "image", "image_raw", "x"]) | json_values
entries = st.fixed_dictionaries({}, optional={
    "name": names, "datatype": st.sampled_from(["FP32", "BYTES", "INT64"]) | json_values,
    "shape": st.lists(st.integers(-1, 2**70), max_size=3) | json_values,
    "data": json_values | st.lists(st.floats(width=32) | st.text(max_size=20), max_size=12),
    "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-2, 64) | json_values})})
infer_bodies = st.fixed_dictionaries({}, optional={
    "inputs": st.lists(entries, max_size=3) | json_values, "parameters": json_values,
    "outputs": st.lists(st.fixed_dictionaries({"name": names, "parameters": st.fixed_dictionaries(
        {}, optional={"classification": json_values, "binary_data": json_values})}), max_size=2) | json_values})


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=infer_bodies, tail=st.binary(max_size=48), split=st.booleans(),
       raw=st.binary(max_size=64), nesting=st.integers(1, 3000))
def test_no_request_gets_a_500_from_a_parsing_path(water, clouds, body, tail, split, raw, nesting):
    header = json.dumps(body).encode()
    deep = b"[" * nesting + b"0" + b"]" * nesting
    requests = [("/v2/models/water-mlp/infer", header + tail, "application/json",
                 {"Inference-Header-Content-Length": str(len(header))} if split else {}),
                ("/v2/models/clouds-cnn/infer", header + tail, "application/octet-stream",
                 {"Inference-Header-Content-Length": str(len(header))}),
                ("/v2/models/water-mlp/classify", header, "application/json"),
                ("/v2/models/water-mlp/classify", deep, "application/json"),
                ("/v2/models/water-mlp/infer", deep, "application/json"),
                ("/v2/models/clouds-cnn/classify", raw, "image/png"),
                ("/v2/models/water-mlp/classify", raw, "text/csv"),
                ("/v2/models/water-mlp/classify", raw, "multipart/form-data; boundary=x")]
    for (path, *_), (status, answer) in zip(requests, served([water, clouds], requests)):
        assert status == 200 or (400 <= status < 500 and answer.get("error")), (path, status, answer)


def test_deep_nesting_anywhere_in_a_request_is_a_400_naming_it(water):
    element = struct.pack("<I", len(DEEP)) + DEEP
    header = json.dumps({"inputs": [{"name": "features_raw", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(element)}}]}).encode()
    requests = [("/v2/models/water-mlp/infer", DEEP, "application/json"),
                ("/v2/models/water-mlp/classify", DEEP, "application/json"),
                ("/v2/models/water-mlp-raw/infer", header + element, "application/octet-stream",
                 {"Inference-Header-Content-Length": str(len(header))}),
                ("/v2/models/water-mlp/infer", b'{"inputs": ' + b"9" * 5000 + b"}", "application/json")]
    (a, b, c, d) = served([water], requests)
    assert a[0] == b[0] == 400 and "nests JSON arrays or objects too deeply" in a[1]["error"] + b[1]["error"]
    assert c[0] == 400 and "each element must be a JSON record" in c[1]["error"] and "recursion" in c[1]["error"]
    assert d[0] == 400 and "not valid JSON" in d[1]["error"] and "4300 digits" in d[1]["error"]


def test_the_server_decodes_a_few_raw_inputs_at_a_time(water, monkeypatch):
    """Six image uploads at once are decoded two at a time (the default), not six (asyncio's default pool)."""
    active, peak, lock = [0], [0], threading.Lock()
    prepare = zoo.serve._raw.prepare

    def slow(*args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return prepare(*args)

    monkeypatch.setattr(zoo.serve._raw, "prepare", slow)
    row = json.dumps({c: 0.5 for c in water.manifest.preprocess["features"].columns}).encode()
    results = served([water], [("/v2/models/water-mlp/classify", row, "application/json")] * 6,
                     zoo.serve.Options(decode_workers=2))
    assert [status for status, _ in results] == [200] * 6 and peak[0] == 2


def test_callers_cancelled_in_the_queue_are_not_computed(water):
    """What the end of a drain leaves queued (its callers cancelled) is dropped, not run after the deadline."""
    x = {"features": np.zeros((1, 9), np.float32)}

    async def cancelled(batcher):
        tasks = [asyncio.create_task(batcher.predict(x)) for _ in range(5)]
        await asyncio.sleep(0.1)   # all queued, the collector waiting for more (a 30 s queue delay)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return time.perf_counter()

    cancelled_at, batches = run_batcher(water, cancelled, max_batch_size=64, max_queue_delay=30)
    assert batches == [] and time.perf_counter() - cancelled_at < 5


# --- on the wire: a real zoo serve ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    s = Server([bundle("clouds-cnn"), bundle("water-mlp")], "zoo", LIMITS, log)
    yield s
    assert s.stop() == 0, s.log_tail()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def exchange(port: int, data: bytes, pause: float = 0.0, rest: bytes = b"", vanish: bool = False,
             timeout: float = 20) -> tuple[int | None, bytes, float]:
    """Send `data` (then after `pause` seconds `rest`) on a raw connection, read until the server closes it or
    the answer is complete: (status or None if the connection closed without one, body, seconds it took)."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if pause:
                time.sleep(pause)
            if vanish:
                return None, b"", time.perf_counter() - start
            s.sendall(rest)
        except OSError:   # the server answered and stopped reading; the answer is still there to read
            pass
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
                head, _, body = received.partition(b"\r\n\r\n")
                length = re.search(rb"content-length: (\d+)", head, re.I)
                if length and len(body) >= int(length.group(1)):
                    break
        except OSError:
            pass
    took = time.perf_counter() - start
    if not received.startswith(b"HTTP/1.1 "):
        return None, received, took
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head[9:12]), body, took


def post(path: str, body: bytes, content_type: str, headers: dict | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: zoo", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def form(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    body = (f'--zooboundary\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + content + b"\r\n--zooboundary--\r\n"
    return body, "multipart/form-data; boundary=zooboundary"


def raw_image(content: bytes) -> tuple[bytes, dict]:
    element = struct.pack("<I", len(content)) + content
    header = json.dumps({"inputs": [{"name": "image_raw", "shape": [1, 1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(element)}}]}).encode()
    return header + element, {"Inference-Header-Content-Length": str(len(header))}


def metric(port: int, line: str) -> float:
    status, body, _ = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: zoo\r\n\r\n")
    found = re.search(re.escape(line) + r" (\S+)", body.decode())
    return float(found.group(1)) if found else 0.0


def test_image_bombs_get_413_and_no_memory(server, bombs):
    before = peak_rss_mb(server.process.pid)
    body, form_type = form("image", "bomb.png", bombs["16-bit"])
    tensors, headers = raw_image(bombs["8-bit"])
    for request in (post("/v2/models/clouds-cnn/classify", bombs["16-bit"], "image/png"),
                    post("/v2/models/clouds-cnn/classify", body, form_type),
                    post("/v2/models/clouds-cnn-raw/infer", tensors, "application/octet-stream", headers)):
        status, answer, _ = exchange(server.port, request)
        error = json.loads(answer)["error"]
        assert status == 413 and "Mpx): more than the 16 Mpx allowed (--max-image-mpx)" in error, answer
        assert "13000x13000 (169.0 Mpx)" in error or "12000x12000 (144.0 Mpx)" in error
    assert peak_rss_mb(server.process.pid) - before < 100   # was +4.3 GB for the 16-bit one
    assert metric(server.port, 'zoo_request_errors_total{endpoint="classify",model="clouds-cnn",status="413"}') >= 2


def test_request_heads_over_the_limit_get_431(server):
    before = peak_rss_mb(server.process.pid)
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: zoo\r\n"
    many = live + b"".join(b"X-%d: a\r\n" % i for i in range(20_000)) + b"\r\n"
    huge = live + b"X-Big: " + b"a" * (8 * 2**20) + b"\r\n\r\n"
    just_over = live + b"X-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n"   # in one read: measured when it ends
    for request in (many, huge, just_over):
        status, answer, _ = exchange(server.port, request)
        error = json.loads(answer)["error"]
        assert status == 431 and "this server takes at most 16384 bytes (--max-header-kb)" in error
    assert exchange(server.port, live + b"X-Big: " + b"a" * (15 * 1024) + b"\r\n\r\n")[0] == 200
    assert peak_rss_mb(server.process.pid) - before < 50   # was +320 MB for a 256 MB header


def test_slow_clients_are_cut_off(server):
    """Half a head, or half a body, for longer than --head-timeout 1 / --body-timeout 1.5: 408 and closed;
    a connection that sends nothing is closed. Fifty at once are all cut off in time."""
    slow_head = b"POST /v2/models/water-mlp/infer HTTP/1.1\r\nHost: zoo\r\nContent-Le"
    slow_body = post("/v2/models/water-mlp/infer", b'{"inputs": [', "application/json")
    slow_body = slow_body.replace(b"Content-Length: 12", b"Content-Length: 100")
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda i: exchange(server.port, [slow_head, slow_body, b""][i % 3]), range(50)))
    for i, (status, answer, took) in enumerate(results):
        if i % 3 == 2:
            assert status is None and answer == b"" and took < 4, (status, took)
        else:
            part = ("head", "1 s (this server's --head-timeout)") if i % 3 == 0 else \
                   ("body", "1.5 s (this server's --body-timeout)")
            assert status == 408 and f"request's {part[0]} did not arrive within {part[1]}" in answer.decode()
            assert took < 5, took


def test_a_client_that_vanishes_is_one_info_line(server):
    lines = lambda: server.log.read_text().count("the client went away")  # noqa: E731
    before = lines()
    for _ in range(3):
        request = post("/v2/models/water-mlp/infer", b"{" * 10, "application/json").replace(
            b"Content-Length: 10", b"Content-Length: 1000")
        assert exchange(server.port, request, pause=0.2, vanish=True)[0] is None
    deadline = time.monotonic() + 10
    while lines() < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    text = server.log.read_text()
    assert lines() == before + 3 and "Traceback" not in text and "ERROR" not in text, server.log_tail()
    assert re.search(r"INFO: +POST /v2/models/water-mlp/infer: the client went away before its request was read",
                     text)


def test_past_the_drain_time_requests_get_a_json_503_and_the_process_exits(bundle, tmp_path):
    server = Server([bundle("water-mlp")], "zoo", ["--threads", "1", "--max-queue-delay-ms", "20000",
                                                    "--drain-seconds", "1"], tmp_path / "server.log")
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": [0.5] * 9}]})
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(result=exchange(
        server.port, post("/v2/models/water-mlp/infer", body.encode(), "application/json"))))
    thread.start()
    time.sleep(0.5)   # queued, waiting up to 20 s for company
    start = time.perf_counter()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(20) == 0, server.log_tail()
    exited = time.perf_counter() - start
    thread.join(20)
    status, text, _ = answer["result"]
    assert status == 503 and "did not finish within its drain time (--drain-seconds)" in json.loads(text)["error"]
    assert exited < 3, exited   # the drain time, then the exit: no queued batch computed after it
    server.stop()


def hostile_matrix(bombs: dict) -> list[tuple[str, bytes, dict, set]]:
    """(what, request bytes, exchange options, the statuses it may get; None: closed without an answer)."""
    tensors, headers = raw_image(bombs["8-bit"])
    bomb_form, form_type = form("image", "b.png", bombs["16-bit"])
    lying_tensor = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32",
                                           "parameters": {"binary_data_size": 360}}]}).encode()
    lying_element = struct.pack("<I", 10**6) + b"\xff\xd8"
    element_header = json.dumps({"inputs": [{"name": "image_raw", "shape": [1], "datatype": "BYTES",
                                             "parameters": {"binary_data_size": len(lying_element)}}]}).encode()
    infer, classify = "/v2/models/water-mlp/infer", "/v2/models/clouds-cnn/classify"
    return [
        ("16-bit bomb", post(classify, bombs["16-bit"], "image/png"), {}, {413}),
        ("8-bit bomb as a BYTES tensor", post("/v2/models/clouds-cnn-raw/infer", tensors, "application/octet-stream",
                                              headers), {}, {413}),
        ("bomb in a form", post(classify, bomb_form, form_type), {}, {413}),
        ("deep JSON", post(infer, DEEP, "application/json"), {}, {400}),
        ("deep JSON record", post("/v2/models/water-mlp/classify", DEEP, "application/json"), {}, {400}),
        ("20,000 headers", b"GET /v2 HTTP/1.1\r\n" + b"X: y\r\n" * 20_000 + b"\r\n", {}, {431}),
        ("32 MB header", b"GET /v2 HTTP/1.1\r\nX: " + b"a" * 2**25 + b"\r\n\r\n", {}, {431}),
        ("body over --max-body-mb", post(classify, b"\0" * (5 * 2**20), "image/png"), {}, {413}),
        ("Content-Length over the limit, no body", post(classify, b"", "image/png").replace(
            b"Content-Length: 0", b"Content-Length: 99999999999"), {}, {408}),
        ("Content-Length past the data", post(infer, b"{}", "application/json").replace(
            b"Content-Length: 2", b"Content-Length: 200"), {}, {408}),
        ("binary_data_size past the body", post(infer, lying_tensor + b"\0" * 36, "application/octet-stream",
                                                {"Inference-Header-Content-Length": str(len(lying_tensor))}), {},
         {400}),
        ("BYTES length past the body", post("/v2/models/clouds-cnn-raw/infer", element_header + lying_element,
                                            "application/octet-stream",
                                            {"Inference-Header-Content-Length": str(len(element_header))}), {}, {400}),
        ("header length past the body", post(infer, b"{}", "application/json",
                                             {"Inference-Header-Content-Length": "10"}), {}, {400}),
        ("not an image", post(classify, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image/png"), {}, {400}),
        ("a form that ends early", post(classify, b"--x\r\nContent-Disposition: form-data; name=\"image\"",
                                        "multipart/form-data; boundary=x"), {}, {400}),
        ("5000-digit number", post(infer, b'{"inputs": ' + b"9" * 5000 + b"}", "application/json"), {}, {400}),
        ("slow head", b"GET /v2 HTTP/1.1\r\nHo", {"pause": 0.1}, {408}),
        ("slow body", post(infer, b"{", "application/json").replace(b"Content-Length: 1", b"Content-Length: 9"),
         {"pause": 0.1}, {408}),
        ("vanishing mid-body", post(infer, b"{", "application/json").replace(b"Content-Length: 1",
                                                                             b"Content-Length: 9"),
         {"vanish": True}, {None}),
        ("silent connection", b"", {}, {None}),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200) + b"\r\n\r\n", {},
         {400, None}),
    ]


def test_a_matrix_of_hostile_requests_with_good_ones_in_between(server, bombs, clouds, water):
    """Every hostile request gets a 4xx (or, for the ones that vanish or say nothing, a closed connection),
    none a 500, while well-formed requests sent among them are answered correctly; the server's peak memory
    grows by less than 100 MB (the 16-bit bomb alone took 4.3 GB), and its log holds no traceback."""
    rows = np.random.default_rng(0).random((4, 9)).astype(np.float32)
    good_infer = post("/v2/models/water-mlp/infer", json.dumps({"inputs": [
        {"name": "features", "shape": [4, 9], "datatype": "FP32", "data": rows.ravel().tolist()}]}).encode(),
        "application/json")
    expected_probability = water.predict(rows)["probability"].ravel()
    good_image = post("/v2/models/clouds-cnn/classify?top_k=1", SKY.read_bytes(), "image/jpeg")
    expected_label = clouds.classify(SKY.read_bytes())[0]["logits"][0][0]
    matrix = hostile_matrix(bombs)
    for _ in range(3):   # warm: the peak below is what the hostile requests add
        exchange(server.port, good_infer), exchange(server.port, good_image)
    before = peak_rss_mb(server.process.pid)

    def one(i: int):
        if i % 2:
            what, request, options, allowed = matrix[i // 2 % len(matrix)]
            status, body, _ = exchange(server.port, request, **options)
            return what, status, body, allowed
        status, body, _ = exchange(server.port, good_infer if i % 4 == 0 else good_image)
        return ("good", status, body, {200})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(4 * len(matrix))))
    for what, status, body, allowed in results:
        assert status in allowed, (what, status, body[:300])
        if status is not None and status >= 400:
            assert json.loads(body)["error"], (what, body)
        if what == "good" and b"predictions" in body:
            assert json.loads(body)["predictions"][0]["outputs"]["logits"][0]["label"] == expected_label
        elif what == "good":
            got = np.asarray(json.loads(body)["outputs"][0]["data"], np.float32)
            np.testing.assert_allclose(got, expected_probability, rtol=1e-5, atol=1e-6)
    assert peak_rss_mb(server.process.pid) - before < 100
    assert 'status="500"' not in exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: zoo\r\n\r\n")[1].decode()
    assert "Traceback" not in server.log.read_text(), server.log_tail()
