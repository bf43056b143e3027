"""The README stays true: its Quickstart is a sequence of verbatim commands, CI runs the last one, every
registered dataset says where it comes from, and every Python and shell example in it runs here, in a sandbox
folder laid out as the repository root (examples/, hubconf.py; runs/ and bundles/ of its own), with `.venv`
standing for this checkout run by the test's Python. An example that needs what a test may not use (PyPI,
docker, a second machine, hours of training) is skipped with that reason, or run with a stated, smaller
equivalent; ../shared/tools/quickstart-check.sh also runs the Quickstart verbatim in a fresh clone."""

import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import free_port
from zoo import registry

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", TEXT, re.S | re.M)   # (language, code), in README order


def quickstart_commands():
    section = TEXT.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quickstart_steps_each_stand_alone_and_ci_runs_the_last():
    commands = quickstart_commands()
    assert len(commands) >= 2
    assert commands[0].startswith("python3 -m venv .venv") and "[train]" in commands[0]
    assert all(c.startswith((". .venv/bin/activate", "python3 -m venv .venv")) for c in commands)
    assert commands[-1] in (ROOT / ".ci" / "run").read_text()


def test_every_dataset_has_a_row_saying_where_it_comes_from():
    table = TEXT.split("| dataset | folder | formats read | source | models |", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines() if line.startswith("| `")}
    for dataset in registry.datasets():
        assert dataset.name in rows, dataset.name
        assert dataset.source in rows[dataset.name]


@dataclass(frozen=True)
class Example:
    """How one README example is checked. `key` is a line only that example has."""
    key: str
    skip: str = ""             # why it is not run here: the exception, each with its reason
    edits: tuple = ()          # (old, new) replacements: the smaller equivalent that runs, or a line skipped
    expect: str = ""           # what its output must show
    server: bool = False       # started in the background for the examples after it, stopped at the end


SKIPPED_LINE = "# skipped here:"   # a shell line turned into a comment that says why
EXAMPLES = [
    Example("python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[train]'",
            skip="installs from PyPI into a new .venv (minutes, network); quickstart-check.sh and CI (.ci/run) run "
                 "it verbatim; here .venv stands for this checkout"),
    Example(". .venv/bin/activate && zoo list && zoo train clouds-cnn",
            edits=(("zoo train clouds-cnn", "zoo train clouds-cnn --epochs 1"),),   # the sample recipe's 15: minutes
            expect="saved runs/clouds-cnn.safetensors"),
    Example(". .venv/bin/activate && zoo export --format all", expect="wrote bundles/clouds-cnn-pt2"),
    Example(". .venv/bin/activate && zoo predict bundles/clouds-cnn-onnx examples/images/sky.jpg",
            expect="clouds-cnn (onnxruntime on cpu)"),
    Example("pip install -e '.[train,serve,test]' && python -m pytest -q",
            skip="the whole test suite, this test included: CI runs it verbatim (.ci/run)"),
    Example('print(zoo.list_models("cifar2-*", pretrained=True))', expect="cifar2-netresdeep"),
    Example('torch.hub.load(".", "clouds_cnn", pretrained=True, source="local")'),
    Example("zoo train clouds-cnn --data ../shared/data/clouds",
            edits=(("--data ../shared/data/clouds", "--data {clouds_train} --epochs 1"),   # the built-in sample
                   ("path/to/clouds_test", "{clouds_test}"),
                   ("zoo train --all --data-root ../shared/data", f"{SKIPPED_LINE} trains all 25 models on the "
                    "real datasets (hours); tests/test_training.py trains each stage on the built-in samples")),
            expect='"plots"'),
    Example("zoo runs runs --model clouds-cnn --sort metric --plot curves.png",
            edits=(("tensorboard --logdir runs", f"{SKIPPED_LINE} TensorBoard serves a page until stopped; `zoo runs` "
                    "reads the same event files"),),
            expect="clouds-cnn"),
    Example("zoo train clouds-cnn --data /data/clouds --nproc 8 --nnodes 2 --node-rank 0",
            # both "machines" on this one, a process each, node 0 in the background, on the built-in sample
            edits=(("--data /data/clouds --nproc 8", "--data {clouds_train} --epochs 1 --nproc 1"),
                   ("10.0.0.1", "127.0.0.1"), ("--master-port 29500", "--master-port {master_port}"),
                   ("   # machine 0", " &   # machine 0"), ("   # machine 1", " && wait $!   # machine 1"))),
    Example('session = zoo.runtime.load("bundles/clouds-cnn-onnx", device="cpu")', expect="(2, 7)"),
    Example("zoo export clouds-cnn --format onnx --raw-inputs --out bundles/shipped", expect="preprocessing in the graph"),
    Example('bundle = "bundles/shipped/clouds-cnn-onnx-raw"', expect="test_data_set_0 ok"),
    Example("zoo serve clouds-cnn water-mlp            #",
            edits=(("pip install -e '.[serve]'", f"{SKIPPED_LINE} installs from PyPI; the test environment has "
                    "the serving extra"),
                   ("zoo serve clouds-cnn water-mlp", "exec zoo serve clouds-cnn water-mlp --port {port}")),
            server=True),
    Example('client = httpclient.InferenceServerClient("127.0.0.1:8000")',
            edits=(("127.0.0.1:8000", "127.0.0.1:{port}"),)),
    Example("curl --data-binary @examples/images/sky.jpg", edits=(("127.0.0.1:8000", "127.0.0.1:{port}"),),
            expect='"predictions"'),
    Example("docker run --rm --gpus=all",
            skip="needs docker, an NVIDIA GPU and NVIDIA's Triton container from nvcr.io; tests/test_serve.py checks "
                 "the repository `zoo export --format triton` writes"),
    Example("python3 -m venv .venv-triton && .venv-triton/bin/pip install -e '.[triton]'",
            skip="installs nvidia-pytriton from PyPI into a new environment (CI does, in .ci/run); "
                 "tests/test_serve_conformance.py runs `zoo serve --engine triton` against it"),
]


def _plan() -> list[tuple[str, str, Example]]:
    """Each README block with the one Example whose key it holds."""
    plan = []
    for language, code in BLOCKS:
        matches = [e for e in EXAMPLES if e.key in code]
        assert len(matches) == 1, f"README block needs exactly one entry in EXAMPLES, found {len(matches)}:\n{code}"
        plan.append((language, code, matches[0]))
    return plan


def test_every_readme_example_is_planned_and_skips_are_the_exception():
    plan = _plan()
    assert {e.key for _, _, e in plan} == {e.key for e in EXAMPLES}, "an entry of EXAMPLES matches no README block"
    assert {language for language, _, _ in plan} == {"bash", "python"}
    for _, code, example in plan:
        for old, _ in example.edits:
            assert old in code, f"edit {old!r} does not apply to:\n{code}"
    assert sum(bool(e.skip) for e in EXAMPLES) * 3 < len(EXAMPLES), "skipped examples must stay the exception"


def _sandbox(folder: Path) -> dict:
    """A folder laid out as the repository root, whose `.venv` runs this checkout; the environment to run in."""
    for name in ("examples", "hubconf.py"):
        (folder / name).symlink_to(ROOT / name)
    bin_dir = folder / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shims = {"zoo": f'exec "{sys.executable}" -m zoo.cli "$@"', "python": f'exec "{sys.executable}" "$@"'}
    for name, line in shims.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _command(language: str, code: str, folder: Path, index: int) -> list[str]:
    if language == "python":
        script = folder / f"example_{index}.py"
        script.write_text(code)
        return [sys.executable, str(script)]
    return ["bash", "-e", "-c", code]


def _wait_until_serving(process: subprocess.Popen, port: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"`zoo serve` of the README did not get ready (exit code {process.poll()})")


@pytest.mark.slow
def test_every_readme_example_runs(tmp_path):
    from zoo.data import builtin

    pytest.importorskip("tritonclient.http", reason="the serving example's client: pip install -e '.[test]'")
    values = {"clouds_train": builtin.materialize("clouds", "train"),
              "clouds_test": builtin.materialize("clouds", "test"), "port": free_port(), "master_port": free_port()}
    env = _sandbox(tmp_path)
    server = None
    try:
        for index, (language, code, example) in enumerate(_plan()):
            if example.skip:
                continue
            for old, new in example.edits:
                code = code.replace(old, new.format(**values))
            command = _command(language, code, tmp_path, index)
            if example.server:
                server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                _wait_until_serving(server, values["port"])
                continue
            result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"README example failed:\n{code}\n--- output:\n{output[-3000:]}"
            assert example.expect in output, f"README example lacks {example.expect!r}:\n{code}\n{output[-3000:]}"
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            assert server.wait(60) == 0, "zoo serve did not drain and exit 0 on SIGTERM"
