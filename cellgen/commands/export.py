"""``cellgen export geff|trackmate|ome-zarr SEQUENCE``: a CTC sequence for napari, ultrack and Fiji TrackMate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cellgen.data.lineage_export import LineageGraph, lineage_graph, write_geff, write_trackmate_xml
from cellgen.data.ome_zarr import write_ome_zarr


def _export(kind: str, sequence: str, out: str | None, suffix: str, write: Callable[..., Path]) -> int:
    """Read the lineage, ``write(path, graph, target)`` (default target: ``NN<suffix>`` beside the sequence), and
    end with one JSON line."""
    path = Path(sequence)
    graph = lineage_graph(path)
    written = write(path, graph, Path(out) if out else path.parent / f"{path.name}{suffix}")
    size = graph.pixel_size
    summary = {
        "command": f"export {kind}",
        "out": str(written),
        "nodes": len(graph.t),
        "edges": len(graph.edges),
        "lineages": len(set(graph.lineage_id.tolist())),
        "pixel_size": size.to_dict() if size else None,
    }
    print(json.dumps(summary))
    return 0


def export_geff(sequence: str, out: str | None = None, overwrite: bool = False) -> int:
    """Write a CTC sequence's lineage as GEFF (opens in napari with a GEFF reader, ultrack, TrackMate).

    One node per cell and frame at its mask centroid (t, y, x in frames and pixels, the pixel size as the
    axis scale in micrometres), with track_id, tracklet_id, lineage_id and area; edges link frames and divisions.

    Args:
        sequence: CTC raw-frame folder (e.g. runs/bvdm/synthetic/01, with 01_GT beside it).
        out: output GEFF store (default: NN_tracks.geff beside the sequence).
        overwrite: replace an existing output.
    """
    return _export("geff", sequence, out, "_tracks.geff", lambda _, graph, to: write_geff(graph, to, overwrite))


def export_trackmate(sequence: str, out: str | None = None, overwrite: bool = False) -> int:
    """Write a CTC sequence's lineage as a TrackMate XML model (Fiji: Plugins > Tracking > Load a TrackMate file).

    Args:
        sequence: CTC raw-frame folder (e.g. runs/bvdm/synthetic/01, with 01_GT beside it).
        out: output XML file (default: NN_trackmate.xml beside the sequence).
        overwrite: replace an existing output.
    """

    def write(path: Path, graph: LineageGraph, to: Path) -> Path:
        return write_trackmate_xml(graph, to, image_folder=str(path.resolve()), overwrite=overwrite)

    return _export("trackmate", sequence, out, "_trackmate.xml", write)


def export_ome_zarr(sequence: str, out: str | None = None, overwrite: bool = False) -> int:
    """Write a CTC sequence as one OME-Zarr (NGFF 0.4): frames, TRA labels and the GEFF lineage, in micrometres.

    Args:
        sequence: CTC raw-frame folder (e.g. runs/bvdm/synthetic/01, with 01_GT beside it).
        out: output store (default: NN.ome.zarr beside the sequence).
        overwrite: replace an existing output.
    """
    return _export(
        "ome-zarr", sequence, out, ".ome.zarr", lambda path, graph, to: write_ome_zarr(path, graph, to, overwrite)
    )


EXPORT = {"geff": export_geff, "trackmate": export_trackmate, "ome-zarr": export_ome_zarr}
