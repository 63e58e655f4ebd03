"""A CTC sequence as one OME-Zarr (NGFF 0.4): frames, TRA labels and the GEFF lineage side by side.

Layout (zarr format 2, what napari-ome-zarr, Fiji's n5/zarr readers and ``ome-zarr`` read)::

    OUT.ome.zarr/0                   frames (T, Y, X), one chunk per frame, scale (1, dy, dx) in micrometres
    OUT.ome.zarr/labels/tracks/0     TRA masks (T, Y, X) uint16, ids = track ids
    OUT.ome.zarr/tracks.geff         the lineage (:func:`cellgen.data.lineage_export.write_geff`), whose
                                     related objects point at the labels (node property ``track_id``) and frames

Frames are written one at a time, so a long sequence never sits in memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cellgen.data.ctc import CTCSequence
from cellgen.data.errors import CellgenInputError
from cellgen.data.lineage_export import LineageGraph, write_geff

NGFF_VERSION = "0.4"


def _multiscales(name: str, scale: tuple[float, float, float], spatial_unit: str | None) -> list[dict]:
    space = {"type": "space", **({"unit": spatial_unit} if spatial_unit else {})}
    axes = [{"name": "t", "type": "time"}, {"name": "y", **space}, {"name": "x", **space}]
    transform = [{"type": "scale", "scale": [float(v) for v in scale]}]
    return [
        {
            "version": NGFF_VERSION,
            "name": name,
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": transform}],
        }
    ]


def write_ome_zarr(sequence: str | Path, graph: LineageGraph, out: str | Path, overwrite: bool = False) -> Path:
    """Write frames, TRA labels and lineage of ``sequence`` into ``out`` (see the module docstring)."""
    import zarr

    seq = CTCSequence(sequence)
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise CellgenInputError(out, "already exists", "choose another output or pass --overwrite true")
        shutil.rmtree(out)
    size = graph.pixel_size
    scale = (1.0, size.y, size.x) if size else (1.0, 1.0, 1.0)
    unit = "micrometer" if size else None
    frames, height, width = len(seq), *seq.shape
    first = seq.image(seq.frame_indices[0])

    root = zarr.open_group(str(out), mode="w", zarr_format=2)
    root.attrs["multiscales"] = _multiscales(seq.name, scale, unit)
    image = root.create_array("0", shape=(frames, height, width), chunks=(1, height, width), dtype=first.dtype)
    labels_group = root.create_group("labels")
    labels_group.attrs["labels"] = ["tracks"]
    tracks = labels_group.create_group("tracks")
    tracks.attrs["multiscales"] = _multiscales("tracks", scale, unit)
    tracks.attrs["image-label"] = {"version": NGFF_VERSION, "source": {"image": "../../"}}
    masks = tracks.create_array("0", shape=(frames, height, width), chunks=(1, height, width), dtype=np.uint16)
    for i, t in enumerate(seq.frame_indices):
        image[i] = seq.image(t)
        masks[i] = seq.tra_mask(t).astype(np.uint16) if t in seq.tra_paths else 0

    write_geff(graph, out / "tracks.geff")
    import geff
    from geff_spec import RelatedObject

    metadata = geff.GeffMetadata.read(str(out / "tracks.geff"))
    metadata.related_objects = [
        RelatedObject(type="labels", path="../labels/tracks/0", node_prop="track_id"),
        RelatedObject(type="image", path="../0"),
    ]
    metadata.write(str(out / "tracks.geff"))
    return out
