"""Every web folder's own page (`zoo export --all --format web --out FOLDER`) in headless chromium, served by python's
http.server, fed the golden cases of its bundle through its form as a person would (the image file, the category,
the CSV row, the readings), against the answers the cases expect (zoo.runtime's at export): top-1 agreement and the
largest probability (or value) difference, per model.

    python benchmarks/web_golden.py FOLDER [--json FILE]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import tempfile
import threading
from pathlib import Path

from web_speed import CHROMIUM, FLAGS, Quiet


def fill(tab, folder: Path, inputs: dict) -> None:
    for name, entry in inputs.items():
        if "file" in entry:
            tab.locator(f"input[name='{name}']").set_input_files(str(folder / entry["file"]))
        elif "name" in entry:
            tab.locator(f"select[name='{name}']").select_option(entry["name"])
        elif "readings" in entry:
            tab.locator(f"textarea[name='{name}']").fill(" ".join(map(str, entry["readings"])))
        else:
            for column, value in entry["row"].items():
                field = tab.locator(f"[name='{column}']")
                if not field.count():   # a CSV column the model does not read
                    continue
                if field.evaluate("e => e.tagName") == "SELECT":
                    names = field.locator("option").all_text_contents()
                    field.select_option(next(n for n in names if n.lower() == value.strip().lower()))
                else:
                    field.fill(value)


def check(tab, folder: Path) -> dict:
    cases = json.loads((folder / "golden" / "cases.json").read_text())["cases"]
    worst, agree = 0.0, []
    for case in cases:
        fill(tab, folder, case["inputs"])
        tab.locator(".output").evaluate("box => box.replaceChildren()")
        tab.locator("form button").click()
        tab.locator(".output li, .output .error").first.wait_for(timeout=60_000)
        if tab.locator(".output .error").count():
            raise AssertionError(f"{folder.name}: {tab.locator('.output .error').text_content()}")
        for (output, expected), answer in zip(case["expected"].items(), tab.locator(".output ol").all()):
            items = answer.locator("li").all()
            if isinstance(expected[0], list):   # [[label, probability], ...]
                got = {i.locator(".label").text_content(): float(i.get_attribute("data-probability")) for i in items}
                agree.append(items[0].locator(".label").text_content() == expected[0][0])
                worst = max(worst, *(abs(got[label] - p) for label, p in expected))
            else:
                values = [float(i.get_attribute("data-value")) for i in items]
                worst = max(worst, *(abs(a - b) for a, b in zip(values, expected)))
    return {"cases": len(cases), "top1_agreement": sum(agree) / len(agree) if agree else None, "max_difference": worst}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(args.folder).resolve()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    result = {"command": f"python benchmarks/web_golden.py {args.folder}", "models": {}}
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=FLAGS)
        for folder in sorted(root.glob("*-web")):
            tab = context.new_page()
            tab.goto(f"http://127.0.0.1:{server.server_port}/{folder.name}/")
            tab.wait_for_selector("form button:enabled", timeout=120_000)
            result["models"][folder.name] = check(tab, folder)
            print(folder.name, json.dumps(result["models"][folder.name]), flush=True)
            tab.close()
        context.close()
    server.shutdown()
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
