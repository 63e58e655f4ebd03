"""Heat-map mitosis detector and ``cellgen detect-mitoses``: targets, peaks, a fit that finds its event, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellgen.cli import main
from cellgen.data.mitosis_data import heatmap_volume
from cellgen.data.points import read_points_csv
from cellgen.metrics.mitosis_detection import detect_peaks, pad_in_time, window_probabilities
from cellgen.nn.event_heatmap import FlipAveraged, FrameStackUNet, heatmap_focal_loss

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny" / "mitosis_detector_heatmap.yaml")


def test_heatmap_target_is_one_at_each_event_only() -> None:
    target = heatmap_volume(np.array([[2, 5.4, 6.6], [9, 0, 0], [3, -4, 30]]), (6, 12, 12), sigma=2, sigma_t=1)
    assert target[2, 5, 7] == 1.0 and (target == 1.0).sum() == 2  # t = 9 lies outside; (-4, 30) is clipped
    assert target[3, 0, 11] == 1.0 and target[2, 5, 9] == pytest.approx(np.exp(-4 / 8))
    assert target[1, 5, 7] == pytest.approx(np.exp(-0.5))


def test_peaks_keep_two_neighbours_apart_and_suppress_shoulders() -> None:
    first = heatmap_volume(np.array([[3, 10, 10]]), (8, 30, 30), sigma=2, sigma_t=1)
    heat = np.maximum(first, 0.8 * heatmap_volume(np.array([[3, 10, 20]]), (8, 30, 30), 2, 1))  # 10 px away, weaker
    found = detect_peaks(heat, 0.5, radius=4, radius_t=2)
    np.testing.assert_allclose(found[np.argsort(found[:, 2])], [[3, 10, 10, 1.0], [3, 10, 20, 0.8]], rtol=1e-6)
    assert len(detect_peaks(heat, 0.9)) == 1 and len(detect_peaks(heat * 0.1, 0.5)) == 0


def test_focal_loss_is_normalised_by_events() -> None:
    target = torch.zeros(1, 1, 2, 8, 8)
    target[0, 0, 1, 4, 4] = 1.0
    confident = torch.full_like(target, -8.0)
    confident[0, 0, 1, 4, 4] = 8.0
    assert heatmap_focal_loss(confident, target) < 1e-3 < heatmap_focal_loss(torch.zeros_like(target), target)


def test_unet_heatmap_fits_a_division_and_finds_it(one_thread) -> None:
    """A bright cell that splits in two between frames 2 and 3: after 80 steps the peak is at the division."""
    torch.manual_seed(0)
    frames = torch.zeros(1, 1, 4, 24, 24)
    frames[0, 0, :3, 9:15, 9:15] = 1.0  # the mother
    frames[0, 0, 3:, 9:15, 4:9] = frames[0, 0, 3:, 9:15, 15:20] = 1.0  # two daughters from frame 3
    frames[0, 0, :, 2:5, 18:21] = 0.7  # a cell that does not divide
    target = torch.from_numpy(heatmap_volume(np.array([[3, 12, 12]]), (4, 24, 24), 1.5, 1.0))[None, None]
    net = FrameStackUNet(4, base_channels=8)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = heatmap_focal_loss(net(frames), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])
    net.eval()
    probability = window_probabilities(FlipAveraged(net), frames[0, 0], 4).numpy()
    found = detect_peaks(probability, 0.3, radius=4, radius_t=2)
    assert len(found) == 1 and np.abs(found[0, :3] - [3, 12, 12]).max() <= 1


class EdgePositionNet(torch.nn.Module):
    """Ignores the frames; fires (0.9) at a window's first and last position, 0.1 elsewhere.

    A detector that lacks the mother before a window's first frame or the daughters after its last one behaves
    like this on a movie it has never seen.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.full((x.shape[2],), 0.1)
        p[0] = p[-1] = 0.9
        return torch.logit(p)[None, None, :, None, None].expand_as(x).clone()


@pytest.mark.parametrize("length", [9, 12, 3])
def test_edge_padding_treats_end_frames_like_interior_frames(length: int) -> None:
    """A movie with no events: unpadded windows pile detections into its first and last frame; padded ones do not."""
    frames = torch.zeros(length, 8, 8)
    plain = window_probabilities(EdgePositionNet(), frames, window=4, stride=2)[:, 0, 0].numpy()
    assert plain[0] == pytest.approx(0.9) and plain[-1] == pytest.approx(0.9)
    found = detect_peaks(np.repeat(np.repeat(plain[:, None, None], 8, 1), 8, 2), 0.6, radius=4, radius_t=2)
    assert np.isin(found[:, 0].round(), [0, length - 1]).sum() == 2  # one pile at each end
    for mode in ("replicate", "reflect"):
        padded = window_probabilities(EdgePositionNet(), frames, window=4, stride=2, edge_padding=mode)
        # every frame is seen at positions {0, 2} or {1, 3}, as an interior frame: (0.9 + 0.1) / 2
        np.testing.assert_allclose(padded.numpy(), 0.5, rtol=1e-5)
        assert len(detect_peaks(padded.numpy(), 0.6)) == 0


def test_edge_padding_keeps_interior_windows() -> None:
    """Padding changes only frames near the ends: interior frames get the same windows, hence the same outputs."""

    class ContentNet(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - x.mean(dim=2, keepdim=True) + 0.1 * torch.arange(x.shape[2])[None, None, :, None, None]

    frames = torch.rand(15, 5, 5, generator=torch.Generator().manual_seed(0))
    for window in (4, 5, 6):
        plain = window_probabilities(ContentNet(), frames, window)
        padded = window_probabilities(ContentNet(), frames, window, edge_padding="replicate")
        inner = slice(window, 15 - window)
        torch.testing.assert_close(plain[inner], padded[inner])
        assert not torch.allclose(plain[0], padded[0])


def test_pad_in_time_repeats_or_mirrors_the_ends() -> None:
    frames = torch.arange(4.0)[:, None, None]
    assert pad_in_time(frames, 3, 2, "replicate")[:, 0, 0].tolist() == [0, 0, 0, 0, 1, 2, 3, 3, 3]
    assert pad_in_time(frames, 3, 2, "reflect")[:, 0, 0].tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert pad_in_time(frames[:2], 3, 0, "reflect")[:, 0, 0].tolist() == [1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="edge padding"):
        window_probabilities(EdgePositionNet(), frames[:, 0], 4, edge_padding="zeros")


@pytest.fixture(scope="module")
def whole_movie_detector(tmp_path_factory: pytest.TempPathFactory, demo_dataset: Path) -> Path:
    """The tiny heat-map detector fitted on every frame of the demo movie (no held-out tail)."""
    root = tmp_path_factory.mktemp("detector")
    torch.set_num_threads(1)
    assert main(["fit", "--config", TINY, f"--trainer.default_root_dir={root}", f"--checkpoint.dirpath={root}"]) == 0
    return root / "last.ckpt"


def test_checkpoint_carries_inference_settings(whole_movie_detector: Path) -> None:
    state = torch.load(whole_movie_detector, weights_only=True)
    settings = state["mitosis_inference"]
    assert settings["train_frames"] == 64 and settings["downscale"] == 0.25
    assert 0 < settings["threshold"] < 1 and settings["cell_diameter"] > 0
    assert state["hyper_parameters"]["sequence_length"] == 4
    data = state["datamodule_hyper_parameters"]  # the tiny config trains with both, as the real one does
    assert data["scale_jitter"] == 0.25 and data["edge_window_fraction"] == 0.5


def test_detect_mitoses_on_folder_and_stack(
    tmp_path: Path, whole_movie_detector: Path, demo_fluo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.csv"
    args = ["detect-mitoses", f"--ckpt={whole_movie_detector}", f"--out={out}", "--threshold=0.0"]
    assert main([*args, f"--movie={demo_fluo}"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    points = read_points_csv(out)
    assert points.shape[1] == 4 and line["detections"] == len(points) > 0 and line["frames"] == 64
    assert (points[:, 1] >= 0).all() and points[:, 1].max() > 128  # original 256 px, not the 64 px working frames
    assert Path(line["preview"]).suffix == ".gif" and Path(line["preview"]).stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv", "events.gif"]  # no temporary files left
    stack = np.stack([tifffile.imread(p) for p in sorted(demo_fluo.glob("t*.tif"))])
    tifffile.imwrite(tmp_path / "movie.tif", stack)
    again = tmp_path / "again.csv"
    assert main([*args[:2], f"--out={again}", "--threshold=0.0", f"--movie={tmp_path / 'movie.tif'}"]) == 0
    np.testing.assert_allclose(read_points_csv(again), points, atol=1e-6)  # same frames, same detections


def test_detect_mitoses_bad_input_is_one_line(
    tmp_path: Path, whole_movie_detector: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "broken.tif"
    corrupt.write_bytes(b"II*\x00garbage")
    truncated = tmp_path / "cut.tif"
    tifffile.imwrite(truncated, np.random.default_rng(0).random((4, 64, 64)), compression="zlib")
    truncated.write_bytes(truncated.read_bytes()[:3000])
    cases = [
        ([f"--ckpt={tmp_path / 'missing.ckpt'}", f"--movie={empty}"], "checkpoint not found"),
        ([f"--ckpt={whole_movie_detector}", f"--movie={empty}"], "no frames"),
        ([f"--ckpt={whole_movie_detector}", f"--movie={corrupt}"], "cannot decode TIFF"),
        ([f"--ckpt={whole_movie_detector}", f"--movie={truncated}"], "cannot decode TIFF"),
        ([f"--ckpt={whole_movie_detector}", f"--movie={tmp_path / 'nope'}"], "movie not found"),
    ]
    for args, message in cases:
        assert main(["detect-mitoses", *args, f"--out={tmp_path / 'e.csv'}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "e.csv").exists()  # nothing half-written


def test_evaluate_mitosis_relative_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cellgen.commands.evaluate import evaluate_mitosis_command
    from cellgen.data.points import write_points_csv

    gt = write_points_csv(tmp_path / "gt.csv", np.array([[5, 10, 10], [9, 50, 50]]), with_score=False)
    pred = write_points_csv(tmp_path / "pred.csv", np.array([[5, 25, 10, 0.9], [9, 50, 62, 0.8]]))
    assert evaluate_mitosis_command(gt=str(gt), pred=str(pred), temporal_tol=1) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tp"] == 0  # 15 and 12 px > 10 px
    assert evaluate_mitosis_command(gt=str(gt), pred=str(pred), relative_tol=0.5, cell_diameter=26) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["spatial_tol"] == 13 and result["tp"] == 1  # half of a 26 px cell: only the 12 px one
    assert main(["evaluate", "mitosis", f"--gt={gt}", f"--pred={pred}", "--relative_tol=0.5"]) == 2  # no diameter


def test_evaluate_mitosis_min_score_and_per_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cellgen.commands.evaluate import evaluate_mitosis_command
    from cellgen.data.points import write_points_csv

    gt = write_points_csv(tmp_path / "gt.csv", np.array([[5, 10, 10], [9, 50, 50]]), with_score=False)
    pred = write_points_csv(tmp_path / "pred.csv", np.array([[5, 12, 10, 0.9], [9, 50, 52, 0.2], [3, 90, 90, 0.3]]))
    report = tmp_path / "events.csv"
    assert evaluate_mitosis_command(gt=str(gt), pred=str(pred), min_score=0.25, per_event=str(report)) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 1)  # the 0.2 detection is dropped, the 0.3 is wrong
    lines = report.read_text().splitlines()
    assert lines[0] == "t,y,x,matched,best_score,distance,dt" and lines[2].startswith("9,50.0,50.0,True,0.2,2.0,0")


def test_heatmap_config_parses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(REPO / "configs" / "mitosis_detector_heatmap.yaml"), "--print_config"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "architecture: unet" in out and "head: heatmap" in out


def test_calibration_ties_go_low_on_request() -> None:
    from cellgen.data.event_frames import FrameVolume
    from cellgen.data.mitosis_data import MitosisSequence
    from cellgen.metrics.mitosis_detection import calibrate_threshold

    volume = FrameVolume(np.zeros((8, 20, 20), np.float32), list(range(8)), (20, 20), Path("/x/01"))
    sequence = MitosisSequence(volume, np.array([[2.0, 10, 10]]), train_frames=4)
    probability = 0.9 * heatmap_volume(sequence.points, (8, 20, 20), 2, 1)

    def find(p: np.ndarray, t: float) -> np.ndarray:
        return detect_peaks(p, t)

    grid = (0.2, 0.5, 0.8, 0.95)
    assert calibrate_threshold(probability, sequence, 10, 1, thresholds=grid, find=find) == (0.8, 1.0)
    assert calibrate_threshold(probability, sequence, 10, 1, thresholds=grid, find=find, prefer_low=True) == (0.2, 1.0)


@pytest.mark.slow
def test_real_movies_load_for_detection() -> None:
    """SIM+ 01 and HeLa 02 as detect-mitoses reads them: cell diameters for --cell_diameter, events as heat maps."""
    from cellgen.data.ctc import CTCSequence
    from cellgen.data.event_frames import load_movie
    from cellgen.data.mitosis_data import load_mitosis_sequence, median_cell_diameter
    from tests.conftest import shared_sequence

    simplus = load_mitosis_sequence(shared_sequence("Fluo-N2DH-SIM+/01"), None, 65, 0.25)
    assert len(simplus.points) == 28 and 40 < simplus.cell_diameter < 65  # HL60 nuclei: about 49 px
    target = heatmap_volume(simplus.local_points(), simplus.volume.frames.shape, 2, 1)
    assert (target == 1.0).sum() == 28  # one centre voxel per division, none merged
    hela = shared_sequence("Fluo-N2DL-HeLa/02")
    volume = load_movie(hela, 0.4373)
    assert volume.frames.shape == (20, 306, 481) and 0 <= volume.frames.min() < volume.frames.max() <= 1
    assert median_cell_diameter(CTCSequence(hela), list(range(20))) is not None
