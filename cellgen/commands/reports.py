"""Reports of the ``evaluate`` commands: report.json (strict JSON), report.md (a Markdown table) and W&B tables.

Shared by every command that scores something, so a table looks the same whichever command wrote it.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def format_cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A GitHub Markdown table of ``rows`` (dicts) restricted to ``columns``; floats with 3 decimals."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def jsonable(value: object) -> object:
    """NaN/inf become null and numpy scalars plain numbers, so report.json is strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _active_wandb(project: str | None, out: Path, title: str):  # -> wandb run or None
    """The W&B run to log into: an already active run, or a new one when ``project`` is given (offline unless
    ``WANDB_MODE`` says otherwise, as in configs/logger/wandb.yaml). None when W&B is not configured."""
    running = sys.modules.get("wandb")
    if running is not None and getattr(running, "run", None) is not None:
        return running.run
    if not project:
        return None
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    return wandb.init(project=project, dir=str(out), job_type="evaluate", name=title, reinit="finish_previous")


def write_report(
    out: str | Path,
    title: str,
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    extra: Mapping[str, object] | None = None,
    plots: Mapping[str, str | Path] | None = None,
    wandb_project: str | None = None,
) -> dict[str, Path]:
    """Write ``report.json`` (rows + extra), ``report.md`` (title, table, plots) into ``out``; log to W&B.

    W&B receives the table and the plots (as images) only when a run is active or ``wandb_project`` is given;
    wandb is imported only then.

    Returns:
        ``{"json": path, "markdown": path}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = {name: Path(path) for name, path in (plots or {}).items()}
    payload = jsonable({"title": title, "rows": list(rows), **(extra or {})})
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    body = [f"# {title}", "", markdown_table(rows, columns), ""]
    body += [
        f"![{name}]({path.relative_to(out) if path.is_relative_to(out) else path})" for name, path in plots.items()
    ]
    md_path.write_text("\n".join(body).rstrip() + "\n")
    run = _active_wandb(wandb_project, out, title)
    if run is not None:
        import wandb

        table = wandb.Table(columns=list(columns), data=[[jsonable(r.get(c)) for c in columns] for r in rows])
        run.log({f"{title}/table": table, **{f"{title}/{k}": wandb.Image(str(p)) for k, p in plots.items()}})
        if wandb_project:
            run.finish()
    return {"json": json_path, "markdown": md_path}
