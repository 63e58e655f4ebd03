"""The one exception type that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class CellgenInputError(ValueError):
    """Bad user input: a file or folder that cannot be used as given.

    The message is one line naming the offending path and what to do about it; the CLI prints it
    as ``cellgen: error: <message>`` and exits with status 2 instead of showing a traceback.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        hint = f" ({fix})" if fix else ""
        super().__init__(f"{where}{problem}{hint}")
