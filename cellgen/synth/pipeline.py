"""BVDM inference (Yilmaz et al. 2024, Sec. 2): masks in, textured annotated sequence out.

The pipeline takes small protocols, not a LightningModule: a texture denoiser (SDEdit ``denoise_from``), a flow
model (``flow_between`` two masks), the fitted shape model and the intensity mapping of the training crops
(:class:`SynthesisModels`). It is tested with stub networks in milliseconds; :class:`~cellgen.models.bvdm.BVDM`
builds the real one.

For every frame, all cells go through the networks together (one batch per network call):

* every track gets a brightness series drawn from the fitted appearance (:mod:`cellgen.synth.appearance`):
  per-cell mean from the training data's distribution, correlated with size, drifting slowly over time; a
  daughter continues her mother's;
* a cell's first frame: its mask painted with a statistical texture at that brightness (fitted radial profile
  and texture grain) is noised to t0 = 200 and denoised (SDEdit); the paper paints a constant 0.588, kept as
  ``cell_brightness="constant"``;
* later frames: the flow model maps the previous mask onto the current one; the flows are composed, and the
  track's first texture, extended past its mask so the warp never samples the empty background (streaks), is
  warped once along the composed flow (one resampling, however old the track: no smear), noised to t0 = 10 and
  denoised with ancestral steps (as in the paper);
* the denoised texture is rescaled to the track's brightness of that frame, so the DDPM's prior cannot pull
  every cell towards one typical brightness;
* the scene is the fitted slow background with cells pasted in, plus Poisson-Gaussian pixel noise.

``texture="statistical"`` skips the DDPM: the painted statistical texture is the cell (what a classical
simulator such as MitoGen does), the ablation that shows what the DDPM adds. ``texture="exemplar"`` paints real
training cells' textures onto the synthetic masks instead (:mod:`cellgen.synth.exemplars`), also without the DDPM.

Every cell-frame draws its noise from its own generator seeded by (sequence seed, track id, frame), so a
sequence does not depend on how cells are batched.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import warp_affine
from scipy import ndimage
from tqdm import tqdm

from cellgen.data.ctc import Track
from cellgen.flow import warp_by_flow
from cellgen.synth.appearance import PROFILE_BINS, CellAppearance
from cellgen.synth.exemplars import choose_exemplars, paint_exemplars
from cellgen.synth.scene import CellFrame, SceneLayout, add_noise, background_image, compose_scene
from cellgen.synth.shape_model import ShapeModel

MIN_GAIN, MAX_GAIN = 0.2, 5.0  # limits of the brightness correction of one denoised texture


class TextureDenoiser(Protocol):
    """SDEdit on (B, 1, S, S) images in [0, 1] (see :meth:`cellgen.models.mask_ddpm.MaskDDPM.denoise_from`)."""

    def denoise_from(
        self,
        x_start: torch.Tensor,
        start_step: int,
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        num_steps: int | None = None,
        generators: list[torch.Generator] | None = None,
    ) -> torch.Tensor: ...


class FlowModel(Protocol):
    """Dense flow (B, 2, S, S) that warps ``source`` masks (B, 1, S, S) onto ``target`` masks."""

    def flow_between(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SynthesisModels:
    """Everything synthesis needs from a trained BVDM.

    Attributes:
        denoiser: the texture DDPM (None: only ``texture="statistical"`` is possible).
        flow: the mask-to-mask flow model (None: textures are not carried, every frame starts fresh).
        shape: the fitted shape model (shape, motion, division, appearance).
        intensity_range: raw intensities mapped to 0 and 1 in the training crops (the denoiser's scale).
        crop: local crop size (the denoiser's input size).
        device: where the networks run.
    """

    denoiser: TextureDenoiser | None
    flow: FlowModel | None
    shape: ShapeModel
    intensity_range: tuple[float, float]
    crop: int
    device: torch.device


@dataclass(frozen=True)
class SynthesisSettings:
    """How one sequence is synthesised (BVDM takes the defaults from its hyperparameters).

    ``texture``: ``ddpm`` (BVDM) or ``statistical`` (no DDPM). ``cell_brightness``: ``fitted`` (each track's
    brightness drawn from the training data) or ``constant`` (the paper's ``mask_value`` for every cell).
    ``edge_halo``: paint the fitted halo outside each mask (see :meth:`CellAppearance.composite`).
    """

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
    texture: Literal["ddpm", "statistical", "exemplar"] = "ddpm"
    cell_brightness: Literal["fitted", "constant"] = "fitted"
    edge_halo: bool = False

    @classmethod
    def from_hparams(cls, hparams: Any, **overrides: Any) -> SynthesisSettings:
        """Settings from a hyperparameter mapping; ``overrides`` win; optional fields it lacks keep defaults."""
        values = {}
        for f in fields(cls):
            if f.name in overrides:
                values[f.name] = overrides[f.name]
            elif f.name in hparams:
                values[f.name] = hparams[f.name]
        if values.get("first_frame_sampler") == "ddpm":
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


# --------------------------------------------------------------------------------------------- brightness


def track_brightness(layout: SceneLayout, shape: ShapeModel, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Raw mean intensity of every track at each of its frames, ``{track: (end - begin + 1,)}``.

    Tracks are visited parents first, so a daughter continues from her mother's last brightness score.
    """
    appearance = shape.appearance
    assert appearance is not None
    scores: dict[int, np.ndarray] = {}
    for track_id, track in sorted(layout.tracks.items(), key=lambda item: (item[1].begin, item[0])):
        area = max(float(layout.local_mask(track_id, track.begin).sum()), 1.0)
        size_score = (np.log(area) - shape.log_area_mean) / max(shape.log_area_std, 1e-6)
        start = scores[track.parent][-1] if track.parent in scores else None
        scores[track_id] = appearance.brightness_scores(rng, track.end - track.begin + 1, size_score, start)
    return {k: appearance.brightness_at(v) for k, v in scores.items()}


# --------------------------------------------------------------------------------------------- textures


def _depth(masks: torch.Tensor) -> torch.Tensor:
    """Normalised depth (B, 1, S, S) inside each mask: 0 at the rim, 1 at its deepest pixel."""
    out = np.zeros(masks.shape, np.float32)
    for i, mask in enumerate(masks[:, 0].cpu().numpy() > 0.5):
        dist = ndimage.distance_transform_edt(mask)
        out[i, 0] = dist / max(float(dist.max()), 1.0)
    return torch.from_numpy(out).to(masks.device)


def statistical_texture(
    masks: torch.Tensor, brightness: torch.Tensor, appearance: CellAppearance, generators: list
) -> torch.Tensor:
    """Cells (B, 1, S, S) in [0, 1] painted with the fitted radial profile and a random texture of fitted grain.

    Args:
        masks: (B, 1, S, S) binary masks.
        brightness: (B,) target mean inside each mask, on the crop scale (profile, contrast and grain are
            relative, so no unit conversion is needed).
        generators: one per cell.
    """
    profile = torch.tensor(appearance.radial_profile, dtype=masks.dtype, device=masks.device)
    depth = _depth(masks)
    level = profile[(depth * PROFILE_BINS).long().clamp(max=PROFILE_BINS - 1)]
    noise = torch.stack([torch.randn((2, *masks.shape[2:]), generator=g, device=masks.device) for g in generators])
    field = _gaussian_field(noise[:, :1], float(appearance.texture_grain))
    contrast = float(appearance.texture_contrast)
    relative = torch.zeros_like(level)
    if appearance.coarse_quantiles is not None and appearance.coarse_sigma:
        # Coarse structure with the data's skew: a Gaussian field at the fitted scale, standardised inside each
        # mask and mapped through the fitted quantiles; the fine grain keeps the rest of the texture variance.
        coarse = _gaussian_field(noise[:, 1:], float(appearance.coarse_sigma), masks)
        quantiles = np.asarray(appearance.coarse_quantiles)
        relative = _from_quantiles(coarse, torch.as_tensor(quantiles, dtype=coarse.dtype, device=coarse.device))
        contrast = float(np.sqrt(max(contrast**2 - float(np.var(quantiles)), 0.0)))
    texture = brightness[:, None, None, None] * (level * (1.0 + relative) + contrast * field)
    return (texture.clamp(0.0, 1.0) * masks).to(masks.dtype)


def exemplar_texture(
    masks: torch.Tensor,
    brightness: torch.Tensor,
    appearance: CellAppearance,
    intensity_range: tuple[float, float],
    generators: list,
) -> torch.Tensor:
    """Cells (B, 1, S, S) in [0, 1] wearing real training cells' textures (:mod:`cellgen.synth.exemplars`).

    Each cell takes an exemplar of similar size and brightness, rotated and mirrored at random, scaled to its
    target ``brightness`` (B,) on the crop scale.
    """
    if appearance.exemplar_bank is None:
        raise ValueError(
            "texture='exemplar' needs a shape model fitted with exemplars: refit it (`cellgen synthesize "
            "--shape-from <training sequence>`) or use texture='statistical'"
        )
    bank, cells = appearance.exemplar_bank
    low, high = intensity_range
    index = choose_exemplars(cells, masks.flatten(1).sum(1), low + brightness * (high - low), generators)
    polar = torch.from_numpy(bank[index.numpy()]).to(masks.device)
    draws = torch.stack([torch.rand(2, generator=g, device=g.device) for g in generators]).to(masks.device)
    relative = paint_exemplars(masks, polar, draws[:, 0] * (2 * np.pi), draws[:, 1] < 0.5)
    return ((brightness[:, None, None, None] * relative).clamp(0.0, 1.0) * masks).to(masks.dtype)


def _from_quantiles(z: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Normal scores ``z`` mapped through a quantile table at evenly spaced levels (``QUANTILE_LEVELS``), on
    ``z``'s device: the inverse-CDF transform without a round trip through NumPy."""
    position = torch.special.ndtr(z) * (quantiles.numel() - 1)
    lower = position.floor().long().clamp(0, quantiles.numel() - 2)
    frac = position - lower
    return quantiles[lower] * (1.0 - frac) + quantiles[lower + 1] * frac


def _gaussian_field(noise: torch.Tensor, sigma: float, masks: torch.Tensor | None = None) -> torch.Tensor:
    """White noise (B, 1, S, S) blurred at ``sigma`` px and standardised (inside ``masks`` when given)."""
    size = 2 * int(np.ceil(3 * sigma)) + 1
    field = gaussian_blur2d(noise, (size, size), (sigma, sigma), border_type="reflect")
    if masks is None:
        return field / field.flatten(1).std(1).clamp_min(1e-6)[:, None, None, None]
    area = masks.flatten(1).sum(1).clamp_min(1.0)[:, None, None, None]
    mean = (field * masks).flatten(1).sum(1)[:, None, None, None] / area
    std = (((field - mean) ** 2 * masks).flatten(1).sum(1)[:, None, None, None] / area).sqrt().clamp_min(1e-6)
    return (field - mean) / std


def match_brightness(
    textures: torch.Tensor, masks: torch.Tensor, brightness: torch.Tensor, rounds: int = 3
) -> torch.Tensor:
    """Scale each texture (B, 1, S, S) so its mean inside the mask is ``brightness`` (B,); clipped to [0, 1].

    A few rounds, because clipping at 1 lowers the mean of a bright cell after the first scaling.
    """
    area = masks.flatten(1).sum(1).clamp_min(1.0)
    for _ in range(rounds):
        mean = (textures * masks).flatten(1).sum(1) / area
        gain = (brightness / mean.clamp_min(1e-4)).clamp(MIN_GAIN, MAX_GAIN)
        textures = (textures * gain[:, None, None, None]).clamp(0.0, 1.0)
    return textures


def extend_texture(textures: torch.Tensor, masks: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Fill the outside of each mask with a smooth continuation of its texture (normalised convolution).

    A warp from the previous mask onto a larger or shifted new one samples outside the old mask; with a zero
    background there, the new rim is smeared dark or streaked. The continuation keeps it at the cell's level.
    """
    size = 2 * int(np.ceil(3 * sigma)) + 1
    blur = lambda x: gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="replicate")  # noqa: E731
    weight = blur(masks)
    area = masks.flatten(1).sum(1).clamp_min(1.0)
    mean = ((textures * masks).flatten(1).sum(1) / area)[:, None, None, None]
    fill = torch.where(weight > 1e-3, blur(textures * masks) / weight.clamp_min(1e-3), mean)
    return torch.where(masks > 0.5, textures, fill)


FLOW_SMOOTHING = 2.0  # px: Gaussian width applied to each frame-to-frame flow before composing


def smooth_flow(flow: torch.Tensor, sigma: float = FLOW_SMOOTHING) -> torch.Tensor:
    """Gaussian-smoothed (B, 2, S, S) flow (replicated borders)."""
    size = 2 * int(np.ceil(3 * sigma)) + 1
    return gaussian_blur2d(flow, (size, size), (sigma, sigma), border_type="replicate")


@dataclass
class CarriedTexture:
    """A track's texture carried through time: the texture of its first frame and the flow to the current one.

    Warping the previous frame's texture again and again resamples it once per frame, and every bilinear
    resampling blurs: after a few dozen frames the texture is smeared. Composing the flows instead and warping
    the first texture once per frame keeps its detail however long the track lives.

    Attributes:
        anchor: (1, S, S) texture of the track's first frame, extended past its mask.
        flow: (2, S, S) displacement from the current mask's pixels into the anchor (zero at the first frame).
    """

    anchor: torch.Tensor
    flow: torch.Tensor


@torch.no_grad()
def texture_frame(
    models: SynthesisModels,
    cells: list[CellFrame],
    carried: dict[int, CarriedTexture],
    brightness: torch.Tensor,
    seed: int,
    settings: SynthesisSettings,
) -> tuple[torch.Tensor, dict[int, CarriedTexture]]:
    """Textures (B, 1, S, S) in [0, 1] of all cells of one frame (extended past each mask) and what to carry.

    Args:
        carried: each track's carried texture up to the previous frame.
        brightness: (B,) each cell's target mean on the crop scale.

    Returns:
        The textures and ``{track: CarriedTexture}`` for the next frame.
    """
    device = models.device
    masks = _stack([c.local_mask for c in cells], device)
    out = torch.empty_like(masks)
    size = masks.shape[-1]
    flows = torch.zeros(len(cells), 2, size, size, device=device)
    anchors = torch.empty_like(masks)
    carry = models.flow is not None
    fresh = [i for i, c in enumerate(cells) if not carry or c.prev_mask is None or c.track_id not in carried]
    later = [i for i in range(len(cells)) if i not in set(fresh)]
    use_ddpm = settings.texture == "ddpm"
    if use_ddpm and models.denoiser is None:
        raise ValueError("texture='ddpm' needs a texture denoiser; use texture='statistical' without one")
    if fresh:
        generators = [cell_generator(seed, cells[i].track_id, cells[i].t, device) for i in fresh]
        if settings.cell_brightness == "constant":
            start = masks[fresh] * settings.mask_value
        elif settings.texture == "exemplar":
            assert models.shape.appearance is not None
            start = exemplar_texture(
                masks[fresh], brightness[fresh], models.shape.appearance, models.intensity_range, generators
            )
        else:
            appearance = models.shape.appearance
            assert appearance is not None
            start = statistical_texture(masks[fresh], brightness[fresh], appearance, generators)
        out[fresh] = (
            models.denoiser.denoise_from(
                start,
                settings.first_frame_step,
                sampler=settings.first_frame_sampler,
                num_steps=settings.first_frame_steps,
                generators=generators,
            )
            if use_ddpm
            else start
        )
    if later:
        prev_masks = _stack([cells[i].prev_mask for i in later], device)
        # VoxelMorph flows carry pixel-scale noise; composed over many frames it shears the texture into streaks,
        # so each step is smoothed to the scale of a cell's deformation before it is composed.
        step = smooth_flow(models.flow.flow_between(prev_masks, masks[later]))
        # total(p) = step(p) + total_prev(p + step(p)): the current pixel's position in the anchor frame.
        total = torch.stack([carried[cells[i].track_id].flow for i in later])
        flows[later] = step + warp_by_flow(total, step, padding_mode="border")
        anchors[later] = torch.stack([carried[cells[i].track_id].anchor for i in later])
        warped = warp_by_flow(anchors[later], flows[later], padding_mode="border").clamp(0, 1)
        if settings.cell_brightness == "fitted":
            warped = match_brightness(warped, masks[later], brightness[later])
        if use_ddpm:
            generators = [cell_generator(seed, cells[i].track_id, cells[i].t, device) for i in later]
            warped = models.denoiser.denoise_from(
                warped,
                settings.later_frame_step,
                sampler=settings.later_frame_sampler,
                num_steps=settings.later_frame_steps,
                generators=generators,
            )
        out[later] = warped
    if settings.cell_brightness == "fitted":
        out = match_brightness(out, masks, brightness)
    out = extend_texture(out, masks)
    anchors[fresh] = out[fresh]  # a new track's texture is the anchor its later frames are warped from
    state = {c.track_id: CarriedTexture(anchors[i], flows[i]) for i, c in enumerate(cells)}
    return out, state


def paste_textures(
    textures: torch.Tensor, masks: torch.Tensor, cells: list[CellFrame], height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp all local textures (extended past their masks) and masks into the scene at once.

    The extension lets bilinear resampling at the rim blend with the cell's own intensity instead of the zero
    background.

    Returns:
        scene texture (H, W) and coverage (H, W) in [0, 1].
    """
    crop = textures.shape[-1]
    matrices = torch.tensor(
        np.stack([c.pose.matrix(crop) for c in cells]), dtype=textures.dtype, device=textures.device
    )
    warped = warp_affine(
        torch.cat([textures, masks], dim=1),
        matrices,
        dsize=(height, width),
        align_corners=True,
        padding_mode="zeros",
    )
    coverage = warped[:, 1:2]
    scene = (warped[:, 0:1] * (coverage > 0).to(warped.dtype)).sum(0)[0]
    weight = (coverage > 0).to(warped.dtype).sum(0)[0].clamp_min(1.0)
    return scene / weight, coverage.sum(0)[0].clamp(0, 1)


def _to_raw(texture: np.ndarray, intensity_range: tuple[float, float]) -> np.ndarray:
    low, high = intensity_range
    return low + texture * (high - low)


@torch.no_grad()
def synthesize_sequence(
    models: SynthesisModels, seed: int, settings: SynthesisSettings, progress: bool = False
) -> SynthesizedSequence:
    """Synthesise one annotated sequence with the given networks and fitted shape model.

    ``progress`` shows a per-frame bar (a 92-frame sequence takes minutes on a CPU).
    """
    shape, crop = models.shape, models.crop
    notes = []
    if shape.suggested_crop() > crop:
        notes.append(f"cells up to {shape.suggested_crop()} px exceed the {crop} px crop and are scaled down")
    fitted = settings.cell_brightness == "fitted" and shape.appearance is not None
    if settings.cell_brightness == "fitted" and not fitted:
        notes.append("the shape model has no fitted appearance (older checkpoint): constant brightness, as the paper")
        settings = SynthesisSettings(**{**settings.__dict__, "cell_brightness": "constant"})
    rng = np.random.default_rng(seed)
    layout = compose_scene(
        shape, rng, settings.frames, settings.height, settings.width, settings.cells, settings.divisions, crop=crop
    )
    stats = shape.intensity
    out_dtype = np.dtype(stats.dtype)
    appearance_rng = np.random.default_rng([seed, 1])  # its own stream: the layout above is unchanged by it
    appearance = shape.appearance
    if appearance is not None:
        background = appearance.background(appearance_rng, settings.height, settings.width)
    else:
        background = background_image(rng, stats, settings.height, settings.width)
    low, high = models.intensity_range
    brightness = track_brightness(layout, shape, appearance_rng) if fitted else {}
    images = np.empty((settings.frames, settings.height, settings.width), out_dtype)
    carried: dict[int, CarriedTexture] = {}
    frames = tqdm(layout.cell_frames, desc=f"seed {seed}", unit="frame", leave=False, disable=not progress)
    for t, cells in enumerate(frames):
        frame = background.astype(np.float64)
        if cells:
            targets = [
                (brightness[c.track_id][t - layout.tracks[c.track_id].begin] - low) / (high - low) if fitted else 0.0
                for c in cells
            ]
            target = torch.tensor(targets, dtype=torch.float32, device=models.device).clamp(0.0, 1.0)
            textures, carried = texture_frame(models, cells, carried, target, seed, settings)
            masks = _stack([c.local_mask for c in cells], textures.device)
            scene_tex, coverage = paste_textures(textures.float(), masks, cells, settings.height, settings.width)
            cells_raw = _to_raw(scene_tex.cpu().numpy().astype(np.float64), (low, high))
            if settings.edge_halo and appearance is not None and appearance.halo_profile:
                frame = appearance.composite(frame, cells_raw, layout.masks[t] > 0)
            else:  # a rim softened by the paste's own resampling
                coverage = ndimage.gaussian_filter(coverage.cpu().numpy().astype(np.float64), 0.7)
                frame = frame * (1.0 - coverage) + cells_raw * coverage
        if appearance is not None:
            noisy = appearance.add_noise(frame, rng, stats.max_value)
        else:
            noisy = add_noise(frame, stats, rng)
        images[t] = np.round(noisy).astype(out_dtype) if np.issubdtype(out_dtype, np.integer) else noisy
    notes.extend(layout.notes)
    masks_out = layout.masks.astype(np.uint16)
    return SynthesizedSequence(seed=seed, images=images, masks=masks_out, tracks=dict(layout.tracks), notes=notes)
