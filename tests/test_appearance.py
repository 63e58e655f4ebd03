"""Fitted cell appearance (brightness, texture, background, noise) and the synthesis pipeline with stub networks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from cellgen.data.synthetic import demo_sequence
from cellgen.synth.appearance import AppearanceAccumulator, _fit_noise
from cellgen.synth.pipeline import (
    SynthesisModels,
    SynthesisSettings,
    extend_texture,
    match_brightness,
    statistical_texture,
    synthesize_sequence,
)
from cellgen.synth.shape_model import ShapeModel


def test_noise_model_recovers_poisson_gaussian_parameters() -> None:
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(10.0, 200.0, 512), (256, 1))  # a smooth ramp: neighbour differences are noise
    noisy = clean + np.sqrt(2.0 * clean + 9.0) * rng.standard_normal(clean.shape)
    local = clean[:, :-1]
    diff = (noisy[:, 1:] - noisy[:, :-1]) / np.sqrt(2.0)
    gain, offset = _fit_noise(np.stack([local.ravel(), diff.ravel()], axis=1))
    assert gain == pytest.approx(2.0, rel=0.1)
    assert offset == pytest.approx(9.0, abs=4.0)


def test_pure_gaussian_noise_has_no_gain() -> None:
    rng = np.random.default_rng(1)
    clean = np.tile(np.linspace(10.0, 200.0, 256), (256, 1))
    noisy = clean + 3.0 * rng.standard_normal(clean.shape)
    diff = (noisy[:, 1:] - noisy[:, :-1]) / np.sqrt(2.0)
    gain, offset = _fit_noise(np.stack([clean[:, :-1].ravel(), diff.ravel()], axis=1))
    assert gain < 0.02 and offset == pytest.approx(9.0, rel=0.15)


def _cell_frames(frames: int, rng: np.random.Generator):
    """Eight round cells per frame, each with its own constant brightness (10 ... 80), larger ones brighter."""
    labels = np.zeros((64, 400), np.int32)
    yy, xx = np.mgrid[:64, :400]
    means = np.zeros(9)
    for i in range(8):
        labels[(yy - 32) ** 2 + (xx - 25 - 48 * i) ** 2 < (6 + i) ** 2] = i + 1
        means[i + 1] = 10.0 + 10.0 * i
    for t in range(frames):
        image = np.where(labels > 0, means[labels], 5.0)
        yield t, image + rng.normal(0, 1.0, labels.shape), labels


def test_brightness_statistics_of_hand_made_cells() -> None:
    acc = AppearanceAccumulator()
    rng = np.random.default_rng(2)
    for t, image, labels in _cell_frames(6, rng):
        acc.add_cells(0, t, image, labels)
        acc.add_details(image, labels)
    fitted = acc.result(log_area_mean=float(np.log(200.0)), log_area_std=0.5)
    assert fitted.brightness_quantiles[0] == pytest.approx(10.0, abs=0.3)
    assert fitted.brightness_quantiles[-1] == pytest.approx(80.0, abs=0.3)
    assert fitted.brightness_quantiles[32] == pytest.approx(45.0, abs=5.1)  # median between 40 and 50
    assert fitted.size_correlation > 0.9  # the larger cells are the brighter ones
    assert fitted.temporal_correlation > 0.9  # each cell keeps its brightness
    assert fitted.background_mean == pytest.approx(5.0, abs=0.2)
    assert fitted.texture_contrast < 0.05  # flat cells: the within-cell spread is noise
    assert fitted.noise_gain * 30 + fitted.noise_offset == pytest.approx(1.0, abs=0.3)  # unit Gaussian noise


def _disc_frame(blur: float) -> tuple[np.ndarray, np.ndarray]:
    """Three bright discs (contrast 100 over 10) on a flat background, optionally blurred like a microscope."""
    yy, xx = np.mgrid[:96, :288]
    labels = np.zeros(yy.shape, np.int32)
    for i in range(3):
        labels[(yy - 48) ** 2 + (xx - 48 - 96 * i) ** 2 < 15**2] = i + 1
    image = 10.0 + 100.0 * (labels > 0)
    return (ndimage.gaussian_filter(image, blur) if blur else image), labels


def test_halo_is_measured_from_the_edge_blur() -> None:
    fitted = {}
    for blur in (0.0, 2.0):
        acc = AppearanceAccumulator()
        image, labels = _disc_frame(blur)
        acc.add_cells(0, 0, image, labels)
        acc.add_details(image, labels)
        fitted[blur] = np.asarray(acc.result(float(np.log(700.0)), 0.1).halo_profile)
    assert fitted[0.0].max() < 0.02  # a sharp edge: nothing outside the mask
    halo = fitted[2.0]
    assert 0.15 < halo[0] < 0.5 and halo[3] < 0.05  # a Gaussian blur of 2 px: a ~2 px halo
    assert np.all(np.diff(halo) <= 0)


def test_coarse_texture_keeps_the_dark_nucleoli() -> None:
    # Cells with one dark nucleolus each, anywhere in the cell: the coarse component is skewed to the dark side,
    # and the statistical textures drawn from the fit have the dark tail (a symmetric Gaussian texture has not).
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :576]
    labels = np.zeros(yy.shape, np.int32)
    image = np.full(yy.shape, 10.0)
    for i in range(12):
        cy, cx = 24 + 48 * (i // 6), 48 + 96 * (i % 6)
        cell = (yy - cy) ** 2 + (xx - cx) ** 2 < 20**2
        labels[cell] = i + 1
        image[cell] = 110.0
        angle = rng.uniform(0, 2 * np.pi)
        image[(yy - cy - 9 * np.sin(angle)) ** 2 + (xx - cx - 9 * np.cos(angle)) ** 2 < 5**2] = 40.0
    acc = AppearanceAccumulator()
    acc.add_cells(0, 0, image, labels)
    acc.add_details(image, labels)
    fitted = acc.result(float(np.log(1250.0)), 0.1)
    quantiles = np.asarray(fitted.coarse_quantiles)
    assert -quantiles[1] > 1.5 * quantiles[-2] > 0  # a long dark tail, a short bright one
    masks = torch.from_numpy(labels[None, None, :48, :96] == 1).float().repeat(16, 1, 1, 1)
    tails = {}
    for name, appearance in (("fitted", fitted), ("gaussian", dataclasses.replace(fitted, coarse_quantiles=None))):
        generators = [torch.Generator().manual_seed(i) for i in range(16)]
        texture = statistical_texture(masks, torch.full((16,), 0.5), appearance, generators)
        deep = ndimage.binary_erosion(masks.numpy() > 0, np.ones((1, 1, 9, 9)))  # away from the rim
        smooth = ndimage.gaussian_filter(texture.numpy(), (0, 0, 2, 2))[deep]
        low, median, high = np.percentile(smooth, [1, 50, 99])
        tails[name] = (median - low) / (high - median)
    assert tails["fitted"] > 1.3 * tails["gaussian"], tails


def test_composite_paints_the_halo_outside_the_masks(demo_shape: ShapeModel) -> None:
    appearance = dataclasses.replace(demo_shape.appearance, halo_profile=[0.5, 0.25, 0.0])
    _, labels = _disc_frame(0.0)
    inside = labels > 0
    background = np.full(inside.shape, 10.0)
    frame = appearance.composite(background, np.where(inside, 110.0, 0.0), inside)
    assert np.allclose(frame[inside], 110.0)  # cells untouched
    assert frame[48, 48 + 15] == pytest.approx(60.0, abs=1.0)  # 1 px outside the rim: half the contrast
    assert frame[48, 48 + 16] == pytest.approx(35.0, abs=1.0)  # 2 px: a quarter
    assert frame[48, 48 + 20] == pytest.approx(10.0)  # beyond the halo: background
    plain = dataclasses.replace(appearance, halo_profile=None)
    assert np.array_equal(
        plain.composite(background, np.where(inside, 110.0, 0.0), inside)[~inside], background[~inside]
    )


def test_brightness_series_is_stationary_with_the_fitted_correlation() -> None:
    shape = ShapeModel.fit([demo_sequence("fluo")], max_frames=16)
    appearance = shape.appearance
    assert appearance is not None
    rng = np.random.default_rng(3)
    series = np.stack([appearance.brightness_scores(rng, 40, size_score=0.0) for _ in range(300)])
    assert series.std() == pytest.approx(1.0, abs=0.1)
    lag = np.corrcoef(series[:, :-1].ravel(), series[:, 1:].ravel())[0, 1]
    assert lag == pytest.approx(min(appearance.temporal_correlation, 0.999), abs=0.05)


def test_match_brightness_and_extension() -> None:
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 4:12, 4:12] = 1
    tex = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * masks
    out = match_brightness(tex, masks, torch.tensor([0.2, 0.5]))
    means = (out * masks).flatten(1).sum(1) / masks.flatten(1).sum(1)
    assert torch.allclose(means, torch.tensor([0.2, 0.5]), atol=1e-3)
    grown = extend_texture(out, masks)
    assert torch.equal(grown[masks > 0], out[masks > 0])
    outside = grown[:, :, 2, 2:14]  # two px outside the mask: the cell's level, not the zero background
    assert (outside > 0.05).all()


class IdentityDenoiser:
    """Stands in for the texture DDPM: returns its input (the pipeline's logic is what is tested)."""

    def __init__(self) -> None:
        self.calls = 0

    def denoise_from(self, x_start, start_step, sampler="ddpm", num_steps=None, generators=None):
        self.calls += 1
        return x_start.clone()


class ZeroFlow:
    def flow_between(self, source, target):
        return torch.zeros(source.shape[0], 2, *source.shape[2:])


@pytest.fixture(scope="module")
def demo_shape() -> ShapeModel:
    return ShapeModel.fit([demo_sequence("fluo")], max_frames=24)


def _settings(**overrides) -> SynthesisSettings:
    values = dict(
        frames=6,
        height=128,
        width=128,
        cells=5,
        divisions=False,
        first_frame_step=200,
        later_frame_step=10,
        mask_value=0.588,
        first_frame_sampler="ddim",
        first_frame_steps=5,
        later_frame_sampler="ddpm",
        later_frame_steps=None,
    )
    return SynthesisSettings(**{**values, **overrides})


def test_pipeline_runs_on_stub_networks_with_fitted_brightness(demo_shape: ShapeModel) -> None:
    denoiser = IdentityDenoiser()
    models = SynthesisModels(denoiser, ZeroFlow(), demo_shape, (0.0, 255.0), 48, torch.device("cpu"))
    seq = synthesize_sequence(models, seed=4, settings=_settings())
    assert denoiser.calls == seq.images.shape[0]  # one batched call per frame
    again = synthesize_sequence(models, seed=4, settings=_settings())
    assert np.array_equal(seq.images, again.images)
    # Cells differ in brightness (the paper's constant would make them equal) within the fitted range.
    ids = [i for i in np.unique(seq.masks[0]) if i]
    means = np.array([seq.images[0][seq.masks[0] == i].mean() for i in ids])
    quantiles = demo_shape.appearance.brightness_quantiles
    assert means.std() > 0.05 * (quantiles[-1] - quantiles[0])
    assert quantiles[0] - 10 < means.min() and means.max() < quantiles[-1] + 10


def test_constant_brightness_is_the_papers_procedure(demo_shape: ShapeModel) -> None:
    models = SynthesisModels(IdentityDenoiser(), ZeroFlow(), demo_shape, (0.0, 255.0), 48, torch.device("cpu"))
    seq = synthesize_sequence(models, seed=4, settings=_settings(cell_brightness="constant", frames=2))
    ids = [i for i in np.unique(seq.masks[0]) if i]
    means = np.array([seq.images[0][seq.masks[0] == i].mean() for i in ids])
    assert np.ptp(means) < 0.1 * means.mean()


def test_statistical_texture_needs_no_denoiser(demo_shape: ShapeModel) -> None:
    models = SynthesisModels(None, ZeroFlow(), demo_shape, (0.0, 255.0), 48, torch.device("cpu"))
    seq = synthesize_sequence(models, seed=5, settings=_settings(texture="statistical", frames=3))
    assert seq.images.shape == (3, 128, 128) and seq.masks.max() > 0
    with pytest.raises(ValueError, match="denoiser"):
        synthesize_sequence(models, seed=5, settings=_settings(frames=1))


def test_edge_halo_is_painted_only_when_asked(demo_shape: ShapeModel) -> None:
    # The same scene with and without the fitted halo: only the ring just outside the masks changes.
    haloed = dataclasses.replace(
        demo_shape, appearance=dataclasses.replace(demo_shape.appearance, halo_profile=[0.9, 0.8, 0.7, 0.6])
    )
    models = SynthesisModels(None, ZeroFlow(), haloed, (0.0, 255.0), 48, torch.device("cpu"))
    plain = synthesize_sequence(models, seed=5, settings=_settings(texture="statistical", frames=1))
    halo = synthesize_sequence(models, seed=5, settings=_settings(texture="statistical", frames=1, edge_halo=True))
    inside = plain.masks[0] > 0
    ring = ndimage.binary_dilation(inside, iterations=3) & ~inside
    far = ~ndimage.binary_dilation(inside, iterations=12)
    lift = halo.images[0].astype(float) - plain.images[0].astype(float)
    assert lift[ring].mean() > 5 * max(abs(lift[far].mean()), 0.5)


class HalfPixelShuttle:
    """A flow that moves every pixel half a pixel right, then back: each single warp blurs a texture."""

    def __init__(self) -> None:
        self.sign = 1.0

    def flow_between(self, source, target):
        self.sign = -self.sign
        flow = torch.zeros(source.shape[0], 2, *source.shape[2:])
        flow[:, 0] = 0.5 * self.sign
        return flow


def test_carried_texture_keeps_its_detail_over_many_frames(demo_shape: ShapeModel) -> None:
    from cellgen.synth.pipeline import texture_frame
    from cellgen.synth.scene import CellFrame, CellPose

    mask = np.zeros((48, 48), bool)
    mask[8:40, 8:40] = True
    models = SynthesisModels(IdentityDenoiser(), HalfPixelShuttle(), demo_shape, (0.0, 255.0), 48, torch.device("cpu"))
    settings = _settings(texture="statistical")
    brightness = torch.tensor([0.5])
    carried: dict = {}
    energies = []
    for t in range(12):
        cell = CellFrame(1, t, mask, None if t == 0 else mask, CellPose(24.0, 24.0, 0.0))
        texture, carried = texture_frame(models, [cell], carried, brightness, seed=0, settings=settings)
        inner = texture[0, 0, 12:36, 12:36]
        energies.append(float((inner[:, 1:] - inner[:, :-1]).pow(2).mean()))
    # Composed flows return to zero every second frame, so those frames show the first texture unblurred;
    # re-warping the previous frame instead would halve the fine detail within a few frames.
    assert energies[-2] == pytest.approx(energies[0], rel=0.05)
    assert min(energies) > 0.5 * energies[0]
