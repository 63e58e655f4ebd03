"""Space-time factorised attention and the 3-D U-Nets: shapes, exact factorisation, bias, layout equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cellgen.nn.attention import (
    RelativePositionBias,
    SpaceTimeAttention,
    SpatialAttention,
    TemporalAttention,
    batch_as_frames,
    frames_as_batch,
)
from cellgen.nn.unet3d import FlowUNet3D, UNet3D

TINY = {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "head_channels": 4}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    """One intra-op thread: on a shared 2-core machine, OpenMP barriers between busy cores cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _video(b: int = 2, c: int = 8, t: int = 5, h: int = 6, w: int = 6, seed: int = 0) -> torch.Tensor:
    x = torch.randn(b, c, t, h, w, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last_3d)


def test_frame_views_are_free_and_inverse() -> None:
    x = _video()
    frames = frames_as_batch(x)
    assert frames.shape == (10, 8, 6, 6) and frames.data_ptr() == x.data_ptr()
    assert frames.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(frames[1 * 5 + 3], x[1, :, 3])  # frame 3 of sample 1
    assert torch.equal(batch_as_frames(frames, 2), x)


@pytest.mark.parametrize("frames", [1, 3, 4])
def test_unet3d_shapes(frames: int) -> None:
    net = UNet3D(spatial_attention=("linear", "full"), **TINY).eval()
    x = torch.randn(2, 1, frames, 16, 16)
    assert net(x, torch.tensor([0, 999])).shape == (2, 1, frames, 16, 16)
    flow_net = FlowUNet3D(spatial_attention=("linear", "full"), **TINY).eval()
    assert flow_net(torch.randn(2, 3, frames, 16, 16), torch.tensor([3, 7])).shape == (2, 3, frames, 16, 16)


def test_bad_shapes_are_clear() -> None:
    with pytest.raises(ValueError, match="divisible by 2"):
        UNet3D(spatial_attention=("linear", "linear"), **TINY)(torch.randn(1, 1, 2, 15, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match="I, U, V"):
        FlowUNet3D(spatial_attention=("linear", "linear"), **TINY)(torch.randn(1, 1, 2, 16, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match="multiple of head_channels"):
        TemporalAttention(6, head_channels=4)


def test_channels_last_is_only_a_layout() -> None:
    torch.manual_seed(0)
    fast = UNet3D(spatial_attention=("linear", "full"), **TINY).eval()
    plain = UNet3D(spatial_attention=("linear", "full"), channels_last=False, **TINY).eval()
    plain.load_state_dict(fast.state_dict())
    x, t = torch.randn(2, 1, 3, 8, 8), torch.tensor([5, 500])
    torch.testing.assert_close(fast(x, t), plain(x, t), atol=1e-5, rtol=1e-4)


def test_recompute_changes_memory_not_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    stored = FlowUNet3D(spatial_attention=("linear", "full"), recompute=False, **TINY).double()  # float64: see below
    recomputed = FlowUNet3D(spatial_attention=("linear", "full"), recompute=True, **TINY).double()
    recomputed.load_state_dict(stored.state_dict())
    monkeypatch.setattr(SpaceTimeAttention, "chunk_elements", 1000)  # the finest levels' attention runs in slices
    x, t = torch.randn(2, 3, 3, 8, 8, dtype=torch.float64), torch.tensor([5, 500])
    for net in (stored, recomputed):
        net(x, t).square().mean().backward()
    for (name, a), b in zip(stored.named_parameters(), recomputed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=1e-9, msg=name)


@pytest.mark.parametrize("spatial", ["linear", "full", "none"])
def test_sliced_recompute_gives_the_stored_outputs_and_gradients(spatial: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attention recomputed in slices (frames for spatial, rows for temporal) must equal one unsliced pass.

    In float64: parameter gradients are sums over every slice, and in float32 a sum added up in another order
    can miss a float32 tolerance by chance (it did once in CI); in float64 a real misalignment still fails.
    """
    torch.manual_seed(0)
    stored = SpaceTimeAttention(8, 4, spatial, recompute=False).double()
    sliced = SpaceTimeAttention(8, 4, spatial, recompute=True).double()
    sliced.load_state_dict(stored.state_dict())
    monkeypatch.setattr(SpaceTimeAttention, "chunk_elements", 300)  # 2 x 8 x 5 x 6 x 6 = 2880 elements: 10 slices
    grads, outputs = [], []
    for net in (stored, sliced):
        x = _video().double().requires_grad_()
        y = net(x)
        weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)  # position-dependent: slices must line up
        (y * weights).sum().backward()
        outputs.append(y.detach())
        grads.append([x.grad, *(p.grad for p in net.parameters())])
    assert outputs[1].is_contiguous(memory_format=torch.channels_last_3d)  # the next convolution needs no copy
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-12, rtol=1e-10)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-10)
    with torch.no_grad():  # no gradients, no slicing: sampling runs the whole block at once
        torch.testing.assert_close(sliced(_video().double()), stored(_video().double()), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", ["full", "linear"])
def test_spatial_attention_never_mixes_frames(kind: str) -> None:
    attn = SpatialAttention(8, head_channels=4, kind=kind).eval()
    x = _video()
    y = attn(x)
    x2 = x.clone()
    x2[:, :, 0, 2, 3] += torch.linspace(-3, 3, 8)  # one pixel of frame 0 (not a constant: LayerNorm removes it)
    y2 = attn(x2)
    assert torch.equal(y2[:, :, 1:], y[:, :, 1:])  # other frames untouched, bit for bit
    changed = (y2[:, :, 0] - y[:, :, 0]).abs().amax(dim=1)
    assert (changed > 1e-4).sum() > 1  # ... while the pixels of frame 0 see each other


def test_temporal_attention_mixes_frames_not_pixels() -> None:
    attn = TemporalAttention(8, head_channels=4).eval()
    x = _video()
    y = attn(x)
    x2 = x.clone()
    x2[:, :, 0, 2, 3] += torch.linspace(-3, 3, 8)
    y2 = attn(x2)
    diff = (y2 - y).abs().amax(dim=1)  # (B, T, H, W)
    assert (diff[:, 1:, 2, 3] > 1e-4).all()  # every later frame at that pixel changes
    diff[:, :, 2, 3] = 0
    assert diff.max() == 0  # no other pixel does


def _naive_temporal(attn: TemporalAttention, x: torch.Tensor) -> torch.Tensor:
    """The same block written plainly: per (sample, pixel) softmax(q k^T / sqrt(d) + bias) v."""
    b, c, t, h, w = x.shape
    heads, d = attn.heads, c // attn.heads
    tokens = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
    q, k, v = attn.qkv(attn.norm(tokens)).chunk(3, dim=-1)
    q, k, v = (z.reshape(b * h * w, t, heads, d).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-1, -2) / d**0.5 + attn.position_bias(t)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b * h * w, t, c)
    return x + attn.proj(out).reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)


def test_temporal_attention_matches_naive_formula() -> None:
    attn = TemporalAttention(8, head_channels=4).eval()
    with torch.no_grad():
        attn.position_bias.table.normal_()
    x = _video()
    torch.testing.assert_close(attn(x), _naive_temporal(attn, x), atol=1e-5, rtol=1e-4)


def test_full_spatial_attention_matches_naive_formula() -> None:
    attn = SpatialAttention(8, head_channels=4, kind="full").eval()
    x = _video()
    b, c, t, h, w = x.shape
    tokens = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
    q, k, v = (z.reshape(b * t, h * w, 2, 4).transpose(1, 2) for z in attn.qkv(attn.norm(tokens)).chunk(3, -1))
    out = F.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
    expected = x + attn.proj(out.transpose(1, 2).reshape(b, t, h, w, c)).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-4)


def test_relative_position_bias_is_toeplitz_and_used() -> None:
    bias = RelativePositionBias(heads=2, max_distance=3)
    with torch.no_grad():
        bias.table.copy_(torch.arange(14.0).reshape(7, 2))
    table = bias(6)
    assert table.shape == (1, 2, 6, 6)
    assert table[0, 0, 1, 3] == table[0, 0, 2, 4] == 2 * (2 + 3)  # offset j - i = 2
    assert table[0, 1, 0, 5] == table[0, 1, 0, 4] == 2 * 6 + 1  # offsets beyond 3 share the last entry

    attn = TemporalAttention(8, head_channels=4).eval()
    x = _video()
    before = attn(x)
    with torch.no_grad():
        attn.position_bias.table.add_(torch.linspace(-3, 3, 65)[:, None])  # favour later frames
    assert (attn(x) - before).abs().max() > 1e-3
    attn.train()
    attn(x).square().sum().backward()
    assert attn.position_bias.table.grad.abs().sum() > 0  # the bias learns
