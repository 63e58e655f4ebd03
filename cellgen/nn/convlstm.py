"""Convolutional LSTM (Shi et al. 2015) for the cell-event detectors (Phan et al. 2019).

Unlike the rest of ``cellgen`` these modules take time-major-after-batch input ``(B, T, C, H, W)``: the
recurrence walks the time axis frame by frame, and ``x[:, t]`` is then a contiguous ``(B, C, H, W)`` frame.
Callers holding ``(B, C, T, H, W)`` tensors permute with ``x.transpose(1, 2)``.
"""

from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: the four gates come from one fused convolution over ``[x_t, h_{t-1}]``.

    One convolution producing ``4 * hidden`` channels (input, forget, output, candidate) does the work of
    eight small ones in a single kernel launch. The forget-gate bias starts at 1 so that early in training
    the cell keeps its memory and gradients reach distant frames (Jozefowicz et al. 2015).

    Args:
        in_channels: channels C of each input frame.
        hidden_channels: channels of the hidden and cell states.
        kernel_size: odd or even; ``'same'`` padding keeps H and W.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        total = in_channels + hidden_channels
        self.gates = nn.Conv2d(total, 4 * hidden_channels, kernel_size, padding="same")
        with torch.no_grad():
            self.gates.bias.zero_()
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def initial_state(self, x_t: torch.Tensor) -> State:
        """Zero ``(h, c)``, each ``(B, hidden, H, W)``, matching the dtype and device of ``x_t``."""
        b, _, h, w = x_t.shape
        zeros = x_t.new_zeros(b, self.hidden_channels, h, w)
        return zeros, zeros.clone()

    def forward(self, x_t: torch.Tensor, state: State | None = None) -> State:
        """Advance one frame.

        Args:
            x_t: (B, C, H, W) input frame.
            state: ``(h, c)`` from the previous step, each (B, hidden, H, W); ``None`` starts from zeros.

        Returns:
            ``(h, c)``, each (B, hidden, H, W).
        """
        h, c = self.initial_state(x_t) if state is None else state
        i, f, o, g = self.gates(torch.cat([x_t, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """A ConvLSTM layer unrolled over the time axis of a batch-first video.

    Args:
        in_channels: channels C of each input frame.
        hidden_channels: channels of the hidden and cell states.
        kernel_size: gate convolution kernel size.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Run the recurrence over all frames.

        Args:
            x: (B, T, C, H, W) video.
            state: optional initial ``(h0, c0)``, each (B, hidden, H, W); pass a returned state to continue
                a sequence chunk by chunk.

        Returns:
            ``(outputs, (h_T, c_T))`` with outputs (B, T, hidden, H, W), the hidden state at every frame.
        """
        if x.ndim != 5:
            raise ValueError(f"ConvLSTM expects (B, T, C, H, W), got shape {tuple(x.shape)}")
        outputs = []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
            outputs.append(state[0])
        if state is None:  # T == 0: nothing ran, so there is no state to hand back
            raise ValueError("ConvLSTM needs at least one frame (T >= 1)")
        return torch.stack(outputs, dim=1), state


class BidirectionalConvLSTM(nn.Module):
    """Forward and backward ConvLSTMs whose outputs are concatenated per frame.

    A mitosis is recognised from frames both before and after the division, so each frame's feature sees the
    past (forward half) and the future (backward half). The backward layer runs on the time-reversed video
    and its outputs are flipped back, so channel block ``hidden:`` at frame t summarises frames ``>= t``.

    Args:
        in_channels: channels C of each input frame.
        hidden_channels: hidden channels per direction; the output has twice as many.
        kernel_size: gate convolution kernel size.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.forward_lstm = ConvLSTM(in_channels, hidden_channels, kernel_size)
        self.backward_lstm = ConvLSTM(in_channels, hidden_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a video in both directions.

        Args:
            x: (B, T, C, H, W) video.

        Returns:
            (B, T, 2 * hidden, H, W): forward features in channels ``[:hidden]``, backward in ``[hidden:]``.
        """
        fwd, _ = self.forward_lstm(x)
        bwd, _ = self.backward_lstm(x.flip(1))
        return torch.cat([fwd, bwd.flip(1)], dim=2)
