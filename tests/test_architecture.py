"""The package dependency graph: which zoo packages each one loads, checked in fresh processes, and that
no package reaches into another's private modules or attributes."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("errors", "contract", "specs", "catalog", "registry", "weights", "hub", "runtime", "data", "metrics",
            "training", "export", "bench", "serve", "cli")
# what each package may load of zoo (besides itself and the empty `zoo` package), and whether torch
ALLOWED = {
    "errors": (set(), False),
    "contract": ({"errors"}, False),
    "specs": ({"errors", "contract"}, False),
    "catalog": ({"errors", "contract", "specs"}, False),
    "registry": ({"errors", "contract", "specs", "catalog"}, False),
    "runtime": ({"errors", "contract"}, False),
    "weights": ({"errors", "contract", "specs", "catalog", "registry"}, False),
    "hub": ({"errors", "contract", "specs", "catalog", "registry", "weights"}, False),
    "serve": ({"errors", "contract", "runtime", "outputs"}, False),
    "metrics": ({"errors", "contract", "specs"}, True),   # torchmetrics, for training and export alike
    "runs": ({"errors", "contract", "specs", "catalog", "registry"}, False),   # zoo runs lists run.json files: no torch
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


def _modules() -> dict[str, Path]:
    """Every module of zoo by dotted name (a package by its own name)."""
    out = {}
    for path in (ROOT / "zoo").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _module_level_imports(name: str, path: Path, modules: dict) -> set[str]:
    """The zoo modules that `name` imports when it is imported: its module-level import statements (in `if` and
    `try` blocks too; not in functions or classes, nor under TYPE_CHECKING). `from P import m` depends on the
    module P.m when m is one (as `import P.m` does), else on P."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found, todo = set(), list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            submodules = {f"{base}.{a.name}" for a in node.names} & set(modules)
            found |= submodules or {base}
            if len(submodules) < len(node.names):
                found.add(base)
        todo += ast.iter_child_nodes(node)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph`: its strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """No module of zoo imports, at module level, one that imports it back (directly or through others)."""
    modules = _modules()
    graph = {name: _module_level_imports(name, path, modules) for name, path in modules.items()}
    assert graph["zoo.registry"] >= {"zoo.catalog", "zoo.specs"}   # the parser sees what it must
    assert not _cycles(graph), _cycles(graph)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_zoo_modules_are_found_by_name_not_loaded_dynamically():
    """importlib.import_module on a zoo module hides an import from the cycle check (the registry once loaded
    the catalog so, and the catalog imported the registry back): only user-given "module:attr" strings are."""
    for path in (ROOT / "zoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") and node.args:
                argument = node.args[0]
                assert not (isinstance(argument, ast.Constant) and str(argument.value).startswith("zoo")), \
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {argument.value} dynamically"


def test_the_cli_imports_no_framework_until_a_command_needs_it():
    """`zoo --help`, `zoo list`: the packages are imported with the CLI, torch, ONNX, ONNX Runtime and the server
    stack only by the commands that run them."""
    probe = ("import json, sys; import zoo.cli; print(json.dumps(sorted(m for m in ('torch', 'onnx', 'onnxruntime', "
             "'onnxscript', 'starlette', 'uvicorn') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_export_uses_the_split_and_metrics_of_zoo_data_and_zoo_metrics_not_the_trainer():
    for path in (ROOT / "zoo" / "export").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith("zoo.training"), f"{path.relative_to(ROOT)} imports {name}"
