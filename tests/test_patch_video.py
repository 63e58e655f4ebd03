"""Patch-video extraction, normalisation, replayed flips, caching and the DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cellgen.data.ctc import CTCSequence
from cellgen.data.errors import CellgenInputError
from cellgen.data.patch_video import (
    SEQUENCE_PERCENTILES,
    PatchVideoDataModule,
    PatchVideoDataset,
    PatchVideoSpec,
    extract_patch_videos,
    load_patch_videos,
    normalise_per_channel,
    patch_origins,
)


def test_patch_origins_25_percent_overlap() -> None:
    assert patch_origins(256, 128, 0.25) == [0, 96, 128]
    assert patch_origins(128, 128, 0.25) == [0]
    assert patch_origins(100, 128, 0.25) == []


def test_normalise_per_channel() -> None:
    videos = np.stack([np.linspace(-5, 5, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)] * 2).astype(np.float32)
    videos[:, 1] *= 100
    out = normalise_per_channel(videos)
    assert out.min(axis=(2, 3, 4)) == pytest.approx(np.zeros((2, 2)))
    assert out.max(axis=(2, 3, 4)) == pytest.approx(np.ones((2, 2)))


def test_flips_are_identical_on_every_frame_and_flow_signs_follow() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((1, 1, 8, 8)).astype(np.float32)
    video = np.concatenate([base] * 5, axis=1)  # 5 identical frames
    video = np.concatenate([video, np.full_like(video, 0.8), np.full_like(video, 0.3)], axis=0)  # I, U, V
    dataset = PatchVideoDataset(video[None], flips=True, flow_channels=(1, 2))
    seen = set()
    for _ in range(40):
        out = dataset[0].numpy()
        for t in range(1, 5):
            np.testing.assert_array_equal(out[0, t], out[0, 0])
        hflip = np.array_equal(out[0, 0], base[0, 0, :, ::-1]) or np.array_equal(out[0, 0], base[0, 0, ::-1, ::-1])
        vflip = np.array_equal(out[0, 0], base[0, 0, ::-1, :]) or np.array_equal(out[0, 0], base[0, 0, ::-1, ::-1])
        assert np.allclose(out[1], 0.2 if hflip else 0.8)
        assert np.allclose(out[2], 0.7 if vflip else 0.3)
        seen.add((hflip, vflip))
    assert len(seen) == 4  # all four flip combinations occur


def test_extract_and_cache(demo_phc: Path, tmp_path: Path) -> None:
    seq = CTCSequence(demo_phc)
    spec = PatchVideoSpec(patch_size=128, num_frames=10, start_frames=(0, 20), frame_skip=2)
    videos, path = load_patch_videos(seq, spec, tmp_path)
    assert videos.shape == (2 * 9, 1, 10, 128, 128) and videos.dtype == np.float32
    assert path is not None and path.is_file()
    stamp = path.stat().st_mtime_ns
    again, _ = load_patch_videos(seq, spec, tmp_path)
    np.testing.assert_array_equal(again, videos)
    assert path.stat().st_mtime_ns == stamp  # served from the cache, not rewritten
    frame = seq.image(20 + 2 * 3)[96:224, 128:256].astype(np.float32)
    patch = videos[9 + 5, 0, 3]  # start 20, patch (96, 128), frame index 3
    # Per-video min-max normalisation is affine, so the patch is perfectly correlated with exactly that crop.
    assert np.corrcoef(patch.ravel(), frame.ravel())[0, 1] > 0.999


def test_too_short_sequence_is_clear(demo_phc: Path) -> None:
    with pytest.raises(CellgenInputError, match="needs 101 frames"):
        extract_patch_videos(CTCSequence(demo_phc), PatchVideoSpec(num_frames=10, start_frames=(10,), frame_skip=10))


def test_datamodule_defaults_to_demo_data(tmp_path: Path) -> None:
    dm = PatchVideoDataModule(batch_size=2, cache_dir=str(tmp_path), val_fraction=0.25)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 1, 10, 128, 128) and batch.dtype == torch.float32
    assert len(dm.train_set) + len(dm.val_set) == 9


def test_regions_cut_disjoint_pixels(demo_phc: Path) -> None:
    """A train region and a test region share no pixel: the real test set of `cellgen evaluate video`."""
    seq = CTCSequence(demo_phc)
    height, width = seq.shape
    base = {"patch_size": 16, "overlap": 0.0, "num_frames": 2}
    left = extract_patch_videos(seq, PatchVideoSpec(**base, region=(0.0, 1.0, 0.0, 0.5)))
    right = extract_patch_videos(seq, PatchVideoSpec(**base, region=(0.0, 1.0, 0.5, 1.0)))
    whole = extract_patch_videos(seq, PatchVideoSpec(**base))
    assert len(left) == (height // 16) * (width // 2 // 16) == len(right)
    assert len(whole) == (height // 16) * (width // 16)
    assert PatchVideoSpec(**base).key() != PatchVideoSpec(**base, region=(0.0, 1.0, 0.0, 0.5)).key()
    with pytest.raises(CellgenInputError, match="region"):
        extract_patch_videos(seq, PatchVideoSpec(**base, region=(0.0, 1.0, 0.6, 0.5)))


def test_sequence_intensity_is_one_affine_map_shared_by_regions(demo_phc: Path) -> None:
    """``intensity="sequence"``: one map from the frames' percentiles, the same for a train and a test region."""
    seq = CTCSequence(demo_phc)
    base = {"patch_size": 16, "overlap": 0.0, "num_frames": 3, "intensity": "sequence"}
    left = extract_patch_videos(seq, PatchVideoSpec(**base, region=(0.0, 1.0, 0.0, 0.5)))
    right = extract_patch_videos(seq, PatchVideoSpec(**base, region=(0.0, 1.0, 0.5, 1.0)))
    assert left.dtype == np.float32 and left.min() >= 0.0 and left.max() <= 1.0
    frames = np.stack([seq.image(i) for i in seq.frame_indices[:3]]).astype(np.float64)
    lo, hi = np.percentile(frames, SEQUENCE_PERCENTILES)
    crop = frames[:, :16, :16]  # the first patch of the left region
    np.testing.assert_allclose(left[0, 0], np.clip((crop - lo) / (hi - lo), 0, 1), atol=1e-5)
    crop = frames[:, :16, frames.shape[2] // 2 : frames.shape[2] // 2 + 16]  # first patch of the right region
    np.testing.assert_allclose(right[0, 0], np.clip((crop - lo) / (hi - lo), 0, 1), atol=1e-5)
    # Unlike per-video min-max, a video keeps its brightness: not every video spans [0, 1].
    assert (left.max(axis=(1, 2, 3, 4)) - left.min(axis=(1, 2, 3, 4)) < 0.99).any()
    assert PatchVideoSpec(**base).key() != PatchVideoSpec(**{**base, "intensity": "video"}).key()
    assert PatchVideoSpec(16, 0.0, 3).key() == PatchVideoSpec(16, 0.0, 3, intensity="video").key()


def test_unknown_intensity_scaling_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CellgenInputError, match="intensity must be one of"):
        PatchVideoDataModule(intensity="percentile", cache_dir=str(tmp_path))
