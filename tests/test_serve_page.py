"""The page at / in a real headless browser (Debian's chromium, driven by Playwright): it lists the served models,
and a person can upload an image or fill a tabular form and read the top labels. Skipped, with the reason, where
chromium or Playwright is not installed (CI installs both)."""

from __future__ import annotations

import shutil
import tempfile

import pytest

import zoo.runtime as rt
from servers import ROOT, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKY = ROOT / "examples" / "images" / "sky.jpg"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def page(bundle, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    server = Server([bundle("clouds-cnn"), bundle("water-mlp")], "zoo", ["--threads", "1"],
                    tmp_path_factory.mktemp("page") / "server.log")
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as playwright:
        # a persistent context: Playwright passes our --user-data-dir profile folder to chromium
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=FLAGS)
        tab = context.new_page()
        tab.goto(f"{server.http}/")
        yield tab
        context.close()
    assert server.stop() == 0, server.log_tail()


def test_the_page_lists_the_served_models(page):
    assert page.locator("section h2").all_text_contents() == ["clouds-cnn", "water-mlp"]


def test_uploading_an_image_shows_the_top_labels(page, bundle):
    with rt.load(bundle("clouds-cnn"), threads=1) as session:
        expected = session.classify(str(SKY), top_k=3)[0]["logits"]
    section = page.locator("#model-clouds-cnn")
    section.locator("input[type=file]").set_input_files(str(SKY))
    section.get_by_role("button", name="Classify").click()
    labels = section.locator(".output .label")
    labels.first.wait_for(timeout=30_000)
    assert labels.all_text_contents() == [label for label, _ in expected]
    assert f"{expected[0][1]:.3f}" in section.locator(".output li").first.text_content()


def test_the_tabular_form_classifies_a_row(page, bundle):
    with rt.load(bundle("water-mlp"), threads=1) as session:
        columns = session.manifest.preprocess["features"].columns
        expected = session.classify({c: 0.5 for c in columns}, top_k=2)[0]["probability"]
    section = page.locator("#model-water-mlp")
    for column in columns:
        section.locator(f"input[name='{column}']").fill("0.5")
    section.locator("input[name=top_k]").fill("2")
    section.get_by_role("button", name="Classify").click()
    labels = section.locator(".output .label")
    labels.first.wait_for(timeout=30_000)
    assert labels.all_text_contents() == [label for label, _ in expected]


def test_a_file_that_is_not_an_image_shows_the_error(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    section = page.locator("#model-clouds-cnn")
    section.locator("input[type=file]").set_input_files(str(bad))
    section.get_by_role("button", name="Classify").click()
    error = section.locator(".output .error")
    error.wait_for(timeout=30_000)
    assert "error 400" in error.text_content() and "cannot read image" in error.text_content()
