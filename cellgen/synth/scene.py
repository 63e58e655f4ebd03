"""Scene layout: place generated cells in a field, move, rotate and divide them, and keep the result CTC-valid.

BVDM synthesises each cell's texture in a local crop and pastes it into a larger field (Yilmaz et al. 2024,
arXiv:2403.17808). This module decides *where*: for every frame a global label mask (ids = track ids), the lineage
table, and for every (track, frame) the pose that maps the cell's local crop into the scene.

Rules that keep the output a valid CTC sequence:

* masks never overlap: each placement is checked against the cells already placed in that frame (with a
  ``gap``); a cell that would overlap is nudged by the smallest integer shift that frees it, and if none
  within ``max_nudge`` does, its track ends (and its descendants are never born);
* a cell whose visible part drops below ``min_visible`` of its area has left the field and its track ends;
  so every track is present in every frame from its begin to its end;
* a division ends the mother at ``t - 1`` and starts two daughters (parent = mother) at ``t`` on the mother's
  long axis; if either daughter finds no room, neither is born.

Motion comes from the fitted statistics: speed through a Gaussian copula with the fitted lag-1 autocorrelation,
turning angle and rotation per frame from their empirical quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from cellgen.data.ctc import Track
from cellgen.data.errors import CellgenInputError
from cellgen.synth.contour import polygon_area, polygon_pixels, render_local
from cellgen.synth.intensity import IntensityStats, add_noise, background_image
from cellgen.synth.shape_model import ShapeModel

__all__ = [
    "CellFrame",
    "CellPose",
    "IntensityStats",
    "SceneLayout",
    "add_noise",
    "background_image",
    "compose_scene",
    "paste_local",
    "scene_pixels",
]

MAX_FILL = 0.6  # refuse scenes whose expected cell area exceeds this fraction of the field
_CHUNK = 64  # placement candidates tested per vectorised batch
# Nearest-neighbour ratios (centre distance / sum of radii) up to this place a cell beside another; larger
# ones are isolated cells, which uniform scatter gives as well.
NEIGHBOUR_CLUSTER_MAX = 2.0


# --------------------------------------------------------------------------------------------- poses


@dataclass(frozen=True)
class CellPose:
    """Where a cell's local crop sits in the scene at one frame.

    The local crop centre ``c = (crop - 1) / 2`` (the cell's origin) maps to scene ``(y, x)``, and the local x
    axis (the cell's long axis) points at ``angle`` rad from scene +x towards scene +y (rows).
    """

    y: float
    x: float
    angle: float

    def matrix(self, crop: int) -> np.ndarray:
        """(2, 3) affine map of local pixel ``(x, y, 1)`` to scene pixel ``(x, y)`` (pixel centres on integers).

        This is the ``src -> dst`` matrix that ``kornia.geometry.transform.warp_affine`` expects for pasting a
        (B, C, crop, crop) texture into an (H, W) scene.
        """
        cos, sin, c = math.cos(self.angle), math.sin(self.angle), (crop - 1) / 2.0
        return np.array([[cos, -sin, self.x - c * (cos - sin)], [sin, cos, self.y - c * (sin + cos)]])

    def inverse_matrix(self, crop: int) -> np.ndarray:
        """(2, 3) affine map of scene pixel ``(x, y, 1)`` to local pixel ``(x, y)``."""
        cos, sin, c = math.cos(self.angle), math.sin(self.angle), (crop - 1) / 2.0
        return np.array([[cos, sin, c - cos * self.x - sin * self.y], [-sin, cos, c + sin * self.x - cos * self.y]])


@dataclass(frozen=True)
class CellFrame:
    """What the synthesis loop needs for one cell at one frame.

    ``local_mask`` and ``prev_mask`` are (crop, crop) bool in the same local frame (fixed to the cell), so the
    flow ``prev_mask -> local_mask`` is pure deformation and growth; ``pose`` carries the motion into the scene.
    ``prev_mask`` is None at a track's first frame, daughters included: the mask-to-mask flow model never sees
    a one-to-two split, and at mitosis the chromatin re-forms, so a daughter's texture starts fresh like a
    frame-0 cell. ``parent`` names the mother on a daughter's first frame (0 otherwise), for callers that want
    to carry e.g. the mother's brightness over.
    """

    track_id: int
    t: int
    local_mask: np.ndarray
    prev_mask: np.ndarray | None
    pose: CellPose
    parent: int = 0


class CellFrames(Sequence):
    """``cell_frames[t]`` -> list of :class:`CellFrame`, rendered on demand (masks are not all kept in memory)."""

    def __init__(self, layout: SceneLayout) -> None:
        self._layout = layout

    def __len__(self) -> int:
        return self._layout.frames

    def __getitem__(self, t):  # type: ignore[override]
        if isinstance(t, slice):
            return [self[i] for i in range(*t.indices(len(self)))]
        if t < 0:
            t += len(self)
        if not 0 <= t < len(self):
            raise IndexError(f"frame {t} outside 0..{len(self) - 1}")
        return self._layout.cells_at(t)

    def __iter__(self) -> Iterator[list[CellFrame]]:
        return (self[t] for t in range(len(self)))


@dataclass
class SceneLayout:
    """A composed scene: global masks, lineage, and per-(track, frame) local shapes and poses.

    Attributes:
        masks: (T, H, W) uint16 label masks, ids = track ids, background 0; no pixel has two ids.
        tracks: the CTC lineage table ``{id: Track}``.
        crop: local crop size of every cell.
        radii: ``{id: (life, K)}`` boundary radii per frame of the track's life (local frame).
        poses: ``{id: [CellPose per frame of its life]}``.
        end_reason: ``{id: "video end" | "division" | "left the field" | "no room" | "no room to divide"}``.
    """

    masks: np.ndarray
    tracks: dict[int, Track]
    crop: int
    radii: dict[int, np.ndarray]
    poses: dict[int, list[CellPose]]
    end_reason: dict[int, str]
    notes: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return int(self.masks.shape[0])

    @property
    def cell_frames(self) -> CellFrames:
        return CellFrames(self)

    def pose(self, track_id: int, t: int) -> CellPose:
        return self.poses[track_id][t - self.tracks[track_id].begin]

    def local_mask(self, track_id: int, t: int) -> np.ndarray:
        """(crop, crop) bool mask of ``track_id`` at frame ``t`` in its local frame."""
        track = self.tracks[track_id]
        if not track.begin <= t <= track.end:
            raise IndexError(f"track {track_id} spans frames {track.begin}..{track.end}, not {t}")
        return render_local(self.radii[track_id][t - track.begin], self.crop)

    def cells_at(self, t: int) -> list[CellFrame]:
        """Every cell alive at frame ``t``, sorted by track id."""
        out = []
        for label in sorted(self.tracks):
            track = self.tracks[label]
            if not track.begin <= t <= track.end:
                continue
            prev = self.local_mask(label, t - 1) if t > track.begin else None
            parent = track.parent if t == track.begin else 0
            out.append(CellFrame(label, t, self.local_mask(label, t), prev, self.pose(label, t), parent))
        return out

    def divisions(self) -> list[tuple[int, tuple[int, ...], int]]:
        """``(mother, daughters, frame)`` per division; ``frame`` is the daughters' first frame."""
        kids: dict[int, list[int]] = {}
        for track in self.tracks.values():
            if track.parent:
                kids.setdefault(track.parent, []).append(track.label)
        return [(m, tuple(sorted(d)), self.tracks[d[0]].begin) for m, d in sorted(kids.items())]

    def summary(self) -> dict:
        reasons: dict[str, int] = {}
        for reason in self.end_reason.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        return {
            "frames": self.frames,
            "size": list(self.masks.shape[1:]),
            "tracks": len(self.tracks),
            "divisions": len(self.divisions()),
            "crop": self.crop,
            "end_reasons": reasons,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------- pasting


def paste_local(
    canvas: np.ndarray, local: np.ndarray, pose: CellPose, where: np.ndarray | None = None, order: int = 1
) -> None:
    """Write a local (crop, crop) image into ``canvas`` (H, W) through ``pose``, in place (inverse mapping).

    Args:
        where: optional (H, W) bool; only these scene pixels are written (e.g. ``layout.masks[t] == id``).
        order: spline order of the resampling (0 nearest, 1 bilinear).
    """
    crop = local.shape[0]
    height, width = canvas.shape[:2]
    reach = crop / math.sqrt(2.0) + 1.0
    y0, y1 = max(int(pose.y - reach), 0), min(int(pose.y + reach) + 2, height)
    x0, x1 = max(int(pose.x - reach), 0), min(int(pose.x + reach) + 2, width)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    m = pose.inverse_matrix(crop)
    lx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2]
    ly = m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    values = ndimage.map_coordinates(np.asarray(local, np.float64), [ly, lx], order=order, mode="nearest")
    inside = (lx > -0.5) & (lx < crop - 0.5) & (ly > -0.5) & (ly < crop - 0.5)
    if where is not None:
        inside &= where[y0:y1, x0:x1]
    window = canvas[y0:y1, x0:x1]
    window[inside] = values[inside].astype(canvas.dtype)


def scene_pixels(local_mask: np.ndarray, pose: CellPose, reach: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unclipped scene rows and columns covered by a local (crop, crop) mask pasted through ``pose``.

    A scene pixel belongs to the cell when the bilinear sample of the local mask at its inverse-mapped position
    is above 0.5 (zeros outside the crop): the same rule as warping the mask with ``kornia`` ``warp_affine``
    (``pose.matrix(crop)``, ``align_corners=True``) and thresholding, so the scene labels are exactly where
    a texture pasted that way lands.

    Args:
        reach: radius (px) around the pose centre that holds the cell; default the crop's half diagonal.
    """
    crop = local_mask.shape[0]
    reach = crop / math.sqrt(2.0) if reach is None else reach
    y0, x0 = math.floor(pose.y - reach) - 1, math.floor(pose.x - reach) - 1
    yy, xx = np.mgrid[y0 : math.ceil(pose.y + reach) + 2, x0 : math.ceil(pose.x + reach) + 2]
    m = pose.inverse_matrix(crop)
    lx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2]
    ly = m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    values = ndimage.map_coordinates(local_mask.astype(np.float32), [ly, lx], order=1, mode="constant", cval=0.0)
    inside = values > 0.5
    return yy[inside], xx[inside]


# --------------------------------------------------------------------------------------------- composing


@dataclass
class _Cell:
    label: int
    begin: int
    parent: int
    radii: np.ndarray  # planned (n, K)
    divides: bool
    y: float
    x: float
    angle: float
    heading: float
    z: float  # speed normal score (Gaussian copula state)
    poses: list[CellPose] = field(default_factory=list)

    @property
    def division_frame(self) -> int | None:
        return self.begin + len(self.radii) if self.divides else None


class _DivisionPlan:
    """When each new track divides: the fitted rate (``True``), never (``False``), or exactly ``n`` in all."""

    def __init__(self, rng: np.random.Generator, model: ShapeModel, frames: int, cells: int, divisions) -> None:
        self.rng, self.model, self.frames = rng, model, frames
        self.min_cycle = model.rounding_frames + 1  # a daughter completes its relaxation before rounding again
        self.by_rate = divisions is True
        self.budget = 0 if isinstance(divisions, bool) else int(divisions)
        self.initial: dict[int, int] = {}
        if self.budget > 0:
            count = min(self.budget, cells)
            chosen = rng.choice(cells, size=count, replace=False)
            # When daughters must divide too, the first divisions come early enough to leave them time.
            lo = min(self.min_cycle, frames - 1)
            hi = frames - 1 if self.budget <= cells else max(lo, (frames - 1) // 2)
            for index in sorted(chosen.tolist()):
                self.initial[index] = int(rng.integers(lo, hi + 1))
            self.budget -= count

    def initial_frame(self, index: int) -> int | None:
        return self.initial.get(index) if not self.by_rate else self._by_rate(0)

    def daughter_frame(self, birth: int) -> int | None:
        if self.by_rate:
            return self._by_rate(birth)
        earliest = birth + self.min_cycle
        if self.budget <= 0 or earliest > self.frames - 1:
            return None
        self.budget -= 1
        return int(self.rng.integers(earliest, self.frames))

    def _by_rate(self, birth: int) -> int | None:
        wait = int(self.rng.geometric(min(max(self.model.division_rate, 1e-9), 1.0)))
        frame = birth + max(wait, self.min_cycle if birth > 0 else 1)
        return frame if frame <= self.frames - 1 else None


def _nudge_offsets(max_nudge: int) -> np.ndarray:
    """Integer shifts (dy, dx) within ``max_nudge`` px, nearest first (ties in a fixed order)."""
    r = np.arange(-max_nudge, max_nudge + 1)
    grid = np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    norm = np.hypot(grid[:, 0], grid[:, 1])
    keep = norm <= max_nudge + 1e-9
    order = np.lexsort((grid[keep][:, 1], grid[keep][:, 0], norm[keep]))
    return grid[keep][order]


def _find_room(
    occupied: np.ndarray,
    radii: np.ndarray,
    crop: int,
    pose: CellPose,
    offsets: np.ndarray,
    gap: float,
    min_visible: float,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | str:
    """First integer shift in ``offsets`` where the cell (grown by ``gap``) misses every occupied pixel.

    The cell's scene pixels are those of its local mask pasted through ``pose`` (:func:`scene_pixels`), so
    labels and pasted textures agree pixel for pixel. Integer shifts move that pixel set exactly, so it is
    computed once and the candidates are tested in vectorised batches. Returns ``(rows, cols, shift)`` of the
    in-field pixels, or why it failed (``"left the field"`` when even the unshifted cell is mostly outside,
    else ``"no room"``).
    """
    height, width = occupied.shape
    rr, cc = scene_pixels(render_local(radii, crop), pose, reach=float(radii.max()) + 1.5)
    rr_gap, cc_gap = polygon_pixels(radii + gap, pose.y, pose.x, pose.angle)
    rr_gap, cc_gap = np.concatenate([rr_gap, rr]), np.concatenate([cc_gap, cc])
    area = max(rr.size, 1)
    # The first candidate alone first: most placements need no nudge.
    for start, stop in [(0, 1)] + [(i, i + _CHUNK) for i in range(1, len(offsets), _CHUNK)]:
        shifts = offsets[start:stop]
        rows, cols = rr_gap[None] + shifts[:, :1], cc_gap[None] + shifts[:, 1:]
        inb = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        hit = (occupied[rows.clip(0, height - 1), cols.clip(0, width - 1)] & inb).any(1)
        rows, cols = rr[None] + shifts[:, :1], cc[None] + shifts[:, 1:]
        visible = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).sum(1)
        ok = ~hit & (visible >= max(min_visible * area, 1))
        if ok.any():
            dy, dx = (int(v) for v in shifts[int(np.argmax(ok))])
            rows, cols = rr + dy, cc + dx
            inb = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            return rows[inb], cols[inb], (dy, dx)
    rows_in = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
    return "left the field" if rows_in.sum() < max(min_visible * area, 1) else "no room"


def _neighbour_target(
    rng: np.random.Generator, model: ShapeModel, placed: list[tuple[float, float, float]], radius: float
) -> tuple[float, float] | None:
    """Where a new cell should go to give the fitted nearest-neighbour distance, or None: anywhere.

    A distance ratio (centre distance / sum of equivalent radii) is drawn from the training data's; a ratio up
    to ``NEIGHBOUR_CLUSTER_MAX`` puts the cell at that distance from a random cell already placed, in a random
    direction (so cells that touch in the data touch here too); a larger one (an isolated cell) leaves the
    position to uniform scatter. Models without the statistic (older checkpoints) scatter every cell.
    """
    if model.neighbour_quantiles is None or not placed:
        return None
    ratio = float(
        np.interp(rng.random(), np.linspace(0.0, 1.0, len(model.neighbour_quantiles)), model.neighbour_quantiles)
    )
    if ratio > NEIGHBOUR_CLUSTER_MAX:
        return None
    y, x, other = placed[int(rng.integers(len(placed)))]
    theta = float(rng.uniform(-math.pi, math.pi))
    distance = ratio * (radius + other)
    return y + distance * math.sin(theta), x + distance * math.cos(theta)


def compose_scene(
    shape_model: ShapeModel,
    rng: np.random.Generator,
    frames: int,
    height: int,
    width: int,
    cells: int,
    divisions: bool | int = True,
    crop: int | None = None,
    gap: float = 1.0,
    min_visible: float = 0.25,
    max_nudge: int | None = None,
) -> SceneLayout:
    """Compose ``cells`` generated cells in an (H, W) field for ``frames`` frames.

    Args:
        shape_model: fitted statistics (shape, size, growth, motion, divisions).
        rng: the only source of randomness (same seed, same scene).
        divisions: ``True`` samples divisions at the fitted rate, ``False`` none, an int asks for exactly that
            many (realised unless a mother leaves the field or finds no room first; see ``layout.notes``).
        crop: local crop size (default ``shape_model.suggested_crop()``); cells that would not fit a smaller
            crop are scaled down to fit it (shape kept), never cut.
        gap: minimum background between two cells (px), so labels stay separable and textures do not bleed.
        min_visible: a cell with less than this fraction of its area inside the field has left it.
        max_nudge: largest shift (px) to resolve an overlap; default half the mean cell's equivalent radius.

    Returns:
        A :class:`SceneLayout`; ``layout.masks`` and ``layout.tracks`` pass ``validate_sequence`` once written.
    """
    if frames < 1:
        raise CellgenInputError(None, f"frames must be >= 1, got {frames}")
    if cells < 1:
        raise CellgenInputError(None, f"cells must be >= 1, got {cells}")
    divisions = bool(divisions) if isinstance(divisions, (bool, np.bool_)) else int(divisions)
    if not isinstance(divisions, bool) and divisions < 0:
        raise CellgenInputError(None, f"divisions must be true, false or a count >= 0, got {divisions}")
    if not isinstance(divisions, bool) and divisions > 0 and frames < 2:
        raise CellgenInputError(None, f"{divisions} divisions need at least 2 frames, got {frames}")
    crop = crop or shape_model.suggested_crop()
    mean_area = float(
        np.clip(
            math.exp(shape_model.log_area_mean + shape_model.log_area_std**2 / 2),
            shape_model.area_min,
            shape_model.area_max,
        )
    )
    if cells * mean_area > MAX_FILL * height * width:
        raise CellgenInputError(
            None,
            f"a {height}x{width} field is too small for {cells} cells of ~{mean_area:.0f} px "
            f"(over {MAX_FILL:.0%} of it would be cells)",
            "use fewer cells or a larger field",
        )
    if 2 * (shape_model.max_radius + gap) + 2 > min(height, width):
        raise CellgenInputError(
            None, f"a {height}x{width} field is smaller than one cell (radius up to {shape_model.max_radius:.0f} px)"
        )
    max_nudge = max_nudge if max_nudge is not None else max(1, int(round(0.5 * math.sqrt(mean_area / math.pi))))
    nudges = _nudge_offsets(max_nudge)
    plan = _DivisionPlan(rng, shape_model, frames, cells, divisions)
    masks = np.zeros((frames, height, width), np.uint16)
    radii_out: dict[int, np.ndarray] = {}
    poses_out: dict[int, list[CellPose]] = {}
    tracks: dict[int, Track] = {}
    end_reason: dict[int, str] = {}
    notes: list[str] = []
    next_label = 1

    def planned_radii(birth: int, division: int | None, **kwargs) -> np.ndarray:
        length = (division if division is not None else frames) - birth
        return shape_model.sample_radii(rng, length, crop, round_end=division is not None, **kwargs)

    def finish(cell: _Cell, last: int, reason: str) -> None:
        life = last - cell.begin + 1
        tracks[cell.label] = Track(cell.label, cell.begin, last, cell.parent)
        radii_out[cell.label] = cell.radii[:life]
        poses_out[cell.label] = cell.poses[:life]
        end_reason[cell.label] = reason

    def stamp(t: int, occupied: np.ndarray, cell: _Cell, rows: np.ndarray, cols: np.ndarray) -> None:
        masks[t, rows, cols] = cell.label
        occupied[rows, cols] = True
        cell.poses.append(CellPose(float(cell.y), float(cell.x), float(cell.angle)))

    # Frame 0: positions with the data's nearest-neighbour distances (colonies), random rotations, each cell
    # wholly inside the field and clear of the others.
    live: list[_Cell] = []
    placed: list[tuple[float, float, float]] = []  # (y, x, equivalent radius) of the cells placed so far
    occupied = np.zeros((height, width), bool)
    for index in range(cells):
        division = plan.initial_frame(index)
        radii = planned_radii(0, division)
        angle = float(rng.uniform(-math.pi, math.pi))
        radius = math.sqrt(float(polygon_area(radii[0].astype(np.float64))) / math.pi)
        target = _neighbour_target(rng, shape_model, placed, radius)
        found: tuple | str = "no target"
        if target is not None:
            start = CellPose(target[0], target[1], angle)
            found = _find_room(occupied, radii[0], crop, start, nudges, gap, 1.0)
        if isinstance(found, str):  # scattered, or no room beside the chosen neighbour: anywhere in the field
            margin = float(radii[0].max()) + gap + 1
            fy, fx = rng.random(2)
            span_y, span_x = height - 2 * margin, width - 2 * margin
            candidates = np.stack(
                [rng.integers(0, max(int(span_y), 1), 256), rng.integers(0, max(int(span_x), 1), 256)], 1
            )
            start = CellPose(margin + fy, margin + fx, angle)
            found = _find_room(occupied, radii[0], crop, start, candidates, gap, 1.0)
        if isinstance(found, str):
            raise CellgenInputError(
                None,
                f"could place only {index} of {cells} cells without overlap in a {height}x{width} field",
                "use fewer cells or a larger field",
            )
        rows, cols, (dy, dx) = found
        placed.append((start.y + dy, start.x + dx, radius))
        heading = float(rng.uniform(-math.pi, math.pi))
        cell = _Cell(
            next_label,
            0,
            0,
            radii,
            division is not None,
            start.y + dy,
            start.x + dx,
            angle,
            heading,
            float(rng.standard_normal()),
        )
        next_label += 1
        stamp(0, occupied, cell, rows, cols)
        live.append(cell)

    rho = shape_model.speed_autocorr
    for t in range(1, frames):
        occupied = np.zeros((height, width), bool)
        survivors: list[_Cell] = []
        movers = [c for c in live if c.division_frame != t]
        # Divisions first: daughters take the space their mother leaves.
        for mother in (c for c in live if c.division_frame == t):
            last = len(mother.radii) - 1
            mother_area = float(polygon_area(mother.radii[last].astype(np.float64)))
            div_frames = (plan.daughter_frame(t), plan.daughter_frame(t))
            lengths = tuple((d if d is not None else frames) - t for d in div_frames)
            daughters = shape_model.sample_daughters(
                rng, mother_area, crop, lengths, tuple(d is not None for d in div_frames), gap
            )
            placed = []
            cos, sin = math.cos(mother.angle), math.sin(mother.angle)
            for (radii, offset), division in zip(daughters, div_frames, strict=True):
                y, x = mother.y + offset * sin, mother.x + offset * cos
                found = _find_room(occupied, radii[0], crop, CellPose(y, x, mother.angle), nudges, gap, min_visible)
                if isinstance(found, str):
                    break
                rows, cols, (dy, dx) = found
                heading = mother.angle if offset > 0 else mother.angle + math.pi
                kid = _Cell(
                    0,
                    t,
                    mother.label,
                    radii,
                    division is not None,
                    y + dy,
                    x + dx,
                    mother.angle,
                    heading,
                    float(rng.standard_normal()),
                )
                placed.append((kid, rows, cols))
                occupied[rows, cols] = True  # the sister must not land on it
            if len(placed) < 2:
                for _, rows, cols in placed:
                    occupied[rows, cols] = False
                finish(mother, t - 1, "no room to divide")
                continue
            finish(mother, t - 1, "division")
            for kid, rows, cols in placed:
                kid.label = next_label
                next_label += 1
                stamp(t, occupied, kid, rows, cols)
                survivors.append(kid)
        for cell in movers:
            cell.z = rho * cell.z + math.sqrt(1.0 - rho**2) * float(rng.standard_normal())
            speed = shape_model.sample_speed(cell.z)
            cell.heading += shape_model.sample_turn(rng)
            cell.angle += shape_model.sample_rotation(rng)
            y = cell.y + speed * math.sin(cell.heading)
            x = cell.x + speed * math.cos(cell.heading)
            radii = cell.radii[t - cell.begin]
            found = _find_room(occupied, radii, crop, CellPose(y, x, cell.angle), nudges, gap, min_visible)
            if found == "no room":  # blocked where it wanted to go: try to stay near where it was
                y, x = cell.y, cell.x
                found = _find_room(occupied, radii, crop, CellPose(y, x, cell.angle), nudges, gap, min_visible)
            if isinstance(found, str):
                finish(cell, t - 1, found)
                continue
            rows, cols, (dy, dx) = found
            new_y, new_x = y + dy, x + dx
            if (dy or dx) and math.hypot(new_y - cell.y, new_x - cell.x) > 0.5:
                cell.heading = math.atan2(new_y - cell.y, new_x - cell.x)  # it now heads where it could go
            cell.y, cell.x = new_y, new_x
            stamp(t, occupied, cell, rows, cols)
            survivors.append(cell)
        live = survivors
    for cell in live:
        finish(cell, frames - 1, "video end")

    layout = SceneLayout(masks, dict(sorted(tracks.items())), crop, radii_out, poses_out, end_reason, notes)
    realised = len(layout.divisions())
    if not isinstance(divisions, bool) and realised < divisions:
        notes.append(f"{realised} of {divisions} requested divisions happened (mothers left or had no room)")
    return layout
