"""BVDM end to end on the demo data: fit (tiny), predict and synthesize, validated CTC output, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cellgen.cli import main
from cellgen.data.ctc import CTCSequence, read_pixel_size, validate_sequence
from cellgen.data.synthetic import DEMO_PIXEL_SIZE

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny" / "bvdm.yaml")


def test_checkpoint_holds_everything(tiny_bvdm: Path) -> None:
    state = torch.load(tiny_bvdm, weights_only=True)
    assert state["bvdm_shape_model"]["n_angles"] > 0
    keys = state["state_dict"].keys()
    assert any(k.startswith("mask_ddpm.ema_net") for k in keys) and any(k.startswith("voxelmorph.") for k in keys)
    assert state["bvdm_pixel_size"] == DEMO_PIXEL_SIZE.to_dict()  # read from the training frames


def test_predict_writes_valid_ctc(tiny_bvdm: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    args = ["predict", "--config", TINY, f"--ckpt_path={tiny_bvdm}", f"--trainer.default_root_dir={tmp_path}"]
    args += [f"--trainer.callbacks.init_args.output_dir={out}", f"--data.init_args.cache_dir={tmp_path / 'c'}"]
    assert main(args) == 0
    assert validate_sequence(out / "01") == []
    assert (out / "01_preview.gif").is_file()
    seq = CTCSequence(out / "01")
    assert len(seq) == 6 and seq.shape == (128, 128)
    for path in (seq.frame_paths[0], seq.tra_paths[5], seq.seg_paths[3]):  # the training data's pixel size
        assert read_pixel_size(path) == DEMO_PIXEL_SIZE  # 0.5 micron = 2 px per micron, exact in a rational tag


def test_synthesize_divisions_and_per_sequence_seeds(tiny_bvdm: Path, tmp_path: Path) -> None:
    common = ["synthesize", "--ckpt", str(tiny_bvdm), "--frames", "5", "--size", "96x96", "--cells", "3"]
    assert main([*common, "--out", str(tmp_path / "a"), "--num-sequences", "2", "--divisions", "1"]) == 0
    for name in ("01", "02"):
        assert validate_sequence(tmp_path / "a" / name) == []
    assert len(CTCSequence(tmp_path / "a" / "01").divisions()) >= 1
    assert read_pixel_size(tmp_path / "a" / "02").x == pytest.approx(DEMO_PIXEL_SIZE.x)
    # Sequence 02 made alone (first_index 1) is the very same sequence as when made after 01.
    assert main([*common, "--out", str(tmp_path / "b"), "--first-index", "1", "--divisions", "1"]) == 0
    a, b = CTCSequence(tmp_path / "a" / "02"), CTCSequence(tmp_path / "b" / "02")
    for t in range(5):
        np.testing.assert_array_equal(a.image(t), b.image(t))
        np.testing.assert_array_equal(a.tra_mask(t), b.tra_mask(t))


def test_synthesize_statistical_texture_with_fast_later_steps(tiny_bvdm: Path, tmp_path: Path) -> None:
    args = ["synthesize", "--ckpt", str(tiny_bvdm), "--out", str(tmp_path), "--frames", "4", "--size", "96x96"]
    args += ["--cells", "3", "--texture", "statistical", "--later-sampler", "ddim", "--later-steps", "2"]
    assert main(args) == 0
    assert validate_sequence(tmp_path / "01") == []
    seq = CTCSequence(tmp_path / "01")
    masks, image = seq.tra_mask(0), seq.image(0).astype(float)
    assert image[masks > 0].mean() > image[masks == 0].mean()  # cells stand out from the background


def test_synthesize_with_a_shape_model_fitted_elsewhere(tiny_bvdm: Path, demo_fluo: Path, tmp_path: Path) -> None:
    # The checkpoint's networks with a shape model fitted now on a sequence (e.g. after an upgrade of cellgen's
    # statistics): the sequence is written, and a rerun with the same source is recognised as done.
    args = ["synthesize", "--ckpt", str(tiny_bvdm), "--out", str(tmp_path), "--frames", "3", "--size", "96x96"]
    args += ["--cells", "3", "--texture", "statistical", "--shape-from", str(demo_fluo)]
    assert main(args) == 0
    assert validate_sequence(tmp_path / "01") == []
    marker = json.loads((tmp_path / "01" / ".cellgen.json").read_text())
    assert str(demo_fluo) in json.dumps(marker)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--frames", "0"], "--frames must be at least 1"),
        (["--size", "32x32", "--cells", "40"], "too small"),
        (["--size", "big"], "--size must look like"),
        (["--texture", "paint"], "--texture must be one of"),
        (["--later-sampler", "euler"], "--later-sampler must be one of"),
        (["--later-steps", "0"], "--later-steps must be at least 1"),
        (["--shape-from", "/nonexistent/01"], "--shape-from not found"),
    ],
)
def test_synthesize_bad_input(
    tiny_bvdm: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["synthesize", "--ckpt", str(tiny_bvdm), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and message in err
    assert not (tmp_path / "o" / "01").exists()


def test_synthesize_rejects_missing_and_foreign_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synthesize", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    foreign = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, foreign)
    assert main(["synthesize", "--ckpt", str(foreign), "--out", str(tmp_path / "o")]) == 2
    assert "not a BVDM checkpoint" in capsys.readouterr().err


def test_ablation_grid_is_journalled_and_resumed(
    tiny_bvdm: Path, demo_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_seq = demo_dataset / "Demo-Fluo" / "02"
    args = ["bvdm-ablation", "--ckpt", str(tiny_bvdm), "--test", str(test_seq), "--out", str(tmp_path)]
    args += ["--config", str(REPO / "configs" / "tiny" / "downstream.yaml"), "--fid", "false"]
    args += ["--first_steps", "[5]", "--later_steps", "[0,2]", "--frames", "3", "--size", "96x96", "--cells", "3"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the DDPM grid, then the two rows without a DDPM: statistical texture and real cells' textures (exemplars)
    assert [r["cell"] for r in result["rows"]] == ["f0_5_fl_0", "f0_5_fl_2", "statistical", "exemplar"]
    for row in result["rows"]:
        assert 0.0 <= row["SEG"] <= 1.0
    rows = list(csv.DictReader((tmp_path / "ablation.csv").open()))
    assert [r["texture"] for r in rows] == ["ddpm", "ddpm", "statistical", "exemplar"]
    assert len(rows) == 4 and (tmp_path / "ablation_SEG.png").is_file() and (tmp_path / "ablation_DET.png").is_file()
    assert not (tmp_path / "ablation_FID.png").exists()  # --fid false: no empty FID map
    # The same grid again: every cell comes from the journal, nothing is synthesised or trained.
    assert main(args) == 0
    assert capsys.readouterr().out.count("done before (journal)") == 4


def test_subset_keeps_a_valid_window(demo_dataset: Path, tmp_path: Path) -> None:
    source = demo_dataset / "Demo-Fluo" / "01"
    assert main(["prepare-data", "subset", "--sequence", str(source), "--out", str(tmp_path), "--frames", "5"]) == 0
    subset = CTCSequence(tmp_path / "01")
    assert len(subset) == 5 and validate_sequence(tmp_path / "01") == []
    np.testing.assert_array_equal(subset.image(4), CTCSequence(source).image(4))
    assert read_pixel_size(subset.path) == DEMO_PIXEL_SIZE  # the source's pixel size is kept
    assert all(track.end <= 4 for track in subset.tracks.values())


def test_ablation_exemplar_row_needs_an_exemplar_bank() -> None:
    from cellgen.commands.bvdm_ablation import _has_exemplars

    assert not _has_exemplars(None) and not _has_exemplars({"appearance": None})  # models fitted before exemplars
    assert not _has_exemplars({"appearance": {"exemplar_textures": []}})
    assert _has_exemplars({"appearance": {"exemplar_textures": [[0.1, 0.2]]}})
