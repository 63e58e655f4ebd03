"""Scene composition: CTC-valid masks and lineage, no overlaps, divisions, poses for pasting textures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cellgen.data.ctc import write_sequence
from cellgen.data.errors import CellgenInputError
from cellgen.synth.scene import (
    SceneLayout,
    add_noise,
    background_image,
    compose_scene,
    paste_local,
    scene_pixels,
)
from cellgen.synth.shape_model import ShapeModel


@pytest.fixture(scope="module")
def model(demo_fluo: Path) -> ShapeModel:
    return ShapeModel.fit([demo_fluo], max_frames=32, intensity_frames=4)


@pytest.fixture(scope="module")
def scene(model: ShapeModel) -> SceneLayout:
    return compose_scene(model, np.random.default_rng(0), frames=20, height=144, width=144, cells=6, divisions=2)


def _write(layout: SceneLayout, model: ShapeModel, out: Path) -> Path:
    rng = np.random.default_rng(0)
    h, w = layout.masks.shape[1:]
    images = []
    for mask in layout.masks:
        image = background_image(rng, model.intensity, h, w) + (mask > 0) * model.intensity.cell_mean
        images.append(add_noise(image, model.intensity, rng).astype(np.uint8))
    return write_sequence(out, "01", images, list(layout.masks), layout.tracks)  # validates before renaming


def test_scene_is_a_valid_ctc_sequence_with_divisions(scene: SceneLayout, model: ShapeModel, tmp_path: Path) -> None:
    assert scene.masks.shape == (20, 144, 144) and scene.masks.dtype == np.uint16
    _write(scene, model, tmp_path)
    divisions = scene.divisions()
    assert len(divisions) >= 1
    for mother, daughters, frame in divisions:
        assert len(daughters) == 2 and scene.tracks[mother].end == frame - 1
        assert all(scene.tracks[d].parent == mother and scene.tracks[d].begin == frame for d in daughters)
    for label, track in scene.tracks.items():  # present in every frame of its life and only then
        present = [t for t in range(scene.frames) if (scene.masks[t] == label).any()]
        assert present == list(range(track.begin, track.end + 1))


def test_no_cell_covers_another(scene: SceneLayout) -> None:
    # Re-paste every cell's local mask through its pose: all its in-field pixels must still carry its id.
    h, w = scene.masks.shape[1:]
    for label, track in scene.tracks.items():
        for t in range(track.begin, track.end + 1):
            rr, cc = scene_pixels(scene.local_mask(label, t), scene.pose(label, t))
            keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            assert (scene.masks[t][rr[keep], cc[keep]] == label).all()
            assert keep.sum() == (scene.masks[t] == label).sum()


def test_cell_frames_give_local_masks_prev_masks_and_poses(scene: SceneLayout) -> None:
    crop = scene.crop
    for t in (0, 5, scene.frames - 1):
        frames = scene.cell_frames[t]
        assert sorted(f.track_id for f in frames) == sorted(np.unique(scene.masks[t][scene.masks[t] > 0]).tolist())
        for cell in frames:
            assert cell.local_mask.shape == (crop, crop) and cell.local_mask.dtype == bool
            track = scene.tracks[cell.track_id]
            if t == track.begin:
                assert cell.prev_mask is None and cell.parent == track.parent
            else:
                np.testing.assert_array_equal(cell.prev_mask, scene.local_mask(cell.track_id, t - 1))
            # The pose pastes the local mask exactly onto the cell's scene label.
            canvas = np.zeros(scene.masks.shape[1:], np.float32)
            paste_local(canvas, cell.local_mask.astype(np.float32), cell.pose, order=1)
            np.testing.assert_array_equal(canvas > 0.5, scene.masks[t] == cell.track_id)
            m, inv = (
                np.vstack([cell.pose.matrix(crop), [0, 0, 1]]),
                np.vstack([cell.pose.inverse_matrix(crop), [0, 0, 1]]),
            )
            np.testing.assert_allclose(m @ inv, np.eye(3), atol=1e-9)
    daughter = next(d for _, kids, _ in scene.divisions() for d in kids)
    first = next(c for c in scene.cell_frames[scene.tracks[daughter].begin] if c.track_id == daughter)
    assert first.prev_mask is None and first.parent == scene.tracks[daughter].parent


def test_consecutive_local_masks_change_smoothly(scene: SceneLayout) -> None:
    ious = []
    for label, track in scene.tracks.items():
        for t in range(track.begin + 1, track.end + 1):
            a, b = scene.local_mask(label, t - 1), scene.local_mask(label, t)
            ious.append((a & b).sum() / (a | b).sum())
    assert min(ious) > 0.6


def test_fast_cells_leave_the_field_and_their_tracks_end(model: ShapeModel, tmp_path: Path) -> None:
    # Scattered start (no neighbour statistic), so the seed alone decides where the cells begin.
    fast = dataclasses.replace(
        model, speed_quantiles=np.full_like(model.speed_quantiles, 8.0), neighbour_quantiles=None
    )
    layout = compose_scene(fast, np.random.default_rng(1), frames=16, height=96, width=96, cells=3, divisions=False)
    assert "left the field" in layout.end_reason.values()
    assert not any(t.parent for t in layout.tracks.values())
    _write(layout, model, tmp_path)


def test_same_seed_same_scene(model: ShapeModel) -> None:
    def make(seed: int) -> SceneLayout:
        return compose_scene(model, np.random.default_rng(seed), 8, 96, 96, 3, divisions=True)

    a, b, c = make(5), make(5), make(6)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.tracks == b.tracks and a.poses == b.poses
    assert not np.array_equal(a.masks, c.masks)


def test_bad_scenes_raise_one_line_input_errors(model: ShapeModel) -> None:
    with pytest.raises(CellgenInputError, match="too small"):
        compose_scene(model, np.random.default_rng(0), 4, 64, 64, cells=20)
    with pytest.raises(CellgenInputError, match="frames"):
        compose_scene(model, np.random.default_rng(0), 0, 64, 64, cells=1)
    with pytest.raises(CellgenInputError) as info:
        compose_scene(model, np.random.default_rng(0), 4, 16, 16, cells=1)
    assert "\n" not in str(info.value)


def test_background_and_noise_match_the_fitted_statistics(model: ShapeModel) -> None:
    stats = model.intensity
    rng = np.random.default_rng(0)
    background = background_image(rng, stats, 128, 128)
    assert abs(background.mean() - stats.background_mean) < 1e-3 + 0.01 * stats.background_mean
    assert background.std() == pytest.approx(stats.background_smooth_std, rel=0.05)
    flat = np.full((128, 128), 100.0, np.float32)
    assert (add_noise(flat, stats, rng) - flat).std() == pytest.approx(stats.noise_std, rel=0.05)


def _nearest_neighbour_ratios(layout: SceneLayout) -> np.ndarray:
    """Centre distance / sum of equivalent radii to each cell's nearest neighbour, first frame."""
    mask = layout.masks[0]
    ids = np.unique(mask)[1:]
    centres = np.array([np.argwhere(mask == i).mean(0) for i in ids])
    radii = np.sqrt(np.array([(mask == i).sum() for i in ids]) / np.pi)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = dist.argmin(1)
    return dist[np.arange(ids.size), nearest] / (radii + radii[nearest])


def test_cells_keep_the_fitted_neighbour_distances(model: ShapeModel) -> None:
    # Colonies in the data (every cell touching one) give touching cells; without the statistic, scatter.
    assert model.neighbour_quantiles is not None and np.all(np.diff(model.neighbour_quantiles) >= 0)
    touching = dataclasses.replace(model, neighbour_quantiles=np.full(33, 1.05))
    scattered = dataclasses.replace(model, neighbour_quantiles=None)
    close = [
        np.median(_nearest_neighbour_ratios(compose_scene(touching, np.random.default_rng(s), 1, 256, 256, 8)))
        for s in range(3)
    ]
    far = [
        np.median(_nearest_neighbour_ratios(compose_scene(scattered, np.random.default_rng(s), 1, 256, 256, 8)))
        for s in range(3)
    ]
    assert np.median(close) < 1.3 < np.median(far)
