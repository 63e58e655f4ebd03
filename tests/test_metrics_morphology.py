"""Shape measures on drawn disks and ellipses, the two-sample tests, plots and temporal consistency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk, ellipse

from cellgen.metrics.morphology import (
    MEASURES,
    compare_morphology,
    region_table,
    temporal_consistency,
    violin_plots,
)


def _disk_masks(radius: float, frames: int = 2, size: int = 64) -> np.ndarray:
    masks = np.zeros((frames, size, size), np.uint16)
    rows, cols = disk((size // 2, size // 2), radius, shape=(size, size))
    masks[:, rows, cols] = 1
    return masks


def test_disk_area_and_eccentricity() -> None:
    table = region_table(_disk_masks(radius=12))
    assert set(MEASURES) <= set(table)
    assert table["frame"].tolist() == [0, 1]
    assert table["area"] == pytest.approx(np.pi * 12**2, rel=0.05)  # drawn disk: 437 px vs 452.4
    assert table["perimeter"] == pytest.approx(2 * np.pi * 12, rel=0.08)
    assert np.all(table["eccentricity"] < 0.1)


def test_ellipse_major_axis_and_orientation() -> None:
    masks = np.zeros((1, 80, 80), np.int32)
    masks[0][ellipse(40, 40, 8, 20, shape=(80, 80))] = 3  # semi-axes 8 (rows) and 20 (cols)
    table = region_table(masks)
    assert table["label"].tolist() == [3]
    assert table["major_axis_length"][0] == pytest.approx(2 * 20, rel=0.05)
    assert table["eccentricity"][0] == pytest.approx(np.sqrt(1 - (8 / 20) ** 2), abs=0.02)
    # skimage measures orientation from the row axis: a horizontal major axis lies at +-pi/2
    assert abs(table["orientation"][0]) == pytest.approx(np.pi / 2, abs=0.05)


def test_empty_masks_give_empty_columns() -> None:
    table = region_table(np.zeros((3, 16, 16), np.uint8))
    assert all(len(values) == 0 for values in table.values())


def test_same_distribution_is_not_rejected_but_a_shift_is() -> None:
    rng = np.random.default_rng(0)
    real = {key: rng.normal(100, 10, 300) for key in MEASURES}
    same = {key: rng.normal(100, 10, 300) for key in MEASURES}
    shifted = {key: rng.normal(110, 10, 300) for key in MEASURES}
    alike = compare_morphology(real, same)
    apart = compare_morphology(real, shifted)
    for key in MEASURES:
        assert alike[key]["t_pvalue"] > 1e-3 and alike[key]["ks_pvalue"] > 1e-3
        assert apart[key]["t_pvalue"] < 1e-10 and apart[key]["ks_pvalue"] < 1e-10
        assert apart[key]["synth_mean"] - apart[key]["real_mean"] == pytest.approx(10, abs=2.5)


def test_violin_plots_write_a_png(tmp_path: Path) -> None:
    real = region_table(_disk_masks(10, frames=3))
    synth = region_table(_disk_masks(12, frames=3))
    path = violin_plots(real, synth, tmp_path / "plots" / "morphology.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_temporal_consistency() -> None:
    masks = _disk_masks(10, frames=4)
    static = np.repeat(np.random.default_rng(1).random((1, 64, 64)), 4, axis=0)
    assert temporal_consistency(static, masks) == 0.0
    brightening = static + np.arange(4)[:, None, None] * 0.5  # +0.5 per frame everywhere
    assert temporal_consistency(brightening, masks) == pytest.approx(0.5)
    # changes outside the cells are ignored
    flicker = static.copy()
    flicker[1, 0, 0] += 100.0
    assert temporal_consistency(flicker, masks) == 0.0
