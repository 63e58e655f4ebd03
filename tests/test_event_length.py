"""EventLengthEstimator (Phan et al. 2019, Sec. III C-E): artificial events, length statistics, map choice, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from cellgen.cli import main
from cellgen.data.event_frames import remove_trajectory_parts, trajectory_lengths
from cellgen.models.event_length import (
    EventLengthEstimator,
    NormalCellAutoencoder,
    binary_maps,
    choose_normal_map,
    erode_within_frames,
    event_length_stats,
    robust_binary,
)

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny" / "event_length.yaml")


def _blob_stack(durations: list[int], frames: int = 12, size: int = 40) -> np.ndarray:
    """bool (T, H, W) with one 5x5 square per duration, separated in space, lasting that many frames."""
    stack = np.zeros((frames, size, size), bool)
    for i, duration in enumerate(durations):
        y, x = 4 + 12 * (i % 3), 4 + 12 * (i // 3)
        stack[1 : 1 + duration, y : y + 5, x : x + 5] = True
    return stack


def test_event_length_stats_on_known_blob_durations() -> None:
    stats = event_length_stats(_blob_stack([3, 5, 7]).astype(np.float32) * 0.9)
    assert stats["events"] == 3 and sorted(stats["lengths"]) == [3, 5, 7]
    assert stats["mean"] == pytest.approx(5.0)
    assert stats["std"] == pytest.approx(np.sqrt(8 / 3))
    assert stats["p50"] == pytest.approx(5.0) and stats["p75"] == pytest.approx(6.0)
    assert stats["k"] == 6  # ceil(p75)
    assert event_length_stats(np.zeros((4, 8, 8)))["k"] is None


def test_moving_blob_is_one_event() -> None:
    stack = np.zeros((6, 20, 20), bool)
    for t in range(6):
        stack[t, 5:10, 2 + 2 * t : 7 + 2 * t] = True  # shifts by 2 px per frame, still overlapping
    assert trajectory_lengths(stack).tolist() == [6]
    assert event_length_stats(stack)["lengths"] == [6]


def test_artificial_events_remove_inner_runs_and_targets_match() -> None:
    normal = _blob_stack([10, 10, 10, 10, 10, 10], frames=12)
    rng = np.random.default_rng(0)
    inputs, targets = remove_trajectory_parts(normal, rng, max_gap=4, fraction=1.0)
    assert not (inputs & targets).any() and np.array_equal(inputs | targets, normal)
    labels, count = ndimage.label(normal, structure=ndimage.generate_binary_structure(3, 1))
    assert count == 6
    for label in range(1, count + 1):
        removed_frames = np.nonzero((targets & (labels == label)).any(axis=(1, 2)))[0]
        kept_frames = np.nonzero((inputs & (labels == label)).any(axis=(1, 2)))[0]
        assert 1 <= len(removed_frames) <= 4  # every trajectory got one gap of 1..max_gap frames
        assert np.array_equal(removed_frames, np.arange(removed_frames[0], removed_frames[-1] + 1))  # contiguous
        assert kept_frames.min() < removed_frames.min() and kept_frames.max() > removed_frames.max()  # strictly inside
        # a removed frame loses the whole cell (the event target is the full region of that frame)
        for t in removed_frames:
            assert np.array_equal(targets[t] & (labels[t] == label), labels[t] == label)
    none_in, none_out = remove_trajectory_parts(normal, rng, fraction=0.0)
    assert np.array_equal(none_in, normal) and not none_out.any()


def test_normal_map_choice_prefers_round_separate_objects() -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    discs = np.zeros((64, 64), bool)
    for cy, cx in [(12, 12), (12, 40), (40, 20), (48, 50)]:
        discs |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
    lines = ((yy % 16) < 2) | ((xx % 16) < 2)  # a connected grid: one component
    bars = np.zeros((64, 64), bool)
    for y in (5, 25, 45):
        bars[y : y + 3, 4:60] = True  # separate but elongated
    background = ~(discs | lines | bars)
    maps = np.stack([background, lines, discs, bars, np.zeros_like(discs), np.zeros_like(discs)])[None].astype(float)
    index, scores = choose_normal_map(np.repeat(maps, 2, axis=0), mode="threshold", erosion=0)
    assert index == 2 and scores[2] > 2 * max(scores[1], scores[3]) and scores[0] == 0
    # Soft maps (a short M1 run): no map exceeds 0.5 anywhere, but each pixel still has a winner.
    soft = 0.1 + 0.2 * maps
    assert not (soft > 0.5).any()
    assert choose_normal_map(np.repeat(soft, 2, axis=0), mode="argmax", erosion=0)[0] == 2
    specks = np.zeros((64, 64), bool)
    specks[::9, ::9] = True  # isolated pixels: perfectly "round" and separate, but no cells
    with_specks = np.concatenate([maps[:, :5], specks[None, None].astype(float)], axis=1)
    assert choose_normal_map(np.repeat(with_specks, 2, axis=0), mode="threshold", erosion=1)[0] == 2
    one_hot = binary_maps(soft)
    assert np.array_equal(one_hot.sum(axis=1), np.ones((1, 64, 64)))  # every pixel belongs to exactly one map
    assert np.array_equal(one_hot[0, 2] | one_hot[0, 1], discs | lines)  # grid pixels go to the first winner


def test_robust_binarisation_keeps_textured_nuclei_whole() -> None:
    """A soft nucleus map as a short M1 run gives on SIM+: values around 0.5 with texture inside the nuclei and a
    dim centre. ``> 0.5`` fragments each nucleus; smoothing + Otsu + hole filling gives one whole disc per nucleus."""
    from skimage import measure

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    nuclei = [(14, 14), (14, 46), (44, 22), (48, 50)]
    truth = np.zeros((64, 64), bool)
    soft = np.full((3, 64, 64), 0.1, np.float32)
    for cy, cx in nuclei:
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        truth |= r2 <= 64
        soft[:, r2 <= 64] = 0.55
        soft[:, r2 <= 4] = 0.3  # a dim centre (nucleolus): a hole after thresholding
    soft += np.where(truth, 0.15, 0.05) * rng.standard_normal(soft.shape).astype(np.float32)  # texture
    soft[:, (yy % 4 == 0) & truth] = 0.35  # stripes that cut a nucleus at 0.5
    plain = soft > 0.5
    robust = robust_binary(soft, sigma=1.0)
    for t in range(3):
        plain_count = measure.label(plain[t], connectivity=1).max()
        robust_labels = measure.label(robust[t], connectivity=1)
        assert plain_count > 3 * len(nuclei) and robust_labels.max() == len(nuclei)
        assert (robust[t] & truth).sum() / (robust[t] | truth).sum() > 0.8  # the discs, holes filled
        assert not ndimage.binary_fill_holes(robust[t])[~robust[t]].any()
    # the estimator's path: the robust mode binarises every map and picks the nucleus map
    maps = np.stack([1 - soft, soft], axis=1)
    assert np.array_equal(binary_maps(maps, "robust")[:, 1], robust)
    assert choose_normal_map(maps, mode="robust", erosion=1)[0] == 1


def test_binarised_map_is_eroded_within_frames() -> None:
    probability = np.zeros((3, 9, 9))
    probability[:, 2:7, 2:7] = 0.9
    binary = erode_within_frames(probability > 0.5, erosion=1)
    assert binary.sum(axis=(1, 2)).tolist() == [9, 9, 9]  # 5x5 -> 3x3 in every frame, also the first and last


def test_m1_maps_are_a_softmax_and_reconstruction_loss_falls(one_thread) -> None:
    torch.manual_seed(0)
    net = NormalCellAutoencoder(num_maps=6, width=8)
    frames = torch.zeros(4, 1, 24, 24)
    frames[:, :, 6:14, 6:14] = 1.0
    maps = net.feature_maps(frames)
    assert maps.shape == (4, 6, 24, 24) and torch.allclose(maps.sum(1), torch.ones(4, 24, 24))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        logits, _ = net(frames, corrupt=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, frames)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_estimator_estimate_uses_the_chosen_map() -> None:
    model = EventLengthEstimator(width=4, lstm_hidden=4, normal_map=3).eval()
    stats, normal, events = model.estimate(torch.rand(5, 16, 16))
    assert normal.shape == events.shape == (5, 16, 16) and set(stats) >= {"mean", "std", "p50", "p75", "k"}
    with pytest.raises(RuntimeError, match="not chosen"):
        EventLengthEstimator(width=4, lstm_hidden=4).estimate(torch.rand(2, 8, 8))


def test_tiny_fit_then_predict(tmp_path: Path, demo_fluo: Path, one_thread, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--config", TINY, f"--trainer.default_root_dir={tmp_path}"]
    assert main(["fit", *common]) == 0
    (last,) = list(tmp_path.rglob("last.ckpt"))
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 4 and 0 <= int(state["state_dict"]["normal_map_index"]) < 6
    assert main(["predict", *common, "--trainer.logger=false", f"--ckpt_path={last}"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["sequence"] == 0 and {"events", "mean", "p75", "k"} <= set(line)


def test_estimate_k_writes_a_stackable_k_yaml(
    tmp_path: Path, demo_fluo: Path, one_thread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["estimate-k", "--config", TINY, "--out", str(tmp_path), "--trainer.logger=false"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    k = yaml.safe_load((tmp_path / "k.yaml").read_text())["model"]["init_args"]["sequence_length"]
    assert result["k"] == k >= 1 and (tmp_path / "event_length.ckpt").is_file()
    # Reuse the checkpoint (no training), then stack k.yaml on the detector config.
    assert (
        main(["estimate-k", "--config", TINY, "--out", str(tmp_path / "again"), "--ckpt_path", result["checkpoint"]])
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["k"] == k
    detector = str(REPO / "configs" / "tiny" / "mitosis_detector.yaml")
    with pytest.raises(SystemExit):
        main(["fit", "--config", detector, "--config", str(tmp_path / "k.yaml"), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["sequence_length"] == k
    assert printed["model"]["class_path"].endswith("MitosisDetector")


def test_estimate_k_resumes_from_last_checkpoint(
    tmp_path: Path, demo_fluo: Path, one_thread, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["estimate-k", "--config", TINY, "--out", str(tmp_path), "--trainer.logger=false", "--save_every", "2"]
    assert main(common) == 0
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4
    capsys.readouterr()
    # A rerun with a larger budget continues from step 4 instead of starting again.
    assert main([*common, "--trainer.max_steps", "6"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from {tmp_path / 'last.ckpt'}" in out
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 6
    assert torch.load(tmp_path / "event_length.ckpt", weights_only=True)["global_step"] == 6
    # A checkpoint from elsewhere (no checkpoint-callback state) copied in as last.ckpt extends that run, and
    # stays the one file resumed from.
    state = torch.load(tmp_path / "event_length.ckpt", weights_only=True)
    state.pop("callbacks")
    torch.save(state, tmp_path / "last.ckpt")
    assert main([*common, "--trainer.max_steps", "8"]) == 0
    assert [p.name for p in tmp_path.glob("last*.ckpt")] == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 8


def test_estimate_k_trains_under_bf16_autocast(tmp_path: Path, demo_fluo: Path, one_thread) -> None:
    # M1's maps are bfloat16 under autocast and go through NumPy (map choice, artificial events).
    args = ["estimate-k", "--config", TINY, "--out", str(tmp_path), "--trainer.logger=false"]
    assert main([*args, "--trainer.precision", "bf16-mixed"]) == 0
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4


def test_real_configs_parse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(REPO / "configs" / "event_length.yaml"), "--print_config"])
    assert info.value.code == 0 and "EventLengthEstimator" in capsys.readouterr().out
