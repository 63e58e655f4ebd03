"""Frame-to-frame linking of instance masks into tracks with divisions, written in the CTC result layout.

Each new frame is matched to the previous one by overlap: IoU between the previous frame's tracks and the new
instances, one-to-one by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``). A new instance left
unmatched that lies mostly inside a previous track's mask either continues that track (when the track found no
match, e.g. its outline changed a lot) or, when the track is matched already, is its second daughter: the parent
ends in the previous frame and both instances start daughter tracks (a division has exactly two children).
Everything else starts a new track.

Linking only ever continues a track into the very next frame, so tracks have no gaps and every track is present
in every frame of its span; parents end the frame before their daughters begin (the CTC rules for
``res_track.txt``, checked again by :func:`check_result` before a result folder is moved into place).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from cellgen.data.ctc import RES_MASK_RE, Track, check_track_table, read_tiff, read_tracks, write_tiff, write_tracks
from cellgen.data.errors import CellgenInputError


def overlap_table(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel overlaps between two label images (H, W).

    Returns:
        ``(prev_ids, cur_ids, inter)``: the non-zero ids of each image and ``inter`` (P + 1, C + 1) with the
        number of shared pixels; row/column 0 is background, so row and column sums are the instance areas.
    """
    prev_ids, prev_index = np.unique(previous, return_inverse=True)
    cur_ids, cur_index = np.unique(current, return_inverse=True)
    # Make index 0 the background even when a frame has no background pixel.
    if prev_ids[0] != 0:
        prev_ids, prev_index = np.concatenate([[0], prev_ids]), prev_index + 1
    if cur_ids[0] != 0:
        cur_ids, cur_index = np.concatenate([[0], cur_ids]), cur_index + 1
    n_cur = cur_ids.size
    flat = prev_index.ravel().astype(np.int64) * n_cur + cur_index.ravel()
    inter = np.bincount(flat, minlength=prev_ids.size * n_cur).reshape(prev_ids.size, n_cur)
    return prev_ids[1:], cur_ids[1:], inter


class TrackLinker:
    """Streams instance masks frame by frame and returns them relabelled with track ids.

    Args:
        min_iou: smallest IoU for a Hungarian match to count as the same cell.
        division_overlap: fraction of an unmatched instance that must lie inside a previous track's mask for it
            to continue that track or become its second daughter.
        first_frame: index of the first frame added (track begin/end are frame indices).

    Example::

        linker = TrackLinker()
        tracked = [linker.add(mask) for mask in masks]   # (H, W) track-id masks
        table = linker.tracks                             # {id: Track}
    """

    def __init__(self, min_iou: float = 0.1, division_overlap: float = 0.4, first_frame: int = 0) -> None:
        self.min_iou = min_iou
        self.division_overlap = division_overlap
        self.frame = first_frame
        self._previous: np.ndarray | None = None
        self._spans: dict[int, list[int]] = {}  # id -> [begin, end, parent]
        self._next_id = 1

    @property
    def tracks(self) -> dict[int, Track]:
        """The lineage so far: ``{id: Track(id, begin, end, parent)}``."""
        return {label: Track(label, b, e, p) for label, (b, e, p) in sorted(self._spans.items())}

    def _new_track(self, parent: int = 0) -> int:
        label = self._next_id
        self._next_id += 1
        self._spans[label] = [self.frame, self.frame, parent]
        return label

    def add(self, labels: np.ndarray) -> np.ndarray:
        """Link one frame's instances (H, W, any integer ids, 0 background); return its track-id mask (uint16)."""
        labels = np.asarray(labels)
        if self._previous is not None and self._previous.shape != labels.shape:
            raise ValueError(f"frame size {labels.shape} differs from the previous frame's {self._previous.shape}")
        previous = self._previous if self._previous is not None else np.zeros_like(labels, dtype=np.uint16)
        prev_ids, cur_ids, inter = overlap_table(previous, labels)
        assignment = self._assign(prev_ids, inter)
        lut_keys = np.concatenate([[0], cur_ids])
        lut_values = np.concatenate([[0], [assignment[j] for j in range(cur_ids.size)]]).astype(np.int64)
        if lut_values.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError("more than 65535 tracks: the CTC layout stores uint16 masks")
        tracked = lut_values[np.searchsorted(lut_keys, labels)].astype(np.uint16)
        self._previous = tracked
        self.frame += 1
        return tracked

    def _assign(self, prev_ids: np.ndarray, inter: np.ndarray) -> dict[int, int]:
        """Track id of each current instance (by column index - 1), updating spans for this frame."""
        area_prev, area_cur = inter.sum(1)[1:], inter.sum(0)[1:]
        shared = inter[1:, 1:].astype(np.float64)
        n_prev, n_cur = shared.shape
        match_of_prev: dict[int, int] = {}  # previous row -> current column
        if n_prev and n_cur:
            iou = shared / (area_prev[:, None] + area_cur[None, :] - shared)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if iou[r, c] >= self.min_iou:
                    match_of_prev[r] = c
        matched_cur = set(match_of_prev.values())
        continued: dict[int, int] = dict(match_of_prev)  # previous row -> column that continues it
        second_daughter: dict[int, int] = {}  # previous row -> the extra column of a division
        if n_prev:
            inside = shared / np.maximum(area_cur[None, :], 1)  # fraction of each current instance in each track
            unmatched = [c for c in range(n_cur) if c not in matched_cur]
            # Most-contained instances decide first, so the assignment does not depend on label order.
            for c in sorted(unmatched, key=lambda c: (-inside[:, c].max(), c)):
                r = int(inside[:, c].argmax())
                if inside[r, c] < self.division_overlap:
                    continue
                if r not in continued:
                    continued[r] = c
                elif r not in second_daughter:
                    second_daughter[r] = c
        assignment: dict[int, int] = {}
        for r, c in continued.items():
            parent = int(prev_ids[r])
            if r in second_daughter:
                self._spans[parent][1] = self.frame - 1  # the parent ends; both children are new tracks
                assignment[c] = self._new_track(parent)
                assignment[second_daughter[r]] = self._new_track(parent)
            else:
                self._spans[parent][1] = self.frame
                assignment[c] = parent
        for c in range(n_cur):
            if c not in assignment:
                assignment[c] = self._new_track()
        return assignment


def link_masks(masks: Iterable[np.ndarray], first_frame: int = 0, **linker_args) -> tuple[list, dict[int, Track]]:
    """Link a whole sequence of instance masks; returns the track-id masks and the track table."""
    linker = TrackLinker(first_frame=first_frame, **linker_args)
    tracked = [linker.add(mask) for mask in masks]
    return tracked, linker.tracks


def tidy_lineage(
    tracks: dict[int, Track], min_length: int, first_frame: int, last_frame: int
) -> tuple[dict[int, int], dict[int, Track]]:
    """Remove flicker from a linked lineage: false divisions and short-lived false detections.

    Spurious objects (debris, a fragment of a cell split off for a frame) live a frame or two; cells persist.
    A track is *transient* when it is shorter than ``min_length`` frames, has no daughters and ends before
    ``last_frame`` (the sequence's end may cut a real track short). Divisions are undone when exactly one
    daughter is transient: the other daughter continues the parent (same id) and the transient one becomes a
    track of its own. Then transient tracks without a parent that begin after ``first_frame`` are dropped.

    Returns:
        ``(relabel, tracks)``: ``relabel`` maps every old id to its new id (0: dropped), to apply to the masks;
        ``tracks`` is the new table (ids are a subset of the old ones, so the masks need no other change).
    """
    spans = {k: [t.begin, t.end, t.parent] for k, t in tracks.items()}
    children: dict[int, list[int]] = {}
    for k, (_, _, parent) in spans.items():
        if parent:
            children.setdefault(parent, []).append(k)
    target = {k: k for k in tracks}

    def root(k: int) -> int:  # follows merges; 0 once a track on the way is dropped
        while k and target[k] != k:
            k = target[k]
        return k

    def transient(k: int) -> bool:
        begin, end, _ = spans[k]
        return end - begin + 1 < min_length and not children.get(k) and end < last_frame

    for parent, kids in sorted(children.items(), key=lambda item: min(spans[k][0] for k in item[1])):
        if len(kids) != 2:
            continue
        short = [k for k in kids if transient(k)]
        if len(short) != 1:
            continue
        (fragment,) = short
        survivor = kids[0] if kids[1] == fragment else kids[1]
        head = root(parent)
        spans[head][1] = spans[survivor][1]
        spans[fragment][2] = 0
        grandchildren = children.pop(survivor, [])
        for child in grandchildren:
            spans[child][2] = head
        children[head] = grandchildren
        target[survivor] = head
        del spans[survivor]
    for k in [k for k, (begin, _, parent) in spans.items() if not parent and begin > first_frame and transient(k)]:
        target[k] = 0
        del spans[k]
    relabel = {k: root(k) for k in tracks}
    return relabel, {k: Track(k, b, e, p) for k, (b, e, p) in sorted(spans.items())}


# --------------------------------------------------------------------------------------------- CTC results


def check_result(res_dir: str | Path) -> list[str]:
    """Check a CTC result folder (``maskTTT.tif`` + ``res_track.txt``); one line per problem, empty when valid.

    Checks the table (positive unique ids, B <= E, parents exist and end before their daughters begin), that
    every mask id is a track alive in that frame, and that every track is present in every frame of its span.
    """
    res_dir = Path(res_dir)
    table = res_dir / "res_track.txt"
    try:
        tracks = read_tracks(table)
    except CellgenInputError as exc:
        return [str(exc)]
    masks = {int(m.group(1)): p for p in res_dir.iterdir() if (m := RES_MASK_RE.match(p.name))}
    if not masks:
        return [f"{res_dir}: no maskTTT.tif files"]
    problems = check_track_table(table, tracks, max(masks))
    seen: dict[int, set[int]] = {}
    for t, path in sorted(masks.items()):
        for label in np.unique(read_tiff(path)).tolist():
            if label == 0:
                continue
            track = tracks.get(label)
            if track is None:
                problems.append(f"{path}: label {label} is not in res_track.txt")
            elif not track.begin <= t <= track.end:
                problems.append(f"{path}: label {label} present but its track spans {track.begin}..{track.end}")
            seen.setdefault(label, set()).add(t)
    for track in tracks.values():
        absent = sorted(t for t in range(track.begin, track.end + 1) if t not in seen.get(track.label, set()))
        if absent:
            problems.append(f"{table}: track {track.label} is missing from frames {absent[:8]}")
    return problems


class CTCResultWriter:
    """Writes ``maskTTT.tif`` frames and ``res_track.txt`` into a staging folder; :meth:`finish` validates the
    result and renames it into place, so an interrupted run never leaves a half-written result folder.

    Args:
        res_dir: the result folder, conventionally ``NN_RES``.
        digits: frame index width (use the sequence's own: 3 for 3-digit CTC datasets).
        overwrite: replace an existing result folder.
    """

    def __init__(self, res_dir: str | Path, digits: int = 3, overwrite: bool = True) -> None:
        self.res_dir = Path(res_dir)
        if self.res_dir.exists() and not overwrite:
            raise CellgenInputError(self.res_dir, "already exists", "choose another output folder")
        self.res_dir.parent.mkdir(parents=True, exist_ok=True)
        self.digits = digits
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.res_dir.name}-", dir=self.res_dir.parent))

    def write(self, t: int, mask: np.ndarray) -> None:
        """Write the track-id mask (H, W) of frame ``t``."""
        write_tiff(self.staging / f"mask{t:0{self.digits}d}.tif", mask.astype(np.uint16))

    def finish(self, tracks: dict[int, Track]) -> Path:
        """Write the table, validate, and move the folder into place; returns ``res_dir``."""
        try:
            write_tracks(self.staging / "res_track.txt", tracks)
            problems = check_result(self.staging)
            if problems:
                raise CellgenInputError(self.res_dir, "linked result is not a valid CTC result: " + problems[0])
            if self.res_dir.exists():
                shutil.rmtree(self.res_dir)
            os.replace(self.staging, self.res_dir)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
        return self.res_dir

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
