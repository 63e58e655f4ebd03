"""The one error path of the ``cellgen`` command: any failure becomes one ``cellgen: error: ...`` line.

Library code raises ordinary exceptions naming the file and the problem; :func:`report_error` turns them into
one line and an exit status (2 for bad input, 130 for Ctrl-C, 1 for a bug). Parsers raise instead of printing
a usage dump, and config files are read once up front so that a YAML syntax error names its file and line.
``CELLGEN_DEBUG=1`` keeps the tracebacks.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from cellgen.data.errors import CellgenInputError

MAX_LINE = 400


def debug_mode() -> bool:
    """True when ``CELLGEN_DEBUG`` asks for the original exceptions and tracebacks."""
    return os.environ.get("CELLGEN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class OneLineErrorParser(ArgumentParser):
    """A jsonargparse parser that raises on bad options instead of printing the whole usage and exiting."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (jsonargparse's own signature)
        kwargs["exit_on_error"] = False
        super().__init__(*args, **kwargs)


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """Collapse whitespace (jsonargparse and YAML messages span lines) and cap the length."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_paths(args: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_files(args: list[str]) -> None:
    """Read every ``--config`` file once so that a missing file or a YAML syntax error names the file and line."""
    import yaml

    for value in _config_paths(args):
        path = Path(value).expanduser()
        if not path.exists():
            if any(c in value for c in "{}:\n"):
                continue  # an inline YAML/JSON value, which jsonargparse accepts as well
            raise CellgenInputError(path, "config file not found", "check the path, e.g. configs/tiny/bvdm.yaml")
        if not path.is_file():
            raise CellgenInputError(path, "config is a folder", "pass a .yaml file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CellgenInputError(path, "config is not UTF-8 text", "save it as UTF-8 YAML") from exc
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise CellgenInputError(path, f"YAML syntax error{where}: {problem}", "fix the YAML there") from exc
        if content is not None and not isinstance(content, dict):
            raise CellgenInputError(path, "config must be a YAML mapping of options", "e.g. 'trainer: {max_steps: 10}'")


def classify(exc: BaseException, command: str) -> tuple[int, str]:
    """Exit status and the one-line message for an exception that ended ``cellgen COMMAND``."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted (rerun the command: fit resumes with --ckpt_path last, synthesize skips done work)"
    if isinstance(exc, CellgenInputError):
        return 2, str(exc)
    if isinstance(exc, argparse.ArgumentError):
        message = re.sub(r"^Problems parsing config\s*:?\s*", "", str(exc))
        # A subclass-mode option error lists every Union member; keep the class that was meant and its problem.
        meant = re.search(r"(Problem with given class_path .*?)(?:\s+- Expected a|$)", message, re.S)
        if meant:
            key = re.match(r'\s*(Parser key "[^"]+":)', message)
            message = f"{key.group(1) + ' ' if key else ''}{meant.group(1)}"
        return 2, f"{command}: {message} (see `cellgen {command} --help`)"
    if isinstance(exc, OSError) and exc.filename:
        return 2, f"{exc.filename}: {exc.strerror or exc} (check the path and its permissions)"
    if isinstance(exc, FloatingPointError):
        return 2, str(exc)
    if type(exc).__name__ == "MisconfigurationException":
        return 2, f"{command}: {exc} (check the trainer options)"
    return 1, (
        f"unexpected {type(exc).__name__} in `cellgen {command}`: {exc} "
        "(rerun with CELLGEN_DEBUG=1 for the traceback and report it)"
    )


def report_error(exc: BaseException, command: str) -> int:
    """Print ``cellgen: error: <one line>`` to stderr and return the exit status."""
    code, message = classify(exc, command)
    print(f"cellgen: error: {one_line(message)}", file=sys.stderr)
    return code
