"""A CTC sequence's lineage as a graph, written as GEFF (napari, ultrack, TrackMate) or TrackMate XML (Fiji).

One node per cell per annotated frame, at the centroid of its TRA mask; edges join a track's consecutive
frames, a parent's last frame to each daughter's first, and a track to its continuation after a gap (a parent
with one child in ``man_track.txt``). Positions are in pixels; the pixel size read from the frames turns them
into microns (GEFF: the axis ``scale``; TrackMate: positions in physical units and ``pixelwidth``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellgen.data.ctc import CTCSequence, PixelSize, daughters_of, read_pixel_size
from cellgen.data.errors import CellgenInputError


@dataclass(frozen=True)
class LineageGraph:
    """Nodes and edges of a lineage, as arrays (what GEFF stores).

    Attributes:
        t, y, x: (N,) frame index and centroid in pixels of each node.
        area: (N,) mask area in pixels.
        track_id: (N,) CTC track id (the mask label).
        tracklet_id: (N,) id of the maximal unbranched path holding the node (a track and its gap continuations).
        lineage_id: (N,) id of the root track of the node's lineage tree.
        edges: (E, 2) node indices (source, target), source earlier in time.
        pixel_size: physical pixel size, or None when the frames carry none.
        shape: (T, H, W) of the sequence.
    """

    t: np.ndarray
    y: np.ndarray
    x: np.ndarray
    area: np.ndarray
    track_id: np.ndarray
    tracklet_id: np.ndarray
    lineage_id: np.ndarray
    edges: np.ndarray
    pixel_size: PixelSize | None
    shape: tuple[int, int, int]


def lineage_graph(sequence: str | Path) -> LineageGraph:
    """Read a CTC sequence (``.../NN`` with ``NN_GT/TRA``) into a :class:`LineageGraph`."""
    seq = CTCSequence(sequence)
    if not seq.tra_paths:
        raise CellgenInputError(seq.gt_dir / "TRA", "no man_trackTTT.tif masks to read the cells from")
    tracks = seq.tracks
    rows: list[tuple[int, int, float, float, float]] = []  # (t, label, y, x, area)
    for t, path in seq.tra_paths.items():
        mask = seq.tra_mask(t)
        labels = mask.ravel()
        count = np.bincount(labels)
        ys, xs = np.indices(mask.shape)
        sum_y = np.bincount(labels, weights=ys.ravel())
        sum_x = np.bincount(labels, weights=xs.ravel())
        for label in (np.flatnonzero(count[1:]) + 1).tolist():
            if label not in tracks:
                raise CellgenInputError(path, f"label {label} is not in man_track.txt")
            rows.append((t, int(label), sum_y[label] / count[label], sum_x[label] / count[label], float(count[label])))
    rows.sort()
    node_of = {(t, label): i for i, (t, label, *_) in enumerate(rows)}
    frames_of: dict[int, list[int]] = {}
    for t, label, *_ in rows:
        frames_of.setdefault(label, []).append(t)

    edges = []
    for label, frames in frames_of.items():
        edges += [(node_of[(a, label)], node_of[(b, label)]) for a, b in zip(frames, frames[1:], strict=False)]
    children = daughters_of(tracks)
    for parent, kids in children.items():
        for kid in kids:
            if parent in frames_of and kid in frames_of:
                edges.append((node_of[(frames_of[parent][-1], parent)], node_of[(frames_of[kid][0], kid)]))

    tracklet, lineage = _tracklets_and_lineages(tracks, children)
    labels = np.array([label for _, label, *_ in rows], np.int64)
    values = np.array([(y, x, area) for *_, y, x, area in rows], np.float64).reshape(-1, 3)
    height, width = seq.shape
    return LineageGraph(
        t=np.array([t for t, *_ in rows], np.int64),
        y=values[:, 0],
        x=values[:, 1],
        area=values[:, 2],
        track_id=labels,
        tracklet_id=np.array([tracklet[k] for k in labels.tolist()], np.int64),
        lineage_id=np.array([lineage[k] for k in labels.tolist()], np.int64),
        edges=np.array(sorted(edges), np.int64).reshape(-1, 2),
        pixel_size=read_pixel_size(seq.path),
        shape=(len(seq), height, width),
    )


def _tracklets_and_lineages(tracks: dict, children: dict[int, list[int]]) -> tuple[dict[int, int], dict[int, int]]:
    """Tracklet id (a gap continuation keeps its parent's) and lineage root of every track id."""
    tracklet: dict[int, int] = {}
    lineage: dict[int, int] = {}

    def resolve(label: int) -> None:
        parent = tracks[label].parent
        if parent and parent in tracks:
            if parent not in lineage:
                resolve(parent)
            lineage[label] = lineage[parent]
            tracklet[label] = tracklet[parent] if len(children[parent]) == 1 else label
        else:
            lineage[label] = tracklet[label] = label

    for label in sorted(tracks, key=lambda k: tracks[k].begin):
        if label not in lineage:
            resolve(label)
    return tracklet, lineage


# --------------------------------------------------------------------------------------------- GEFF


def write_geff(graph: LineageGraph, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``graph`` as a GEFF zarr store (``geff`` package; its structure validation runs before writing).

    Node positions ``t, y, x`` are in frames and pixels; with a pixel size the space axes carry it as
    ``scale`` with ``scaled_unit: micrometer``, as the GEFF specification describes.
    """
    import geff
    import networkx as nx

    out = Path(out)
    if out.exists() and not overwrite:
        raise CellgenInputError(out, "already exists", "choose another output or pass --overwrite true")
    nx_graph = nx.DiGraph()
    for i in range(len(graph.t)):
        nx_graph.add_node(
            i,
            t=int(graph.t[i]),
            y=float(graph.y[i]),
            x=float(graph.x[i]),
            area=float(graph.area[i]),
            track_id=int(graph.track_id[i]),
            tracklet_id=int(graph.tracklet_id[i]),
            lineage_id=int(graph.lineage_id[i]),
        )
    nx_graph.add_edges_from((int(a), int(b)) for a, b in graph.edges)
    size = graph.pixel_size
    geff.write(
        nx_graph,
        str(out),
        axis_names=["t", "y", "x"],
        axis_types=["time", "space", "space"],
        axis_units=["frame", "pixel", "pixel"],
        axis_scales=[None, size.y if size else None, size.x if size else None],
        scaled_units=[None, "micrometer" if size else None, "micrometer" if size else None],
        overwrite=overwrite,
    )
    metadata = geff.GeffMetadata.read(str(out))
    metadata.track_node_props = {"tracklet": "tracklet_id", "lineage": "lineage_id"}
    metadata.write(str(out))
    return out


# --------------------------------------------------------------------------------------------- TrackMate


_SPOT_FEATURES = [  # (feature, dimension, isint)
    ("QUALITY", "QUALITY", "false"),
    ("POSITION_X", "POSITION", "false"),
    ("POSITION_Y", "POSITION", "false"),
    ("POSITION_Z", "POSITION", "false"),
    ("POSITION_T", "TIME", "false"),
    ("FRAME", "NONE", "true"),
    ("RADIUS", "LENGTH", "false"),
    ("VISIBILITY", "NONE", "true"),
    ("AREA", "AREA", "false"),
    ("CTC_TRACK_ID", "NONE", "true"),
]


def write_trackmate_xml(graph: LineageGraph, out: str | Path, image_folder: str = "", overwrite: bool = False) -> Path:
    """Write ``graph`` as a TrackMate XML model (Fiji: Plugins > Tracking > Load a TrackMate file).

    TrackMate positions are physical (microns when the frames carry a pixel size, else pixels); a TrackMate
    track is a whole lineage tree, so track ids are the lineage ids.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise CellgenInputError(out, "already exists", "choose another output or pass --overwrite true")
    size = graph.pixel_size or PixelSize(1.0, 1.0, "pixel")
    unit = "micron" if graph.pixel_size else "pixel"
    root = ET.Element("TrackMate", version="7.13.2")
    ET.SubElement(root, "Log").text = "Written by cellgen export trackmate from a CTC sequence."
    model = ET.SubElement(root, "Model", spatialunits=unit, timeunits="frame")
    features = ET.SubElement(model, "FeatureDeclarations")
    spot_features = ET.SubElement(features, "SpotFeatures")
    for name, dimension, isint in _SPOT_FEATURES:
        ET.SubElement(spot_features, "Feature", feature=name, name=name.title(), shortname=name.title())
        spot_features[-1].set("dimension", dimension)
        spot_features[-1].set("isint", isint)
    edge_features = ET.SubElement(features, "EdgeFeatures")
    for name in ("SPOT_SOURCE_ID", "SPOT_TARGET_ID"):
        ET.SubElement(edge_features, "Feature", feature=name, name=name.title(), shortname=name.title())
        edge_features[-1].set("dimension", "NONE")
        edge_features[-1].set("isint", "true")
    track_features = ET.SubElement(features, "TrackFeatures")
    ET.SubElement(track_features, "Feature", feature="TRACK_ID", name="Track ID", shortname="ID")
    track_features[-1].set("dimension", "NONE")
    track_features[-1].set("isint", "true")

    spots = ET.SubElement(model, "AllSpots", nspots=str(len(graph.t)))
    for frame in range(graph.shape[0]):
        in_frame = ET.SubElement(spots, "SpotsInFrame", frame=str(frame))
        for i in np.flatnonzero(graph.t == frame).tolist():
            radius = float(np.sqrt(graph.area[i] / np.pi)) * size.x
            attributes = {
                "ID": str(i),
                "name": f"ID{i}",
                "QUALITY": "1.0",
                "POSITION_X": repr(float(graph.x[i]) * size.x),
                "POSITION_Y": repr(float(graph.y[i]) * size.y),
                "POSITION_Z": "0.0",
                "POSITION_T": f"{frame}.0",
                "FRAME": str(frame),
                "RADIUS": repr(radius),
                "VISIBILITY": "1",
                "AREA": repr(float(graph.area[i]) * size.x * size.y),
                "CTC_TRACK_ID": str(int(graph.track_id[i])),
            }
            ET.SubElement(in_frame, "Spot", attributes)

    all_tracks = ET.SubElement(model, "AllTracks")
    filtered = ET.SubElement(model, "FilteredTracks")
    source_lineage = graph.lineage_id[graph.edges[:, 0]] if len(graph.edges) else np.zeros(0, np.int64)
    for lineage in np.unique(graph.lineage_id).tolist():
        track = ET.SubElement(all_tracks, "Track", name=f"Track_{lineage}", TRACK_ID=str(lineage))
        for source, target in graph.edges[source_lineage == lineage].tolist():
            ET.SubElement(track, "Edge", SPOT_SOURCE_ID=str(source), SPOT_TARGET_ID=str(target))
        ET.SubElement(filtered, "TrackID", TRACK_ID=str(lineage))

    settings = ET.SubElement(root, "Settings")
    frames, height, width = graph.shape
    ET.SubElement(
        settings,
        "ImageData",
        filename="",
        folder=image_folder,
        width=str(width),
        height=str(height),
        nslices="1",
        nframes=str(frames),
        pixelwidth=repr(size.x),
        pixelheight=repr(size.y),
        voxeldepth="1.0",
        timeinterval="1.0",
    )
    ET.SubElement(root, "GUIState", state="ConfigureViews")
    ET.indent(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="UTF-8", xml_declaration=True)
    return out
