"""Videos of any length from a fixed-length model: reconstruction guidance (Ho et al. 2022, Sec. 3.1)."""

from __future__ import annotations

import pytest
import torch

from cellgen.diffusion import DiffusionSchedule
from cellgen.diffusion.guidance import frame_mask, sample_with_known
from cellgen.models.flow_video_diffusion import FlowVideoDiffusion
from cellgen.models.video_diffusion import VideoDiffusion
from tests.test_video_diffusion import TINY

TINY10 = {**TINY, "num_frames": 10, "image_size": 8, "sampling_steps": 2}


class GaussianVideoDenoiser:
    """The exact denoiser of Gaussian videos whose frames follow an AR(1) process in time (pixels independent).

    For x ~ N(0, S) with S_ij = rho^|i-j| over frames and z = a x + s eps, E[x | z] = a S (a^2 S + s^2 I)^-1 z:
    the best possible network, so a sampler's seams can be judged against the true within-video motion.
    """

    def __init__(self, schedule: DiffusionSchedule, frames: int, rho: float) -> None:
        idx = torch.arange(frames, dtype=torch.float64)
        self.cov = rho ** (idx[:, None] - idx[None, :]).abs()
        self.schedule = schedule

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert bool((t == t[0]).all())  # samplers step the whole batch together
        a = float(self.schedule.sqrt_alphas_cumprod[t[0]])
        s = float(self.schedule.sqrt_one_minus_alphas_cumprod[t[0]])
        gain = a * self.cov @ torch.linalg.inv(a**2 * self.cov + s**2 * torch.eye(len(self.cov), dtype=torch.float64))
        x0 = torch.einsum("ij,bcjhw->bcihw", gain.to(z.dtype), z)
        return (z - a * x0) / s


def _extend(denoiser: GaussianVideoDenoiser, first: torch.Tensor, total: int, overlap: int, weight: float):
    video = first
    gen = torch.Generator().manual_seed(1)
    mask = frame_mask(first.shape, slice(0, overlap))
    while video.shape[2] < total:
        known = torch.zeros_like(first)
        known[:, :, :overlap] = video[:, :, -overlap:]
        chunk = sample_with_known(
            denoiser, denoiser.schedule, known, mask, weight=weight, num_steps=100, generator=gen, clip_x0=None
        )
        torch.testing.assert_close(chunk[:, :, :overlap], known[:, :, :overlap])  # the known frames stay known
        video = torch.cat([video, chunk[:, :, overlap:]], dim=2)
    return video


def _step_sq(video: torch.Tensor, frames: list[int]) -> float:
    """Mean squared change from frame k-1 to frame k over the given k."""
    return float(torch.stack([(video[:, :, k] - video[:, :, k - 1]).square().mean() for k in frames]).mean())


def test_guided_chunks_join_like_the_motion_inside_a_chunk() -> None:
    """An exact Gaussian AR(1) denoiser: guided seams move like true frames (2 (1 - rho) = 0.2), unlike chunks
    sampled independently (2.0), and better than replacement without guidance."""
    torch.manual_seed(0)
    schedule = DiffusionSchedule.cosine(200)
    frames, overlap, rho = 10, 5, 0.9
    denoiser = GaussianVideoDenoiser(schedule, frames, rho)
    first = torch.linalg.cholesky(denoiser.cov).float() @ torch.randn(256, 1, 4, 4, frames, 1)
    first = first.squeeze(-1).permute(0, 1, 4, 2, 3)  # (B, 1, T, H, W) exact AR(1) videos
    guided = _extend(denoiser, first, 25, overlap, weight=4.0)
    replaced = _extend(denoiser, first, 25, overlap, weight=0.0)
    assert guided.shape == (256, 1, 25, 4, 4)
    seams, inside = [10, 15, 20], [k for k in range(11, 25) if k not in (15, 20)]
    truth = 2 * (1 - rho)
    independent = torch.cat([first, torch.randn_like(first)], dim=2)
    assert _step_sq(independent, [10]) > 5 * truth  # the baseline the test must tell apart
    assert _step_sq(guided, seams) < 1.5 * truth, _step_sq(guided, seams)
    assert _step_sq(guided, inside) < 1.5 * truth
    assert _step_sq(guided, seams) < _step_sq(replaced, seams)
    assert float(guided[:, :, 10:].var()) > 0.7  # no collapse: new frames keep most of the data's variance


@pytest.mark.parametrize("cls", [VideoDiffusion, FlowVideoDiffusion])
def test_a_ten_frame_model_makes_25_frames_and_per_sample_seeds_hold(cls: type[VideoDiffusion]) -> None:
    torch.manual_seed(0)
    model = cls(**TINY10, predict_frames=25, extend_overlap=5).eval()  # chunks of 10 frames add 5 each
    batch = model.generate_frames(model.sample_generators([0, 1]))
    alone = model.generate_frames(model.sample_generators([1]))
    channels = 3 if cls is FlowVideoDiffusion else 1
    assert batch.shape == (2, channels, 25, 8, 8) and batch.min() >= 0 and batch.max() <= 1
    # sample i does not depend on the batch (up to float rounding, which the guidance gradient of an untrained
    # network amplifies a little)
    torch.testing.assert_close(alone[0], batch[1], atol=5e-3, rtol=1e-3)
    assert not torch.allclose(batch[0], batch[1], atol=0.05)
    first = model.generate(model.sample_generators([0, 1]))
    torch.testing.assert_close(batch[:, :1, :10], first[:, :1])  # the first chunk is the plain 10-frame sample
    torch.testing.assert_close(batch[:, 1:, :9], first[:, 1:, :9])  # flow: all but its last frame (a copy)
    out = model.predict_step(torch.tensor([3]), 0)
    assert out["video"].shape == (1, 1, 25, 8, 8)
    if cls is FlowVideoDiffusion:
        assert out["flow"].shape == (1, 2, 24, 8, 8)


def test_extension_rejects_an_overlap_as_long_as_the_model() -> None:
    with pytest.raises(ValueError, match="extend_overlap"):
        VideoDiffusion(**TINY10, extend_overlap=10)
