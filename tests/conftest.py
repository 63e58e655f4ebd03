"""Shared fixtures: one demo dataset per test session, real data when ../shared/data is present."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Every DataModule falls back to the embedded demo data; keep it inside this test session's temp area.
_CACHE = Path(os.environ.setdefault("CELLGEN_CACHE", str(REPO / ".pytest_cache" / "cellgen-cache")))
os.environ.setdefault("WANDB_MODE", "offline")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def demo_dataset() -> Path:
    """The default demo dataset (64 frames of 256x256, fluo + phc, two sequences each)."""
    from cellgen.data.synthetic import demo_sequence

    demo_sequence("phc")
    return demo_sequence("fluo").parent.parent


@pytest.fixture(scope="session")
def demo_fluo(demo_dataset: Path) -> Path:
    return demo_dataset / "Demo-Fluo" / "01"


@pytest.fixture(scope="session")
def demo_phc(demo_dataset: Path) -> Path:
    return demo_dataset / "Demo-PhC" / "01"


@pytest.fixture(scope="session")
def tiny_bvdm(tmp_path_factory: pytest.TempPathFactory, demo_dataset: Path) -> Path:
    """A BVDM checkpoint from the tiny config (seconds), shared by the BVDM and fault-recovery tests."""
    from cellgen.cli import main

    root = tmp_path_factory.mktemp("bvdm")
    args = ["fit", "--config", str(REPO / "configs" / "tiny" / "bvdm.yaml"), f"--trainer.default_root_dir={root}"]
    args += [f"--data.init_args.cache_dir={root / 'cache'}", f"--checkpoint.dirpath={root / 'ckpt'}"]
    assert main(args) == 0
    return root / "ckpt" / "last.ckpt"


def shared_sequence(relative: str) -> Path:
    """A real sequence under ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / relative
    if not path.is_dir():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture
def one_thread():
    """One torch thread: on a busy shared CPU, OpenMP threads spin-wait and small ConvLSTM/U-Net fits take minutes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
