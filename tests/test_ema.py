"""EMA of weights: the hand-computed lerp, buffers copied, and the warm-up of the decay."""

import torch
from torch import nn

from cellgen.nn.ema import update_ema, warmed_up_decay


def test_update_ema_is_the_hand_computed_lerp_and_copies_buffers() -> None:
    ema, live = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        live.weight.fill_(3.0)
        live.running_mean.fill_(5.0)
    update_ema(ema, live, decay=0.75)
    assert torch.allclose(ema.weight, torch.full((2,), 0.75 * 1.0 + 0.25 * 3.0))
    assert torch.equal(ema.running_mean, live.running_mean)
    assert torch.equal(live.weight, torch.full((2,), 3.0))  # the live net is untouched


def test_decay_warms_up_then_caps() -> None:
    assert warmed_up_decay(0.995, 0) == 0.1
    assert warmed_up_decay(0.995, 10) == 11 / 20
    assert warmed_up_decay(0.995, 10_000) == 0.995
