"""The cellgen command: help texts, in-process fit/resume, saved config, NaN guard, 2-process CPU DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cellgen.cli import main

REPO = Path(__file__).resolve().parents[1]
MODEL = "tests.support_models.TinyVideoAutoencoder"


def fit_args(root: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "fit",
        f"--model={MODEL}",
        "--data=PatchVideoDataModule",
        "--data.patch_size=64",
        "--data.num_frames=4",
        "--data.batch_size=2",
        f"--data.cache_dir={cache}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={root}",
        *extra,
    ]


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "predict", "prepare-data", "check-ctc"):
        assert command in out


def test_fit_help_is_one_screen_and_help_all_is_complete(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--help"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) < 40 and not captured.err  # no leading Lightning warning
    assert "tiny/bvdm" in captured.out and "--ckpt_path" in captured.out
    with pytest.raises(SystemExit) as info:
        main(["fit", "--help-all"])
    assert info.value.code == 0
    captured = capsys.readouterr()
    assert "--trainer.gradient_clip_val" in captured.out and captured.out.startswith("usage: cellgen")
    assert "LightningCLI's args" not in captured.err


@pytest.mark.parametrize("command", [["prepare-data", "--help"], ["prepare-data", "demo", "--help"]])
def test_subcommand_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(command)
    assert info.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_fit_saves_config_and_resumes(tmp_path: Path, demo_dataset: Path) -> None:
    assert main(fit_args(tmp_path, tmp_path / "cache", "--trainer.max_steps=3")) == 0
    configs = list(tmp_path.rglob("config.yaml"))
    assert configs and "TinyVideoAutoencoder" in configs[0].read_text()
    (last,) = list(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 3
    # Resume from the last checkpoint and train on to step 5.
    assert main(fit_args(tmp_path, tmp_path / "cache", "--trainer.max_steps=5", f"--ckpt_path={last}")) == 0
    steps = sorted(torch.load(p, weights_only=True)["global_step"] for p in tmp_path.rglob("last*.ckpt"))
    assert steps[-1] == 5


def test_missing_checkpoint_and_bad_data_are_one_line(
    tmp_path: Path, demo_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(fit_args(tmp_path, tmp_path / "c", "--trainer.max_steps=1", "--ckpt_path=/nonexistent/last.ckpt"))
    assert code == 2 and "nonexistent" in capsys.readouterr().err
    code = main(fit_args(tmp_path, tmp_path / "c", "--trainer.max_steps=1", "--data.sequences=[/no/such/01]"))
    # (pytest's capture can add "Logging error" noise from earlier tests; the CLI's own output is the last line)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("cellgen: error: /no/such/01")


def test_nan_loss_stops_with_a_message(tmp_path: Path, demo_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(fit_args(tmp_path, tmp_path / "c", "--trainer.max_steps=2", "--model.lr=1e30"))
    # An absurd learning rate diverges within a couple of steps; the guard turns it into one line.
    if code == 0:
        pytest.skip("did not diverge on this platform")
    assert code == 2 and "loss is" in capsys.readouterr().err


def test_ddp_two_cpu_processes(tmp_path: Path, demo_dataset: Path) -> None:
    """Two gloo processes train end to end through the installed entry point (`python -m cellgen.cli`)."""
    args = fit_args(tmp_path, tmp_path / "cache", "--trainer.max_steps=2")
    args = [a for a in args if not a.startswith("--trainer.devices")]
    args += ["--trainer.devices=2", "--trainer.strategy=ddp"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cellgen.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr + proc.stdout or "GLOBAL_RANK: 1" in proc.stderr + proc.stdout
    (last,) = list(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 2


def test_console_script_smoke() -> None:
    exe = Path(sys.executable).with_name("cellgen")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "cellgen.cli"]
    proc = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "prepare-data" in proc.stdout
