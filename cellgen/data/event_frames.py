"""Frames for the cell-event models of Phan et al. ("Semi-supervised estimation of event temporal length for cell
event detection", 2019): normalised, optionally downscaled volumes, random clips, and the artificial events (Sec. III D)
on which the event-length network M2 is trained.

Everything here works on one sequence held as a ``(T, H, W)`` float32 volume in [0, 1] (the BCE of Eq. 10 needs
targets in [0, 1]); the paper works at a quarter of the original resolution (Sec. IV A), hence ``downscale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from cellgen.data.base import CellgenDataModule
from cellgen.data.ctc import CTCSequence
from cellgen.data.errors import CellgenInputError

# 6-connectivity in (t, y, x): a pixel is linked to the same pixel in the previous/next frame, so a 3-D component of a
# binary stack is a set of regions that overlap from frame to frame, i.e. one cell trajectory (Sec. III D).
TRAJECTORY_STRUCTURE = ndimage.generate_binary_structure(3, 1)


# --------------------------------------------------------------------------------------------- volumes


@dataclass
class FrameVolume:
    """One sequence as a normalised, possibly downscaled stack.

    Attributes:
        frames: float32 (T, h, w) in [0, 1].
        indices: original frame index of each of the T frames.
        full_shape: (H, W) of the original frames; detections are mapped back to it.
        path: the sequence folder.
    """

    frames: np.ndarray
    indices: list[int]
    full_shape: tuple[int, int]
    path: Path

    @property
    def scale(self) -> tuple[float, float]:
        """(H / h, W / w): how many original pixels one stored pixel spans along y and x."""
        return self.full_shape[0] / self.frames.shape[1], self.full_shape[1] / self.frames.shape[2]

    def to_scaled(self, yx: np.ndarray) -> np.ndarray:
        """Map (..., 2) original (y, x) pixel coordinates to stored-pixel coordinates (pixel centres align)."""
        return (np.asarray(yx, np.float64) + 0.5) / np.asarray(self.scale) - 0.5

    def to_full(self, yx: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_scaled`: stored-pixel (y, x) to original-pixel (y, x)."""
        return (np.asarray(yx, np.float64) + 0.5) * np.asarray(self.scale) - 0.5

    def local_index(self, frame: int) -> int | None:
        """Position in ``frames`` of original frame ``frame`` (None when not loaded)."""
        try:
            return self.indices.index(frame)
        except ValueError:
            return None


def scaled_size(shape: tuple[int, int], downscale: float) -> tuple[int, int]:
    """Size (h, w) of a frame of ``shape`` after multiplying both sides by ``downscale`` (at least 1 px)."""
    if not 0 < downscale <= 1:
        raise CellgenInputError(None, f"downscale must be in (0, 1], got {downscale}", "the paper uses 0.25")
    return max(1, round(shape[0] * downscale)), max(1, round(shape[1] * downscale))


def normalise_stack(stack: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Percentile-clip a whole (T, H, W) stack and scale it to [0, 1] (one range for all frames keeps flicker real)."""
    stack = stack.astype(np.float32, copy=False)
    lo, hi = np.percentile(stack, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((stack - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def load_volume(seq: CTCSequence | str | Path, downscale: float = 1.0, indices: list[int] | None = None) -> FrameVolume:
    """Read (some) frames of a sequence one at a time, area-downscale each and normalise the stack to [0, 1].

    Args:
        seq: the sequence or its raw-frame folder.
        downscale: factor applied to height and width (paper Sec. IV A: 1/4).
        indices: original frame indices to load; all frames when None.

    Returns:
        The volume; ``frames`` is float32 (T, h, w).
    """
    seq = seq if isinstance(seq, CTCSequence) else CTCSequence(seq)
    indices = list(seq.frame_indices if indices is None else indices)
    if not indices:
        raise CellgenInputError(seq.path, "no frames selected")
    full = seq.shape
    size = scaled_size(full, downscale)
    frames = []
    for t in indices:
        image = seq.image(t)
        if image.shape != full:
            raise CellgenInputError(seq.frame_paths[t], f"frame size {image.shape} differs from {full}")
        frames.append(area_downscale(image, size))
    return FrameVolume(normalise_stack(np.stack(frames)), indices, full, seq.path)


def area_downscale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D frame as float32, area-averaged to ``size`` (h, w) (unchanged when it already has that size)."""
    plane = torch.from_numpy(np.asarray(image, np.float32))[None, None]
    if tuple(size) != tuple(plane.shape[-2:]):
        plane = F.interpolate(plane, size=tuple(size), mode="area")
    return plane[0, 0].numpy()


def load_movie(path: str | Path, downscale: float = 1.0) -> FrameVolume:
    """Any movie as a normalised volume: a folder of CTC raw frames ``tTTT.tif`` or one multi-page TIFF stack.

    No annotation is needed or read. A stack is (T, H, W) (a single 2-D page is one frame); frame indices are
    positions in the stack.

    Raises:
        CellgenInputError: missing path, a folder without frames, an unreadable TIFF or a stack that is not 3-D.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return load_volume(CTCSequence(path), downscale)
    if not path.is_file():
        raise CellgenInputError(path, "movie not found", "pass a folder of tTTT.tif frames or a TIFF stack")
    import tifffile

    try:
        stack = np.squeeze(tifffile.imread(path))
    except Exception as exc:  # tifffile/imagecodecs raise many types for damaged files
        raise CellgenInputError(
            path, f"cannot decode TIFF ({type(exc).__name__}: {exc})", "the file is corrupt or truncated"
        ) from exc
    if stack.size == 0:
        raise CellgenInputError(path, "cannot decode TIFF: no image data", "the file is corrupt or truncated")
    stack = stack[None] if stack.ndim == 2 else stack
    if stack.ndim != 3 or not np.issubdtype(stack.dtype, np.number) or 0 in stack.shape:
        raise CellgenInputError(path, f"expected a (T, H, W) grey-level stack, got shape {stack.shape}")
    size = scaled_size(stack.shape[1:], downscale)
    frames = np.stack([area_downscale(plane, size) for plane in stack])
    if not np.isfinite(frames).all():
        raise CellgenInputError(path, "the stack holds NaN or infinite pixels")
    return FrameVolume(normalise_stack(frames), list(range(len(stack))), tuple(stack.shape[1:]), path)


# --------------------------------------------------------------------------------------------- padding in time

# How windows cover the first and last frames of a movie: the MitosisDetector pads at inference and, with
# ``edge_window_fraction``, in training, both through :func:`padded_positions` (docs/RESULTS.md, issue 12).
EDGE_PADDINGS = ("none", "replicate", "reflect")


def padded_positions(length: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Frame index (before + length + after,) of each frame of a movie of ``length`` frames padded in time.

    ``replicate`` repeats the first/last frame; ``reflect`` mirrors without repeating the end frame (frames
    2, 1, 0, 1, 2 ...) and, for a movie shorter than the padding, keeps reflecting back and forth.
    """
    positions = torch.arange(-before, length + after)
    if mode == "replicate" or length == 1:
        return positions.clamp(0, length - 1)
    if mode == "reflect":
        period = 2 * (length - 1)
        positions = positions.remainder(period)
        return torch.where(positions >= length, period - positions, positions)
    raise ValueError(f"edge padding must be one of {EDGE_PADDINGS[1:]}, got {mode!r}")


def pad_in_time(frames: torch.Tensor, before: int, after: int, mode: str) -> torch.Tensor:
    """(T, H, W) -> (before + T + after, H, W), padded as :func:`padded_positions` says (``none``: unchanged)."""
    if mode == "none" or (before == 0 and after == 0):
        return frames
    return frames[padded_positions(frames.shape[0], before, after, mode).to(frames.device)]


# --------------------------------------------------------------------------------------------- augmentation


def dihedral(arrays: list[np.ndarray], rotations: int, flip: bool) -> list[np.ndarray]:
    """Rotate by ``rotations`` x 90 degrees and optionally flip the last two axes of every array identically."""
    out = []
    for array in arrays:
        array = np.rot90(array, rotations, axes=(-2, -1))
        if flip:
            array = array[..., ::-1]
        out.append(np.ascontiguousarray(array))
    return out


def random_dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One of the 8 flips/90-degree rotations, the same for all arrays and frames (180 degrees only if not square)."""
    square = arrays[0].shape[-1] == arrays[0].shape[-2]
    rotations = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    return dihedral(arrays, rotations, bool(rng.integers(2)))


def crop_origin(shape: tuple[int, int], crop: int, rng: np.random.Generator, near: tuple[float, float] | None = None):
    """Top-left (y, x) of a ``crop`` x ``crop`` window inside ``shape``, uniform or containing the point ``near``."""
    limits = (shape[0] - crop, shape[1] - crop)
    if near is None:
        return tuple(int(rng.integers(lim + 1)) for lim in limits)
    origin = []
    for centre, lim in zip(near, limits, strict=True):
        low = int(np.clip(np.floor(centre) - crop + 1, 0, lim))
        high = int(np.clip(np.ceil(centre), 0, lim))
        origin.append(int(rng.integers(low, max(low, high) + 1)))
    return tuple(origin)


class EpochSampler(Sampler[int]):
    """Indices ``epoch * n ... epoch * n + n - 1``: datasets seeded by index draw fresh, reproducible samples.

    Lightning calls ``set_epoch`` on the sampler before every epoch; the sampler runs in the main process.
    """

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples

    def __iter__(self):
        return iter(range(self.epoch * self.samples, (self.epoch + 1) * self.samples))


class ClipDataset(Dataset):
    """Random clips (1, L, c, c) cut from whole volumes: random sequence, start frame, crop and dihedral transform.

    Args:
        volumes: float32 (T, H, W) stacks.
        clip_length: frames per clip L (at most the shortest volume's T).
        crop_size: crop side c; None keeps the whole frame (all volumes must then share one size).
        samples: clips per epoch (the data are resampled, so an epoch is a budget, not a pass); any integer
            index is valid and names one reproducible clip.
        augment: flips and 90-degree rotations, identical across the clip.
        seed: base seed; worker and index are mixed in, so runs repeat exactly.
    """

    def __init__(
        self,
        volumes: list[np.ndarray],
        clip_length: int,
        crop_size: int | None,
        samples: int,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        self.volumes = volumes
        self.clip_length = clip_length
        self.crop_size = crop_size
        self.samples = samples
        self.augment = augment
        self.seed = seed
        weights = np.array([v.shape[0] - clip_length + 1 for v in volumes], np.float64)
        if (weights < 1).any():
            raise CellgenInputError(None, f"a clip of {clip_length} frames is longer than a sequence")
        self.weights = weights / weights.sum()
        check_crop(volumes, crop_size)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        volume = self.volumes[int(rng.choice(len(self.volumes), p=self.weights))]
        t0 = int(rng.integers(volume.shape[0] - self.clip_length + 1))
        clip = volume[t0 : t0 + self.clip_length]
        if self.crop_size is not None:
            y, x = crop_origin(clip.shape[1:], self.crop_size, rng)
            clip = clip[:, y : y + self.crop_size, x : x + self.crop_size]
        if self.augment:
            (clip,) = random_dihedral([clip], rng)
        return torch.from_numpy(np.ascontiguousarray(clip))[None]


def check_crop(volumes: list[np.ndarray], crop_size: int | None) -> None:
    """Refuse crops larger than a frame, and whole-frame batches of differently sized sequences."""
    shapes = {v.shape[1:] for v in volumes}
    if crop_size is None:
        if len(shapes) > 1:
            raise CellgenInputError(None, f"sequences have different frame sizes {sorted(shapes)}", "set crop_size")
        return
    small = min(min(s) for s in shapes)
    if crop_size > small:
        raise CellgenInputError(None, f"crop_size {crop_size} exceeds a (downscaled) frame side of {small}")


# --------------------------------------------------------------------------------------------- artificial events


def trajectory_lengths(binary: np.ndarray) -> np.ndarray:
    """Temporal length (frames) of every 3-D connected component of a binary (T, H, W) stack."""
    labels, count = ndimage.label(binary, structure=TRAJECTORY_STRUCTURE)
    if count == 0:
        return np.zeros(0, np.int64)
    return np.array([sl[0].stop - sl[0].start for sl in ndimage.find_objects(labels)], np.int64)


def remove_trajectory_parts(
    normal: np.ndarray,
    rng: np.random.Generator,
    max_gap: int = 10,
    fraction: float = 0.5,
    min_length: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Make artificial events from a normal-cell stack (paper Sec. III D, Eq. 12).

    Cells are linked over time as 3-D connected components of the binary normal-cell maps y. For a random
    ``fraction`` of the trajectories spanning at least ``min_length`` frames, a run of 1..``max_gap`` frames strictly
    inside the trajectory is removed: the cell vanishes and reappears, as a dividing cell vanishes from the
    normal-cell map while it rounds up. The removed part is the target e_t.

    Args:
        normal: bool (T, H, W) normal-cell maps.
        rng: random generator.
        max_gap: longest removed run, in frames.
        fraction: probability that a trajectory gets a gap.
        min_length: shortest trajectory that can get a gap (one frame must stay on each side).

    Returns:
        (inputs, targets), both bool (T, H, W); ``inputs | targets == normal`` and they are disjoint.
    """
    normal = np.asarray(normal, bool)
    labels, count = ndimage.label(normal, structure=TRAJECTORY_STRUCTURE)
    targets = np.zeros_like(normal)
    for label, slices in enumerate(ndimage.find_objects(labels), start=1):
        t0, t1 = slices[0].start, slices[0].stop
        if t1 - t0 < max(min_length, 3) or rng.random() >= fraction:
            continue
        gap = int(rng.integers(1, min(max_gap, t1 - t0 - 2) + 1))
        start = int(rng.integers(t0 + 1, t1 - gap))  # at least one frame kept before and after the gap
        window = (slice(start, start + gap), slices[1], slices[2])
        targets[window] |= labels[window] == label
    return normal & ~targets, targets


# --------------------------------------------------------------------------------------------- data module


class EventFramesDataModule(CellgenDataModule):
    """Unlabelled frame clips for the EventLengthEstimator (M1 learns from frames, M2 from M1's maps).

    Training batches are clips (B, 1, L, c, c); M1 treats their frames independently, M2 needs them in order.
    Prediction yields one whole sequence (1, 1, T, h, w) per step. No annotation is read: the estimator is
    unsupervised (Sec. III C-E).

    Args:
        sequences: raw-frame folders; empty means the embedded demo data.
        demo_flavour: demo flavour to fall back to.
        downscale: frame scale factor (paper Sec. IV A: 1/4).
        frames: use only the first this many frames of each sequence (None: all).
        clip_length: frames per training clip; longer than the longest expected event.
        crop_size: side of the square training crops (None: whole frames).
        batch_size: clips per batch.
        samples_per_epoch: clips per epoch.
        augment: flips and 90-degree rotations.
        num_workers: DataLoader workers.
        seed: sampling seed.
    """

    def __init__(
        self,
        sequences: list[str] | None = None,
        demo_flavour: str = "fluo",
        downscale: float = 1.0,
        frames: int | None = None,
        clip_length: int = 16,
        crop_size: int | None = 96,
        batch_size: int = 4,
        samples_per_epoch: int = 256,
        augment: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(sequences, demo_flavour)
        self.save_hyperparameters()
        self._volumes: list[FrameVolume] | None = None
        self.train_set: ClipDataset | None = None

    def volumes(self) -> list[FrameVolume]:
        """The (downscaled, normalised) sequences, loaded once."""
        if self._volumes is None:
            result = []
            for seq in self.resolve_sequences():
                indices = seq.frame_indices[: self.hparams.frames] if self.hparams.frames else None
                result.append(load_volume(seq, self.hparams.downscale, indices))
            self._volumes = result
        return self._volumes

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = ClipDataset(
                [v.frames for v in self.volumes()],
                self.hparams.clip_length,
                self.hparams.crop_size,
                self.hparams.samples_per_epoch,
                self.hparams.augment,
                self.hparams.seed,
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            sampler=EpochSampler(len(self.train_set)),
            num_workers=self.hparams.num_workers,
            drop_last=False,
            persistent_workers=False,
        )

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_WholeSequences(self.volumes()), batch_size=None)


class _WholeSequences(Dataset):
    """One item per sequence: ``{"frames": (1, 1, T, h, w), "index": i}``."""

    def __init__(self, volumes: list[FrameVolume]) -> None:
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, index: int) -> dict:
        return {"frames": torch.from_numpy(self.volumes[index].frames)[None, None], "index": index}
