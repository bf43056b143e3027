"""The static web folder (`zoo export NAME --format web`) in a real headless browser (Debian's chromium, driven by
Playwright), served by a plain static file server: the page answers the raw-input bundle's golden cases (an image file
through the file input, a CSV row through the form) as zoo.runtime does on the same bundle, shows labels as text,
loads nothing from outside its folder; and the folder's integrity as `zoo verify` checks it. Skipped, with the reason,
where chromium, Playwright, npm or the npm registry is missing (CI installs them)."""

from __future__ import annotations

import functools
import http.server
import io
import json
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import zoo.runtime as rt
from npm_tools import npm_missing
from servers import HOSTILE, HOSTILE_LABELS, ROOT, export_hostile
from test_serve_page import CHROMIUM, FLAGS
from zoo.cli import app
from zoo.errors import ZooError
from zoo.export import _ortweb, _rawparity, export

SKY = ROOT / "examples" / "images" / "sky.jpg"
runner = CliRunner()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Web folders of shipped models (an RGB and a grayscale image model, a table with categories), a series model
    and a model whose name and labels are markup, with random weights; onnxruntime-web fetched with npm."""
    reason = npm_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("web")
    made = {name: export(name, ["onnx"], out=out, web=True)[-1] for name in ("clouds-cnn", "lenet-mnist",
                                                                             "insurance-mlp")}
    made["electricity-lstm"] = export("electricity-lstm", ["onnx"], out=out, web=True, random_weights=True)[-1]
    made[HOSTILE] = export_hostile(out, web=True)
    assert all(p.name == f"{name}-web" for name, p in made.items())
    return made


class Static(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(folders):
    """`open(folder)`: the folder's page, served by python's http.server (no special headers), model loaded; every
    URL the browser requested is in `requests`."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    root = next(iter(folders.values())).parent
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Static, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_port}"
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=FLAGS)
        requests = []
        context.on("request", lambda request: requests.append(request.url))

        def open_page(folder: Path):
            tab = context.new_page()
            tab.goto(f"{origin}/{urllib.parse.quote(folder.name)}/")
            tab.wait_for_selector("form button:enabled", timeout=60_000)
            return tab

        open_page.origin, open_page.requests, open_page.context = origin, requests, context
        yield open_page
        context.close()
    server.shutdown()


def golden(folder: Path) -> dict:
    return json.loads((folder / "golden" / "cases.json").read_text())


def shown(tab) -> list[tuple[str, float]]:
    """The page's answer: (label, probability) per listed class, or ("", value) per value."""
    items = tab.locator(".output li")
    items.first.wait_for(timeout=60_000)
    out = []
    for item in items.all():
        if item.get_attribute("data-probability") is not None:
            out.append((item.locator(".label").text_content(), float(item.get_attribute("data-probability"))))
        else:
            out.append(("", float(item.get_attribute("data-value"))))
    return out


def classify_file(tab, path: Path) -> list[tuple[str, float]]:
    tab.locator("input[type=file]").set_input_files(str(path))
    tab.locator("form button").click()
    return shown(tab)


def assert_same_classes(page: list, python: list, tolerance: float):
    """The same top class, and every class the page lists within `tolerance` of Python's probability."""
    assert page[0][0] == python[0][0], (page, python)
    expected = dict(python)
    assert max(abs(p - expected[label]) for label, p in page) <= tolerance, (page, python)


# --- the page against zoo.runtime ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["clouds-cnn", "lenet-mnist"])
def test_golden_images_are_classified_as_zoo_runtime_does(folders, browser, name):
    """The golden cases' PNGs (lossless: every decoder gives the same pixels) through the file input, against
    zoo.runtime on the same bundle, within the golden cases' documented tolerance."""
    folder, cases = folders[name], golden(folders[name])
    tab = browser(folder)
    with rt.load(folder) as session:
        for case in cases["cases"]:
            image = folder / case["inputs"]["image"]["file"]
            page = classify_file(tab, image)
            (python,) = session.classify([str(image)], top_k=len(page))
            assert [label for label, _ in page] == [label for label, _ in python["logits"]]
            assert_same_classes(page, python["logits"], cases["tolerance"]["probability"])
            tab.locator(".output").evaluate("box => box.replaceChildren()")
    tab.close()


def test_a_color_photo_for_a_grayscale_model_uses_pillows_luma(folders, browser, tmp_path):
    """An RGB PNG for lenet-mnist (mode L): the page converts with Pillow's integer luma, so the answer is
    zoo.runtime's within the golden tolerance; a JPEG (sky.jpg, another decoder than Pillow's) within the
    raw-input parity budget."""
    folder = folders["lenet-mnist"]
    png = tmp_path / "sky.png"
    Image.open(SKY).convert("RGB").save(png)
    tab = browser(folder)
    with rt.load(folder) as session:
        for path, tolerance in ((png, golden(folder)["tolerance"]["probability"]),
                                (SKY, _rawparity.MAX_PROBABILITY_DIFFERENCE)):
            page = classify_file(tab, path)
            (python,) = session.classify([str(path)], top_k=len(page))
            assert_same_classes(page, python["logits"], tolerance)
            tab.locator(".output").evaluate("box => box.replaceChildren()")
    tab.close()


def test_a_photo_with_an_exif_orientation_is_read_as_stored(folders, browser, tmp_path):
    """Browsers turn a photo by its EXIF orientation, Pillow (and so zoo.runtime and the training data) does not:
    the page resets it, previews the stored pixels, says so, and answers as zoo.runtime."""
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((40, 100, 3)) * 255).astype(np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6   # rotate 90 degrees clockwise to display
    path = tmp_path / "turned.jpg"
    image.save(path, exif=exif, quality=95)
    folder = folders["clouds-cnn"]
    tab = browser(folder)
    page = classify_file(tab, path)
    with rt.load(folder) as session:
        (python,) = session.classify([str(path)], top_k=len(page))
    assert_same_classes(page, python["logits"], _rawparity.MAX_PROBABILITY_DIFFERENCE)
    size = tab.locator("img.preview").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [100, 40]   # as stored, not turned to 40x100
    assert "EXIF orientation 6 not applied" in tab.locator(".output .warning").text_content()
    tab.close()


def test_images_the_model_cannot_take_as_they_are_get_zoo_runtimes_warnings(folders, browser, tmp_path):
    """Partly transparent and 16-bit PNGs: warned about as zoo.runtime warns, saying how the browser differs."""
    photo = Image.open(SKY).convert("RGB")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    rgba.save(tmp_path / "rgba.png")
    Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)).save(tmp_path / "16.png")
    tab = browser(folders["clouds-cnn"])
    with rt.load(folders["clouds-cnn"]) as session:
        for name, expected in (("rgba.png", "transparent pixel(s): the alpha channel was dropped"),
                               ("16.png", "16-bit image: scaled to 8 bits")):
            python = []
            session.classify([str(tmp_path / name)], top_k=1, warnings=python)
            assert expected in " ".join(python[0])
            classify_file(tab, tmp_path / name)
            assert expected in tab.locator(".output .warning").text_content()
            tab.locator(".output").evaluate("box => box.replaceChildren()")
    tab.close()


def test_a_row_of_the_form_is_predicted_as_zoo_runtime_does(folders, browser):
    """insurance-mlp (regression; sex, smoker and region are categories): each golden row typed into the form,
    categories chosen from selects, numbers beside their training ranges; the value within the golden tolerance."""
    folder = folders["insurance-mlp"]
    cases = golden(folder)
    tab = browser(folder)
    with rt.load(folder) as session:
        pre = session.manifest.preprocess["features"]
        for column, (low, high) in pre.ranges.items():
            row = tab.locator(".field").filter(has=tab.get_by_label(column, exact=True))
            assert row.locator(".range").text_content() == f"training range {low:.4g} to {high:.4g}"
        for column, names in pre.categories.items():
            assert tab.get_by_label(column, exact=True).locator("option").all_text_contents() == list(names)
        assert "units of the training data" in tab.locator(".note").first.text_content()
        for case in cases["cases"]:
            row = case["inputs"]["features"]["row"]
            for column in pre.columns:
                value = next(v for k, v in row.items() if k.lower() == column.lower())
                field = tab.get_by_label(column, exact=True)
                if column in pre.categories:
                    field.select_option(next(n for n in pre.categories[column] if n.lower() == value.strip().lower()))
                else:
                    field.fill(value)
            tab.locator("form button").click()
            page = shown(tab)
            python = session.predict_raw({"features": [row]})["charges"][0]
            expected = case["expected"]["charges"]
            tolerance = cases["tolerance"]
            np.testing.assert_allclose([v for _, v in page], python, rtol=tolerance["rtol"], atol=tolerance["atol"])
            np.testing.assert_allclose(python, expected, rtol=tolerance["rtol"], atol=tolerance["atol"])
            tab.locator(".output").evaluate("box => box.replaceChildren()")
    tab.close()


def test_a_value_far_outside_its_training_range_gets_a_warning(folders, browser):
    folder = folders["insurance-mlp"]
    tab = browser(folder)
    with rt.load(folder) as session:
        pre = session.manifest.preprocess["features"]
    for column in pre.columns:
        if column not in pre.categories:
            tab.get_by_label(column, exact=True).fill(str(pre.ranges[column][1]))
    tab.get_by_label("age", exact=True).fill("500")
    tab.locator("form button").click()
    shown(tab)
    warnings = tab.locator(".output .warning").all_text_contents()
    assert len(warnings) == 1 and warnings[0].startswith("warning: age = 500 is outside the training range")
    tab.close()


def test_a_series_is_read_from_the_textarea_and_too_short_a_one_is_refused(folders, browser):
    folder = folders["electricity-lstm"]
    tab = browser(folder)
    with rt.load(folder) as session:
        window = session.manifest.preprocess["series"].window
        readings = np.sin(np.arange(window + 5) / 7).round(4)
        (output,) = session.manifest.outputs
        expected = session.predict_raw(readings.tolist())[output.name][0]
    tab.locator("textarea").fill(", ".join(map(str, readings[:window - 1])))
    tab.locator("form button").click()
    error = tab.locator(".output .error")
    error.wait_for(timeout=30_000)
    assert error.text_content() == f"error: series: at least {window} readings are needed, got {window - 1}"
    tab.locator("textarea").fill("\n".join(map(str, readings)))
    tab.locator("form button").click()
    np.testing.assert_allclose([v for _, v in shown(tab)], expected, rtol=1e-4, atol=1e-4)
    tab.close()


def test_markup_in_a_model_name_or_label_is_shown_as_text_and_never_runs(folders, browser):
    tab = browser(folders[HOSTILE])
    assert tab.locator("h1").text_content() == HOSTILE
    tab.get_by_label("x1", exact=True).fill("0.1")
    tab.get_by_label("x2", exact=True).fill("0.2")
    tab.locator("form button").click()
    assert sorted(label for label, _ in shown(tab)) == sorted(HOSTILE_LABELS)
    assert tab.locator(".output h3").text_content() == f"{HOSTILE_LABELS[0]} or {HOSTILE_LABELS[1]}?"
    assert tab.evaluate("window.hacked") is None and tab.locator("script").count() == 2
    tab.close()


def test_bad_files_get_a_clear_error_and_nothing_leaves_the_folder(folders, browser, tmp_path):
    """A file that is no image, and a PNG whose header claims more pixels than the page decodes (refused before it
    is decoded); every URL the browser asked for is in the folder (or a blob of the chosen file)."""
    folder = folders["clouds-cnn"]
    tab = browser(folder)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    tab.locator("input[type=file]").set_input_files(str(text))
    tab.locator("form button").click()
    error = tab.locator(".output .error")
    error.wait_for(timeout=30_000)
    assert error.text_content().startswith("error: cannot read image notes.png")
    huge = io.BytesIO()
    Image.new("L", (1, 1)).save(huge, format="PNG")
    data = bytearray(huge.getvalue())
    data[16:24] = (20_000).to_bytes(4, "big") + (20_000).to_bytes(4, "big")   # IHDR: 20000 x 20000
    (tmp_path / "huge.png").write_bytes(bytes(data))
    tab.locator("input[type=file]").set_input_files(str(tmp_path / "huge.png"))
    tab.locator("form button").click()
    tab.get_by_text("20000x20000 pixels, over the 50000000 this page decodes").wait_for(timeout=30_000)
    tab.close()
    inside = f"{browser.origin}/"
    outside = [u for u in browser.requests if not (u.startswith(inside) or u.startswith(f"blob:{inside}"))]
    assert browser.requests and not outside, outside


def test_a_server_that_sends_the_module_with_another_type_is_named(folders, browser):
    """Browsers refuse a JavaScript module sent as another type than text/javascript: the page says what to fix."""
    class Octets(Static):
        extensions_map = {**Static.extensions_map, ".mjs": "application/octet-stream"}

    folder = folders["clouds-cnn"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Octets, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tab = browser.context.new_page()
        tab.goto(f"http://127.0.0.1:{server.server_port}/")
        error = tab.locator("#engine.error")
        error.wait_for(timeout=60_000)
        assert "sends onnxruntime-web/ort.wasm.bundle.min.mjs as text/javascript" in error.text_content()
        assert tab.locator("form button").is_disabled()
        tab.close()
    finally:
        server.shutdown()
        other = f"http://127.0.0.1:{server.server_port}/"   # not the folder server the other tests check requests of
        browser.requests[:] = [u for u in browser.requests if other not in u]


# --- the folder: contents, integrity, onnxruntime-web's files -----------------------------------------------

def test_the_folder_holds_the_page_the_raw_model_and_onnxruntime_web(folders):
    folder = folders["clouds-cnn"]
    raw = folder.parent / "clouds-cnn-onnx-raw"
    manifest = json.loads((folder / "manifest.json").read_text())
    record = manifest["web"]
    assert set(record["files"]) == {"index.html", *(f"onnxruntime-web/{n}" for n in _ortweb.FILES)}
    assert record["onnxruntime_web"]["version"] == _ortweb.VERSION and record["onnxruntime_web"]["threads"] == 1
    raw_manifest = json.loads((raw / "manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k not in ("web", "file_sha256")} == \
        {k: v for k, v in raw_manifest.items() if k != "file_sha256"}
    import onnx

    web_graph, raw_graph = onnx.load(str(folder / "model.onnx")).graph, onnx.load(str(raw / "model.onnx")).graph
    assert web_graph == raw_graph   # the raw-input model; only its sealed manifest differs
    page = (folder / "index.html").read_text()
    assert "://" not in page   # nothing from outside the folder


def test_zoo_verify_checks_the_page_and_onnxruntime_web_files(folders, tmp_path):
    copy = tmp_path / "clouds-cnn-web"
    shutil.copytree(folders["clouds-cnn"], copy)
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 0, result.output
    assert "web page: 3 files (index.html, onnxruntime-web 1.31.1) match the sealed manifest's sha256 and zoo's pins" \
        in " ".join(result.output.split())
    page = copy / "index.html"
    page.write_text(page.read_text().replace("nothing you choose", "everything you choose"))
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and "index.html was changed after export" in " ".join(result.output.split())
    # the record is sealed: fixing its sha256 in manifest.json is caught too
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["web"]["files"]["index.html"] = _ortweb._sha256(page)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and "was edited after export: web" in " ".join(result.output.split())


def test_onnxruntime_web_from_a_tarball_or_a_folder_instead_of_npm(folders, tmp_path, monkeypatch):
    """`npm pack` made elsewhere, or a folder of its files: checked against the pins; a changed file is refused."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    subprocess.run(["npm", "pack", _ortweb.PACKAGE, "--silent"], cwd=tmp_path, check=True, capture_output=True,
                   timeout=600)
    (tarball,) = tmp_path.glob("*.tgz")
    files = _ortweb.files(tarball)
    assert {n: _ortweb._sha256(p) for n, p in files.items()} == _ortweb.FILES
    dist = tmp_path / "node_modules" / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name, path in files.items():
        shutil.copyfile(path, dist / name)
    assert _ortweb.files(tmp_path) == {n: dist / n for n in _ortweb.FILES}
    with open(dist / _ortweb.ENTRY, "a") as f:
        f.write("\n// changed")
    with pytest.raises(ZooError, match="is not onnxruntime-web@1.31.1's ort.wasm.bundle.min.mjs"):
        _ortweb.files(tmp_path)
    other = tmp_path / "other.tgz"
    shutil.copyfile(tarball, other)
    with open(other, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ZooError, match="is not the tarball of onnxruntime-web@1.31.1"):
        _ortweb.files(other)


def test_without_npm_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))   # no npm on it
    result = runner.invoke(app, ["export", "water-mlp", "--format", "web", "--random-weights", "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    assert "needs onnxruntime-web@1.31.1 and npm is not installed: install npm (Debian: apt-get install npm)" in line
    assert "--onnxruntime-web PATH" in line and not (tmp_path / "out" / "water-mlp-onnx").exists()


def test_an_unreachable_registry_is_named_with_npms_reason(tmp_path, monkeypatch):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (Debian: apt-get install npm)")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zoo"))
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm"))   # not the tarball npm may hold already
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")   # nothing listens there
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(ZooError) as error:
        _ortweb.files()
    assert str(error.value).startswith("`npm pack onnxruntime-web@1.31.1` failed (code ECONNREFUSED: ")
    assert "is the npm registry reachable? Or pass --onnxruntime-web PATH" in str(error.value)
    assert "\n" not in str(error.value)


def test_sizes_are_bounded_before_anything_is_read(tmp_path):
    """A tarball over 256 MiB and a page file over 64 MiB are refused by their size (sparse files: no disk used)."""
    from zoo.export import _web

    big = tmp_path / "big.tgz"
    with open(big, "wb") as f:
        f.truncate(_ortweb.MAX_TARBALL_BYTES + 1)
    with pytest.raises(ZooError, match="over the 268,435,456"):
        _ortweb.files(big)
    with open(tmp_path / "index.html", "wb") as f:
        f.truncate(_web.MAX_FILE_BYTES + 1)
    with pytest.raises(ZooError, match="index.html is over the 67,108,864 bytes"):
        _web.check(tmp_path, {"files": {"index.html": "0" * 64}})
    with pytest.raises(ZooError, match="not a file of a web folder"):
        _web.check(tmp_path, {"files": {"index.html": "0" * 64, "../manifest.json": "0" * 64}})
