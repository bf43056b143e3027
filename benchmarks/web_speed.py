"""The raw-input model in the browser against Python, per image, on the same machine and the same real photos: the
web folder's own page (`zoo export NAME --format web`: onnxruntime-web, WebAssembly, one thread) in headless
chromium, served by python's http.server, against zoo.runtime (decode, preprocess and predict on the fp32 bundle)
and against bare onnxruntime on the raw-input model (Pillow's decode + run), one thread each.

Browser: the page's own `predict` (what its Classify button runs: the browser decodes the file, the page converts the
pixels, onnxruntime-web runs the graph, the answer is ranked), then its two steps apart, each over every photo in
turn as the whole was (decoding to the graph's feeds; the graph alone on them), timed inside the page with
performance.now() (which
Chromium rounds to 0.1 ms on a page that is not cross-origin isolated); the file is fetched before the clock starts,
and drawing the answer is not timed. The three paths alternate in rounds (each round: every photo through one path,
then the next), so load from other processes hits them alike; medians per image. The browser's answers are also
compared with zoo.runtime's (top-1 agreement, largest probability difference): Chromium decodes the JPEGs, not Pillow.
With --node-example DIR (a copy of examples/node after `npm ci`), the Node.js example's answers on the same photos
(libjpeg-turbo in WebAssembly and pngjs decode them) are compared too (not timed: each call starts a process).

    flock /tmp/zoo-bench.lock python benchmarks/web_speed.py --data ../shared/data --bundles FOLDER \\
        [--models clouds-cnn,tinyvgg-pizza-steak,food10-mobilenetv2] [--per-dataset 5] [--rounds 3] \\
        [--node-example DIR] [--json FILE]

Web folders (and the bundles they come from) missing from --bundles are exported there first.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import zoo.runtime
from zoo.export import export

sys.path.insert(0, str(Path(__file__).parent))
from raw_inputs import photos  # noqa: E402 - the same real photos as the raw-input benchmark

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
IN_PAGE = """async ([urls, topK]) => {
  const form = document.querySelector("form"), input = form.querySelector("input[type=file]"), out = [];
  const choose = async (url) => {
    const blob = await (await fetch(url)).blob();
    const files = new DataTransfer();
    files.items.add(new File([blob], url.split("/").pop(), {type: blob.type}));
    input.files = files.files;
  };
  for (const url of urls) {   // what the Classify button runs
    await choose(url);
    const start = performance.now();
    const answer = await window.zoo.predict(form, topK);
    out.push({ms: performance.now() - start, outputs: answer.predictions[0].outputs});
  }
  const feeds = [];
  for (const [i, url] of urls.entries()) {   // its steps apart, each over every photo as the whole was
    await choose(url);
    const start = performance.now();
    feeds.push(await window.zoo.feeds(form));
    out[i].decode_ms = performance.now() - start;
  }
  for (const [i, f] of feeds.entries()) {
    const start = performance.now();
    await window.zoo.session.run(f);
    out[i].run_ms = performance.now() - start;
  }
  return out;
}"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def folders_for(name: str, out: Path) -> tuple[Path, Path]:
    fp32, web = out / f"{name}-onnx", out / f"{name}-web"
    if not (web / "manifest.json").is_file() or not (fp32 / "manifest.json").is_file():
        export(name, ["onnx"], out=out, web=True)
    return fp32, web


def python_paths(web: Path, reference, images: list[Path]):
    """zoo.runtime on the fp32 bundle, bare onnxruntime on the raw-input model fed Pillow's pixels, and the graph
    alone on pixels decoded beforehand."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    manifest = zoo.runtime.read_manifest(web)
    bare = ort.InferenceSession(str(manifest.file), options, providers=["CPUExecutionProvider"])
    pre = manifest.preprocess[manifest.network_inputs[0].name]
    name = manifest.inputs[0].name
    decoded = {str(path): pre.pixels(str(path))[None] for path in images}
    return {"zoo.runtime": lambda path: reference.predict_raw([path]),
            "onnxruntime, raw-input model": lambda path: bare.run(None, {name: pre.pixels(path)[None]}),
            "onnxruntime: graph alone": lambda path: bare.run(None, {name: decoded[path]})}


def agreement(answers: list[dict], labels: list[str], expected: np.ndarray, who: str) -> dict:
    """Answers [{label: probability}] against zoo.runtime's probabilities (N, classes)."""
    got = np.array([[answer[label] for label in labels] for answer in answers])
    return {f"top1_agreement_{who}_vs_zoo_runtime": float(np.mean(got.argmax(1) == expected.argmax(1))),
            f"max_probability_difference_{who}_vs_zoo_runtime": float(np.abs(got - expected).max())}


def node_answers(example: Path, raw: Path, images: list[Path], k: int, output: str) -> list[dict]:
    done = subprocess.run(["node", str(example / "classify.mjs"), str(raw), *map(str, images), "--top-k", str(k),
                           "--json"], capture_output=True, text=True, check=True, timeout=900)
    return [dict(map(tuple, answer["outputs"][output])) for answer in json.loads(done.stdout)]


def measure(name: str, out: Path, images: list[Path], origin: str, context, rounds: int,
            example: Path | None = None) -> dict:
    """Per image, median ms of each path and the browser's agreement with zoo.runtime; `out` is served at `origin`."""
    fp32, web = folders_for(name, out)
    urls = [f"{origin}/{p.relative_to(out)}" for p in images]
    tab = context.new_page()
    tab.goto(f"{origin}/{web.name}/")
    tab.wait_for_selector("form button:enabled", timeout=120_000)
    with zoo.runtime.load(fp32, threads=1) as reference:
        output, labels = next(iter(reference.manifest.labels.items()))   # the image models have one
        paths = python_paths(web, reference, images)
        browser_paths = ["browser (onnxruntime-web)", "browser: decoding", "browser: graph alone"]
        times = {label: [] for label in [*paths, *browser_paths]}
        for call in paths.values():   # warm-up
            for path in images[:3]:
                call(str(path))
        browser = tab.evaluate(IN_PAGE, [urls[:3], len(labels)])
        for _ in range(rounds):
            for label, call in paths.items():
                for path in images:
                    start = time.perf_counter()
                    call(str(path))
                    times[label].append((time.perf_counter() - start) * 1e3)
            browser = tab.evaluate(IN_PAGE, [urls, len(labels)])
            for label, key in zip(browser_paths, ("ms", "decode_ms", "run_ms")):
                times[label] += [r[key] for r in browser]
        expected = reference.probabilities(reference.predict_raw([str(p) for p in images]))[output]
    tab.close()
    medians = {label: statistics.median(v) for label, v in times.items()}
    row = {"ms_per_image": medians, "samples_per_path": len(times["zoo.runtime"]),
           "browser_over_zoo_runtime": medians["browser (onnxruntime-web)"] / medians["zoo.runtime"],
           "browser_over_onnxruntime": medians["browser (onnxruntime-web)"] / medians["onnxruntime, raw-input model"]}
    browser = [{c["label"]: c["probability"] for c in r["outputs"][output]} for r in browser]
    row.update(agreement(browser, labels, expected, "browser"))
    if example is not None:
        raw = out / f"{name}-onnx-raw"
        row.update(agreement(node_answers(example, raw, images, len(labels), output), labels, expected, "node"))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--bundles", default="bundles")
    parser.add_argument("--models", default="clouds-cnn,tinyvgg-pizza-steak,food10-mobilenetv2")
    parser.add_argument("--per-dataset", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--node-example", help="a copy of examples/node after npm ci: compare its answers too")
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.bundles).resolve()
    example = Path(args.node_example).resolve() if args.node_example else None
    flags = {"json_file": "json", "per_dataset": "per-dataset", "node_example": "node-example"}
    result = {"command": "flock /tmp/zoo-bench.lock python benchmarks/web_speed.py " + " ".join(
                  f"--{flags.get(k, k)} {v}" for k, v in vars(args).items() if v is not None),
              "threads": 1, "load_average_start": os.getloadavg(), "onnxruntime": ort.__version__,
              "chromium": subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip(),
              "models": {}}
    with tempfile.TemporaryDirectory(dir=out, prefix=".photos-") as tmp:
        images = []
        for i, image in enumerate(photos(Path(args.data), args.per_dataset)):
            path = Path(tmp) / f"{i:03d}{image.suffix if isinstance(image, Path) else '.jpg'}"
            shutil.copyfile(image, path) if isinstance(image, Path) else path.write_bytes(image)
            images.append(path)
        result["photos"] = len(images)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        origin = f"http://127.0.0.1:{server.server_port}"
        print(f"{len(images)} photos; load average {os.getloadavg()}", flush=True)
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                    args=FLAGS)
            for name in args.models.split(","):
                result["models"][name] = measure(name, out, images, origin, context, args.rounds, example)
                print(name, json.dumps(result["models"][name]), flush=True)
            context.close()
        server.shutdown()
    result["load_average_end"] = os.getloadavg()
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
