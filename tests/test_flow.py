"""Sobel gradients, Horn–Schunck flow (vs the NumPy reference, motion sign), warping, integration, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellgen.flow import (
    flow_smoothness_loss,
    flow_to_color,
    horn_schunck,
    horn_schunck_numpy,
    integrate_velocity,
    sobel_gradients,
    warp_by_flow,
)


def _blob_video(shift_x: float = 0.0, shift_y: float = 0.0, size: int = 24) -> torch.Tensor:
    """(1, 2, size, size) Gaussian blob (sigma 3 px) and the same blob moved by (shift_x, shift_y) pixels."""
    axis = torch.arange(size, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    c = size / 2

    def blob(dx: float, dy: float) -> torch.Tensor:
        return torch.exp(-((xs - c - dx) ** 2 + (ys - c - dy) ** 2) / (2 * 3.0**2))

    return torch.stack([blob(0, 0), blob(shift_x, shift_y)])[None]


def test_sobel_of_unit_ramp_is_one() -> None:
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    ix, iy = sobel_gradients((2 * xs - 3 * ys)[None, None])
    assert ix.shape == iy.shape == (1, 1, 6, 7)
    assert torch.allclose(ix[..., 1:-1, 1:-1], torch.tensor(2.0))
    assert torch.allclose(iy[..., 1:-1, 1:-1], torch.tensor(-3.0))
    with pytest.raises(ValueError):
        sobel_gradients(torch.zeros(1, 2, 4, 4))


def test_horn_schunck_matches_numpy_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    video = torch.nn.functional.avg_pool2d(torch.rand(2, 4, 20, 22, generator=gen), 5, stride=1, padding=2)
    flow = horn_schunck(video, iterations=15, lam=0.05)
    ref = horn_schunck_numpy(video.numpy(), iterations=15, lam=0.05)
    assert flow.shape == ref.shape == (2, 2, 3, 20, 22)
    assert np.abs(flow.numpy() - ref).max() < 1e-4
    assert np.abs(ref).max() > 1e-2  # the comparison is not between two fields of zeros


@pytest.mark.parametrize("shift,channel", [((1.0, 0.0), 0), ((0.0, 1.0), 1), ((-1.0, 0.0), 0)])
def test_horn_schunck_follows_the_motion(shift: tuple[float, float], channel: int) -> None:
    video = _blob_video(*shift)
    flow = horn_schunck(video, iterations=100, lam=0.01)[0, :, 0]  # (2, H, W)
    moving = video[0, 0] > 0.3  # the blob's interior, where the brightness gradient is informative
    sign = shift[channel]
    assert sign * flow[channel][moving].mean() == pytest.approx(1.0, abs=0.3)
    assert flow[1 - channel][moving].mean().abs() < 0.05
    # lam=1 smooths strongly for [0, 1] intensities: only the sign is asserted
    default = horn_schunck(video)[0, :, 0]
    assert sign * default[channel][moving].mean() > 0.05


def test_horn_schunck_rejects_bad_videos() -> None:
    with pytest.raises(ValueError, match="B, T, H, W"):
        horn_schunck(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="2 frames"):
        horn_schunck(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="2 frames"):
        horn_schunck_numpy(np.zeros((1, 1, 4, 4)))


def test_zero_flow_warp_is_identity() -> None:
    image = torch.rand(2, 3, 9, 11)
    assert torch.allclose(warp_by_flow(image, torch.zeros(2, 2, 9, 11)), image, atol=1e-6)


def test_constant_flow_shifts_content() -> None:
    image = torch.rand(1, 2, 8, 12)
    flow = torch.zeros(1, 2, 8, 12)
    flow[:, 0] = 2.0
    out = warp_by_flow(image, flow)
    assert torch.allclose(out[..., :-2], image[..., 2:], atol=1e-5)
    assert (out[..., -2:] == 0).all()  # sampled outside the image
    flow_y = torch.zeros(1, 2, 8, 12)
    flow_y[:, 1] = -1.0
    assert torch.allclose(warp_by_flow(image, flow_y)[..., 1:, :], image[..., :-1, :], atol=1e-5)
    with pytest.raises(ValueError):
        warp_by_flow(image, torch.zeros(1, 2, 8, 11))


def test_integrate_velocity() -> None:
    zero = torch.zeros(1, 2, 10, 10)
    assert torch.equal(integrate_velocity(zero), zero)
    constant = torch.zeros(1, 2, 10, 10)
    constant[:, 0], constant[:, 1] = 0.6, -0.3
    assert torch.allclose(integrate_velocity(constant, steps=7), constant, atol=1e-5)
    assert torch.equal(integrate_velocity(constant, steps=0), constant)


def test_smoothness_loss() -> None:
    constant = torch.full((2, 2, 6, 6), 1.5)
    assert flow_smoothness_loss(constant).item() == 0.0
    ramp = torch.zeros(1, 2, 4, 5)
    ramp[:, 0] = torch.arange(5.0)  # dx = 1 everywhere, dy = 0
    assert flow_smoothness_loss(ramp).item() == pytest.approx(0.25)  # x mean 0.5 (one channel), y mean 0
    assert flow_smoothness_loss(ramp, penalty="l1").item() == pytest.approx(0.25)
    assert flow_smoothness_loss(torch.randn(1, 2, 3, 6, 6)).item() > 0  # video flow (B, 2, T, H, W)
    with pytest.raises(ValueError):
        flow_smoothness_loss(ramp, penalty="l3")


def test_flow_to_color() -> None:
    flow = torch.zeros(2, 2, 5, 6)
    flow[0, 0, 0, 0] = 3.0  # rightward: hue 0, red
    rgb = flow_to_color(flow)
    assert rgb.shape == (2, 5, 6, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0].tolist() == [255, 0, 0]
    assert (rgb[1] == 255).all()  # no motion is white
    single = flow_to_color(flow[0].numpy())
    assert single.shape == (5, 6, 3) and np.array_equal(single, rgb[0])
    with pytest.raises(ValueError):
        flow_to_color(torch.zeros(3, 5, 6))


def test_radial_flow_maps_one_star_shaped_mask_onto_another() -> None:
    from cellgen.flow.radial import RadialMaskFlow, boundary_radii, centroids

    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = lambda r, cx=31.5, cy=31.5: (((xx - cx) ** 2 + (yy - cy) ** 2) <= r**2).float()[None, None]  # noqa: E731
    small, large = disc(10.0), disc(15.0)
    radii = boundary_radii(large, centroids(large))
    assert torch.allclose(radii, torch.full_like(radii, 15.0), atol=0.75)
    flow = RadialMaskFlow().flow_between(large, large)
    assert flow.abs().max() < 1e-4  # equal masks: no motion at all
    flow = RadialMaskFlow().flow_between(small, large)
    grown = warp_by_flow(small, flow)
    assert ((grown > 0.5) != (large > 0.5)).float().sum() < 0.03 * large.sum()  # the small disc fills the large one
    # A pixel at 3/4 of the large radius samples 3/4 of the small radius, along the same ray.
    assert flow[0, 0, 31, 31 + 12].item() == pytest.approx(-12 + 12 * 10 / 15, abs=0.8)
    shifted = disc(10.0, cx=35.5)
    flow = RadialMaskFlow().flow_between(small, shifted)
    assert flow[0, 0, 31, 35].item() == pytest.approx(-4.0, abs=0.3)  # the centroid moved 4 px right
