"""CTC layer: round trips, validator checks, bad input, lineage helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellgen.cli import main
from cellgen.data.ctc import (
    CTCSequence,
    Track,
    read_tiff,
    read_tracks,
    validate_sequence,
    write_sequence,
    write_tracks,
)
from cellgen.data.errors import CellgenInputError


def _toy(frames: int = 4) -> tuple[np.ndarray, np.ndarray, dict[int, Track]]:
    """Cell 1 lives in frames 0-1 and divides into 2 and 3 (frames 2-3); cell 4 lives throughout."""
    images = np.random.default_rng(0).integers(0, 255, (frames, 32, 40), dtype=np.uint8)
    masks = np.zeros((frames, 32, 40), np.uint16)
    masks[:2, 4:10, 4:10] = 1
    masks[2:, 2:7, 4:10] = 2
    masks[2:, 8:13, 4:10] = 3
    masks[:, 20:28, 20:30] = 4
    tracks = {1: Track(1, 0, 1, 0), 2: Track(2, 2, 3, 1), 3: Track(3, 2, 3, 1), 4: Track(4, 0, 3, 0)}
    return images, masks, tracks


@pytest.fixture
def toy_seq(tmp_path: Path) -> Path:
    images, masks, tracks = _toy()
    return write_sequence(tmp_path / "ds", "01", images, masks, tracks)


def test_round_trip_equal(toy_seq: Path) -> None:
    images, masks, tracks = _toy()
    seq = CTCSequence(toy_seq)
    assert len(seq) == 4 and seq.shape == (32, 40)
    assert seq.tracks == tracks
    for t in range(4):
        np.testing.assert_array_equal(seq.image(t), images[t])
        np.testing.assert_array_equal(seq.tra_mask(t), masks[t])
        np.testing.assert_array_equal(seq.seg_mask(t), masks[t])
    with tifffile.TiffFile(seq.frame_paths[0]) as tif:
        assert tif.pages[0].compression.name in ("ADOBE_DEFLATE", "DEFLATE")
    assert validate_sequence(toy_seq) == []


@pytest.mark.parametrize("digits", [3, 4, 6])
def test_frame_name_widths(tmp_path: Path, digits: int) -> None:
    images, masks, tracks = _toy()
    path = write_sequence(tmp_path, "02", images, masks, tracks, digits=digits)
    assert (path / f"t{0:0{digits}d}.tif").is_file()
    seq = CTCSequence(path)
    assert seq.frame_indices == [0, 1, 2, 3] and sorted(seq.tra_paths) == [0, 1, 2, 3]


def test_lazy_frames_and_divisions(toy_seq: Path) -> None:
    seq = CTCSequence(toy_seq)
    frames = seq.images()
    assert next(frames).shape == (32, 40)  # a generator: one frame in memory at a time
    (division,) = seq.divisions()
    assert division.frame == 2 and division.parent == 1 and division.daughters == (2, 3)
    assert (division.y, division.x) == pytest.approx((6.5, 6.5))


def _rewrite_tracks(seq_dir: Path, tracks: list[Track]) -> None:
    write_tracks(seq_dir.parent / "01_GT" / "TRA" / "man_track.txt", tracks)


@pytest.mark.parametrize(
    ("tracks", "expected"),
    [
        ([Track(1, 0, 1), Track(2, 2, 3, 1), Track(3, 2, 3, 9), Track(4, 0, 3)], "names parent 9"),
        ([Track(1, 0, 2), Track(2, 2, 3, 1), Track(3, 2, 3, 1), Track(4, 0, 3)], "its parent 1 ends at 2"),
        ([Track(1, 0, 1), Track(2, 2, 3, 1), Track(3, 2, 3, 1)], "label 4 is not in man_track.txt"),
        ([Track(1, 0, 1), Track(2, 2, 3, 1), Track(3, 2, 3, 1), Track(4, 0, 3), Track(5, 0, 1)], "track 5 is missing"),
        ([Track(1, 0, 1), Track(2, 2, 3, 1), Track(3, 2, 3, 1), Track(4, 0, 9)], "after the last frame"),
        ([Track(-1, 0, 1), Track(1, 0, 1), Track(2, 2, 3, 1), Track(3, 2, 3, 1), Track(4, 0, 3)], "not positive"),
    ],
)
def test_validator_finds_lineage_problems(toy_seq: Path, tracks: list[Track], expected: str) -> None:
    _rewrite_tracks(toy_seq, tracks)
    problems = validate_sequence(toy_seq)
    assert any(expected in p for p in problems), problems


def test_validator_finds_frame_size_mismatch(toy_seq: Path) -> None:
    tifffile.imwrite(toy_seq / "t002.tif", np.zeros((31, 40), np.uint8))
    problems = validate_sequence(toy_seq)
    assert any("t002.tif" in p and "differs" in p for p in problems)


def test_duplicate_track_id_is_one_line_error(toy_seq: Path) -> None:
    table = toy_seq.parent / "01_GT" / "TRA" / "man_track.txt"
    table.write_text("1 0 1 0\n1 0 1 0\n")
    with pytest.raises(CellgenInputError, match="appears twice") as info:
        read_tracks(table)
    assert "\n" not in str(info.value) and str(table) in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_tiff_names_the_file(toy_seq: Path, damage: str) -> None:
    frame = toy_seq / "t001.tif"
    data = frame.read_bytes()
    frame.write_bytes(b"not a tiff at all" if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(CellgenInputError) as info:
        read_tiff(frame)
    assert str(frame) in str(info.value)
    assert any(str(frame) in p for p in validate_sequence(toy_seq)) or damage == "truncated"


def test_missing_track_table_and_layout_errors(tmp_path: Path, toy_seq: Path) -> None:
    (toy_seq.parent / "01_GT" / "TRA" / "man_track.txt").unlink()
    assert any("man_track.txt" in p for p in validate_sequence(toy_seq))
    empty = tmp_path / "empty" / "01"
    empty.mkdir(parents=True)
    with pytest.raises(CellgenInputError, match="no frames"):
        CTCSequence(empty)
    with pytest.raises(CellgenInputError, match="not found"):
        CTCSequence(tmp_path / "nope")


def test_write_is_atomic_and_refuses_bad_output(tmp_path: Path) -> None:
    images, masks, tracks = _toy()
    bad_tracks = dict(tracks)
    del bad_tracks[4]
    with pytest.raises(CellgenInputError, match="invalid"):
        write_sequence(tmp_path, "01", images, masks, bad_tracks)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written, no temp folder left
    with pytest.raises(CellgenInputError, match="empty"):
        write_sequence(tmp_path, "01", [], [], {})
    write_sequence(tmp_path, "01", images, masks, tracks)
    with pytest.raises(CellgenInputError, match="already exists"):
        write_sequence(tmp_path, "01", images, masks, tracks)


def test_check_ctc_command(toy_seq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-ctc", str(toy_seq)]) == 0
    assert "valid" in capsys.readouterr().out
    _rewrite_tracks(toy_seq, [Track(1, 0, 1), Track(2, 2, 3, 1), Track(3, 2, 3, 7)])
    assert main(["check-ctc", str(toy_seq)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 2 and all(str(toy_seq.parent) in line for line in lines)
    assert main(["check-ctc", str(toy_seq.parent / "missing")]) == 2
