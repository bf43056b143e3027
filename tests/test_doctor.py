"""zoo doctor: the report on a machine without a GPU, the side-by-side ONNX Runtime install it flags (simulated),
and exit 1 when the device asked for cannot be used."""

import importlib.metadata
import json

import pytest
from typer.testing import CliRunner

import zoo.runtime as rt
from zoo.cli import app
from zoo.doctor import diagnose

runner = CliRunner()


def test_report_on_this_machine():
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1)
    cpu = next(p for p in report["onnxruntime"]["providers"] if p["provider"] == "CPUExecutionProvider")
    assert cpu["loads"] is True and report["onnxruntime"]["version"]
    assert report["threads"]["usable_cores"] == rt.default_threads()
    assert report["torch"]["installed"] and report["torch"]["version"].startswith("2.14")
    for provider in report["onnxruntime"]["providers"]:
        assert provider["loads"] or provider["error"], provider   # a provider that fails says why


def test_cuda_asked_for_on_a_machine_without_one_exits_1_with_the_reason():
    reason = rt.cuda_problem()
    if not reason:
        pytest.skip("CUDA is usable here")
    result = runner.invoke(app, ["doctor", "--device", "cuda"], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "problem: --device cuda: ONNX Runtime cannot run on CUDA here" in text
    assert reason in text


def test_onnxruntime_beside_onnxruntime_gpu_is_flagged_with_the_fix(monkeypatch):
    real = importlib.metadata.version

    def version(name):
        return "1.31.1" if name == "onnxruntime" else real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    report = diagnose()
    assert [d["name"] for d in report["onnxruntime_distributions"]] == ["onnxruntime", "onnxruntime-gpu"]
    (problem,) = report["problems"]
    assert "installed side by side" in problem["problem"] and "hides CUDA" in problem["problem"]
    assert problem["fix"] == "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "pip uninstall -y onnxruntime onnxruntime-gpu" in result.output
