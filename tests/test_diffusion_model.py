"""DenoisingDiffusion with a stub denoiser: the glue every diffusion model shares, tested in milliseconds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellgen.diffusion.model import DenoisingDiffusion, sample_seed


class Stub(nn.Module):
    """eps = a * x_t: a one-parameter denoiser of any tensor rank."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.a * x_t


def test_ema_follows_the_net_and_is_saved() -> None:
    model = DenoisingDiffusion(Stub(), num_timesteps=50, ema_decay=0.9)
    with torch.no_grad():
        model.net.a.fill_(1.5)
    model.update_ema()  # warm-up decay after one update: min(0.9, 2 / 11)
    assert model.ema_updates.item() == 1
    torch.testing.assert_close(model.ema_net.a, torch.tensor(0.5 + (1.0 - 2 / 11) * 1.0))
    assert set(model.state_dict()) == {"net.a", "ema_net.a", "ema_updates"}
    plain = DenoisingDiffusion(Stub(), ema_decay=None)
    plain.update_ema()
    assert plain.denoiser() is plain.net and set(plain.state_dict()) == {"net.a"}


def test_samples_do_not_depend_on_their_batch() -> None:
    model = DenoisingDiffusion(Stub(), num_timesteps=20, ema_decay=None)
    both = model.generate((2, 1, 3, 4, 4), model.sample_generators([0, 1], seed=7), sampler="ddim", num_steps=4)
    alone = model.generate((1, 1, 3, 4, 4), model.sample_generators([1], seed=7), sampler="ddim", num_steps=4)
    torch.testing.assert_close(both[1:], alone)
    assert both.min() >= 0 and both.max() <= 1
    assert sample_seed(7, 1) == 7 * 1_000_003 + 1


def test_denoise_from_step_zero_is_identity_and_loss_is_finite() -> None:
    model = DenoisingDiffusion(Stub(), num_timesteps=20, loss="l1")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model.denoise_from(x, 0), x)
    edited = model.denoise_from(x, 5, generators=model.sample_generators([0, 1, 2], seed=0))
    assert edited.shape == x.shape and not torch.equal(edited, x)
    assert torch.isfinite(model.loss(x))


class Oracle(nn.Module):
    """The exact eps or v for data that is always ``x0`` (a point mass), plus a fixed output error ``error``."""

    def __init__(self, diffusion_schedule, x0: torch.Tensor, prediction: str, error: float = 0.0) -> None:
        super().__init__()
        self.schedule, self.x0, self.prediction, self.error = diffusion_schedule, x0, prediction, error

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from cellgen.diffusion.schedule import gather_at_steps

        a = gather_at_steps(self.schedule.sqrt_alphas_cumprod, t, x_t)
        s = gather_at_steps(self.schedule.sqrt_one_minus_alphas_cumprod, t, x_t)
        eps = (x_t - a * self.x0) / s
        out = eps if self.prediction == "eps" else a * eps - s * self.x0
        return out + self.error


def test_v_prediction_targets_and_sampling_are_exact() -> None:
    """The v target is a noise-and-data mix whose conversion back to eps is exact; an exact v-model samples x0."""
    x0 = torch.full((2, 1, 3, 4, 4), 0.2)  # [0, 1] data: a dark video (model range -0.6)
    model = DenoisingDiffusion(Stub(), num_timesteps=100, ema_decay=None, prediction="v", loss="l2")
    schedule = model.schedule
    t, noise = torch.tensor([3, 97]), torch.randn_like(x0)
    x_t = schedule.q_sample(model.to_model_range(x0), t, noise)
    v = schedule.velocity(model.to_model_range(x0), t, noise)
    torch.testing.assert_close(schedule.eps_from_velocity(x_t, t, v), noise)
    model.net = Oracle(schedule, model.to_model_range(x0), "v")
    assert model.loss(x0).item() < 1e-10  # the oracle's prediction is the loss's target
    out = model.generate(x0.shape, model.sample_generators([0, 1], seed=0), sampler="ddim", num_steps=10)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="prediction must be one of"):
        DenoisingDiffusion(Stub(), prediction="x0")


def test_near_t_max_a_small_eps_error_loses_the_brightness_and_a_v_error_does_not() -> None:
    """Why v: at t = T - 1 the eps-model's x0 estimate divides its error by sqrt(ab_T) ~ 0 (cosine schedule)."""
    x0 = torch.full((1, 1, 2, 4, 4), 0.2)
    estimates = {}
    for prediction in ("eps", "v"):
        model = DenoisingDiffusion(Stub(), num_timesteps=1000, ema_decay=None, prediction=prediction)
        model.net = Oracle(model.schedule, model.to_model_range(x0), prediction, error=1e-3)
        t = torch.tensor([999])
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        x_t = model.schedule.q_sample(model.to_model_range(x0), t, noise)
        eps = model.denoise_fn(use_ema=False)(x_t, t)
        estimates[prediction] = model.schedule.predict_x0(x_t, t, eps)
    target = model.to_model_range(x0)
    assert (estimates["eps"] - target).abs().min() > 1.0  # an error of 1e-3 moves x0 by 1e-3 / 5e-5 = 20
    # v: the error stays 1e-3; the fp32 route through eps (x_t / 5e-5 - ...) adds up to ~1e-2 of cancellation
    assert (estimates["v"] - target).abs().max() < 0.05


def test_v_prediction_with_l1_warns() -> None:
    with pytest.warns(UserWarning, match="median image"):
        DenoisingDiffusion(Stub(), prediction="v", loss="l1")
