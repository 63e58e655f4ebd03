"""Cell-event commands of the CLI: ``cellgen estimate-k``, ``cellgen mitosis-sweep``.

Plain typed functions; jsonargparse builds their options (and ``--config``) from the signatures. Each returns 0 on
success and raises :class:`~cellgen.data.errors.CellgenInputError` on bad input; the last printed line is JSON.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cellgen.data.errors import CellgenInputError
from cellgen.data.event_frames import EventFramesDataModule
from cellgen.models.checkpoint import read_checkpoint
from cellgen.models.event_length import EventLengthEstimator, lengths_summary

SWEEP_KS = [4, 6, 8, 10, 14, 18]  # Phan et al. Table II
SWEEP_TOLERANCES = [1, 3]
# mitosis-sweep arguments that pick the table's cells or where it goes, not how a cell is trained or scored.
SWEEP_LAYOUT_ARGUMENTS = frozenset(
    {"ks", "train_frames", "chosen_k", "k_file", "accelerator", "out", "save_checkpoints"}
)


# --------------------------------------------------------------------------------------------- trainer plumbing


def _instantiate(value: Any) -> Any:
    """Turn ``{"class_path": ..., "init_args": {...}}`` (as in LightningCLI configs) into an object, recursively;
    strings that spell YAML scalars become those scalars."""
    if isinstance(value, str):  # ``--trainer.logger=false`` reaches a dict-typed option as the string "false"
        import yaml

        parsed = yaml.safe_load(value)
        return parsed if isinstance(parsed, (bool, int, float)) or parsed is None else value
    if isinstance(value, list):
        return [_instantiate(v) for v in value]
    if isinstance(value, dict) and "class_path" in value:
        module, _, name = value["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module or "lightning.pytorch.loggers"), name)
        return cls(**{k: _instantiate(v) for k, v in (value.get("init_args") or {}).items()})
    return value


def build_trainer(trainer: dict | None, root: Path, extra_callbacks: list | None = None, **overrides: Any):
    """A Lightning Trainer from a config's ``trainer`` section, writing under ``root`` unless told otherwise;
    ``extra_callbacks`` join the configured ones."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    kwargs = {k: _instantiate(v) for k, v in (trainer or {}).items()}
    kwargs.setdefault("default_root_dir", str(root))
    kwargs.setdefault("logger", CSVLogger(save_dir=str(root)))
    kwargs.update(overrides)
    if extra_callbacks:
        configured = kwargs.get("callbacks") or []
        kwargs["callbacks"] = [*(configured if isinstance(configured, list) else [configured]), *extra_callbacks]
    return L.Trainer(**kwargs)


# --------------------------------------------------------------------------------------------- estimate-k


def estimate_k(
    model: EventLengthEstimator | None = None,
    data: EventFramesDataModule | None = None,
    trainer: dict | None = None,
    seed_everything: int = 0,
    ckpt_path: str | None = None,
    out: str = "runs/event_length",
    fallback_k: int = 8,
    save_every: int = 100,
    checkpoint: dict | None = None,
) -> int:
    """Train the EventLengthEstimator (or load it), estimate event lengths and write the detector's k.

    Prints the statistics per sequence and over all sequences (mean, std, median, 75th percentile of the event
    lengths in frames), writes ``OUT/k.yaml`` (stack it: ``cellgen fit --config configs/mitosis_detector.yaml
    --config OUT/k.yaml``) and ``OUT/event_lengths.json``, and ends with one JSON line. Paper Sec. III E:
    k = ceil(75th percentile).

    Args:
        model: the estimator (``configs/event_length.yaml``); default settings when omitted.
        data: its frame data module; the demo data when omitted.
        trainer: Lightning Trainer options.
        seed_everything: seed of training and of the artificial events.
        ckpt_path: a trained estimator checkpoint; skips training.
        out: output folder (checkpoint, logs, k.yaml). Training saves ``OUT/last.ckpt`` every ``save_every`` steps
            and resumes from it when it exists, so an interrupted run (or a rerun with a larger
            ``trainer.max_steps``) continues where it stopped; another ``--out`` starts afresh.
        fallback_k: k written when no event is found (the JSON line then says ``"fallback": true``).
        save_every: optimiser steps between the resumable ``last.ckpt`` saves.
        checkpoint: accepted and ignored, so that a config saved by ``cellgen fit`` can be passed as is.
    """
    import lightning as L
    import torch

    L.seed_everything(seed_everything, workers=True, verbose=False)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else EventFramesDataModule()
    if ckpt_path is not None:
        read_checkpoint(ckpt_path, expect_class="EventLengthEstimator")  # safe open, one-line errors
        model = EventLengthEstimator.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    else:
        model = model if model is not None else EventLengthEstimator()
        fit = build_trainer(trainer, out_dir, [_resumable_checkpoint(out_dir, save_every)], enable_checkpointing=True)
        last = out_dir / "last.ckpt"
        resume = last if last.is_file() else None
        if resume is not None:
            read_checkpoint(resume)  # a damaged last.ckpt ends in one line naming it
            print(f"estimate-k: resuming from {resume} (delete it or choose another --out to start afresh)")
        fit.fit(model, datamodule=data, ckpt_path=resume)
        if fit.global_step <= model.hparams.m1_steps:
            raise CellgenInputError(
                None,
                f"training stopped at step {fit.global_step}, before M2 started (m1_steps {model.hparams.m1_steps})",
                "raise trainer.max_steps above model.m1_steps",
            )
        fit.save_checkpoint(out_dir / "event_length.ckpt")
        ckpt_path = str(out_dir / "event_length.ckpt")
    model.eval()
    data.prepare_data()
    lengths: list[int] = []
    per_sequence = []
    for volume in data.volumes():
        stats, _, _ = model.estimate(torch.from_numpy(volume.frames))
        lengths += stats["lengths"]
        per_sequence.append({"sequence": str(volume.path), **_summary(stats)})
        print(f"{volume.path}: {_describe(stats)}")
    overall = lengths_summary(lengths)
    fallback = overall["k"] is None
    k = fallback_k if fallback else max(1, overall["k"])
    print(f"all sequences: {_describe(overall)}")
    k_yaml = out_dir / "k.yaml"
    k_yaml.write_text(
        "# Written by `cellgen estimate-k` (Phan et al. 2019, Sec. III E: k = ceil(p75 of the event lengths)).\n"
        "# Stack it after the detector config: cellgen fit --config configs/mitosis_detector.yaml --config "
        f"{k_yaml}\nmodel:\n  init_args:\n    sequence_length: {k}\n"
    )
    result = {
        "k": k,
        **_summary(overall),
        "fallback": fallback,
        "normal_map": int(model.normal_map_index),
        "k_yaml": str(k_yaml),
        "checkpoint": ckpt_path,
    }
    (out_dir / "event_lengths.json").write_text(json.dumps({**result, "sequences": per_sequence, "lengths": lengths}))
    print(json.dumps(result))
    return 0


def check_event_lengths(
    ckpt: str,
    sequence: str,
    downscale: float = 0.25,
    binarisations: list[str] | None = None,
    area_change: float = 0.15,
    cell_shape: str = "auto",
    out: str | None = None,
) -> int:
    """Check M1's normal-cell map against the lineage: event lengths the annotations imply vs the gaps the map
    leaves at divisions, for each binarisation (issue 12, item 2); one JSON line per binarisation.

    Args:
        ckpt: an EventLengthEstimator checkpoint (M1 trained: ``cellgen fit --config configs/event_length.yaml``).
        sequence: an annotated CTC sequence (TRA masks and ``man_track.txt``).
        downscale: working scale, as in training (Sec. IV A: 1/4).
        binarisations: modes of :func:`~cellgen.models.event_length.binary_maps`; default threshold and robust.
        area_change: a mother frame is part of the event when its area departs this much from its baseline.
        cell_shape: ``round`` (area rule), ``rod`` (the mother's constriction up to the split; bacteria) or
            ``auto`` (rod when the masks' median elongation is above 2.5).
        out: a JSON file for the whole report.
    """
    import torch

    from cellgen.data.ctc import checked_sequence
    from cellgen.data.event_frames import load_volume
    from cellgen.metrics.event_lengths import annotated_event_lengths, map_gaps_at_divisions
    from cellgen.models.event_length import (
        BINARISATIONS,
        binary_maps,
        choose_normal_map,
        erode_within_frames,
        robust_binary,
    )

    modes = list(binarisations or ["threshold", "robust"])
    if bad := [m for m in modes if m not in BINARISATIONS]:
        raise CellgenInputError(None, f"--binarisations: unknown {bad}, choose from {list(BINARISATIONS)}")
    seq = checked_sequence(sequence)
    if not seq.has_tracks or not seq.tra_paths:
        raise CellgenInputError(seq.path, "no NN_GT/TRA masks and man_track.txt", "pass an annotated sequence")
    read_checkpoint(ckpt, expect_class="EventLengthEstimator")
    model = EventLengthEstimator.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    volume = load_volume(seq, downscale)
    maps = model.feature_maps(torch.from_numpy(volume.frames)).numpy()
    from cellgen.metrics.event_lengths import CELL_SHAPES
    from cellgen.metrics.event_lengths import cell_shape as measured_shape

    if cell_shape not in CELL_SHAPES:
        raise CellgenInputError(None, f"--cell_shape must be one of {list(CELL_SHAPES)}, got {cell_shape!r}")
    shape = measured_shape(seq) if cell_shape == "auto" else cell_shape
    annotated = [d.length() for d in annotated_event_lengths(seq, area_change, shape=shape)]
    report: dict[str, Any] = {"sequence": str(seq.path), "divisions": len(annotated), "cell_shape": shape, "modes": {}}
    row = {"divisions_with_event": int(sum(a > 0 for a in annotated))}
    row.update(_summary(lengths_summary([a for a in annotated if a > 0])))
    report["annotated"] = {**row, "lengths": annotated}
    print(
        json.dumps({"sequence": str(seq.path), "measure": f"annotated ({shape})", "divisions": len(annotated), **row})
    )
    hp = model.hparams
    sample = maps[:: max(1, len(maps) // 8)][:8]
    for mode in modes:
        index, _ = choose_normal_map(sample, mode, hp.erosion, sigma=hp.get("smoothing_sigma", 1.0))
        if mode == "robust":
            binary = robust_binary(maps[:, index], hp.get("smoothing_sigma", 1.0))
        else:
            binary = binary_maps(maps, mode)[:, index]
        normal = erode_within_frames(binary, hp.erosion)
        flags, pieces = map_gaps_at_divisions(normal, volume, seq)
        gaps = [d.length() for d in flags]
        row = {
            "map": index,
            "pieces_per_cell": round(pieces, 3),
            "divisions_with_gap": int(sum(g > 0 for g in gaps)),
            **_summary(lengths_summary([g for g in gaps if g > 0])),
        }
        report["modes"][mode] = {**row, "gaps": gaps}
        print(json.dumps({"sequence": str(seq.path), "measure": f"gap in y ({mode})", "divisions": len(gaps), **row}))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1))
    return 0


def _resumable_checkpoint(folder: Path, every: int):
    """Saves only ``folder/last.ckpt`` (whole training state) every ``every`` steps and when training ends."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    if every < 1:
        raise CellgenInputError(None, f"save_every must be positive, got {every}")
    # No version counter: a last.ckpt left by another run (or copied in to extend it) is overwritten, not
    # joined by last-v1.ckpt that the next resume would not look for.
    return ModelCheckpoint(
        dirpath=folder, save_top_k=0, save_last=True, every_n_train_steps=every, enable_version_counter=False
    )


def _summary(stats: dict) -> dict:
    return {key: stats[key] for key in ("events", "mean", "std", "p50", "p75")}


def _describe(stats: dict) -> str:
    if not stats["events"]:
        return "no events found"
    return (
        f"{stats['events']} events, length mean {stats['mean']:.2f} std {stats['std']:.2f} "
        f"median {stats['p50']:.1f} p75 {stats['p75']:.2f} frames -> k = {stats['k']}"
    )


def read_k(path: str | Path) -> int:
    """k from a ``k.yaml`` written by :func:`estimate_k`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CellgenInputError(path, "k file not found", "run cellgen estimate-k first")
    try:
        return int(yaml.safe_load(path.read_text())["model"]["init_args"]["sequence_length"])
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise CellgenInputError(path, "no model.init_args.sequence_length in this file") from exc


# --------------------------------------------------------------------------------------------- mitosis sweep


def mitosis_sweep(
    sequence: str | None = None,
    points: str | None = None,
    ks: list[int] = SWEEP_KS,  # noqa: B006 (jsonargparse needs a literal default)
    train_frames: list[int] = [8, 13, 18],  # noqa: B006
    chosen_k: int | None = None,
    k_file: str | None = None,
    same_test_frames: bool = True,
    steps: int = 1500,
    downscale: float = 0.25,
    crop_size: int | None = 64,
    batch_size: int = 4,
    event_fraction: float = 0.5,
    hidden_channels: int = 16,
    lr: float = 1e-3,
    pos_weight: float | None = None,
    spatial_tol: float = 10.0,
    temporal_tols: list[int] = SWEEP_TOLERANCES,  # noqa: B006
    rule: str = "hungarian",
    architecture: str = "m3",
    head: str = "blob",
    base_channels: int = 32,
    sigma: float = 2.0,
    peak_radius: float = 4.0,
    flip_tta: bool = False,
    intensity_augment: bool = False,
    scale_jitter: float = 0.0,
    edge_window_fraction: float = 0.0,
    optimizer: str = "rmsprop",
    save_checkpoints: bool = False,
    accelerator: str = "auto",
    precision: str | None = None,
    seed: int = 0,
    out: str = "runs/mitosis_sweep",
) -> int:
    """Phan et al. Table II: F1 of the MitosisDetector for each window length k and number of training frames N.

    For every (k, N) with N >= k a fresh detector is trained for ``steps`` steps on the first N frames, its
    threshold is fixed on those frames, and it is scored on the held-out frames. The estimated k joins ``ks`` when
    it is not among them. Each finished run is kept in ``OUT/runs.jsonl`` with its settings: a rerun into the same
    folder with the same settings skips the runs already done (an interrupted sweep continues; adding a k or an N
    runs only the new cells). Writes ``OUT/table.csv``,
    ``OUT/heatmap.png`` (one panel per temporal tolerance; the estimated k is outlined) and each run's test-frame
    detections as ``OUT/detections/k{k}_n{N}.csv`` (for ``cellgen evaluate mitosis``), and ends with one JSON line.
    The default budget (1/4 scale, 64 px crops, 1,500 steps) is where M3 stops underfitting on SIM+ (k = 6: test
    F1 0.11 after 200 steps, 0.40 after 1,500; docs/RESULTS.md); one run takes 5-12 minutes on a CPU core, so
    pass ``--steps 150`` for a quick look.

    Args:
        sequence: raw-frame folder with mitosis annotations (lineage or ``points``); the demo data when omitted.
        points: a points file (CSV ``t,y,x`` or ``x y frame id``) instead of the lineage.
        ks: window lengths (paper: 4, 6, 8, 10, 14, 18).
        train_frames: numbers of annotated training frames N.
        chosen_k: the k estimated by ``cellgen estimate-k``, marked in the heat map.
        k_file: or the ``k.yaml`` it wrote.
        same_test_frames: score every cell on the frames after the largest N, so the table compares like with like;
            false scores each N on all frames after it.
        steps: optimiser steps per detector.
        downscale: frame scale factor (paper Sec. IV A: 1/4).
        crop_size: training crop side in downscaled pixels (None: whole frames).
        batch_size: windows per step.
        event_fraction: share of training windows placed on a mitosis.
        hidden_channels: ConvLSTM channels per direction (paper: 16).
        lr: RMSprop learning rate (paper: 1e-3).
        pos_weight: BCE weight of mitosis voxels (None: plain BCE as in the paper).
        spatial_tol: matching radius in original pixels.
        temporal_tols: matching tolerances in frames, one table column group and heat-map panel each.
        rule: ``hungarian`` (one-to-one) or ``lenient``.
        architecture: ``m3`` (the paper's ConvLSTM) or ``unet`` (frames stacked as channels).
        head: ``blob`` (the paper's dilated labels and components) or ``heatmap`` (Gaussian centres and peaks).
        base_channels: first-level width of the ``unet``.
        sigma: heat-map Gaussian width in working pixels.
        peak_radius: heat-map non-maximum suppression radius in working pixels.
        flip_tta: average the 4 flips of each window at inference.
        intensity_augment: brightness/contrast, gamma and noise augmentation of the training windows.
        scale_jitter: rescale each training window by a log-uniform factor in [1 / (1 + s), 1 + s] (0: off).
        edge_window_fraction: share of training windows padded at an end as inference pads them (0: off).
        optimizer: ``rmsprop`` (the paper) or ``adam``.
        save_checkpoints: keep each run's detector as ``OUT/checkpoints/k{k}_n{N}.ckpt`` (for detect-mitoses).
        accelerator: Lightning accelerator.
        precision: Lightning training precision; None: ``bf16-mixed`` on a GPU, ``32-true`` otherwise
            (``bf16-mixed`` also trains M3 1.6x faster on a CPU with AVX512-BF16).
        seed: seed of every run.
        out: output folder.
    """
    arguments = dict(locals())  # first statement: exactly the call's arguments
    import lightning as L
    from tqdm import tqdm

    from cellgen.data.mitosis_data import MitosisDataModule, MitosisSequence, load_mitosis_sequence
    from cellgen.data.points import write_points_csv
    from cellgen.data.synthetic import demo_sequence
    from cellgen.metrics.mitosis import RULES, score_detections
    from cellgen.models.mitosis_detector import MitosisDetector

    if rule not in RULES:
        raise CellgenInputError(None, f"rule must be one of {RULES}, got {rule!r}")
    if not ks or not train_frames or min(ks) < 1 or min(train_frames) < 1 or steps < 1:
        raise CellgenInputError(None, "ks, train_frames and steps must be positive and non-empty")
    if chosen_k is None and k_file is not None:
        chosen_k = read_k(k_file)
    if precision is None:
        import torch

        precision = "bf16-mixed" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "32-true"
    if chosen_k is not None and chosen_k not in ks:
        ks = [*ks, chosen_k]
    path = sequence or str(demo_sequence("fluo"))
    largest = max(train_frames)
    full = load_mitosis_sequence(path, points, largest, downscale)
    total = len(full.volume.indices)
    if largest >= total:
        raise CellgenInputError(path, f"train_frames up to {largest} leave no test frames ({total} frames)")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(k, n) for k in sorted(ks) for n in sorted(train_frames)]
    eventless = [n for n in sorted(set(train_frames)) if not (full.points[:, 0] < full.volume.indices[n]).any()]
    if eventless:  # nothing to learn from, and training F1 would read 1.0; say so instead of spending the runs
        print(f"mitosis sweep: train_frames {eventless} hold no annotated mitosis; those cells stay empty")
    # A run is reused only under the same settings: every argument but those choosing cells or places to write.
    settings = {name: value for name, value in arguments.items() if name not in SWEEP_LAYOUT_ARGUMENTS}
    settings.update(sequence=str(path), temporal_tols=list(temporal_tols), precision=precision)
    settings["largest_train_frames"] = largest
    for name in ("scale_jitter", "edge_window_fraction"):  # off: journals written before they existed still match
        if not settings[name]:
            del settings[name]
    journal = out_dir / "runs.jsonl"
    finished = _finished_runs(journal, settings)
    if finished:
        print(f"mitosis sweep: {len(finished)} runs already in {journal} with these settings are reused")
    rows: list[dict[str, Any]] = []
    for k, n in tqdm(jobs, desc="mitosis sweep", unit="run"):
        row: dict[str, Any] = {"k": k, "train_frames": n}
        if n < k or n in eventless:  # the paper's constraint N >= k; and no event to learn: the cell stays empty
            rows.append(row)
            continue
        if (k, n) in finished:
            rows.append(finished[(k, n)])
            continue
        started = time.perf_counter()
        L.seed_everything(seed, workers=True, verbose=False)
        data = MitosisDataModule(
            sequences=[path],
            points=[points] if points else None,
            train_frames=n,
            window=k,
            downscale=downscale,
            crop_size=crop_size,
            batch_size=batch_size,
            samples_per_epoch=max(batch_size * steps, 1),
            event_fraction=event_fraction,
            seed=seed,
            intensity_augment=intensity_augment,
            scale_jitter=scale_jitter,
            edge_window_fraction=edge_window_fraction,
            target=head,
            sigma=sigma,
        )
        data.use_sequences([MitosisSequence(full.volume, full.points, n, full.cell_diameter)])
        model = MitosisDetector(
            sequence_length=k,
            hidden_channels=hidden_channels,
            lr=lr,
            pos_weight=pos_weight,
            spatial_tol=spatial_tol,
            architecture=architecture,
            head=head,
            base_channels=base_channels,
            peak_radius=peak_radius,
            flip_tta=flip_tta,
            optimizer=optimizer,
        )
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            max_steps=steps,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=data)
        if save_checkpoints:
            trainer.save_checkpoint(out_dir / "checkpoints" / f"k{k}_n{n}.ckpt")
        item = data.mitosis_sequences()[0]
        result = model.detect(item)
        first_test = full.first_test_frame if same_test_frames else item.first_test_frame
        test_points = item.points[item.points[:, 0] >= first_test]
        found = result["detections"]
        found = found[found[:, 0] >= first_test]
        write_points_csv(out_dir / "detections" / f"k{k}_n{n}.csv", found)  # re-score later with other tolerances
        row.update(
            test_frames=sum(t >= first_test for t in item.volume.indices),
            test_events=len(test_points),
            threshold=result["threshold"],
            train_f1=result["train_f1"],
            detections=len(found),
        )
        for tol in temporal_tols:
            metrics = score_detections(test_points, found, spatial_tol, tol, rule)
            row.update({f"{key}_t{tol}": value for key, value in metrics.items()})
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        with journal.open("a") as f:  # one line per finished run: a crash loses at most the run in progress
            f.write(json.dumps({"settings": settings, "row": row}) + "\n")
    table = out_dir / "table.csv"
    _write_table(table, rows)
    heatmap = out_dir / "heatmap.png"
    _plot_heatmap(heatmap, rows, sorted(ks), sorted(train_frames), temporal_tols, chosen_k, Path(path))
    done = [r for r in rows if f"f1_t{temporal_tols[0]}" in r]
    best = max(done, key=lambda r: r[f"f1_t{temporal_tols[0]}"]) if done else None
    chosen = [r for r in done if r["k"] == chosen_k]
    summary = {
        "table": str(table),
        "heatmap": str(heatmap),
        "sequence": path,
        "chosen_k": chosen_k,
        "best": None if best is None else {key: best[key] for key in ("k", "train_frames", *_f1_keys(temporal_tols))},
        "chosen": [{key: r[key] for key in ("k", "train_frames", *_f1_keys(temporal_tols))} for r in chosen],
    }
    print(json.dumps(summary))
    return 0


def _finished_runs(journal: Path, settings: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    """Rows of earlier runs recorded in ``journal`` under exactly these settings, keyed by (k, N).

    A line cut short by a crash is skipped (that run is simply done again)."""
    finished: dict[tuple[int, int], dict[str, Any]] = {}
    if not journal.is_file():
        return finished
    for line in journal.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("settings") == settings:
            row = entry["row"]
            finished[(int(row["k"]), int(row["train_frames"]))] = row
    return finished


def _f1_keys(tolerances: list[int]) -> list[str]:
    return [f"f1_t{tol}" for tol in tolerances]


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: (f"{v:.4f}" if isinstance(v, float) else v) for key, v in row.items()})


def _plot_heatmap(
    path: Path,
    rows: list[dict[str, Any]],
    ks: list[int],
    frames: list[int],
    tolerances: list[int],
    chosen_k: int | None,
    sequence: Path,
) -> None:
    """F1 heat map, k down and N across, one panel per temporal tolerance; the estimated k's row is outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    width = max(3.0, 0.9 * len(frames) + 1.8)
    fig, axes = plt.subplots(
        1, len(tolerances), figsize=(width * len(tolerances) + 1.0, 1.6 + 0.45 * len(ks)), layout="constrained"
    )
    axes = np.atleast_1d(axes)
    for ax, tol in zip(axes, tolerances, strict=True):
        grid = np.full((len(ks), len(frames)), np.nan)
        for row in rows:
            if f"f1_t{tol}" in row:
                grid[ks.index(row["k"]), frames.index(row["train_frames"])] = row[f"f1_t{tol}"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(ks)):
            for j in range(len(frames)):
                text = "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", color="w" if grid[i, j] < 0.6 else "k", fontsize=8)
        ax.set_xticks(range(len(frames)), [str(n) for n in frames])
        ax.set_yticks(range(len(ks)), [f"{k}*" if k == chosen_k else str(k) for k in ks])
        ax.set_xlabel("training frames N")
        if ax is axes[0]:
            ax.set_ylabel("window length k")
        ax.set_title(f"F1, +/-{tol} frame{'s' if tol != 1 else ''}", fontsize=9)
        if chosen_k in ks:
            i = ks.index(chosen_k)
            ax.add_patch(Rectangle((-0.5, i - 0.5), len(frames), 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="F1")
    marker = f"; * = estimated k = {chosen_k}" if chosen_k is not None else ""
    fig.suptitle(f"{sequence.parent.name}/{sequence.name}{marker}", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
