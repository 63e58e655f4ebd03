"""SEG/TRA/DET on a hand-made 4-frame sequence, checked against hand counts of the AOGM definition.

The ground truth (32x32, frames 0-3):

- track 1, frames 0-1: rows 4-11, cols 4-11; it divides into
- tracks 2 (rows 2-7) and 3 (rows 10-15), cols 4-11, frames 2-3, parent 1;
- track 4, frames 0-3: a 10x10 square, rows/cols 20-29.

So the GT graph has 10 vertices (2 + 2 + 3 + 3 cells) and 8 edges (6 frame-to-frame links: 1 for
track 1, 3 for track 4, 1 each for tracks 2 and 3; plus 2 parent links 1->2, 1->3), and SEG masks for
frames 0 and 2 hold 5 objects. Hence AOGM_D0 = 10 * 10 = 100 and AOGM_0 = 10 * 10 + 1.5 * 8 = 112.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("ctc_metrics")

from cellgen.metrics.ctc_measures import evaluate_ctc  # noqa: E402

SIZE, FRAMES = 32, 4
# label -> (rows, cols); every track keeps its box over its lifetime
BOXES = {
    1: (slice(4, 12), slice(4, 12)),
    2: (slice(2, 8), slice(4, 12)),
    3: (slice(10, 16), slice(4, 12)),
    4: (slice(20, 30), slice(20, 30)),
}
GT_TRACKS = [(1, 0, 1, 0), (2, 2, 3, 1), (3, 2, 3, 1), (4, 0, 3, 0)]
SEG_FRAMES = (0, 2)
AOGM_D0 = 10 * 10
AOGM_0 = 10 * 10 + 1.5 * 8


def _masks(tracks: list[tuple[int, int, int, int]], boxes: dict[int, tuple[slice, slice]]) -> np.ndarray:
    masks = np.zeros((FRAMES, SIZE, SIZE), np.uint16)
    for label, begin, end, _ in tracks:
        masks[begin : end + 1, boxes[label][0], boxes[label][1]] = label
    return masks


def _write_table(path: Path, tracks: list[tuple[int, int, int, int]]) -> None:
    path.write_text("".join(f"{label} {b} {e} {p}\n" for label, b, e, p in tracks))


@pytest.fixture()
def gt_dir(tmp_path: Path) -> Path:
    gt = tmp_path / "01_GT"
    (gt / "TRA").mkdir(parents=True)
    (gt / "SEG").mkdir()
    masks = _masks(GT_TRACKS, BOXES)
    for t, mask in enumerate(masks):
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", mask)
        if t in SEG_FRAMES:
            tifffile.imwrite(gt / "SEG" / f"man_seg{t:03d}.tif", mask)
    _write_table(gt / "TRA" / "man_track.txt", GT_TRACKS)
    return gt


def _write_result(root: Path, masks: np.ndarray, tracks: list[tuple[int, int, int, int]]) -> Path:
    res = root / "01_RES"
    res.mkdir()
    for t, mask in enumerate(masks):
        tifffile.imwrite(res / f"mask{t:03d}.tif", mask.astype(np.uint16))
    _write_table(res / "res_track.txt", tracks)
    return res


def test_perfect_result_scores_one(gt_dir: Path, tmp_path: Path) -> None:
    res = _write_result(tmp_path, _masks(GT_TRACKS, BOXES), GT_TRACKS)
    scores = evaluate_ctc(gt_dir, res)
    assert scores["SEG"] == pytest.approx(1.0)
    assert scores["TRA"] == pytest.approx(1.0)
    assert scores["DET"] == pytest.approx(1.0)
    assert scores["AOGM_0"] == pytest.approx(AOGM_0)


def test_removed_cell_costs_one_false_negative_and_one_missing_edge(gt_dir: Path, tmp_path: Path) -> None:
    # track 4 is missing from frame 3: one FN vertex (weight 10) and its link 2->3 is missing (EA, 1.5)
    tracks = [(1, 0, 1, 0), (2, 2, 3, 1), (3, 2, 3, 1), (4, 0, 2, 0)]
    res = _write_result(tmp_path, _masks(tracks, BOXES), tracks)
    scores = evaluate_ctc(gt_dir, res)
    assert (scores["AOGM_FN"], scores["AOGM_EA"], scores["AOGM_FP"]) == (1, 1, 0)
    assert scores["DET"] == pytest.approx(1 - 10 * 1 / AOGM_D0)  # 1 - 10/100 = 0.9
    assert scores["TRA"] == pytest.approx(1 - (10 * 1 + 1.5 * 1) / AOGM_0)  # 1 - 11.5/112 = 0.89732
    assert scores["SEG"] == pytest.approx(1.0)  # frame 3 has no SEG mask


def test_split_cell_lowers_seg_by_its_jaccard(gt_dir: Path, tmp_path: Path) -> None:
    # In frame 0 the 10x10 cell 4 is covered by label 4 on cols 20-25 (60 px) and label 5 on cols 26-29
    # (40 px). Label 4 covers > 50 % of the GT cell, so it is the match: Jaccard = 60 / 100 = 0.6.
    masks = _masks(GT_TRACKS, BOXES)
    masks[0, 20:30, 26:30] = 5
    tracks = [*GT_TRACKS, (5, 0, 0, 0)]
    res = _write_result(tmp_path, masks, tracks)
    scores = evaluate_ctc(gt_dir, res)
    # SEG objects: frame 0 {1, 4}, frame 2 {2, 3, 4} -> (1 + 0.6 + 1 + 1 + 1) / 5 = 0.92
    assert scores["SEG"] == pytest.approx((1 + 0.6 + 1 + 1 + 1) / 5)
    # label 5 matches no GT cell: one false positive (weight 1) -> DET = 1 - 1/100, TRA = 1 - 1/112
    assert scores["AOGM_FP"] == 1
    assert scores["DET"] == pytest.approx(1 - 1 / AOGM_D0)
    assert scores["TRA"] == pytest.approx(1 - 1 / AOGM_0)


def test_orphaned_daughters_cost_two_missing_parent_edges(gt_dir: Path, tmp_path: Path) -> None:
    # Daughters 2 and 3 are segmented but linked to no parent: parent edges 1->2 and 1->3 are missing.
    tracks = [(1, 0, 1, 0), (2, 2, 3, 0), (3, 2, 3, 0), (4, 0, 3, 0)]
    res = _write_result(tmp_path, _masks(tracks, BOXES), tracks)
    scores = evaluate_ctc(gt_dir, res)
    assert (scores["AOGM_EA"], scores["AOGM_ED"], scores["AOGM_EC"]) == (2, 0, 0)
    assert scores["DET"] == pytest.approx(1.0)
    assert scores["TRA"] == pytest.approx(1 - 1.5 * 2 / AOGM_0)  # 1 - 3/112 = 0.97321


def test_parent_continuing_into_a_daughter_costs_a_wrong_semantics_edge(gt_dir: Path, tmp_path: Path) -> None:
    # The tracker keeps label 1 for daughter 2 (frames 2-3) and starts 3 without a parent: the GT parent
    # link 1->2 exists as a plain track link (EC, weight 1) and the link 1->3 is missing (EA, 1.5).
    masks = _masks([(1, 0, 1, 0), (3, 2, 3, 0), (4, 0, 3, 0)], BOXES)
    masks[2:4, BOXES[2][0], BOXES[2][1]] = 1
    tracks = [(1, 0, 3, 0), (3, 2, 3, 0), (4, 0, 3, 0)]
    res = _write_result(tmp_path, masks, tracks)
    scores = evaluate_ctc(gt_dir, res)
    assert (scores["AOGM_EC"], scores["AOGM_EA"], scores["AOGM_ED"]) == (1, 1, 0)
    assert scores["TRA"] == pytest.approx(1 - (1 * 1 + 1.5 * 1) / AOGM_0)  # 1 - 2.5/112 = 0.97768


def test_missing_inputs_name_the_path(gt_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="result folder not found"):
        evaluate_ctc(gt_dir, tmp_path / "nowhere")
    res = _write_result(tmp_path, _masks(GT_TRACKS, BOXES), GT_TRACKS)
    (res / "res_track.txt").unlink()
    with pytest.raises(ValueError, match=r"res_track\.txt: file not found"):
        evaluate_ctc(gt_dir, res)
    _write_table(res / "res_track.txt", GT_TRACKS)
    with pytest.raises(ValueError, match="ground-truth folder not found"):
        evaluate_ctc(tmp_path / "02_GT", res)


def test_masks_and_table_that_disagree_are_rejected(gt_dir: Path, tmp_path: Path) -> None:
    # res_track.txt says track 4 lives until frame 3, but frame 3 has no label 4
    tracks = [(1, 0, 1, 0), (2, 2, 3, 1), (3, 2, 3, 1), (4, 0, 2, 0)]
    res = _write_result(tmp_path, _masks(tracks, BOXES), GT_TRACKS)
    with pytest.raises(ValueError, match="not a valid CTC result"):
        evaluate_ctc(gt_dir, res)
