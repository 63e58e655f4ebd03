"""BVDM: everything annotated-video synthesis needs, trained in one run and kept in one checkpoint.

Yilmaz, Eschweiler, Stegmaier, "Annotated Biomedical Video Generation using Denoising Diffusion Probabilistic
Models and Flow Fields" (2024). One module owns

* the texture DDPM (:class:`~cellgen.models.mask_ddpm.TextureDDPM`, Sec. 2-3: 10,000 iterations, lr 5e-4),
* the flow prediction model (:class:`~cellgen.models.voxelmorph_fpm.VoxelMorphNet`, 2,000 iterations, lr 1e-4),
* the shape model fitted on the training sequence's own masks (:class:`~cellgen.synth.shape_model.ShapeModel`),

so ``cellgen fit --config configs/bvdm.yaml`` trains all three and ``cellgen predict`` / ``cellgen synthesize``
write new annotated sequences from the one checkpoint. The two networks have disjoint parameters; one Adam
with a parameter group per network is the same as two optimisers, and the flow network simply stops
receiving gradients after its own iteration budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from cellgen.data.ctc import PixelSize, read_pixel_size
from cellgen.models.base import CellgenModule, build_from
from cellgen.models.mask_ddpm import TextureDDPM, TextureDDPMArgs, mask_ddpm_settings
from cellgen.models.voxelmorph_fpm import VoxelMorphArgs, VoxelMorphNet, voxelmorph_settings

if TYPE_CHECKING:
    from cellgen.synth.pipeline import SynthesisModels, SynthesizedSequence


class BVDM(CellgenModule):
    """Texture DDPM + flow model + shape model, with batched synthesis of whole annotated sequences.

    Args:
        crop_size: single-cell crop size for both networks (Sec. 3: 96).
        ddpm: :class:`~cellgen.models.mask_ddpm.MaskDDPM` arguments (widths, schedule, lr 5e-4, EMA); unset ones
            take MaskDDPM's defaults, ``crop_size`` is set from above.
        flow: :class:`~cellgen.models.voxelmorph_fpm.VoxelMorphFPM` arguments (widths, lr 1e-4, integration
            steps); unset ones take VoxelMorphFPM's defaults.
        flow_steps: iterations of the flow model (Sec. 3: 2,000); the DDPM trains for ``trainer.max_steps``
            (Sec. 3: 10,000).
        first_frame_step: SDEdit start t0 for a cell's first frame (Sec. 2: T_{f=0} = 200).
        later_frame_step: t0 for later frames, from the warped previous texture (Sec. 2: T_{f!=0} = 10).
        mask_value: intensity painted into a mask before noising (Sec. 2: 0.588; [0, 1] scale).
        first_frame_sampler: ``ddim`` (cellgen default: 200 ancestral steps -> ``first_frame_steps`` DDIM steps)
            or ``ddpm`` (the paper's ancestral procedure).
        first_frame_steps: DDIM steps from t0 to 0 for first frames.
        later_frame_sampler: sampler for later frames (``ddpm``: 10 ancestral steps, as in the paper).
        later_frame_steps: steps for later frames (None: every step).
        texture: ``ddpm`` (BVDM) or ``statistical``: the fitted statistical texture without the DDPM (what a
            classical simulator paints; the ablation that shows what the DDPM adds), or ``exemplar``: real training
            cells' textures re-shaped onto the synthetic masks, no DDPM (:mod:`cellgen.synth.exemplars`).
        cell_brightness: ``fitted``: each track's brightness drawn from the training cells (the shape model's
            "average brightness of cells", Sec. 2) and painted before SDEdit; ``constant``: ``mask_value`` for
            every cell (the paper's procedure, which makes every nucleus equally bright).
        texture_flow: what carries a texture from frame to frame: ``radial`` (the exact map between two
            star-shaped masks, :class:`~cellgen.flow.radial.RadialMaskFlow`; default, because a CPU-budget flow
            network's errors, composed over frames, streak the texture) or ``network`` (the paper's VoxelMorph FPM).
        edge_halo: paint the halo fitted outside the training masks around each synthetic cell. Off by default:
            where the training masks are grown TRA markers (GOWT1) the fitted halo also holds the cells the
            markers undershoot, and on GOWT1 it raised FID from 283 to 442 and made real + synthetic training
            worse than real alone (docs/RESULTS.md, issue 11 third iteration). Worth trying where masks are drawn
            outlines (SEG/ST).
        frames: frames per synthesised sequence.
        height: synthesised frame height.
        width: synthesised frame width.
        cells: cells in a synthesised sequence's first frame.
        divisions: allow cells to divide during synthesis.
        seed: base seed; sequence ``i`` uses ``seed * 1_000_003 + i`` whatever the batch size or device count.
    """

    def __init__(
        self,
        crop_size: int = 96,
        ddpm: TextureDDPMArgs | None = None,
        flow: VoxelMorphArgs | None = None,
        flow_steps: int = 2000,
        first_frame_step: int = 200,
        later_frame_step: int = 10,
        mask_value: float = 0.588,
        first_frame_sampler: Literal["ddpm", "ddim"] = "ddim",
        first_frame_steps: int = 20,
        later_frame_sampler: Literal["ddpm", "ddim"] = "ddpm",
        later_frame_steps: int | None = None,
        texture: Literal["ddpm", "statistical", "exemplar"] = "ddpm",
        cell_brightness: Literal["fitted", "constant"] = "fitted",
        texture_flow: Literal["radial", "network"] = "radial",
        edge_halo: bool = False,
        frames: int = 32,
        height: int = 256,
        width: int = 256,
        cells: int = 8,
        divisions: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.ddpm_settings = mask_ddpm_settings(ddpm)
        self.flow_settings = voxelmorph_settings(flow)
        self.mask_ddpm = build_from(TextureDDPM, self.ddpm_settings, crop_size=crop_size)
        self.voxelmorph = build_from(VoxelMorphNet, self.flow_settings)
        # Fitted on the training data in on_fit_start and stored in the checkpoint as plain lists/floats.
        self.shape_state: dict[str, Any] | None = None
        self.intensity_range: tuple[float, float] = (0.0, 1.0)
        # Pixel size of the training frames (None: they carry none); synthetic frames are written with it.
        self.pixel_size: PixelSize | None = None

    # ----------------------------------------------------------------------------------------- training

    def on_fit_start(self) -> None:
        if self.shape_state is not None:
            return  # resumed: the shape model came with the checkpoint
        from cellgen.synth.shape_model import ShapeModel

        datamodule = self.trainer.datamodule
        sequences = datamodule.resolve_sequences()
        self.shape_state = ShapeModel.fit(sequences).to_dict()
        self.pixel_size = read_pixel_size(sequences[0].path)
        crops = datamodule.cells.load_crops()
        self.intensity_range = (
            float(min(c.intensity_range[0] for c in crops)),
            float(max(c.intensity_range[1] for c in crops)),
        )

    def _flow_active(self) -> bool:
        return self.global_step < self.hparams.flow_steps

    def compute_loss(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ddpm_loss = self.mask_ddpm.loss(batch["cells"])
        extras = {"ddpm_mse": ddpm_loss.detach()}
        if stage == "train" and not self._flow_active():
            return ddpm_loss, extras
        flow_loss, flow_extras = self.voxelmorph.loss(batch["pairs"])
        extras.update({"flow_loss": flow_loss.detach(), **{f"flow_{k}": v for k, v in flow_extras.items()}})
        return ddpm_loss + flow_loss, extras

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Past its budget the flow net gets no gradients, so Adam leaves its weights alone.
        self.voxelmorph.requires_grad_(self._flow_active())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.mask_ddpm.update_ema()  # EMA of the texture denoiser

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            [
                {"params": self.mask_ddpm.net.parameters(), "lr": self.ddpm_settings["lr"]},
                {"params": self.voxelmorph.parameters(), "lr": self.flow_settings["lr"]},
            ]
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bvdm_shape_model"] = self.shape_state
        checkpoint["bvdm_intensity_range"] = list(self.intensity_range)
        checkpoint["bvdm_pixel_size"] = self.pixel_size.to_dict() if self.pixel_size else None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.shape_state = checkpoint.get("bvdm_shape_model")
        self.intensity_range = tuple(checkpoint.get("bvdm_intensity_range", (0.0, 1.0)))
        self.pixel_size = PixelSize.from_dict(checkpoint.get("bvdm_pixel_size"))

    # ----------------------------------------------------------------------------------------- synthesis

    def sequence_seed(self, index: int) -> int:
        return int(self.hparams.seed) * 1_000_003 + int(index)

    def synthesis_models(self) -> SynthesisModels:
        """The networks and fitted statistics that :func:`~cellgen.synth.pipeline.synthesize_sequence` takes."""
        from cellgen.flow.radial import RadialMaskFlow
        from cellgen.synth.pipeline import SynthesisModels
        from cellgen.synth.shape_model import ShapeModel

        if self.shape_state is None:
            raise ValueError("this BVDM model has no fitted shape model; train it with `cellgen fit` first")
        return SynthesisModels(
            denoiser=self.mask_ddpm,
            flow=RadialMaskFlow() if self.hparams.get("texture_flow", "radial") == "radial" else self.voxelmorph,
            shape=ShapeModel.from_dict(self.shape_state),
            intensity_range=tuple(self.intensity_range),
            crop=int(self.hparams.crop_size),
            device=self.device,
        )

    def synthesize(self, index: int, progress: bool = False, **overrides: Any) -> SynthesizedSequence:
        """Synthesise sequence ``index`` (see :func:`cellgen.synth.pipeline.synthesize_sequence`)."""
        from cellgen.synth.pipeline import SynthesisSettings, synthesize_sequence

        settings = SynthesisSettings.from_hparams(self.hparams, **overrides)
        return synthesize_sequence(self.synthesis_models(), self.sequence_seed(index), settings, progress=progress)

    def predict_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> list:
        """Each item of ``batch`` is a sequence index; returns the synthesised sequences for the writer."""
        return [self.synthesize(int(i)) for i in batch.tolist()]


def load_bvdm(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> BVDM:
    """Load a BVDM checkpoint with a clear error for a missing file or a checkpoint of another model."""
    from cellgen.data.errors import CellgenInputError
    from cellgen.models.checkpoint import read_checkpoint

    path = Path(checkpoint)
    if not path.exists():
        raise CellgenInputError(path, "checkpoint not found", "train one with `cellgen fit --config configs/bvdm.yaml`")
    state = read_checkpoint(path, expect_class="cellgen.models.bvdm.BVDM")
    if "bvdm_shape_model" not in state:
        raise CellgenInputError(path, "not a BVDM checkpoint", "pass a checkpoint written by `cellgen fit` with BVDM")
    if state["bvdm_shape_model"] is None:
        raise CellgenInputError(path, "checkpoint has no fitted shape model", "train for at least one step")
    model = BVDM.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    model.eval()
    return model
