"""DenoisingDiffusion with a stub denoiser: the glue every diffusion model shares, tested in milliseconds."""

from __future__ import annotations

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
