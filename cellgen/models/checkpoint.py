"""Checkpoint files read safely: one-line errors for missing, truncated, foreign or code-carrying checkpoints.

Every command that takes a checkpoint (``fit/validate/test/predict --ckpt_path``, ``synthesize --ckpt``,
``estimate-k --ckpt_path``) opens it here first, with ``weights_only=True``: a pickle that would run code on
loading is refused before anything else touches it, and a checkpoint of another model is named as such.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cellgen.data.errors import CellgenInputError

TRAIN_HINT = "train one with `cellgen fit --config ...`, or pass the path of a last.ckpt"


def read_checkpoint(path: str | Path, expect_class: str | None = None) -> dict[str, Any]:
    """Open a Lightning checkpoint without executing code and check that it is one (of ``expect_class``).

    Args:
        path: the ``.ckpt`` file.
        expect_class: dotted class path (``cellgen.models.bvdm.BVDM``) or class name that the checkpoint must
            hold; compared with the class path LightningCLI records in the hyperparameters, when recorded.

    Returns:
        The checkpoint dictionary (tensors memory-mapped when the file format allows).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CellgenInputError(path, "checkpoint not found", TRAIN_HINT)
    if not path.is_file():
        raise CellgenInputError(path, "checkpoint is a folder, not a file", "pass the .ckpt file inside it")
    if path.stat().st_size == 0:
        raise CellgenInputError(path, "checkpoint is empty (0 bytes)", "its run was killed; " + TRAIN_HINT)
    try:
        state = _load(path)
    except pickle.UnpicklingError as exc:
        refused = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        problem = "checkpoint holds Python objects that would run code on loading" if refused else "not a checkpoint"
        raise CellgenInputError(path, f"{problem}; refused", "only load checkpoints written by cellgen") from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as exc:
        raise CellgenInputError(
            path, f"cannot read checkpoint ({type(exc).__name__}): truncated or not a .ckpt file", TRAIN_HINT
        ) from exc
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CellgenInputError(path, "not a Lightning checkpoint (no state_dict)", TRAIN_HINT)
    found = checkpoint_class(state)
    if expect_class and found and not _same_class(found, expect_class):
        raise CellgenInputError(
            path,
            f"checkpoint of {found.rsplit('.', 1)[-1]}, but the command builds {expect_class.rsplit('.', 1)[-1]}",
            f"use the config of the run that wrote it (--model {found})",
        )
    return state


def checkpoint_class(state: dict[str, Any]) -> str | None:
    """Dotted class path recorded by LightningCLI in a checkpoint's hyperparameters, or None."""
    hparams = state.get("hyper_parameters") or {}
    value = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return value if isinstance(value, str) else None


def _same_class(found: str, expected: str) -> bool:
    return found == expected or found.rsplit(".", 1)[-1] == expected.rsplit(".", 1)[-1]


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped; others are damaged
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def find_last_checkpoint(dirpath: str | None, root: str | None) -> Path:
    """Newest ``last*.ckpt`` in the checkpoint folder, or anywhere under the run's root folder.

    Raises:
        CellgenInputError: there is nothing to resume from.
    """
    where = Path(dirpath) if dirpath else Path(root or ".")
    found = list(where.glob("last*.ckpt")) if dirpath else list(where.rglob("last*.ckpt"))
    found = [p for p in found if p.is_file() and p.stat().st_size > 0]
    if not found:
        raise CellgenInputError(
            where,
            "no last.ckpt to resume from (--ckpt_path last)",
            "start without --ckpt_path, or with --ckpt_path last-or-new, or pass the path of a checkpoint",
        )
    return max(found, key=lambda p: p.stat().st_mtime_ns)
