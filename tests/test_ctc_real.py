"""CTC round trip on the real sequences in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellgen.data.ctc import CTCSequence, Track, validate_sequence, write_sequence
from tests.conftest import shared_sequence

FULL_TRA = ["Fluo-N2DH-GOWT1/01", "Fluo-N2DH-GOWT1/02", "Fluo-N2DH-SIM+/01", "PhC-E.coli-VanVliet/01"]


def _round_trip(seq: CTCSequence, out: Path, frames: list[int]) -> None:
    first = frames[0]
    tracks = {
        k: Track(k, max(v.begin, first) - first, min(v.end, frames[-1]) - first, v.parent if v.begin >= first else 0)
        for k, v in seq.tracks.items()
        if v.end >= first and v.begin <= frames[-1]
    }
    tracks = {k: Track(v.label, v.begin, v.end, v.parent if v.parent in tracks else 0) for k, v in tracks.items()}
    images = [seq.image(t) for t in frames]
    masks = [seq.tra_mask(t) for t in frames]
    written = CTCSequence(write_sequence(out, seq.name, images, masks, tracks, digits=3))
    assert written.tracks == tracks
    for k in range(len(frames)):
        np.testing.assert_array_equal(written.image(k), images[k])
        np.testing.assert_array_equal(written.tra_mask(k), masks[k])


@pytest.mark.parametrize("name", FULL_TRA)
def test_real_sequence_validates_and_round_trips_head(name: str, tmp_path: Path) -> None:
    seq = CTCSequence(shared_sequence(name))
    assert validate_sequence(seq.path, check_masks=False) == []
    _round_trip(seq, tmp_path, seq.frame_indices[:4])


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_TRA)
def test_real_sequence_full_round_trip(name: str, tmp_path: Path) -> None:
    seq = CTCSequence(shared_sequence(name))
    assert validate_sequence(seq.path) == []
    _round_trip(seq, tmp_path, seq.frame_indices)


def test_hela_problems_are_reported_exactly() -> None:
    """HeLa 02 holds 20 frames but a 92-frame lineage and TRA masks for 11 frames: the report says so."""
    seq = CTCSequence(shared_sequence("Fluo-N2DL-HeLa/02"))
    problems = validate_sequence(seq.path, check_masks=False)
    assert problems and all("after the last frame 19" in p for p in problems)
    assert len(seq.st_seg_paths) == 12


def test_psc_without_gt_is_reported() -> None:
    seq_dir = shared_sequence("PhC-C2DL-PSC/02")
    assert any("02_GT" in p for p in validate_sequence(seq_dir))
    assert len(CTCSequence(seq_dir).st_seg_paths) == 50
