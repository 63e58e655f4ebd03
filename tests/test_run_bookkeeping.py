"""Run bookkeeping: checkpoints where `--ckpt_path last` finds them with W&B stacked, one config per run, logged
config with the trainer settings, BVDM sample GIFs on W&B (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cellgen.cli import main

REPO = Path(__file__).resolve().parents[1]


def _lightning_configs() -> list[Path]:
    return [p for p in sorted((REPO / "configs").glob("*.yaml")) if "model" in (yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("config", _lightning_configs(), ids=lambda p: p.stem)
def test_every_top_level_config_sets_a_checkpoint_folder(config: Path) -> None:
    settings = yaml.safe_load(config.read_text())
    assert settings["checkpoint"]["dirpath"].endswith("/checkpoints") and settings["checkpoint"]["save_last"]


def _wandb_fit(root: Path, *extra: str) -> int:
    return main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "logger" / "wandb.yaml"),
            "--config",
            str(REPO / "configs" / "tiny" / "bvdm.yaml"),
            f"--trainer.logger.init_args.save_dir={root}",
            f"--trainer.default_root_dir={root / 'bvdm'}",
            f"--data.init_args.cache_dir={root / 'cache'}",
            *extra,
        ]
    )


def test_wandb_runs_keep_checkpoints_configs_and_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    assert _wandb_fit(tmp_path) == 0
    last = tmp_path / "bvdm" / "checkpoints" / "last.ckpt"  # the logger does not move the checkpoint folder
    assert torch.load(last, weights_only=True)["global_step"] == 3
    # `--ckpt_path last` finds it and trains on (it would restart from step 0 if it found nothing).
    assert _wandb_fit(tmp_path, "--ckpt_path=last", "--trainer.max_steps=4") == 0
    assert torch.load(last, weights_only=True)["global_step"] == 4

    configs = sorted(tmp_path.glob("cellgen/*/config.yaml"))  # one per W&B run id, none overwritten
    assert len(configs) == 2 and not (tmp_path / "config.yaml").exists()
    assert yaml.safe_load(configs[0].read_text())["trainer"]["max_steps"] in (3, 4)
    gifs = sorted(tmp_path.glob("cellgen/*/samples/step*_sample0.gif"), key=lambda p: p.name)
    assert [g.name for g in gifs] == ["step000003_sample0.gif", "step000004_sample0.gif"]

    runs = sorted(tmp_path.glob("wandb/offline-run-*"))  # named by start time: the first run first
    assert len(runs) == 2
    logged = b"".join(p.read_bytes() for p in runs[0].glob("run-*.wandb"))
    assert b'"max_steps":3' in logged and b"bvdm.BVDM" in logged  # trainer and model settings in the W&B config
    assert list(runs[0].glob("files/media/videos/synthetic_sequences_*.gif"))  # the BVDM sample on W&B
