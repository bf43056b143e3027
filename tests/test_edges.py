"""At the edges: bundles of other weights are not replaced without a word, files a user added to a bundle
survive a re-export, a full disk is one line, CSVs from spreadsheets are read as training reads them, uneven
series are flagged, odd card fields and file names are one line, what the CLI prints cannot drive the
terminal, written files follow the umask, and verify finds the weights export found."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

import zoo.runtime as rt
from servers import Server
from zoo import registry
from zoo.cli import app
from zoo.errors import ZooError
from zoo.export import export
from zoo.weights import sha256_file, weights_dir

from conftest import edited_copy, one_line, zoo_serve

runner = CliRunner()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def own_weights(folder: Path, name: str = "circles-mlp", seed: int = 7, **card_fields) -> Path:
    """Weights of `name` that are not the shipped ones (another seed), with the shipped card's preprocessing,
    as `zoo train` writes them into runs/."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(registry.build(name, seed=seed).state_dict(), str(path))
    card = json.loads((weights_dir() / f"{name}.json").read_text())
    card.update({"sha256": sha256_file(path), **card_fields})
    (folder / f"{name}.json").write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """circles-mlp exported from the user's own weights in runs/ (zoo train's default), in <root>/bundles."""
    root = tmp_path_factory.mktemp("own")
    weights = own_weights(root / "runs")
    (bundle,) = export("circles-mlp", "onnx", weights=weights, out=root / "bundles")
    return root, weights, bundle


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- 1. a bundle of other weights is not replaced without a word ----------------------------------------------

@pytest.mark.parametrize("extra", [[], ["--format", "triton"]])
def test_export_refuses_to_replace_a_bundle_of_other_weights(exported, extra):
    root, weights, bundle = exported
    before = _snapshot(bundle)
    result = runner.invoke(app, ["export", "circles-mlp", *extra, "--out", str(root / "bundles")])
    text = one_line(result)
    assert result.exit_code == 2, text
    assert f"{bundle} holds an export of" in text and "not replacing it" in text
    assert "--replace" in text and "--out" in text and "parity" not in text   # refused before the work
    assert _snapshot(bundle) == before and not (root / "bundles" / "triton").exists()


def test_the_refusal_names_the_users_weights_found_in_runs(exported, monkeypatch):
    root, weights, bundle = exported
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["export", "circles-mlp", "--out", "bundles"])
    assert result.exit_code == 2 and "re-export those with --weights runs/circles-mlp.safetensors" in one_line(result)


def test_replace_replaces_and_the_same_weights_re_export_freely(tmp_path):
    weights = own_weights(tmp_path / "runs")
    (bundle,) = export("circles-mlp", "onnx", weights=weights, out=tmp_path)
    (again,) = export("circles-mlp", "onnx", weights=weights, out=tmp_path)   # same weights: no question asked
    assert again == bundle
    with pytest.raises(ZooError, match="not replacing it"):
        export("circles-mlp", "onnx", random_weights=True, out=tmp_path)
    result = export("circles-mlp", ["onnx", "torchscript"], random_weights=True, out=tmp_path, replace=True)
    assert rt.read_manifest(bundle).random_weights and result.notes == []


def test_an_export_says_which_bundles_beside_it_hold_other_weights(tmp_path):
    weights = own_weights(tmp_path / "runs")
    export("circles-mlp", "torchscript", weights=weights, out=tmp_path)
    notes = export("circles-mlp", "onnx", random_weights=True, out=tmp_path).notes
    assert notes == [f"{tmp_path / 'circles-mlp-torchscript'} beside it still holds {weights.name} (sha256 "
                     f"{sha256_file(weights)[:12]}…): re-export it (zoo bench compares only bundles of the same weights)"]


def test_bench_leaves_out_a_bundle_beside_it_of_other_weights(exported, bundle, tmp_path):
    root, weights, own = exported
    folder = tmp_path / "b"
    shutil.copytree(own, folder / "circles-mlp-onnx")
    shutil.copytree(bundle("circles-mlp"), folder / "circles-mlp-onnx-fp16")   # another model's weights (random)
    result = runner.invoke(app, ["bench", str(folder / "circles-mlp-onnx"), "--backend", "onnxruntime", "--device",
                                 "cpu", "--batch", "1", "--iters", "2", "--warmup", "0", "--precision", "fp32,fp16"])
    text = one_line(result)
    assert result.exit_code == 0, text
    assert "skipped onnxruntime fp16 on cpu:" in text and "was exported from other weights" in text
    assert "re-export it from the same weights to compare them" in text


def test_serve_by_name_says_when_the_bundle_is_not_of_the_shipped_weights(exported, monkeypatch):
    root, _, bundle = exported
    monkeypatch.chdir(root)
    result, served = zoo_serve(monkeypatch, "circles-mlp")
    assert result.exit_code == 0 and [s.manifest.bundle.resolve() for s in served] == [bundle.resolve()]
    err = one_line(result)
    assert "note: serving bundles/circles-mlp-onnx, exported from circles-mlp.safetensors (sha256" in err
    assert "not from the shipped weights" in err


# --- 2. files a user added to a bundle survive a re-export ------------------------------------------------------

def test_re_export_keeps_the_files_a_user_added_and_says_so(tmp_path):
    export("circles-mlp", "onnx", random_weights=True, out=tmp_path)
    bundle = tmp_path / "circles-mlp-onnx"
    (bundle / "notes.txt").write_text("calibrated on site B")
    (bundle / "docs").mkdir()
    (bundle / "docs" / "card.md").write_text("# ours")
    result = runner.invoke(app, ["export", "circles-mlp", "--random-weights", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (bundle / "notes.txt").read_text() == "calibrated on site B"
    assert (bundle / "docs" / "card.md").read_text() == "# ours"
    assert f"{bundle}: kept docs, notes.txt (not written by zoo)" in one_line(result)
    with rt.load(bundle):   # the new bundle is whole and verifies
        pass


def test_swap_carries_over_only_what_zoo_did_not_write(tmp_path):
    from zoo.outputs import staging_folder, swap_into_place

    target = tmp_path / "m-onnx"
    target.mkdir()
    for name, text in (("manifest.json", "old"), ("model.ts", "old zoo file"), ("notes.txt", "mine")):
        (target / name).write_text(text)
    staging = staging_folder(tmp_path, "m-onnx")
    (staging / "manifest.json").write_text("new")
    kept = swap_into_place(staging, target, lambda f: True, zoo_writes={"manifest.json", "model.ts"}.__contains__)
    assert kept == ["notes.txt"]
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "notes.txt"]
    assert (target / "manifest.json").read_text() == "new" and (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-onnx"]


# --- 3. a full disk is one line, and leaves nothing behind --------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs), mounted for the test: needs root (or CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip() or done.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> None:
    """Write until the filesystem is full."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx"])
def test_a_full_disk_during_export_is_one_line_for_every_format(small_disk, fmt):
    fill(small_disk)
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "export", "circles-mlp", "--random-weights", "--format",
                           fmt, "--out", str(small_disk)], capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]   # not 134 (abort) with a C++ frame dump
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: cannot write the circles-mlp {fmt} bundle in {small_disk}: No space left on device"]
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_a_full_disk_while_writing_the_manifest_keeps_the_old_bundle(small_disk, monkeypatch):
    from zoo.export import _manifest

    export("circles-mlp", "onnx", random_weights=True, out=small_disk)
    before = _snapshot(small_disk / "circles-mlp-onnx")
    write = _manifest.write

    def full_then_write(directory, manifest):
        fill(small_disk)
        write(directory, manifest)

    monkeypatch.setattr(_manifest, "write", full_then_write)
    result = runner.invoke(app, ["export", "circles-mlp", "--random-weights", "--out", str(small_disk)])
    assert result.exit_code == 2 and "No space left on device" in one_line(result)
    assert sorted(p.name for p in small_disk.iterdir()) == ["circles-mlp-onnx", "filler"]
    assert _snapshot(small_disk / "circles-mlp-onnx") == before


def test_a_full_disk_in_an_atomic_write_is_one_zoo_error(small_disk):
    from zoo.outputs import write_json

    fill(small_disk)
    with pytest.raises(ZooError, match=r"cannot write .*card.json: No space left on device"):
        write_json(small_disk / "card.json", {"values": list(range(10000))})
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


# --- 4. CSVs as spreadsheets save them: zoo predict, /classify and training read them alike ------------------------

WATER = ["ph", "Hardness", "Solids", "Chloramines", "Sulfate", "Conductivity", "Organic_carbon", "Trihalomethanes",
         "Turbidity"]
ROWS = [[0.1 * (i + j) % 1 for j in range(len(WATER))] for i in range(3)]


def water_csv(separator=",", bom=False, header=WATER, extra=(), decimal=".") -> bytes:
    lines = [separator.join(header + list(extra))]
    lines += [separator.join(f"{v:.3f}".replace(".", decimal) for v in [*row, *[1] * len(extra)]) for row in ROWS]
    return (b"\xef\xbb\xbf" if bom else b"") + ("\r\n".join(lines) + "\r\n").encode()


def test_predict_reads_an_excel_csv_with_a_byte_order_mark_and_semicolons(bundle, tmp_path):
    plain, bom, semi = tmp_path / "plain.csv", tmp_path / "excel.csv", tmp_path / "semi.csv"
    plain.write_bytes(water_csv())
    bom.write_bytes(water_csv(bom=True))
    semi.write_bytes(water_csv(";", bom=True))
    answers = []
    for path in (plain, bom, semi):
        result = runner.invoke(app, ["predict", str(bundle("water-mlp")), str(path), "--json"])
        assert result.exit_code == 0, result.output
        answers.append([r["outputs"] for r in json.loads(result.stdout)])
    assert answers[0] == answers[1] == answers[2] and len(answers[0]) == 3


@pytest.mark.parametrize("header, message", [
    (WATER[:3] + ["ph"] + WATER[4:], "column 'ph' appears twice in the header (columns 1 and 4)"),
    (WATER + ["PH"], "column 'ph' appears twice in the header (columns 1 and 10 as 'PH'"),
])
def test_predict_refuses_a_repeated_column_naming_it(bundle, tmp_path, header, message):
    path = tmp_path / "dup.csv"
    path.write_bytes(water_csv(header=header[:len(WATER)], extra=header[len(WATER):]))
    result = runner.invoke(app, ["predict", str(bundle("water-mlp")), str(path)])
    assert result.exit_code == 2 and message in one_line(result)


def test_a_decimal_comma_is_explained(bundle, tmp_path):
    path = tmp_path / "comma.csv"
    path.write_bytes(water_csv(";", decimal=","))
    result = runner.invoke(app, ["predict", str(bundle("water-mlp")), str(path)])
    assert result.exit_code == 2 and "a decimal comma? write numbers with a point" in one_line(result)


def test_classify_reads_csv_bodies_as_predict_does(bundle, tmp_path):
    import urllib.error
    import urllib.request

    server = Server([bundle("water-mlp")], "zoo", ["--threads", "1"], tmp_path / "server.log")
    try:
        def post(body: bytes) -> tuple[int, dict]:
            request = urllib.request.Request(f"{server.http}/v2/models/water-mlp/classify", data=body,
                                             headers={"Content-Type": "text/csv"})
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        plain = post(water_csv())
        assert plain[0] == 200
        assert post(water_csv(bom=True)) == plain and post(water_csv(";", bom=True)) == plain
        code, answer = post(water_csv(header=WATER[:3] + ["ph"] + WATER[4:]))
        assert code == 400 and "column 'ph' appears twice" in answer["error"]
    finally:
        assert server.stop() == 0, server.log_tail()


@pytest.mark.parametrize("data, message", [
    (water_csv(bom=True, extra=["Potability"]), None),
    (water_csv(";", extra=["Potability"]), None),
    (water_csv(header=WATER[:3] + ["ph"] + WATER[4:], extra=["Potability"]), "column 'ph' appears twice in the header"),
])
def test_training_reads_the_same_csvs_the_same_way(tmp_path, data, message):
    from zoo.data import DataError
    from zoo.data.tabular import read_rows

    path = tmp_path / "water.csv"
    path.write_bytes(data)
    if message:
        with pytest.raises(DataError, match=message):
            read_rows(path, [*WATER, "Potability"], "water potability")
    else:
        rows, lines, dropped, _ = read_rows(path, [*WATER, "Potability"], "water potability")
        assert len(rows) == 3 and lines == [2, 3, 4] and rows[1]["Hardness"] == f"{ROWS[1][1]:.3f}"


def electricity_csv(stamps, separator=",", bom=False, header=("timestamp", "consumption")) -> bytes:
    lines = [separator.join(header)] + [f"{str(s).replace('T', ' ')}{separator}{np.sin(i / 7):.5f}"
                                        for i, s in enumerate(stamps)]
    return (b"\xef\xbb\xbf" if bom else b"") + ("\n".join(lines) + "\n").encode()


def steps(n: int, minutes: int = 15, start="2024-01-01T00:15") -> np.ndarray:
    return np.datetime64(start) + np.arange(n) * np.timedelta64(minutes, "m")


def test_the_series_reader_of_training_takes_bom_and_semicolons_and_refuses_repeats(tmp_path):
    from zoo.data import DataError
    from zoo.data.series import load_electricity

    spec = registry.get("electricity-gru")
    path = tmp_path / "e.csv"
    for data in (electricity_csv(steps(200), ";"), electricity_csv(steps(200), bom=True)):
        path.write_bytes(data)
        assert len(load_electricity(spec, path, "train")) == 200 - 96
    path.write_bytes(electricity_csv(steps(200), header=("timestamp", "consumption", "Consumption")))
    with pytest.raises(DataError, match="column 'consumption' appears twice"):
        load_electricity(spec, path, "train")


# --- 5. series with gaps or repeated timestamps ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def gru(bundle):
    with rt.load(bundle("electricity-gru"), threads=1) as session:
        yield session


def test_an_even_series_has_no_warning(gru, tmp_path):
    path = tmp_path / "even.csv"
    path.write_bytes(electricity_csv(steps(150)))
    (result,) = rt.predict_files(gru, [path])
    assert result["warnings"] == []


def test_a_gap_in_the_window_is_a_warning_and_strict_refuses_it(gru, tmp_path):
    stamps = np.delete(steps(150), [120, 121, 122])   # 45 minutes missing, inside the last 96 readings
    path = tmp_path / "gap.csv"
    path.write_bytes(electricity_csv(stamps))
    (result,) = rt.predict_files(gru, [path])
    assert result["warnings"] == ["the last 96 readings (the model's window) are unevenly spaced: readings every "
                                  "0:15:00, but 1 gap(s) (the longest 1:00:00 after 2024-01-02 06:00:00); the model "
                                  "was trained on evenly spaced readings"]
    with pytest.raises(ValueError, match="gap.csv: the last 96 readings"):
        rt.predict_files(gru, [path], strict=True)
    result = runner.invoke(app, ["predict", str(gru.manifest.bundle), str(path)])
    assert result.exit_code == 0 and "warning: gap.csv: next value after 147 readings: the last 96" in one_line(result)


def test_a_repeated_timestamp_is_a_warning_but_one_before_the_window_is_not(gru, tmp_path):
    stamps = steps(150)
    path = tmp_path / "repeat.csv"
    path.write_bytes(electricity_csv(np.insert(stamps, 140, stamps[140])))
    (result,) = rt.predict_files(gru, [path])
    assert "1 repeated timestamp(s) (first 2024-01-02 11:15:00)" in result["warnings"][0]
    path.write_bytes(electricity_csv(np.insert(stamps, 10, stamps[10])))   # long before the window
    assert rt.predict_files(gru, [path])[0]["warnings"] == []


def test_the_step_is_the_datas_own_not_fifteen_minutes(gru, tmp_path):
    """Hourly readings are even; training notes and predict agree, and a gap is judged against the hour."""
    from zoo.data.series import load_electricity

    path = tmp_path / "hourly.csv"
    path.write_bytes(electricity_csv(steps(200, minutes=60)))
    assert rt.predict_files(gru, [path])[0]["warnings"] == []
    assert load_electricity(registry.get("electricity-gru"), path, "train").notes == []
    path.write_bytes(electricity_csv(np.delete(steps(200, minutes=60), [50])))
    (note,) = load_electricity(registry.get("electricity-gru"), path, "train").notes
    assert note.startswith("hourly.csv: the readings are unevenly spaced: readings every 1:00:00, but 1 gap(s)")


# --- 6. odd card fields and file names: one line ----------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("sha256", 12345), ("sha256", "not-a-digest"), ("model", ["circles-mlp"]), ("preprocess", "none"),
    ("metrics", [0.9]), ("metrics", {"val": 0.9}), ("caveat", {"text": "x"}), ("monitor", 3),
])
def test_a_card_field_of_the_wrong_type_is_one_line(tmp_path, field, value):
    weights = own_weights(tmp_path, **{field: value})
    result = runner.invoke(app, ["export", "circles-mlp", "--weights", str(weights), "--out", str(tmp_path / "b")])
    text = one_line(result)
    assert result.exit_code == 2 and f"weights card {tmp_path / 'circles-mlp.json'}: `{field}` must be" in text


@pytest.mark.parametrize("option", [["--atol", "nan"], ["--rtol", "inf"], ["--max-drop", "nan"],
                                    ["--max-mse-increase", "inf"]])
def test_tolerances_and_budgets_that_would_pass_anything_are_refused(tmp_path, option):
    result = runner.invoke(app, ["export", "circles-mlp", "--random-weights", "--out", str(tmp_path), *option])
    text = one_line(result)
    assert result.exit_code == 2, text
    assert "must be finite numbers >= 0" in text or "must be a finite number >= 0" in text
    assert not (tmp_path / "circles-mlp-onnx").exists()


LONG = "n" * 300


@pytest.mark.parametrize("args", [
    ["predict", "{bundle}", f"{LONG}.csv"],
    ["predict", f"{LONG}", "x.csv"],
    ["export", "circles-mlp", "--random-weights", "--out", f"{{tmp}}/{LONG}"],
    ["export", "circles-mlp", "--weights", f"{LONG}.safetensors"],
    ["export", "circles-mlp", "--random-weights", "--data", LONG, "--out", "{tmp}"],
    ["bench", "circles-mlp", "--json", f"{{tmp}}/{LONG}.json"],
    ["verify", LONG],
    ["verify", "{own}", "--weights", LONG],
    ["evaluate", "circles-mlp", "--out", f"{{tmp}}/{LONG}"],
])
def test_a_file_name_longer_than_the_filesystem_allows_is_one_line(bundle, exported, tmp_path, args):
    folder = str(bundle("circles-mlp"))
    result = runner.invoke(app, [a.format(bundle=folder, own=exported[2], tmp=tmp_path) for a in args])
    text = one_line(result)
    assert result.exit_code == 2 and "File name too long" in text, text
    assert "parity" not in text and "iters" not in text


# --- 7. what the CLI prints cannot drive the terminal -------------------------------------------------------

def test_markup_and_control_characters_in_file_names_are_shown_not_obeyed(bundle, tmp_path):
    names = ["[bold]sky.png", "red\x1b[31mflag.png"]
    for name in names:
        Image.new("RGB", (40, 30), (20, 120, 220)).save(tmp_path / name)
    result = runner.invoke(app, ["predict", str(bundle("clouds-cnn")), *(str(tmp_path / n) for n in names)],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "[bold]sky.png" in result.output
    assert "\x1b" not in result.output and "red\\x1b[31mflag.png" in result.output
    missing = runner.invoke(app, ["predict", str(bundle("clouds-cnn")), str(tmp_path / "t\x1b]0;pwned\x07.png")])
    assert missing.exit_code == 2 and "\x1b" not in missing.output and "\x07" not in missing.output
    assert "t\\x1b]0;pwned\\x07.png does not exist" in one_line(missing)


def test_labels_from_a_manifest_are_shown_not_obeyed(bundle, tmp_path):
    folder = tmp_path / "edited"
    edited_copy(bundle("water-mlp"), folder, lambda m: m["labels"].update(probability=["[blink]not potable",
                                                                                   "potable\x1b[2J"]))
    path = tmp_path / "rows.csv"
    path.write_bytes(water_csv())
    result = runner.invoke(app, ["predict", str(folder), str(path), "--no-verify"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "potable\\x1b[2J" in result.output and "[blink]not potable" in result.output


# --- 8. written files follow the umask ---------------------------------------------------------------------------

@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_writes_and_staging_folders_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    from zoo.outputs import atomic_write, staging_folder, write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "card.json", {"a": 1})
        atomic_write(tmp_path / "w.bin", lambda tmp: tmp.write_bytes(b"x"))
        folder = staging_folder(tmp_path, "m-onnx")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "card.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "w.bin").stat().st_mode) == file_mode
    assert stat.S_IMODE(folder.stat().st_mode) == folder_mode


def test_trained_weights_cards_and_histories_are_readable_by_others(tmp_path):
    import zoo

    old = os.umask(0o022)
    try:
        zoo.train("circles-mlp", out=tmp_path, epochs=1)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes


# --- 9. verify finds the weights where export found them ----------------------------------------------------------

def test_verify_finds_the_runs_weights_a_bundle_came_from(exported, monkeypatch):
    root, weights, bundle = exported
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["verify", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "parity passed" in one_line(result)
    data = json.loads(runner.invoke(app, ["verify", str(bundle), "--json"]).stdout)
    assert Path(data["weights"]).resolve() == weights.resolve()
    monkeypatch.chdir(root / "runs")   # neither runs/ nor the shipped weights hold them from here
    result = runner.invoke(app, ["verify", str(bundle)])
    assert result.exit_code == 2 and "nor in runs/: pass them with --weights PATH" in one_line(result)


def test_bench_baseline_finds_the_runs_weights_too(exported, monkeypatch):
    from zoo.bench import _eager_weights

    root, weights, bundle = exported
    monkeypatch.chdir(root)
    path, label = _eager_weights("circles-mlp", rt.read_manifest(bundle).weights)
    assert Path(path).resolve() == weights.resolve() and "the bundle's source weights" in label
