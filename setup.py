"""The shipped weights travel with the package: `weights/` stays where it is in the repository, and building
the package (a wheel, or `pip install .`) copies each model's weights and card into `zoo/shipped_weights/`,
where `zoo.weights.weights_dir()` finds them outside a checkout. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def shipped_files() -> list[Path]:
    """Each model's `<name>.safetensors` and its card `<name>.json` (not the training history or plots)."""
    folder = ROOT / "weights"
    weights = sorted(folder.glob("[!.]*.safetensors"))
    return weights + [w.with_suffix(".json") for w in weights if w.with_suffix(".json").is_file()]


class BuildWithWeights(build_py):
    def run(self):
        super().run()
        if self.editable_mode:   # an editable install reads weights/ in the checkout itself
            return
        target = Path(self.build_lib) / "zoo" / "shipped_weights"
        shutil.rmtree(target, ignore_errors=True)   # no stale weights from an earlier build
        target.mkdir(parents=True)
        for source in shipped_files():
            self.copy_file(str(source), str(target / source.name))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, *(str(Path(self.build_lib) / "zoo" / "shipped_weights" / f.name) for f in shipped_files())]


setup(cmdclass={"build_py": BuildWithWeights})
