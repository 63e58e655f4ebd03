"""cellgen.diffusion: noise schedules, forward noising and samplers, shared by every diffusion model.

Never imports Lightning; works for any tensor rank, 2-D crops ``(B, C, H, W)`` and videos ``(B, C, T, H, W)``.
"""

from cellgen.diffusion.samplers import ddim_step, ddim_timesteps, ddpm_step, randn_like_per_sample, sample
from cellgen.diffusion.schedule import DiffusionSchedule, gather_at_steps

__all__ = [
    "DiffusionSchedule",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_step",
    "gather_at_steps",
    "randn_like_per_sample",
    "sample",
]
