"""``cellgen sample``: files users can open, one seed per sample, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import lightning as L
import numpy as np
import pytest
import tifffile
import torch

from cellgen.callbacks.previews import video_grid
from cellgen.cli import main
from cellgen.models.flow_video_diffusion import FlowVideoDiffusion
from cellgen.models.video_diffusion import VideoDiffusion
from tests.test_metrics_fid import needs_i3d, needs_inception
from tests.test_video_diffusion import TINY


def _checkpoint(model: VideoDiffusion, path: Path) -> Path:
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("cls", [VideoDiffusion, FlowVideoDiffusion])
def test_sample_writes_videos_grid_and_each_seed_alone(
    cls: type[VideoDiffusion], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    ckpt = _checkpoint(cls(**TINY), tmp_path / "m.ckpt")
    many, one = tmp_path / "many", tmp_path / "one"
    assert main(["sample", "--ckpt", str(ckpt), "--out", str(many), "--num", "3", "--batch_size", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["videos"] == 3 and summary["shape"] == [4, 16, 16] and summary["steps"] == 3
    # sample 2 is the same whatever --num and --batch-size
    assert main(["sample", "--ckpt", str(ckpt), "--out", str(one), "--num", "3", "--batch_size", "1"]) == 0
    for name in ("sample_0000.tif", "sample_0002.tif"):
        np.testing.assert_allclose(tifffile.imread(many / name), tifffile.imread(one / name), atol=1e-5)
    assert not np.allclose(tifffile.imread(many / "sample_0000.tif"), tifffile.imread(many / "sample_0001.tif"))
    grid = imageio.mimread(many / "grid.gif")
    assert len(grid) == 4 and grid[0].shape[:2] == (16, 3 * 16 + 2 * 2)
    if cls is FlowVideoDiffusion:
        assert tifffile.imread(many / "sample_0001_u.tif").shape == (3, 16, 16)
    # other settings: another seed, more DDIM steps with eta, 6 frames from a 4-frame model
    other = tmp_path / "other"
    args = ["--num", "1", "--seed", "5", "--steps", "4", "--eta", "0.5", "--frames", "6", "--overlap", "2"]
    assert main(["sample", "--ckpt", str(ckpt), "--out", str(other), *args]) == 0
    longer = tifffile.imread(other / "sample_0000.tif")
    assert longer.shape == (6, 16, 16) and not np.allclose(longer[:4], tifffile.imread(many / "sample_0000.tif"))
    assert not list(many.glob(".*"))  # no temporary leftovers


def test_sample_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--ckpt", str(tmp_path / "missing.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cellgen: error:") and "checkpoint not found" in err and "\n" not in err
    ckpt = _checkpoint(VideoDiffusion(**TINY), tmp_path / "m.ckpt")
    assert main(["sample", "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--overlap", "4", "--frames", "8"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(ckpt), "--num", "0"]) == 2
    assert "--num must be at least 1" in capsys.readouterr().err


def test_video_grid_tiles_rows_and_columns() -> None:
    videos = [np.full((3, 4, 5), i, np.uint8) for i in range(5)]
    grid = video_grid(videos, columns=2, gap=1)
    assert grid.shape == (3, 3 * 4 + 2, 2 * 5 + 1)
    assert grid[0, 0, 0] == 0 and grid[0, 5, 6] == 3 and grid[0, 10, 0] == 4 and grid[0, 10, 6] == 255


# --------------------------------------------------------------------------------------------- evaluate video


@pytest.mark.slow  # the real Inception and I3D on CPU: about a minute alone, several on a loaded machine
@needs_inception
@needs_i3d
def test_evaluate_video_reports_ratios_to_the_real_floor(
    tmp_path: Path, demo_phc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trains nothing: a checkpoint (with its data module's settings) in, one JSON line of FID/FVD and floors out."""
    ckpt = _checkpoint(VideoDiffusion(**TINY), tmp_path / "m.ckpt")
    state = torch.load(ckpt, weights_only=True)
    state["datamodule_hyper_parameters"] = {
        "sequences": [str(demo_phc)], "patch_size": 16, "overlap": 0.0, "num_frames": 4, "start_frames": [0],
        "frame_skip": 1, "region": [0.0, 1.0, 0.0, 0.5], "cache_dir": str(tmp_path / "cache"),
    }  # fmt: skip
    torch.save(state, ckpt)
    args = ["evaluate", "video", "--ckpt", str(ckpt), "--num_videos", "2", "--frames", "6", "--fid_frames", "2"]
    args += ["--out", str(tmp_path / "e")]
    assert main([*args, "--test_region", "[0, 1, 0.5, 1]"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["videos"] == 2 and row["frames"] == 6 and set(row["windows"]) == {"0-4", "2-6"}
    assert row["FVD_floor"] > 0 and row["FVD_ratio"] == pytest.approx(row["FVD"] / row["FVD_floor"])
    assert row["FID_ratio"] == pytest.approx(row["FID"] / row["FID_floor"])
    assert row["FVD_last_over_first"] == pytest.approx(row["windows"]["2-6"]["FVD"] / row["FVD"])
    assert np.load(tmp_path / "e" / "generated.npz")["videos"].shape == (2, 6, 16, 16)
    for name in ("FVD", "FID"):  # bootstrap spread of the ratios, from the features computed once
        low, high = row[f"{name}_ratio_ci95"]
        assert row[f"{name}_ratio_sd"] >= 0 and low <= high
    with np.load(tmp_path / "e" / "features.npz") as saved:
        assert saved["generated_i3d"].shape == (2, 400) and saved["real_train_inception"].shape == (4, 2048)
    assert list((tmp_path / "cache").glob("real-*-test.npz"))  # the real features are kept for the next
    assert main([*args, "--test_region", "[0, 1, 0.25, 1]"]) == 2  # overlaps the training half
    assert "overlaps the training region" in capsys.readouterr().err
