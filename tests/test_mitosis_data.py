"""Training windows of the MitosisDetector: scale jitter, windows padded at a movie end, unchanged defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cellgen.cli import main
from cellgen.data.errors import CellgenInputError
from cellgen.data.mitosis_data import MitosisDataModule, MitosisWindowDataset, heatmap_volume, label_volume
from cellgen.metrics.mitosis_detection import window_probabilities


def test_scale_jitter_rescales_frames_and_heatmap_together() -> None:
    """The heat map's centre sits on the blob of the rescaled frames, whatever the factor."""
    yy, xx = np.mgrid[:96, :96]
    blob = np.exp(-((yy - 47) ** 2 + (xx - 52) ** 2) / (2 * 3.0**2)).astype(np.float32)
    frames = np.repeat(blob[None], 10, axis=0)
    points = np.array([[5.0, 47.0, 52.0]])
    labels = heatmap_volume(points, frames.shape, 2.0, 1.0)
    dataset = MitosisWindowDataset(
        [frames], [labels], [points], 4, 32, samples=60, event_fraction=1.0, scale_jitter=0.25, heatmap_sigma=(2, 1)
    )
    areas = []
    for index in range(60):
        x, y = dataset[index]
        frame = int(y[0].amax(dim=(1, 2)).argmax())
        assert float(y[0, frame].max()) == 1.0  # the centre voxel stays a focal-loss positive
        centre = np.unravel_index(int(y[0, frame].argmax()), (32, 32))
        image = x[0, frame].numpy()
        peak = np.unravel_index(int(image.argmax()), image.shape)
        assert abs(centre[0] - peak[0]) <= 1 and abs(centre[1] - peak[1]) <= 1, (index, centre, peak)
        if min(*peak, *(31 - np.array(peak))) >= 8:  # the whole blob is in the crop
            areas.append(int((image > 0.5 * image.max()).sum()))
    assert len(areas) >= 5 and max(areas) / min(areas) > 1.3  # the blob's size changes: 0.8-1.25 per side


def test_scale_jitter_rescales_blob_labels_with_the_frames() -> None:
    points = np.array([[5.0, 30.0, 33.0]])
    labels = label_volume(points, (10, 64, 64))
    dataset = MitosisWindowDataset(
        [labels], [labels], [points], 4, 24, samples=20, event_fraction=1.0, scale_jitter=0.5
    )
    sizes = set()
    for index in range(20):
        x, y = dataset[index]
        assert set(np.unique(y.numpy())) <= {0.0, 1.0} and y.sum() > 0
        assert float((x - y).abs().mean()) < 0.05  # frames (bilinear) and labels (nearest) cover the same voxels
        sizes.add(int(y.sum()))
    assert len(sizes) > 3


def _mirror(i: int, length: int) -> int:
    return -i if i < 0 else 2 * (length - 1) - i if i >= length else i


@pytest.mark.parametrize("mode", ["replicate", "reflect"])
def test_edge_windows_are_padded_as_inference_pads(mode: str) -> None:
    """Every window touches an end; its frames are a padded window that inference uses; padded frames hold 0."""
    length, k = 10, 4
    frames = np.repeat(np.arange(length, dtype=np.float32)[:, None, None], 20, 1).repeat(20, 2)  # frame t holds t

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clips: set[tuple[int, ...]] = set()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.clips.add(tuple(x[0, 0, :, 0, 0].round().int().tolist()))
            return torch.zeros_like(x)

    recorder = Recorder()
    window_probabilities(recorder, torch.from_numpy(frames), k, stride=1, edge_padding=mode)
    index = (lambda i: min(max(i, 0), length - 1)) if mode == "replicate" else (lambda i: _mirror(i, length))
    padded_starts = [r for r in range(1 - k, length) if not 0 <= r <= length - k]
    expected = {tuple(index(i) for i in range(r, r + k)): r for r in padded_starts}
    assert set(expected) <= recorder.clips  # the padded windows inference sees at stride 1

    dataset = MitosisWindowDataset(
        [frames], [np.ones_like(frames)], [np.zeros((0, 3))], k, 8, 60, edge_window_fraction=1.0, edge_padding=mode
    )
    ends = set()
    for i in range(60):
        x, y = dataset[i]
        ids = tuple(int(v) for v in x[0, :, 0, 0].round())
        assert (x[0] == x[0, :, :1, :1]).all() and ids in expected  # whole frames, a padded inference window
        start = expected[ids]
        real = [0 <= t < length for t in range(start, start + k)]
        assert y[0].amax(dim=(1, 2)).tolist() == [float(r) for r in real]  # padded frames: target 0
        ends.add(start < 0)
    assert ends == {True, False}  # both ends

    points = np.array([[1.0, 10.0, 10.0]])  # an event near the start: its edge windows hold it
    labels = heatmap_volume(points, frames.shape, 2.0, 1.0)
    held = MitosisWindowDataset([frames], [labels], [points], k, 8, 20, event_fraction=1.0, edge_window_fraction=1.0)
    assert all(float(held[i][1].max()) == 1.0 and float(held[i][0][0, 0, 0, 0]) in (0, 1) for i in range(20))


def test_default_windows_are_those_of_before_the_options() -> None:
    """Golden windows from the code before scale_jitter and edge_window_fraction existed (same seed, same data)."""
    t, y, x = np.meshgrid(np.arange(10), np.arange(40), np.arange(40), indexing="ij")
    frames = (t * 4096 + y * 64 + x).astype(np.float32)  # every voxel names its (t, y, x)
    points = np.array([[2.0, 8.0, 30.0], [7.0, 25.0, 12.0]])
    labels = heatmap_volume(points, frames.shape, 2.0, 1.0)
    common = dict(window=4, crop_size=16, samples=12, event_fraction=0.5, seed=5)
    default = MitosisWindowDataset([frames], [labels], [points], **common)
    off = MitosisWindowDataset([frames], [labels], [points], **common, scale_jitter=0.0, edge_window_fraction=0.0)
    golden = [
        (14046, 13086, 14031, 2.1731), (25685, 26645, 25700, 0.0), (22151, 22166, 21191, 45.6086),
        (25552, 26512, 25537, 58.1242), (1172, 1187, 212, 58.6398), (25560, 26520, 25575, 0.0),
        (6479, 6464, 5519, 0.2578), (27083, 26123, 27098, 35.4733), (22872, 22887, 21912, 0.0),
        (22360, 22345, 21400, 56.0389), (26897, 26882, 25937, 58.1242), (1047, 1062, 87, 58.9008),
    ]  # fmt: skip
    for index, (a, b, c, total) in enumerate(golden):
        clip, target = default[index]
        assert (int(clip[0, 0, 0, 0]), int(clip[0, 0, 0, -1]), int(clip[0, 0, -1, 0])) == (a, b, c)
        assert float(target.sum()) == pytest.approx(total, abs=1e-3)
        torch.testing.assert_close(off[index], (clip, target), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale_jitter": -0.1}, "scale_jitter must be >= 0"),
        ({"edge_window_fraction": -0.1}, "edge_window_fraction must be in"),
        ({"edge_window_fraction": 1.5}, "edge_window_fraction must be in"),
        ({"scale_jitter": 0.2, "crop_size": None}, "scale_jitter needs a crop_size"),
    ],
)
def test_bad_window_options_are_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(CellgenInputError, match=message) as info:
        MitosisDataModule(**options)
    assert "\n" not in str(info.value)


def test_fit_refuses_a_negative_option_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(Path(__file__).resolve().parents[1] / "configs" / "tiny" / "mitosis_detector_heatmap.yaml")
    args = ["fit", "--config", config, "--data.init_args.scale_jitter=-1", f"--trainer.default_root_dir={tmp_path}"]
    assert main(args) == 2  # not an "unexpected ValueError" from jsonargparse
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == "cellgen: error: scale_jitter must be >= 0, got -1.0 (0 turns it off)"
    )


def test_window_options_are_hyperparameters_and_need_padding() -> None:
    data = MitosisDataModule(scale_jitter=0.25, edge_window_fraction=0.1)
    assert data.hparams.scale_jitter == 0.25 and data.hparams.edge_window_fraction == 0.1  # saved in checkpoints
    frames = np.zeros((6, 16, 16), np.float32)
    with pytest.raises(CellgenInputError, match="edge_padding is 'none'"):
        MitosisWindowDataset(
            [frames], [frames], [np.zeros((0, 3))], 4, 8, 4, edge_window_fraction=0.1, edge_padding="none"
        )
