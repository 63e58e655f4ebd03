"""Which output sequences cellgen wrote: a marker file inside ``NN`` that ``--overwrite`` looks for.

``--overwrite`` replaces only a sequence that carries the marker (so real data kept beside synthetic data is
never deleted), unless the user also forces it. The marker records the settings it was written with, so a rerun
can skip what is already done and refuse what was made differently. Staging folders left by a killed writer
(``.NN-xxxx``) are removed before ``NN`` is written again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellgen.data.errors import CellgenInputError

MARKER = ".cellgen.json"


def marker_text(command: str, settings: Mapping[str, Any] | None = None) -> str:
    """The marker's content: who wrote the sequence and with which settings (JSON)."""
    return json.dumps({"written_by": f"cellgen {command}", "settings": dict(settings or {})}, sort_keys=True)


def read_marker(sequence_dir: Path) -> dict[str, Any] | None:
    """The marker of ``sequence_dir`` (``.../NN``), or None when cellgen did not write it."""
    path = sequence_dir / MARKER
    if sequence_dir.is_symlink() or not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def sequence_state(dataset_dir: Path, name: str, settings: Mapping[str, Any] | None = None) -> str:
    """``missing``, ``done`` (cellgen wrote it with these settings), ``other`` (cellgen, other settings), or
    ``foreign`` (not written by cellgen: real data, or a link)."""
    folder, gt = dataset_dir / name, dataset_dir / f"{name}_GT"
    if not (folder.exists() or folder.is_symlink() or gt.exists() or gt.is_symlink()):
        return "missing"
    if folder.is_symlink() or gt.is_symlink():
        return "foreign"
    marker = read_marker(folder)
    if marker is None or not gt.is_dir():
        return "foreign"
    if settings is not None and marker.get("settings") != json.loads(json.dumps(dict(settings))):
        return "other"
    return "done"


def check_replaceable(dataset_dir: Path, name: str, overwrite: bool, force: bool = False) -> None:
    """Refuse to replace ``dataset_dir/name`` unless asked to, and then only if cellgen wrote it (or forced).

    Raises:
        CellgenInputError: the sequence exists and may not be replaced.
    """
    state = sequence_state(dataset_dir, name)
    target = dataset_dir / name
    if state == "missing":
        return
    if target.is_symlink() or (dataset_dir / f"{name}_GT").is_symlink():
        raise CellgenInputError(
            target, "is a symbolic link; cellgen does not write through links", "choose another output folder"
        )
    if not overwrite:
        raise CellgenInputError(
            target, "already exists", "pass --overwrite true to replace it, or choose another folder"
        )
    if state == "foreign" and not force:
        raise CellgenInputError(
            target,
            "exists and was not written by cellgen (no .cellgen.json marker); refusing to replace it",
            "choose another output folder, or force it: synthesize --force true, CTCSequenceWriter force: true",
        )


def remove_stale_staging(dataset_dir: Path, name: str) -> list[Path]:
    """Remove ``.NN-*`` staging folders that a killed writer left in ``dataset_dir``; return what was removed."""
    removed = []
    if dataset_dir.is_dir():
        for entry in dataset_dir.glob(f".{name}-*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed
