"""First contact, without dead ends: `zoo --version`, help that reads as it parses, arguments checked before torch
is imported, one "interrupted" on Ctrl-C, a spinner for `zoo doctor` on a terminal only, `zoo evaluate` writing
into runs/ and warning about scoring weights on their own training data, and series CSVs on /classify."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from typer.testing import CliRunner

import zoo
import zoo.runtime as rt
from servers import ROOT, Server
from zoo.cli import app

from conftest import one_line

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"zoo {zoo.__version__}"


@pytest.mark.parametrize("command", ["train", "export", "predict", "serve", "evaluate"])
def test_flags_read_as_plain_flags_in_help(command):
    """typer shows `--replace-shipped <bool>`, as if the flag took a value; here a flag has no type."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "--help " in result.output
    assert "<str>" in result.output or "<int>" in result.output   # options that take a value still say which


PROBE = """
import sys, zoo.cli
sys.argv = ["zoo", *sys.argv[1:]]
try:
    zoo.cli.main()
except SystemExit as e:
    print("exit", e.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize("args, message", [
    (["train", "x", "--data", "nope"], "unknown model 'x'"),
    (["train", "clouds-cnn", "--data", "nope"], "--data nope: no such file or folder"),
    (["train", "--all", "--data-root", "nope"], "--data-root nope: no such folder"),
    (["evaluate", "clouds-cnn", "--data", "nope"], "--data nope: no such file or folder"),
    (["evaluate", "clouds-cnn", "--weights", "nope.safetensors"], "weights file nope.safetensors does not exist"),
    (["export", "clouds-cnn", "--data", "nope"], "--data nope: no such file or folder"),
    (["verify", "{onnx}", "--data", "nope"], "--data nope: no such file or folder"),
    (["predict", "{torchscript}", "nope.jpg"], "input file nope.jpg does not exist"),
    (["bench", "nosuch"], "unknown model 'nosuch'"),
])
def test_arguments_are_checked_before_torch_is_imported(args, message, bundle, tmp_path):
    """A typo costs a second, not the 6-12 s of importing torch (a TorchScript bundle's too)."""
    paths = {"onnx": bundle("water-mlp"), "torchscript": bundle("water-mlp", "torchscript")}
    args = [a.format(**paths) for a in args]
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert one_line(result.stdout).endswith("exit 2 False"), result.stdout + result.stderr
    assert message in one_line(result.stderr)


def test_predict_help_says_torch_bundles_start_slower():
    result = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert "TorchScript and pt2 bundles import torch first" in one_line(result.output)
    assert "folders of images" in one_line(result.output)


@pytest.mark.slow
def test_ctrl_c_in_training_says_interrupted_once(tmp_path):
    """The trainer says "interrupted: ... --resume continues" and the command used to add its own line."""
    process = subprocess.Popen([sys.executable, "-m", "zoo.cli", "train", "clouds-cnn", "--out", str(tmp_path),
                                "--epochs", "50"], stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("epoch   1"):
            process.send_signal(signal.SIGINT)
            break
    rest = process.communicate(timeout=120)[1]
    said = [line for line in "".join(lines).splitlines() + rest.splitlines() if line.startswith("interrupted")]
    assert process.returncode == 130
    assert len(said) == 1 and "--resume" in one_line(rest), rest


def test_doctor_shows_a_spinner_naming_the_probe_on_a_terminal_only():
    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "zoo.cli", "doctor"], stdin=slave, stdout=slave, stderr=slave,
                               cwd=ROOT, env={**os.environ, "TERM": "xterm", "COLUMNS": "120"})
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:   # the terminal closed: the process is done
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert process.wait(60) in (0, 1)
    assert b"zoo doctor: starting a session on each ONNX Runtime provider" in seen
    assert b"zoo doctor: importing torch" in seen
    piped = runner.invoke(app, ["doctor"])   # not a terminal: no spinner frames, only the report
    assert "zoo doctor:" not in piped.output and "providers compiled in" in piped.output


def test_evaluate_writes_into_runs_and_warns_when_scoring_the_training_data(tmp_path, monkeypatch):
    from zoo.data import builtin

    zoo.train("circles-mlp", None, out=tmp_path / "trained", epochs=2)
    weights = str(tmp_path / "trained" / "circles-mlp.safetensors")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["evaluate", "circles-mlp", "--weights", weights,
                                 "--data", str(builtin.materialize("circles", "train"))])
    text = one_line(result.output)
    assert result.exit_code == 0, result.output
    assert "warning: circles-mlp.safetensors was trained on this very data" in text
    assert "wrote runs/circles-mlp.test-confusion.png" in text
    assert (tmp_path / "runs" / "circles-mlp.test-confusion.png").is_file()
    held_out = runner.invoke(app, ["evaluate", "circles-mlp", "--weights", weights, "--json"])
    assert held_out.exit_code == 0 and json.loads(held_out.stdout)["warnings"] == []


def test_a_series_csv_is_classified_as_zoo_predict_reads_it(bundle, tmp_path):
    """/classify takes a series model's CSV (its column, an optional timestamp column in any row order) and
    answers what `zoo predict` answers for the same file."""
    start = np.datetime64("2024-01-01T00:00")
    rows = [(str(start + np.timedelta64(15 * i, "m")).replace("T", " "), round(float(np.sin(i / 7)), 4))
            for i in range(120)]
    ordered = tmp_path / "ordered.csv"
    ordered.write_text("timestamp,consumption\n" + "".join(f"{t},{v}\n" for t, v in rows))
    shuffled = "timestamp,consumption\n" + "".join(f"{t},{v}\n" for t, v in rows[::-1])
    plain = "consumption\n" + "".join(f"{v}\n" for _, v in rows)
    path = bundle("electricity-gru")
    with rt.load(path, threads=1) as session:
        expected = rt.predict_files(session, [ordered])[0]["outputs"]["next_value"]
    server = Server([path], "zoo", ["--threads", "1"], tmp_path / "server.log")
    try:
        for body in (shuffled, plain):
            request = urllib.request.Request(f"{server.http}/v2/models/electricity-gru/classify", data=body.encode(),
                                             headers={"Content-Type": "text/csv"})
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
            np.testing.assert_allclose(answer["predictions"][0]["outputs"]["next_value"], expected, rtol=1e-6)
        request = urllib.request.Request(f"{server.http}/v2/models/electricity-gru/classify",
                                         data=b"timestamp,reading\n2024-01-01,1\n",
                                         headers={"Content-Type": "text/csv"})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=60)
        assert error.value.code == 400 and "has no column 'consumption'" in json.loads(error.value.read())["error"]
    finally:
        assert server.stop() == 0, server.log_tail()
