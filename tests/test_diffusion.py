"""Noise schedules (golden values), forward noising, DDPM/DDIM samplers, SDEdit and per-sample seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cellgen.diffusion import (
    DiffusionSchedule,
    ddim_timesteps,
    gather_at_steps,
    randn_like_per_sample,
    sample,
)


def _linear_alpha_bar(num_steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    return np.cumprod(1.0 - np.linspace(start, end, num_steps))


def _cosine_alpha_bar(step: int, num_steps: int = 1000, s: float = 0.008) -> float:
    """Closed-form alpha_bar after ``step`` (0-based), Nichol & Dhariwal (2021) Eq. 17, without clipping."""
    f = lambda u: math.cos((u / num_steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(step + 1) / f(0)


def _oracle(schedule: DiffusionSchedule, x0: torch.Tensor):
    """The exact eps of a point mass at x0: (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = schedule.alphas_cumprod[t].reshape(-1, *([1] * (x_t.ndim - 1)))
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    return denoise


def test_linear_schedule_golden_values() -> None:
    schedule = DiffusionSchedule.linear()
    expected = _linear_alpha_bar()
    for step in (0, 499, 999):
        assert schedule.alphas_cumprod[step].item() == pytest.approx(expected[step], rel=1e-5)
    assert schedule.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4)
    assert schedule.alphas_cumprod[999].item() == pytest.approx(4.04e-5, rel=1e-2)  # Ho et al. (2020): ~noise
    assert schedule.betas.dtype == torch.float32 and schedule.num_steps == 1000


def test_cosine_schedule_golden_values() -> None:
    schedule = DiffusionSchedule.cosine()
    for step in (0, 250, 499, 900):
        assert schedule.alphas_cumprod[step].item() == pytest.approx(_cosine_alpha_bar(step), rel=1e-4)
    assert schedule.betas.max().item() == pytest.approx(0.999)  # the last beta is clipped
    assert schedule.alphas_cumprod[-1].item() < 1e-6


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_tables_are_consistent(kind: str) -> None:
    schedule = DiffusionSchedule.create(kind, 200)
    ab = schedule.alphas_cumprod
    assert ((schedule.betas > 0) & (schedule.betas <= 0.999)).all()
    assert (ab[1:] < ab[:-1]).all() and ab[0] < 1
    assert schedule.alphas_cumprod_prev[0] == 1 and torch.equal(schedule.alphas_cumprod_prev[1:], ab[:-1])
    t = 57
    beta, ab_t, ab_prev = schedule.betas[t].item(), ab[t].item(), ab[t - 1].item()
    assert schedule.posterior_variance[t].item() == pytest.approx(beta * (1 - ab_prev) / (1 - ab_t), rel=1e-5)
    assert schedule.posterior_log_variance_clipped[0] == schedule.posterior_log_variance_clipped[1]
    assert schedule.posterior_variance[0] == 0


def test_create_by_name() -> None:
    assert torch.equal(DiffusionSchedule.create("linear", 1000).betas, DiffusionSchedule.linear().betas)
    # the linear betas are rescaled so a short chain still ends near pure noise
    assert DiffusionSchedule.create("linear", 100).alphas_cumprod[-1] < 1e-3
    with pytest.raises(ValueError, match="unknown schedule kind"):
        DiffusionSchedule.create("quadratic", 10)


def test_gather_broadcasts_to_any_rank() -> None:
    schedule = DiffusionSchedule.linear(10)
    t = torch.tensor([0, 9])
    for shape in [(2, 3, 4, 4), (2, 3, 5, 4, 4)]:
        coef = gather_at_steps(schedule.betas, t, torch.zeros(shape))
        assert coef.shape == (2,) + (1,) * (len(shape) - 1)
        assert coef.flatten().tolist() == pytest.approx(schedule.betas[[0, 9]].tolist())


def test_q_sample_and_predict_x0() -> None:
    schedule = DiffusionSchedule.linear()
    x0, noise = torch.rand(2, 1, 4, 4) * 2 - 1, torch.randn(2, 1, 4, 4).clamp(-3, 3)
    zero = torch.zeros(2, dtype=torch.long)
    assert torch.allclose(schedule.q_sample(x0, zero, noise), x0, atol=0.031)  # sqrt(1 - ab_0) = 0.01
    t = torch.tensor([10, 900])
    x_t = schedule.q_sample(x0, t, noise)
    assert torch.allclose(schedule.predict_x0(x_t, t, noise), x0, atol=1e-4)
    assert torch.allclose(schedule.predict_eps(x_t, t, x0), noise, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 1, 6, 6), (2, 2, 3, 6, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_denoiser_recovers_point_mass(shape: tuple[int, ...], sampler: str) -> None:
    schedule = DiffusionSchedule.create("cosine", 50)
    x0 = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    steps = 10 if sampler == "ddim" else None
    out = sample(_oracle(schedule, x0), schedule, shape=shape, sampler=sampler, num_steps=steps, eta=0.5)
    assert out.shape == shape
    assert torch.allclose(out, x0, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampler_variances_match_closed_form_for_gaussian_data(sampler: str) -> None:
    """With the exact eps of N(0, s^2) data every step is linear-Gaussian: the final std has a closed form."""
    schedule, s = DiffusionSchedule.create("linear", 100), 0.5
    betas = schedule.betas.double().numpy()
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    k = np.sqrt(1 - ab) / (ab * s**2 + 1 - ab)  # eps = k x_t, the posterior mean of the noise
    var = 1.0
    for t in range(99, -1, -1):
        x0_gain = (1 - np.sqrt(1 - ab[t]) * k[t]) / np.sqrt(ab[t])
        if sampler == "ddpm":  # posterior mean (Ho et al. 2020, Eq. 7) and variance beta_tilde
            gain = betas[t] * np.sqrt(ab_prev[t]) / (1 - ab[t]) * x0_gain
            gain += (1 - ab_prev[t]) * np.sqrt(1 - betas[t]) / (1 - ab[t])
            noise_var = betas[t] * (1 - ab_prev[t]) / (1 - ab[t])
        else:  # deterministic DDIM (Song et al. 2021, Eq. 12)
            gain, noise_var = np.sqrt(ab_prev[t]) * x0_gain + np.sqrt(1 - ab_prev[t]) * k[t], 0.0
        var = gain**2 * var + noise_var

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(k).float()[t].reshape(-1, 1) * x_t

    gen = torch.Generator().manual_seed(0)
    out = sample(denoise, schedule, shape=(4, 4096), sampler=sampler, generator=gen, clip_x0=None)
    assert out.std().item() == pytest.approx(math.sqrt(var), rel=0.03)
    assert out.std().item() == pytest.approx(s, rel=0.1)  # and close to the data's own spread
    assert abs(out.mean().item()) < 0.03


def test_sdedit_from_step_zero_returns_input() -> None:
    schedule = DiffusionSchedule.linear(100)
    x_start = torch.rand(2, 1, 3, 5, 5) * 2 - 1
    out = sample(lambda x, t: torch.zeros_like(x), schedule, x_start=x_start, start_step=0)
    assert torch.allclose(out, x_start, atol=0.05)
    ddim = sample(lambda x, t: torch.zeros_like(x), schedule, x_start=x_start, start_step=0, sampler="ddim")
    assert torch.allclose(ddim, x_start, atol=0.05)


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 1.0)])
@pytest.mark.parametrize("sdedit", [False, True])
def test_per_sample_generators_make_results_batch_independent(sampler: str, eta: float, sdedit: bool) -> None:
    schedule = DiffusionSchedule.cosine(20)

    # the denoiser depends on the whole sample, but not on the rest of the batch
    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.3 * (x_t - x_t.mean(dim=(1, 2, 3), keepdim=True))

    guide = torch.rand(2, 1, 4, 4) * 2 - 1

    def run(indices: list[int]) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(100 + i) for i in indices]
        n = len(indices)
        kwargs = {"x_start": guide[indices], "start_step": 12} if sdedit else {"shape": (n, 1, 4, 4)}
        steps = None if sampler == "ddpm" else 5
        return sample(denoise, schedule, sampler=sampler, num_steps=steps, eta=eta, generator=gens, **kwargs)

    pair, swapped = run([0, 1]), run([1, 0])
    assert torch.allclose(pair[0], run([0])[0], atol=1e-6)
    assert torch.allclose(pair[1], run([1])[0], atol=1e-6)
    assert torch.allclose(pair, swapped.flip(0), atol=1e-6)
    assert not torch.allclose(pair[0], pair[1])


def test_randn_like_per_sample() -> None:
    x = torch.empty(3, 2, 4)
    a = randn_like_per_sample(x, [torch.Generator().manual_seed(i) for i in range(3)])
    assert torch.equal(a[2], torch.randn(2, 4, generator=torch.Generator().manual_seed(2)))
    b = randn_like_per_sample(x, torch.Generator().manual_seed(0))
    assert torch.equal(b, torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="generators"):
        randn_like_per_sample(x, [torch.Generator()])


def test_ddim_timesteps_are_evenly_spaced() -> None:
    assert ddim_timesteps(9, 4) == [9, 6, 3, 0]
    assert ddim_timesteps(999, 1000) == list(range(999, -1, -1))
    steps = ddim_timesteps(999, 50)
    assert len(set(steps)) == 50 and steps[0] == 999 and steps[-1] == 0
    with pytest.raises(ValueError):
        ddim_timesteps(5, 7)


def test_sample_rejects_bad_arguments() -> None:
    schedule = DiffusionSchedule.linear(10)
    zeros = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="sampler"):
        sample(zeros, schedule, shape=(1, 2), sampler="euler")
    with pytest.raises(ValueError, match="start_step"):
        sample(zeros, schedule, x_start=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="shape"):
        sample(zeros, schedule)
    with pytest.raises(ValueError, match="ddim only"):
        sample(zeros, schedule, shape=(1, 2), num_steps=3)
