"""The shared 2-D U-Net: shapes, conditioning, attention and a tiny fit."""

from __future__ import annotations

import pytest
import torch

from cellgen.nn.blocks import SelfAttention2d, timestep_embedding
from cellgen.nn.unet import UNet2D


def test_shapes_conditioned_and_not() -> None:
    net = UNet2D(1, 3, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(False, True))
    x = torch.randn(2, 1, 16, 24)
    assert net(x, torch.tensor([0, 999])).shape == (2, 3, 16, 24)
    plain = UNet2D(
        2, 2, base_channels=8, channel_mults=(1, 2, 2), attention_levels=(False,) * 3, time_conditioned=False
    )
    assert plain(torch.randn(1, 2, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ValueError, match="divisible"):
        plain(torch.randn(1, 2, 30, 32))
    with pytest.raises(ValueError, match="pass t"):
        net(x)


def test_step_changes_output() -> None:
    torch.manual_seed(0)
    net = UNet2D(1, 1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(False, False))
    for p in net.parameters():  # the zero-free init makes the conditioning visible
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 1, 8, 8)
    assert not torch.allclose(net(x, torch.tensor([1])), net(x, torch.tensor([500])))


def test_timestep_embedding_values() -> None:
    emb = timestep_embedding(torch.tensor([0, 3]), 6)
    assert emb.shape == (2, 6)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    assert emb[1, 3].item() == pytest.approx(torch.sin(torch.tensor(3.0)).item(), abs=1e-6)


def test_attention_mixes_all_pixels() -> None:
    torch.manual_seed(0)
    attn = SelfAttention2d(8, heads=2)
    x = torch.randn(1, 8, 4, 4)
    y = x.clone()
    y[..., 0, 0] += 1.0
    assert (attn(y) - attn(x))[..., 3, 3].abs().sum() > 0  # a far pixel sees the change


def test_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    net = UNet2D(
        1,
        1,
        base_channels=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(False, True),
        time_conditioned=False,
    )
    x = torch.rand(4, 1, 16, 16)
    target = (x > 0.5).float()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
