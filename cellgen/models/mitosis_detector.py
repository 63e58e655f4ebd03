"""MitosisDetector: the bidirectional ConvLSTM M3 of Phan et al. 2019 (Sec. III F-G).

Training (Sec. III G): windows of k frames (k from the EventLengthEstimator) from the first N annotated frames,
labels are the dilated mitosis points, loss is the BCE of Eq. 13, optimiser RMSprop with lr 1e-3. The paper uses
plain BCE; ``pos_weight`` optionally up-weights the rare mitosis voxels, and the data module places half of the
windows on a mitosis (``event_fraction``) - both are documented departures for small CPU budgets.

Inference (Sec. III G): windows of k frames at stride 2 over the whole sequence; the per-voxel probabilities of
overlapping windows are summed and divided by the number of windows that saw each frame. The probability volume is
binarised at a threshold fixed on the training frames (never on the test frames), split into 3-D connected
components, and each component's centre of mass is one detection (t, y, x, score = the component's peak). Frames may
be downscaled (paper: 1/4); detections are mapped back to original pixels before they are scored or written.

Beside M3 (``architecture: m3, head: blob``, the paper) two departures can be chosen, measured in docs/RESULTS.md
(issue 12): ``head: heatmap`` trains Gaussian event centres with the CenterNet focal loss and detects local maxima,
and ``architecture: unet`` replaces the ConvLSTM by a U-Net over the k frames stacked as channels. Every saved
checkpoint also carries what ``cellgen detect-mitoses`` needs to run on a new movie (``mitosis_inference``: the
threshold calibrated on the training frames, the working scale, the normalisation and the cell diameter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cellgen.data.event_frames import FrameVolume
from cellgen.data.mitosis_data import MitosisSequence
from cellgen.data.points import write_points_csv
from cellgen.metrics.mitosis import score_detections
from cellgen.metrics.mitosis_detection import (
    EDGE_PADDINGS,
    calibrate_threshold,
    detect_components,
    detect_peaks,
    to_original,
    window_probabilities,
)
from cellgen.models.base import CellgenModule
from cellgen.nn.convlstm import BidirectionalConvLSTM
from cellgen.nn.event_heatmap import FlipAveraged, FrameStackUNet, heatmap_focal_loss, init_heatmap_bias

ARCHITECTURES = ("m3", "unet")
HEADS = ("blob", "heatmap")
INFERENCE_KEY = "mitosis_inference"


class BidirectionalMitosisNet(nn.Module):
    """Frames (B, 1, T, H, W) -> mitosis logits (B, 1, T, H, W) (Sec. III F).

    Forward and backward ConvLSTMs (``hidden`` channels each) are concatenated, followed by dropout, a 3x3 and a 1x1
    convolution; the sigmoid is left to the loss.
    """

    def __init__(self, hidden: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        self.lstm = BidirectionalConvLSTM(1, hidden, kernel_size=3)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(
            nn.Conv2d(2 * hidden, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = frames.shape
        features = self.dropout(self.lstm(frames.transpose(1, 2)))  # (B, T, 2 hidden, H, W)
        logits = self.head(features.reshape(b * t, -1, h, w))
        return logits.reshape(b, t, 1, h, w).transpose(1, 2)


# --------------------------------------------------------------------------------------------- module


class MitosisDetector(CellgenModule):
    """M3 of Phan et al. (Sec. III F-G): a bidirectional ConvLSTM that marks mitoses in (t, y, x).

    Batches from :class:`~cellgen.data.mitosis_data.MitosisDataModule`: ``(frames, labels)`` each (B, 1, k, H, W)
    for training; one dict per sequence for prediction.

    Args:
        sequence_length: window length k (frames); set it from ``cellgen estimate-k`` (its ``k.yaml``).
        hidden_channels: channels per ConvLSTM direction (paper: 16).
        dropout: dropout on the concatenated features (paper: 0.3).
        lr: RMSprop learning rate (paper: 1e-3).
        pos_weight: BCE weight of mitosis voxels (None: plain BCE, Eq. 13).
        stride: frames between inference windows (paper: 2).
        threshold: binarisation of the averaged probabilities; None calibrates it on the training frames at
            prediction time.
        min_voxels: smallest 3-D component that counts as a detection.
        spatial_tol: matching radius (original pixels) for calibration and the printed scores.
        temporal_tol: matching tolerance (frames) for calibration.
        output_dir: where prediction writes ``<dataset>_<sequence>_mitoses.csv``; None: ``<default_root_dir>/mitoses``.
        architecture: ``m3`` (bidirectional ConvLSTM, the paper) or ``unet`` (frames stacked as channels).
        head: ``blob`` (dilated labels, BCE, connected components: the paper) or ``heatmap`` (Gaussian centres,
            focal loss, local maxima).
        base_channels: first-level width of the ``unet`` architecture.
        peak_radius: heat-map non-maximum suppression radius in working pixels (about half a cell diameter).
        peak_radius_t: heat-map non-maximum suppression radius in frames.
        flip_tta: average the 4 flips of each window at inference (4x the cost).
        optimizer: ``rmsprop`` (Sec. III G) or ``adam``.
        edge_padding: how the first and last frames are covered at inference: ``none`` (Sec. III G: one window
            each, at its first or last position) or ``replicate`` / ``reflect`` (k - 1 padded frames at both ends,
            so they are seen like interior frames; see :func:`window_probabilities`).
    """

    def __init__(
        self,
        sequence_length: int = 8,
        hidden_channels: int = 16,
        dropout: float = 0.3,
        lr: float = 1e-3,
        pos_weight: float | None = None,
        stride: int = 2,
        threshold: float | None = None,
        min_voxels: int = 1,
        spatial_tol: float = 10.0,
        temporal_tol: int = 1,
        output_dir: str | None = None,
        architecture: str = "m3",
        head: str = "blob",
        base_channels: int = 32,
        peak_radius: float = 4.0,
        peak_radius_t: int = 2,
        flip_tta: bool = False,
        optimizer: str = "rmsprop",
        edge_padding: str = "replicate",
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES or head not in HEADS or optimizer not in ("rmsprop", "adam"):
            raise ValueError(f"architecture: one of {ARCHITECTURES}, head: one of {HEADS}, optimizer: rmsprop or adam")
        if edge_padding not in EDGE_PADDINGS:
            raise ValueError(f"edge_padding must be one of {EDGE_PADDINGS}, got {edge_padding!r}")
        # Prediction-time options stay out of the checkpoint: LightningCLI lets a checkpoint's hyperparameters
        # override the command line, and these must remain settable when predicting with a trained model.
        self.save_hyperparameters(ignore=["threshold", "output_dir"])
        self.threshold = threshold
        self.output_dir = output_dir
        if sequence_length < 1 or stride < 1:
            raise ValueError(f"sequence_length and stride must be positive, got {sequence_length}, {stride}")
        if architecture == "unet":
            self.net: nn.Module = FrameStackUNet(sequence_length, base_channels)
        else:
            self.net = BidirectionalMitosisNet(hidden_channels, dropout)
            if head == "heatmap":
                init_heatmap_bias(self.net.head[-1])
        # What detect-mitoses needs besides the weights; filled when a checkpoint is saved (or loaded).
        self.inference: dict[str, Any] = {}

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Mitosis logits (B, 1, T, H, W) of frames (B, 1, T, H, W) in [0, 1]."""
        return self.net(frames)

    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        frames, labels = batch
        logits = self(frames)
        if self.hparams.head == "heatmap":
            return heatmap_focal_loss(logits, labels), {"events": (labels >= 1.0 - 1e-4).sum().float()}
        weight = None if self.hparams.pos_weight is None else torch.tensor(self.hparams.pos_weight).to(logits)
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight)  # Eq. 13
        return loss, {"label_fraction": labels.mean()}

    def probabilities(self, frames: torch.Tensor) -> np.ndarray:
        """Window-averaged probabilities (T, H, W) of a whole volume (T, H, W), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            net = FlipAveraged(self.net) if self.hparams.flip_tta else self.net
            hp = self.hparams
            probability = window_probabilities(
                net, frames.to(self.device), hp.sequence_length, hp.stride, hp.edge_padding
            )
        finally:
            self.train(was_training)
        return probability.cpu().numpy()  # float32: window_probabilities accumulates in it

    def find(self, probability: np.ndarray, threshold: float) -> np.ndarray:
        """Volume detections (M, 4) (t, y, x, score) of a (T, h, w) probability volume, by the model's head."""
        hp = self.hparams
        if hp.head == "heatmap":
            return detect_peaks(probability, threshold, hp.peak_radius, hp.peak_radius_t)
        return detect_components(probability, threshold, hp.min_voxels)

    def calibrate(self, sequence: MitosisSequence, probability: np.ndarray | None = None) -> tuple[float, float]:
        """(threshold, training F1): the best threshold on the sequence's training frames (Sec. III G)."""
        if probability is None:
            probability = self.probabilities(torch.from_numpy(sequence.volume.frames[: sequence.train_frames]))
        hp = self.hparams
        return calibrate_threshold(
            probability, sequence, hp.spatial_tol, hp.temporal_tol, find=self.find, prefer_low=hp.head == "heatmap"
        )

    def detect_volume(self, volume: FrameVolume, threshold: float) -> np.ndarray:
        """Detections (M, 4) (t, y, x, score) in original frames and pixels of a whole unannotated movie."""
        probability = self.probabilities(torch.from_numpy(volume.frames))
        return to_original(self.find(probability, threshold), MitosisSequence(volume, np.zeros((0, 3)), 1))

    def detect(self, sequence: MitosisSequence) -> dict[str, Any]:
        """Detect mitoses in one sequence and score them where annotations exist.

        Returns:
            ``{"threshold", "train_f1", "detections" (M, 4) original (t, y, x, score) in the test frames,
            "probability" (T, h, w), "scores" {tolerance: metrics} on the test frames}``.
        """
        probability = self.probabilities(torch.from_numpy(sequence.volume.frames))
        hp = self.hparams
        threshold, train_f1 = self.threshold, None
        if threshold is None:
            threshold, train_f1 = self.calibrate(sequence, probability)
        found = to_original(self.find(probability, threshold), sequence)
        first = sequence.first_test_frame
        test = found[found[:, 0] >= first] if first is not None else found[:0]
        _, test_points = sequence.split_points()
        scores = {tol: score_detections(test_points, test, hp.spatial_tol, tol) for tol in (1, 3)}
        return {
            "threshold": threshold,
            "train_f1": train_f1,
            "detections": test,
            "probability": probability,
            "scores": scores,
        }

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """Detect, write the test-frame detections as CSV, print one JSON line (scores on the held-out frames)."""
        sequence: MitosisSequence = batch["sequence"]
        result = self.detect(sequence)
        path = sequence.volume.path
        folder = Path(self.output_dir or Path(self.trainer.default_root_dir) / "mitoses")
        csv_path = write_points_csv(folder / f"{path.parent.name}_{path.name}_mitoses.csv", result["detections"])
        summary = {
            "sequence": str(path),
            "csv": str(csv_path),
            "threshold": result["threshold"],
            "train_f1": result["train_f1"],
            "test_frames": len(sequence.volume.indices) - sequence.train_frames,
            "detections": len(result["detections"]),
            **{f"f1_t{tol}": round(m["f1"], 4) for tol, m in result["scores"].items()},
        }
        print(json.dumps(summary))
        return summary

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the inference settings with the weights: threshold (calibrated now, on the training frames of the
        attached data), working scale, normalisation percentiles and cell diameter, so that a checkpoint alone
        detects mitoses in a new movie."""
        try:
            data = self.trainer.datamodule
        except RuntimeError:  # saved outside a Trainer
            data = None
        sequences = data.mitosis_sequences() if hasattr(data, "mitosis_sequences") else []
        if sequences:
            item = sequences[0]
            threshold, train_f1 = self.calibrate(item)
            scale = item.volume.frames.shape[1] / item.volume.full_shape[0]
            diameter = None if item.cell_diameter is None else item.cell_diameter * scale
            self.inference = {
                "threshold": threshold,
                "train_f1": train_f1,
                "downscale": float(data.hparams.downscale),
                "normalise_percentiles": [0.5, 99.5],
                "cell_diameter": diameter,
                "train_frames": int(item.train_frames),
                "sequence": str(item.volume.path),
            }
        if self.inference:
            checkpoint[INFERENCE_KEY] = dict(self.inference)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.inference = dict(checkpoint.get(INFERENCE_KEY) or {})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr)
