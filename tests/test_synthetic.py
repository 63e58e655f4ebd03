"""Procedural demo data: deterministic, valid, with divisions, in two flavours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellgen.cli import main
from cellgen.data.ctc import CTCSequence, validate_sequence
from cellgen.data.synthetic import generate_sequence


def test_same_seed_same_sequence_and_different_seed_differs() -> None:
    a = generate_sequence(frames=12, height=96, width=96, cells=4, seed=3)
    b = generate_sequence(frames=12, height=96, width=96, cells=4, seed=3)
    c = generate_sequence(frames=12, height=96, width=96, cells=4, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_cells_move_and_masks_match_tracks() -> None:
    images, masks, tracks = generate_sequence(frames=30, height=128, width=128, cells=5, seed=1, cell_cycle=(8, 12))
    assert images.dtype == np.uint8 and masks.dtype == np.uint16
    assert any(t.parent for t in tracks.values()), "short cell cycles must produce divisions"
    for label, track in tracks.items():
        present = [t for t in range(30) if (masks[t] == label).any()]
        assert present == list(range(track.begin, track.end + 1))
    first = next(iter(tracks))
    ys0 = np.argwhere(masks[0] == first).mean(0)
    ys1 = np.argwhere(masks[tracks[first].end] == first).mean(0)
    assert np.abs(ys1 - ys0).sum() > 0.5


def test_flavours_look_different() -> None:
    fluo, masks, _ = generate_sequence(frames=2, height=96, width=96, cells=3, flavour="fluo", seed=0)
    phc, _, _ = generate_sequence(frames=2, height=96, width=96, cells=3, flavour="phc", seed=0)
    inside = masks[0] > 0
    assert fluo[0][inside].mean() > 3 * fluo[0][~inside].mean()  # bright nuclei on dark ground
    assert phc[0][inside].mean() < phc[0][~inside].mean()  # dark cells on grey ground
    with pytest.raises(ValueError, match="flavour"):
        generate_sequence(flavour="dic")


def test_default_demo_dataset_is_valid(demo_dataset: Path) -> None:
    for flavour in ("Demo-Fluo", "Demo-PhC"):
        for name in ("01", "02"):
            seq = CTCSequence(demo_dataset / flavour / name)
            assert len(seq) == 64 and seq.shape == (256, 256)
            assert validate_sequence(seq.path) == []
            assert len(seq.divisions()) >= 1


def test_prepare_data_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["prepare-data", "demo", "--out", str(out), "--frames", "6", "--size", "96", "--cells", "3"]
    assert main(args + ["--flavours", "[phc]", "--sequences", "1"]) == 0
    assert (out / "Demo-PhC" / "01_GT" / "TRA" / "man_track.txt").is_file()
    assert "Demo-PhC/01" in capsys.readouterr().out
    assert main(args + ["--flavours", "[phc]", "--sequences", "1"]) == 2  # refuses to overwrite silently
