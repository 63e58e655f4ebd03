"""ConvLSTM layers: shapes, forget-gate init, state carry-over and the time direction of each half."""

from __future__ import annotations

import pytest
import torch

from cellgen.nn.convlstm import BidirectionalConvLSTM, ConvLSTM, ConvLSTMCell

B, T, C, HID, H, W = 2, 6, 3, 4, 8, 10


@pytest.fixture
def video() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(B, T, C, H, W)


def test_shapes() -> None:
    torch.manual_seed(0)
    h, c = ConvLSTMCell(C, HID)(torch.randn(B, C, H, W))
    assert h.shape == c.shape == (B, HID, H, W)
    out, (h_t, c_t) = ConvLSTM(C, HID, kernel_size=5)(torch.randn(B, T, C, H, W))
    assert out.shape == (B, T, HID, H, W)
    assert h_t.shape == c_t.shape == (B, HID, H, W)
    assert torch.equal(out[:, -1], h_t)
    assert BidirectionalConvLSTM(C, HID)(torch.randn(B, T, C, H, W)).shape == (B, T, 2 * HID, H, W)
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        ConvLSTM(C, HID)(torch.randn(B, C, H, W))


def test_forget_gate_bias_starts_at_one() -> None:
    bias = ConvLSTMCell(C, HID).gates.bias.detach()
    assert bias.shape == (4 * HID,)
    assert torch.all(bias[HID : 2 * HID] == 1.0)  # gate order i, f, o, g
    assert torch.all(bias[:HID] == 0) and torch.all(bias[2 * HID :] == 0)


def test_initial_state_is_used(video: torch.Tensor) -> None:
    lstm = ConvLSTM(C, HID)
    state = (torch.randn(B, HID, H, W), torch.randn(B, HID, H, W))
    with torch.no_grad():
        assert not torch.allclose(lstm(video)[0], lstm(video, state)[0])


def test_returned_state_continues_the_sequence(video: torch.Tensor) -> None:
    lstm = ConvLSTM(C, HID)
    with torch.no_grad():
        whole, (h_all, c_all) = lstm(video)
        first, state = lstm(video[:, :3])
        second, (h_two, c_two) = lstm(video[:, 3:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    torch.testing.assert_close(h_two, h_all)
    torch.testing.assert_close(c_two, c_all)


def test_bidirectional_halves_look_the_right_way_in_time(video: torch.Tensor) -> None:
    """Forward half at t sees frames <= t, backward half frames >= t (fails without the flip-back)."""
    bi = BidirectionalConvLSTM(C, HID)
    first, last = video.clone(), video.clone()
    first[:, 0] += 1.0
    last[:, -1] += 1.0
    with torch.no_grad():
        base, moved_first, moved_last = bi(video), bi(first), bi(last)
    fwd, bwd = slice(0, HID), slice(HID, 2 * HID)
    # frame 0 changed: every forward output moves, only the backward output at t = 0 moves
    assert not torch.allclose(moved_first[:, :, fwd], base[:, :, fwd])
    assert not torch.allclose(moved_first[:, 0, bwd], base[:, 0, bwd])
    torch.testing.assert_close(moved_first[:, 1:, bwd], base[:, 1:, bwd])
    # last frame changed: only the forward output at t = T-1 moves
    torch.testing.assert_close(moved_last[:, :-1, fwd], base[:, :-1, fwd])
    assert not torch.allclose(moved_last[:, -1, fwd], base[:, -1, fwd])
    assert not torch.allclose(moved_last[:, :, bwd], base[:, :, bwd])


def test_bidirectional_halves_equal_their_layers(video: torch.Tensor) -> None:
    bi = BidirectionalConvLSTM(C, HID)
    with torch.no_grad():
        out = bi(video)
        fwd, _ = bi.forward_lstm(video)
        bwd, _ = bi.backward_lstm(video.flip(1))
    torch.testing.assert_close(out[:, :, :HID], fwd)
    torch.testing.assert_close(out[:, :, HID:], bwd.flip(1))


def test_gradients_reach_every_parameter_and_the_first_frame(video: torch.Tensor) -> None:
    bi = BidirectionalConvLSTM(C, HID)
    x = video.clone().requires_grad_(True)
    bi(x)[:, -1, :HID].square().mean().backward()  # forward half at the last frame depends on frame 0
    assert x.grad is not None and x.grad[:, 0].abs().sum() > 0
    for name, p in bi.forward_lstm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    bi.zero_grad()
    bi(video).sum().backward()
    for name, p in bi.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
