"""Downstream evaluation: linking into CTC results, watershed instances, the segmenter, `cellgen evaluate ...`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from cellgen.cli import main
from cellgen.data.ctc import CTCSequence, Track, read_tracks, write_sequence, write_tiff, write_tracks
from cellgen.data.segmentation_data import (
    SegmentationDataModule,
    estimate_tra_expansion,
    instance_distance,
    segmentation_targets,
    training_instances,
)
from cellgen.data.synthetic import write_demo_dataset
from cellgen.metrics.linking import CTCResultWriter, check_result, link_masks, tidy_lineage
from cellgen.models.segmentation import CellSegmenter, watershed_instances

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "tiny" / "downstream.yaml"


def _disk(mask: np.ndarray, cy: float, cx: float, r: float, label: int) -> None:
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = label


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 12-frame 128x128 fluo sequences: the whole downstream pipeline runs on them in seconds."""
    root = tmp_path_factory.mktemp("small-demo")
    write_demo_dataset(root, frames=12, size=128, cells=6, flavours=("fluo",), sequences=2)
    return root / "Demo-Fluo"


# --------------------------------------------------------------------------------------------- linking


def _scene() -> list[np.ndarray]:
    """A cell moving right, a mother dividing at frame 3, a cell vanishing after frame 3 (arbitrary ids)."""
    frames = []
    for t in range(6):
        mask = np.zeros((64, 64), np.int32)
        _disk(mask, 15, 10 + 2 * t, 6, 70)
        if t < 3:
            _disk(mask, 45, 45, 8, 30)
        else:
            _disk(mask, 45, 40, 5, 90)
            _disk(mask, 45, 51, 5, 40)
        if t < 4:
            _disk(mask, 50, 12, 5, 50)
        frames.append(mask)
    return frames


def test_linking_move_divide_disappear(tmp_path: Path) -> None:
    tracked, tracks = link_masks(_scene())
    # Frame 0 ids follow the sorted input labels: mother (30) -> 1, vanishing (50) -> 2, moving (70) -> 3.
    expected = "1 0 2 0\n2 0 3 0\n3 0 5 0\n4 3 5 1\n5 3 5 1\n"
    writer = CTCResultWriter(tmp_path / "02_RES")
    for t, mask in enumerate(tracked):
        writer.write(t, mask)
    res = writer.finish(tracks)
    assert (res / "res_track.txt").read_text() == expected
    assert check_result(res) == []
    assert sorted(p.name for p in res.glob("mask*.tif")) == [f"mask{t:03d}.tif" for t in range(6)]
    assert np.unique(tracked[3]).tolist() == [0, 2, 3, 4, 5]
    assert tracked[5][15, 20] == 3  # the moving cell keeps its id


def test_linking_keeps_a_shrunken_cell_and_ignores_a_stranger() -> None:
    a, b = np.zeros((40, 40), np.int32), np.zeros((40, 40), np.int32)
    _disk(a, 20, 20, 12, 1)
    _disk(b, 20, 20, 3, 5)  # IoU ~0.06 < min_iou, but it lies inside the old mask: same cell
    _disk(b, 3, 3, 2, 6)  # outside everything: a new track
    _, tracks = link_masks([a, b])
    assert tracks == {1: Track(1, 0, 1, 0), 2: Track(2, 1, 1, 0)}


def test_tidy_lineage_undoes_false_divisions_and_drops_flicker() -> None:
    tracks = [
        Track(1, 0, 4), Track(2, 5, 9, 1), Track(3, 5, 5, 1),  # a 1-frame fragment fakes a division of 1
        Track(5, 3, 3),  # a speck seen once
        Track(6, 9, 9),  # appears in the last frame: kept, the sequence end cuts it short
        Track(7, 0, 2), Track(8, 3, 9, 7), Track(9, 3, 8, 7),  # a true division: both daughters persist
        Track(10, 0, 3), Track(11, 4, 6, 10), Track(12, 4, 4, 10),  # a fake division, then ...
        Track(13, 7, 9, 11), Track(14, 7, 9, 11),  # ... a true one of the surviving daughter
    ]  # fmt: skip
    relabel, tidy = tidy_lineage({t.label: t for t in tracks}, min_length=3, first_frame=0, last_frame=9)
    assert tidy == {
        1: Track(1, 0, 9), 6: Track(6, 9, 9), 7: Track(7, 0, 2), 8: Track(8, 3, 9, 7), 9: Track(9, 3, 8, 7),
        10: Track(10, 0, 6), 13: Track(13, 7, 9, 10), 14: Track(14, 7, 9, 10),
    }  # fmt: skip
    assert {k: v for k, v in relabel.items() if k != v} == {2: 1, 3: 0, 5: 0, 11: 10, 12: 0}


def test_check_result_reports_gaps_and_bad_parents(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint16)
    mask[2:4, 2:4] = 1
    for t in (0, 2):  # track 1 is absent from frame 1
        write_tiff(tmp_path / f"mask{t:03d}.tif", mask)
    write_tiff(tmp_path / "mask001.tif", np.zeros((8, 8), np.uint16))
    write_tracks(tmp_path / "res_track.txt", [Track(1, 0, 2, 0), Track(2, 1, 1, 1)])
    problems = check_result(tmp_path)
    assert any("track 1 is missing from frames [1]" in p for p in problems)
    assert any("parent 1 ends at 2" in p for p in problems)


# --------------------------------------------------------------------------------------------- instances


def _touching_disks() -> np.ndarray:
    truth = np.zeros((48, 64), np.int32)
    _disk(truth, 24, 22, 11, 1)
    _disk(truth, 24, 42, 11, 2)  # overlapping disks: the second overwrites, so they share a straight border
    return truth


def test_targets_peak_in_cells_and_vanish_where_they_touch() -> None:
    truth = _touching_disks()
    foreground, distance = segmentation_targets(truth)
    assert foreground.sum() == (truth > 0).sum()
    assert distance[24, 22] > 0.8 and distance[24, 42] > 0.8  # near each centre (the border cuts the disks)
    assert distance[24, 32] < 0.15  # on the shared border
    assert distance.max() == pytest.approx(1.0) and distance[truth == 0].max() == 0


def test_watershed_splits_two_touching_disks() -> None:
    truth = _touching_disks()
    labels = watershed_instances((truth > 0).astype(np.float32), instance_distance(truth), min_size=10)
    assert labels.max() == 2
    for cell in (1, 2):
        found = np.bincount(labels[truth == cell]).argmax()
        iou = ((labels == found) & (truth == cell)).sum() / ((labels == found) | (truth == cell)).sum()
        assert iou > 0.9


def test_watershed_keeps_coreless_blobs_merges_fragments_drops_specks() -> None:
    foreground = np.zeros((32, 32), np.float32)
    distance = np.full_like(foreground, 0.2)
    foreground[4:12, 4:12] = 1.0  # a blob whose distance never reaches the seed threshold
    foreground[20, 20] = 1.0  # an isolated one-pixel speck
    foreground[20:30, 4:14] = 1.0  # a cell with one core ...
    distance[22:28, 6:12] = 0.9
    foreground[25, 14:16] = 1.0  # ... and a 2-pixel fragment with a core of its own, attached to it
    distance[25, 15] = 0.9
    labels = watershed_instances(foreground, distance, min_size=4)
    assert labels.max() == 2 and (labels == labels[6, 6]).sum() == 64
    assert labels[20, 20] == 0 and labels[25, 15] == labels[25, 8] != 0


def test_partial_seg_is_pasted_over_grown_tra(tmp_path: Path) -> None:
    """TRA markers (r=6) of two cells, SEG (r=10) of one: training masks keep both cells, the annotated one
    with its SEG outline, and the growth estimated from the SEG frame is the radius difference."""
    tra, seg = np.zeros((64, 96), np.uint16), np.zeros((64, 96), np.uint16)
    for label, cx in ((1, 24), (2, 70)):
        _disk(tra, 32, cx, 6, label)
    _disk(seg, 32, 24, 10, 1)
    seq_dir = write_sequence(
        tmp_path, "01", [np.zeros((64, 96), np.uint8)], [tra], {1: Track(1, 0, 0), 2: Track(2, 0, 0)}, {0: seg}
    )
    seq = CTCSequence(seq_dir)
    assert estimate_tra_expansion(seq, max_radius=8) == pytest.approx(4.0, abs=1.0)
    masks = training_instances(seq, 0, tra_expand=0.0)
    ids = np.unique(masks[masks > 0])
    assert ids.size == 2
    assert (masks == masks[32, 24]).sum() == (seg > 0).sum()  # the SEG outline replaced its TRA marker
    assert (masks == masks[32, 70]).sum() == (tra == 2).sum()  # the unannotated cell is kept


# --------------------------------------------------------------------------------------------- segmenter


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.values.append(float(outputs["loss"]))


def test_segmenter_fits_demo_data(small_demo: Path, one_thread: None) -> None:
    L.seed_everything(0, verbose=False)
    data = SegmentationDataModule([str(small_demo / "01")], crop_size=32, batch_size=4, samples_per_epoch=160)
    model = CellSegmenter(base_channels=8, channel_mults=(1, 2), lr=5e-3, min_size=4)
    losses = _Losses()
    trainer = L.Trainer(
        max_steps=40,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        callbacks=[losses],
    )
    trainer.fit(model, datamodule=data)
    assert np.mean(losses.values[-8:]) < 0.7 * np.mean(losses.values[:4])
    image = data.train_set.images[0]
    labels = model.segment(image[:100, :90])  # any size: padded inside
    assert labels.shape == (100, 90) and labels.dtype == np.int32
    batch = next(iter(data.val_dataloader()))
    assert model.predict_step(batch, 0).shape == (4, 2, 32, 32)


# --------------------------------------------------------------------------------------------- commands


def test_evaluate_downstream_end_to_end(small_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "downstream", f"--config={TINY_CONFIG}", f"--out={tmp_path}"]
    args += [f"--train={small_demo / '01'}", f"--test={small_demo / '02'}", f"--synthetic=[{small_demo / '01'}]"]
    assert main([*args, "--combined=false"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["name"] for row in result["rows"]] == ["real", "synthetic"]
    for row in result["rows"]:
        for key in ("SEG", "TRA", "DET"):
            assert 0.0 <= row[key] <= 1.0
    # Same data, budget and seed: the two rows are the same run, so the ratio is exactly 1.
    assert result["ratio"] == {"synthetic": {"SEG": 1.0, "TRA": 1.0, "DET": 1.0}}
    res = tmp_path / "real" / "02_RES"
    assert check_result(res) == []
    assert len(list(res.glob("mask*.tif"))) == 12
    assert read_tracks(res / "res_track.txt")
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["rows"]) == 3 and "| synthetic / real |" in (tmp_path / "report.md").read_text()
    # A rerun with the same data, budget and seed reuses the finished rows; the added row is trained.
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("reusing") == 2
    assert [row["name"] for row in json.loads(out.strip().splitlines()[-1])["rows"]][-1] == "real + synthetic"


def test_evaluate_ctc_of_the_ground_truth_is_perfect(
    small_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt = small_demo / "02_GT"
    for path in (gt / "TRA").glob("man_track*.tif"):
        shutil.copy(path, tmp_path / path.name.replace("man_track", "mask"))
    shutil.copy(gt / "TRA" / "man_track.txt", tmp_path / "res_track.txt")
    assert main(["evaluate", "ctc", f"--gt={gt}", f"--res={tmp_path}"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["TRA"] == pytest.approx(1.0) and scores["DET"] == pytest.approx(1.0)
    assert scores["SEG"] == pytest.approx(1.0)


def test_evaluate_morphology_writes_a_report(
    small_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "morphology", f"--real={small_demo / '01'}", f"--synthetic={small_demo / '02'}"]
    assert main([*args, f"--out={tmp_path}"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["morphology"]["area"]["real_mean"] > 0
    assert (tmp_path / "morphology.png").is_file() and (tmp_path / "report.md").is_file()


def test_evaluate_downstream_without_ground_truth_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", "downstream", f"--train={tmp_path}", f"--test={tmp_path / 'no' / '02'}"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("cellgen: error:")


def test_evaluate_help_is_fast_to_import() -> None:
    import subprocess
    import sys

    code = "import sys, cellgen.commands.evaluate; print(int(any(m in sys.modules for m in ('torch', 'lightning'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "0"


@pytest.mark.slow
def test_evaluate_fid_on_demo(small_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "fid", f"--real={small_demo / '01'}", f"--synthetic={small_demo / '02'}", f"--out={tmp_path}"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["FID"] >= 0 and torch.isfinite(torch.tensor(result["KID_mean"]))


def test_real_downstream_config_parses(capsys: pytest.CaptureFixture[str]) -> None:
    config = REPO / "configs" / "downstream.yaml"
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "downstream", f"--config={config}", "--train=a", "--test=b", "--print_config"])
    assert info.value.code == 0
    assert "precision: auto" in capsys.readouterr().out
