"""Noise schedules and the closed forms of the Gaussian diffusion process (Ho et al. 2020).

One schedule serves every tensor rank: per-sample coefficients are gathered at integer steps and broadcast to
``(B, 1, ...)``, so 2-D crops ``(B, C, H, W)`` and videos ``(B, C, T, H, W)`` share the same code.
"""

from __future__ import annotations

import math

import torch


def gather_at_steps(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pick per-sample coefficients and shape them to broadcast against ``like``.

    Args:
        values: (num_steps,) table, e.g. ``alphas_cumprod``.
        t: (B,) integer steps in ``[0, num_steps)``.
        like: (B, ...) tensor whose rank, device and floating dtype the result follows.

    Returns:
        (B, 1, ..., 1) tensor with ``like.ndim`` dimensions.
    """
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"t must have shape (B,) = ({like.shape[0]},), got {tuple(t.shape)}")
    out = values.to(like.device)[t.to(device=like.device, dtype=torch.long)]
    if like.is_floating_point():
        out = out.to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


class DiffusionSchedule:
    """Discrete-time variance schedule with every table the samplers need.

    The tables are computed in float64 and stored as float32 (B·T products of many ``1 - beta`` lose precision
    in float32). It is a plain class, not an ``nn.Module``: models keep it out of their checkpoints and
    rebuild it from ``kind`` and ``num_steps``.

    Attributes (all (num_steps,) float32):
        betas, alphas, alphas_cumprod, alphas_cumprod_prev (``alpha_bar_{t-1}``, 1 at t=0),
        sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, sqrt_recip_alphas_cumprod,
        sqrt_recipm1_alphas_cumprod, posterior_variance, posterior_log_variance_clipped,
        posterior_mean_coef1 (on x0), posterior_mean_coef2 (on x_t).
    """

    _TABLES = (
        "betas",
        "alphas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    )

    def __init__(self, betas: torch.Tensor) -> None:
        """Derive every table from ``betas`` (num_steps,) with values in (0, 1]."""
        betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        alphas = 1.0 - betas
        ab = torch.cumprod(alphas, dim=0)
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        # The posterior variance is 0 at t=0; Ho et al. (2020) clip its log to the value at t=1.
        post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]) if len(betas) > 1 else post_var)
        tables = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": ab,
            "alphas_cumprod_prev": ab_prev,
            "sqrt_alphas_cumprod": ab.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ab).sqrt(),
            "sqrt_recip_alphas_cumprod": ab.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ab - 1.0).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_log_var,
            "posterior_mean_coef1": betas * ab_prev.sqrt() / (1.0 - ab),
            "posterior_mean_coef2": (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),
        }
        for name, value in tables.items():
            setattr(self, name, value.to(torch.float32))

    @classmethod
    def linear(
        cls,
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> DiffusionSchedule:
        """Linear betas; defaults for 1000 steps are those of Ho et al. (2020), Sec. 4."""
        return cls(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiffusionSchedule:
        """Cosine ``alpha_bar`` (Nichol & Dhariwal 2021, Sec. 3.2, Eq. 17), betas clipped at 0.999 there."""

        def f(step: int) -> float:
            return math.cos((step / num_steps + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1.0 - f(i + 1) / f(i), max_beta) for i in range(num_steps)]
        return cls(torch.tensor(betas, dtype=torch.float64))

    @classmethod
    def create(cls, kind: str, num_steps: int = 1000) -> DiffusionSchedule:
        """Build a schedule by name (``"linear"`` or ``"cosine"``) with its paper defaults, for configs.

        For ``"linear"`` the 1000-step betas are scaled by ``1000 / num_steps`` (Nichol & Dhariwal 2021,
        improved-diffusion), so a shorter chain still ends near pure noise; at 1000 steps it is ``linear()``.
        """
        if kind == "linear":
            scale = 1000 / num_steps
            return cls.linear(num_steps, beta_start=1e-4 * scale, beta_end=min(0.02 * scale, 0.999))
        if kind == "cosine":
            return cls.cosine(num_steps)
        raise ValueError(f"unknown schedule kind {kind!r}; expected 'linear' or 'cosine'")

    @property
    def num_steps(self) -> int:
        """Number of diffusion steps T (valid steps are 0 .. T-1)."""
        return int(self.betas.shape[0])

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: torch.device | str) -> DiffusionSchedule:
        """A copy with every table on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.betas.device == device:
            return self
        copy = object.__new__(DiffusionSchedule)
        for name in self._TABLES:
            setattr(copy, name, getattr(self, name).to(device))
        return copy

    def __repr__(self) -> str:
        return f"DiffusionSchedule(num_steps={self.num_steps}, device={self.device})"

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Jump to step t, ``sqrt(ab_t) x0 + sqrt(1 - ab_t) noise`` (Ho et al. 2020, Eq. 4).

        Args:
            x0: (B, ...) clean data.
            t: (B,) integer steps.
            noise: (B, ...) standard normal noise; drawn when None.

        Returns:
            (B, ...) x_t.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        return (
            gather_at_steps(self.sqrt_alphas_cumprod, t, x0) * x0
            + gather_at_steps(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert ``q_sample`` given predicted noise: (B, ...) x_t, (B,) t, (B, ...) eps -> (B, ...) x0."""
        return (
            gather_at_steps(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - gather_at_steps(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise that takes x0 to x_t at step t (used after clipping x0, and for x0-predicting models)."""
        return (gather_at_steps(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / gather_at_steps(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def velocity(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """v = sqrt(ab_t) noise - sqrt(1 - ab_t) x0 (Salimans & Ho 2022, Sec. 4): the target of a v-predicting model."""
        return (
            gather_at_steps(self.sqrt_alphas_cumprod, t, x0) * noise
            - gather_at_steps(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0
        )

    def eps_from_velocity(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The noise a predicted v implies: ``sqrt(ab_t) v + sqrt(1 - ab_t) x_t`` (exact, as a^2 + s^2 = 1)."""
        return (
            gather_at_steps(self.sqrt_alphas_cumprod, t, x_t) * v
            + gather_at_steps(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t
        )

    def posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Moments of ``q(x_{t-1} | x_t, x0)`` (Ho et al. 2020, Eq. 6-7).

        Args:
            x0: (B, ...) clean (or predicted clean) data.
            x_t: (B, ...) noisy data at step t.
            t: (B,) integer steps.

        Returns:
            mean (B, ...), variance (B, 1, ...), clipped log-variance (B, 1, ...).
        """
        mean = (
            gather_at_steps(self.posterior_mean_coef1, t, x_t) * x0
            + gather_at_steps(self.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = gather_at_steps(self.posterior_variance, t, x_t)
        log_variance = gather_at_steps(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance
