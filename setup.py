"""Packaging glue that pyproject.toml cannot say: the wheel carries configs/ as cellgen/configs.

``cellgen fit --config bvdm`` then finds the paper-default configs in a plain ``pip install``; an editable
install reads them from the checkout's configs/ (see ``cellgen.cli.configs_dir``).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    """Copy every ``configs/**/*.yaml`` into the built package (the YAMLs stay in one place in the repo)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        source = Path(__file__).resolve().parent / "configs"
        target = Path(self.build_lib) / "cellgen" / "configs"
        for path in source.rglob("*.yaml"):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


setup(cmdclass={"build_py": BuildPyWithConfigs})
