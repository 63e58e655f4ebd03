"""Radial descriptor, fitted shape model and generated cell tracks (BVDM mask/lineage generator)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk, ellipse
from skimage.draw import polygon as draw_polygon

from cellgen.synth.contour import (
    canonical_profiles,
    polygon_pixels,
    polygon_vertices,
    radial_profile,
    render_local,
)
from cellgen.synth.shape_model import DIVISION_RATE_FLOOR, ShapeModel
from tests.conftest import shared_sequence


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def model(demo_fluo: Path) -> ShapeModel:
    return ShapeModel.fit([demo_fluo])


def test_descriptor_of_a_disk_is_a_constant_radius() -> None:
    mask = np.zeros((64, 64), bool)
    mask[disk((31.3, 32.6), 15)] = True
    prof = radial_profile(mask, n_angles=64)
    assert prof.radii.shape == (64,)
    assert abs(prof.radii.mean() - 15) < 0.6
    assert prof.radii.std() < 0.05 * prof.radii.mean()
    assert prof.aspect < 1.05


def test_descriptor_of_an_ellipse_has_its_axes_and_orientation() -> None:
    mask = np.zeros((96, 96), bool)
    mask[ellipse(48, 47, 9, 24, rotation=0.5)] = True  # semi-axes 24 (cols) and 9 (rows), turned
    prof = radial_profile(mask, n_angles=64)
    major = (prof.radii[0] + prof.radii[32]) / 2
    minor = (prof.radii[16] + prof.radii[48]) / 2
    assert abs(major - 24) < 1.0 and abs(minor - 9) < 1.0
    assert abs(prof.angle - (-0.5)) < 0.02  # skimage turns counter-clockwise on screen, i.e. towards -y
    assert abs(prof.aspect - 24 / 9) < 0.15


def test_polygon_through_the_profile_redraws_the_mask() -> None:
    mask = np.zeros((64, 64), bool)
    mask[ellipse(31.5, 31.5, 10, 20)] = True
    mask[20:30, 28:36] = True  # a bump: the radial function is no longer an ellipse
    prof = radial_profile(mask)
    redrawn = render_local(prof.radii, 64)
    assert _iou(redrawn, mask) > 0.95


def test_canonical_profiles_fold_the_four_symmetries() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.1, 64)
    variants = np.stack(
        [base, np.roll(base, 32), base[(-np.arange(64)) % 64], np.roll(base[(-np.arange(64)) % 64], 32)]
    )
    canon = canonical_profiles(variants)
    np.testing.assert_allclose(canon, np.repeat(canon[:1], 4, axis=0))


def test_fit_on_demo_sequence_gives_sensible_numbers(model: ShapeModel) -> None:
    s = model.summary()
    assert 200 < s["area_median_px"] < 800  # demo radii 9-14 px with growth
    assert s["divisions_observed"] >= 3 and s["division_rate"] == pytest.approx(s["division_rate_observed"], 1e-3)
    assert s["speed_median_px"] > 0.1 and 0 <= s["speed_autocorr"] < 1
    assert 1 <= s["pca_components"] <= 12 and s["pca_variance_explained"] >= 0.95
    assert s["growth_log_area_per_frame"] > 0  # demo cells grow
    assert 0.3 < s["daughter_area_ratio_mean"] < 0.8
    assert s["intensity"]["cell_mean"] > 3 * s["intensity"]["background_mean"] and s["intensity"]["noise_std"] > 0
    assert s["suggested_crop"] % 16 == 0 and s["suggested_crop"] >= 2 * s["max_radius_p99_px"]
    json.dumps(s)


def test_few_divisions_fall_back_to_the_prior_floor(demo_fluo: Path) -> None:
    few = ShapeModel.fit([demo_fluo], max_frames=6)
    assert few.summary()["divisions_observed"] < 5
    assert few.division_rate >= DIVISION_RATE_FLOOR
    assert any("divisions" in note for note in few.notes)


def test_generated_track_changes_smoothly_and_grows(model: ShapeModel) -> None:
    lineage = model.sample_track_masks(np.random.default_rng(1), frames=30, crop=64)
    (track,) = lineage.tracks
    masks = track.masks()
    assert masks.shape == (30, 64, 64) and masks.dtype == bool
    assert min(_iou(a, b) for a, b in zip(masks[:-1], masks[1:], strict=True)) > 0.6
    small = model.sample_radii(np.random.default_rng(2), 30, 64, area=model.area_min, growth=model.growth_mean)
    areas = np.array([render_local(r, 64).sum() for r in small])
    assert areas[-1] > 1.1 * areas[0]
    # Shapes do change over time (not a frozen template).
    assert _iou(masks[0], masks[-1]) < 0.99


def test_division_gives_two_daughters_of_the_mother(model: ShapeModel) -> None:
    lineage = model.sample_track_masks(np.random.default_rng(3), frames=20, crop=64, divide=True, divide_at=10)
    mother, *daughters = lineage.tracks
    assert lineage.division_frame == 10 and mother.end == 9 and mother.divides
    assert [d.parent for d in daughters] == [1, 1] and [d.begin for d in daughters] == [10, 10]
    assert all(d.end == 19 for d in daughters)
    m_area = mother.mask(9).sum()
    d_areas = [d.mask(10).sum() for d in daughters]
    assert all(0.2 * m_area < a < 0.9 * m_area for a in d_areas)
    offsets = [lineage.daughter_offsets[d.label][1] for d in daughters]
    assert offsets[0] < 0 < offsets[1]  # on both sides of the mother, along its long axis


def test_same_seed_same_masks_and_dict_round_trip(model: ShapeModel) -> None:
    restored = ShapeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored.to_dict() == model.to_dict()
    a = model.sample_track_masks(np.random.default_rng(7), 12, 64, divide=True)
    b = restored.sample_track_masks(np.random.default_rng(7), 12, 64, divide=True)
    c = model.sample_track_masks(np.random.default_rng(8), 12, 64, divide=True)
    for x, y in zip(a.tracks, b.tracks, strict=True):
        np.testing.assert_array_equal(x.masks(), y.masks())
    assert not np.array_equal(a.tracks[0].masks()[0], c.tracks[0].masks()[0])


@pytest.mark.slow
def test_fit_on_gowt1_first_frames() -> None:
    model = ShapeModel.fit([shared_sequence("Fluo-N2DH-GOWT1/01")], max_frames=8)
    s = model.summary()
    assert 800 < s["area_median_px"] < 6000 and s["speed_median_px"] > 0


def test_star_polygon_fill_matches_skimage() -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        radii = np.exp(rng.normal(0, 0.2, 64)) * rng.uniform(5, 25)
        y, x, angle = rng.uniform(60, 64), rng.uniform(60, 64), rng.uniform(-np.pi, np.pi)
        rows, cols = polygon_vertices(radii, y, x, angle)
        expected = np.zeros((128, 128), bool)
        expected[draw_polygon(rows, cols, (128, 128))] = True
        ours = np.zeros((128, 128), bool)
        ours[polygon_pixels(radii, y, x, angle)] = True
        assert (ours ^ expected).sum() <= 2  # pixel centres exactly on an edge may fall either way
