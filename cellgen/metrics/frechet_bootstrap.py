"""Bootstrap spread of a Fréchet-distance ratio (FID or FVD over its real-vs-real floor).

With a few dozen videos per set, FID and FVD move a lot between draws of the same distributions, so a ratio such
as FVD(generated, real test) / FVD(real train, real test) needs a spread before it can be called below a goal.
The features are computed once; each bootstrap draw resamples the videos of every set with replacement
(the frames of one video stay together, as they are not independent), recomputes both distances with the cheap
sample-space formula (:func:`~cellgen.metrics.frechet.frechet_distance_of_samples`) and takes their ratio. The
real test set is drawn once per draw and shared by numerator and floor, as in the unresampled ratio.

Resampling with replacement repeats samples, which raises every Fréchet distance a little (fewer distinct
samples); numerator and floor rise alike, so the spread of the ratio is the useful output, not its mean.
"""

from __future__ import annotations

import numpy as np

from cellgen.metrics.frechet import ArrayLike, frechet_distance_of_samples


def resample_groups(rows: int, group: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of ``rows // group`` groups of ``group`` consecutive rows, groups drawn with replacement."""
    if group < 1 or rows % group:
        raise ValueError(f"{rows} feature rows do not split into groups of {group}")
    picks = rng.integers(0, rows // group, rows // group)
    return (picks[:, None] * group + np.arange(group)[None, :]).reshape(-1)


def bootstrap_frechet_ratio(
    generated: ArrayLike,
    real_test: ArrayLike,
    real_train: ArrayLike,
    draws: int = 200,
    seed: int = 0,
    group: int = 1,
) -> dict[str, float | list[float]]:
    """Spread of FD(generated, real test) / FD(real train, real test) over bootstrap draws.

    Args:
        generated, real_test, real_train: features (N, D) of each set (N may differ between sets).
        draws: bootstrap draws.
        seed: seed of the resampling.
        group: consecutive rows that belong to one video (e.g. 2 frames per video for FID) and move together.

    Returns:
        ``{"ratio_sd", "ratio_ci95": [2.5th, 97.5th percentile], "distance_sd", "floor_sd", "draws"}``.
    """
    if draws < 2:
        raise ValueError(f"need at least 2 bootstrap draws, got {draws}")
    sets = [np.asarray(f, dtype=np.float64) for f in (generated, real_test, real_train)]
    rng = np.random.default_rng(seed)
    distances, floors = np.empty(draws), np.empty(draws)
    for i in range(draws):
        fake, test, train = (f[resample_groups(len(f), group, rng)] for f in sets)
        distances[i] = frechet_distance_of_samples(fake, test)
        floors[i] = frechet_distance_of_samples(train, test)
    ratios = distances / np.maximum(floors, 1e-12)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {
        "ratio_sd": float(ratios.std(ddof=1)),
        "ratio_ci95": [float(low), float(high)],
        "distance_sd": float(distances.std(ddof=1)),
        "floor_sd": float(floors.std(ddof=1)),
        "draws": draws,
    }
