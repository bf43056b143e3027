"""Shared fixtures and the helpers several test modules use (one home each)."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest


class BundleCache:
    """make(name, fmt) -> a random-weights bundle folder written by zoo.export, exported once per cache.

    family(name) exports the model once in every format and every precision (each a bundle beside the others
    in a folder of its own); make(name, fmt) then answers from it instead of exporting again."""

    def __init__(self, root: Path):
        self.root, self.made, self.families = root, {}, {}

    def __call__(self, name: str, fmt: str = "onnx") -> Path:
        if (name, fmt) not in self.made:
            from zoo.export import export

            (self.made[name, fmt],) = export(name, formats=(fmt,), random_weights=True, out=self.root)
        return self.made[name, fmt]

    def family(self, name: str) -> tuple[Path, list[Path], list]:
        """(its folder, the bundles written, the Outcomes of the reduced precisions refused)."""
        if name not in self.families:
            from zoo.export import export

            folder = self.root / "families" / name
            result = export(name, "all", random_weights=True, out=folder, precisions="all", check=False)
            self.families[name] = folder, result.bundles, result.refused
            for fmt in ("onnx", "torchscript", "pt2"):
                self.made.setdefault((name, fmt), folder / f"{name}-{fmt}")
        return self.families[name]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """Random-weights bundles, exported once per test session and shared by the test modules."""
    return BundleCache(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def water_run(tmp_path_factory):
    """water-mlp trained for one epoch on the built-in sample (its card holds fitted statistics and training
    ranges), and its ONNX bundle: (the run folder, the card, the bundle). Read it; copy it to change it."""
    import zoo
    from zoo.export import export

    root = tmp_path_factory.mktemp("water-run")
    card = zoo.train("water-mlp", out=root, epochs=1)
    (bundle,) = export("water-mlp", "onnx", weights=root / "water-mlp.safetensors", out=root / "bundles")
    return root, card, bundle


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """Built-in samples are written to a cache of this test session, never a stale shared one."""
    os.environ["ZOO_CACHE"] = str(tmp_path_factory.mktemp("zoo-cache"))
    yield


@pytest.fixture(autouse=True)
def _few_threads():
    # 2, or OMP_NUM_THREADS where set: on a busy machine, OpenMP threads waiting for each other on the
    # many tiny ops of a recurrent model make a 1-minute test take half an hour
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    yield


# --- helpers ----------------------------------------------------------------------------------------------

def one_line(result, forbid: tuple = ()) -> str:
    """What a command printed, folded to one line (rich wraps long lines): a CliRunner result, a
    CompletedProcess (stdout and stderr) or text. Never a traceback, at most one `error:`, none of `forbid`."""
    if isinstance(result, str):
        text = result
    elif hasattr(result, "output"):
        text = result.output
    else:
        text = (result.stdout or "") + (result.stderr or "")
    for word in ("Traceback", *forbid):
        assert word not in text, text
    assert text.count("error:") <= 1, text
    return " ".join(text.split())


def read_manifest(bundle) -> dict:
    """A bundle's manifest.json as it is on disk (no checks: tests edit it)."""
    return json.loads((Path(bundle) / "manifest.json").read_text())


def edit_manifest(bundle, edit) -> dict:
    """Rewrite a bundle's manifest.json with `edit(manifest)` applied; returns the edited manifest."""
    manifest = read_manifest(bundle)
    edit(manifest)
    (Path(bundle) / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def edited_copy(source, folder, edit=None) -> Path:
    """A copy of bundle `source` at `folder`, its manifest changed by `edit(manifest)` when given."""
    shutil.copytree(source, folder)
    if edit is not None:
        edit_manifest(folder, edit)
    return Path(folder)


def valid_inputs(manifest, batch: int = 2, raw: bool = True, seed: int = 0, sequence: int = 12) -> dict:
    """For each input, valid values of its kind, made from the manifest's preprocessing only: raw inputs as a
    user gives them (images larger than the model's size, rows of named columns, one series longer than its
    window, vocabulary words), or model arrays (`raw=False`: `batch` rows; a series `sequence` steps long)."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, pre in manifest.preprocess.items():
        if pre.kind == "image":
            h, w = pre.size
            values[name] = ([rng.integers(0, 256, (h + 5, w + 3, 3), dtype=np.uint8) for _ in range(batch)] if raw
                            else pre.apply(rng.integers(0, 256, (batch, pre.channels, h, w), dtype=np.uint8)))
        elif pre.kind == "tabular":
            values[name] = ([{c: (pre.categories[c][i % len(pre.categories[c])] if c in pre.categories
                                  else float(rng.normal())) for c in pre.columns} for i in range(batch)] if raw
                            else rng.random((batch, len(pre.features))).astype(np.float32))
        elif pre.kind == "series":
            values[name] = (rng.normal(size=pre.window + 10).tolist() if raw
                            else rng.normal(size=(batch, sequence, 1)).astype(np.float32))
        elif pre.kind == "onehot":
            values[name] = ([pre.vocabulary[i] for i in range(batch)] if raw
                            else pre.apply(rng.integers(0, len(pre.vocabulary), batch)))
    return values


def manifest_of(spec, preprocess=None):
    """The runtime Manifest an ONNX export of `spec` would have (its own or the given preprocessing), built
    without exporting: for what reads only the manifest (prepare(), Triton configurations)."""
    import zoo.runtime as rt

    signature = spec.signature if preprocess is None else spec.signature.with_preprocess(preprocess)
    return rt.Manifest(bundle=Path("."), model=spec.name, format="onnx", file=Path("model.onnx"),
                       signature=signature, data={})


def zoo_serve(monkeypatch, *args):
    """`zoo serve ARGS` with the server itself replaced: (the CLI result, the sessions it would have served)."""
    import zoo.serve
    from typer.testing import CliRunner

    from zoo.cli import app

    served = []
    monkeypatch.setattr(zoo.serve, "serve", lambda sessions, *a, **k: served.extend(sessions))
    return CliRunner().invoke(app, ["serve", *map(str, args), "--port", "0"]), served
