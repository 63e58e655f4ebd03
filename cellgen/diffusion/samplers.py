"""Reverse-process samplers (DDPM ancestral, DDIM) and the sampling loop shared by every diffusion model.

The loop only knows ``denoise_fn(x_t, t) -> eps``; conditioning (masks, flow, first frames) is closed over by
the caller, as in diffusers and MONAI where schedulers never see the network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from cellgen.diffusion.schedule import DiffusionSchedule, gather_at_steps

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None
DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def randn_like_per_sample(x: torch.Tensor, generators: GeneratorArg = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (B, ...), drawn so that each sample can own its randomness.

    With a list of generators, sample ``i`` is drawn from ``generators[i]`` alone, so its noise depends
    neither on the batch size nor on which other samples share the batch (each sample has its own seed).
    Noise is drawn on each generator's device and then moved to ``x.device``.

    Args:
        x: (B, ...) tensor giving shape, dtype and device.
        generators: None (global RNG), one generator for the whole batch, or B generators.
    """
    if generators is None:
        return torch.randn_like(x)
    if isinstance(generators, torch.Generator):
        gen = generators
        return torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)
    if len(generators) != x.shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {x.shape[0]}")
    draws = [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in generators]
    return torch.stack([d.to(x.device) for d in draws])


def _clip(x0: torch.Tensor, clip_x0: tuple[float, float] | None) -> torch.Tensor:
    return x0 if clip_x0 is None else x0.clamp(*clip_x0)


def ddpm_step(
    schedule: DiffusionSchedule,
    eps: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor | None,
    clip_x0: tuple[float, float] | None = (-1.0, 1.0),
) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} with the posterior variance (Ho et al. 2020, Algorithm 2).

    x0 is predicted from eps, optionally clipped to the data range, and plugged into ``q(x_{t-1} | x_t, x0)``;
    samples at t=0 receive no noise (per sample, so steps may differ across the batch).

    Args:
        schedule: the noise schedule.
        eps: (B, ...) predicted noise.
        x_t: (B, ...) current sample.
        t: (B,) integer steps.
        noise: (B, ...) standard normal noise; may be None only when every t is 0.
        clip_x0: (low, high) range for the predicted x0, or None.

    Returns:
        (B, ...) x_{t-1}.
    """
    x0 = _clip(schedule.predict_x0(x_t, t, eps), clip_x0)
    mean, _, log_variance = schedule.posterior_mean_variance(x0, x_t, t)
    if noise is None:
        if bool((t != 0).any()):
            raise ValueError("ddpm_step needs noise when some t > 0")
        return mean
    nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
    return mean + nonzero * torch.exp(0.5 * log_variance) * noise


def ddim_step(
    schedule: DiffusionSchedule,
    eps: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    t_prev: torch.Tensor,
    noise: torch.Tensor | None = None,
    eta: float = 0.0,
    clip_x0: tuple[float, float] | None = (-1.0, 1.0),
) -> torch.Tensor:
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, Eq. 12; eta=0 is deterministic, eta=1 is DDPM-like).

    Args:
        schedule: the noise schedule.
        eps: (B, ...) predicted noise.
        x_t: (B, ...) current sample.
        t: (B,) integer steps.
        t_prev: (B,) earlier steps; -1 means the clean end of the chain (``alpha_bar = 1``).
        noise: (B, ...) standard normal noise; needed only when ``eta > 0``.
        eta: scale of the stochastic part, sigma_t (Song et al. 2021, Eq. 16).
        clip_x0: (low, high) range for the predicted x0, or None; eps is re-derived from the clipped x0.

    Returns:
        (B, ...) x_{t_prev}.
    """
    x0 = schedule.predict_x0(x_t, t, eps)
    if clip_x0 is not None:
        x0 = x0.clamp(*clip_x0)
        eps = schedule.predict_eps(x_t, t, x0)
    ab = gather_at_steps(schedule.alphas_cumprod, t, x_t)
    ab_prev = gather_at_steps(schedule.alphas_cumprod, t_prev.clamp(min=0), x_t)
    ab_prev = torch.where((t_prev >= 0).reshape(ab_prev.shape), ab_prev, torch.ones_like(ab_prev))
    x_prev = ab_prev.sqrt() * x0
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step needs noise when eta > 0")
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
        return x_prev + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise
    return x_prev + (1 - ab_prev).sqrt() * eps


def ddim_timesteps(start_step: int, num_steps: int) -> list[int]:
    """``num_steps`` distinct, evenly spaced integer steps from ``start_step`` down to 0 (both included)."""
    if not 1 <= num_steps <= start_step + 1:
        limit = start_step + 1
        raise ValueError(f"num_steps must be in [1, {limit}] to start at step {start_step}, got {num_steps}")
    if num_steps == 1:
        return [start_step]
    span = num_steps - 1
    # integer round-half-up keeps the steps distinct (float banker's rounding may merge neighbours)
    return [(start_step * (span - i) * 2 + span) // (2 * span) for i in range(num_steps)]


@torch.no_grad()
def sample(
    denoise_fn: DenoiseFn,
    schedule: DiffusionSchedule,
    *,
    shape: Sequence[int] | None = None,
    x_start: torch.Tensor | None = None,
    start_step: int | None = None,
    sampler: str = "ddpm",
    num_steps: int | None = None,
    eta: float = 0.0,
    generator: GeneratorArg = None,
    clip_x0: tuple[float, float] | None = (-1.0, 1.0),
    progress: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run the reverse process from pure noise, or from a noised input (SDEdit, Meng et al. 2022, Sec. 3).

    Args:
        denoise_fn: ``(x_t (B, ...), t (B,) long) -> eps (B, ...)``; closes over any conditioning.
        schedule: the noise schedule the denoiser was trained with.
        shape: (B, ...) output shape when starting from pure noise at step T-1.
        x_start: (B, ...) guide (e.g. a composed or simulated video); it is first noised to ``start_step``
            and then denoised, so larger ``start_step`` trades fidelity to the guide for realism.
        start_step: SDEdit step t0 in ``[0, T-1]``; required with ``x_start``.
        sampler: ``"ddpm"`` (every step t0, t0-1, ..., 0) or ``"ddim"`` (``num_steps`` evenly spaced steps).
        num_steps: DDIM steps (default: every step); for DDPM it must be None.
        eta: DDIM stochasticity (0 = deterministic).
        generator: None, one generator, or one per sample (results then independent of batch composition).
        clip_x0: range of the predicted x0 (data are scaled to [-1, 1]); None to disable.
        progress: show a tqdm bar.
        device: where to sample; default ``x_start``'s device, else the schedule's.

    Returns:
        (B, ...) samples at step 0 (the predicted clean data).
    """
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"unknown sampler {sampler!r}; expected 'ddpm' or 'ddim'")
    if device is None:
        device = x_start.device if x_start is not None else schedule.device
    schedule = schedule.to(device)
    last = schedule.num_steps - 1
    if x_start is None:
        if shape is None:
            raise ValueError("give either shape (pure noise) or x_start with start_step (SDEdit)")
        if start_step is not None:
            raise ValueError("start_step needs x_start")
        t0 = last
        x = randn_like_per_sample(torch.empty(tuple(shape), device=device), generator)
    else:
        if start_step is None or not 0 <= start_step <= last:
            raise ValueError(f"x_start needs start_step in [0, {last}], got {start_step}")
        if shape is not None and tuple(shape) != tuple(x_start.shape):
            raise ValueError(f"shape {tuple(shape)} does not match x_start {tuple(x_start.shape)}")
        t0 = start_step
        x_start = x_start.to(device)
        t = torch.full((x_start.shape[0],), t0, device=device, dtype=torch.long)
        x = schedule.q_sample(x_start, t, randn_like_per_sample(x_start, generator))

    if sampler == "ddpm":
        if num_steps not in (None, t0 + 1):
            raise ValueError(f"ddpm runs every step ({t0 + 1}); num_steps={num_steps} applies to ddim only")
        steps = list(range(t0, -1, -1))
    else:
        steps = ddim_timesteps(t0, t0 + 1 if num_steps is None else num_steps)

    batch = x.shape[0]
    for i, step in enumerate(tqdm(steps, desc=f"{sampler} sampling", disable=not progress)):
        t = torch.full((batch,), step, device=device, dtype=torch.long)
        eps = denoise_fn(x, t)
        if sampler == "ddpm":
            noise = randn_like_per_sample(x, generator) if step > 0 else None
            x = ddpm_step(schedule, eps, x, t, noise, clip_x0)
        else:
            t_prev = torch.full_like(t, steps[i + 1] if i + 1 < len(steps) else -1)
            noise = randn_like_per_sample(x, generator) if eta > 0 else None
            x = ddim_step(schedule, eps, x, t, t_prev, noise, eta, clip_x0)
    return x
