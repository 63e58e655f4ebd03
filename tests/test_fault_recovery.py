"""No crash loses work, no file is lost: kill -9 during fit and synthesize, resume, reruns, caches, --overwrite.

The two kill tests start the real command in a subprocess, wait until it has saved work, ``SIGKILL`` it, and
rerun: fit must resume at the saved step (``--ckpt_path last``, with a lowered learning rate that wins), and
synthesize must complete, skipping the sequences that were done and leaving no staging folder behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellgen.cli import main
from cellgen.data.ctc import CTCSequence, validate_sequence
from tests.test_cli import fit_args

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run_until(args: list[str], cwd: Path, ready: Callable[[], bool], timeout: float = 300) -> bool:
    """Start ``cellgen ARGS`` and SIGKILL it as soon as ``ready()``; False when it ended by itself first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellgen.cli", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            if proc.poll() is not None:
                assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
                return False
            time.sleep(0.05)
        raise AssertionError(f"cellgen {args[0]} saved nothing within {timeout} s")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stderr.close()


def _saved_step(root: Path) -> int:
    """global_step of the newest readable last.ckpt under ``root`` (-1 when none)."""
    steps = [-1]
    for path in root.rglob("last*.ckpt"):
        try:
            steps.append(int(torch.load(path, weights_only=True, map_location="cpu")["global_step"]))
        except Exception:  # being written right now
            continue
    return max(steps)


def _fit_args(root: Path, *extra: str) -> list[str]:
    every_step = ["--trainer.log_every_n_steps=1", "--checkpoint.every_n_train_steps=1"]
    return fit_args(root, root / "cache", "--trainer.enable_model_summary=false", *every_step, *extra)


def test_fit_killed_resumes_at_the_saved_step(
    tmp_path: Path, demo_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    killed = _run_until(_fit_args(tmp_path, "--trainer.max_steps=100000"), tmp_path, lambda: _saved_step(tmp_path) >= 3)
    assert killed
    saved = _saved_step(tmp_path)
    assert saved >= 3
    # Each run opens a new lightning_logs/version_N; `last` must still find the killed run's checkpoint (in the
    # run's checkpoint folder, <default_root_dir>/checkpoints unless the config names one).
    args = _fit_args(tmp_path, f"--trainer.max_steps={saved + 2}", "--ckpt_path=last", "--model.lr=1e-4")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cellgen: resuming from" in out and str(tmp_path / "checkpoints" / "last.ckpt") in out
    assert _saved_step(tmp_path) == saved + 2
    newest = max(tmp_path.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    state = torch.load(newest, weights_only=True)
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # the command line won
    metrics = max(tmp_path.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime_ns)
    steps = [
        int(row.split(",")[metrics.read_text().splitlines()[0].split(",").index("step")])
        for row in metrics.read_text().splitlines()[1:]
        if row.strip()
    ]
    assert steps and min(steps) >= saved  # trained on from the saved step, not from 0


def test_synthesize_killed_reruns_and_skips_done_work(
    tmp_path: Path, tiny_bvdm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synthetic"
    args = ["synthesize", "--ckpt", str(tiny_bvdm), "--out", str(out), "--num-sequences", "4", "--frames", "3"]
    args += ["--size", "64x64", "--cells", "2", "--divisions", "false", "--device", "cpu"]
    _run_until(args, tmp_path, lambda: (out / "01_preview.gif").is_file())
    (out / ".02-stale").mkdir(parents=True, exist_ok=True)  # what a kill during 02's staging leaves
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["skipped"] >= 1 and report["skipped"] + len(report["sequences"]) == 4
    for name in ("01", "02", "03", "04"):
        assert validate_sequence(out / name) == [] and (out / f"{name}_preview.gif").is_file()
    assert not list(out.glob(".0*")), "staging folders left behind"
    # Other settings without --overwrite are refused; with it, cellgen's own sequences are replaced.
    assert main([*args[:-6], "--size", "64x64", "--cells", "3", "--divisions", "false", "--device", "cpu"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([*args, "--num-sequences", "1", "--overwrite", "true"]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sequences"]) == 1


def test_synthesize_refuses_divisions_that_do_not_fit(
    tmp_path: Path, tiny_bvdm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["synthesize", "--ckpt", str(tiny_bvdm), "--out", str(tmp_path / "o"), "--frames", "2", "--size", "64x64"]
    assert main([*args, "--cells", "1", "--divisions", "50", "--device", "cpu"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cellgen")]
    # (known only after the scene is composed: the progress bars come first, then the one error line)
    assert len(err) == 1 and "of the 50 requested divisions" in err[0]
    assert not (tmp_path / "o" / "01").exists()


def test_caches_are_keyed_by_content_and_live_under_the_cache_dir(
    tmp_path: Path, demo_fluo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from cellgen.data.patch_video import PatchVideoSpec, load_patch_videos

    monkeypatch.setenv("CELLGEN_CACHE", str(tmp_path / "cache"))
    seq_dir = tmp_path / "data" / "01"
    shutil.copytree(demo_fluo, seq_dir)
    spec = PatchVideoSpec(64, 0.0, 2, (0,), 1)
    before, path = load_patch_videos(CTCSequence(seq_dir), spec, "auto")
    assert path.parent == tmp_path / "cache" / "patches"
    frame = tifffile.imread(seq_dir / "t000.tif")
    tifffile.imwrite(seq_dir / "t000.tif", np.zeros_like(frame))  # the user repairs (here: blanks) a frame
    after, new_path = load_patch_videos(CTCSequence(seq_dir), spec, "auto")
    assert new_path != path and not np.array_equal(before, after)
    assert not (Path.cwd() / "data" / "cache").exists() or Path.cwd() == REPO


def test_ckpt_path_last_in_a_fresh_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_fit_args(tmp_path, "--ckpt_path=last"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no last.ckpt to resume from" in err[0]


def test_ckpt_path_last_or_new_starts_afresh_then_resumes(
    tmp_path: Path, demo_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_fit_args(tmp_path, "--ckpt_path=last-or-new", "--trainer.max_steps=1")) == 0
    assert "starting afresh" in capsys.readouterr().out and _saved_step(tmp_path) == 1
    assert main(_fit_args(tmp_path, "--ckpt_path=last-or-new", "--trainer.max_steps=2")) == 0
    assert "resuming from" in capsys.readouterr().out and _saved_step(tmp_path) == 2
