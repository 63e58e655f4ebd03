"""Event lengths that the annotations imply, and the gaps a binarised normal-cell map leaves at annotated divisions.

Phan et al. (2019, Sec. III C-E) measure how long a cell event lasts as the number of frames during which a cell
is missing from the normal-cell map y (cells in interphase) and M2 restores it. Two checks of that map against the
lineage, per annotated division (the parent ends at frame B - 1, its daughters begin at B):

* :func:`annotated_event_lengths`: the frames around B during which the mother's mask departs from its interphase
  size and a daughter is still small: the "rounding of mother + daughters" that the annotations imply. Rod-shaped
  cells (bacteria) do not round up and grow all through their cycle, so for them the event is the constriction of
  the mother's mask (:func:`waist_ratio`) up to the split at B.
* :func:`map_gaps_at_divisions`: the frames around B during which the cell (the mother before B, the daughters from B)
  is absent from a binary stack y at the working scale: the event as y shows it to M2; and how many pieces y
  breaks an annotated cell into (a fragmented map turns one nucleus into specks that come and go).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cellgen.data.ctc import CTCSequence, daughters_of
from cellgen.data.event_frames import FrameVolume

MAX_HALF_WINDOW = 8  # frames looked at on each side of a division
ROD_ELONGATION = 2.5  # ours: median major / minor axis above which masks are rods (E. coli ~4, SIM+ nuclei ~1.3)
CELL_SHAPES = ("auto", "round", "rod")


@dataclass(frozen=True)
class DivisionFrames:
    """Per-frame measurements around one division; ``frames[i]`` is an original frame index.

    Attributes:
        frame: B, the daughters' first frame.
        frames: the frames measured, B - h .. B + h - 1 where annotated.
        flags: True where the frame is part of the event by the measure.
    """

    frame: int
    frames: tuple[int, ...]
    flags: tuple[bool, ...]

    def length(self) -> int:
        """Length of the run of flagged frames that touches B - 1 or B (0 when neither is flagged)."""
        flagged = dict(zip(self.frames, self.flags, strict=True))
        if not (flagged.get(self.frame - 1) or flagged.get(self.frame)):
            return 0
        start = self.frame - 1 if flagged.get(self.frame - 1) else self.frame
        lo = hi = start
        while flagged.get(lo - 1):
            lo -= 1
        while flagged.get(hi + 1):
            hi += 1
        return hi - lo + 1


def _divisions(seq: CTCSequence) -> list[tuple[int, int, tuple[int, ...]]]:
    """(B, parent, daughters) for every division with a parent track and two or more daughters."""
    tracks = seq.tracks
    out = []
    for parent, kids in sorted(daughters_of(tracks).items()):
        if len(kids) >= 2 and parent in tracks:
            out.append((min(tracks[k].begin for k in kids), parent, tuple(kids)))
    return out


def _cells_at(seq: CTCSequence, b: int, parent: int, kids: tuple[int, ...], t: int) -> tuple[int, ...]:
    """Who the dividing cell is in frame t: the parent before B, the daughters from B."""
    return (parent,) if t < b else kids


def track_areas(seq: CTCSequence, labels: set[int]) -> dict[int, dict[int, int]]:
    """Mask area per frame of each track in ``labels`` ({label: {frame: px}}), from the TRA masks."""
    tracks = seq.tracks
    wanted = sorted(labels)
    frames = sorted({t for lab in wanted for t in range(tracks[lab].begin, tracks[lab].end + 1)} & set(seq.tra_paths))
    areas: dict[int, dict[int, int]] = {lab: {} for lab in wanted}
    for t in frames:
        counts = np.bincount(seq.tra_mask(t).ravel())
        for lab in wanted:
            if tracks[lab].begin <= t <= tracks[lab].end and lab < len(counts) and counts[lab]:
                areas[lab][t] = int(counts[lab])
    return areas


def waist_ratio(mask: np.ndarray) -> float:
    """Narrowest width of a mask's middle (30-70 % of its length) over the median width of its body (10-90 %).

    Widths are pixel counts per 1 px slice across the principal axis: about 1 for a rod, below it where the rod
    constricts before it splits (E. coli masks: 0.4-0.7 in the last frames before many divisions, 0.8-1 otherwise).
    """
    ys, xs = np.nonzero(mask)
    if len(ys) < 10:
        return float("nan")
    points = np.stack([ys, xs], axis=1).astype(np.float64)
    points -= points.mean(axis=0)
    axis = np.linalg.eigh(np.cov(points.T))[1][:, -1]
    along = points @ axis
    profile = np.bincount(np.round(along - along.min()).astype(int)).astype(np.float64)
    n = len(profile)
    middle = profile[int(0.3 * n) : int(np.ceil(0.7 * n))]
    body = profile[int(0.1 * n) : int(np.ceil(0.9 * n))]
    return float(middle.min() / max(np.median(body), 1.0))


def cell_shape(seq: CTCSequence, frames: int = 3) -> str:
    """``rod`` when the TRA masks of a few frames have a median elongation above ``ROD_ELONGATION``, else ``round``."""
    from skimage.measure import regionprops

    ratios = []
    for t in sorted(seq.tra_paths)[:: max(1, len(seq.tra_paths) // frames)][:frames]:
        for region in regionprops(seq.tra_mask(t)):
            if region.axis_minor_length > 0:
                ratios.append(region.axis_major_length / region.axis_minor_length)
    return "rod" if ratios and float(np.median(ratios)) > ROD_ELONGATION else "round"


def annotated_event_lengths(
    seq: CTCSequence,
    change: float = 0.15,
    small_daughter: float = 0.6,
    half_window: int = MAX_HALF_WINDOW,
    shape: str = "auto",
    constriction: float = 0.75,
) -> list[DivisionFrames]:
    """Frames around each division where the mother or a daughter is not an ordinary interphase cell, from TRA masks.

    A mother frame is an event frame when its mask area differs by more than ``change`` from the mother's baseline
    (the median of its areas at least 3 frames before B: the cell condenses or stretches into anaphase); a daughter
    frame when a daughter is below ``small_daughter`` x its own median area (just born, still condensed). On SIM+
    the mother's mask grows by 15-40 % in its last one or two frames (two chromatin masses pulling apart) and a
    daughter can start at half its later size, so the run of such frames across B is the event the annotation shows.

    ``shape="rod"`` (or ``auto`` on elongated masks) uses :func:`rod_event_frames` instead: area says nothing about
    an event of a cell that doubles its length over its cycle.
    """
    if shape not in CELL_SHAPES:
        raise ValueError(f"shape must be one of {CELL_SHAPES}, got {shape!r}")
    if shape == "rod" or (shape == "auto" and cell_shape(seq) == "rod"):
        return rod_event_frames(seq, constriction, half_window)
    divisions = _divisions(seq)
    labels = {lab for _, parent, kids in divisions for lab in (parent, *kids)}
    areas = track_areas(seq, labels)
    medians = {lab: float(np.median(list(a.values()))) for lab, a in areas.items() if a}
    result = []
    for b, parent, kids in divisions:
        early = [a for t, a in areas[parent].items() if b - half_window <= t <= b - 3]
        baseline = float(np.median(early)) if early else None
        frames, flags = [], []
        for t in range(b - half_window, b + half_window):
            if t < b:
                if baseline is None or t not in areas[parent]:
                    continue
                flag = abs(areas[parent][t] / baseline - 1) > change
            else:
                ratios = [areas[c][t] / medians[c] for c in kids if t in areas.get(c, {}) and medians.get(c)]
                if not ratios:
                    continue
                flag = min(ratios) < small_daughter
            frames.append(t)
            flags.append(bool(flag))
        result.append(DivisionFrames(b, tuple(frames), tuple(flags)))
    return result


def rod_event_frames(
    seq: CTCSequence, constriction: float = 0.75, half_window: int = MAX_HALF_WINDOW
) -> list[DivisionFrames]:
    """Per division of rod-shaped cells: the mother's frames whose :func:`waist_ratio` is below ``constriction``,
    and B itself (the frame in which the two daughters first appear apart).

    The 0.75 default sits below the 0.8-1 of unconstricted E. coli masks, whose widths of about 17 px move in steps
    of one pixel (0.06).
    """
    divisions = _divisions(seq)
    wanted: dict[int, set[int]] = {}
    for b, parent, _ in divisions:
        for t in range(b - half_window, b):
            wanted.setdefault(t, set()).add(parent)
    waists: dict[tuple[int, int], float] = {}
    for t in sorted(set(wanted) & set(seq.tra_paths)):  # each mask file read once
        mask = seq.tra_mask(t)
        for parent in wanted[t]:
            cell = mask == parent
            if cell.any():
                waists[(parent, t)] = waist_ratio(cell)
    result = []
    for b, parent, _ in divisions:
        frames, flags = [], []
        for t in range(b - half_window, b):
            ratio = waists.get((parent, t))
            if ratio is not None and np.isfinite(ratio):
                frames.append(t)
                flags.append(bool(ratio < constriction))
        if b in seq.tra_paths:
            frames.append(b)
            flags.append(True)
        result.append(DivisionFrames(b, tuple(frames), tuple(flags)))
    return result


def _working_mask(mask: np.ndarray, volume: FrameVolume) -> np.ndarray:
    """A full-resolution bool mask at the volume's working scale (a stored pixel is set when half of it is)."""
    from torch import from_numpy
    from torch.nn.functional import interpolate

    h, w = volume.frames.shape[1:]
    plane = from_numpy(mask.astype(np.float32))[None, None]
    return interpolate(plane, size=(h, w), mode="area")[0, 0].numpy() >= 0.5


def map_gaps_at_divisions(
    normal: np.ndarray,
    volume: FrameVolume,
    seq: CTCSequence,
    presence: float = 0.2,
    half_window: int = MAX_HALF_WINDOW,
) -> tuple[list[DivisionFrames], float]:
    """Frames around each division where the dividing cell is missing from the binary normal-cell stack.

    Args:
        normal: bool (T, h, w) normal-cell stack y at the volume's working scale (after its erosion).
        volume: gives the frame indices and the scale.
        seq: the annotated sequence (TRA masks and lineage).
        presence: a cell is present in y when this share of its working-scale mask is foreground.
        half_window: frames looked at on each side of a division.

    Returns:
        (per-division flags, True where the cell is absent; mean number of y components that overlap one
        present annotated cell over the frames looked at: 1 for a clean map, more for a fragmented one).
    """
    position = {t: i for i, t in enumerate(volume.indices)}
    pieces_per_cell: list[int] = []
    result = []
    component_cache: dict[int, np.ndarray] = {}
    mask_cache: dict[int, np.ndarray] = {}  # a frame is looked at for every division near it
    for b, parent, kids in _divisions(seq):
        frames, flags = [], []
        for t in range(b - half_window, b + half_window):
            if t not in position or t not in seq.tra_paths:
                continue
            if t not in mask_cache:
                mask_cache[t] = seq.tra_mask(t)
            mask = mask_cache[t]
            cells = [c for c in _cells_at(seq, b, parent, kids, t) if (mask == c).any()]
            if not cells:
                continue
            y = normal[position[t]]
            if t not in component_cache:
                component_cache[t] = ndimage.label(y)[0]
            present = []
            for c in cells:
                small = _working_mask(mask == c, volume)
                if not small.any():
                    continue
                present.append(bool(y[small].mean() >= presence))
                if present[-1]:
                    pieces = np.unique(component_cache[t][small])
                    pieces_per_cell.append(int((pieces > 0).sum()))
            if present:
                frames.append(t)
                flags.append(not all(present))
        result.append(DivisionFrames(b, tuple(frames), tuple(flags)))
    return result, float(np.mean(pieces_per_cell)) if pieces_per_cell else float("nan")
