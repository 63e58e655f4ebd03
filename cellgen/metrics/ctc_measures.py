"""Cell Tracking Challenge SEG, TRA and DET of a tracking result against a ground-truth folder.

The measures come from the maintained ``py-ctcmetrics`` package (import name ``ctc_metrics``), which
implements the AOGM graph matching of Matula et al. (PLoS ONE 2015) exactly as the CTC evaluation
software does; re-implementing AOGM here would only add a second, unchecked copy of it.

Definitions (weights as in the CTC software):

- DET = 1 - min(AOGM_D, AOGM_D0) / AOGM_D0, AOGM_D = 5 NS + 10 FN + 1 FP, AOGM_D0 = 10 * #GT vertices.
- TRA = 1 - min(AOGM, AOGM_0) / AOGM_0, AOGM = AOGM_D + 1 ED + 1.5 EA + 1 EC,
  AOGM_0 = 10 * #GT vertices + 1.5 * #GT edges.
- SEG = mean over GT SEG objects of the Jaccard index with the result label covering > 50 % of the object
  (0 when no label does).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import tifffile

from cellgen.data.ctc import read_text_table, tiff_shape
from cellgen.data.errors import CellgenInputError
from cellgen.metrics.linking import check_result

_SAME_SIZE = "result masks must have the size of the ground truth"
_INSTALL_HINT = "pip install --no-deps py-ctcmetrics==1.3.3 scikit-learn==1.8.0 joblib threadpoolctl"


def evaluate_ctc(gt_dir: str | Path, res_dir: str | Path, threads: int = 1) -> dict[str, float]:
    """SEG, TRA and DET of one result sequence.

    Args:
        gt_dir: the ``NN_GT`` folder holding ``TRA/man_trackTTT.tif``, ``TRA/man_track.txt`` and,
            optionally, ``SEG/man_segTTT.tif``.
        res_dir: the result folder holding ``maskTTT.tif`` (16-bit, one per GT TRA frame) and
            ``res_track.txt``.
        threads: worker processes for mask matching; 1 keeps everything in this process.

    Returns:
        ``{"SEG", "TRA", "DET"}`` as floats in [0, 1] (SEG is NaN when the GT has no SEG masks), plus the
        AOGM terms behind TRA: ``AOGM``, ``AOGM_0`` and the operation counts ``AOGM_NS``, ``AOGM_FN``,
        ``AOGM_FP``, ``AOGM_ED``, ``AOGM_EA``, ``AOGM_EC``.

    Raises:
        ValueError: (:class:`CellgenInputError`) a missing folder or file, masks the CTC tools
            cannot read correctly, or a result that breaks the CTC format rules.
    """
    gt_dir, res_dir = Path(gt_dir), Path(res_dir)
    _check_inputs(gt_dir, res_dir)
    seg_dir = gt_dir / "SEG"
    has_seg = seg_dir.is_dir() and any(seg_dir.glob("man_seg*.tif"))
    metrics = ["Valid", "DET", "TRA"] + (["SEG"] if has_seg else [])
    try:
        from ctc_metrics.scripts.evaluate import evaluate_sequence
    except ImportError as exc:
        raise CellgenInputError(None, f"SEG/TRA/DET need py-ctcmetrics ({exc})", _INSTALL_HINT) from exc

    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(io.StringIO()),
        _plain_tables(gt_dir, res_dir) as (gt_read, res_read),
    ):
        warnings.simplefilter("always")
        try:
            results = evaluate_sequence(str(res_read), str(gt_read), metrics=metrics, threads=threads)
        except AssertionError as exc:  # ctc_metrics reports layout problems as bare assertions
            raise CellgenInputError(res_dir, f"cannot be evaluated: {exc}") from exc
    if not results.get("Valid"):
        reasons = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        reason = reasons[0] if reasons else "see the CTC format rules"
        raise CellgenInputError(
            res_dir, f"not a valid CTC result ({reason})", "masks and res_track.txt must agree frame by frame"
        )
    out = {
        "SEG": float(results["SEG"]) if has_seg else float("nan"),
        "TRA": float(results["TRA"]),
        "DET": float(results["DET"]),
    }
    for key in ("AOGM", "AOGM_0", "AOGM_NS", "AOGM_FN", "AOGM_FP", "AOGM_ED", "AOGM_EA", "AOGM_EC"):
        out[key] = float(results[key])
    return out


@contextlib.contextmanager
def _plain_tables(gt_dir: Path, res_dir: Path) -> Iterator[tuple[Path, Path]]:
    """The folders as ctc_metrics can read them: track tables with LF endings, no BOM and no blank lines.

    A CRLF/BOM table (what Windows editors and Excel write) is valid CTC input, but ctc_metrics parses it
    wrongly; such folders are mirrored into a temporary folder (files linked, the table rewritten).
    """
    tables = {gt_dir: Path("TRA") / "man_track.txt", res_dir: Path("res_track.txt")}
    dirty = {
        folder: plain
        for folder, table in tables.items()
        if (plain := _plain_table(folder / table)) != (folder / table).read_bytes()
    }
    if not dirty:
        yield gt_dir, res_dir
        return
    with tempfile.TemporaryDirectory(prefix="cellgen-ctc-") as tmp:
        mirrored = {}
        for folder, table in tables.items():
            if folder not in dirty:
                mirrored[folder] = folder
                continue
            mirror = Path(tmp) / ("gt" if folder == gt_dir else "res") / folder.name
            for path in folder.rglob("*"):
                target = mirror / path.relative_to(folder)
                if path.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                elif path.relative_to(folder) != table:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(path.resolve())
            (mirror / table).parent.mkdir(parents=True, exist_ok=True)
            (mirror / table).write_bytes(dirty[folder])
            mirrored[folder] = mirror
        yield mirrored[gt_dir], mirrored[res_dir]


def _plain_table(path: Path) -> bytes:
    lines = [line.strip() for line in read_text_table(path).splitlines() if line.strip()]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _check_inputs(gt_dir: Path, res_dir: Path) -> None:
    """Fail early, naming the path, on what ctc_metrics would report as a bare assertion or a crash."""
    if not res_dir.is_dir():
        raise CellgenInputError(res_dir, "result folder not found", "pass the folder holding maskTTT.tif")
    if not (res_dir / "res_track.txt").is_file():
        raise CellgenInputError(
            res_dir / "res_track.txt", "file not found", "a CTC result needs one 'L B E P' line per track"
        )
    masks = sorted(res_dir.glob("mask*.tif"))
    if not masks:
        raise CellgenInputError(res_dir, "no maskTTT.tif files", "write one 16-bit label image per frame")
    if not gt_dir.is_dir():
        raise CellgenInputError(gt_dir, "ground-truth folder not found", "pass the NN_GT folder")
    if not (gt_dir / "TRA" / "man_track.txt").is_file():
        raise CellgenInputError(
            gt_dir / "TRA" / "man_track.txt", "file not found", "pass the NN_GT folder of a CTC sequence"
        )
    gt_masks = sorted((gt_dir / "TRA").glob("*.tif"))
    if len(gt_masks) != len(masks):
        raise CellgenInputError(
            res_dir,
            f"{len(masks)} result masks for {len(gt_masks)} GT TRA frames",
            "write one mask per GT frame",
        )
    gt_shape = tiff_shape(gt_masks[0]) if gt_masks else None
    for mask in masks:
        if mask.stat().st_size == 0:
            raise CellgenInputError(mask, "empty file (0 bytes)", "write the result mask again")
        if tiff_shape(mask) != gt_shape:
            raise CellgenInputError(mask, f"size {tiff_shape(mask)} differs from the GT masks' {gt_shape}", _SAME_SIZE)
    with tifffile.TiffFile(masks[0]) as tif:
        dtype = tif.pages[0].dtype
    # ctc_metrics offsets result labels by the largest GT label in the file's own dtype: 8 bits overflow.
    if dtype is None or dtype.kind not in "ui" or dtype.itemsize < 2:
        raise CellgenInputError(masks[0], f"result masks are {dtype}", "save them as uint16 label images")
    problems = check_result(res_dir)  # the shared CTC rules: table, lineage, mask ids vs table
    if problems:
        more = f" [{len(problems) - 1} more]" if len(problems) > 1 else ""
        raise CellgenInputError(
            None, f"not a valid CTC result: {problems[0]}{more}", "masks and res_track.txt must agree frame by frame"
        )
