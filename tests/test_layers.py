"""The package's imports run one way only: no loops, no arrow from a lower room to a higher one.

The imports are read from the source (``ast``), so every ``import`` counts: module level, inside functions and
under ``TYPE_CHECKING`` alike, since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cellgen"

# The layer order, top first. A room may import its own modules and any room on a lower floor, nothing else.
# models compose the synthesis pipeline (BVDM) and the scoring code (MitosisDetector), so they sit one floor above
# synth and metrics; callbacks write what models predict and never need a model class. The diffusion wrapper
# (denoiser + EMA + schedule) builds on nn's EMA, so plain torch has two floors: diffusion and flow over nn.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "commands"),
    ("models",),
    ("synth", "metrics", "callbacks"),
    ("data",),
    ("diffusion", "flow"),
    ("nn",),
)

# Upward imports still to be removed, each owned by an open issue; remove an entry when its import goes (a stale
# entry fails the test too). Empty is the goal.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` (module ``name``) imports, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> modules of the package it imports`` for every module under ``root``."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imported_modules(path, name, set(paths)) for name, path in paths.items()}


def room(module: str) -> str:
    """``cellgen.data.ctc`` -> ``data``; ``cellgen.cli`` -> ``cli``."""
    return module.split(".")[1] if "." in module else module


def floor(module: str) -> int:
    for depth, rooms in enumerate(LAYERS):
        if room(module) in rooms:
            return depth
    raise KeyError(f"{module}: room '{room(module)}' is not in LAYERS; give it a floor")


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports from one room into another that is not on a lower floor (same-floor neighbours included)."""
    return {
        (src, dst)
        for src, targets in graph.items()
        for dst in targets
        if "." in src and "." in dst and room(src) != room(dst) and floor(dst) <= floor(src)
    }


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each a loop of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _without_known(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {src: {dst for dst in targets if (src, dst) not in KNOWN_UPWARD} for src, targets in graph.items()}


def test_every_room_has_a_floor() -> None:
    rooms = {room(m) for m in import_graph() if "." in m}
    placed = {r for rooms_of_floor in LAYERS for r in rooms_of_floor}
    assert rooms <= placed, f"rooms without a floor in LAYERS: {sorted(rooms - placed)}"


def test_no_upward_imports() -> None:
    upward = upward_imports(import_graph())
    new = sorted(upward - KNOWN_UPWARD)
    assert not new, "imports against the layer order (take the object as an argument or a Protocol):\n" + "\n".join(
        f"  {src} -> {dst}" for src, dst in new
    )
    stale = sorted(KNOWN_UPWARD - upward)
    assert not stale, f"KNOWN_UPWARD lists imports that are gone; remove them: {stale}"


def test_no_import_loops() -> None:
    cycles = import_cycles(_without_known(import_graph()))
    assert not cycles, f"import loops: {cycles}"


def test_checker_sees_loops_and_upward_arrows(tmp_path: Path) -> None:
    """The checks above can fail: a toy package with one upward import that closes a loop."""
    package = tmp_path / "cellgen"
    for folder in ("data", "models"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "models" / "net.py").write_text("from cellgen.data.ctc import read\n")
    (package / "data" / "ctc.py").write_text("def read():\n    from ..models import net\n")
    graph = import_graph(package)
    assert graph["cellgen.data.ctc"] == {"cellgen.models", "cellgen.models.net"}
    assert upward_imports(graph) == {("cellgen.data.ctc", "cellgen.models"), ("cellgen.data.ctc", "cellgen.models.net")}
    assert import_cycles(graph) == [["cellgen.data.ctc", "cellgen.models.net"]]
    with pytest.raises(KeyError, match="not in LAYERS"):
        floor("cellgen.plugins.extra")
