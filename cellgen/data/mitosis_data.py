"""Labelled windows for the MitosisDetector (Phan et al. 2019, Sec. III F-G).

A mitosis is one point (t, y, x): t is the first frame of the daughters, (y, x) where the division happened. Points
come from the lineage (``man_track.txt`` via :meth:`CTCSequence.divisions`), from a ``t,y,x[,score]`` CSV, or from a
``x y frame id`` text file with ``%`` header lines (the HeLa ``02_GT/mitoses.txt``). The label volume marks each
point and dilates it three times with a 3x3x3 cube (Sec. III G), i.e. a 7x7x7 block in (t, y, x) at the working
resolution. Only the first N annotated frames are used for training (N >= k, the window length); the rest of the
sequence is held out for testing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from einops import rearrange
from scipy import ndimage
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from cellgen.data.base import CellgenDataModule
from cellgen.data.ctc import CTCSequence, read_tiff
from cellgen.data.errors import CellgenInputError
from cellgen.data.event_frames import (
    EDGE_PADDINGS,
    EpochSampler,
    FrameVolume,
    check_crop,
    crop_origin,
    load_volume,
    padded_positions,
    random_dihedral,
)
from cellgen.data.points import division_points, read_mitosis_points


def label_volume(points: np.ndarray, shape: tuple[int, int, int], dilations: int = 3) -> np.ndarray:
    """Binary mitosis labels (T, H, W): one voxel per point, dilated ``dilations`` times by a 3x3x3 cube.

    Args:
        points: (N, 3) (t, y, x) in volume coordinates (frame position, stored pixels); points outside the volume
            in t are ignored, points outside in (y, x) are clipped to the border.
        shape: (T, H, W).
        dilations: paper Sec. III G: 3.

    Returns:
        float32 (T, H, W) in {0, 1}.
    """
    volume = np.zeros(shape, bool)
    for t, y, x in np.asarray(points, np.float64).reshape(-1, 3):
        ti = int(round(t))
        if 0 <= ti < shape[0]:
            volume[ti, int(np.clip(round(y), 0, shape[1] - 1)), int(np.clip(round(x), 0, shape[2] - 1))] = True
    if dilations > 0 and volume.any():
        volume = ndimage.binary_dilation(volume, np.ones((3, 3, 3), bool), iterations=dilations)
    return volume.astype(np.float32)


def heatmap_volume(
    points: np.ndarray, shape: tuple[int, int, int], sigma: float = 2.0, sigma_t: float = 1.0, clip: bool = True
) -> np.ndarray:
    """Gaussian centre targets (T, H, W): the maximum over events of a (t, y, x) Gaussian, exactly 1 at each event.

    The Gaussian is centred on the event's rounded voxel, so the centre is the one voxel the focal loss counts as
    positive (CenterNet); ``sigma`` is in working pixels, ``sigma_t`` in frames. With ``clip`` (a whole movie),
    points outside the volume in t are ignored and points outside in (y, x) are clipped to the border; without it
    (a window cut from a movie), every point draws the part of its Gaussian that falls inside.
    """
    volume = np.zeros(shape, np.float32)
    if sigma <= 0 or sigma_t <= 0:
        raise ValueError(f"sigma and sigma_t must be positive, got {sigma}, {sigma_t}")
    rt, rs = int(np.ceil(3 * sigma_t)), int(np.ceil(3 * sigma))
    for t, y, x in np.asarray(points, np.float64).reshape(-1, 3):
        ti, yi, xi = int(round(t)), int(round(y)), int(round(x))
        if clip:
            if not 0 <= ti < shape[0]:
                continue
            yi, xi = int(np.clip(yi, 0, shape[1] - 1)), int(np.clip(xi, 0, shape[2] - 1))
        ts = np.arange(max(0, ti - rt), min(shape[0], ti + rt + 1))
        ys = np.arange(max(0, yi - rs), min(shape[1], yi + rs + 1))
        xs = np.arange(max(0, xi - rs), min(shape[2], xi + rs + 1))
        if not (len(ts) and len(ys) and len(xs)):
            continue
        g = (
            np.exp(-((ts - ti) ** 2) / (2 * sigma_t**2))[:, None, None]
            * np.exp(-((ys - yi) ** 2) / (2 * sigma**2))[None, :, None]
            * np.exp(-((xs - xi) ** 2) / (2 * sigma**2))[None, None, :]
        )
        block = volume[ts[0] : ts[-1] + 1, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        np.maximum(block, g.astype(np.float32), out=block)
    return volume


TARGETS = ("blob", "heatmap")


# --------------------------------------------------------------------------------------------- sequences


@dataclass
class MitosisSequence:
    """One sequence split for training and testing.

    Attributes:
        volume: all frames, normalised and downscaled; ``volume.frames`` is (T, h, w).
        points: (N, 3) mitosis points (t, y, x) with original frame indices and pixels, restricted to loaded frames.
        train_frames: the first ``train_frames`` frames are the annotated training part, the rest the test part.
        cell_diameter: median equivalent diameter of the cells (original pixels) from the sequence's instance masks;
            None without masks. A detector stores it so that a movie at another magnification can be rescaled.
    """

    volume: FrameVolume
    points: np.ndarray
    train_frames: int
    cell_diameter: float | None = None

    def local_points(self) -> np.ndarray:
        """Points (N, 3) in volume coordinates: frame position and stored pixels."""
        if not len(self.points):
            return np.zeros((0, 3))
        t = np.array([self.volume.local_index(int(round(v))) for v in self.points[:, 0]], np.float64)
        return np.column_stack([t, self.volume.to_scaled(self.points[:, 1:3])])

    @property
    def first_test_frame(self) -> int | None:
        """Original index of the first held-out frame (None when every frame is used for training)."""
        idx = self.volume.indices
        return idx[self.train_frames] if self.train_frames < len(idx) else None

    def split_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(training points, test points), both (N, 3) (t, y, x) in original frames and pixels."""
        first = self.first_test_frame
        if first is None:
            return self.points, self.points[:0]
        train = self.points[:, 0] < first
        return self.points[train], self.points[~train]


def load_mitosis_sequence(
    path: str | Path, points_file: str | None, train_frames: int, downscale: float
) -> MitosisSequence:
    """Frames and mitosis points of one sequence; points from ``points_file`` or else from the lineage."""
    seq = CTCSequence(path)
    volume = load_volume(seq, downscale)
    points = read_mitosis_points(points_file) if points_file else division_points(seq)
    if len(points):
        points = points[np.isin(np.round(points[:, 0]).astype(int), volume.indices)]
    if not 1 <= train_frames <= len(volume.indices):
        raise CellgenInputError(seq.path, f"train_frames {train_frames} is outside 1..{len(volume.indices)}")
    return MitosisSequence(volume, points, train_frames, median_cell_diameter(seq, volume.indices[:train_frames]))


def median_cell_diameter(seq: CTCSequence, frames: list[int], samples: int = 5) -> float | None:
    """Median equivalent diameter 2 sqrt(area / pi) of the cells in up to ``samples`` annotated ``frames``.

    Uses the best instance masks available (SEG, then ST, then TRA); None when none of the frames has one. TRA
    markers smaller than full masks give a smaller diameter, so prefer sequences with SEG or ST masks.
    """
    paths = seq.instance_mask_paths()
    annotated = [t for t in frames if t in paths]
    if not annotated:
        return None
    chosen = [annotated[i] for i in np.unique(np.linspace(0, len(annotated) - 1, samples).round().astype(int))]
    diameters: list[float] = []
    for t in chosen:
        _, areas = np.unique(read_tiff(paths[t]), return_counts=True)
        diameters += list(2 * np.sqrt(areas[1:] / np.pi))  # label 0 (background) sorts first
    return float(np.median(diameters)) if diameters else None


# --------------------------------------------------------------------------------------------- training windows


def intensity_augmentation() -> A.Compose:
    """What changes between acquisitions and must not change a detection: brightness/contrast, gamma, sensor noise.

    Applied to a whole window as one multi-channel image, so all k frames get the same brightness, contrast and
    gamma (one acquisition) and independent noise. Frames are float32 in [0, 1] and stay there.
    """
    return A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
            A.RandomGamma(gamma_limit=(80, 125), p=0.3),
            A.GaussNoise(std_range=(0.005, 0.03), p=0.3),
        ]
    )


def check_window_options(scale_jitter: float, edge_window_fraction: float, crop_size: int | None) -> None:
    """Refuse training-window options that cannot be honoured (one line each, as :class:`CellgenInputError`)."""
    if scale_jitter < 0:
        raise CellgenInputError(None, f"scale_jitter must be >= 0, got {scale_jitter}", "0 turns it off")
    if not 0 <= edge_window_fraction <= 1:
        raise CellgenInputError(
            None, f"edge_window_fraction must be in [0, 1], got {edge_window_fraction}", "a share of the windows"
        )
    if scale_jitter > 0 and crop_size is None:
        raise CellgenInputError(None, "scale_jitter needs a crop_size", "windows are rescaled before cropping")


class MitosisWindowDataset(Dataset):
    """Random training windows ``(frames, labels)``, each (1, k, c, c), from the first N frames of each sequence.

    With probability ``event_fraction`` a window is placed so that it contains a training mitosis (a cheap answer to
    the class imbalance: a random 96 px crop rarely holds one); otherwise it is uniform. Flips and 90-degree
    rotations are identical across the window and its labels.

    Two options prepare a detector for movies it has never seen (our additions, off by default; issue 12): with
    ``scale_jitter`` a window is rescaled before cropping, frames and targets alike, so cells of other sizes look
    familiar; with probability ``edge_window_fraction`` a window overlaps the first or last frame and its missing
    frames are filled as inference fills them (:func:`~cellgen.data.event_frames.padded_positions`), so the model
    has seen padded windows; padded frames hold no event (target 0). At 0 they draw no random numbers: the windows
    are those of a dataset without them.

    Args:
        frames: per sequence, float32 (N, H, W) training frames.
        labels: per sequence, float32 (N, H, W) dilated labels or heat maps.
        points: per sequence, (M, 3) training points in volume coordinates (for event-centred windows).
        window: frames per window k.
        crop_size: square crop side (None: whole frames).
        samples: windows per epoch.
        event_fraction: share of windows that contain a mitosis.
        augment: dihedral augmentation.
        seed: base seed; each index names one reproducible window.
        intensity_augment: also :func:`intensity_augmentation` (frames only; labels never change).
        scale_jitter: s >= 0: each window is rescaled by a log-uniform factor in [1 / (1 + s), 1 + s] (bilinear,
            antialiased when shrinking): a region of about c / factor pixels becomes the c x c crop.
        edge_window_fraction: share of windows that hold 1 to k - 1 padded frames at the start or end.
        edge_padding: ``replicate`` or ``reflect``, as the detector pads at inference.
        heatmap_sigma: (sigma, sigma_t) when ``labels`` are heat maps: a rescaled window's heat map is drawn anew
            around the rescaled events (sigma scaled with the frames), so each centre is still exactly 1; None: the
            labels are blobs and are rescaled by nearest neighbour.
    """

    def __init__(
        self,
        frames: list[np.ndarray],
        labels: list[np.ndarray],
        points: list[np.ndarray],
        window: int,
        crop_size: int | None,
        samples: int,
        event_fraction: float = 0.5,
        augment: bool = True,
        seed: int = 0,
        intensity_augment: bool = False,
        scale_jitter: float = 0.0,
        edge_window_fraction: float = 0.0,
        edge_padding: str = "replicate",
        heatmap_sigma: tuple[float, float] | None = None,
    ) -> None:
        check_crop(frames, crop_size)
        check_window_options(scale_jitter, edge_window_fraction, crop_size)
        if edge_window_fraction > 0 and edge_padding not in EDGE_PADDINGS[1:]:
            raise CellgenInputError(
                None,
                f"edge_window_fraction needs padded inference windows, but edge_padding is {edge_padding!r}",
                "use edge_padding replicate or reflect, or edge_window_fraction 0",
            )
        self.frames, self.labels, self.window = frames, labels, window
        self.points = [p[(p[:, 0] >= 0) & (p[:, 0] < len(f))] for p, f in zip(points, frames, strict=True)]
        self.crop_size, self.samples = crop_size, samples
        self.event_fraction, self.augment, self.seed = event_fraction, augment, seed
        weights = np.array([len(f) - window + 1 for f in frames], np.float64)
        self.weights = weights / weights.sum()
        self.intensity = intensity_augmentation() if intensity_augment else None
        self.scale_jitter, self.edge_window_fraction = scale_jitter, edge_window_fraction
        self.edge_padding, self.heatmap_sigma = edge_padding, heatmap_sigma

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        pool = [i for i, p in enumerate(self.points) if len(p)]
        near = None
        if pool and rng.random() < self.event_fraction:
            s = pool[int(rng.integers(len(pool)))]
            near = self.points[s][int(rng.integers(len(self.points[s])))]
        else:
            s = int(rng.choice(len(self.frames), p=self.weights))
        frames, labels, k = self.frames[s], self.labels[s], self.window
        # k = 1 has no padded windows (inference pads k - 1 frames); a fraction of 0 draws nothing
        edge = k > 1 and self.edge_window_fraction > 0 and rng.random() < self.edge_window_fraction
        if edge:
            t0 = self._edge_start(len(frames), near, rng)
            positions = padded_positions(len(frames), k - 1, k - 1, self.edge_padding)[t0 + k - 1 : t0 + 2 * k - 1]
            clip, target = frames[positions.numpy()], labels[positions.numpy()]
        elif near is None:
            t0 = int(rng.integers(len(frames) - k + 1))
            clip, target = frames[t0 : t0 + k], labels[t0 : t0 + k]
        else:
            t = int(round(near[0]))
            t0 = int(rng.integers(max(0, t - k + 1), min(t, len(frames) - k) + 1))
            clip, target = frames[t0 : t0 + k], labels[t0 : t0 + k]
        if self.crop_size is not None and self.scale_jitter > 0:
            clip, target = self._rescaled_crop(clip, target, self.points[s] - (t0, 0, 0), rng, near)
        elif self.crop_size is not None:
            y, x = crop_origin(clip.shape[1:], self.crop_size, rng, None if near is None else tuple(near[1:]))
            clip = clip[:, y : y + self.crop_size, x : x + self.crop_size]
            target = target[:, y : y + self.crop_size, x : x + self.crop_size]
        if edge:  # a copy (fancy indexing or drawn anew): the labels stay untouched
            frame = t0 + np.arange(k)
            target[(frame < 0) | (frame >= len(frames))] = 0.0  # padded frames hold no event
        if self.augment:
            clip, target = random_dihedral([clip, target], rng)
        if self.intensity is not None:
            self.intensity.set_random_seed(int(rng.integers(2**31)))  # reproducible per index, as the crop
            image = self.intensity(image=np.ascontiguousarray(rearrange(clip, "k h w -> h w k")))["image"]
            clip = rearrange(image, "h w k -> k h w")
        return torch.from_numpy(np.ascontiguousarray(clip))[None], torch.from_numpy(np.ascontiguousarray(target))[None]

    def _edge_start(self, length: int, near: np.ndarray | None, rng: np.random.Generator) -> int:
        """First frame (negative: before the movie) of a window with 1 to k - 1 padded frames at either end.

        These are the padded windows inference can use (at stride 1). A window meant to hold ``near`` holds it
        when one of them can; otherwise it is any of them (``near`` then only places the crop).
        """
        k = self.window
        starts = np.concatenate([np.arange(1 - k, 0), np.arange(length - k + 1, length)])
        if near is not None:
            t = int(round(near[0]))
            holding = starts[(starts <= t) & (starts > t - k)]
            starts = holding if len(holding) else starts
        return int(rng.choice(starts))

    def _rescaled_crop(
        self,
        clip: np.ndarray,
        target: np.ndarray,
        points: np.ndarray,
        rng: np.random.Generator,
        near: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A (k, c, c) crop of a (k, H, W) window and its target, rescaled by a random factor (``scale_jitter``).

        A square region of ``side`` = c / factor pixels (whole pixels, at most the frame) is resized to c x c;
        ``points`` (M, 3) are the sequence's events with t relative to the window, mapped like the pixel centres.
        """
        crop, bound = self.crop_size, np.log1p(self.scale_jitter)
        factor = float(np.exp(rng.uniform(-bound, bound)))
        side = int(np.clip(round(crop / factor), 1, min(clip.shape[1:])))
        y, x = crop_origin(clip.shape[1:], side, rng, None if near is None else tuple(near[1:]))
        zoom = crop / side  # the factor actually applied
        region = torch.from_numpy(np.ascontiguousarray(clip[:, y : y + side, x : x + side]))[None]
        clip = F.interpolate(region, size=(crop, crop), mode="bilinear", align_corners=False, antialias=side > crop)
        if self.heatmap_sigma is None:
            region = torch.from_numpy(np.ascontiguousarray(target[:, y : y + side, x : x + side]))[None]
            target = F.interpolate(region, size=(crop, crop), mode="nearest-exact")[0].numpy()
        else:
            yx = (points[:, 1:3] - (y, x) + 0.5) * zoom - 0.5  # align_corners=False: pixel centres map this way
            sigma, sigma_t = self.heatmap_sigma
            shape = (len(clip[0]), crop, crop)
            target = heatmap_volume(np.column_stack([points[:, 0], yx]), shape, sigma * zoom, sigma_t, clip=False)
        return clip[0].numpy(), target


class MitosisDataModule(CellgenDataModule):
    """Mitosis training windows from the first N frames; whole sequences for prediction.

    Training batches are ``(frames, labels)``, each (B, 1, k, c, c). Prediction yields one dict per sequence with
    the whole volume ``frames`` (T, h, w) and what is needed to map detections back and score them.

    Args:
        sequences: raw-frame folders; empty means the embedded demo data.
        demo_flavour: demo flavour to fall back to.
        points: per sequence, a points file (CSV ``t,y,x`` or ``x y frame id``) or null for the lineage.
        train_frames: annotated frames N used for training (paper Sec. IV: 18); the rest is the test part.
        window: frames per window k; None takes the model's ``sequence_length`` (paper: the estimated k).
        downscale: frame scale factor (paper Sec. IV A: 1/4).
        crop_size: square crop side in downscaled pixels (None: whole frames).
        batch_size: windows per batch.
        samples_per_epoch: windows per epoch.
        event_fraction: share of windows placed on a training mitosis.
        dilations: 3x3x3 dilations of each label point (paper Sec. III G: 3).
        augment: flips and 90-degree rotations.
        num_workers: DataLoader workers.
        seed: sampling seed.
        intensity_augment: brightness/contrast, gamma and noise (albumentations; our addition, off by default).
        target: ``blob`` (dilated points, Sec. III G) or ``heatmap`` (Gaussian centres); None takes the model's
            ``head``.
        sigma: heat-map Gaussian width in working pixels (about a quarter of a cell diameter).
        sigma_t: heat-map Gaussian width in frames.
        scale_jitter: s >= 0: rescale each training window by a log-uniform factor in [1 / (1 + s), 1 + s], frames
            and targets alike, before cropping (our addition: cells of another size on an unseen movie; 0: off).
        edge_window_fraction: share of training windows that overlap the first or last training frame, padded as
            the attached model pads at inference (its ``edge_padding``; our addition; 0: off).
    """

    def __init__(
        self,
        sequences: list[str] | None = None,
        demo_flavour: str = "fluo",
        points: list[str | None] | None = None,
        train_frames: int = 18,
        window: int | None = None,
        downscale: float = 1.0,
        crop_size: int | None = 96,
        batch_size: int = 4,
        samples_per_epoch: int = 256,
        event_fraction: float = 0.5,
        dilations: int = 3,
        augment: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        intensity_augment: bool = False,
        target: str | None = None,
        sigma: float = 2.0,
        sigma_t: float = 1.0,
        scale_jitter: float = 0.0,
        edge_window_fraction: float = 0.0,
    ) -> None:
        super().__init__(sequences, demo_flavour)
        if target is not None and target not in TARGETS:
            raise CellgenInputError(None, f"target must be one of {TARGETS}, got {target!r}")
        check_window_options(scale_jitter, edge_window_fraction, crop_size)
        self.save_hyperparameters()
        if points and len(points) != len(self.sequence_paths):
            raise CellgenInputError(None, f"{len(points)} points files for {len(self.sequence_paths)} sequences")
        self._sequences: list[MitosisSequence] | None = None
        self.train_set: MitosisWindowDataset | None = None

    def mitosis_sequences(self) -> list[MitosisSequence]:
        """The loaded, split sequences (read once)."""
        if self._sequences is None:
            seqs = self.resolve_sequences()
            files = self.hparams.points or [None] * len(seqs)
            self._sequences = [
                load_mitosis_sequence(seq.path, f, self.hparams.train_frames, self.hparams.downscale)
                for seq, f in zip(seqs, files, strict=True)
            ]
        return self._sequences

    def use_sequences(self, sequences: list[MitosisSequence]) -> None:
        """Serve already loaded sequences (a sweep loads a video once for many runs); resets the training set."""
        self._sequences = list(sequences)
        self.train_set = None

    def model_hparams(self) -> dict:
        """The attached model's hyperparameters (empty without a trainer or model): settings shared with it."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        return dict(model.hparams) if model is not None else {}

    def window_length(self) -> int:
        """k: the configured ``window`` or, when None, the attached model's ``sequence_length``."""
        if self.hparams.window is not None:
            return int(self.hparams.window)
        model = self.model_hparams()
        if "sequence_length" not in model:
            raise CellgenInputError(None, "window is not set and no model with sequence_length is attached")
        return int(model["sequence_length"])

    def target_kind(self) -> str:
        """``blob`` or ``heatmap``: the configured ``target`` or, when None, the attached model's ``head``."""
        if self.hparams.target is not None:
            return self.hparams.target
        return str(self.model_hparams().get("head", "blob"))

    def edge_padding(self) -> str:
        """How inference pads the ends in time: the attached model's ``edge_padding`` (without one, its default)."""
        return str(self.model_hparams().get("edge_padding", "replicate"))

    def setup(self, stage: str | None = None) -> None:
        if stage not in (None, "fit") or self.train_set is not None:
            return
        k, n = self.window_length(), self.hparams.train_frames
        if n < k:
            raise CellgenInputError(None, f"train_frames {n} < window {k}", "the paper needs N >= k annotated frames")
        frames, labels, points = [], [], []
        heatmap = self.target_kind() == "heatmap"
        for item in self.mitosis_sequences():
            train = item.volume.frames[:n]
            local = item.local_points()
            local = local[local[:, 0] < n]
            frames.append(train)
            if heatmap:
                labels.append(heatmap_volume(local, train.shape, self.hparams.sigma, self.hparams.sigma_t))
            else:
                labels.append(label_volume(local, train.shape, self.hparams.dilations))
            points.append(local)
        self.train_set = MitosisWindowDataset(
            frames,
            labels,
            points,
            k,
            self.hparams.crop_size,
            self.hparams.samples_per_epoch,
            self.hparams.event_fraction,
            self.hparams.augment,
            self.hparams.seed,
            self.hparams.intensity_augment,
            self.hparams.scale_jitter,
            self.hparams.edge_window_fraction,
            self.edge_padding(),
            (self.hparams.sigma, self.hparams.sigma_t) if heatmap else None,
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            sampler=EpochSampler(len(self.train_set)),
            num_workers=self.hparams.num_workers,
        )

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_PredictSequences(self.mitosis_sequences()), batch_size=None, collate_fn=_as_is)


class _PredictSequences(Dataset):
    """One dict per sequence: ``frames`` (T, h, w) tensor plus the split (kept as plain Python/numpy objects)."""

    def __init__(self, sequences: list[MitosisSequence]) -> None:
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict:
        item = self.sequences[index]
        return {"frames": torch.from_numpy(item.volume.frames), "sequence": item, "index": index}


def _as_is(sample: dict) -> dict:
    return sample
