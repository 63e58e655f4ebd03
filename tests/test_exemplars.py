"""Real-cell textures on synthetic masks, and backgrounds quilted from real cell-free patches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cellgen.data.synthetic import demo_sequence
from cellgen.synth.background_patches import PATCH_STRIDE, cut_patches, patch_size_for, quilt
from cellgen.synth.exemplars import (
    EXEMPLAR_ANGLES,
    EXEMPLAR_RADII,
    choose_exemplars,
    paint_exemplars,
    polar_textures,
)
from cellgen.synth.pipeline import SynthesisModels, SynthesisSettings, synthesize_sequence
from cellgen.synth.shape_model import ShapeModel


def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def test_polar_texture_of_a_disc_holds_its_radial_and_angular_pattern() -> None:
    # A disc whose intensity rises from centre to rim and varies with angle (cos theta): both must be found in
    # the polar table, relative to the cell's mean.
    size, cy, cx, radius = 96, 48.0, 44.0, 30.0
    yy, xx = np.mgrid[:size, :size]
    depth = np.hypot(yy - cy, xx - cx) / radius
    theta = np.arctan2(yy - cy, xx - cx)
    image = 100.0 * (1.0 + 0.5 * depth + 0.3 * np.cos(theta))
    labels = _ellipse(size, cy, cx, radius, radius).astype(np.int32)
    image[labels == 0] = 5.0
    polar, cells = polar_textures(image, labels)
    assert polar.shape == (1, EXEMPLAR_RADII, EXEMPLAR_ANGLES)
    assert cells[0, 0] == labels.sum() and cells[0, 1] == pytest.approx(image[labels > 0].mean())
    inner = polar[0, 4 : EXEMPLAR_RADII - 3]  # away from the smoothed rim and the centre
    radial = inner.mean(1)
    assert np.all(np.diff(radial) > 0)  # brighter outwards
    angular = inner.mean(0)
    angles = np.arange(EXEMPLAR_ANGLES) * 2 * np.pi / EXEMPLAR_ANGLES
    assert np.corrcoef(angular, np.cos(angles))[0, 1] > 0.99


def test_cells_cut_by_the_frame_border_are_not_exemplars() -> None:
    labels = np.zeros((64, 64), np.int32)
    labels[_ellipse(64, 30, 30, 10, 10)] = 1
    labels[_ellipse(64, 5, 60, 10, 10)] = 2  # leaves the frame
    _, cells = polar_textures(np.full((64, 64), 50.0), labels)
    assert len(cells) == 1 and cells[0, 0] == (labels == 1).sum()


def test_painting_maps_relative_depth_and_angle_onto_a_new_shape() -> None:
    # Exemplar: value = 1 + depth (rows) with a cos pattern over angle; painted on an elongated ellipse, a pixel's
    # value must follow its own relative depth and angle on that ellipse, and rotation shifts the angle.
    depth = (np.arange(EXEMPLAR_RADII) + 0.5) / EXEMPLAR_RADII
    angles = np.arange(EXEMPLAR_ANGLES) * 2 * np.pi / EXEMPLAR_ANGLES
    polar = torch.tensor((1.0 + depth[:, None]) * (1.0 + 0.0 * angles[None]), dtype=torch.float32)[None]
    mask = torch.from_numpy(_ellipse(64, 32, 32, 12, 24))[None, None].float()
    painted = paint_exemplars(mask, polar, torch.zeros(1), torch.tensor([False]))[0, 0].numpy()
    yy, xx = np.mgrid[:64, :64]
    rel_depth = np.sqrt(((yy - 32) / 12.5) ** 2 + ((xx - 32) / 24.5) ** 2)
    inside = mask[0, 0].numpy() > 0
    assert np.corrcoef(painted[inside], rel_depth[inside])[0, 1] > 0.97
    angular = torch.tensor(np.cos(angles)[None, :].repeat(EXEMPLAR_RADII, 0), dtype=torch.float32)[None]
    quarter = paint_exemplars(mask, angular, torch.tensor([np.pi / 2]), torch.tensor([False]))[0, 0].numpy()
    # Rotated by 90 degrees, the pixel to the right of the centre (angle 0) shows the exemplar's angle 90: cos 0.
    assert abs(quarter[32, 44]) < 0.1 and quarter[32, 44] == pytest.approx(quarter[32, 50], abs=0.1)
    mirrored = paint_exemplars(
        mask, angular, torch.tensor([np.pi / 2]), torch.tensor([True])
    )  # angle -theta + 90: the top (theta -90) shows cos 180 = -1
    assert mirrored[0, 0, 32 - 8, 32].item() == pytest.approx(-1.0, abs=0.1)


def test_a_cell_takes_an_exemplar_of_its_size_and_brightness() -> None:
    areas = np.geomspace(100, 10_000, 40)
    cells = np.stack([areas, np.full(40, 50.0)], axis=1)
    generators = [torch.Generator().manual_seed(i) for i in range(6)]
    picks = choose_exemplars(cells, torch.full((6,), 1000.0), torch.full((6,), 50.0), generators)
    chosen = areas[picks.numpy()]
    assert np.all((chosen > 1000 / 1.7) & (chosen < 1000 * 1.7))  # among the 8 nearest in log-area
    again = choose_exemplars(
        cells, torch.full((6,), 1000.0), torch.full((6,), 50.0), [torch.Generator().manual_seed(i) for i in range(6)]
    )
    assert torch.equal(picks, again)


def test_background_patches_keep_away_from_cells_and_quilt_without_seams() -> None:
    rng = np.random.default_rng(0)
    image = 10.0 + rng.normal(0, 1, (400, 400))
    inside = np.zeros((400, 400), bool)
    inside[150:250, 150:250] = True
    image[inside] = 1000.0
    patches = cut_patches(image, inside, rng)
    assert patch_size_for(image.shape) == 100  # a quarter of a small frame
    assert patches and all(p.shape == (100 // PATCH_STRIDE,) * 2 for p in patches)
    # The cell (1000) is farther than CELL_MARGIN from every patch: not even its smoothed edge is inside one.
    assert max(float(p.max()) for p in patches) < 20.0
    # Constant patches quilt to that constant (the feathered weights sum correctly), any frame size.
    for height, width in [(300, 500), (64, 64), (1024, 1024)]:
        flat = quilt(np.full((3, 64, 64), 7.0, np.float32), rng, height, width)
        assert flat.shape == (height, width) and np.allclose(flat, 7.0, atol=1e-4)
    varied = quilt(np.stack(patches), np.random.default_rng(1), 300, 300)
    assert np.array_equal(varied, quilt(np.stack(patches), np.random.default_rng(1), 300, 300))


@pytest.fixture(scope="module")
def demo_shape() -> ShapeModel:
    return ShapeModel.fit([demo_sequence("fluo")], max_frames=24)


def test_fitted_model_carries_exemplars_and_paints_them(demo_shape: ShapeModel) -> None:
    appearance = demo_shape.appearance
    assert appearance.exemplar_textures and len(appearance.exemplar_textures[0]) == EXEMPLAR_RADII * EXEMPLAR_ANGLES
    assert len(appearance.exemplar_cells) == len(appearance.exemplar_textures)
    restored = ShapeModel.from_dict(demo_shape.to_dict())
    assert restored.appearance.exemplar_textures == appearance.exemplar_textures
    settings = SynthesisSettings(
        frames=3, height=128, width=128, cells=4, divisions=False, first_frame_step=200, later_frame_step=10,
        mask_value=0.588, first_frame_sampler="ddim", first_frame_steps=5, later_frame_sampler="ddpm",
        later_frame_steps=None, texture="exemplar",
    )  # fmt: skip
    models = SynthesisModels(None, None, demo_shape, (0.0, 255.0), 48, torch.device("cpu"))
    seq = synthesize_sequence(models, seed=3, settings=settings)
    assert seq.images.shape == (3, 128, 128)
    ids = [i for i in np.unique(seq.masks[0]) if i]
    assert ids and all(seq.images[0][seq.masks[0] == i].std() > 0 for i in ids)
    bare = dataclasses.replace(demo_shape, appearance=dataclasses.replace(appearance, exemplar_textures=None))
    with pytest.raises(ValueError, match="refit"):
        synthesize_sequence(SynthesisModels(None, None, bare, (0.0, 255.0), 48, torch.device("cpu")), 3, settings)
