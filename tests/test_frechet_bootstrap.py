"""The sample-space Fréchet distance and the bootstrap spread of a Fréchet ratio, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cellgen.metrics.frechet import frechet_distance_of_features, frechet_distance_of_samples
from cellgen.metrics.frechet_bootstrap import bootstrap_frechet_ratio, resample_groups


@pytest.mark.parametrize(("n1", "n2", "dim"), [(12, 9, 40), (50, 60, 5)])  # fewer and more samples than dimensions
def test_sample_space_distance_equals_the_covariance_one(n1: int, n2: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n1, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(0.5, 2.0, size=(n2, dim))
    assert frechet_distance_of_samples(a, b) == pytest.approx(frechet_distance_of_features(a, b), rel=1e-7)


def test_sample_space_distance_by_hand() -> None:
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2; [0, 2]: mean 1, variance 2; [4, 8]: mean 6, variance 8
    assert frechet_distance_of_samples([[0.0], [2.0]], [[4.0], [8.0]]) == pytest.approx(25 + (2**0.5 - 8**0.5) ** 2)


def test_groups_move_together() -> None:
    rows = resample_groups(8, 2, np.random.default_rng(3))
    assert rows.shape == (8,)
    assert np.all(rows[0::2] % 2 == 0) and np.all(rows[1::2] == rows[0::2] + 1)  # frames of one video stay together
    with pytest.raises(ValueError, match="groups of 3"):
        resample_groups(8, 3, np.random.default_rng(0))


def test_constant_sets_have_no_spread() -> None:
    # every draw of a set of identical rows is the same set: FD = |mu1 - mu2|^2 = 25 over a floor of 1, always
    result = bootstrap_frechet_ratio([[3.0, 4.0]] * 4, [[0.0, 0.0]] * 4, [[1.0, 0.0]] * 4, draws=20)
    assert result["ratio_sd"] == 0 and result["ratio_ci95"] == [25.0, 25.0] and result["floor_sd"] == 0


def test_bootstrap_distribution_by_hand() -> None:
    # generated [0, 2] resamples to {0,0} (FD 100), {2,2} (FD 64) or {0,2} twice (FD 81 + 2 = 83) against a
    # constant test set at 10; the floor (train at 9 vs test at 10) is always 1: mean 82.5, range 64 .. 100
    result = bootstrap_frechet_ratio([[0.0], [2.0]], [[10.0]] * 2, [[9.0]] * 2, draws=4000, seed=1)
    values = np.array([100.0, 64.0, 83.0, 83.0])
    assert result["ratio_ci95"] == [64.0, 100.0]
    assert result["ratio_sd"] == pytest.approx(values.std(), rel=0.05)
    assert result["floor_sd"] == 0


def test_resampling_needs_draws() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_frechet_ratio([[0.0], [1.0]], [[0.0], [1.0]], [[0.0], [1.0]], draws=1)
