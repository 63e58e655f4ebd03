"""VideoDiffusion and FlowVideoDiffusion: loss, EMA, per-sample seeds, flow data, writers, CLI fit -> predict."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import imageio.v2 as imageio
import lightning as L
import numpy as np
import pytest
import tifffile
import torch

from cellgen.callbacks.run_files import run_directory
from cellgen.callbacks.video_writer import VideoSampleLogger, write_video_sample
from cellgen.cli import main
from cellgen.data.flow_patch_video import FlowPatchVideoDataModule, denormalise_flow, patch_video_flow
from cellgen.data.patch_video import PatchVideoDataModule
from cellgen.models.flow_video_diffusion import FlowVideoDiffusion
from cellgen.models.video_diffusion import VideoDiffusion
from tests.conftest import shared_sequence

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "num_frames": 4,
    "image_size": 16,
    "base_channels": 8,
    "channel_mults": (1, 2),
    "num_res_blocks": 1,
    "spatial_attention": ("linear", "full"),
    "head_channels": 4,
    "sampling_steps": 3,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    """One intra-op thread: on a shared 2-core machine, OpenMP barriers between busy cores cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _moving_squares(n: int = 4, frames: int = 4, size: int = 16) -> torch.Tensor:
    """(n, 1, T, S, S) videos in [0, 1]: a bright square moving one pixel per frame."""
    videos = torch.full((n, 1, frames, size, size), 0.2)
    for i in range(n):
        for t in range(frames):
            y, x = 2 + 2 * i, 3 + t
            videos[i, 0, t, y : y + 5, x : x + 5] = 0.9
    return videos


def _fixed_loss(model: VideoDiffusion, videos: torch.Tensor, repeats: int = 4) -> float:
    """Noise-prediction L1 at fixed steps and noise, so that two evaluations are comparable."""
    g = torch.Generator().manual_seed(123)
    x0 = (videos * 2 - 1).repeat(repeats, 1, 1, 1, 1)
    t = torch.randint(0, model.hparams.num_timesteps, (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        eps = model.net(model.schedule.q_sample(x0, t, noise), t)
    return float((eps - noise).abs().mean())


def _train(model: VideoDiffusion, videos: torch.Tensor, steps: int = 30) -> None:
    """``steps`` optimiser steps on one batch, EMA updated after each as in training."""
    optimizer = model.configure_optimizers()
    for step in range(steps):
        loss, _ = model.compute_loss(videos, "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.on_train_batch_end(None, videos, step)


def test_loss_falls_on_a_tiny_overfit_set() -> None:
    torch.manual_seed(0)
    model = VideoDiffusion(**TINY, lr=2e-3)
    videos = _moving_squares()
    before = _fixed_loss(model, videos)
    _train(model, videos)
    after = _fixed_loss(model, videos)
    assert after < 0.75 * before, (before, after)
    assert model.ema_updates == 30
    ema = torch.cat([p.flatten() for p in model.ema_net.parameters()])
    live = torch.cat([p.flatten() for p in model.net.parameters()])
    assert not torch.equal(ema, live)  # the EMA copy lags behind the live weights


def test_v_prediction_model_learns() -> None:
    """``prediction: v`` trains through the same module: its own loss (on v) falls on the tiny overfit set."""
    torch.manual_seed(0)
    model = VideoDiffusion(**TINY, lr=2e-3, prediction="v", loss="l2")
    videos = _moving_squares()

    def fixed_loss() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return float(sum(model.diffusion.loss(videos) for _ in range(4)))

    before = fixed_loss()
    _train(model, videos)
    assert fixed_loss() < 0.75 * before


def test_wrong_video_shape_is_one_clear_error() -> None:
    model = VideoDiffusion(**TINY)
    with pytest.raises(ValueError, match="num_frames/image_size"):
        model.compute_loss(torch.rand(2, 1, 5, 16, 16), "train")


def test_samples_do_not_depend_on_batch_size() -> None:
    torch.manual_seed(0)
    model = VideoDiffusion(**TINY).eval()
    batch = model.generate(model.sample_generators([0, 1, 2]))
    alone = model.generate(model.sample_generators([1]))
    assert batch.shape == (3, 1, 4, 16, 16) and batch.min() >= 0 and batch.max() <= 1
    torch.testing.assert_close(alone[0], batch[1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batch[0], batch[1])
    short = VideoDiffusion(**TINY, num_timesteps=20).eval()  # ancestral DDPM runs every step of the chain
    ddpm = short.generate(short.sample_generators([0, 1]), sampler="ddpm")
    torch.testing.assert_close(short.generate(short.sample_generators([1]), sampler="ddpm")[0], ddpm[1])


def test_checkpoint_keeps_ema_and_flow_range(tmp_path: Path) -> None:
    model = FlowVideoDiffusion(**TINY)
    with torch.no_grad():
        model.flow_range.copy_(torch.tensor([[-2.0, 3.0], [-1.0, 0.5]]))
        next(model.ema_net.parameters()).add_(1.0)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    again = FlowVideoDiffusion.load_from_checkpoint(tmp_path / "m.ckpt")
    torch.testing.assert_close(again.flow_range, model.flow_range)
    assert torch.equal(next(again.ema_net.parameters()), next(model.ema_net.parameters()))
    out = again.eval().predict_step(torch.tensor([4, 7]), 0)
    assert out["video"].shape == (2, 1, 4, 16, 16) and out["flow"].shape == (2, 2, 3, 16, 16)
    assert out["index"].tolist() == [4, 7]
    assert out["flow"][:, 0].min() >= -2.0 and out["flow"][:, 0].max() <= 3.0  # de-normalised with flow_range


def test_flow_datamodule_channels_cache_and_ranges(tmp_path: Path, demo_dataset: Path) -> None:
    kwargs = {"patch_size": 32, "num_frames": 4, "batch_size": 3, "cache_dir": str(tmp_path), "overlap": 0.0}
    dm = FlowPatchVideoDataModule(**kwargs)
    dm.prepare_data()
    (flow_cache,) = tmp_path.glob("patches-*-hs10-1.npz")
    stamp = flow_cache.stat().st_mtime_ns
    dm.setup("fit")
    assert flow_cache.stat().st_mtime_ns == stamp  # the second load reads the cache
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (3, 3, 4, 32, 32) and batch.min() >= 0 and batch.max() <= 1

    videos = dm.load_videos()  # (N, 3, T, P, P), unflipped
    assert videos.shape[1] == 3 and dm.flow_range.shape == (len(videos), 2, 2)
    np.testing.assert_array_equal(videos[:, 1:, -1], videos[:, 1:, -2])  # the last flow frame is repeated
    raw = patch_video_flow(videos[:5, :1])
    np.testing.assert_allclose(denormalise_flow(videos[:5, 1:], dm.flow_range[:5]).numpy(), raw, atol=1e-5)
    assert dm.typical_flow_range().shape == (2, 2)


def test_writer_files_are_complete(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    video, flow = rng.random((5, 12, 10)).astype(np.float32), rng.normal(size=(2, 4, 12, 10)).astype(np.float32)
    paths = write_video_sample(tmp_path, 7, video, flow)
    assert sorted(p.name for p in paths) == sorted(
        ["sample_0007.tif", "sample_0007_u.tif", "sample_0007_v.tif", "sample_0007.gif"]
    )
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "sample_0007.tif"), video)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "sample_0007_v.tif"), flow[1])
    gif = imageio.mimread(tmp_path / "sample_0007.gif")
    assert len(gif) == 4 and gif[0].shape[:2] == (12, 24)  # video | gap | colour-wheel flow
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary leftovers


def test_sample_logger_saves_gifs_and_sends_them_to_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.loggers import WandbLogger

    logged: dict = {}
    monkeypatch.setattr(WandbLogger, "experiment", property(lambda self: SimpleNamespace(log=logged.update)))
    trainer = SimpleNamespace(
        log_dir=str(tmp_path), default_root_dir=str(tmp_path), current_epoch=4, global_step=50,
        loggers=[WandbLogger(save_dir=str(tmp_path), offline=True)],
    )  # fmt: skip
    frames = [np.zeros((3, 8, 8), np.uint8), np.zeros((2, 8, 20, 3), np.uint8)]
    VideoSampleLogger()._log(trainer, frames)
    assert sorted(p.name for p in (run_directory(trainer) / "samples").iterdir()) == [
        "epoch0004_sample0.gif",
        "epoch0004_sample1.gif",
    ]
    assert len(logged["samples"]) == 2 and logged["trainer/global_step"] == 50


# --------------------------------------------------------------------------------------------- CLI


def _cli(command: str, config: str, root: Path, *args: str) -> int:
    return main(
        [
            command,
            "--config",
            str(REPO / config),
            f"--trainer.default_root_dir={root}",
            "--trainer.logger=false",
            f"--data.init_args.cache_dir={root / 'cache'}",
            *args,
        ]
    )


@pytest.mark.parametrize("name", ["video_diffusion", "flow_video_diffusion"])
def test_tiny_config_fit_then_predict(name: str, tmp_path: Path, demo_dataset: Path) -> None:
    config = f"configs/tiny/{name}.yaml"
    assert _cli("fit", config, tmp_path) == 0
    (last,) = list(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert list((tmp_path / "samples").glob("epoch0000_sample0.gif"))  # the training-time sample logger
    assert _cli("predict", config, tmp_path, f"--ckpt_path={last}") == 0
    video = tifffile.imread(tmp_path / "samples" / "sample_0000.tif")
    assert video.shape == (4, 32, 32) and video.dtype == np.float32 and video.min() >= 0 and video.max() <= 1
    gif = imageio.mimread(tmp_path / "samples" / "sample_0000.gif")
    if name == "flow_video_diffusion":
        assert tifffile.imread(tmp_path / "samples" / "sample_0000_u.tif").shape == (3, 32, 32)
        assert len(gif) == 3 and gif[0].shape == (32, 68, 3)
    else:
        assert len(gif) == 4 and gif[0].shape[:2] == (32, 32)


@pytest.mark.parametrize("name", ["video_diffusion", "flow_video_diffusion"])
def test_real_configs_parse(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), "--print_config"])
    assert info.value.code == 0
    assert "VideoPredictionWriter" in capsys.readouterr().out


def test_psc32_v_overlay_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue-13 overlay stacks on the paper config and the CPU overlay and sets exactly its three settings."""
    configs = ["video_diffusion.yaml", "psc32/video_diffusion.yaml", "psc32/video_diffusion_v.yaml"]
    args = ["fit", *[a for c in configs for a in ("--config", str(REPO / "configs" / c))], "--print_config"]
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "prediction: v" in out and "loss: l2" in out and "intensity: sequence" in out and "image_size: 32" in out


# --------------------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_loss_falls_on_real_phase_contrast_videos(tmp_path: Path) -> None:
    """~200 steps of a small model on PhC-C2DL-PSC/02 patch videos (10 x 32 x 32); the noise loss must fall."""
    sequence = shared_sequence("PhC-C2DL-PSC/02")
    L.seed_everything(0)
    dm = PatchVideoDataModule(
        [str(sequence)], patch_size=32, num_frames=10, start_frames=[0, 20, 40], batch_size=4, cache_dir=str(tmp_path)
    )
    model = VideoDiffusion(
        num_frames=10, image_size=32, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
        spatial_attention=("linear", "full"), head_channels=16, lr=1e-3,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    held_out = torch.stack([dm.val_set[i] for i in range(min(8, len(dm.val_set)))])
    before = _fixed_loss(model, held_out)
    trainer = L.Trainer(
        max_steps=200, logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
        enable_progress_bar=False, limit_val_batches=0, log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(model, dm)
    after = _fixed_loss(model, held_out)
    with next(tmp_path.rglob("metrics.csv")).open() as table:
        losses = np.array([float(row["train/loss"]) for row in csv.DictReader(table) if row.get("train/loss")])
    print(
        f"\nPhC-C2DL-PSC/02, {len(dm.train_set)} train videos: train L1 {losses[:20].mean():.3f} (first 20 steps) -> "
        f"{losses[-20:].mean():.3f} (last 20); held-out fixed-noise L1 {before:.3f} -> {after:.3f}"
    )
    assert losses[-20:].mean() < 0.8 * losses[:20].mean()
    assert after < 0.8 * before
