"""Sampling with known parts: reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", Sec. 3.1).

A model trained on T-frame videos extends a video by sampling a new T-frame chunk whose first frames are the last
frames of the video so far. Replacing those frames of ``z_t`` by a noised copy of the known frames (the
"replacement" method) lets the known frames reach the new ones only through the denoiser's prediction, which Ho et
al. found too weak for coherent chunks. Reconstruction guidance adds the gradient of the reconstruction error of
the known part to the prediction of the unknown part (their Eq. 7):

    x~_b = x^_b(z_t) - (w_r alpha_t / 2) grad_{z_b} || x_a - x^_a(z_t) ||^2,    alpha_t = sqrt(alpha_bar_t).

The loop is DDIM's (:func:`~cellgen.diffusion.samplers.ddim_step`); like every sampler here it only knows
``denoise_fn(x_t, t) -> eps`` and never the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cellgen.diffusion.samplers import DenoiseFn, GeneratorArg, ddim_step, ddim_timesteps, randn_like_per_sample
from cellgen.diffusion.schedule import DiffusionSchedule, gather_at_steps


def guided_x0(
    denoise_fn: DenoiseFn,
    schedule: DiffusionSchedule,
    x_t: torch.Tensor,
    t: torch.Tensor,
    known: torch.Tensor,
    mask: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """The prediction of x0 with reconstruction guidance on the unknown part and the known values elsewhere.

    Args:
        denoise_fn: ``(x_t, t) -> eps``; differentiated with respect to its input when ``weight > 0``.
        schedule: the noise schedule.
        x_t: (B, ...) current sample (known part already replaced by its noised copy).
        t: (B,) integer steps.
        known: (B, ...) known values in the model range (anything where ``mask`` is 0).
        mask: 1 where known, 0 where generated; broadcasts against ``x_t`` (e.g. (1, C, T, 1, 1)).
        weight: w_r; 0 gives the replacement method.

    Returns:
        (B, ...) x0 prediction, unclipped.
    """
    with torch.enable_grad():
        z = x_t.detach().requires_grad_(weight > 0)
        x0 = schedule.predict_x0(z, t, denoise_fn(z, t))
        if weight > 0:
            # Per-sample sums: the gradient of sample i depends on sample i alone (per-sample seeds stay valid).
            error = ((known - x0) * mask).square().sum()
            (grad,) = torch.autograd.grad(error, z)
            alpha = gather_at_steps(schedule.sqrt_alphas_cumprod, t, x_t)
            x0 = x0 - (weight * alpha / 2) * grad * (1 - mask)
    return torch.where(mask.bool(), known, x0.detach())


@torch.no_grad()
def sample_with_known(
    denoise_fn: DenoiseFn,
    schedule: DiffusionSchedule,
    known: torch.Tensor,
    mask: torch.Tensor,
    *,
    weight: float = 2.0,
    num_steps: int = 50,
    eta: float = 0.0,
    generator: GeneratorArg = None,
    clip_x0: tuple[float, float] | None = (-1.0, 1.0),
) -> torch.Tensor:
    """DDIM from pure noise with the ``mask`` part fixed to ``known`` (replacement + reconstruction guidance).

    At every step the known part of ``z_t`` is replaced by ``q(z_t | known)`` (fresh noise from the per-sample
    generators), the unknown part's x0 prediction is corrected by :func:`guided_x0`, and one DDIM step follows.

    Args:
        denoise_fn: ``(x_t (B, ...), t (B,)) -> eps (B, ...)``.
        schedule: the noise schedule the denoiser was trained with.
        known: (B, ...) known values in the model range (e.g. the last frames of a video, zeros elsewhere).
        mask: 1 where known; broadcasts against ``known``.
        weight: reconstruction-guidance weight w_r (Ho et al. 2022 found w_r > 1 better); 0: replacement only.
        num_steps: DDIM steps from T-1 to 0.
        eta: DDIM stochasticity.
        generator: None, one generator, or one per sample.
        clip_x0: range of the predicted x0; None to disable.

    Returns:
        (B, ...) sample whose known part equals ``known``.
    """
    device = known.device
    schedule = schedule.to(device)
    mask = mask.to(device=device, dtype=known.dtype)
    x = randn_like_per_sample(known, generator)
    steps = ddim_timesteps(schedule.num_steps - 1, num_steps)
    for i, step in enumerate(steps):
        t = torch.full((known.shape[0],), step, device=device, dtype=torch.long)
        x = torch.where(mask.bool(), schedule.q_sample(known, t, randn_like_per_sample(known, generator)), x)
        x0 = guided_x0(denoise_fn, schedule, x, t, known, mask, weight)
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        eps = schedule.predict_eps(x, t, x0)
        t_prev = torch.full_like(t, steps[i + 1] if i + 1 < len(steps) else -1)
        noise = randn_like_per_sample(x, generator) if eta > 0 else None
        x = ddim_step(schedule, eps, x, t, t_prev, noise, eta, clip_x0=None)
    return torch.where(mask.bool(), known, x)


def frame_mask(
    shape: Sequence[int], frames: slice, channels: Sequence[int] | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """A (1, C, T, 1, 1) mask of videos (B, C, T, H, W): 1 on ``frames`` of ``channels`` (all channels when None)."""
    _, c, t = shape[:3]
    mask = torch.zeros(1, c, t, 1, 1, device=device)
    rows = list(range(c)) if channels is None else list(channels)
    mask[:, rows, frames] = 1.0
    return mask
