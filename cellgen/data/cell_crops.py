"""Single-cell crops and consecutive mask pairs for the two BVDM networks.

Paper: Yilmaz, Eschweiler, Stegmaier, "Annotated Biomedical Video Generation using Denoising Diffusion
Probabilistic Models and Flow Fields" (BVDM, SASHIMI 2024), Sec. 2 and 3:

* the texture DDPM learns isolated cells: every annotated cell is cut out, centred in a 96x96 crop and kept on
  a zero background, so that at synthesis a binary mask painted with a constant foreground value (0.588) can be
  noised and denoised into a textured cell of that shape (SDEdit);
* the flow prediction model (VoxelMorph) learns from pairs of consecutive masks of one track ``(M_f, M_f+1)``.

Intensities are normalised per sequence with robust percentiles (0.5 / 99.5 by default) and clipped to [0, 1],
so crops of one sequence share one scale (a per-crop min-max would erase the brightness differences between
cells that the DDPM should learn) and a few hot pixels cannot squash the range. The paper normalises with the
data set's fixed min/max; percentiles are the robust form of the same per-sequence mapping. The DDPM maps [0, 1]
to [-1, 1] itself (:class:`cellgen.models.mask_ddpm.MaskDDPM`), so the 0.588 mask value lives on this scale.

Instance masks come from :meth:`CTCSequence.instance_mask_paths` (SEG > ST > TRA per frame). SEG/ST labels are
not track ids in the CTC format, so each instance is matched to the TRA label it overlaps most; only matched
instances form pairs. Extraction results are cached as ``.npz`` keyed by the sequence and the settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset

from cellgen.data.atomic import atomic_file
from cellgen.data.base import SampleIndexDataset, TrainValDataModule
from cellgen.data.cache import folder_fingerprint, resolve_cache_dir
from cellgen.data.cell_extent import cell_mask, match_to_tracks, resolve_tra_expansion
from cellgen.data.ctc import CTCSequence, read_tiff
from cellgen.data.errors import CellgenInputError

CACHE_VERSION = 2  # 2: TRA markers grown to the cell's extent (cell_extent)
SKIP_REASONS = ("touching_border", "too_small", "too_large", "pair_outside_crop")


@dataclass(frozen=True)
class CropSpec:
    """How cells are cut out (defaults: BVDM Sec. 3, 96x96 crops)."""

    crop_size: int = 96
    min_area: int = 20
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    tra_expand: float | str = "auto"  # growth of TRA markers to the whole cell (see cellgen.data.cell_extent)

    def key(self) -> str:
        text = repr((CACHE_VERSION, sorted(asdict(self).items())))
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass
class CellCrops:
    """Everything extracted from one sequence.

    Attributes:
        images: (N, S, S) float16 cell intensities in [0, 1], zero outside the cell's mask.
        masks: (N, S, S) bool cell masks, aligned with ``images``.
        track_ids: (N,) track id of each crop (0 when the instance matched no TRA label).
        frames: (N,) frame index of each crop.
        pairs: (P, 2, S, S) bool masks ``(M_f, M_f+1)`` of one track, centred on the frame-f centroid.
        pair_track_ids: (P,) track id of each pair.
        pair_frames: (P,) frame f of each pair.
        skipped: counts of skipped cells / pairs per reason (see ``SKIP_REASONS``).
        intensity_range: the raw (low, high) percentiles mapped to 0 and 1.
    """

    images: np.ndarray
    masks: np.ndarray
    track_ids: np.ndarray
    frames: np.ndarray
    pairs: np.ndarray
    pair_track_ids: np.ndarray
    pair_frames: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    intensity_range: tuple[float, float] = (0.0, 1.0)

    def summary(self, where: str | Path) -> str:
        s = self.skipped
        return (
            f"{where}: {len(self.images)} cell crops, {len(self.pairs)} mask pairs; skipped "
            f"{s.get('touching_border', 0)} cells touching the border, {s.get('too_small', 0)} too small, "
            f"{s.get('too_large', 0)} larger than the crop, {s.get('pair_outside_crop', 0)} pairs leaving the crop"
        )

    @property
    def foreground_mean(self) -> float:
        """Mean cell intensity in [0, 1]: the data's counterpart of the paper's 0.588 mask foreground."""
        return float(self.images[self.masks].astype(np.float32).mean()) if self.masks.any() else 0.0


# --------------------------------------------------------------------------------------------- extraction


def intensity_percentiles(seq: CTCSequence, frames: list[int], low: float, high: float) -> tuple[float, float]:
    """Robust per-sequence (low, high) percentiles over up to 16 evenly spaced frames (every 2nd pixel)."""
    chosen = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, min(16, len(frames))).astype(int))]
    pixels = np.concatenate([seq.image(t)[::2, ::2].ravel().astype(np.float32) for t in chosen])
    lo, hi = np.percentile(pixels, [low, high])
    return float(lo), float(max(hi, lo + 1e-6))


def _place(local: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """Paste a (h, w) array at (top, left) into a zero (size, size) canvas (caller checks it fits)."""
    canvas = np.zeros((size, size), local.dtype)
    canvas[top : top + local.shape[0], left : left + local.shape[1]] = local
    return canvas


def _centred_pair(
    source: tuple[np.ndarray, int, int], target: tuple[np.ndarray, int, int], size: int
) -> np.ndarray | None:
    """(2, S, S) masks ``(M_f, M_f+1)`` on one crop grid centred on M_f's centroid, or None if one leaves it.

    Args:
        source, target: (local bounding-box mask, top, left) of the cell in frames f and f+1.
    """
    local, top, left = source
    cy, cx = ndimage.center_of_mass(local)
    y0, x0 = int(round(top + cy)) - size // 2, int(round(left + cx)) - size // 2
    placed = []
    for local, top, left in (source, target):
        dy, dx = top - y0, left - x0
        if dy < 0 or dx < 0 or dy + local.shape[0] > size or dx + local.shape[1] > size:
            return None
        placed.append(_place(local, dy, dx, size))
    return np.stack(placed)


def extract_cell_crops(seq: CTCSequence, spec: CropSpec) -> CellCrops:
    """Cut every usable cell of a sequence into a centred crop, and every same-track consecutive pair.

    A cell is skipped (and counted) when its mask touches the image border (its shape is cut off), has fewer
    than ``min_area`` pixels, or its bounding box exceeds the crop. A pair is skipped when either mask leaves
    the crop centred on the frame-f centroid.

    Raises:
        CellgenInputError: the sequence has no instance masks, or none of its cells is usable.
    """
    radius = resolve_tra_expansion(seq, spec.tra_expand) if seq.tra_paths else 0.0
    # Markers grown to the cell's extent (radius > 0) are used in every frame, SEG frames included: each crop
    # then shows the same extent of the cell and pairs follow tracks. Otherwise the best mask of each frame.
    prefer = ("TRA",) if radius > 0 else ("SEG", "ST", "TRA")
    mask_paths = {t: p for t, p in seq.instance_mask_paths(prefer).items() if t in seq.frame_paths}
    if not mask_paths:
        raise CellgenInputError(
            seq.path,
            "no instance masks for any frame",
            f"cell crops need {seq.name}_GT/SEG, {seq.name}_ST/SEG or {seq.name}_GT/TRA masks beside the frames",
        )
    size = spec.crop_size
    lo, hi = intensity_percentiles(seq, list(mask_paths), spec.low_percentile, spec.high_percentile)
    tra_files = set(seq.tra_paths.values())
    images, masks, track_ids, frames = [], [], [], []
    pairs, pair_ids, pair_frames = [], [], []
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    previous: dict[int, tuple[np.ndarray, int, int]] = {}  # track -> (local mask, top, left) in frame t - 1
    previous_t: int | None = None
    for t, path in mask_paths.items():
        labels = cell_mask(seq, t, radius) if path in tra_files else read_tiff(path)
        if labels.shape != seq.shape:
            raise CellgenInputError(path, f"mask size {labels.shape} differs from frame size {seq.shape}")
        image = np.clip((seq.image(t).astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
        if path in tra_files:
            to_track = {int(k): int(k) for k in np.unique(labels) if k}
        elif t in seq.tra_paths:
            to_track = match_to_tracks(labels, seq.tra_mask(t))
        else:
            to_track = {}
        height, width = labels.shape
        current: dict[int, tuple[np.ndarray, int, int]] = {}
        for index, box in enumerate(ndimage.find_objects(labels.astype(np.int64, copy=False)), start=1):
            if box is None:
                continue
            local = labels[box] == index
            ys, xs = box
            if ys.start == 0 or xs.start == 0 or ys.stop == height or xs.stop == width:
                skipped["touching_border"] += 1
                continue
            if local.sum() < spec.min_area:
                skipped["too_small"] += 1
                continue
            h, w = local.shape
            if h > size or w > size:
                skipped["too_large"] += 1
                continue
            top, left = (size - h) // 2, (size - w) // 2
            images.append(_place(np.where(local, image[box], 0.0).astype(np.float16), top, left, size))
            masks.append(_place(local, top, left, size))
            track = to_track.get(index, 0)
            track_ids.append(track)
            frames.append(t)
            if track:
                current[track] = (local, ys.start, xs.start)
        if previous_t is not None and t == previous_t + 1:
            for track, source in previous.items():
                if track not in current:
                    continue
                pair = _centred_pair(source, current[track], size)
                if pair is None:
                    skipped["pair_outside_crop"] += 1
                    continue
                pairs.append(pair)
                pair_ids.append(track)
                pair_frames.append(previous_t)
        previous, previous_t = current, t
    if not images:
        raise CellgenInputError(
            seq.path,
            f"no usable cells for {size}x{size} crops (skipped {skipped['touching_border']} touching the border, "
            f"{skipped['too_small']} under {spec.min_area} px, {skipped['too_large']} larger than the crop)",
            "raise crop_size or lower min_area",
        )
    empty = np.zeros((0, size, size), bool)
    return CellCrops(
        images=np.stack(images),
        masks=np.stack(masks),
        track_ids=np.asarray(track_ids, np.int64),
        frames=np.asarray(frames, np.int64),
        pairs=np.stack(pairs) if pairs else empty[:, None].repeat(2, axis=1),
        pair_track_ids=np.asarray(pair_ids, np.int64),
        pair_frames=np.asarray(pair_frames, np.int64),
        skipped=skipped,
        intensity_range=(lo, hi),
    )


def load_cell_crops(seq: CTCSequence, spec: CropSpec, cache_dir: str | Path | None) -> CellCrops:
    """Crops of a sequence from the ``.npz`` cache when present (written atomically otherwise); logs a summary."""
    cache_dir = resolve_cache_dir(cache_dir, "cell-crops")
    if cache_dir is None:
        crops = extract_cell_crops(seq, spec)
        rank_zero_info(crops.summary(seq.path))
        return crops
    tag = folder_fingerprint(seq.path, seq.gt_dir, seq.root / f"{seq.name}_ST")  # content, not path
    path = cache_dir / f"cellcrops-{seq.root.name}-{seq.name}-{tag}-{spec.key()}.npz"
    if path.is_file():
        try:
            with np.load(path) as cached:
                crops = CellCrops(
                    **{k: cached[k] for k in ("images", "masks", "track_ids", "frames", "pairs")},
                    pair_track_ids=cached["pair_track_ids"],
                    pair_frames=cached["pair_frames"],
                    skipped=dict(zip(SKIP_REASONS, cached["skipped"].tolist(), strict=True)),
                    intensity_range=tuple(cached["intensity_range"].tolist()),
                )
            rank_zero_info(crops.summary(seq.path) + f" (cached in {path})")
            return crops
        except Exception:
            path.unlink(missing_ok=True)  # a damaged cache is rebuilt, not trusted
    crops = extract_cell_crops(seq, spec)
    rank_zero_info(crops.summary(seq.path))
    with atomic_file(path) as tmp:
        np.savez_compressed(
            tmp,
            images=crops.images,
            masks=crops.masks,
            track_ids=crops.track_ids,
            frames=crops.frames,
            pairs=crops.pairs,
            pair_track_ids=crops.pair_track_ids,
            pair_frames=crops.pair_frames,
            skipped=np.asarray([crops.skipped[k] for k in SKIP_REASONS]),
            intensity_range=np.asarray(crops.intensity_range),
        )
    return crops


# --------------------------------------------------------------------------------------------- datasets


def random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """One of the 8 flips/90-degree rotations of (C, H, W), the same for every channel (BVDM augmentation)."""
    k = int(torch.randint(4, ()).item())
    if torch.randint(2, ()).item():
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


class CropDataset(Dataset):
    """Crops (N, C, S, S) as float32 tensors (C, S, S), optionally randomly flipped/rotated.

    Randomness comes from torch, so ``seed_everything`` and DataLoader workers seed it.
    """

    def __init__(self, crops: np.ndarray, augment: bool = True) -> None:
        self.crops = crops
        self.augment = augment

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.crops[index])).float()
        return random_dihedral(x) if self.augment else x


class CellCropDataModule(TrainValDataModule):
    """Cell crops (``mode="cells"``) or consecutive mask pairs (``mode="pairs"``) of CTC sequences.

    Batches: ``cells`` gives (B, 1, S, S) float intensities in [0, 1] (zero background) for the texture DDPM;
    ``pairs`` gives (B, 2, S, S) binary float masks ``[M_f, M_f+1]`` for the flow prediction model.
    ``predict`` yields sample indices (B,) in ``cells`` mode and held-out pairs in ``pairs`` mode.

    Args:
        sequences: raw-frame folders (``.../01``); empty means the embedded demo data.
        demo_flavour: demo flavour to fall back to (``fluo``: nuclei like the paper's HeLa data).
        mode: ``cells`` or ``pairs``.
        crop_size: crop height and width (BVDM Sec. 3: 96).
        min_area: smallest usable cell mask in pixels.
        batch_size: samples per batch (BVDM Sec. 3: 32).
        num_workers: DataLoader workers.
        val_fraction: fraction of tracks held out for validation (split by track, so near-identical crops of
            one cell in neighbouring frames never straddle the split).
        augment: random flips and 90-degree rotations.
        cache_dir: where extraction caches go (auto: ``$CELLGEN_CACHE/cell-crops``); None disables caching.
        split_seed: seed of the track split.
        num_predict: number of crops ``predict`` samples in ``cells`` mode.
    """

    def __init__(
        self,
        sequences: list[str] | None = None,
        demo_flavour: str = "fluo",
        mode: Literal["cells", "pairs"] = "cells",
        crop_size: int = 96,
        min_area: int = 20,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        augment: bool = True,
        cache_dir: str | None = "auto",
        split_seed: int = 0,
        num_predict: int = 16,
    ) -> None:
        super().__init__(sequences, demo_flavour)
        if mode not in ("cells", "pairs"):
            raise ValueError(f"mode must be 'cells' or 'pairs', got {mode!r}")
        self.save_hyperparameters()
        self.spec = CropSpec(crop_size, min_area)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.foreground_mean: float | None = None

    def load_crops(self) -> list[CellCrops]:
        cache = self.hparams.cache_dir or None
        return [load_cell_crops(seq, self.spec, cache) for seq in self.resolve_sequences()]

    def prepare_data(self) -> None:
        super().prepare_data()
        self.load_crops()  # fills the cache once, before DDP ranks read it

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = [], []
        all_crops = self.load_crops()
        for number, crops in enumerate(all_crops):
            if self.hparams.mode == "cells":
                samples, tracks = crops.images[:, None], crops.track_ids
            else:
                samples, tracks = crops.pairs, crops.pair_track_ids
            held_out = self._val_tracks(crops.track_ids, number)
            is_val = np.isin(tracks, held_out) & (tracks > 0)
            train.append(samples[~is_val])
            val.append(samples[is_val])
        train_arr, val_arr = np.concatenate(train), np.concatenate(val)
        if len(train_arr) == 0 and len(val_arr):
            train_arr, val_arr = val_arr, val_arr[:0]
        if len(train_arr) == 0:
            where = ", ".join(self.sequence_paths) or "the demo data"
            raise CellgenInputError(
                where,
                "no consecutive mask pairs of one track (pairs need masks in neighbouring frames)",
                "use a sequence with TRA masks in consecutive frames or raise crop_size",
            )
        if len(val_arr) == 0:
            val_arr = train_arr[:1]
        self.train_set = CropDataset(train_arr, self.hparams.augment)
        self.val_set = CropDataset(val_arr, augment=False)
        pixels = sum(int(c.masks.sum()) for c in all_crops)
        self.foreground_mean = sum(c.foreground_mean * int(c.masks.sum()) for c in all_crops) / max(pixels, 1)

    def _val_tracks(self, track_ids: np.ndarray, number: int) -> np.ndarray:
        tracks = np.unique(track_ids[track_ids > 0])
        n_val = int(round(len(tracks) * self.hparams.val_fraction)) if len(tracks) > 1 else 0
        rng = np.random.default_rng([self.hparams.split_seed, number])
        return rng.permutation(tracks)[:n_val]

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.mode == "cells":
            return DataLoader(SampleIndexDataset(self.hparams.num_predict), batch_size=self.hparams.batch_size)
        if self.val_set is None:
            self.setup("predict")
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)
