"""The package dependency graph: which zoo packages each one loads, checked in fresh processes, and that
no package reaches into another's private modules or attributes."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("errors", "contract", "registry", "catalog", "weights", "hub", "runtime", "data", "training", "export",
            "bench", "serve", "cli")
# what each package may load of zoo (besides itself and the empty `zoo` package), and whether torch
ALLOWED = {
    "errors": (set(), False),
    "contract": ({"errors"}, False),
    "registry": ({"errors", "contract"}, False),
    "runtime": ({"errors", "contract"}, False),
    "weights": ({"errors", "contract", "registry"}, False),
    "catalog": ({"errors", "contract", "registry"}, False),
    "hub": ({"errors", "contract", "registry", "weights"}, False),
    "serve": ({"errors", "contract", "runtime", "outputs"}, False),
    "runs": ({"errors", "contract", "registry"}, False),   # zoo runs lists run.json files: no torch
}
SERVE_MAY_USE = ("serve", "runtime", "contract", "errors", "outputs")

PROBE = """
import json, sys
import {module}
{action}
print(json.dumps({{"zoo": sorted({{m.split('.')[1] for m in sys.modules if m.startswith('zoo.')}}),
                   "torch": 'torch' in sys.modules}}))
"""


def loaded(module: str, action: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module, action=action)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_importing_a_package_loads_only_what_it_may(package):
    result = loaded(f"zoo.{package}")
    allowed, torch_ok = ALLOWED[package]
    assert set(result["zoo"]) - {package} <= allowed, result
    assert torch_ok or not result["torch"]


def test_running_a_bundle_loads_nothing_but_the_runtime_contract_and_errors(tmp_path):
    """Not only at import: loading an ONNX bundle and predicting pulls in no other zoo package, and no torch."""
    from zoo.export import export

    (bundle,) = export("water-mlp", "onnx", out=tmp_path, random_weights=True)
    action = (f"import numpy as np; s = zoo.runtime.load({str(bundle)!r}); "
              "s.classify([{c: 0.5 for c in s.manifest.preprocess['features'].columns}], top_k=1)")
    result = loaded("zoo.runtime", action)
    assert set(result["zoo"]) == {"runtime", "contract", "errors"} and not result["torch"], result


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def _package(path: Path) -> str:
    parts = path.relative_to(ROOT / "zoo").with_suffix("").parts
    return parts[0]


def test_no_package_imports_another_packages_private_modules():
    for path in (ROOT / "zoo").rglob("*.py"):
        own = _package(path)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "zoo" or len(parts) < 3 or parts[1] == own:
                continue
            assert not parts[2].startswith("_"), f"{path.relative_to(ROOT)} imports {name}"


def test_serving_loads_only_the_runtime_contract_errors_and_outputs(tmp_path):
    """The web app too (imported lazily by `zoo.serve.create_app`), and the Triton model file, which needs no
    web framework at all."""
    result = loaded("zoo.serve", "zoo.serve.create_app")
    assert set(result["zoo"]) <= set(SERVE_MAY_USE) and not result["torch"], result
    result = loaded("zoo.serve", "import zoo.runtime; import sys; assert 'starlette' not in sys.modules")
    assert not result["torch"]
    for path in (ROOT / "zoo" / "serve").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("zoo.") or name == "zoo":
                assert name.split(".")[1] in SERVE_MAY_USE, f"{path.name} imports {name}"


def test_the_runtime_imports_only_the_contract_and_errors_of_zoo():
    for path in (ROOT / "zoo" / "runtime").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("zoo.") or name == "zoo":
                assert name.split(".")[1] in ("runtime", "contract", "errors"), f"{path.name} imports {name}"


def test_nothing_reaches_into_private_attributes_of_other_objects():
    """`x._name` only on self/cls; third-party internals (torch's export patches) are listed where used."""
    allowed = {"_patches", "_register_rnn_while_loop_decomposition", "_rnn_helper", "_check"}
    offenders = []
    for path in (ROOT / "zoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and node.attr not in allowed):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert not offenders, offenders
