"""Cell Tracking Challenge (CTC) sequences: lazy reading, atomic writing and lineage helpers.

Layout of one sequence ``NN`` inside a dataset folder::

    NN/tTTT.tif                      raw frames (3, 4 or 6 digit indices)
    NN_GT/TRA/man_trackTTT.tif       instance masks, ids are track ids
    NN_GT/TRA/man_track.txt          one line ``L B E P`` per track (id, first, last frame, parent or 0)
    NN_GT/SEG/man_segTTT.tif         reference segmentations for some frames
    NN_ST/SEG/man_segTTT.tif         silver-truth segmentations

Frames are read on demand (a 1000-frame sequence is never loaded whole). Two tracks with the same
parent P are the daughters of a division of P between frames ``B - 1`` and ``B``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from cellgen.data.errors import CellgenInputError

_FRAME_RE = re.compile(r"^t(\d{3}|\d{4}|\d{6})\.tiff?$")
_TRA_RE = re.compile(r"^man_track(\d{3}|\d{4}|\d{6})\.tiff?$")
_SEG_RE = re.compile(r"^man_seg(\d{3}|\d{4}|\d{6})\.tiff?$")
RES_MASK_RE = re.compile(r"^mask(\d{3}|\d{4}|\d{6})\.tiff?$")


@dataclass(frozen=True)
class Track:
    """One line of ``man_track.txt``: a track id alive from ``begin`` to ``end`` (inclusive)."""

    label: int
    begin: int
    end: int
    parent: int = 0


@dataclass(frozen=True)
class Division:
    """A mitosis: ``parent`` ends and ``daughters`` begin at ``frame``; (y, x) is where it happened."""

    frame: int
    y: float
    x: float
    parent: int
    daughters: tuple[int, ...]


# --------------------------------------------------------------------------------------------- TIFF I/O


def read_tiff(path: str | Path) -> np.ndarray:
    """Read one 2-D TIFF frame, turning codec/truncation failures into a one-line input error."""
    path = Path(path)
    try:
        array = tifffile.imread(path)
    except FileNotFoundError as exc:
        raise CellgenInputError(path, "file not found") from exc
    except Exception as exc:  # tifffile/imagecodecs raise many types for damaged files
        raise CellgenInputError(
            path, f"cannot decode TIFF ({type(exc).__name__}: {exc})", "the file is corrupt or truncated"
        ) from exc
    return check_frame_array(path, np.squeeze(array))


def check_frame_array(path: Path, array: np.ndarray) -> np.ndarray:
    """Refuse what no reader can use: a non-2-D stack, a non-numeric dtype, NaN or infinite pixels."""
    if array.ndim != 2:
        raise CellgenInputError(
            path, f"expected a 2-D frame, found shape {array.shape}", "save one 2-D image per frame (tTTT.tif)"
        )
    if array.dtype.kind not in "uif":
        raise CellgenInputError(path, f"pixels of type {array.dtype} are not numbers", "save as uint8/uint16/float32")
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise CellgenInputError(
                path, f"{bad} pixel(s) are NaN or infinite", "replace them, e.g. by the frame minimum, and save again"
            )
    return array


def check_mask_array(path: Path, mask: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    """A label mask must hold integer ids and have its frame's size."""
    if mask.dtype.kind not in "ui":
        raise CellgenInputError(
            path, f"masks must hold integer labels, found {mask.dtype}", "save masks as uint16 label images"
        )
    if shape is not None and mask.shape != tuple(shape):
        raise CellgenInputError(
            path, f"mask size {mask.shape} differs from frame size {tuple(shape)}", "masks must match their frames"
        )
    if mask.dtype.kind == "i" and mask.size and mask.min() < 0:
        raise CellgenInputError(path, "mask holds negative labels", "labels are 0 (background) or positive track ids")
    return mask


def tiff_shape(path: str | Path) -> tuple[int, ...]:
    """Shape of a TIFF's first page without decoding its pixels."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            return tuple(int(s) for s in tif.pages[0].shape if s != 1) or (1,)
    except Exception as exc:
        raise CellgenInputError(path, f"cannot read TIFF header ({type(exc).__name__})", "re-export the file") from exc


def write_tiff(path: str | Path, array: np.ndarray, pixel_size: PixelSize | None = None) -> None:
    """Write a 2-D frame zlib-compressed (what the CTC tools and Fiji read everywhere).

    With ``pixel_size`` the frame carries it the way Fiji writes it: resolution tags in pixels per unit and
    ``unit=micron`` in the ImageJ description, so Fiji, napari and tifffile measure in microns.
    """
    array = np.ascontiguousarray(array)
    if pixel_size is None:
        tifffile.imwrite(path, array, compression="zlib")
    elif array.dtype in _IMAGEJ_DTYPES:
        tifffile.imwrite(
            path,
            array,
            compression="zlib",
            imagej=True,
            resolution=(1.0 / pixel_size.x, 1.0 / pixel_size.y),
            metadata={"unit": pixel_size.unit},
        )
    else:  # ImageJ hyperstacks hold only 8/16-bit integers and float32: plain tags in pixels per centimetre
        scale = _UNIT_PER_CM[pixel_size.unit]
        resolution = (scale / pixel_size.x, scale / pixel_size.y)
        tifffile.imwrite(path, array, compression="zlib", resolution=resolution, resolutionunit="CENTIMETER")


# --------------------------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class PixelSize:
    """Physical size of one pixel: ``y`` and ``x`` in ``unit`` (CTC data: GOWT1 0.24, SIM+ 0.124, PSC 1.6 micron)."""

    y: float
    x: float
    unit: str = "micron"

    def to_dict(self) -> dict[str, float | str]:
        """Plain values for a checkpoint or a JSON file."""
        return {"y": self.y, "x": self.x, "unit": self.unit}

    @classmethod
    def from_dict(cls, values: Mapping[str, float | str] | None) -> PixelSize | None:
        return None if not values else cls(float(values["y"]), float(values["x"]), str(values["unit"]))


_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
# Units a TIFF ResolutionUnit or an ImageJ description may name, as units per centimetre.
_UNIT_PER_CM = {"micron": 1e4, "um": 1e4, "\u00b5m": 1e4, "\u03bcm": 1e4, "nm": 1e7, "mm": 10.0, "cm": 1.0}
_UNIT_PER_CM["inch"] = 1 / 2.54


def read_pixel_size(path: str | Path) -> PixelSize | None:
    """Pixel size of a TIFF frame in microns, or None when the file does not say (resolution 1 without a unit).

    Reads both conventions in use: TIFF tags in pixels per centimetre or inch (the CTC datasets), and pixels
    per ImageJ ``unit`` (Fiji and :func:`write_tiff`). A ``.../NN`` folder reads its first frame.
    """
    path = Path(path)
    if path.is_dir():
        frames = _index_files(path, _FRAME_RE)
        if not frames:
            raise CellgenInputError(path, "no frames named tTTT.tif to read a pixel size from")
        path = next(iter(frames.values()))
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            unit = str((tif.imagej_metadata or {}).get("unit", "")).strip()
            if "XResolution" not in tags:
                return None
            per_x, per_y = (_ratio(tags[name].value) for name in ("XResolution", "YResolution"))
            resolution_unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    except Exception as exc:
        raise CellgenInputError(path, f"cannot read TIFF header ({type(exc).__name__})", "re-export the file") from exc
    if not per_x or not per_y:
        return None
    if unit.lower() not in _UNIT_PER_CM:  # not an ImageJ file: the TIFF unit (1 none, 2 inch, 3 cm)
        unit = {2: "inch", 3: "cm"}.get(resolution_unit, "")
        if not unit:
            return None  # a resolution without a unit says nothing about scale
    microns_per_unit = 1e4 / _UNIT_PER_CM[unit.lower()]
    return PixelSize(y=microns_per_unit / per_y, x=microns_per_unit / per_x, unit="micron")


def _ratio(value: tuple[int, int] | float) -> float:
    if isinstance(value, tuple):
        return value[0] / value[1] if value[1] else 0.0
    return float(value)


def frame_digits(count: int) -> int:
    """Index width of a sequence of ``count`` frames: 3 up to 1,000 frames, 4 up to 10,000, else 6 (CTC names)."""
    return 3 if count <= 1000 else 4 if count <= 10_000 else 6


def name_width_problems(seq: CTCSequence) -> list[str]:
    """One line per folder whose file names mix index widths (``t999.tif`` then ``t1000.tif``).

    Tools that sort names as text misplace every frame after the width changes, so a valid sequence uses one
    width, wide enough for its last index.
    """
    problems = []
    folders = {seq.path: seq.frame_paths, seq.gt_dir / "TRA": seq.tra_paths, seq.gt_dir / "SEG": seq.seg_paths}
    for folder, paths in folders.items():
        widths: dict[int, list[str]] = {}
        for path in paths.values():
            digits = re.search(r"(\d+)\.tiff?$", path.name)
            if digits:
                widths.setdefault(len(digits.group(1)), []).append(path.name)
        if len(widths) > 1:
            examples = ", ".join(
                f"{len(names)} of width {w} (e.g. {min(names)})" for w, names in sorted(widths.items())
            )
            problems.append(f"{folder}: file names mix index widths: {examples}; rename them to one width")
    return problems


# --------------------------------------------------------------------------------------------- tracks


def read_text_table(path: Path) -> str:
    """Text of a small table file: UTF-8 with or without a byte-order mark (Excel), else latin-1."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_tracks(path: str | Path) -> dict[int, Track]:
    """Parse ``man_track.txt`` / ``res_track.txt`` into ``{label: Track}`` (CRLF, BOM, blank lines accepted)."""
    path = Path(path)
    if not path.is_file():
        raise CellgenInputError(path, "track table not found", "a CTC sequence needs NN_GT/TRA/man_track.txt")
    tracks: dict[int, Track] = {}
    for number, line in enumerate(read_text_table(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            label, begin, end, parent = (int(f) for f in fields)
        except ValueError as exc:
            raise CellgenInputError(
                path, f"line {number} is not four integers 'L B E P': {line.strip()!r}", TABLE_FIX
            ) from exc
        if label in tracks:
            raise CellgenInputError(path, f"line {number}: track id {label} appears twice", TABLE_FIX)
        tracks[label] = Track(label, begin, end, parent)
    return tracks


def write_tracks(path: str | Path, tracks: Mapping[int, Track] | Iterable[Track]) -> None:
    """Write a track table sorted by id."""
    items = tracks.values() if isinstance(tracks, Mapping) else tracks
    lines = [f"{t.label} {t.begin} {t.end} {t.parent}" for t in sorted(items, key=lambda t: t.label)]
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""))


def daughters_of(tracks: Mapping[int, Track]) -> dict[int, list[int]]:
    """Map each parent id to its daughter ids (sorted).

    A parent with a single child is a track interrupted by a gap, not a division; callers that want
    divisions filter on ``len(kids) >= 2``.
    """
    children: dict[int, list[int]] = {}
    for track in tracks.values():
        if track.parent:
            children.setdefault(track.parent, []).append(track.label)
    return {parent: sorted(kids) for parent, kids in children.items()}


def _index_files(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    """Index -> file; two names for one index (t005 and t0005) or mixed digit widths are refused."""
    if not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    widths: dict[int, str] = {}
    for entry in sorted(folder.iterdir()):
        match = pattern.match(entry.name)
        if not match:
            continue
        index = int(match.group(1))
        if index in found:
            raise CellgenInputError(
                folder,
                f"{found[index].name} and {entry.name} both name frame {index}",
                "keep one of them (CTC names use one digit width per folder)",
            )
        found[index] = entry
        widths.setdefault(len(match.group(1)), entry.name)
    if len(widths) > 1:
        names = " and ".join(sorted(widths.values()))
        raise CellgenInputError(
            folder, f"mixed digit widths in frame names ({names})", "rename all files to one width, e.g. t000.tif"
        )
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------------------------- reading


class CTCSequence:
    """Lazy view of one CTC sequence folder (``.../NN``) and its annotations beside it.

    Args:
        path: the raw-frame folder ``.../NN``; ``NN_GT`` and ``NN_ST`` are looked up beside it.
        require_frames: raise when the folder holds no ``t*.tif`` frames.
    """

    def __init__(self, path: str | Path, require_frames: bool = True) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise CellgenInputError(self.path, "sequence folder not found", "pass the raw-frame folder, e.g. .../01")
        self.name = self.path.name
        self.root = self.path.parent
        self.frame_paths = _index_files(self.path, _FRAME_RE)
        if require_frames and not self.frame_paths:
            raise CellgenInputError(
                self.path, "no frames named tTTT.tif", "a CTC sequence folder holds t000.tif, t001.tif, ..."
            )
        gt = self.root / f"{self.name}_GT"
        st = self.root / f"{self.name}_ST"
        self.gt_dir = gt
        self.tra_paths = _index_files(gt / "TRA", _TRA_RE)
        self.seg_paths = _index_files(gt / "SEG", _SEG_RE)
        self.st_seg_paths = _index_files(st / "SEG", _SEG_RE)
        self.track_file = gt / "TRA" / "man_track.txt"
        self._tracks: dict[int, Track] | None = None
        self._shape: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (
            f"CTCSequence({str(self.path)!r}, frames={len(self)}, tra={len(self.tra_paths)}, "
            f"seg={len(self.seg_paths)}, st={len(self.st_seg_paths)})"
        )

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def frame_indices(self) -> list[int]:
        return list(self.frame_paths)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the first frame, read from its header only."""
        if self._shape is None:
            first = next(iter(self.frame_paths.values()))
            shape = tiff_shape(first)
            if len(shape) != 2:
                raise CellgenInputError(
                    first, f"expected a 2-D frame, found shape {shape}", "save one 2-D image per frame (tTTT.tif)"
                )
            self._shape = (shape[0], shape[1])
        return self._shape

    @property
    def has_tracks(self) -> bool:
        return self.track_file.is_file()

    @property
    def tracks(self) -> dict[int, Track]:
        if self._tracks is None:
            self._tracks = read_tracks(self.track_file)
        return self._tracks

    def image(self, t: int) -> np.ndarray:
        """Raw frame ``t`` (H, W) in its stored dtype."""
        if t not in self.frame_paths:
            raise CellgenInputError(self.path, f"frame {t} does not exist (frames {self._range()})")
        image = read_tiff(self.frame_paths[t])
        if image.shape != self.shape:
            raise CellgenInputError(
                self.frame_paths[t], f"frame size {image.shape} differs from {self.shape}", "all frames need one size"
            )
        return image

    def images(self, indices: Iterable[int] | None = None) -> Iterator[np.ndarray]:
        """Yield frames one at a time (memory stays at one frame)."""
        for t in self.frame_indices if indices is None else indices:
            yield self.image(t)

    def tra_mask(self, t: int) -> np.ndarray:
        return self._mask(self.tra_paths, t, "NN_GT/TRA")

    def seg_mask(self, t: int) -> np.ndarray:
        return self._mask(self.seg_paths, t, "NN_GT/SEG")

    def st_mask(self, t: int) -> np.ndarray:
        return self._mask(self.st_seg_paths, t, "NN_ST/SEG")

    def instance_mask_paths(self, prefer: tuple[str, ...] = ("SEG", "ST", "TRA")) -> dict[int, Path]:
        """Best available instance mask per frame: gold SEG, then silver ST, then TRA markers."""
        sources = {"SEG": self.seg_paths, "ST": self.st_seg_paths, "TRA": self.tra_paths}
        chosen: dict[int, Path] = {}
        for key in reversed(prefer):
            chosen.update(sources[key])
        return dict(sorted(chosen.items()))

    def divisions(self) -> list[Division]:
        """Divisions from the lineage, located at the parent's centroid in its last TRA frame."""
        result = []
        for parent, kids in sorted(daughters_of(self.tracks).items()):
            if len(kids) < 2:
                continue
            frame = min(self.tracks[k].begin for k in kids)
            y = x = float("nan")
            last = self.tracks[parent].end if parent in self.tracks else None
            if last is not None and last in self.tra_paths:
                ys, xs = np.nonzero(self.tra_mask(last) == parent)
                if ys.size:
                    y, x = float(ys.mean()), float(xs.mean())
            if np.isnan(y):
                centres = [self._centroid(k, self.tracks[k].begin) for k in kids]
                centres = [c for c in centres if c is not None]
                if centres:
                    y, x = (float(v) for v in np.mean(centres, axis=0))
            result.append(Division(frame, y, x, parent, tuple(kids)))
        return result

    def _centroid(self, label: int, t: int) -> tuple[float, float] | None:
        if t not in self.tra_paths:
            return None
        ys, xs = np.nonzero(self.tra_mask(t) == label)
        return (ys.mean(), xs.mean()) if ys.size else None

    def _mask(self, paths: dict[int, Path], t: int, what: str) -> np.ndarray:
        if t not in paths:
            raise CellgenInputError(self.path, f"no {what} mask for frame {t}")
        return check_mask_array(paths[t], read_tiff(paths[t]), self.shape if self.frame_paths else None)

    def _range(self) -> str:
        idx = self.frame_indices
        return f"{idx[0]}..{idx[-1]}" if idx else "none"


# --------------------------------------------------------------------------------------------- validation


TABLE_FIX = "each line of the track table is 'L B E P': id, first frame, last frame, parent id or 0"
MASK_FIX = "masks and man_track.txt must agree: a label is a track id alive in that frame"
VALIDATION_VERSION = "2"


def validate_sequence(
    path: str | Path, check_masks: bool = True, require_annotations: bool = True, allow_truncated: bool = False
) -> list[str]:
    """Check a sequence as the CTC tools do; return one line per problem (empty when valid).

    Checks: frame names (no two names for one index, one digit width), frames exist and share one size; with
    ``check_masks`` every frame is read (2-D, numeric, no NaN/Inf); the track table parses, ids are positive
    and unique, ``B <= E``, parents exist and end before their daughters begin; every TRA mask is an integer
    label image of the frame size, holds only ids of tracks alive in that frame, and every track is present
    in each annotated frame of its life span. Without ``require_annotations`` a sequence with no ``NN_GT``
    passes on its frames alone (what the video models train on). ``allow_truncated`` accepts a table whose
    tracks run past the last frame present (the first frames of a longer sequence, as HeLa 02 is shipped).
    """
    try:
        seq = CTCSequence(path)
        shape = seq.shape
    except CellgenInputError as exc:
        return [str(exc)]
    problems: list[str] = []
    first, last = seq.frame_indices[0], seq.frame_indices[-1]
    missing = sorted(set(range(first, last + 1)) - set(seq.frame_indices))
    if missing:
        problems.append(
            f"{seq.path}: frames missing from the range {first}..{last}: {_short(missing)} (frames must be numbered "
            "without gaps)"
        )
    for frame_path in seq.frame_paths.values():
        try:
            frame_shape = tiff_shape(frame_path)
            if frame_shape != shape:
                problems.append(
                    f"{frame_path}: frame size {frame_shape} differs from {shape} of frame {first} (all frames need "
                    "one size)"
                )
            elif check_masks:
                read_tiff(frame_path)
        except CellgenInputError as exc:
            problems.append(str(exc))
    problems += name_width_problems(seq)
    if not seq.gt_dir.is_dir():
        if require_annotations:
            problems.append(f"{seq.gt_dir}: annotation folder not found (expected {seq.name}_GT beside {seq.name})")
        return problems
    if not seq.has_tracks:
        problems.append(f"{seq.track_file}: track table not found (TRA masks need man_track.txt)")
        return problems
    try:
        tracks = seq.tracks
    except CellgenInputError as exc:
        return problems + [str(exc)]
    problems += check_track_table(seq.track_file, tracks, None if allow_truncated else last)
    if check_masks:
        problems += _check_masks(seq, tracks, shape)
    return problems


def check_track_table(table: Path, tracks: Mapping[int, Track], last_frame: int | None = None) -> list[str]:
    """One line per problem of a track table (``L B E P``), for ground truth and tracking results alike.

    Lineage rules: positive ids, ``0 <= B <= E`` (and ``E <= last_frame`` when given), parents exist and end
    before ``B``.
    """
    problems = []
    for t in tracks.values():
        if t.label <= 0:
            problems.append(f"{table}: track id {t.label} is not positive ({TABLE_FIX})")
        if t.begin < 0 or t.end < t.begin:
            problems.append(f"{table}: track {t.label} has begin {t.begin} after end {t.end} (B must be <= E)")
        if last_frame is not None and t.end > last_frame:
            problems.append(
                f"{table}: track {t.label} ends at frame {t.end}, after the last frame {last_frame} (E must be a "
                "frame of the sequence)"
            )
        if t.parent == t.label:
            problems.append(f"{table}: track {t.label} is its own parent (P is another track's id or 0)")
        elif t.parent:
            parent = tracks.get(t.parent)
            if parent is None:
                problems.append(
                    f"{table}: track {t.label} names parent {t.parent}, which is not in the table (add it or set P 0)"
                )
            elif parent.end >= t.begin:
                problems.append(
                    f"{table}: track {t.label} begins at {t.begin} but its parent {t.parent} ends at {parent.end} "
                    "(a parent must end before its daughters begin)"
                )
    return problems


def _check_masks(seq: CTCSequence, tracks: Mapping[int, Track], shape: tuple[int, int]) -> list[str]:
    problems = []
    if not seq.tra_paths:
        return [f"{seq.gt_dir / 'TRA'}: no man_trackTTT.tif masks (one TRA mask per annotated frame)"]
    extra = sorted(set(seq.tra_paths) - set(seq.frame_paths))
    if extra:
        problems.append(
            f"{seq.gt_dir / 'TRA'}: masks for frames without images: {_short(extra)} (remove them or add the frames)"
        )
    seen_in: dict[int, set[int]] = {}
    for t, mask_path in seq.tra_paths.items():
        try:
            mask = check_mask_array(mask_path, read_tiff(mask_path), shape)
        except CellgenInputError as exc:
            problems.append(str(exc))
            continue
        labels = np.unique(mask)
        labels = labels[labels != 0]
        for label in labels.tolist():
            track = tracks.get(label)
            if track is None:
                problems.append(f"{mask_path}: label {label} is not in man_track.txt ({MASK_FIX})")
            elif not track.begin <= t <= track.end:
                problems.append(
                    f"{mask_path}: label {label} present but its track spans {track.begin}..{track.end} ({MASK_FIX})"
                )
            seen_in.setdefault(label, set()).add(t)
    for path in list(seq.seg_paths.values()) + list(seq.st_seg_paths.values()):
        try:
            check_mask_array(path, read_tiff(path), shape)
        except CellgenInputError as exc:
            problems.append(str(exc))
    annotated = set(seq.tra_paths)
    for track in tracks.values():
        expected = {t for t in range(track.begin, track.end + 1) if t in annotated}
        absent = sorted(expected - seen_in.get(track.label, set()))
        if absent:
            problems.append(
                f"{seq.track_file}: track {track.label} is missing from TRA frames {_short(absent)} ({MASK_FIX})"
            )
    return problems


_VALID: set[str] = set()


def checked_sequence(path: str | Path) -> CTCSequence:
    """Open a sequence for training or evaluation after the full :func:`validate_sequence` check.

    The verdict is remembered per content fingerprint (in memory and under the cache folder), so a large
    sequence is read through once, and again only after one of its files changes.

    Raises:
        CellgenInputError: the first problem, with the number of further ones.
    """
    from cellgen.data.cache import cache_root, folder_fingerprint

    seq = CTCSequence(path)
    folders = [seq.path, seq.gt_dir, seq.root / f"{seq.name}_ST"]
    key = f"v{VALIDATION_VERSION}-{folder_fingerprint(*folders)}"
    marker = cache_root() / "validated" / key
    if key in _VALID or marker.is_file():
        _VALID.add(key)
        return seq
    problems = validate_sequence(seq.path, require_annotations=False, allow_truncated=True)
    if problems:
        count = f"{len(problems)} problems (`cellgen check-ctc` lists them), the first: " if len(problems) > 1 else ""
        raise CellgenInputError(None, count + problems[0])
    _VALID.add(key)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # a read-only cache only costs a re-check next time
    return seq


def _short(values: list[int], limit: int = 8) -> str:
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f", ... ({len(values)} in all)" if len(values) > limit else "")


# --------------------------------------------------------------------------------------------- writing


def write_sequence(
    dataset_dir: str | Path,
    name: str,
    images: Iterable[np.ndarray],
    tra_masks: Iterable[np.ndarray],
    tracks: Mapping[int, Track],
    seg_masks: Mapping[int, np.ndarray] | None = None,
    digits: int | None = None,
    overwrite: bool = False,
    validate: bool = True,
    marker: tuple[str, str] | None = None,
    pixel_size: PixelSize | None = None,
) -> Path:
    """Write one annotated sequence atomically and return its ``NN`` folder.

    Everything is written into a temporary folder inside ``dataset_dir``, validated, and only then
    renamed into place, so a crash or a failed check never leaves a half-written sequence.

    Args:
        dataset_dir: folder that will hold ``NN`` and ``NN_GT``.
        name: sequence name, e.g. ``"01"``.
        images: frames (H, W), any integer or float dtype supported by TIFF.
        tra_masks: instance masks (H, W) whose ids are track ids, one per frame.
        tracks: the lineage table.
        seg_masks: optional ``{t: mask}`` written to ``NN_GT/SEG``; defaults to the TRA masks.
        digits: frame index width (3, 4 or 6); None: :func:`frame_digits` of the frame count, so that name
            order is frame order (t0999 before t1000).
        overwrite: replace an existing sequence of that name.
        validate: run :func:`validate_sequence` before renaming; raise on any problem.
        marker: optional ``(file name, text)`` written inside ``NN`` before the rename (who wrote it).
        pixel_size: physical pixel size stored in every frame and mask (see :func:`write_tiff`).
    """
    if digits not in (None, 3, 4, 6):
        raise ValueError(f"digits must be 3, 4 or 6, got {digits}")
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    targets = [dataset_dir / name, dataset_dir / f"{name}_GT"]
    if not overwrite:
        for target in targets:
            if target.exists():
                raise CellgenInputError(target, "already exists", "choose another output folder or pass overwrite")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dataset_dir))
    try:
        raw, tra, seg = staging / name, staging / f"{name}_GT" / "TRA", staging / f"{name}_GT" / "SEG"
        for folder in (raw, tra, seg):
            folder.mkdir(parents=True)
        # Frames stream in (the count may be unknown): stage with the widest names, rename once counted.
        width = digits or 6
        count = 0
        for t, (image, mask) in enumerate(zip(images, tra_masks, strict=True)):
            write_tiff(raw / f"t{t:0{width}d}.tif", image, pixel_size)
            write_tiff(tra / f"man_track{t:0{width}d}.tif", mask.astype(np.uint16), pixel_size)
            if seg_masks is None:
                write_tiff(seg / f"man_seg{t:0{width}d}.tif", mask.astype(np.uint16), pixel_size)
            count += 1
        if count == 0:
            raise CellgenInputError(dataset_dir / name, "refusing to write an empty sequence (no frames)")
        if digits is None:
            digits = frame_digits(count)
            for folder in (raw, tra, seg):
                _rename_width(folder, width, digits)
        for t, mask in (seg_masks or {}).items():
            write_tiff(seg / f"man_seg{t:0{digits}d}.tif", mask.astype(np.uint16), pixel_size)
        write_tracks(tra / "man_track.txt", tracks)
        if marker is not None:
            (raw / marker[0]).write_text(marker[1])
        if validate:
            problems = validate_sequence(raw)
            if problems:
                raise CellgenInputError(dataset_dir / name, "generated sequence is invalid: " + problems[0])
        for target in targets:
            if target.exists():
                shutil.rmtree(target)
        os.replace(raw, targets[0])
        os.replace(staging / f"{name}_GT", targets[1])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return targets[0]


def _rename_width(folder: Path, old: int, new: int) -> None:
    """Rename ``prefixNNNNNN.tif`` files from ``old`` to ``new`` index digits (inside a staging folder)."""
    if old == new:
        return
    pattern = re.compile(rf"^(\D+)(\d{{{old}}})\.tif$")
    for entry in folder.iterdir():
        match = pattern.match(entry.name)
        if match:
            entry.rename(folder / f"{match.group(1)}{int(match.group(2)):0{new}d}.tif")


def copy_sequence(source: str | Path, dataset_dir: str | Path, name: str | None = None, **kwargs) -> Path:
    """Re-write a sequence (frames, TRA masks, SEG where present, pixel size) through :func:`write_sequence`."""
    kwargs.setdefault("pixel_size", read_pixel_size(source))
    seq = CTCSequence(source)
    indices = seq.frame_indices
    if list(seq.tra_paths) != indices:
        raise CellgenInputError(seq.gt_dir / "TRA", "copy needs a TRA mask for every frame")
    offset = indices[0]
    tracks = {k: Track(v.label, v.begin - offset, v.end - offset, v.parent) for k, v in seq.tracks.items()}
    seg = {t - offset: seq.seg_mask(t) for t in seq.seg_paths}
    return write_sequence(
        dataset_dir,
        name or seq.name,
        seq.images(),
        (seq.tra_mask(t) for t in indices),
        tracks,
        seg_masks=seg,
        **kwargs,
    )
