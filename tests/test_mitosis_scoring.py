"""Mitosis point scoring against hand counts: tolerance edges, duplicates, optimal matching, CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellgen.data.points import read_points_csv, write_points_csv
from cellgen.metrics.mitosis import match_events, per_event_report, score_detections


def pts(*rows: tuple[float, ...]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)


def counts(result: dict) -> tuple[int, int, int]:
    return result["tp"], result["fp"], result["fn"]


def test_perfect_match() -> None:
    gt = pts((0, 10, 10), (3, 50, 60), (7, 20, 90))
    pred = pts((7, 21, 90, 0.9), (0, 10, 10, 0.8), (3, 50, 58, 0.7))
    for rule in ("hungarian", "lenient"):
        result = score_detections(gt, pred, rule=rule)
        assert counts(result) == (3, 0, 0)
        assert result["precision"] == result["recall"] == result["f1"] == 1.0
    assert match_events(gt, pred) == [(0, 1), (1, 2), (2, 0)]


def test_duplicate_prediction_is_a_false_positive_only_under_hungarian() -> None:
    gt = pts((5, 10, 10))
    pred = pts((5, 10, 11), (5, 12, 10))  # two predictions near the same event
    strict = score_detections(gt, pred, rule="hungarian")
    assert counts(strict) == (1, 1, 0)
    assert strict["precision"] == 0.5 and strict["recall"] == 1.0 and strict["f1"] == pytest.approx(2 / 3)
    lenient = score_detections(gt, pred, rule="lenient")
    assert counts(lenient) == (1, 0, 0)
    assert lenient["precision"] == lenient["recall"] == lenient["f1"] == 1.0
    far = np.vstack([pred, pts((5, 80, 80))])  # a prediction near no event is a false positive under both
    assert counts(score_detections(gt, far, rule="hungarian")) == (1, 2, 0)
    assert counts(score_detections(gt, far, rule="lenient")) == (1, 1, 0)


def test_one_prediction_between_two_events() -> None:
    gt = pts((0, 0, 0), (0, 0, 8))
    pred = pts((0, 0, 4))
    assert counts(score_detections(gt, pred, rule="hungarian")) == (1, 0, 1)
    assert counts(score_detections(gt, pred, rule="lenient")) == (2, 0, 0)  # many-to-one allowed


def test_spatial_tolerance_is_inclusive() -> None:
    gt = pts((0, 0, 0))
    assert counts(score_detections(gt, pts((0, 6, 8)), spatial_tol=10)) == (1, 0, 0)  # distance exactly 10
    assert counts(score_detections(gt, pts((0, 6, 8.01)), spatial_tol=10)) == (0, 1, 1)
    assert counts(score_detections(gt, pts((0, 6, 8.01)), spatial_tol=10, rule="lenient")) == (0, 1, 1)


@pytest.mark.parametrize(
    ("dt", "tol", "hit"), [(1, 1, True), (-1, 1, True), (2, 1, False), (3, 3, True), (4, 3, False)]
)
def test_temporal_tolerance_is_inclusive(dt: int, tol: int, hit: bool) -> None:
    gt, pred = pts((10, 5, 5)), pts((10 + dt, 5, 5))
    expected = (1, 0, 0) if hit else (0, 1, 1)
    for rule in ("hungarian", "lenient"):
        assert counts(score_detections(gt, pred, temporal_tol=tol, rule=rule)) == expected


def test_hungarian_beats_greedy_nearest_first() -> None:
    # Nearest pair first (gt0-pred0, distance 5) leaves gt1-pred1 at distance 21: greedy finds 1 match.
    # The optimum pairs gt0-pred1 (9) and gt1-pred0 (7): 2 matches.
    gt = pts((0, 0, 0), (0, 0, 12))
    pred = pts((0, 0, 5), (0, 0, -9))
    assert match_events(gt, pred, spatial_tol=10) == [(0, 1), (1, 0)]
    assert counts(score_detections(gt, pred, spatial_tol=10)) == (2, 0, 0)


def test_inadmissible_pairs_are_never_matched() -> None:
    gt = pts((0, 0, 0), (9, 0, 0))
    pred = pts((0, 0, 50), (0, 0, 3))  # one too far in space, one too far in time from gt1
    assert match_events(gt, pred) == [(0, 1)]
    assert match_events(pts((0, 0, 0)), pts((5, 0, 0))) == []


def test_empty_inputs() -> None:
    none = np.empty((0, 3))
    some = pts((0, 1, 1), (4, 9, 9))
    assert score_detections(none, []) == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
    }
    assert score_detections(some, none) == {
        "precision": 1.0,
        "recall": 0.0,
        "f1": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 2,
    }
    assert score_detections(none, some) == {
        "precision": 0.0,
        "recall": 1.0,
        "f1": 0.0,
        "tp": 0,
        "fp": 2,
        "fn": 0,
    }
    assert score_detections(some, none, rule="lenient")["f1"] == 0.0
    assert score_detections(none, some, rule="lenient")["fp"] == 2
    assert match_events(none, some) == match_events(some, none) == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rule"):
        score_detections(pts((0, 0, 0)), pts((0, 0, 0)), rule="greedy")
    with pytest.raises(ValueError, match="shape"):
        score_detections(np.zeros((2, 2)), pts((0, 0, 0)))
    with pytest.raises(ValueError, match="tolerances"):
        match_events(pts((0, 0, 0)), pts((0, 0, 0)), spatial_tol=-1)


def test_csv_round_trip(tmp_path: Path) -> None:
    scored = pts((3, 10.5, 20.25, 0.875), (12, 1 / 3, 7, 0.1))
    path = write_points_csv(tmp_path / "sub" / "pred.csv", scored)
    assert path.read_text().splitlines()[0] == "t,y,x,score"
    np.testing.assert_array_equal(read_points_csv(path), scored)
    plain = write_points_csv(tmp_path / "gt.csv", scored, with_score=False)
    np.testing.assert_array_equal(read_points_csv(plain), scored[:, :3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.csv", "sub"]  # no temp files left behind
    with pytest.raises(ValueError, match="with_score=False"):
        write_points_csv(tmp_path / "x.csv", scored[:, :3])


def test_csv_header_only_and_column_order(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("t,y,x\n")
    assert read_points_csv(tmp_path / "empty.csv").shape == (0, 3)
    (tmp_path / "empty_scored.csv").write_text("t,y,x,score\n")
    assert read_points_csv(tmp_path / "empty_scored.csv").shape == (0, 4)
    (tmp_path / "shuffled.csv").write_text("x, t, y\n3,1,2\n\n")
    np.testing.assert_array_equal(read_points_csv(tmp_path / "shuffled.csv"), [[1, 2, 3]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("t,y\n1,2\n", "missing column.*x"),
        ("t,y,x\n1,2,abc\n", "line 2: non-numeric x 'abc'"),
        ("t,y,x\n1,2,nan\n", "non-finite x"),
        ("t,y,x\n1,2\n", "line 2 has 2 fields"),
    ],
)
def test_bad_csv_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"bad.csv.*{message}"):
        read_points_csv(path)


def test_per_event_report_says_why_each_event_was_missed() -> None:
    gt = np.array([[5, 10, 10], [9, 50, 50], [20, 80, 80]])
    pred = np.array([[5, 13, 14, 0.9], [6, 10, 12, 0.2], [9, 50, 65, 0.7]])  # the 3rd is 15 px from event 2
    rows = per_event_report(gt, pred, spatial_tol=10, temporal_tol=1)
    assert [r["matched"] for r in rows] == [True, False, False]
    assert rows[0]["best_score"] == 0.9 and rows[0]["distance"] == 2.0 and rows[0]["dt"] == 1  # nearest: 2 px
    assert rows[1]["best_score"] == 0.0 and rows[1]["distance"] == 15.0 and rows[1]["dt"] == 0
    assert rows[2]["distance"] is None and rows[2]["best_score"] == 0.0  # nothing within a frame
