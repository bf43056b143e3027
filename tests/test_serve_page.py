"""The page at / in a real headless browser (Debian's chromium, driven by Playwright): it lists the served models,
says what each tells apart, and a person can upload an image (and see it), or fill a form whose fields are
labelled with the ranges the training data covered, and read the answer under a plain title. Model names and
labels are data, never markup. Skipped, with the reason, where chromium or Playwright is not installed (CI
installs both)."""

from __future__ import annotations

import shutil
import tempfile

import pytest

import zoo.runtime as rt
from servers import HOSTILE, HOSTILE_LABELS, ROOT, Server, export_hostile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKY = ROOT / "examples" / "images" / "sky.jpg"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"),
              pytest.mark.slow]   # a real headless browser


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    """water-mlp with its shipped weights: its card holds the training ranges of each feature."""
    from zoo.export import export

    (path,) = export("water-mlp", ["onnx"], out=tmp_path_factory.mktemp("water"))
    return path


@pytest.fixture(scope="module")
def page(bundle, water, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    folder = tmp_path_factory.mktemp("page")
    hostile = export_hostile(folder)
    server = Server([bundle("clouds-cnn"), water, hostile], "zoo", ["--threads", "1"], folder / "server.log")
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as playwright:
        # a persistent context: Playwright passes our --user-data-dir profile folder to chromium
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=FLAGS)
        tab = context.new_page()
        tab.goto(f"{server.http}/")
        yield tab
        context.close()
    assert server.stop() == 0, server.log_tail()


def test_the_page_lists_the_served_models_and_what_each_tells_apart(page):
    assert page.locator("section h2").all_text_contents() == ["clouds-cnn", "water-mlp", HOSTILE]
    assert "one of 7 (cirriform clouds, clear sky" in page.locator("#model-clouds-cnn .summary").text_content()
    assert page.locator("#model-water-mlp .summary").text_content() == "Tells apart not potable or potable."


def test_markup_in_a_model_name_or_label_is_shown_as_text_and_never_runs(page):
    """A name with `<!--<script>` used to blank the whole page (the JSON embed opened a comment)."""
    section = page.locator("section").nth(2)
    assert section.locator("h2").text_content() == HOSTILE
    section.locator("input[name=x1]").fill("0.1")
    section.locator("input[name=x2]").fill("0.2")
    section.get_by_role("button", name="Classify").click()
    labels = section.locator(".output .label")
    labels.first.wait_for(timeout=30_000)
    assert sorted(labels.all_text_contents()) == sorted(HOSTILE_LABELS)
    assert section.locator(".output h3").text_content() == f"{HOSTILE_LABELS[0]} or {HOSTILE_LABELS[1]}?"
    assert page.evaluate("window.hacked") is None and page.locator("script").count() == 2


def test_uploading_an_image_shows_the_top_labels(page, bundle):
    with rt.load(bundle("clouds-cnn"), threads=1) as session:
        expected = session.classify(str(SKY), top_k=3)[0]["logits"]
    section = page.locator("#model-clouds-cnn")
    section.locator("input[type=file]").set_input_files(str(SKY))
    preview = section.locator("img.preview")
    preview.wait_for(state="visible", timeout=10_000)
    assert preview.evaluate("img => img.complete && img.naturalWidth") > 0   # the chosen image, decoded
    section.get_by_role("button", name="Classify").click()
    labels = section.locator(".output .label")
    labels.first.wait_for(timeout=30_000)
    assert labels.all_text_contents() == [label for label, _ in expected]
    assert f"{expected[0][1]:.3f}" in section.locator(".output li").first.text_content()
    assert section.locator(".output h3").text_content() == "The most likely of 7 classes"   # not "logits"


def test_the_tabular_form_is_labelled_with_training_ranges_and_classifies_a_row(page, water):
    """Each field found by its label, the range the training data covered beside it, a note on the scale the
    data was on (the water features are 0-1), and a binary model shows both classes with no top-k box."""
    with rt.load(water, threads=1) as session:
        pre = session.manifest.preprocess["features"]
        expected = session.classify({c: 0.5 for c in pre.columns}, top_k=2)[0]["probability"]
    section = page.locator("#model-water-mlp")
    for column in pre.columns:
        section.get_by_label(column, exact=True).fill("0.5")
        low, high = pre.ranges[column]
        row = section.locator(".field").filter(has=page.get_by_label(column, exact=True))
        assert row.locator(".range").text_content() == f"training range {low:.4g} to {high:.4g}"
    assert "lies between 0 and 1" in section.locator(".note").text_content()
    assert section.locator("input[name=top_k]").count() == 0
    section.get_by_role("button", name="Classify").click()
    labels = section.locator(".output .label")
    labels.first.wait_for(timeout=30_000)
    assert labels.all_text_contents() == [label for label, _ in expected]
    assert section.locator(".output h3").text_content() == "not potable or potable?"


def test_a_file_that_is_not_an_image_shows_the_error(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    section = page.locator("#model-clouds-cnn")
    section.locator("input[type=file]").set_input_files(str(bad))
    section.get_by_role("button", name="Classify").click()
    error = section.locator(".output .error")
    error.wait_for(timeout=30_000)
    assert "error 400" in error.text_content() and "cannot read image" in error.text_content()
