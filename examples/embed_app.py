"""A minimal application that embeds zoo.runtime (no torch, no other zoo module).

Classify every image in a folder:
    python examples/embed_app.py BUNDLE FOLDER [--top-k 3]
Or serve the model on 127.0.0.1 (POST the image file's bytes, get JSON back):
    python examples/embed_app.py BUNDLE --serve [--port 8000]
    curl --data-binary @sky.jpg http://127.0.0.1:8000/predict?top_k=2
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import zoo.runtime

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_UPLOAD = 20 * 2**20


def classify_folder(session, folder: Path, top_k: int) -> int:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"no images in {folder}", file=sys.stderr)
        return 1
    for path, result in zip(files, session.classify([str(p) for p in files], top_k=top_k)):
        print(path.name + "\t" + "\t".join(f"{label} {p:.3f}" for pairs in result.values() for label, p in pairs))
    return 0


def serve(session, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            url = urlparse(self.path)
            if url.path != "/predict":
                return self.reply(404, {"error": "POST image bytes to /predict"})
            size = int(self.headers.get("Content-Length") or 0)
            if not 0 < size <= MAX_UPLOAD:
                return self.reply(400, {"error": f"send one image of 1 byte to {MAX_UPLOAD} bytes, got {size}"})
            try:
                top_k = int(parse_qs(url.query).get("top_k", ["3"])[0])
                result = session.classify(self.rfile.read(size), top_k=top_k)[0]
            except ValueError as e:  # unreadable image, bad top_k: the runtime says what was wrong
                return self.reply(400, {"error": str(e)})
            self.reply(200, {name: [{"label": label, "probability": p} for label, p in pairs]
                             for name, pairs in result.items()})

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    # One session is shared by the handler threads: onnxruntime sessions are safe to run concurrently.
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"serving {session.manifest.model} on http://127.0.0.1:{server.server_port}/predict", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description="Classify images with an exported zoo bundle.")
    parser.add_argument("bundle")
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    try:
        session = zoo.runtime.load(args.bundle, threads=args.threads)
    except (zoo.runtime.BundleError, zoo.runtime.DeviceUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pre = session.manifest.preprocess.get(session.input_names[0])
    if len(session.input_names) != 1 or getattr(pre, "kind", None) != "image" or not session.manifest.is_classifier:
        print(f"error: {session.manifest.model} is not a single-input image classifier", file=sys.stderr)
        return 2
    if args.serve:
        serve(session, args.port)
        return 0
    if not args.folder:
        parser.error("give a FOLDER of images, or --serve")
    return classify_folder(session, Path(args.folder), args.top_k)


if __name__ == "__main__":
    sys.exit(main())
