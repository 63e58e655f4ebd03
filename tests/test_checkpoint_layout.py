"""Checkpoints written before the diffusion models shared one plain module still load, key for key.

``fixtures/checkpoint_layout.json`` was written by the pre-refactor code (main at ae40908): for the tiny config of
each model, its saved hyperparameters (BVDM's ``ddpm`` and ``flow`` as plain dicts) and every state-dict key with
its shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning
import pytest
import torch

from cellgen.models.base import signature_defaults
from cellgen.models.bvdm import BVDM
from cellgen.models.flow_video_diffusion import FlowVideoDiffusion
from cellgen.models.mask_ddpm import MaskDDPM
from cellgen.models.video_diffusion import VideoDiffusion
from cellgen.models.voxelmorph_fpm import VoxelMorphFPM

LAYOUT = json.loads((Path(__file__).parent / "fixtures" / "checkpoint_layout.json").read_text())
MODELS = [BVDM, MaskDDPM, VideoDiffusion, FlowVideoDiffusion]
TINY_DDPM = {"base_channels": 8, "channel_mults": [1, 2], "attention_levels": [False, True]}


def _old_checkpoint(cls: type) -> dict:
    """A checkpoint as the pre-refactor code saved it, with distinct random values in every entry."""
    entry = LAYOUT[cls.__name__]
    generator = torch.Generator().manual_seed(0)
    state = {
        key: torch.tensor(7) if key.endswith("ema_updates") else torch.randn(shape, generator=generator)
        for key, shape in entry["state_dict"].items()
    }
    checkpoint = {
        "state_dict": state,
        "hyper_parameters": entry["hyper_parameters"],
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    if cls is BVDM:
        checkpoint.update(bvdm_shape_model={"fitted": True}, bvdm_intensity_range=[0.1, 0.9])
    return checkpoint


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_state_dict_keys_and_shapes_unchanged(cls: type) -> None:
    entry = LAYOUT[cls.__name__]
    model = cls(**entry["hyper_parameters"])
    assert {key: list(value.shape) for key, value in model.state_dict().items()} == entry["state_dict"]


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_pre_refactor_checkpoint_loads_strictly(cls: type, tmp_path: Path) -> None:
    checkpoint = _old_checkpoint(cls)
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)
    model = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)  # strict: no key missing or extra
    loaded = model.state_dict()
    assert set(loaded) == set(checkpoint["state_dict"])
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(loaded[key], value), key
    # The weights reached the modules that sample, not just the state dict.
    owner, prefix = (model.mask_ddpm, "mask_ddpm.") if cls is BVDM else (model, "")
    first_ema = next(key for key in checkpoint["state_dict"] if key.startswith(prefix + "ema_net."))
    assert torch.equal(next(owner.ema_net.parameters()), checkpoint["state_dict"][first_ema])
    if cls is BVDM:
        assert model.shape_state == {"fitted": True} and model.intensity_range == (0.1, 0.9)
        assert model.hparams.ddpm == LAYOUT["BVDM"]["hyper_parameters"]["ddpm"]


def test_new_checkpoint_round_trips(tmp_path: Path) -> None:
    """A checkpoint saved now has the old keys too, and reloads equal (BVDM: nested plain modules)."""
    hparams = LAYOUT["BVDM"]["hyper_parameters"]
    model = BVDM(**hparams)
    trainer = lightning.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path = tmp_path / "new.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert {k: list(v.shape) for k, v in saved["state_dict"].items()} == LAYOUT["BVDM"]["state_dict"]
    again = BVDM.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_bvdm_ddpm_and_flow_are_typed() -> None:
    """Unset entries take MaskDDPM's / VoxelMorphFPM's defaults; the optimiser uses the configured rates."""
    model = BVDM(crop_size=32, ddpm=TINY_DDPM | {"lr": 1e-3}, flow={"lr": 2e-4})
    assert model.ddpm_settings["num_timesteps"] == signature_defaults(MaskDDPM)["num_timesteps"] == 1000
    assert model.flow_settings["smoothness_weight"] == signature_defaults(VoxelMorphFPM)["smoothness_weight"]
    groups = model.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1e-3, 2e-4]
    with pytest.raises(TypeError, match="base_chanels"):
        BVDM(crop_size=32, ddpm={"base_chanels": 8})
