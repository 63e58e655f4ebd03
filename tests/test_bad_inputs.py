"""The bad-input corpus: every command, real broken files made from the demo data, one line each.

A session fixture writes a small demo dataset with ``cellgen prepare-data demo`` and derives every broken
variant from it (NaN frames, name collisions, float masks, truncated TIFFs and checkpoints, malformed tables,
malicious pickles ...). Each case runs ``cellgen`` in-process and must end with exit status 2 and exactly one
stderr line ``cellgen: error: ...`` that names the file (or option) and ends with a fix in parentheses. Valid
variants (LZW/zlib TIFF, CRLF, BOM, trailing blanks) must be accepted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellgen.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_VIDEO = str(REPO / "configs" / "tiny" / "video_diffusion.yaml")
TINY_BVDM = str(REPO / "configs" / "tiny" / "bvdm.yaml")


class _Evil:
    """Unpickling this runs ``touch SENTINEL``: the payload of a malicious checkpoint."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.sentinel}",))


@dataclass
class Corpus:
    """Paths of the pristine demo data and of the scratch area where variants are made."""

    root: Path
    base: Path  # folder holding 01, 01_GT, 02, 02_GT (6 frames of 64x64)
    sentinel: Path

    def sequence(self, name: str, mutate: Callable[[Path], None] | None = None) -> Path:
        """A fresh copy of sequence 01 under ``name``/, changed by ``mutate(seq_dir)``; returns ``.../01``."""
        target = self.root / "cases" / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.base / "01", target / "01")
        shutil.copytree(self.base / "01_GT", target / "01_GT")
        if mutate is not None:
            mutate(target / "01")
        return target / "01"

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.root / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def result(self, name: str, mutate: Callable[[Path], None] | None = None) -> tuple[Path, Path]:
        """(GT folder, result folder): the GT TRA masks and table copied as a perfect CTC result, then mutated."""
        gt = self.base / "01_GT"
        res = self.root / "results" / name
        if res.exists():
            shutil.rmtree(res)
        res.mkdir(parents=True)
        for path in sorted((gt / "TRA").glob("man_track*.tif")):
            shutil.copy(path, res / path.name.replace("man_track", "mask"))
        shutil.copy(gt / "TRA" / "man_track.txt", res / "res_track.txt")
        if mutate is not None:
            mutate(res)
        return gt, res

    def checkpoint(self, name: str, state: object) -> Path:
        path = self.root / "ckpt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    args = ["prepare-data", "demo", "--out", str(root / "demo"), "--frames", "6", "--size", "64", "--cells", "3"]
    assert main([*args, "--flavours", "[fluo]", "--sequences", "1"]) == 0
    return Corpus(root, root / "demo" / "Demo-Fluo", root / "evil-ran")


# --------------------------------------------------------------------------------------------- mutations


def _frame(seq: Path, t: int) -> Path:
    return seq / f"t{t:03d}.tif"


def _mask(seq: Path, t: int) -> Path:
    return seq.parent / "01_GT" / "TRA" / f"man_track{t:03d}.tif"


def _table(seq: Path) -> Path:
    return seq.parent / "01_GT" / "TRA" / "man_track.txt"


def _rows(seq: Path) -> list[list[int]]:
    return [[int(v) for v in line.split()] for line in _table(seq).read_text().splitlines() if line.strip()]


def _write_rows(seq: Path, rows: list[list[int]]) -> None:
    _table(seq).write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))


def _set_pixel(value: float) -> Callable[[Path], None]:
    def mutate(seq: Path) -> None:
        frame = tifffile.imread(_frame(seq, 1)).astype(np.float32)
        frame[3, 4] = value
        tifffile.imwrite(_frame(seq, 1), frame)

    return mutate


def _stack_3d(seq: Path) -> None:
    frame = tifffile.imread(_frame(seq, 2))
    tifffile.imwrite(_frame(seq, 2), np.stack([frame] * 3))


def _collision(seq: Path) -> None:
    shutil.copy(_frame(seq, 0), seq / "t0000.tif")


def _mixed_widths(seq: Path) -> None:
    _frame(seq, 5).rename(seq / "t0005.tif")


def _mask_shape(seq: Path) -> None:
    tifffile.imwrite(_mask(seq, 2), tifffile.imread(_mask(seq, 2))[:32, :32])


def _float_masks(seq: Path) -> None:
    tifffile.imwrite(_mask(seq, 1), tifffile.imread(_mask(seq, 1)).astype(np.float32))


def _negative_labels(seq: Path) -> None:
    mask = tifffile.imread(_mask(seq, 1)).astype(np.int16)
    mask[0, 0] = -1
    tifffile.imwrite(_mask(seq, 1), mask)


def _unknown_id(seq: Path) -> None:
    mask = tifffile.imread(_mask(seq, 3))
    mask[:2, :2] = 99
    tifffile.imwrite(_mask(seq, 3), mask)


def _id_outside_span(seq: Path) -> None:
    rows = _rows(seq)
    label, begin, end, _ = rows[0]
    _write_rows(seq, [[label, begin, end, 0], *rows[1:]])
    mask = tifffile.imread(_mask(seq, 5))
    if end >= 5:  # make the track end early so that frame 5 shows it outside its span
        rows[0][2] = 4
        for r in rows[1:]:
            if r[3] == label:
                r[3] = 0
        _write_rows(seq, rows)
        mask[:2, :2] = label
    tifffile.imwrite(_mask(seq, 5), mask)


def _erase_track(seq: Path) -> None:
    label = _rows(seq)[0][0]
    mask = tifffile.imread(_mask(seq, 0))
    mask[mask == label] = 0
    tifffile.imwrite(_mask(seq, 0), mask)


def _edit_table(edit: Callable[[list[list[int]]], list[list[int]]]) -> Callable[[Path], None]:
    return lambda seq: _write_rows(seq, edit(_rows(seq)))


def _b_after_e(rows: list[list[int]]) -> list[list[int]]:
    rows[0][1], rows[0][2] = rows[0][2] + 1, rows[0][2]
    return rows


def _missing_parent(rows: list[list[int]]) -> list[list[int]]:
    rows[-1][3] = 777
    return rows


def _own_parent(rows: list[list[int]]) -> list[list[int]]:
    rows[0][3] = rows[0][0]
    return rows


def _late_parent(rows: list[list[int]]) -> list[list[int]]:
    rows[-1][3] = rows[0][0]
    rows[0][2] = max(rows[0][2], rows[-1][1])
    return rows


def _ends_late(rows: list[list[int]]) -> list[list[int]]:
    rows[0][2] = 40
    return rows


def _negative_id(rows: list[list[int]]) -> list[list[int]]:
    return [*rows, [-3, 0, 0, 0]]


def _text_table(text: str) -> Callable[[Path], None]:
    return lambda seq: _table(seq).write_text(text)


def _duplicate_row(seq: Path) -> None:
    rows = _rows(seq)
    _write_rows(seq, [*rows, rows[0]])


def _bytes(path_of: Callable[[Path], Path], content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def mutate(seq: Path) -> None:
        path = path_of(seq)
        path.write_bytes(content(path.read_bytes()))

    return mutate


def _frame_size(seq: Path) -> None:
    tifffile.imwrite(_frame(seq, 2), tifffile.imread(_frame(seq, 2))[:48, :48])


def _gap(seq: Path) -> None:
    _frame(seq, 3).unlink()


def _no_frames(seq: Path) -> None:
    for path in seq.glob("t*.tif"):
        path.unlink()


def _no_table(seq: Path) -> None:
    _table(seq).unlink()


def _float_seg(seq: Path) -> None:
    seg = next((seq.parent / "01_GT" / "SEG").glob("man_seg*.tif"))
    tifffile.imwrite(seg, tifffile.imread(seg).astype(np.float64))


ZERO = lambda data: b""  # noqa: E731
HALF = lambda data: data[: len(data) // 2]  # noqa: E731
TEXT = lambda data: b"this is not a TIFF image\n"  # noqa: E731

# name -> (mutation, what the error line must name)
SEQUENCE_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "nan-frame": (_set_pixel(float("nan")), "t001.tif"),
    "inf-frame": (_set_pixel(float("inf")), "t001.tif"),
    "3d-stack-frame": (_stack_3d, "t002.tif"),
    "t000-and-t0000": (_collision, "t0000.tif"),
    "mixed-digit-widths": (_mixed_widths, "t0005.tif"),
    "mask-shape-differs": (_mask_shape, "man_track002.tif"),
    "float-masks": (_float_masks, "man_track001.tif"),
    "negative-labels": (_negative_labels, "man_track001.tif"),
    "mask-id-not-in-table": (_unknown_id, "man_track003.tif"),
    "mask-id-outside-span": (_id_outside_span, "man_track005.tif"),
    "track-missing-from-mask": (_erase_track, "man_track.txt"),
    "b-after-e": (_edit_table(_b_after_e), "man_track.txt"),
    "parent-not-in-table": (_edit_table(_missing_parent), "man_track.txt"),
    "own-parent": (_edit_table(_own_parent), "man_track.txt"),
    "parent-ends-late": (_edit_table(_late_parent), "man_track.txt"),
    "track-ends-after-last-frame": (_edit_table(_ends_late), "man_track.txt"),
    "negative-track-id": (_edit_table(_negative_id), "man_track.txt"),
    "table-not-integers": (_text_table("1 0 a 0\n"), "man_track.txt"),
    "table-three-columns": (_text_table("1 0 5\n"), "man_track.txt"),
    "table-duplicate-id": (_duplicate_row, "man_track.txt"),
    "table-missing": (_no_table, "man_track.txt"),
    "zero-byte-frame": (_bytes(lambda s: _frame(s, 1), ZERO), "t001.tif"),
    "truncated-frame": (_bytes(lambda s: _frame(s, 1), HALF), "t001.tif"),
    "non-tiff-frame": (_bytes(lambda s: _frame(s, 1), TEXT), "t001.tif"),
    "zero-byte-mask": (_bytes(lambda s: _mask(s, 2), ZERO), "man_track002.tif"),
    "truncated-mask": (_bytes(lambda s: _mask(s, 2), HALF), "man_track002.tif"),
    "frame-size-differs": (_frame_size, "t002.tif"),
    "gap-in-frames": (_gap, "01"),
    "no-frames": (_no_frames, "01"),
    "float-seg-mask": (_float_seg, "man_seg"),
}

# The cases a training command (fit) must refuse too: what the data modules read.
FIT_CASES = [
    "nan-frame",
    "3d-stack-frame",
    "t000-and-t0000",
    "mixed-digit-widths",
    "mask-shape-differs",
    "float-masks",
    "mask-id-not-in-table",
    "b-after-e",
    "truncated-frame",
    "table-missing",
]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def _assert_one_line(code: int, out: str, err: list[str], names: str) -> None:
    assert code == 2, (code, err)
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("cellgen: error: "), line
    assert names in line, (names, line)
    assert line.rstrip().endswith(")") and "(" in line, f"no fix in: {line}"
    assert "Traceback" not in out


@pytest.mark.parametrize("case", sorted(SEQUENCE_CASES))
def test_check_ctc_refuses(case: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    mutate, names = SEQUENCE_CASES[case]
    seq = corpus.sequence(case, mutate)
    _assert_one_line(*_run(["check-ctc", str(seq)], capsys), names)


@pytest.mark.parametrize("case", FIT_CASES)
def test_fit_refuses_bad_data(case: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    mutate, names = SEQUENCE_CASES[case]
    seq = corpus.sequence(f"fit-{case}", mutate)
    args = ["fit", "--config", TINY_VIDEO, f"--data.init_args.sequences=[{seq}]"]
    _assert_one_line(*_run([*args, f"--trainer.default_root_dir={corpus.root / 'runs'}"], capsys), names)
    assert not (corpus.root / "runs").exists()  # refused before anything was built or written


OTHER_COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "evaluate-downstream": lambda bad, good: ["evaluate", "downstream", "--train", str(bad), "--test", str(good)],
    "evaluate-morphology": lambda bad, good: ["evaluate", "morphology", "--real", str(bad), "--synthetic", str(good)],
    "evaluate-fid": lambda bad, good: ["evaluate", "fid", "--real", str(bad), "--synthetic", str(good)],
    "evaluate-mitosis-gt-folder": lambda bad, good: ["evaluate", "mitosis", "--gt", str(bad), "--pred", "x.csv"],
}


@pytest.mark.parametrize("command", sorted(OTHER_COMMANDS))
def test_evaluation_commands_refuse_bad_sequences(
    command: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = corpus.sequence(f"{command}-nan", _set_pixel(float("nan")))
    args = OTHER_COMMANDS[command](bad, corpus.base / "01")
    _assert_one_line(
        *_run([*args, "--out", str(corpus.root / "eval-out")] if "mitosis" not in command else args, capsys), "t001.tif"
    )
    assert not (corpus.root / "eval-out" / "report.json").exists()


def test_fit_on_a_missing_accelerator(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args = ["fit", "--config", TINY_VIDEO, "--trainer.accelerator=gpu", f"--trainer.default_root_dir={corpus.root}"]
    _assert_one_line(*_run(args, capsys), "--trainer.accelerator")


# --------------------------------------------------------------------------------------------- checkpoints


def _checkpoint_cases(corpus: Corpus) -> dict[str, tuple[Path, str]]:
    real = {"state_dict": {"w": torch.zeros(4096)}, "hyper_parameters": {}}
    truncated = corpus.checkpoint("truncated.ckpt", real)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    other = {"state_dict": {}, "hyper_parameters": {"_class_path": "cellgen.models.mask_ddpm.MaskDDPM"}}
    folder = corpus.root / "ckpt" / "a-folder.ckpt"
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "missing": (corpus.root / "ckpt" / "none.ckpt", "none.ckpt"),
        "zero-bytes": (corpus.file("zero.ckpt", b""), "zero.ckpt"),
        "random-bytes": (corpus.file("random.ckpt", np.random.default_rng(0).bytes(3000)), "random.ckpt"),
        "truncated": (truncated, "truncated.ckpt"),
        "not-lightning": (corpus.checkpoint("plain.ckpt", {"weights": torch.zeros(3)}), "plain.ckpt"),
        "other-model": (corpus.checkpoint("mask_ddpm.ckpt", other), "MaskDDPM"),
        "malicious-pickle": (corpus.checkpoint("evil.ckpt", {"state_dict": {}, "x": _Evil(corpus.sentinel)}), "evil"),
        "a-folder": (folder, "a-folder.ckpt"),
    }


CKPT_CASES = ["missing", "zero-bytes", "random-bytes", "truncated", "not-lightning", "other-model", "malicious-pickle"]


@pytest.mark.parametrize("command", ["fit", "predict"])
@pytest.mark.parametrize("case", [*CKPT_CASES, "a-folder"])
def test_lightning_commands_refuse_bad_checkpoints(
    command: str, case: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    path, names = _checkpoint_cases(corpus)[case]
    args = [command, "--config", TINY_BVDM, f"--ckpt_path={path}", f"--trainer.default_root_dir={corpus.root / 'r'}"]
    _assert_one_line(*_run(args, capsys), names)
    assert not corpus.sentinel.exists(), "a malicious checkpoint ran code"


@pytest.mark.parametrize("case", CKPT_CASES)
def test_synthesize_and_estimate_k_refuse_bad_checkpoints(
    case: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    path, names = _checkpoint_cases(corpus)[case]
    out = corpus.root / "synth-out"
    _assert_one_line(*_run(["synthesize", "--ckpt", str(path), "--out", str(out)], capsys), names)
    assert not (out / "01").exists()
    if case != "other-model":  # estimate-k checkpoints carry no class path; the rest applies
        args = ["estimate-k", "--ckpt_path", str(path), "--out", str(corpus.root / "k")]
        _assert_one_line(*_run(args, capsys), names)
    assert not corpus.sentinel.exists(), "a malicious checkpoint ran code"


def test_predict_refuses_weights_that_do_not_fit(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    state = {
        "state_dict": {"net.bogus": torch.zeros(2)},
        "hyper_parameters": {"_class_path": "cellgen.models.video_diffusion.VideoDiffusion"},
        "pytorch-lightning_version": "2.6.6",
    }
    path = corpus.checkpoint("other-version.ckpt", state)
    args = ["predict", "--config", TINY_VIDEO, f"--ckpt_path={path}", f"--trainer.default_root_dir={corpus.root / 'p'}"]
    code, out, err = _run(args, capsys)
    # Found only while Lightning restores the weights: the Trainer's banners may precede the one error line.
    errors = [line for line in err if line.startswith("cellgen: error:")]
    assert code == 2 and len(errors) == 1 and "other-version.ckpt" in errors[0] and "do not fit" in errors[0], err


def test_resume_from_last_with_nothing_there(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    root = corpus.root / "never-trained"
    args = ["fit", "--config", TINY_VIDEO, "--ckpt_path=last", f"--trainer.default_root_dir={root}"]
    _assert_one_line(*_run(args, capsys), "never-trained")


# --------------------------------------------------------------------------------------------- configs


def test_config_errors(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    broken = corpus.file("broken.yaml", "model:\n  class_path: x\n  init_args: {a: [1,\n")
    listing = corpus.file("list.yaml", "- 1\n- 2\n")
    cases = [
        (["fit", "--config", str(broken)], "broken.yaml"),
        (["fit", "--config", str(listing)], "list.yaml"),
        (["fit", "--config", str(corpus.root / "nope.yaml")], "nope.yaml"),
        (["fit", "--config", TINY_VIDEO, "--model.init_args.no_such_option=3"], "no_such_option"),
        (["fit", "--config", TINY_VIDEO, "--trainer.max_steps=many"], "trainer.max_steps"),
        (["synthesize", "--config", str(broken)], "broken.yaml"),
        (["evaluate", "ctc", "--gt", "x", "--res", "y", "--no-such", "1"], "no_such"),
        (["fitt", "--config", TINY_VIDEO], "fitt"),
    ]
    for args, names in cases:
        _assert_one_line(*_run(args, capsys), names)


# --------------------------------------------------------------------------------------------- synthesize


def _foreign_sequence(corpus: Corpus, name: str) -> Path:
    out = corpus.root / name
    out.mkdir(exist_ok=True)
    for sub in ("01", "01_GT"):
        if not (out / sub).exists():
            shutil.copytree(corpus.base / sub, out / sub)
    (out / "01" / ".cellgen.json").unlink(missing_ok=True)  # real data carries no cellgen marker
    return out


def _symlinked_sequence(corpus: Corpus) -> Path:
    out = corpus.root / "linked"
    out.mkdir(exist_ok=True)
    for sub in ("01", "01_GT"):
        if not (out / sub).is_symlink():
            (out / sub).symlink_to(corpus.base / sub)
    return out


SYNTH_CASES: dict[str, tuple[Callable[[Corpus], list[str]], str]] = {
    "out-is-a-file": (lambda c: ["--out", str(c.file("out.txt", "x"))], "out.txt"),
    "negative-first-index": (lambda c: ["--first-index", "-1"], "--first-index"),
    "unknown-sampler": (lambda c: ["--sampler", "euler"], "--sampler"),
    "unknown-device": (lambda c: ["--device", "tpu"], "--device"),
    "zero-frames": (lambda c: ["--frames", "0"], "--frames"),
    "zero-sequences": (lambda c: ["--num-sequences", "0"], "--num-sequences"),
    "bad-size": (lambda c: ["--size", "big"], "--size"),
    "foreign-sequence-no-overwrite": (lambda c: ["--out", str(_foreign_sequence(c, "real1"))], "real1/01"),
    "foreign-sequence-overwrite": (
        lambda c: ["--out", str(_foreign_sequence(c, "real2")), "--overwrite", "true"],
        "real2/01",
    ),
    "symlinked-sequence": (lambda c: ["--out", str(_symlinked_sequence(c)), "--overwrite", "true"], "linked/01"),
}
if not torch.cuda.is_available():
    SYNTH_CASES["cuda-without-gpu"] = (lambda c: ["--device", "cuda"], "--device")


@pytest.mark.parametrize("case", sorted(SYNTH_CASES))
def test_synthesize_refuses(case: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    build, names = SYNTH_CASES[case]
    extra = build(corpus)
    out = [] if "--out" in extra else ["--out", str(corpus.root / "synth-unused")]
    args = ["synthesize", "--ckpt", str(corpus.root / "unused.ckpt"), *out, *extra]
    _assert_one_line(*_run(args, capsys), names)
    assert (corpus.base / "01" / "t000.tif").is_file()  # nothing real was deleted through a link or overwrite


# --------------------------------------------------------------------------------------------- evaluate ctc


def _res_mask(t: int) -> str:
    return f"mask{t:03d}.tif"


def _res_edit(name: str, content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def mutate(res: Path) -> None:
        (res / name).write_bytes(content((res / name).read_bytes()))

    return mutate


def _res_array(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    return lambda res: tifffile.imwrite(res / name, change(tifffile.imread(res / name)))


def _res_rows(change: Callable[[list[list[int]]], list[list[int]]]) -> Callable[[Path], None]:
    def mutate(res: Path) -> None:
        rows = [[int(v) for v in line.split()] for line in (res / "res_track.txt").read_text().splitlines() if line]
        (res / "res_track.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in change(rows)))

    return mutate


def _label(value: int) -> Callable[[np.ndarray], np.ndarray]:
    def change(mask: np.ndarray) -> np.ndarray:
        mask = mask.copy()
        mask[:2, :2] = value
        return mask

    return change


EVAL_CTC_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "zero-byte-mask": (_res_edit(_res_mask(1), ZERO), _res_mask(1)),
    "truncated-mask": (_res_edit(_res_mask(1), HALF), _res_mask(1)),
    "non-tiff-mask": (_res_edit(_res_mask(1), TEXT), _res_mask(1)),
    "table-not-integers": (_res_edit("res_track.txt", lambda d: b"1 0 x 0\n"), "res_track.txt"),
    "table-b-after-e": (_res_rows(_b_after_e), "res_track.txt"),
    "table-missing": (lambda res: (res / "res_track.txt").unlink(), "res_track.txt"),
    "label-not-in-table": (_res_array(_res_mask(2), _label(99)), _res_mask(2)),
    "float-masks": (_res_array(_res_mask(0), lambda m: m.astype(np.float32)), _res_mask(0)),
    "uint8-masks": (_res_array(_res_mask(0), lambda m: m.astype(np.uint8)), _res_mask(0)),
    "mask-size-differs": (_res_array(_res_mask(3), lambda m: m[:40, :40]), _res_mask(3)),
    "fewer-masks": (lambda res: (res / _res_mask(5)).unlink(), "results"),
    "no-masks": (lambda res: [p.unlink() for p in res.glob("mask*.tif")], "results"),
}


@pytest.mark.parametrize("case", sorted(EVAL_CTC_CASES))
def test_evaluate_ctc_refuses(case: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    mutate, names = EVAL_CTC_CASES[case]
    gt, res = corpus.result(case, mutate)
    _assert_one_line(*_run(["evaluate", "ctc", "--gt", str(gt), "--res", str(res)], capsys), names)


def test_evaluate_ctc_missing_folders(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    gt, res = corpus.result("valid-for-missing")
    _assert_one_line(*_run(["evaluate", "ctc", "--gt", str(gt), "--res", str(res.parent / "nope")], capsys), "nope")
    args = ["evaluate", "ctc", "--gt", str(gt.parent / "02_GT"), "--res", str(res)]
    _assert_one_line(*_run(args, capsys), "02_GT")


# --------------------------------------------------------------------------------------------- evaluate mitosis

GT_POINTS = "t,y,x\n2,10,10\n4,30,30\n"
MITOSIS_CASES: dict[str, tuple[str | None, list[str], str]] = {
    "pred-missing": (None, [], "pred.csv"),
    "pred-empty": ("", [], "pred.csv"),
    "pred-no-header": ("1,2,3\n", [], "pred.csv"),
    "pred-missing-column": ("t,y\n1,2\n", [], "pred.csv"),
    "pred-non-numeric": ("t,y,x\n1,two,3\n", [], "pred.csv"),
    "pred-nan": ("t,y,x\n1,nan,3\n", [], "pred.csv"),
    "pred-field-count": ("t,y,x\n1,2\n", [], "pred.csv"),
    "unknown-rule": ("t,y,x\n", ["--rule", "greedy"], "--rule"),
    "negative-tolerance": ("t,y,x\n", ["--spatial-tol", "-1"], "--spatial-tol"),
}


@pytest.mark.parametrize("case", sorted(MITOSIS_CASES))
def test_evaluate_mitosis_refuses(case: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    content, extra, names = MITOSIS_CASES[case]
    gt = corpus.file("gt.csv", GT_POINTS)
    pred = corpus.root / "files" / case / "pred.csv"
    if pred.exists():
        pred.unlink()
    if content is not None:
        pred.parent.mkdir(parents=True, exist_ok=True)
        pred.write_text(content)
    args = ["evaluate", "mitosis", "--gt", str(gt), "--pred", str(pred), *extra]
    _assert_one_line(*_run(args, capsys), names)


def test_evaluate_mitosis_missing_gt(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    pred = corpus.file("pred-ok.csv", "t,y,x\n")
    args = ["evaluate", "mitosis", "--gt", str(corpus.root / "gt-none.csv"), "--pred", str(pred)]
    _assert_one_line(*_run(args, capsys), "gt-none.csv")


# --------------------------------------------------------------------------------------------- prepare-data


def test_prepare_data_refuses(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    out = corpus.root / "prep"
    _assert_one_line(*_run(["prepare-data", "demo", "--out", str(out), "--size", "8"], capsys), "prep")
    # An existing dataset without cellgen's marker (real data) is never replaced by --overwrite.
    real = out / "Demo-Fluo"
    real.mkdir(parents=True)
    for sub in ("01", "01_GT"):
        shutil.copytree(corpus.base / sub, real / sub)
        if sub == "01":
            (real / sub / ".cellgen.json").unlink()
    args = ["prepare-data", "demo", "--out", str(out), "--size", "64", "--frames", "4", "--flavours", "[fluo]"]
    _assert_one_line(*_run([*args, "--overwrite", "true"], capsys), "Demo-Fluo/01")
    assert (real / "01" / "t000.tif").is_file()
    seq = corpus.sequence("patches-bad", _set_pixel(float("nan")))
    _assert_one_line(*_run(["prepare-data", "patches", "--sequences", f"[{seq}]"], capsys), "t001.tif")


# --------------------------------------------------------------------------------------------- valid variants


def _recompress(compression: str) -> Callable[[Path], None]:
    def mutate(seq: Path) -> None:
        for path in [*seq.glob("t*.tif"), *(seq.parent / "01_GT").rglob("*.tif")]:
            tifffile.imwrite(path, tifffile.imread(path), compression=compression)

    return mutate


def _table_text(transform: Callable[[str], bytes]) -> Callable[[Path], None]:
    return lambda seq: _table(seq).write_bytes(transform(_table(seq).read_text()))


VALID_CASES: dict[str, Callable[[Path], None]] = {
    "lzw-tiff": _recompress("lzw"),
    "zlib-tiff": _recompress("zlib"),
    "uncompressed-tiff": _recompress("none"),
    "crlf-table": _table_text(lambda text: text.replace("\n", "\r\n").encode()),
    "trailing-blanks": _table_text(lambda text: (text.replace("\n", "  \n") + "\n\n   \n").encode()),
    "bom-table": _table_text(lambda text: b"\xef\xbb\xbf" + text.encode()),
    "tab-separated-table": _table_text(lambda text: text.replace(" ", "\t").encode()),
}


@pytest.mark.parametrize("case", sorted(VALID_CASES))
def test_valid_variants_are_accepted(case: str, corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    from cellgen.data.ctc import checked_sequence

    seq = corpus.sequence(f"valid-{case}", VALID_CASES[case])
    code, out, err = _run(["check-ctc", str(seq)], capsys)
    assert code == 0 and "valid" in out, err
    assert len(checked_sequence(seq)) == 6  # what fit and the data modules open


def test_valid_result_and_points_variants(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    def crlf(res: Path) -> None:
        table = res / "res_track.txt"
        table.write_bytes(table.read_text().replace("\n", "\r\n").encode() + b"\r\n")

    gt, res = corpus.result("valid-crlf", crlf)
    code, out, err = _run(["evaluate", "ctc", "--gt", str(gt), "--res", str(res)], capsys)
    assert code == 0 and '"TRA": 1.0' in out, err
    gt_csv = corpus.file("gt-bom.csv", b"\xef\xbb\xbf" + GT_POINTS.replace("\n", "\r\n").encode())
    pred = corpus.file("pred-bom.csv", b"\xef\xbb\xbft,y,x,score\r\n2,10,11,0.9\r\n\r\n")
    code, out, err = _run(["evaluate", "mitosis", "--gt", str(gt_csv), "--pred", str(pred)], capsys)
    assert code == 0 and '"tp": 1' in out.replace(" ", "").replace('"tp":1', '"tp": 1'), (out, err)


def test_debug_mode_shows_the_traceback(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    from cellgen.data.errors import CellgenInputError

    seq = corpus.sequence("debug", _set_pixel(float("nan")))
    monkeypatch.setenv("CELLGEN_DEBUG", "1")
    with pytest.raises(CellgenInputError, match="NaN"):
        main(["check-ctc", str(seq)])


def test_installed_command_prints_exactly_one_line(corpus: Corpus) -> None:
    """The real process: a malicious checkpoint given to fit ends in one stderr line, and its code never runs."""
    import subprocess
    import sys

    path, _ = _checkpoint_cases(corpus)["malicious-pickle"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["fit", "--config", TINY_BVDM, f"--ckpt_path={path}", f"--trainer.default_root_dir={corpus.root / 'sp'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "cellgen.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "evil.ckpt" in lines[0], proc.stderr[-2000:]
    assert "would run code" in lines[0] and not corpus.sentinel.exists()
