"""Write docker/constraints.txt: the exact versions of cellgen's dependency tree in the current (tested) environment.

Run (Python 3.11+) after `make install` where `make test` passed: `python docker/pin_versions.py`. torch is pinned
separately (the Dockerfile installs torch==2.13.0 first, which brings its own CUDA packages).
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import tomllib

SKIP = re.compile(r"^(torch|triton|nvidia-.*|cellgen)$")


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def dependency_tree(roots: list[str]) -> dict[str, str]:
    """``{name: version}`` of the installed distributions ``roots`` need, recursively (extras left out)."""
    found: dict[str, str] = {}
    todo = [_name(root) for root in roots]
    while todo:
        name = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        key = _name(dist.metadata["Name"])
        if key in found:
            continue
        found[key] = dist.version
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            todo.append(_name(requirement))
    return {k: v for k, v in sorted(found.items()) if not SKIP.match(k)}


if __name__ == "__main__":
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    lines = [f"{name}=={version}" for name, version in dependency_tree(pyproject["project"]["dependencies"]).items()]
    header = "# Versions cellgen was tested with (python docker/pin_versions.py); the Docker image installs these.\n"
    target = Path(__file__).with_name("constraints.txt")
    target.write_text(header + "\n".join(lines) + "\n")
    print(f"{target}: {len(lines)} pins")
