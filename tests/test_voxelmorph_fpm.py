"""BVDM flow prediction model: mask pairs, identity start, real registration after training, checkpoints, CLI."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cellgen.cli import main
from cellgen.data.cell_crops import CellCropDataModule
from cellgen.flow import warp_by_flow
from cellgen.models.voxelmorph_fpm import VoxelMorphFPM
from tests.test_mask_ddpm import hand_made_sequence

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny" / "voxelmorph_fpm.yaml")


def toy_pairs(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 2, size, size) binary masks: an ellipse, then the same cell shifted by up to size/10 px and reshaped."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )

    def u(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, 1, 1, generator=g) * (high - low) + low).float()

    cy, cx, r = u(0.4 * size, 0.6 * size), u(0.4 * size, 0.6 * size), u(size / 6, size / 4)
    ay, ax = u(0.85, 1.15), u(0.85, 1.15)
    dy, dx = u(-size / 10, size / 10), u(-size / 10, size / 10)
    src = ((yy - cy) / r) ** 2 + ((xx - cx) / r) ** 2 <= 1
    tgt = ((yy - cy - dy) / (r * ay)) ** 2 + ((xx - cx - dx) / (r * ax)) ** 2 <= 1
    return torch.stack([src, tgt], dim=1).float()


def _tiny_model(**kwargs) -> VoxelMorphFPM:
    return VoxelMorphFPM(**{"base_channels": 8, "channel_mults": (1, 1, 1), **kwargs})


def test_pairs_datamodule(tmp_path: Path) -> None:
    seq = hand_made_sequence(tmp_path)
    dm = CellCropDataModule([str(seq)], mode="pairs", crop_size=32, batch_size=2, cache_dir=None)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 2, 32, 32) and set(batch.unique().tolist()) == {0.0, 1.0}
    assert next(iter(dm.predict_dataloader())).shape[1:] == (2, 32, 32)
    with pytest.raises(ValueError, match="mode"):
        CellCropDataModule(mode="triples")


def test_starts_at_identity_and_checks_shapes() -> None:
    torch.manual_seed(0)
    model = _tiny_model().eval()
    pairs = toy_pairs(4)
    flow = model.flow_between(pairs[:, :1], pairs[:, 1:])
    assert flow.shape == (4, 2, 32, 32) and flow.dtype == torch.float32
    assert flow.abs().max() < 1e-2  # N(0, 1e-5) head: training starts from the identity warp
    with pytest.raises(ValueError, match="one shape"):
        model.flow_between(pairs[:, :1], pairs[:2, 1:])
    with pytest.raises(ValueError, match="integrate_steps"):
        _tiny_model(integrate_steps=-1)


@pytest.mark.parametrize("integrate_steps", [0, 7])
def test_training_registers_moving_deforming_cells(integrate_steps: int) -> None:
    """40 steps on 16x16 toy pairs: the warped source must match the target far better than no warp does."""
    torch.manual_seed(0)
    model = _tiny_model(lr=3e-3, integrate_steps=integrate_steps)
    train, test = toy_pairs(128, size=16, seed=0), toy_pairs(32, size=16, seed=1)
    optimizer = model.configure_optimizers()
    for step in range(40):
        loss, _ = model.compute_loss(train[(step % 8) * 16 : (step % 8 + 1) * 16], "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    src, tgt = test[:, :1], test[:, 1:]
    identity = F.mse_loss(src, tgt).item()
    registered = F.mse_loss(warp_by_flow(src, model.flow_between(src, tgt)), tgt).item()
    assert registered < 0.3 * identity, (identity, registered)


def test_checkpoint_reloads_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _tiny_model(lr=1e-3)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(toy_pairs(8), batch_size=4))
    path = tmp_path / "fpm.ckpt"
    trainer.save_checkpoint(path)
    loaded = VoxelMorphFPM.load_from_checkpoint(path).eval()
    model.eval()
    pairs = toy_pairs(3, seed=2)
    torch.testing.assert_close(
        loaded.flow_between(pairs[:, :1], pairs[:, 1:]), model.flow_between(pairs[:, :1], pairs[:, 1:]), rtol=0, atol=0
    )
    out = loaded.predict_step(pairs, 0)
    assert out["flow"].shape == (3, 2, 32, 32) and out["warped"].shape == (3, 1, 32, 32)


def _cli(command: str, *args: str, root: Path) -> int:
    return main(
        [
            command,
            "--config",
            TINY,
            f"--trainer.default_root_dir={root}",
            f"--data.init_args.cache_dir={root / 'cache'}",
            *args,
        ]
    )


def test_tiny_config_fit_then_predict(tmp_path: Path, demo_dataset: Path) -> None:
    assert _cli("fit", root=tmp_path) == 0
    (last,) = list(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert _cli("predict", f"--ckpt_path={last}", root=tmp_path) == 0


def test_cli_sequence_without_pairs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seq = hand_made_sequence(tmp_path / "data", frames=1)  # one frame: cells but no consecutive pairs
    code = _cli("fit", f"--data.init_args.sequences=[{seq}]", "--data.init_args.crop_size=32", root=tmp_path)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith(f"cellgen: error: {seq}") and "no consecutive mask pairs" in err


def test_real_configs_parse(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("mask_ddpm", "voxelmorph_fpm"):
        with pytest.raises(SystemExit) as info:
            main(["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), "--print_config"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "CellCropDataModule" in out and "batch_size: 32" in out
