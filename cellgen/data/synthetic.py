"""Procedural CTC-format demo data: textured cells that move, deform and divide.

The demo dataset is what every config falls back to and what the tests run on, so it must be
deterministic (one seed gives the same bytes), small and fast (~64 frames of 256x256 in well under a
second per sequence), and exercise everything real data has: instance masks, lineage with divisions,
a mitotic rounding phase before each division, and two imaging flavours:

* ``fluo``: bright textured nuclei on a dark background with shot-like noise (like GOWT1 / SIM+);
* ``phc``: darker textured cells with a bright halo on a grey, unevenly lit background (like PSC).

Cells never overlap (pairwise repulsion) and stay inside the field, so every track is present in
every frame of its life span and the validator accepts the output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from cellgen.data.cache import cache_root
from cellgen.data.ctc import PixelSize, Track, write_sequence
from cellgen.data.ownership import MARKER, check_replaceable, marker_text, remove_stale_staging

FLAVOURS = {"fluo": "Demo-Fluo", "phc": "Demo-PhC"}
DEMO_VERSION = 2  # 2: frames carry DEMO_PIXEL_SIZE
# Demo cells are 18-28 px across (radius 9-14), i.e. 9-14 microns: the scale of the CTC 2-D datasets.
DEMO_PIXEL_SIZE = PixelSize(0.5, 0.5)


@dataclass
class _Cell:
    label: int
    y: float
    x: float
    a: float  # semi-axis along the cell's own x axis (px)
    b: float  # semi-axis along its y axis (px)
    theta: float
    vy: float
    vx: float
    brightness: float
    texture: np.ndarray  # (3, 4): per sinusoid kx, ky, phase, amplitude
    wobble_phase: float
    born: int
    divide_at: int
    history: list[int] = field(default_factory=list)

    @property
    def radius(self) -> float:
        return max(self.a, self.b)


def _new_cell(rng: np.random.Generator, label: int, y: float, x: float, r: float, t: int, cycle: tuple[int, int]):
    elong = rng.uniform(1.0, 1.35)
    texture = np.stack(
        [
            rng.uniform(0.15, 0.45, 3),
            rng.uniform(0.15, 0.45, 3),
            rng.uniform(0, 2 * np.pi, 3),
            rng.uniform(0.3, 1, 3),
        ],
        axis=1,
    )
    return _Cell(
        label=label,
        y=y,
        x=x,
        a=r * elong,
        b=r / elong,
        theta=rng.uniform(0, np.pi),
        vy=rng.normal(0, 0.7),
        vx=rng.normal(0, 0.7),
        brightness=rng.uniform(0.65, 1.0),
        texture=texture,
        wobble_phase=rng.uniform(0, 2 * np.pi),
        born=t,
        divide_at=t + int(rng.integers(*cycle)),
    )


def generate_sequence(
    frames: int = 64,
    height: int = 256,
    width: int = 256,
    cells: int = 12,
    flavour: str = "fluo",
    seed: int = 0,
    max_cells: int = 40,
    radius: tuple[float, float] = (9.0, 14.0),
    cell_cycle: tuple[int, int] = (25, 70),
) -> tuple[np.ndarray, np.ndarray, dict[int, Track]]:
    """Simulate one annotated sequence.

    Returns:
        images (T, H, W) uint8, masks (T, H, W) uint16 whose ids are track ids, and the track table.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {sorted(FLAVOURS)}, got {flavour!r}")
    if frames < 1 or cells < 1:
        raise ValueError("frames and cells must be positive")
    if min(height, width) < 4 * radius[1]:
        raise ValueError(f"a {height}x{width} field is too small for cells of radius up to {radius[1]}")
    rng = np.random.default_rng(seed)
    alive: list[_Cell] = []
    tracks: dict[int, Track] = {}
    parents: dict[int, int] = {}
    next_label = 1
    for _ in range(cells):
        r = rng.uniform(*radius)
        y, x = rng.uniform(2 * r, height - 2 * r), rng.uniform(2 * r, width - 2 * r)
        # The first cycle starts at a random phase so divisions are spread over the sequence.
        cell = _new_cell(rng, next_label, y, x, r, 0, cell_cycle)
        cell.divide_at = int(rng.integers(cell_cycle[0] // 3, cell_cycle[1]))
        alive.append(cell)
        next_label += 1
    _separate(alive, height, width)

    images = np.empty((frames, height, width), np.uint8)
    masks = np.zeros((frames, height, width), np.uint16)
    background = _background(rng, height, width, flavour)
    for t in range(frames):
        if t > 0:
            alive, next_label = _step(rng, alive, t, next_label, parents, max_cells, cell_cycle)
            _separate(alive, height, width)
        intensity = _render(alive, t, masks[t])
        images[t] = _image(rng, intensity, masks[t], background, flavour)
        for cell in alive:
            cell.history.append(t)
    for cell_label, (begin, end) in _spans(masks).items():
        tracks[cell_label] = Track(cell_label, begin, end, parents.get(cell_label, 0))
    return images, masks, tracks


def _step(rng, alive, t, next_label, parents, max_cells, cycle):
    survivors = []
    for cell in alive:
        if t >= cell.divide_at and len(alive) + len(survivors) < max_cells + 1:
            # Division: the mother's track ends, two daughters of half the area start beside it.
            r = cell.radius / np.sqrt(2)
            dy, dx = np.sin(cell.theta) * (r + 1.5), np.cos(cell.theta) * (r + 1.5)
            for sign in (-1, 1):
                daughter = _new_cell(rng, next_label, cell.y + sign * dy, cell.x + sign * dx, r, t, cycle)
                daughter.a = daughter.b = r
                daughter.theta = cell.theta
                daughter.vy, daughter.vx = (
                    cell.vy + sign * 0.5 * np.sin(cell.theta),
                    cell.vx + sign * 0.5 * np.cos(cell.theta),
                )
                daughter.brightness = cell.brightness
                parents[next_label] = cell.label
                survivors.append(daughter)
                next_label += 1
            continue
        # Persistent random walk with a little turning, slow growth and a shape wobble.
        cell.vy = 0.85 * cell.vy + rng.normal(0, 0.35)
        cell.vx = 0.85 * cell.vx + rng.normal(0, 0.35)
        cell.y += cell.vy
        cell.x += cell.vx
        cell.theta += rng.normal(0, 0.05)
        growth = 1.004 if cell.radius < 18 else 1.0
        cell.a *= growth
        cell.b *= growth
        if cell.divide_at - t <= 3:
            # Mitotic rounding (prophase/metaphase): the cell rounds up and brightens before it splits.
            mean = 0.5 * (cell.a + cell.b)
            cell.a, cell.b = 0.6 * cell.a + 0.4 * mean, 0.6 * cell.b + 0.4 * mean
            cell.brightness = min(1.0, cell.brightness * 1.08)
        survivors.append(cell)
    return survivors, next_label


def _separate(alive: list[_Cell], height: int, width: int, iterations: int = 8, gap: float = 2.0) -> None:
    """Push overlapping cells apart and keep them inside the field (vectorised over pairs)."""
    if not alive:
        return
    pos = np.array([[c.y, c.x] for c in alive], float)
    rad = np.array([c.radius for c in alive], float)
    for _ in range(iterations):
        diff = pos[:, None, :] - pos[None, :, :]
        dist = np.sqrt((diff**2).sum(-1)) + np.eye(len(alive))
        need = rad[:, None] + rad[None, :] + gap
        overlap = np.clip(need - dist, 0, None)
        np.fill_diagonal(overlap, 0)
        if not overlap.any():
            break
        push = (diff / dist[..., None]) * (0.5 * overlap + 0.01)[..., None] * (overlap > 0)[..., None]
        pos += push.sum(1)
        pos[:, 0] = np.clip(pos[:, 0], rad + 2, height - rad - 3)
        pos[:, 1] = np.clip(pos[:, 1], rad + 2, width - rad - 3)
    pos[:, 0] = np.clip(pos[:, 0], rad + 2, height - rad - 3)
    pos[:, 1] = np.clip(pos[:, 1], rad + 2, width - rad - 3)
    for cell, (y, x) in zip(alive, pos, strict=True):
        if y != cell.y or x != cell.x:
            cell.vy *= 0.5
            cell.vx *= 0.5
        cell.y, cell.x = float(y), float(x)


def _render(alive: list[_Cell], t: int, mask: np.ndarray) -> np.ndarray:
    """Paint label ids into ``mask`` and return the noiseless cell intensity (H, W) in [0, 1]."""
    height, width = mask.shape
    intensity = np.zeros(mask.shape, np.float32)
    for cell in alive:
        wobble = 1.0 + 0.06 * np.sin(0.3 * t + cell.wobble_phase)
        a, b = cell.a * wobble, cell.b / wobble
        r = int(np.ceil(max(a, b))) + 2
        y0, y1 = max(int(cell.y) - r, 0), min(int(cell.y) + r + 1, height)
        x0, x1 = max(int(cell.x) - r, 0), min(int(cell.x) + r + 1, width)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cell.y, xx - cell.x
        c, s = np.cos(cell.theta), np.sin(cell.theta)
        u, v = c * dx + s * dy, -s * dx + c * dy  # cell-local coordinates: texture moves with the cell
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        inside = (rho <= 1.0) & (mask[y0:y1, x0:x1] == 0)
        kx, ky, phase, amp = cell.texture.T
        tex = (amp[:, None, None] * np.sin(kx[:, None, None] * u + ky[:, None, None] * v + phase[:, None, None])).sum(0)
        tex = 0.75 + 0.25 * tex / amp.sum()
        profile = np.clip(1.15 - 0.35 * rho**2, 0, 1)  # brighter centre, softer rim
        value = cell.brightness * profile * tex
        mask[y0:y1, x0:x1][inside] = cell.label
        intensity[y0:y1, x0:x1][inside] = value[inside]
    return intensity


def _background(rng: np.random.Generator, height: int, width: int, flavour: str) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height).astype(np.float32)
    return (0.04 + 0.02 * ramp) if flavour == "fluo" else (0.5 + 0.06 * ramp)


def _image(rng, intensity, mask, background, flavour) -> np.ndarray:
    if flavour == "fluo":
        signal = background + 0.75 * ndimage.gaussian_filter(intensity, 1.0)
        noisy = rng.poisson(signal * 120.0) / 120.0 + rng.normal(0, 0.015, signal.shape)
    else:
        body = ndimage.gaussian_filter(intensity, 0.8)
        cells = ndimage.gaussian_filter((mask > 0).astype(np.float32), 1.0)
        halo = np.clip(ndimage.gaussian_filter((mask > 0).astype(np.float32), 2.5) - cells, 0, None)
        noisy = background - 0.35 * body + 0.9 * halo + rng.normal(0, 0.02, body.shape)
    return np.clip(noisy * 255.0, 0, 255).astype(np.uint8)


def _spans(masks: np.ndarray) -> dict[int, tuple[int, int]]:
    spans: dict[int, tuple[int, int]] = {}
    for t, mask in enumerate(masks):
        for label in np.unique(mask[mask > 0]).tolist():
            begin = spans.get(label, (t, t))[0]
            spans[label] = (begin, t)
    return spans


# --------------------------------------------------------------------------------------------- datasets


def write_demo_dataset(
    out: str | Path,
    frames: int = 64,
    size: int = 256,
    cells: int = 12,
    seed: int = 0,
    flavours: tuple[str, ...] = ("fluo", "phc"),
    sequences: int = 2,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``out/Demo-Fluo/{01,02}`` and ``out/Demo-PhC/{01,02}`` in CTC layout; return the sequence folders."""
    written = []
    for f_index, flavour in enumerate(flavours):
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {sorted(FLAVOURS)}, got {flavour!r}")
        for s in range(sequences):
            seq_seed = seed * 1000 + f_index * 100 + s
            folder, name = Path(out) / FLAVOURS[flavour], f"{s + 1:02d}"
            check_replaceable(folder, name, overwrite)  # --overwrite replaces only what cellgen wrote
            remove_stale_staging(folder, name)
            images, masks, tracks = generate_sequence(frames, size, size, cells, flavour, seq_seed)
            marker = (MARKER, marker_text("prepare-data demo", {"seed": seq_seed, "frames": frames, "size": size}))
            written.append(
                write_sequence(
                    folder, name, images, masks, tracks, overwrite=overwrite, marker=marker, pixel_size=DEMO_PIXEL_SIZE
                )
            )
    return written


def demo_cache_root() -> Path:
    """Where the embedded demo data lives: ``$CELLGEN_CACHE`` or ``~/.cache/cellgen``."""
    return cache_root()


def demo_sequence(flavour: str = "fluo", name: str = "01", frames: int = 64, size: int = 256) -> Path:
    """Path of a demo sequence, generating the demo dataset on first use.

    This is the default every DataModule falls back to when no data folder is configured. Concurrent
    callers (e.g. DDP ranks) are safe: sequences are written atomically and an existing one is reused.
    """
    key = hashlib.sha1(f"v{DEMO_VERSION}-{frames}-{size}".encode()).hexdigest()[:8]
    root = demo_cache_root() / f"demo-{key}"
    seq = root / FLAVOURS[flavour] / name
    if not (seq.is_dir() and (seq.parent / f"{name}_GT" / "TRA" / "man_track.txt").is_file()):
        try:
            write_demo_dataset(root, frames=frames, size=size)
        except Exception:
            if not seq.is_dir():  # another process may have won the race; only fail if nothing is there
                raise
    return seq
