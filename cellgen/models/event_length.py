"""EventLengthEstimator: how long does a cell event last in this video? (Phan et al. 2019, Sec. III C-E).

Two networks, trained one after the other without any annotation:

* M1 (Sec. III C, Eq. 10) is an autoencoder whose bottleneck is a softmax over ``num_maps`` feature maps. During
  training one random map per sample is dropped and uniform noise in [-0.2, 0.2] is added before the decoder, so
  each map must carry a clean, nearly binary part of the image. One of them, the normal-cell map y_t, holds the
  round, separate objects: cells in interphase.
* M2 (Sec. III D, Eq. 12) sees sequences of binarised y and learns to restore parts of cell trajectories that were
  removed at random (the artificial events). On the real y, the cells that vanish from the normal-cell map while
  they divide are restored as events; the temporal lengths of these 3-D components give the event-length
  distribution, and the detector's window is k = ceil(75th percentile) (Sec. III E).

Training is one LightningModule with two phases chosen by the global step: steps ``[0, m1_steps)`` train M1 on the
reconstruction loss, later steps train M2 on maps from the frozen M1. One Adam optimiser holds both networks;
the network that is not being trained receives no gradient (its ``.grad`` stays None), so Adam leaves it alone
(under DDP this needs ``strategy: ddp_find_unused_parameters_true``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage import measure
from torch import nn
from torch.nn import functional as F

from cellgen.data.event_frames import TRAJECTORY_STRUCTURE, remove_trajectory_parts
from cellgen.models.base import CellgenModule
from cellgen.nn.convlstm import ConvLSTM


class NormalCellAutoencoder(nn.Module):
    """M1 (Sec. III C): frames (N, 1, H, W) -> softmax feature maps (N, n, H, W) -> reconstruction logits.

    Encoder and decoder are three convolutions each (5x5, 5x5, 1x1), at full resolution so the maps stay
    pixel-aligned with the frame.

    Args:
        num_maps: feature maps n in the softmax bottleneck (paper: 6).
        width: channels of the hidden convolutions.
        noise: half-width of the uniform noise added to the maps in training (paper: 0.2).
    """

    def __init__(self, num_maps: int = 6, width: int = 32, noise: float = 0.2) -> None:
        super().__init__()
        self.num_maps = num_maps
        self.noise = noise
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_maps, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(num_maps, width, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def feature_maps(self, frames: torch.Tensor) -> torch.Tensor:
        """Softmax maps (N, n, H, W) of frames (N, 1, H, W); they sum to one at every pixel.

        Always float32, also under bf16 autocast: the maps are thresholded at 0.5 and handed to NumPy.
        """
        return self.encoder(frames).float().softmax(dim=1)

    def forward(self, frames: torch.Tensor, corrupt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct frames (N, 1, H, W) in [0, 1].

        Returns:
            (reconstruction logits (N, 1, H, W), clean maps (N, n, H, W)).
        """
        maps = self.feature_maps(frames)
        code = maps
        if corrupt:
            # One map per sample is dropped (Sec. III C): no single map may carry the whole image.
            drop = torch.randint(self.num_maps, (maps.shape[0],), device=maps.device)
            keep = 1.0 - F.one_hot(drop, self.num_maps).to(maps.dtype)[:, :, None, None]
            noise = (torch.rand_like(maps) * 2.0 - 1.0) * self.noise
            code = maps * keep + noise
        return self.decoder(code), maps


class EventRestorer(nn.Module):
    """M2 (Sec. III D): normal-cell maps (B, 1, T, H, W) -> event logits (B, 1, T, H, W).

    Two 3x3 convolutions per frame, a ConvLSTM that carries each trajectory forward in time, and a two-layer
    convolutional decoder.

    Args:
        hidden: channels of the convolutions and of the ConvLSTM state (paper: 16).
    """

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.lstm = ConvLSTM(hidden, hidden, kernel_size=3)
        self.decoder = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
        )

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = maps.shape
        frames = maps.transpose(1, 2).reshape(b * t, c, h, w)
        features = self.encoder(frames).reshape(b, t, -1, h, w)
        hidden, _ = self.lstm(features)
        logits = self.decoder(hidden.reshape(b * t, -1, h, w))
        return logits.reshape(b, t, 1, h, w).transpose(1, 2)


# --------------------------------------------------------------------------------------------- map selection


def roundness_and_separation(binary: np.ndarray, min_area: int = 4) -> tuple[float, float, int]:
    """How much a binary map (N, H, W) looks like separate round cells.

    Returns:
        (roundness, separation, components): area-weighted mean of 4 pi area / perimeter^2 over the 2-D
        components of at least ``min_area`` px (1 for a disc, small for ragged or elongated shapes);
        1 - (largest component's area / foreground area), averaged over frames (0 when everything touches,
        as in a background or a membrane network); and the mean component count per frame.
    """
    round_sum = area_sum = 0.0
    separations, counts = [], []
    for frame in binary:
        regions = [r for r in measure.regionprops(measure.label(frame, connectivity=1)) if r.area >= min_area]
        if not regions:
            separations.append(0.0)
            counts.append(0)
            continue
        areas = np.array([r.area for r in regions], np.float64)
        perimeters = np.array([max(r.perimeter, 1e-6) for r in regions])
        roundness = np.clip(4 * np.pi * areas / perimeters**2, 0.0, 1.0)
        round_sum += float((roundness * areas).sum())
        area_sum += float(areas.sum())
        separations.append(1.0 - areas.max() / areas.sum())
        counts.append(len(regions))
    roundness = round_sum / area_sum if area_sum else 0.0
    return roundness, float(np.mean(separations)), int(round(np.mean(counts)))


BINARISATIONS = ("argmax", "threshold", "robust")


def binary_maps(maps: np.ndarray, mode: str = "argmax", sigma: float = 1.0, min_area: int = 4) -> np.ndarray:
    """Binarise softmax maps (N, n, H, W): each pixel to its winning map, every map at 0.5, or robustly.

    ``argmax`` and ``threshold`` agree once M1's maps are saturated (the aim of the dropped map and the noise,
    Sec. III C); with a short training budget the maps stay soft and only ``argmax`` still splits the image into its
    parts. ``robust`` (:func:`robust_binary`, per map) keeps soft, textured nuclei whole.
    """
    if mode == "threshold":
        return maps > 0.5
    if mode == "robust":
        return np.stack([robust_binary(maps[:, i], sigma, min_area) for i in range(maps.shape[1])], axis=1)
    if mode != "argmax":
        raise ValueError(f"binarisation must be one of {BINARISATIONS}, got {mode!r}")
    return np.arange(maps.shape[1])[None, :, None, None] == maps.argmax(axis=1)[:, None]


def robust_binary(stack: np.ndarray, sigma: float = 1.0, min_area: int = 4) -> np.ndarray:
    """One soft map (T, H, W) -> bool (T, H, W): Gaussian smoothing, Otsu's level, holes filled, specks removed.

    Why: on SIM+ the nucleus map of a CPU-budget M1 is textured (values around 0.5 inside a nucleus), and ``> 0.5``
    breaks one nucleus into several pieces, which M2 and the event lengths then read as vanishing cells. Smoothing
    within frames (``sigma`` px, never across time) removes the texture, one Otsu level for the whole stack adapts
    to an unsaturated map without letting frames differ, hole filling closes a nucleus whose centre is dim, and
    components under ``min_area`` px are dropped.
    """
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    stack = np.asarray(stack, np.float32)
    smooth = ndimage.gaussian_filter(stack, sigma=(0, sigma, sigma)) if sigma > 0 else stack
    level = 0.5 if float(np.ptp(smooth)) < 1e-3 else float(threshold_otsu(smooth))
    binary = smooth > level
    for t in range(len(binary)):
        binary[t] = ndimage.binary_fill_holes(binary[t])
        if min_area > 1:
            binary[t] = remove_small_objects(binary[t], max_size=min_area - 1)
    return binary


def choose_normal_map(
    maps: np.ndarray,
    mode: str = "argmax",
    erosion: int = 1,
    max_coverage: float = 0.5,
    min_coverage: float = 0.01,
    min_area: int = 9,
    sigma: float = 1.0,
) -> tuple[int, np.ndarray]:
    """Pick the map of round, disconnected objects among M1's softmax maps (Sec. III C).

    Each map is binarised (see :func:`binary_maps`) and eroded exactly as the normal-cell map y will be, then scored by
    roundness x separation over its components of at least ``min_area`` px (see :func:`roundness_and_separation`).
    A map covering more than ``max_coverage`` of the image is background, one covering less than ``min_coverage``
    after erosion holds specks, not cells: both score 0.

    Args:
        maps: (N, n, H, W) softmax maps of a few frames.
        mode: ``argmax``, ``threshold`` or ``robust`` (see :func:`binary_maps`).
        erosion: 3x3 erosion iterations, as applied to y.
        max_coverage: largest foreground fraction of a cell map.
        min_coverage: smallest foreground fraction (after erosion) of a cell map.
        min_area: smallest component (px) that counts.
        sigma: smoothing of the ``robust`` binarisation (px).

    Returns:
        (index of the best map, scores (n,)).
    """
    binary = binary_maps(maps, mode, sigma)
    scores = np.zeros(maps.shape[1])
    for index in range(maps.shape[1]):
        if binary[:, index].mean() > max_coverage:
            continue
        eroded = erode_within_frames(binary[:, index], erosion)
        if eroded.mean() < min_coverage:
            continue
        roundness, separation, _ = roundness_and_separation(eroded, min_area)
        scores[index] = roundness * separation
    return int(scores.argmax()), scores


def erode_within_frames(binary: np.ndarray, erosion: int = 1) -> np.ndarray:
    """Erode a bool (T, H, W) stack ``erosion`` times with a 3x3 square in each frame, never across time."""
    if erosion <= 0:
        return binary
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    return ndimage.binary_erosion(binary, structure, iterations=erosion)


# --------------------------------------------------------------------------------------------- statistics


def event_length_stats(events: np.ndarray, threshold: float = 0.5, min_voxels: int = 1) -> dict[str, Any]:
    """Temporal-length statistics of the events in a (T, H, W) probability or binary stack (Sec. III E).

    The stack is binarised at ``threshold`` and split into 3-D connected components (6-connectivity: regions that
    overlap from frame to frame are one event); an event's length is the number of frames it spans.

    Args:
        events: (T, H, W) event probabilities or a binary stack.
        threshold: binarisation level (paper: 0.5).
        min_voxels: components smaller than this are noise and dropped.

    Returns:
        ``{"events", "lengths", "mean", "std", "p50", "p75", "k"}`` with ``k = ceil(p75)``; statistics are None
        when no event was found. ``std`` is the population standard deviation.
    """
    binary = np.asarray(events) > threshold if np.asarray(events).dtype != bool else np.asarray(events)
    labels, count = ndimage.label(binary, structure=TRAJECTORY_STRUCTURE)
    lengths = []
    if count:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        for label, slices in enumerate(ndimage.find_objects(labels), start=1):
            if sizes[label] >= min_voxels:
                lengths.append(slices[0].stop - slices[0].start)
    return lengths_summary(lengths)


def lengths_summary(lengths: list[int]) -> dict[str, Any]:
    """Mean, std, median, 75th percentile and k = ceil(p75) of event lengths (frames)."""
    if not lengths:
        return {"events": 0, "lengths": [], "mean": None, "std": None, "p50": None, "p75": None, "k": None}
    values = np.asarray(lengths, np.float64)
    p50, p75 = np.percentile(values, [50, 75])
    return {
        "events": len(lengths),
        "lengths": [int(v) for v in lengths],
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p50": float(p50),
        "p75": float(p75),
        "k": int(math.ceil(p75 - 1e-9)),
    }


# --------------------------------------------------------------------------------------------- module


class EventLengthEstimator(CellgenModule):
    """M1 + M2 of Phan et al. (Sec. III C-E), trained in two phases by step count.

    Batches are clips (B, 1, L, H, W) in [0, 1] from :class:`~cellgen.data.event_frames.EventFramesDataModule`.

    Args:
        num_maps: softmax feature maps of M1 (paper: 6).
        width: hidden channels of M1.
        noise: uniform noise half-width on M1's maps (paper: 0.2).
        lstm_hidden: channels of M2 (paper: ConvLSTM with 16).
        m1_steps: optimiser steps of phase 1 (M1); later steps train M2.
        m1_frames: frames per clip that M1 trains on (evenly spaced).
        normal_map: index of the normal-cell map; None chooses it automatically when phase 2 starts.
        binarisation: ``threshold`` (map > 0.5, Sec. III C), ``argmax`` (a pixel belongs to the map that wins it)
            or ``robust`` (smoothed, Otsu's level, holes filled: :func:`robust_binary`); the first two agree on
            saturated maps, ``robust`` keeps the textured nuclei of a short training run whole.
        smoothing_sigma: Gaussian smoothing (px, within frames) of the ``robust`` binarisation.
        erosion: 3x3 erosion iterations applied to the binarised normal-cell map.
        max_gap: longest artificial event (frames); keep it above the longest expected real event.
        gap_fraction: share of trajectories that get an artificial event.
        event_pos_weight: BCE weight of event pixels for M2 (None: plain BCE as in the paper).
        event_threshold: binarisation of M2's output (paper: 0.5).
        min_event_voxels: smallest 3-D component counted as an event.
        lr: Adam learning rate.
    """

    def __init__(
        self,
        num_maps: int = 6,
        width: int = 32,
        noise: float = 0.2,
        lstm_hidden: int = 16,
        m1_steps: int = 1000,
        m1_frames: int = 4,
        normal_map: int | None = None,
        binarisation: str = "threshold",
        smoothing_sigma: float = 1.0,
        erosion: int = 1,
        max_gap: int = 10,
        gap_fraction: float = 0.5,
        event_pos_weight: float | None = None,
        event_threshold: float = 0.5,
        min_event_voxels: int = 4,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if binarisation not in BINARISATIONS:
            raise ValueError(f"binarisation must be one of {BINARISATIONS}, got {binarisation!r}")
        if normal_map is not None and not 0 <= normal_map < num_maps:
            raise ValueError(f"normal_map must be in [0, {num_maps}), got {normal_map}")
        self.m1 = NormalCellAutoencoder(num_maps, width, noise)
        self.m2 = EventRestorer(lstm_hidden)
        # Chosen once when phase 2 starts and saved with the checkpoint (-1: not chosen yet).
        self.register_buffer("normal_map_index", torch.tensor(-1 if normal_map is None else normal_map))
        self._rng = np.random.default_rng(0)

    # ----------------------------------------------------------------------------------------- inference

    @torch.no_grad()
    def feature_maps(self, frames: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """M1's softmax maps (T, n, H, W) of frames (T, H, W), computed ``chunk`` frames at a time."""
        return torch.cat([self.m1.feature_maps(part[:, None]) for part in frames.split(chunk)])

    def normal_cells(self, maps: np.ndarray) -> np.ndarray:
        """Binary, eroded normal-cell stack y (T, H, W) from softmax maps (T, n, H, W) (Sec. III C)."""
        index, hp = self._require_map_index(), self.hparams
        if hp.binarisation == "robust":  # the one map only; argmax needs them all
            binary = robust_binary(maps[:, index], hp.smoothing_sigma)
        else:
            binary = binary_maps(maps, hp.binarisation)[:, index]
        return erode_within_frames(binary, self.hparams.erosion)

    @torch.no_grad()
    def event_probability(self, normal: torch.Tensor) -> torch.Tensor:
        """M2's event probabilities (T, H, W), float32 also under autocast, for a binary normal-cell stack (T, H, W)."""
        return torch.sigmoid(self.m2(normal.float()[None, None]).float())[0, 0]

    @torch.no_grad()
    def estimate(self, frames: torch.Tensor) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """Event-length statistics of one sequence (Sec. III E).

        Args:
            frames: (T, H, W) in [0, 1].

        Returns:
            (statistics as :func:`event_length_stats`, binary normal-cell stack (T, H, W), event probabilities).
        """
        maps = self.feature_maps(frames.to(self.device, torch.float32)).cpu().numpy()
        normal = self.normal_cells(maps)
        events = self.event_probability(torch.from_numpy(normal).to(self.device)).cpu().numpy()
        stats = event_length_stats(events, self.hparams.event_threshold, self.hparams.min_event_voxels)
        return stats, normal, events

    def _require_map_index(self) -> int:
        index = int(self.normal_map_index)
        if index < 0:
            raise RuntimeError("the normal-cell map is not chosen yet: train past m1_steps or set normal_map")
        return index

    # ----------------------------------------------------------------------------------------- training

    def phase(self) -> str:
        """``"m1"`` for the first ``m1_steps`` optimiser steps, then ``"m2"``."""
        return "m1" if self.global_step < self.hparams.m1_steps else "m2"

    def compute_loss(self, batch: torch.Tensor, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, _, t, h, w = batch.shape
        if self.phase() == "m1":
            # M1's loss is per frame and neighbouring frames of a clip are near duplicates: use a few, evenly spaced.
            stride = max(1, t // max(1, self.hparams.m1_frames))
            frames = batch[:, :, ::stride].transpose(1, 2).reshape(-1, 1, h, w)
            logits, _ = self.m1(frames, corrupt=True)
            loss = F.binary_cross_entropy_with_logits(logits, frames)  # Eq. 10
            return loss, {"m1_bce": loss.detach()}
        frames = batch.transpose(1, 2).reshape(b * t, 1, h, w)
        if int(self.normal_map_index) < 0:
            self._choose_map(frames)
        with torch.no_grad():
            maps = self.m1.feature_maps(frames).reshape(b, t, -1, h, w).cpu().numpy()
        inputs, targets = [], []
        for sample in maps:
            normal = self.normal_cells(sample)
            kept, removed = remove_trajectory_parts(normal, self._rng, self.hparams.max_gap, self.hparams.gap_fraction)
            inputs.append(kept)
            targets.append(removed)
        inputs_t = torch.from_numpy(np.stack(inputs)[:, None]).to(batch)
        targets_t = torch.from_numpy(np.stack(targets)[:, None]).to(batch)
        logits = self.m2(inputs_t)
        pos_weight = self.hparams.event_pos_weight
        loss = F.binary_cross_entropy_with_logits(
            logits, targets_t, pos_weight=None if pos_weight is None else torch.tensor(pos_weight).to(batch)
        )  # Eq. 12 targets, BCE as Eq. 10
        return loss, {"m2_bce": loss.detach(), "event_fraction": targets_t.mean()}

    def _choose_map(self, frames: torch.Tensor, count: int = 8) -> None:
        """Fix the normal-cell map when phase 2 starts, scored on ``count`` whole frames when the data allow.

        Args:
            frames: the current batch's frames (N, 1, h, w), used when the data module has no whole frames.
            count: whole frames to score on (evenly spaced over the first sequence).
        """
        volumes = getattr(getattr(self.trainer, "datamodule", None), "volumes", None)
        if callable(volumes):
            stack = volumes()[0].frames
            frames = torch.from_numpy(stack[:: max(1, len(stack) // count)][:count]).to(self.device)[:, None]
        maps = self.feature_maps(frames[:, 0]).cpu().numpy()
        hp = self.hparams
        index, scores = choose_normal_map(maps, hp.binarisation, hp.erosion, sigma=hp.smoothing_sigma)
        if self.trainer is not None:
            index = int(self.trainer.strategy.broadcast(index, src=0))  # every DDP rank uses rank 0's choice
        self.normal_map_index.fill_(index)
        if self.trainer is not None and self.trainer.is_global_zero:
            rounded = [round(float(s), 3) for s in scores]
            print(f"EventLengthEstimator: normal-cell map {index} chosen (scores {rounded})")

    def on_train_start(self) -> None:
        # Reproducible artificial events that still differ between DDP ranks.
        self._rng = np.random.default_rng([0, self.global_rank, self.global_step])

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """Statistics of one whole sequence (1, 1, T, H, W); prints them as one JSON line."""
        stats, _, _ = self.estimate(batch["frames"][0, 0])
        summary = {key: value for key, value in stats.items() if key != "lengths"}
        print(json.dumps({"sequence": int(batch["index"]), **summary}))
        return stats

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
