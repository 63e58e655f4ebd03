"""CTC files that other tools read correctly: pixel size in TIFF tags and ImageJ metadata, frame-name widths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellgen.cli import main
from cellgen.data.ctc import (
    CTCSequence,
    PixelSize,
    Track,
    copy_sequence,
    frame_digits,
    read_pixel_size,
    validate_sequence,
    write_sequence,
    write_tiff,
)
from tests.conftest import shared_sequence


def _one_cell(frames: int, size: int = 16) -> tuple[np.ndarray, np.ndarray, dict[int, Track]]:
    images = np.full((frames, size, size), 10, np.uint16)
    masks = np.zeros((frames, size, size), np.uint16)
    masks[:, 4:9, 4:9] = 1
    return images, masks, {1: Track(1, 0, frames - 1, 0)}


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int32])
def test_pixel_size_round_trips_through_tiff_tags_and_imagej_metadata(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "frame.tif"
    write_tiff(path, np.zeros((8, 12), dtype), PixelSize(0.124, 0.25))
    size = read_pixel_size(path)
    assert size is not None and size.unit == "micron"
    assert size.y == pytest.approx(0.124, rel=1e-6) and size.x == pytest.approx(0.25, rel=1e-6)
    with tifffile.TiffFile(path) as tif:
        x_resolution = tif.pages[0].tags["XResolution"].value
        if np.dtype(dtype) == np.int32:  # not an ImageJ type: plain TIFF tags in pixels per centimetre
            assert int(tif.pages[0].tags["ResolutionUnit"].value) == 3
            assert x_resolution[0] / x_resolution[1] == pytest.approx(1e4 / 0.25, rel=1e-6)
        else:  # what Fiji writes and reads: pixels per micron, unit in the ImageJ description
            assert tif.imagej_metadata["unit"] == "micron"
            assert x_resolution[0] / x_resolution[1] == pytest.approx(4.0, rel=1e-6)


def test_frame_without_resolution_has_no_pixel_size(tmp_path: Path) -> None:
    write_tiff(tmp_path / "plain.tif", np.zeros((4, 4), np.uint8))
    assert read_pixel_size(tmp_path / "plain.tif") is None


@pytest.mark.parametrize(
    ("relative", "microns"),
    [("Fluo-N2DH-GOWT1/01", 0.24), ("Fluo-N2DH-SIM+/01", 0.124), ("PhC-C2DL-PSC/02", 1.6)],
)
def test_pixel_size_of_real_ctc_frames(relative: str, microns: float) -> None:
    size = read_pixel_size(shared_sequence(relative))
    assert size is not None
    assert size.y == pytest.approx(microns, abs=5e-4) and size.x == pytest.approx(microns, abs=5e-4)


def test_written_sequence_carries_pixel_size_in_frames_and_masks(tmp_path: Path) -> None:
    images, masks, tracks = _one_cell(3)
    seq = CTCSequence(write_sequence(tmp_path, "01", images, masks, tracks, pixel_size=PixelSize(0.24, 0.24)))
    files = [*seq.frame_paths.values(), *seq.tra_paths.values(), *seq.seg_paths.values()]
    assert len(files) == 9
    for path in files:
        assert read_pixel_size(path).x == pytest.approx(0.24, rel=1e-6)
    copied = copy_sequence(seq.path, tmp_path / "copy")  # a re-written sequence keeps the source's pixel size
    assert read_pixel_size(copied).y == pytest.approx(0.24, rel=1e-6)


def test_frame_digits_follow_the_ctc_convention() -> None:
    assert [frame_digits(n) for n in (1, 1000, 1001, 10_000, 10_001)] == [3, 3, 4, 4, 6]


def test_long_sequence_names_sort_in_frame_order_for_ctc_tools(tmp_path: Path) -> None:
    from ctc_metrics.utils.filesystem import parse_masks

    images, masks, tracks = _one_cell(1200, size=8)
    seq = CTCSequence(write_sequence(tmp_path, "01", iter(images), iter(masks), tracks))  # streamed: count unknown
    assert seq.frame_paths[0].name == "t0000.tif" and seq.frame_paths[1199].name == "t1199.tif"
    read_order = [int(Path(p).stem[len("man_track") :]) for p in parse_masks(str(seq.gt_dir / "TRA"))]
    assert read_order == list(range(1200))  # py-ctcmetrics sorts names as text
    assert validate_sequence(seq.path, check_masks=False) == []
    short = write_sequence(tmp_path, "02", images[:5], masks[:5], {1: Track(1, 0, 4, 0)})
    assert sorted(p.name for p in short.iterdir())[0] == "t000.tif"


def test_check_ctc_flags_mixed_name_widths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, masks, tracks = _one_cell(3)
    seq = write_sequence(tmp_path, "01", images, masks, tracks, digits=3)
    (seq / "t002.tif").rename(seq / "t0002.tif")  # what a 3-digit writer does past t999
    assert main(["check-ctc", str(seq)]) == 2
    assert "mixed digit widths" in capsys.readouterr().out
