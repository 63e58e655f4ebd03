"""Downstream usefulness of training data: train a segmenter on it, segment and track a real test sequence, score.

BVDM (Yilmaz et al., SASHIMI 2024, Sec. 3, Table 1) measures synthetic data by what a method trained on it
achieves on real data: SEG and TRA of the Cell Tracking Challenge. Here the method is :class:`CellSegmenter`
(U-Net foreground + distance map, watershed) followed by overlap linking (:mod:`cellgen.metrics.linking`); it is
trained under one fixed budget (:class:`DownstreamBudget`, ``configs/downstream.yaml``) for every training set,
so rows differ only by their data.

Frames are segmented at ``downscale`` and the label images are upsampled with nearest neighbour to the test
sequence's size for scoring, as the CTC measures are defined at full resolution.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cellgen.data.atomic import atomic_file
from cellgen.data.cache import folder_fingerprint
from cellgen.data.ctc import CTCSequence
from cellgen.data.errors import CellgenInputError

if TYPE_CHECKING:  # Lightning and torch are imported only when a row runs, keeping the command's --help fast
    from cellgen.models.segmentation import CellSegmenter


@dataclass
class DownstreamBudget:
    """Everything held equal between the rows of a downstream comparison (tuned values: configs/downstream.yaml).

    Args:
        steps: optimiser steps.
        batch_size: crops per step.
        crop_size: training crop size in downscaled pixels.
        downscale: scale of every frame for training and segmentation (masks are upsampled for scoring).
        base_channels: U-Net width of the first level.
        channel_mults: U-Net width multiplier per level.
        num_res_blocks: residual blocks per level.
        lr: peak AdamW learning rate (one-cycle schedule over ``steps``).
        tra_expand: growth of TRA markers (full-resolution px) when they stand in for SEG, or ``auto``.
        frame_step: train on every k-th annotated frame.
        augment_appearance: contrast, gamma, blur, noise and elastic augmentation of the training crops
            (the same for every row; see :func:`cellgen.data.segmentation_data.appearance_augmentation`).
        foreground_threshold: foreground probability threshold of the watershed.
        seed_threshold: normalised-distance threshold of the watershed seeds.
        min_size: smallest object kept, in full-resolution pixels.
        min_iou: smallest IoU of a frame-to-frame match.
        division_overlap: containment in a matched parent that makes an instance a daughter.
        min_track_length: tracks shorter than this are flicker: a division with one such daughter is undone and
            such tracks without lineage are dropped (:func:`~cellgen.metrics.linking.tidy_lineage`); 1 keeps all.
        accelerator: Lightning accelerator (``auto`` uses a GPU when present).
        precision: Lightning precision, or ``auto``: ``bf16-mixed`` on a GPU or a CPU with native bf16 (AVX512-BF16
            or AMX, ~2x faster), ``32-true`` elsewhere (bf16 emulated on an AVX2 CPU is many times slower).
        threads: torch CPU threads during the row (0: torch's default). On a CPU shared with other jobs, 1 is
            often fastest: OpenMP threads spin-wait when cores are oversubscribed (30x slower inference seen on
            2 busy cores). Results do not depend on it beyond float rounding.
    """

    steps: int = 600
    batch_size: int = 8
    crop_size: int = 128
    downscale: float = 0.5
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    lr: float = 2e-3
    tra_expand: float | Literal["auto"] = "auto"
    frame_step: int = 1
    augment_appearance: bool = True
    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_size: int = 64
    min_iou: float = 0.1
    division_overlap: float = 0.4
    min_track_length: int = 3
    accelerator: str = "auto"
    precision: str = "auto"
    threads: int = 0


def resolved_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto`` -> ``bf16-mixed`` where bf16 is native (GPU, AVX512-BF16/AMX CPU), else ``32-true``."""
    if precision != "auto":
        return precision
    import torch

    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    try:
        native_cpu = accelerator in ("auto", "cpu") and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an op of torch's own CPU backend; absent in some builds
        native_cpu = False
    return "bf16-mixed" if on_gpu or native_cpu else "32-true"


def _frame_digits(seq: CTCSequence) -> int:
    """Index width of the sequence's own frame names (``t012.tif`` -> 3), reused for ``maskTTT.tif``."""
    return len(next(iter(seq.frame_paths.values())).stem) - 1


def train_segmenter(
    train: list[str], out: Path, budget: DownstreamBudget, seed: int = 0
) -> tuple[CellSegmenter, dict[str, float]]:
    """Train a :class:`CellSegmenter` on the annotated frames of ``train`` under ``budget``; save it in ``out``.

    Returns:
        The model and the TRA-marker growth used per training sequence (full-resolution px).
    """
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from cellgen.data.segmentation_data import SegmentationDataModule
    from cellgen.models.segmentation import CellSegmenter

    L.seed_everything(seed, workers=True, verbose=False)
    data = SegmentationDataModule(
        sequences=list(train),
        crop_size=budget.crop_size,
        downscale=budget.downscale,
        batch_size=budget.batch_size,
        samples_per_epoch=max(budget.steps, 1) * budget.batch_size,
        val_samples=0,
        tra_expand=budget.tra_expand,
        frame_step=budget.frame_step,
        augment_appearance=budget.augment_appearance,
    )
    model = CellSegmenter(
        base_channels=budget.base_channels,
        channel_mults=tuple(budget.channel_mults),
        num_res_blocks=budget.num_res_blocks,
        lr=budget.lr,
        foreground_threshold=budget.foreground_threshold,
        seed_threshold=budget.seed_threshold,
        min_size=max(1, round(budget.min_size * budget.downscale**2)),
    )
    trainer = L.Trainer(
        max_steps=budget.steps,
        accelerator=budget.accelerator,
        devices=1,
        precision=resolved_precision(budget.precision, budget.accelerator),
        logger=CSVLogger(out, name="", version="logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, budget.steps // 10)),
    )
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(out / "segmenter.ckpt")
    return model, dict(data.tra_expansions)


def segment_and_track(model: CellSegmenter, test: CTCSequence, res_dir: Path, budget: DownstreamBudget) -> Path:
    """Segment every frame of ``test`` at ``budget.downscale``, link, tidy, upsample, write a CTC result folder.

    The linked masks are kept at the downscaled size until the lineage is tidied (a 92-frame 1024x1024 sequence
    at 1/2 holds 48 MB), so that only final ids are written.
    """
    import numpy as np
    import torch

    from cellgen.data.segmentation_data import normalised_frame, resize_labels, sequence_percentiles
    from cellgen.metrics.linking import CTCResultWriter, TrackLinker, tidy_lineage

    indices = test.frame_indices
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise CellgenInputError(test.path, "frames are not consecutive; tracking needs every frame")
    low, high = sequence_percentiles(test)
    linker = TrackLinker(budget.min_iou, budget.division_overlap, first_frame=indices[0])
    model.eval()
    bf16 = resolved_precision(budget.precision, budget.accelerator).startswith("bf16")
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
        tracked = [linker.add(model.segment(normalised_frame(test, t, low, high, budget.downscale))) for t in indices]
    relabel, tracks = tidy_lineage(linker.tracks, budget.min_track_length, indices[0], indices[-1])
    lut = np.zeros(max(relabel, default=0) + 1, np.uint16)
    for old, new in relabel.items():
        lut[old] = new
    writer = CTCResultWriter(res_dir, digits=_frame_digits(test))
    try:
        for t, mask in zip(indices, tracked, strict=True):
            writer.write(t, resize_labels(lut[mask], test.shape))
        return writer.finish(tracks)
    except BaseException:
        writer.abort()
        raise


def run_downstream(
    train: list[str], test: str, out: str, budget: DownstreamBudget | None = None, seed: int = 0, name: str = "real"
) -> dict:
    """Train on ``train``, segment and track ``test``, score against its ground truth; one row of the table.

    Args:
        train: training sequence folders (``.../01``; real or synthetic, CTC layout with TRA and/or SEG).
        test: the test sequence folder; ``<test>_GT`` must hold TRA (and SEG for the SEG measure).
        out: output folder; the row writes ``out/segmenter.ckpt``, ``out/logs`` and ``out/<NN>_RES``.
        budget: the fixed training/segmentation budget.
        seed: seed of training (crops, augmentation, initialisation).
        name: the row's name in reports.

    Returns:
        ``{"name", "SEG", "TRA", "DET", ...}`` with the AOGM terms, timings (seconds) and paths.
    """
    import torch

    from cellgen.metrics.ctc_measures import evaluate_ctc

    budget = budget or DownstreamBudget()
    if not train:
        raise CellgenInputError(None, f"row '{name}': no training sequences given")
    test_seq = CTCSequence(test)
    if not test_seq.has_tracks:
        raise CellgenInputError(test_seq.track_file, "the test sequence needs ground truth to be scored")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = _row_inputs(train, test_seq, budget, seed)
    previous = _finished_row(out_dir / "row.json", inputs)
    if previous is not None:
        print(f"{name}: reusing {out_dir / 'row.json'} (same data, budget and seed)", flush=True)
        return {**previous, "name": name}
    threads = torch.get_num_threads()
    if budget.threads > 0:
        torch.set_num_threads(budget.threads)
    try:
        start = time.perf_counter()
        model, expansions = train_segmenter(train, out_dir, budget, seed)
        trained = time.perf_counter()
        res_dir = segment_and_track(model, test_seq, out_dir / f"{test_seq.name}_RES", budget)
        segmented = time.perf_counter()
        scores = evaluate_ctc(test_seq.gt_dir, res_dir)
        done = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    row = {
        "name": name,
        **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scores.items()},
        "train": [str(p) for p in train],
        "test": str(test_seq.path),
        "result": str(res_dir),
        "tra_expand_px": expansions,
        "train_s": round(trained - start, 1),
        "segment_s": round(segmented - trained, 1),
        "score_s": round(done - segmented, 1),
        "wall_s": round(done - start, 1),
        "seed": seed,
        "budget": asdict(budget),
        "inputs": inputs,
    }
    with atomic_file(out_dir / "row.json") as tmp:
        Path(tmp).write_text(json.dumps(row, indent=2) + "\n")
    return row


def _row_inputs(train: list[str], test: CTCSequence, budget: DownstreamBudget, seed: int) -> dict:
    """What a row's result depends on: data (by content fingerprint), budget and seed."""
    folders = [Path(p) for p in train] + [Path(p).parent / f"{Path(p).name}_GT" for p in train]
    folders += [test.path, test.gt_dir]
    return {
        "data": folder_fingerprint(*folders),
        "budget": json.loads(json.dumps(asdict(budget))),
        "seed": seed,
    }


def _finished_row(path: Path, inputs: dict) -> dict | None:
    """The row saved at ``path`` when it was computed from the same ``inputs`` (a rerun skips it), else None."""
    try:
        row = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return row if row.get("inputs") == inputs else None
