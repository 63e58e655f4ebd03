"""Patch videos for the video diffusion models.

Paper: "Neural Cell Video Synthesis via Optical-Flow Diffusion", Sec. 4.2-4.3: sequences are cut into
128x128 patches with 25% overlap, a video starts at chosen frames (optionally skipping frames), each
sample keeps its first 10 frames, every channel is normalised to [0, 1], and horizontal/vertical flips
(p = 0.5) are applied identically to every frame of a video.

The paper min-max normalises each video on its own (``intensity="video"``). On small patches this stretches the
background's camera and compression noise of a cell-free patch to full contrast, and a patch's brightness then says
nothing about its content. ``intensity="sequence"`` maps one sequence's intensities to [0, 1] with a single affine
map from robust percentiles of the frames used (the whole frame, so train and test regions share it).

Patches are extracted once and cached as ``.npz`` keyed by the sequence and the extraction settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from einops import rearrange
from torch.utils.data import DataLoader, Dataset

from cellgen.data.atomic import atomic_file
from cellgen.data.base import SampleIndexDataset, TrainValDataModule
from cellgen.data.cache import folder_fingerprint, resolve_cache_dir
from cellgen.data.ctc import CTCSequence
from cellgen.data.errors import CellgenInputError

INTENSITY_SCALINGS = ("video", "sequence")
SEQUENCE_PERCENTILES = (0.5, 99.9)  # ours: ignores dead pixels below and keeps halos up to saturation


@dataclass(frozen=True)
class PatchVideoSpec:
    """How patch videos are cut (defaults: paper Sec. 4.2)."""

    patch_size: int = 128
    overlap: float = 0.25
    num_frames: int = 10
    start_frames: tuple[int, ...] = (0,)
    frame_skip: int = 1
    region: tuple[float, float, float, float] | None = None
    intensity: str = "video"

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_SCALINGS:
            raise ValueError(f"intensity must be one of {INTENSITY_SCALINGS}, got {self.intensity!r}")

    def key(self) -> str:
        fields = asdict(self)
        if fields["region"] is None:
            del fields["region"]  # caches written before regions existed stay valid
        if fields["intensity"] == "video":
            del fields["intensity"]  # likewise for the paper's scaling
        return hashlib.sha1(repr(sorted(fields.items())).encode()).hexdigest()[:10]

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Pixel box ``(y0, y1, x0, x1)`` of ``region`` (fractions of the frame) in a ``height x width`` frame."""
        if self.region is None:
            return 0, height, 0, width
        y0, y1, x0, x1 = self.region
        if not (0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1):
            raise ValueError(f"region must be fractions (y0, y1, x0, x1) with 0 <= y0 < y1 <= 1, got {self.region}")
        return round(y0 * height), round(y1 * height), round(x0 * width), round(x1 * width)


def patch_origins(length: int, patch: int, overlap: float) -> list[int]:
    """Top-left coordinates along one axis: stride ``patch * (1 - overlap)``, last patch flush with the edge."""
    if length < patch:
        return []
    stride = max(1, int(round(patch * (1.0 - overlap))))
    origins = list(range(0, length - patch + 1, stride))
    if origins[-1] != length - patch:
        origins.append(length - patch)
    return origins


def normalise_per_channel(videos: np.ndarray) -> np.ndarray:
    """Min-max each channel of each video to [0, 1] (paper Sec. 4.3). videos: (N, C, T, H, W)."""
    videos = videos.astype(np.float32)
    lo = videos.min(axis=(2, 3, 4), keepdims=True)
    hi = videos.max(axis=(2, 3, 4), keepdims=True)
    return (videos - lo) / np.maximum(hi - lo, 1e-8)


def normalise_per_sequence(videos: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Map videos (N, C, T, H, W) to [0, 1] with one affine map: robust percentiles of ``frames``, clipped."""
    lo, hi = np.percentile(frames, SEQUENCE_PERCENTILES)
    scaled = (videos.astype(np.float32) - float(lo)) / max(float(hi - lo), 1e-8)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def extract_patch_videos(seq: CTCSequence, spec: PatchVideoSpec) -> np.ndarray:
    """Cut one sequence into patch videos, reading only the frames that are used.

    Returns:
        float32 array (N, 1, T, P, P) in [0, 1], one video per (start frame, patch position).
    """
    try:
        top, bottom, left, right = spec.crop_box(*seq.shape)
    except ValueError as exc:
        raise CellgenInputError(seq.path, str(exc), "e.g. region [0, 1, 0, 0.75]") from exc
    height, width = bottom - top, right - left
    ys, xs = (
        [top + y for y in patch_origins(height, spec.patch_size, spec.overlap)],
        [left + x for x in patch_origins(width, spec.patch_size, spec.overlap)],
    )
    if not ys or not xs:
        raise CellgenInputError(
            seq.path,
            f"frames (or their region) of {height}x{width} are smaller than the {spec.patch_size}px patch",
            "lower patch_size or widen region",
        )
    indices = seq.frame_indices
    span = (spec.num_frames - 1) * spec.frame_skip
    videos, used = [], []
    for start in spec.start_frames:
        if start < 0 or start + span >= len(indices):
            raise CellgenInputError(
                seq.path,
                f"a {spec.num_frames}-frame video with skip {spec.frame_skip} starting at frame {start} "
                f"needs {start + span + 1} frames, the sequence has {len(indices)}",
                "lower num_frames/frame_skip or choose earlier start_frames",
            )
        frames = np.stack([seq.image(indices[start + k * spec.frame_skip]) for k in range(spec.num_frames)])
        frames = frames.astype(np.float32)
        used.append(frames)
        for y in ys:
            for x in xs:
                videos.append(frames[:, y : y + spec.patch_size, x : x + spec.patch_size])
    if spec.intensity == "sequence":
        return normalise_per_sequence(np.stack(videos)[:, None], np.concatenate(used))
    return normalise_per_channel(np.stack(videos)[:, None])


def load_patch_videos(
    seq: CTCSequence, spec: PatchVideoSpec, cache_dir: str | Path | None
) -> tuple[np.ndarray, Path | None]:
    """Patch videos of a sequence, from the ``.npz`` cache when present (written atomically otherwise)."""
    cache_dir = resolve_cache_dir(cache_dir, "patches")
    if cache_dir is None:
        return extract_patch_videos(seq, spec), None
    tag = folder_fingerprint(seq.path)  # content, not path: a repaired frame makes a new cache
    path = cache_dir / f"patches-{seq.root.name}-{seq.name}-{tag}-{spec.key()}.npz"
    if path.is_file():
        try:
            with np.load(path) as cached:
                return cached["videos"], path
        except Exception:
            path.unlink(missing_ok=True)  # a damaged cache is rebuilt, not trusted
    videos = extract_patch_videos(seq, spec)
    with atomic_file(path) as tmp:
        np.savez(tmp, videos=videos)
    return videos, path


class PatchVideoDataset(Dataset):
    """Patch videos (N, C, T, H, W) with flips replayed identically on every frame and channel.

    Args:
        videos: float32 array (N, C, T, H, W).
        flips: apply horizontal and vertical flips with p = 0.5 (paper Sec. 4.2).
        flow_channels: indices of (U, V) channels, if any; a horizontal flip negates U and a vertical
            flip negates V so that a flipped video's flow stays the flow of the flipped video.
    """

    def __init__(
        self,
        videos: np.ndarray,
        flips: bool = True,
        flow_channels: tuple[int, int] | None = None,
    ) -> None:
        self.videos = videos
        self.flow_channels = flow_channels
        self.transform = A.ReplayCompose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]) if flips else None

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> torch.Tensor:
        video = self.videos[index]  # (C, T, H, W)
        if self.transform is None:
            return torch.from_numpy(np.ascontiguousarray(video))
        channels = video.shape[0]
        # Every (channel, frame) plane becomes one image channel, so one transform call applies the
        # same flips to all of them; the replay record tells which flips happened (for the flow signs).
        planes = rearrange(video, "c t h w -> h w (c t)")
        result = self.transform(image=np.ascontiguousarray(planes))
        out = rearrange(result["image"], "h w (c t) -> c t h w", c=channels).copy()
        if self.flow_channels is not None:
            applied = {t["__class_fullname__"].split(".")[-1] for t in result["replay"]["transforms"] if t["applied"]}
            u, v = self.flow_channels
            # Flow channels hold [0, 1]-normalised values; negation about the midpoint is 1 - x.
            if "HorizontalFlip" in applied:
                out[u] = 1.0 - out[u]
            if "VerticalFlip" in applied:
                out[v] = 1.0 - out[v]
        return torch.from_numpy(out)


class PatchVideoDataModule(TrainValDataModule):
    """Patch videos of one or more CTC sequences (defaults: paper Sec. 4.2-4.3; demo data if none given).

    Args:
        sequences: raw-frame folders (``.../02``); empty means the embedded demo data.
        demo_flavour: which demo flavour to fall back to (``phc`` is phase-contrast-like, as in the paper).
        patch_size: patch height and width (paper: 128).
        overlap: overlap of neighbouring patches (paper: 25%).
        num_frames: frames per video (paper: first 10).
        start_frames: frames at which videos start.
        frame_skip: take every k-th frame.
        batch_size: videos per batch.
        num_workers: DataLoader workers.
        val_fraction: fraction of videos held out for validation (seeded split).
        flips: random flips as augmentation.
        cache_dir: where patch caches go (auto: ``$CELLGEN_CACHE/patches``); None disables caching.
        split_seed: seed of the train/val split.
        num_predict: videos ``cellgen predict`` generates; sample ``i`` has its own seed, so the result does not
            depend on the batch size or the number of devices.
        region: ``(y0, y1, x0, x1)`` fractions of the frame that patches come from (None: the whole frame); a
            model trained on one region can be tested on the rest (disjoint pixels, e.g. ``[0, 1, 0, 0.75]`` for
            training and ``[0, 1, 0.75, 1]`` for the real test set of ``cellgen evaluate video``).
    """

    flow_channels: tuple[int, int] | None = None

    def __init__(
        self,
        sequences: list[str] | None = None,
        demo_flavour: str = "phc",
        patch_size: int = 128,
        overlap: float = 0.25,
        num_frames: int = 10,
        start_frames: list[int] = [0],  # noqa: B006
        frame_skip: int = 1,
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        flips: bool = True,
        cache_dir: str | None = "auto",
        split_seed: int = 0,
        num_predict: int = 16,
        region: tuple[float, float, float, float] | None = None,
        intensity: str = "video",
    ) -> None:
        super().__init__(sequences, demo_flavour)
        self.save_hyperparameters()
        region = tuple(float(v) for v in region) if region is not None else None
        try:
            self.spec = PatchVideoSpec(
                patch_size, overlap, num_frames, tuple(start_frames), frame_skip, region, intensity
            )
        except ValueError as exc:
            raise CellgenInputError(None, str(exc), "set data.init_args.intensity to video or sequence") from exc
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def load_videos(self) -> np.ndarray:
        """All patch videos (N, C, T, P, P); subclasses add channels (e.g. optical flow)."""
        cache = self.hparams.cache_dir or None
        return np.concatenate([load_patch_videos(seq, self.spec, cache)[0] for seq in self.resolve_sequences()])

    def prepare_data(self) -> None:
        super().prepare_data()
        self.load_videos()  # fills the cache once, before DDP ranks read it

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None or stage == "predict":
            return  # predict draws from noise: it needs sample indices, not data
        videos = self.load_videos()
        n_val = int(round(len(videos) * self.hparams.val_fraction)) if len(videos) > 1 else 0
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        order = torch.randperm(len(videos), generator=generator).numpy()
        val_idx, train_idx = order[:n_val], order[n_val:]
        self.train_set = PatchVideoDataset(videos[train_idx], self.hparams.flips, self.flow_channels)
        self.val_set = PatchVideoDataset(videos[val_idx] if n_val else videos[:1], False, self.flow_channels)

    def predict_dataloader(self) -> DataLoader:
        """Global sample indices 0..num_predict-1 (B,); Lightning's sampler gives each DDP rank its own share."""
        return DataLoader(SampleIndexDataset(self.hparams.num_predict), batch_size=self.hparams.batch_size)
