"""Data commands of the CLI: ``cellgen prepare-data ...`` and ``cellgen check-ctc``."""

from __future__ import annotations

from pathlib import Path

from cellgen.data.ctc import CTCSequence, checked_sequence, read_pixel_size, validate_sequence
from cellgen.data.errors import CellgenInputError


def prepare_demo(
    out: str = "data/demo",
    frames: int = 64,
    size: int = 256,
    cells: int = 12,
    seed: int = 0,
    flavours: list[str] = ["fluo", "phc"],  # noqa: B006 (jsonargparse needs a literal default)
    sequences: int = 2,
    overwrite: bool = False,
) -> int:
    """Generate the procedural demo dataset (CTC layout, seeded, no downloads).

    Writes ``OUT/Demo-Fluo/{01,02}`` (fluorescence-like) and ``OUT/Demo-PhC/{01,02}`` (phase-contrast-like),
    each with full TRA/SEG masks and a lineage with divisions.

    Args:
        out: output dataset folder.
        frames: frames per sequence.
        size: frame height and width in pixels.
        cells: cells in the first frame (they divide over time).
        seed: random seed; the same seed writes the same bytes.
        flavours: imaging flavours to write: fluo, phc.
        sequences: sequences per flavour (01, 02, ...).
        overwrite: replace existing sequences.
    """
    from cellgen.data.synthetic import write_demo_dataset

    if frames < 1 or size < 64 or cells < 1:
        raise CellgenInputError(Path(out), "bad demo settings", "need --frames >= 1, --size >= 64 and --cells >= 1")
    written = write_demo_dataset(out, frames, size, cells, seed, tuple(flavours), sequences, overwrite)
    for path in written:
        seq = CTCSequence(path)
        print(f"{path}  ({len(seq)} frames, {len(seq.tracks)} tracks, {len(seq.divisions())} divisions)")
    return 0


def prepare_patches(
    sequences: list[str],
    cache_dir: str = "auto",
    patch_size: int = 128,
    overlap: float = 0.25,
    num_frames: int = 10,
    start_frames: list[int] = [0],  # noqa: B006
    frame_skip: int = 1,
) -> int:
    """Cut sequences into patch videos and cache them (what the video models train on).

    Args:
        sequences: raw-frame folders, e.g. data/PhC-C2DL-PSC/02.
        cache_dir: where the .npz patch caches go (auto: ``$CELLGEN_CACHE/patches``).
        patch_size: patch height and width (paper Sec. 4.2: 128).
        overlap: fractional overlap between neighbouring patches (paper: 0.25).
        num_frames: frames per patch video (paper: the first 10).
        start_frames: frames at which patch videos start.
        frame_skip: take every k-th frame.
    """
    from cellgen.data.patch_video import PatchVideoSpec, load_patch_videos

    spec = PatchVideoSpec(patch_size, overlap, num_frames, tuple(start_frames), frame_skip)
    for seq in sequences:
        videos, path = load_patch_videos(checked_sequence(seq), spec, cache_dir)
        print(f"{seq}: {videos.shape[0]} patch videos of shape {tuple(videos.shape[1:])} -> {path}")
    return 0


def prepare_subset(sequence: str, out: str, frames: int = 5, start: int = 0, overwrite: bool = False) -> int:
    """Write the first ``frames`` annotated frames of a sequence as a sequence of its own (few-shot experiments).

    The lineage is cut to the window (tracks clipped, parents outside it dropped) and the SEG masks inside it are
    kept, so ``fit`` and ``evaluate downstream`` see exactly what a user who annotated only these frames has.

    Args:
        sequence: source raw-frame folder with TRA for every frame, e.g. data/Fluo-N2DH-GOWT1/01.
        out: output dataset folder (receives the sequence under the source's name, e.g. OUT/01).
        frames: number of frames in the window.
        start: first frame of the window (index into the sequence's frames).
        overwrite: replace an existing output sequence.
    """
    from cellgen.data.ctc import Track, write_sequence

    seq = CTCSequence(sequence)
    indices = seq.frame_indices
    if frames < 1 or start < 0 or start + frames > len(indices):
        raise CellgenInputError(seq.path, f"window start {start} + {frames} frames exceeds its {len(indices)} frames")
    window = indices[start : start + frames]
    missing = [t for t in window if t not in seq.tra_paths]
    if missing:
        raise CellgenInputError(seq.gt_dir / "TRA", f"no TRA mask for frame {missing[0]}", "choose another window")
    first, last = window[0], window[-1]
    kept = {k: v for k, v in seq.tracks.items() if v.begin <= last and v.end >= first}
    tracks = {}
    for k, v in kept.items():
        parent = v.parent if v.parent in kept and v.begin > first else 0
        tracks[k] = Track(k, max(v.begin, first) - first, min(v.end, last) - first, parent)
    seg = {t - first: seq.seg_mask(t) for t in window if t in seq.seg_paths}
    path = write_sequence(
        out,
        seq.name,
        (seq.image(t) for t in window),
        (seq.tra_mask(t) for t in window),
        tracks,
        seg_masks=seg,
        overwrite=overwrite,
        pixel_size=read_pixel_size(seq.path),
    )
    print(f"{path}  ({frames} frames from {seq.path}, {len(tracks)} tracks, {len(seg)} SEG frames)")
    return 0


PREPARE_DATA = {"demo": prepare_demo, "patches": prepare_patches, "subset": prepare_subset}


def check_ctc(sequence: str, skip_masks: bool = False) -> int:
    """Validate a CTC sequence folder (e.g. .../01 with 01_GT beside it) as the CTC tools do.

    Prints one line per problem (stdout) and the first as the error line; exit status 0 when valid, 2 when not.

    Args:
        sequence: raw-frame folder of the sequence.
        skip_masks: only check frames and the track table, not every mask (faster).
    """
    problems = validate_sequence(sequence, check_masks=not skip_masks)
    for line in problems:
        print(line)
    if problems:
        count = f"{len(problems)} problems (listed above), the first: " if len(problems) > 1 else ""
        raise CellgenInputError(None, count + problems[0])
    seq = CTCSequence(sequence)
    print(f"{sequence}: valid ({len(seq)} frames, {len(seq.tracks)} tracks, {len(seq.divisions())} divisions)")
    return 0
