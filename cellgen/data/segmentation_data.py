"""Training data of the downstream segmenter: normalised frames, instance targets, random augmented crops.

The segmenter learns two maps per pixel (see :mod:`cellgen.models.segmentation`): foreground and a distance map,
the Euclidean distance to the cell's border divided by the cell's largest distance, so every cell peaks at 1 in
its middle and falls to 0 on its border, also where two cells touch. Watershed seeds are the cell cores
(distance > 0.5), which is what separates touching nuclei.

Instance masks per frame (:func:`training_instances`): gold SEG where annotated, else silver ST, else TRA.
Partial SEG (GOWT1 01 annotates ~2 of ~23 nuclei in 30 frames) is pasted over the TRA/ST masks instead of
replacing them, so unannotated cells are never taught as background. TRA markers can be eroded nuclei (GOWT1:
median IoU 0.58 with SEG, best matched after growing them by ~8 px); ``tra_expand="auto"`` grows them by the
radius that best matches the training sequences' own SEG frames (0 for synthetic data, whose TRA equals SEG).

Intensities are normalised per sequence by percentiles (robust to a few saturated pixels and to the different
bit depths of real and synthetic data); frames are optionally downscaled for speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import expand_labels
from torch.utils.data import DataLoader, Dataset

from cellgen.data.base import CellgenDataModule
from cellgen.data.cell_extent import estimate_tra_expansion, sequential_labels
from cellgen.data.ctc import CTCSequence
from cellgen.data.errors import CellgenInputError
from cellgen.data.frames import (  # noqa: F401 (re-exported: frame helpers used with segmentation data)
    normalised_frame,
    resize_image,
    resize_labels,
    scaled_shape,
    sequence_percentiles,
)

# --------------------------------------------------------------------------------------------- frames


# --------------------------------------------------------------------------------------------- targets


def instance_distance(labels: np.ndarray) -> np.ndarray:
    """Per-instance normalised distance to the border (H, W) float32 in [0, 1]: 1 at each cell's middle.

    Neighbouring cells count as border, so touching cells are separated by a valley of zeros.
    """
    distance = np.zeros(labels.shape, np.float32)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        padded = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = labels[padded] == index
        edt = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        peak = edt.max()
        if peak > 0:
            distance[padded][inside] = (edt[inside] / peak).astype(np.float32)
    return distance


def segmentation_targets(labels: np.ndarray) -> np.ndarray:
    """Stacked targets (2, H, W) float32: foreground in {0, 1} and the normalised distance map."""
    sequential = sequential_labels(labels)
    return np.stack([(sequential > 0).astype(np.float32), instance_distance(sequential)])


def training_instances(seq: CTCSequence, t: int, tra_expand: float = 0.0, downscale: float = 1.0) -> np.ndarray:
    """Instance mask (h, w) int32 of frame ``t`` for training: ST or grown TRA, with SEG cells pasted over.

    Each SEG cell replaces the TRA/ST instances it mostly covers, so a partial SEG frame keeps the other cells.
    """
    shape = scaled_shape(seq.shape, downscale)
    base = np.zeros(shape, np.int32)
    if t in seq.st_seg_paths:
        base = resize_labels(seq.st_mask(t), shape).astype(np.int32)
    elif t in seq.tra_paths:
        base = resize_labels(seq.tra_mask(t), shape).astype(np.int32)
        radius = int(round(tra_expand * downscale))
        if radius > 0:
            base = expand_labels(base, radius)
    if t not in seq.seg_paths:
        return base
    seg = sequential_labels(resize_labels(seq.seg_mask(t), shape))
    if base.any():
        base = sequential_labels(base)
        n_base = int(base.max()) + 1
        inter = np.bincount((seg * n_base + base).ravel(), minlength=(int(seg.max()) + 1) * n_base)
        inter = inter.reshape(-1, n_base)
        covered = inter[1:, 1:].sum(0) / np.maximum(np.bincount(base.ravel(), minlength=n_base)[1:], 1)
        replaced = np.flatnonzero(covered > 0.5) + 1
        base[np.isin(base, replaced)] = 0
    out = base.copy()
    offset = int(base.max())
    out[seg > 0] = seg[seg > 0] + offset
    return out


# --------------------------------------------------------------------------------------------- dataset


def _pad_to(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Pad the last two axes up to ``size`` (reflect for images, zeros for targets)."""
    pad_h, pad_w = max(size - array.shape[-2], 0), max(size - array.shape[-1], 0)
    if not (pad_h or pad_w):
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, pad_h), (0, pad_w)]
    return np.pad(array, widths, mode=mode) if mode != "constant" else np.pad(array, widths)


def appearance_augmentation():
    """What a user training a segmenter on microscopy would add: contrast, gamma, blur, noise, elastic warps.

    Identical for every row of a downstream comparison, so the protocol measures the training data and not a
    segmenter that breaks at the first shift of brightness or focus. Works on percentile-normalised float
    frames (about 0..1); the elastic warp moves the targets with the image.
    """
    import albumentations as A

    return A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.3, p=0.8),
            A.RandomGamma(gamma_limit=(60, 160), p=0.5),
            A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.2, 1.5), p=0.3),
            A.GaussNoise(std_range=(0.0, 0.08), p=0.5),
            A.ElasticTransform(alpha=30.0, sigma=8.0, p=0.3),
        ],
        seed=0,
    )


class SegmentationCropDataset(Dataset):
    """Random crops of (image, targets) with flips, 90-degree rotations and an intensity jitter.

    The jitter (gain 0.8-1.25, offset +-0.1 on the normalised image) keeps the segmenter from relying on the
    exact intensity calibration of its training set, which differs between real and synthetic videos.

    Items: ``{"image": (1, S, S), "target": (2, S, S)}`` float32. Randomness comes from torch's global generator,
    so ``seed_everything`` makes a run reproducible.

    Args:
        images: normalised frames, each (h, w).
        targets: matching targets, each (2, h, w).
        crop_size: crop height and width S.
        length: items per epoch.
        augment: random flips, rotations and intensity jitter.
        fixed: deterministic crops (validation): crop ``i`` is drawn from a generator seeded with ``i``.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        crop_size: int,
        length: int,
        augment: bool = True,
        fixed: bool = False,
        appearance: bool = False,
    ) -> None:
        if not images:
            raise ValueError("no training frames")
        self.images, self.targets = list(images), list(targets)
        self.crop_size, self.length, self.augment, self.fixed = crop_size, length, augment, fixed
        self.appearance = appearance_augmentation() if appearance else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = index if self.fixed else int(torch.randint(0, 2**62, ()).item())
        rng = np.random.default_rng(seed)
        k = int(rng.integers(len(self.images)))
        size = self.crop_size
        image = _pad_to(self.images[k], size, "reflect")
        target = _pad_to(self.targets[k], size, "constant")
        y = int(rng.integers(image.shape[0] - size + 1))
        x = int(rng.integers(image.shape[1] - size + 1))
        image = image[y : y + size, x : x + size]
        target = target[:, y : y + size, x : x + size]
        if self.augment:
            turns = int(rng.integers(4))
            image, target = np.rot90(image, turns), np.rot90(target, turns, axes=(1, 2))
            if rng.random() < 0.5:
                image, target = image[:, ::-1], target[:, :, ::-1]
            image = image * rng.uniform(0.8, 1.25) + rng.uniform(-0.1, 0.1)
        if self.appearance is not None:
            self.appearance.set_random_seed(int(rng.integers(2**31)))
            moved = self.appearance(
                image=np.ascontiguousarray(np.maximum(image, 0.0), np.float32),
                mask=np.ascontiguousarray(np.moveaxis(target, 0, -1), np.float32),
            )
            image, target = moved["image"], np.moveaxis(moved["mask"], -1, 0)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)[None]),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
        }


class SegmentationDataModule(CellgenDataModule):
    """Random crops from the annotated frames of CTC sequences (the embedded demo data when none are given).

    All annotated frames are loaded once, at ``downscale``, with their targets (a 92-frame 1024x1024 sequence
    at 1/2 takes ~70 MB).

    Args:
        sequences: raw-frame folders (``.../01``); empty means the embedded demo data.
        demo_flavour: demo flavour to fall back to.
        crop_size: training crop size (in downscaled pixels); the segmenter needs it divisible by
            ``2 ** (levels - 1)``.
        downscale: scale factor applied to every frame (1/2 keeps GOWT1 nuclei ~25 px wide).
        batch_size: crops per batch.
        samples_per_epoch: crops per training epoch (training length is set by ``trainer.max_steps``).
        val_samples: fixed validation crops (0: no validation loader).
        num_workers: DataLoader workers.
        tra_expand: growth of TRA markers in full-resolution px, or ``auto`` to estimate it per sequence from
            its frames with both SEG and TRA (see :func:`estimate_tra_expansion`).
        frame_step: use every k-th annotated frame (neighbouring frames are nearly identical).
        percentiles: low/high intensity percentiles of the per-sequence normalisation.
        augment: flips, rotations and intensity jitter.
        augment_appearance: also contrast, gamma, blur, noise and elastic warps (albumentations; see
            :func:`appearance_augmentation`).
    """

    def __init__(
        self,
        sequences: list[str] | None = None,
        demo_flavour: str = "fluo",
        crop_size: int = 128,
        downscale: float = 1.0,
        batch_size: int = 8,
        samples_per_epoch: int = 512,
        val_samples: int = 16,
        num_workers: int = 0,
        tra_expand: float | Literal["auto"] = "auto",
        frame_step: int = 1,
        percentiles: tuple[float, float] = (1.0, 99.8),
        augment: bool = True,
        augment_appearance: bool = False,
    ) -> None:
        super().__init__(sequences, demo_flavour)
        self.save_hyperparameters()
        scaled_shape((1, 1), downscale)  # validates the factor early
        self.train_set: SegmentationCropDataset | None = None
        self.val_set: SegmentationCropDataset | None = None
        self.tra_expansions: dict[str, float] = {}

    def load_frames(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Normalised frames (h, w) and targets (2, h, w) of every annotated frame of every sequence."""
        hp = self.hparams
        images, targets = [], []
        for seq in self.resolve_sequences():
            annotated = sorted(set(seq.tra_paths) | set(seq.seg_paths) | set(seq.st_seg_paths))
            annotated = [t for t in annotated if t in seq.frame_paths][:: max(hp.frame_step, 1)]
            if not annotated:
                raise CellgenInputError(seq.path, "no annotated frames (TRA, SEG or ST) to train a segmenter on")
            expand = estimate_tra_expansion(seq, hp.downscale) if hp.tra_expand == "auto" else float(hp.tra_expand)
            self.tra_expansions[str(seq.path)] = expand
            low, high = sequence_percentiles(seq, tuple(hp.percentiles))
            for t in annotated:
                images.append(normalised_frame(seq, t, low, high, hp.downscale))
                targets.append(segmentation_targets(training_instances(seq, t, expand, hp.downscale)))
        return images, targets

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        images, targets = self.load_frames()
        self.train_set = SegmentationCropDataset(
            images, targets, hp.crop_size, hp.samples_per_epoch, hp.augment, appearance=hp.augment_appearance
        )
        self.val_set = SegmentationCropDataset(images, targets, hp.crop_size, hp.val_samples, False, fixed=True)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            drop_last=True,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.hparams.val_samples:
            return []
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)
