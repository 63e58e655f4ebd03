"""Mitosis points ``(t, y, x[, score])`` on disk and from lineages: the files detectors write and scorers read.

Formats: a ``t,y,x[,score]`` CSV (what :class:`~cellgen.models.mitosis_detector.MitosisDetector` writes), or a
``x y frame id`` text file with ``%`` header lines (the HeLa ``02_GT/mitoses.txt``); a CTC lineage gives its divisions.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from cellgen.data.atomic import atomic_file
from cellgen.data.ctc import CTCSequence, read_text_table
from cellgen.data.errors import CellgenInputError

POINT_COLUMNS = ("t", "y", "x")
SCORE_COLUMN = "score"
POINTS_FIX = "expected a CSV with the header t,y,x[,score] and one event per line"


def read_points_csv(path: str | Path) -> np.ndarray:
    """Read event points from a CSV with header ``t,y,x`` and an optional ``score`` column.

    Columns are found by name, so their order in the file is free and extra columns are ignored.

    Args:
        path: CSV file.

    Returns:
        (N, 3) float64 ``(t, y, x)``, or (N, 4) ``(t, y, x, score)`` when the header has ``score``;
        a header-only file gives (0, 3) or (0, 4).

    Raises:
        ValueError: missing header or column, wrong field count, or a non-numeric or non-finite value.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:  # Excel writes a byte-order mark
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header 't,y,x[,score]'")
    header = [name.strip().lower() for name in rows[0]]
    missing = [name for name in POINT_COLUMNS if name not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} in header {','.join(rows[0])!r}")
    wanted = list(POINT_COLUMNS) + ([SCORE_COLUMN] if SCORE_COLUMN in header else [])
    index = [header.index(name) for name in wanted]
    points = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}: line {line_no} has {len(row)} fields, header has {len(header)}")
        values = []
        for name, k in zip(wanted, index, strict=True):
            try:
                value = float(row[k])
            except ValueError:
                raise ValueError(f"{path}: line {line_no}: non-numeric {name} {row[k]!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}: line {line_no}: non-finite {name} {row[k]!r}")
            values.append(value)
        points.append(values)
    return np.asarray(points, dtype=np.float64).reshape(-1, len(wanted))


def write_points_csv(path: str | Path, points: np.ndarray, with_score: bool = True) -> Path:
    """Write event points as ``t,y,x[,score]`` CSV, atomically (temp file then ``os.replace``).

    An interrupted write never leaves a truncated file that :func:`read_points_csv` would accept.

    Args:
        path: destination; parent folders are created.
        points: (N, 3) ``(t, y, x)`` or (N, 4) ``(t, y, x, score)``.
        with_score: write the ``score`` column; needs (N, 4) points. ``False`` drops any score.

    Returns:
        The written path.
    """
    path = Path(path)
    points = as_points(points, "points")
    if with_score and points.shape[1] < 4:
        raise ValueError(f"points have no score column (shape {points.shape}); pass with_score=False")
    columns = list(POINT_COLUMNS) + ([SCORE_COLUMN] if with_score else [])
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in points[:, : len(columns)]:
            writer.writerow([f"{v:.17g}" for v in row])  # 17 significant digits round-trip float64
    return path


def as_points(points: np.ndarray, name: str) -> np.ndarray:
    """(N, >=3) float64 array; an empty input of any shape becomes (0, 3)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, max(3, arr.shape[-1] if arr.ndim == 2 else 3))
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"{name} must have shape (N, 3) or (N, 4) as (t, y, x[, score]), got {arr.shape}")
    return arr


def read_mitosis_points(path: str | Path) -> np.ndarray:
    """Mitosis points (N, 3) as (t, y, x) in original pixels, from a points CSV or an ``x y frame id`` list.

    The whitespace format is recognised by its ``%`` header lines or by a first data line without commas
    (latin-1, as the HeLa file from Ctk is).
    """
    path = Path(path)
    if not path.is_file():
        raise CellgenInputError(path, "points file not found", POINTS_FIX)
    lines = [line.strip() for line in read_text_table(path).splitlines() if line.strip()]
    data = [line for line in lines if not line.startswith("%")]
    if len(data) < len(lines) or (data and "," not in data[0]):
        points = []
        for number, line in enumerate(data, start=1):
            fields = line.split()
            try:
                x, y, frame = (float(v) for v in fields[:3])
            except ValueError as exc:
                problem = f"data line {number} is not 'x y frame [id]': {line!r}"
                raise CellgenInputError(path, problem, "one event per line, '%' starts a comment") from exc
            points.append((frame, y, x))
        return np.asarray(points, np.float64).reshape(-1, 3)
    try:
        return read_points_csv(path)[:, :3]
    except ValueError as exc:
        raise CellgenInputError(path, str(exc).removeprefix(f"{path}: "), POINTS_FIX) from exc


def division_points(seq: CTCSequence) -> np.ndarray:
    """Divisions of the lineage as points (N, 3) (t, y, x); divisions without a known location are skipped."""
    points = [(d.frame, d.y, d.x) for d in seq.divisions() if np.isfinite(d.y) and np.isfinite(d.x)]
    return np.asarray(points, np.float64).reshape(-1, 3)
