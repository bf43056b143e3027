"""zoo bench: one row per backend x device x batch, eager as the baseline, unavailable devices skipped."""

import json

import pytest
from typer.testing import CliRunner

from zoo.cli import app
from zoo.errors import ZooError
from zoo import bench

ROW_KEYS = {"backend", "precision", "device", "batch", "size_mb", "session_ms", "import_ms", "first_ms", "iters",
            "mean_ms", "p50_ms", "p90_ms", "p99_ms", "cv", "unstable", "throughput_per_s", "peak_rss_mb", "gpu_mb",
            "speedup_vs_eager", "speedup_vs_fp32"}


@pytest.fixture(scope="module")
def clouds_bundle(bundle):
    return bundle("clouds-cnn")


def test_bench_reports_every_cell_and_skips_cuda_with_a_reason(clouds_bundle, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(clouds_bundle), "--backend", "onnxruntime,eager",
                                      "--device", "cpu,cuda", "--batch", "1,3", "--iters", "4", "--warmup", "1",
                                      "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["model"] == "clouds-cnn" and data["threads"] == 1 and data["weights"] == "random"
    cpu = [(r["backend"], r["batch"]) for r in data["rows"] if r["device"] == "cpu"]
    assert cpu == [("onnxruntime", 1), ("onnxruntime", 3), ("eager", 1), ("eager", 3)]
    for row in data["rows"]:
        assert set(row) == ROW_KEYS
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["iters"] == 4 and row["peak_rss_mb"] > 0
        assert row["throughput_per_s"] == pytest.approx(row["batch"] / row["mean_ms"] * 1e3, rel=1e-2)
        expected = 1.0 if row["backend"] == "eager" else None
        assert row["speedup_vs_eager"] == expected or (expected is None and row["speedup_vs_eager"] > 0)
    ort_rss = max(r["peak_rss_mb"] for r in data["rows"] if r["backend"] == "onnxruntime")
    eager_rss = max(r["peak_rss_mb"] for r in data["rows"] if r["backend"] == "eager")
    assert ort_rss < eager_rss  # the onnxruntime worker never imports torch
    cuda_rows = [r for r in data["rows"] if r["device"] == "cuda"]
    if not cuda_rows:
        skipped = {(s["backend"], s["device"]): s["reason"] for s in data["skipped"]}
        assert set(skipped) == {("onnxruntime", "cuda"), ("onnxruntime+iobinding", "cuda"), ("eager", "cuda")}
        assert all(reason for reason in skipped.values())
        assert "skipped eager on cuda" in result.stdout
    assert "1.00x" in result.stdout  # eager against itself


def test_bench_rejects_unknown_backends_and_bad_batches(clouds_bundle):
    with pytest.raises(ZooError, match="unknown backend/device \\['tensorrt'\\]"):
        bench.run(str(clouds_bundle), backends=("tensorrt",))
    result = CliRunner().invoke(app, ["bench", str(clouds_bundle), "--batch", "1,x"])
    assert result.exit_code == 2 and "--batch: expected comma-separated integers, got '1,x'" in result.output


def test_stats_flag_unstable_runs():
    steady = bench._stats([0.010] * 20, batch=8)
    assert steady["cv"] == 0 and not steady["unstable"] and steady["throughput_per_s"] == 800.0
    noisy = bench._stats([0.010] * 18 + [0.050, 0.090], batch=1)
    assert noisy["unstable"] and noisy["p99_ms"] > noisy["p50_ms"] == 10.0
