"""Event lengths implied by annotations and the gaps of a normal-cell map at divisions (issue 12, item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cellgen.data.ctc import CTCSequence, Track, write_sequence
from cellgen.data.event_frames import load_volume
from cellgen.metrics.event_lengths import DivisionFrames, annotated_event_lengths, map_gaps_at_divisions

SIZE = 48


def _disc(cy: int, cx: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


@pytest.fixture(scope="module")
def dividing_cell(tmp_path_factory: pytest.TempPathFactory) -> CTCSequence:
    """One cell (track 1, frames 0-9) that stretches in frames 8-9 and divides into tracks 2 and 3 at frame 10;
    daughter 2 starts at a third of its later size. Frames 0-15."""
    masks, images = [], []
    for t in range(16):
        mask = np.zeros((SIZE, SIZE), np.uint16)
        if t < 8:
            mask[_disc(24, 24, 8)] = 1
        elif t < 10:
            mask[_disc(24, 24, 10)] = 1  # anaphase: 56 % larger
        else:
            mask[_disc(24, 12, 4 if t == 10 else 7)] = 2  # just born: small, then grown
            mask[_disc(24, 36, 7)] = 3
        masks.append(mask)
        images.append((mask > 0).astype(np.uint8) * 200)
    tracks = {1: Track(1, 0, 9), 2: Track(2, 10, 15, 1), 3: Track(3, 10, 15, 1)}
    root = tmp_path_factory.mktemp("division")
    return CTCSequence(write_sequence(root, "01", images, masks, tracks))


def test_division_frames_length_is_the_run_across_the_division() -> None:
    assert DivisionFrames(10, (7, 8, 9, 10, 11), (False, True, True, True, False)).length() == 3
    assert DivisionFrames(10, (8, 9, 10, 11), (True, False, False, True)).length() == 0  # not touching B - 1 or B
    assert DivisionFrames(10, (9, 10), (False, True)).length() == 1


def test_annotated_event_is_the_stretched_mother_and_the_small_daughter(dividing_cell: CTCSequence) -> None:
    (division,) = annotated_event_lengths(dividing_cell)
    assert division.frame == 10 and division.length() == 3  # frames 8, 9 (mother) and 10 (daughter)


def test_map_gaps_and_fragments_at_divisions(dividing_cell: CTCSequence) -> None:
    volume = load_volume(dividing_cell, 0.5)
    masks = np.stack([dividing_cell.tra_mask(t) for t in range(16)])
    normal = masks[:, ::2, ::2] > 0
    normal[8:11] = False  # the cell leaves the normal-cell map for frames 8-10
    flags, pieces = map_gaps_at_divisions(normal, volume, dividing_cell)
    assert flags[0].length() == 3 and pieces == 1.0
    striped = normal.copy()
    striped[:, ::3] = False  # a fragmented map: every cell in stripes
    assert map_gaps_at_divisions(striped, volume, dividing_cell)[1] > 2


def test_check_event_lengths_command(tmp_path: Path, dividing_cell: CTCSequence, capsys) -> None:
    """The command on a tiny M1 checkpoint: one JSON line for the annotation, one per binarisation."""
    import torch

    from cellgen.cli import main
    from cellgen.models.event_length import EventLengthEstimator

    torch.manual_seed(0)
    ckpt = tmp_path / "m1.ckpt"
    model = EventLengthEstimator(num_maps=3, width=4)
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": "2"},
        ckpt,
    )
    out = tmp_path / "report.json"
    args = ["check-event-lengths", f"--ckpt={ckpt}", f"--sequence={dividing_cell.path}", "--downscale=0.5"]
    assert main([*args, f"--out={out}"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-3:]]
    assert [line["measure"] for line in lines] == ["annotated (round)", "gap in y (threshold)", "gap in y (robust)"]
    assert lines[0]["divisions"] == 1 and lines[0]["mean"] == 3
    assert json.loads(out.read_text())["annotated"]["lengths"] == [3]
    assert main([*args, "--binarisations=[otsu]"]) == 2


def _rod(length: int, width: int, waist: int | None = None, angle: float = 0.0) -> np.ndarray:
    """A rod of ``length`` x ``width`` px centred in a 96 px frame, rotated; ``waist`` narrows its middle."""
    size = 96
    yy, xx = np.mgrid[0:size, 0:size] - size / 2
    u = xx * np.cos(angle) + yy * np.sin(angle)  # along the rod
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    half_width = np.full_like(u, width / 2)
    if waist is not None:  # a V-shaped notch of 8 px around the middle
        half_width = np.minimum(half_width, waist / 2 + np.abs(u) / 2)
    return (np.abs(u) <= length / 2) & (np.abs(v) <= half_width)


def test_waist_ratio_sees_a_constriction_at_any_angle() -> None:
    from cellgen.metrics.event_lengths import waist_ratio

    for angle in (0.0, 0.6, np.pi / 2):
        assert waist_ratio(_rod(60, 16, angle=angle)) > 0.85
        assert waist_ratio(_rod(60, 16, waist=6, angle=angle)) < 0.6


@pytest.fixture(scope="module")
def dividing_rod(tmp_path_factory: pytest.TempPathFactory) -> CTCSequence:
    """A rod (track 1, frames 0-9) that grows, constricts in frames 8-9 and splits into tracks 2 and 3 at 10."""
    masks, images = [], []
    for t in range(14):
        mask = np.zeros((96, 96), np.uint16)
        if t < 10:
            mask[_rod(50 + 2 * t, 14, waist=4 if t >= 8 else None, angle=0.3)] = 1
        else:
            halves = _rod(70, 14, angle=0.3)
            yy, xx = np.mgrid[0:96, 0:96] - 48
            along = xx * np.cos(0.3) + yy * np.sin(0.3)
            mask[halves & (along < -1)] = 2
            mask[halves & (along > 1)] = 3
        masks.append(mask)
        images.append((mask > 0).astype(np.uint8) * 200)
    tracks = {1: Track(1, 0, 9), 2: Track(2, 10, 13, 1), 3: Track(3, 10, 13, 1)}
    root = tmp_path_factory.mktemp("rod")
    return CTCSequence(write_sequence(root, "01", images, masks, tracks))


def test_rod_event_is_the_constriction_and_the_split(dividing_rod: CTCSequence, dividing_cell: CTCSequence) -> None:
    from cellgen.metrics.event_lengths import cell_shape

    assert cell_shape(dividing_rod) == "rod" and cell_shape(dividing_cell) == "round"
    (division,) = annotated_event_lengths(dividing_rod)  # auto: the rod rule
    assert division.frame == 10 and division.length() == 3  # frames 8, 9 (constricted) and 10 (split)
    # The area rule would call the growing rod's last frames an event without any constriction.
    (by_area,) = annotated_event_lengths(dividing_rod, shape="round")
    assert by_area.flags != division.flags
    with pytest.raises(ValueError, match="shape must be one of"):
        annotated_event_lengths(dividing_rod, shape="bacterium")
