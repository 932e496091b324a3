"""Bundle the lab's shared assets into the wheel.

The repository keeps one copy of each asset where the lab layout places it (schemas/,
skills/, train.py at the root). A non-editable install (pre-commit's hook env, a
plain `pip install`) still needs them, so the build copies them into
runner/_assets/; an editable install reads the checkout directly.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
ASSETS = ["schemas", "skills", "train.py", "kernels/qwen3-rmsnorm"]


class BuildPyWithAssets(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "runner" / "_assets"
        for name in ASSETS:
            src = ROOT / name
            dst = target / name
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "results"))
            elif src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithAssets})
