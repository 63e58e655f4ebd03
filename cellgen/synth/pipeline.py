"""BVDM inference (Yilmaz et al. 2024, Sec. 2): masks in, textured annotated sequence out.

For every frame, all cells go through the networks together (one batch per network call):

* a cell's first frame: its mask painted with ``mask_value`` (0.588) is noised to t0 = 200 and denoised
  (SDEdit); cellgen's default takes DDIM steps here instead of 200 ancestral ones;
* later frames: the flow model maps the previous mask onto the current one, the previous texture is warped
  along that flow, noised to t0 = 10 and denoised with ancestral steps (as in the paper).

Textures live in each cell's local crop; the scene layout (:mod:`cellgen.synth.scene`) says where each crop
goes. Pasting is one batched kornia ``warp_affine`` per frame. Every cell-frame draws its noise from its own
generator seeded by (sequence seed, track id, frame), so a sequence does not depend on how cells are batched.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from scipy import ndimage
from tqdm import tqdm

from cellgen.data.ctc import Track
from cellgen.flow import warp_by_flow
from cellgen.synth.scene import CellFrame, add_noise, background_image, compose_scene
from cellgen.synth.shape_model import ShapeModel

if TYPE_CHECKING:
    from cellgen.models.bvdm import BVDM


@dataclass(frozen=True)
class SynthesisSettings:
    """How one sequence is synthesised (defaults come from the BVDM module's hyperparameters)."""

    frames: int
    height: int
    width: int
    cells: int
    divisions: bool | int
    first_frame_step: int
    later_frame_step: int
    mask_value: float
    first_frame_sampler: str
    first_frame_steps: int | None
    later_frame_sampler: str
    later_frame_steps: int | None

    @classmethod
    def from_module(cls, module: BVDM, **overrides: Any) -> SynthesisSettings:
        values = {f.name: overrides.get(f.name, module.hparams.get(f.name)) for f in fields(cls)}
        if values["first_frame_sampler"] == "ddpm":
            values["first_frame_steps"] = None  # ancestral sampling takes every step
        return cls(**values)


class SynthesizedSequence:
    """One synthetic annotated sequence: raw frames, label masks (ids = track ids) and the lineage.

    A plain class rather than a dataclass: Lightning's prediction loop walks into dataclasses to move tensors
    between devices, and this holds NumPy arrays and frozen ``Track`` records that need no moving.
    """

    __slots__ = ("seed", "images", "masks", "tracks", "notes")

    def __init__(
        self, seed: int, images: np.ndarray, masks: np.ndarray, tracks: dict[int, Track], notes: list[str]
    ) -> None:
        self.seed = seed
        self.images = images  # (T, H, W) in the training data's dtype
        self.masks = masks  # (T, H, W) uint16
        self.tracks = tracks
        self.notes = notes


def cell_generator(seed: int, track_id: int, frame: int, device: torch.device) -> torch.Generator:
    """The generator of one cell-frame: independent of batching, device count and the other cells."""
    state = np.random.SeedSequence([seed, track_id, frame]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device).manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def _stack(masks: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)).to(device)


@torch.no_grad()
def texture_frame(
    model: BVDM,
    cells: list[CellFrame],
    previous: dict[int, torch.Tensor],
    seed: int,
    settings: SynthesisSettings,
) -> torch.Tensor:
    """Textures (B, 1, S, S) in [0, 1] of all cells of one frame, zero outside each cell's mask."""
    device = model.device
    masks = _stack([c.local_mask for c in cells], device)
    out = torch.empty_like(masks)
    fresh = [i for i, c in enumerate(cells) if c.prev_mask is None or c.track_id not in previous]
    carried = [i for i in range(len(cells)) if i not in set(fresh)]
    if fresh:
        generators = [cell_generator(seed, cells[i].track_id, cells[i].t, device) for i in fresh]
        out[fresh] = model.mask_ddpm.denoise_from(
            masks[fresh] * settings.mask_value,
            settings.first_frame_step,
            sampler=settings.first_frame_sampler,
            num_steps=settings.first_frame_steps,
            generators=generators,
        )
    if carried:
        prev_masks = _stack([cells[i].prev_mask for i in carried], device)
        flow = model.voxelmorph.flow_between(prev_masks, masks[carried])
        prev_tex = torch.stack([previous[cells[i].track_id] for i in carried])
        warped = warp_by_flow(prev_tex, flow)
        generators = [cell_generator(seed, cells[i].track_id, cells[i].t, device) for i in carried]
        out[carried] = model.mask_ddpm.denoise_from(
            warped.clamp(0, 1),
            settings.later_frame_step,
            sampler=settings.later_frame_sampler,
            num_steps=settings.later_frame_steps,
            generators=generators,
        )
    return out * masks


def paste_textures(
    textures: torch.Tensor, masks: torch.Tensor, cells: list[CellFrame], height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp all local textures and masks into the scene at once.

    Textures are first extended a few pixels past their mask (grey dilation), so bilinear resampling at the
    rim blends with the cell's own intensity instead of the zero background.

    Returns:
        scene texture (H, W) and coverage (H, W) in [0, 1].
    """
    crop = textures.shape[-1]
    grown = torch.where(masks > 0, textures, F.max_pool2d(textures, 5, stride=1, padding=2))
    matrices = torch.tensor(
        np.stack([c.pose.matrix(crop) for c in cells]), dtype=textures.dtype, device=textures.device
    )
    warped = warp_affine(
        torch.cat([grown, masks], dim=1), matrices, dsize=(height, width), align_corners=True, padding_mode="zeros"
    )
    return warped[:, 0].sum(0), warped[:, 1].sum(0).clamp(0, 1)


def _to_raw(texture: np.ndarray, intensity_range: tuple[float, float]) -> np.ndarray:
    low, high = intensity_range
    return low + texture * (high - low)


@torch.no_grad()
def synthesize_sequence(
    model: BVDM, seed: int, settings: SynthesisSettings, progress: bool = False
) -> SynthesizedSequence:
    """Synthesise one annotated sequence with the model's networks and fitted shape model.

    ``progress`` shows a per-frame bar (a 92-frame sequence takes minutes on a CPU).
    """
    if model.shape_state is None:
        raise ValueError("this BVDM model has no fitted shape model; train it with `cellgen fit` first")
    shape = ShapeModel.from_dict(model.shape_state)
    crop = int(model.hparams.crop_size)
    notes = []
    if shape.suggested_crop() > crop:
        notes.append(f"cells up to {shape.suggested_crop()} px exceed the {crop} px crop and are scaled down")
    rng = np.random.default_rng(seed)
    layout = compose_scene(
        shape, rng, settings.frames, settings.height, settings.width, settings.cells, settings.divisions, crop=crop
    )
    stats = shape.intensity
    out_dtype = np.dtype(stats.dtype)
    background = background_image(rng, stats, settings.height, settings.width)
    images = np.empty((settings.frames, settings.height, settings.width), out_dtype)
    previous: dict[int, torch.Tensor] = {}
    frames = tqdm(layout.cell_frames, desc=f"seed {seed}", unit="frame", leave=False, disable=not progress)
    for t, cells in enumerate(frames):
        frame = background.astype(np.float64)
        if cells:
            textures = texture_frame(model, cells, previous, seed, settings)
            previous = {c.track_id: textures[i] for i, c in enumerate(cells)}
            masks = _stack([c.local_mask for c in cells], textures.device)
            scene_tex, coverage = paste_textures(textures.float(), masks, cells, settings.height, settings.width)
            coverage = ndimage.gaussian_filter(coverage.cpu().numpy().astype(np.float64), 0.7)
            cells_raw = _to_raw(scene_tex.cpu().numpy().astype(np.float64), model.intensity_range)
            frame = frame * (1.0 - coverage) + cells_raw * coverage
        noisy = add_noise(frame, stats, rng)
        images[t] = np.round(noisy).astype(out_dtype) if np.issubdtype(out_dtype, np.integer) else noisy
    notes.extend(layout.notes)
    masks_out = layout.masks.astype(np.uint16)
    return SynthesizedSequence(seed=seed, images=images, masks=masks_out, tracks=dict(layout.tracks), notes=notes)
