"""A denoising diffusion model as one plain ``nn.Module``: denoiser, EMA copy, noise schedule, per-sample seeds.

Every cellgen diffusion model (the BVDM texture DDPM on crops ``(B, 1, S, S)``, the video models on
``(B, C, T, H, W)``) is this wrapper around its own network; the LightningModules only add the optimiser and the
data. Data arrive in [0, 1] and are mapped linearly onto ``model_range`` (default [-1, 1], Ho et al. 2020,
Sec. 3.3) for the network; sampling returns [0, 1].
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cellgen.diffusion.samplers import sample
from cellgen.diffusion.schedule import DiffusionSchedule
from cellgen.nn.ema import update_ema, warmed_up_decay

SEED_STRIDE = 1_000_003  # sample i of base seed s uses seed s * SEED_STRIDE + i


def sample_seed(seed: int, index: int) -> int:
    """The seed of global sample ``index``: independent of batch size, device count and the other samples."""
    return int(seed) * SEED_STRIDE + int(index)


PREDICTIONS = ("eps", "v")


class DenoisingDiffusion(nn.Module):
    """DDPM around ``net`` ``(x_t (B, ...), t (B,)) -> eps or v (B, ...)``, any tensor rank.

    Samplers and guidance always see ``eps`` (:meth:`denoise_fn` converts a v-prediction), so both
    parameterisations share every sampler.

    State: ``net``, ``ema_net`` (a frozen copy for sampling, absent when ``ema_decay`` is None) and ``ema_updates``
    (a counter, saved only with an EMA). The schedule is rebuilt from its name, never saved.

    Args:
        net: the denoiser.
        schedule: ``cosine`` or ``linear``.
        num_timesteps: diffusion steps T.
        ema_decay: EMA decay of the sampling weights; None: sample with ``net``. The decay warms up as
            ``min(decay, (1 + n) / (10 + n))`` so short runs still sample well.
        model_range: the range the network sees; [0, 1] data are mapped linearly onto it.
        loss: ``l2`` (Ho et al. 2020, Eq. 14) or ``l1`` on the prediction.
        prediction: ``eps`` (Ho et al. 2020) or ``v`` (Salimans & Ho 2022). Near t = T an eps-model's x0 estimate
            is noise divided by ~0, clipped, so the first sampling steps fix a video's global brightness near
            mid-range whatever the data's; a v-model predicts x0 itself there (Imagen Video uses v for this).
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: Literal["cosine", "linear"] = "cosine",
        num_timesteps: int = 1000,
        ema_decay: float | None = 0.999,
        model_range: tuple[float, float] = (-1.0, 1.0),
        loss: Literal["l1", "l2"] = "l2",
        prediction: Literal["eps", "v"] = "eps",
    ) -> None:
        super().__init__()
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if prediction == "v" and loss == "l1":
            # Near t = T the v target is about -x0, and L1 regresses to its per-pixel median: on sparse bright cells
            # over a background that median is the background, so samples come out flat (docs/RESULTS.md, issue 13).
            message = "prediction 'v' with an L1 loss learns the median image at high noise; use loss 'l2'"
            warnings.warn(message, stacklevel=2)
        self.prediction = prediction
        self.net = net
        # The EMA copy is a frozen submodule: saved in checkpoints, never seen by the optimizer.
        self.ema_net = copy.deepcopy(net).requires_grad_(False) if ema_decay else None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long), persistent=bool(ema_decay))
        self.ema_decay = ema_decay
        self.num_timesteps = num_timesteps
        self.model_range = (float(model_range[0]), float(model_range[1]))
        self.loss_kind = loss
        self._schedule = DiffusionSchedule.create(schedule, num_timesteps)

    @property
    def device(self) -> torch.device:
        return self.ema_updates.device

    @property
    def schedule(self) -> DiffusionSchedule:
        """The noise schedule on this module's device."""
        self._schedule = self._schedule.to(self.device)
        return self._schedule

    def to_model_range(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.model_range
        return x * (high - low) + low

    def from_model_range(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.model_range
        return ((x - low) / (high - low)).clamp(0.0, 1.0)

    def denoiser(self, use_ema: bool = True) -> nn.Module:
        """The network used for sampling: the EMA copy when there is one and ``use_ema``."""
        return self.ema_net if use_ema and self.ema_net is not None else self.net

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise for noisy data x_t (B, ...) in ``model_range`` at integer steps t (B,)."""
        return self.net(x_t, t)

    # ----------------------------------------------------------------------------------------- training

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """DDPM loss (Ho et al. 2020, Eq. 14) between the true and predicted noise (or v) at a random step; batch in
        [0, 1]."""
        x0 = self.to_model_range(batch)
        t = torch.randint(0, self.num_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        predicted = self.net(self.schedule.q_sample(x0, t, noise), t).float()
        target = noise if self.prediction == "eps" else self.schedule.velocity(x0, t, noise)
        return F.l1_loss(predicted, target) if self.loss_kind == "l1" else F.mse_loss(predicted, target)

    def update_ema(self) -> None:
        """One EMA step of ``ema_net`` towards ``net``; call after every optimiser step."""
        if self.ema_net is None:
            return
        self.ema_updates += 1
        update_ema(self.ema_net, self.net, warmed_up_decay(self.ema_decay, int(self.ema_updates.item())))

    # ----------------------------------------------------------------------------------------- sampling

    def sample_generators(self, indices: torch.Tensor | Iterable[int], seed: int) -> list[torch.Generator]:
        """One generator per global sample index, seeded by :func:`sample_seed`."""
        indices = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        return [torch.Generator(self.device).manual_seed(sample_seed(seed, i)) for i in indices]

    def denoise_fn(
        self, use_ema: bool = True, autocast: bool = False
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(x_t, t) -> eps`` in x_t's dtype (fp32 sampling arithmetic even under bf16 autocast).

        ``autocast`` runs the network in bf16; otherwise any autocast the caller set stays in force.
        """
        net = self.denoiser(use_ema)
        device_type = self.device.type
        schedule = self.schedule

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            context = torch.autocast(device_type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with context:
                out = net(x_t, t).to(x_t.dtype)
            return out if self.prediction == "eps" else schedule.eps_from_velocity(x_t, t, out)

        return denoise

    @torch.no_grad()
    def generate(
        self,
        shape: Sequence[int],
        generators: Sequence[torch.Generator] | None = None,
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        num_steps: int | None = None,
        eta: float = 0.0,
        use_ema: bool = True,
        autocast: bool = False,
    ) -> torch.Tensor:
        """Samples of ``shape`` (B, ...) in [0, 1] from pure noise, sample ``i`` drawn from ``generators[i]``."""
        x = sample(
            self.denoise_fn(use_ema, autocast),
            self.schedule,
            shape=tuple(shape),
            sampler=sampler,
            num_steps=num_steps,
            eta=eta,
            generator=list(generators) if generators is not None else None,
            clip_x0=self.model_range,
            device=self.device,
        )
        return self.from_model_range(x)

    @torch.no_grad()
    def denoise_from(
        self,
        x_start: torch.Tensor,
        start_step: int,
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        num_steps: int | None = None,
        generators: Sequence[torch.Generator] | None = None,
        eta: float = 0.0,
        use_ema: bool = True,
    ) -> torch.Tensor:
        """SDEdit (Meng et al. 2022): noise ``x_start`` (B, ...) in [0, 1] to ``start_step``, then denoise.

        All samples go through in one batch (one network call per step), on any device and under
        ``torch.autocast`` (the sampling arithmetic stays in the input's dtype).

        Args:
            x_start: (B, ...) guides in [0, 1].
            start_step: t0 in [0, T], the number of denoising steps (the BVDM authors' convention: the input is
                noised to step index t0 - 1 and denoised through t0 - 1, ..., 0); 0 returns ``x_start``.
            sampler: ``ddpm`` (ancestral) or ``ddim``.
            num_steps: steps between t0 and 0 (None: every step for ddpm).
            generators: one torch.Generator per sample on ``x_start``'s device (noise and sampling).
            eta: DDIM stochasticity.
            use_ema: use the EMA weights when present.

        Returns:
            (B, ...) samples in [0, 1].
        """
        if not 0 <= start_step <= self.num_timesteps:
            raise ValueError(f"start_step must lie in [0, {self.num_timesteps}], got {start_step}")
        if start_step == 0:
            return x_start.clone()
        x = sample(
            self.denoise_fn(use_ema),
            self.schedule.to(x_start.device),
            x_start=self.to_model_range(x_start),
            start_step=start_step - 1,
            sampler=sampler,
            num_steps=num_steps,
            eta=eta,
            generator=list(generators) if generators is not None else None,
            clip_x0=self.model_range,
            device=x_start.device,
        )
        return self.from_model_range(x)
