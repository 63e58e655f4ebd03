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
