"""BVDM cell crops and the texture DDPM: extraction rules, caching, training, SDEdit, checkpoints, CLI."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from torch.utils.data import DataLoader

from cellgen.cli import main
from cellgen.data.cell_crops import (
    CellCropDataModule,
    CropSpec,
    extract_cell_crops,
    load_cell_crops,
    match_to_tracks,
    random_dihedral,
)
from cellgen.data.ctc import CTCSequence, Track, write_sequence
from cellgen.data.errors import CellgenInputError
from cellgen.models.mask_ddpm import MaskDDPM

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny" / "mask_ddpm.yaml")


def _disk(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def hand_made_sequence(root: Path, frames: int = 3, usable: bool = True) -> Path:
    """64x64 frames: cell 1 (r=5) moves 2 px right per frame; 2 touches the border, 3 is tiny, 4 is 40 px tall."""
    shape = (64, 64)
    images, masks = [], []
    for t in range(frames):
        mask = np.zeros(shape, np.uint16)
        if usable:
            mask[_disk(shape, 20, 20 + 2 * t, 5)] = 1
        mask[_disk(shape, 50, 0, 4)] = 2
        mask[45:47, 30:32] = 3
        mask[12:52, 50:56] = 4
        image = np.full(shape, 10, np.uint16)
        image[mask > 0] = 100 + np.arange(shape[1], dtype=np.uint16)[None].repeat(64, 0)[mask > 0]
        images.append(image)
        masks.append(mask)
    labels = (1, 2, 3, 4) if usable else (2, 3, 4)
    tracks = {k: Track(k, 0, frames - 1) for k in labels}
    return write_sequence(root, "01", images, masks, tracks)


# --------------------------------------------------------------------------------------------- crops


def test_crops_are_centred_on_zero_background_and_skips_are_counted(tmp_path: Path) -> None:
    seq = CTCSequence(hand_made_sequence(tmp_path))
    crops = extract_cell_crops(seq, CropSpec(crop_size=32, min_area=20))
    assert crops.images.shape == (3, 32, 32) and crops.images.dtype == np.float16
    assert crops.skipped == {"touching_border": 3, "too_small": 3, "too_large": 3, "pair_outside_crop": 0}
    assert crops.track_ids.tolist() == [1, 1, 1] and crops.frames.tolist() == [0, 1, 2]
    assert (crops.images[~crops.masks] == 0).all()  # isolated cell on a zero background
    assert crops.images.min() >= 0 and crops.images.max() <= 1 and crops.images[crops.masks].min() > 0
    for mask in crops.masks:  # the r=5 disk (11 px wide) sits in the middle of the 32 px crop
        ys, xs = np.nonzero(mask)
        assert (ys.min() + ys.max()) / 2 == pytest.approx(15.5, abs=0.5)
        assert (xs.min() + xs.max()) / 2 == pytest.approx(15.5, abs=0.5)
        assert mask.sum() == _disk((64, 64), 20, 20, 5).sum()
    # Pairs: two (f, f+1) pairs of track 1, centred on frame f; the target is 2 px to the right.
    assert crops.pairs.shape == (2, 2, 32, 32) and crops.pair_track_ids.tolist() == [1, 1]
    src, tgt = crops.pairs[0]
    assert np.nonzero(tgt)[1].mean() - np.nonzero(src)[1].mean() == pytest.approx(2.0)
    assert np.nonzero(src)[0].mean() == pytest.approx(16.0, abs=0.5)
    assert 0.0 < crops.foreground_mean <= 1.0


def test_no_usable_cells_and_no_masks_raise_naming_the_folder(tmp_path: Path) -> None:
    seq_path = hand_made_sequence(tmp_path / "a")
    with pytest.raises(CellgenInputError, match="no usable cells") as info:
        extract_cell_crops(CTCSequence(seq_path), CropSpec(crop_size=8))
    assert str(seq_path) in str(info.value)
    with pytest.raises(CellgenInputError, match="3 touching the border"):  # only unusable cells at any size
        extract_cell_crops(CTCSequence(hand_made_sequence(tmp_path / "c", usable=False)), CropSpec(32))
    bare = tmp_path / "b" / "01"
    bare.mkdir(parents=True)
    tifffile.imwrite(bare / "t000.tif", np.zeros((16, 16), np.uint8))
    with pytest.raises(CellgenInputError, match="no instance masks") as info:
        extract_cell_crops(CTCSequence(bare), CropSpec())
    assert str(bare) in str(info.value)


def test_seg_labels_are_matched_to_track_ids() -> None:
    seg = np.zeros((8, 8), np.uint16)
    seg[1:4, 1:4], seg[5:8, 5:8] = 7, 9
    tra = np.zeros((8, 8), np.uint16)
    tra[2, 2], tra[6:8, 6:8] = 3, 5
    tra[1, 1] = 5  # a stray marker pixel must not steal track 5 from instance 9
    assert match_to_tracks(seg, tra) == {7: 3, 9: 5}


def test_cache_round_trip(tmp_path: Path) -> None:
    seq = CTCSequence(hand_made_sequence(tmp_path))
    first = load_cell_crops(seq, CropSpec(32), tmp_path / "cache")
    (cached,) = list((tmp_path / "cache").glob("cellcrops-*.npz"))
    second = load_cell_crops(seq, CropSpec(32), tmp_path / "cache")
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.pairs, second.pairs)
    assert first.skipped == second.skipped and first.intensity_range == second.intensity_range
    assert cached.is_file() and not list((tmp_path / "cache").glob("*.tmp*"))


def test_dihedral_augmentation_is_shared_by_channels() -> None:
    torch.manual_seed(0)
    x = torch.arange(16.0).reshape(1, 4, 4).repeat(2, 1, 1)
    seen = set()
    for _ in range(64):
        y = random_dihedral(x)
        assert torch.equal(y[0], y[1]) and sorted(y[0].flatten().tolist()) == list(range(16))
        seen.add(tuple(y[0].flatten().tolist()))
    assert len(seen) == 8


def test_datamodule_cells_batches(tmp_path: Path) -> None:
    seq = hand_made_sequence(tmp_path)
    dm = CellCropDataModule([str(seq)], crop_size=32, batch_size=2, cache_dir=None)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 1, 32, 32) and batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1
    assert next(iter(dm.predict_dataloader())).tolist() == [0, 1]


# --------------------------------------------------------------------------------------------- model


def _tiny_model(**kwargs) -> MaskDDPM:
    defaults = dict(
        crop_size=16,
        base_channels=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(False, False),
        lr=2e-3,
    )
    return MaskDDPM(**{**defaults, **kwargs})


def _toy_crops(n: int = 32, size: int = 16) -> torch.Tensor:
    """Bright disks of random radius on a zero background, (n, 1, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = torch.rand(n, 1, 1, generator=g) * 3 + 3
    disks = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= r**2).float()
    return (disks * (0.6 + 0.2 * torch.rand(n, 1, 1, generator=g)))[:, None]


def _fixed_loss(model: MaskDDPM, crops: torch.Tensor) -> float:
    state = torch.get_rng_state()
    torch.manual_seed(1234)  # the same steps and noise before and after training
    with torch.no_grad():
        loss = model.compute_loss(crops, "val")[0].item()
    torch.set_rng_state(state)
    return loss


def test_loss_falls_and_ema_follows() -> None:
    torch.manual_seed(0)
    model = _tiny_model()
    crops = _toy_crops()
    optimizer = model.configure_optimizers()
    assert all(p.requires_grad for p in model.net.parameters())
    assert not any(p.requires_grad for p in model.ema_net.parameters())
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.net.parameters()))
    ema_before = [p.clone() for p in model.ema_net.parameters()]
    before = _fixed_loss(model, crops)
    for step in range(30):
        loss, _ = model.compute_loss(crops[(step % 4) * 8 : (step % 4 + 1) * 8], "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.on_train_batch_end(None, None, step)
    after = _fixed_loss(model, crops)
    assert after < 0.6 * before, (before, after)
    assert model.ema_updates.item() == 30
    moved = [not torch.equal(a, b) for a, b in zip(ema_before, model.ema_net.parameters(), strict=True)]
    assert all(moved)


def test_sdedit_start_zero_returns_input_and_samples_are_per_seed() -> None:
    torch.manual_seed(0)
    model = _tiny_model().eval()
    x = _toy_crops(3)
    assert torch.equal(model.denoise_from(x, 0), x)
    with pytest.raises(ValueError, match="start_step"):
        model.denoise_from(x, 1001)

    def gens(*seeds: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = model.denoise_from(x[:2], 20, sampler="ddim", num_steps=3, generators=gens(1, 2))
    alone = model.denoise_from(x[1:2], 20, sampler="ddim", num_steps=3, generators=gens(2))
    torch.testing.assert_close(both[1:], alone)  # a sample does not depend on its batch
    assert both.shape == (2, 1, 16, 16) and both.min() >= 0 and both.max() <= 1
    ddpm = model.denoise_from(x[:1], 3, generators=gens(5))
    assert ddpm.shape == (1, 1, 16, 16)
    fresh = model.generate(generators=gens(3, 4), sampler="ddim", num_steps=2)
    assert fresh.shape == (2, 1, 16, 16)


def test_checkpoint_reloads_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _tiny_model(ema_decay=0.9)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(_toy_crops(8), batch_size=4))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert any(k.startswith("ema_net.") for k in state) and not any("alphas" in k for k in state)
    loaded = MaskDDPM.load_from_checkpoint(path).eval()
    model.eval()
    x, t = _toy_crops(2), torch.tensor([5, 500])
    torch.testing.assert_close(loaded(x, t), model(x, t), rtol=0, atol=0)
    a = model.denoise_from(x, 10, sampler="ddim", num_steps=2, generators=[torch.Generator().manual_seed(0)] * 2)
    b = loaded.denoise_from(x, 10, sampler="ddim", num_steps=2, generators=[torch.Generator().manual_seed(0)] * 2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.ema_updates.item() == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MaskDDPM(crop_size=30, channel_mults=(1, 2, 4), attention_levels=(False, False, False))
    with pytest.raises(ValueError, match="unknown schedule"):
        _tiny_model(schedule="quadratic")


# --------------------------------------------------------------------------------------------- CLI


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
    assert list((tmp_path / "cache").glob("cellcrops-*.npz"))


def test_cli_bad_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "data" / "01"
    bare.mkdir(parents=True)
    tifffile.imwrite(bare / "t000.tif", np.zeros((16, 16), np.uint8))
    code = _cli("fit", f"--data.init_args.sequences=[{bare}]", root=tmp_path)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith(f"cellgen: error: {bare}") and "no instance masks" in err
