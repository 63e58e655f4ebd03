"""Lineage export: GEFF through the geff package's validators, TrackMate XML through geff's TrackMate reader."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geff
import numpy as np
import pytest

from cellgen.cli import main
from cellgen.data.ctc import PixelSize, Track, write_sequence
from cellgen.data.lineage_export import lineage_graph


@pytest.fixture
def divided(tmp_path: Path) -> Path:
    """Cell 1 (frames 0-1) divides into 2 and 3; cell 4 vanishes at frame 1 and returns as 5 (a gap, one child)."""
    masks = np.zeros((4, 32, 40), np.uint16)
    masks[:2, 4:10, 4:10] = 1
    masks[2:, 2:6, 4:10] = 2  # rows 2..5, centroid y 3.5
    masks[2:, 8:12, 4:10] = 3
    masks[0, 20:28, 20:30] = 4
    masks[2:, 20:28, 20:30] = 5
    tracks = {
        1: Track(1, 0, 1, 0),
        2: Track(2, 2, 3, 1),
        3: Track(3, 2, 3, 1),
        4: Track(4, 0, 0, 0),
        5: Track(5, 2, 3, 4),
    }
    images = np.full(masks.shape, 100, np.uint16)
    return write_sequence(tmp_path, "01", images, masks, tracks, pixel_size=PixelSize(0.24, 0.24))


def test_lineage_graph_counts_by_hand(divided: Path) -> None:
    graph = lineage_graph(divided)
    assert len(graph.t) == 2 + 2 + 2 + 1 + 2  # nodes of tracks 1..5
    edges = {(int(graph.track_id[a]), int(graph.track_id[b])) for a, b in graph.edges}
    assert edges == {(1, 1), (1, 2), (1, 3), (2, 2), (3, 3), (4, 5), (5, 5)}
    first_of_2 = np.flatnonzero((graph.track_id == 2) & (graph.t == 2))[0]
    assert (graph.y[first_of_2], graph.x[first_of_2], graph.area[first_of_2]) == (3.5, 6.5, 24.0)
    tracklet = dict(zip(graph.track_id.tolist(), graph.tracklet_id.tolist(), strict=False))
    lineage = dict(zip(graph.track_id.tolist(), graph.lineage_id.tolist(), strict=False))
    assert tracklet == {1: 1, 2: 2, 3: 3, 4: 4, 5: 4}  # a gap continuation stays in its tracklet
    assert lineage == {1: 1, 2: 1, 3: 1, 4: 4, 5: 4}


def test_export_geff_passes_the_geff_validators(divided: Path, tmp_path: Path) -> None:
    from geff.validate.data import ValidationConfig

    out = tmp_path / "tracks.geff"
    assert main(["export", "geff", str(divided), "--out", str(out)]) == 0
    geff.validate_structure(str(out))
    checks = ValidationConfig(graph=True, lineage=True, tracklet=True)
    graph, metadata = geff.read(str(out), data_validation=checks)
    assert graph.number_of_nodes() == 9 and graph.number_of_edges() == 7
    axes = {axis.name: axis for axis in metadata.axes}
    assert axes["y"].scale == pytest.approx(0.24) and axes["x"].scaled_unit == "micrometer"
    assert axes["t"].type == "time" and metadata.track_node_props == {
        "tracklet": "tracklet_id",
        "lineage": "lineage_id",
    }
    divisions = [n for n in graph.nodes if graph.out_degree(n) == 2]
    assert [graph.nodes[n]["track_id"] for n in divisions] == [1]
    assert main(["export", "geff", str(divided), "--out", str(out)]) == 2  # exists: refuse without --overwrite


def test_export_trackmate_reads_back_through_geffs_trackmate_reader(
    divided: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from geff.convert import from_trackmate_xml_to_geff

    xml = tmp_path / "model.xml"
    assert main(["export", "trackmate", str(divided), "--out", str(xml)]) == 0
    assert json.loads(capsys.readouterr().out)["lineages"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TrackMate unit "micron" is not an OME-Zarr unit name
        from_trackmate_xml_to_geff(xml, tmp_path / "tm.geff")
        graph, metadata = geff.read(str(tmp_path / "tm.geff"))
    assert graph.number_of_nodes() == 9 and graph.number_of_edges() == 7
    assert {axis.unit for axis in metadata.axes if axis.type == "space"} == {"micron"}
    spot = next(n for n, data in graph.nodes(data=True) if data["CTC_TRACK_ID"] == 2 and data["FRAME"] == 2)
    assert graph.nodes[spot]["POSITION_Y"] == pytest.approx(3.5 * 0.24)  # physical units, as TrackMate stores
    assert len({data["TRACK_ID"] for _, data in graph.nodes(data=True)}) == 2  # a TrackMate track is a lineage


def test_export_ome_zarr_holds_frames_labels_and_lineage_in_microns(divided: Path, tmp_path: Path) -> None:
    import zarr

    from cellgen.data.ctc import CTCSequence

    out = tmp_path / "01.ome.zarr"
    assert main(["export", "ome-zarr", str(divided), "--out", str(out)]) == 0
    root = zarr.open_group(str(out), mode="r")
    seq = CTCSequence(divided)
    for group, read in ((root, seq.image), (root["labels/tracks"], seq.tra_mask)):
        (multiscale,) = group.attrs["multiscales"]  # NGFF 0.4: axes t, y, x; one scale per axis
        assert multiscale["version"] == "0.4" and [a["name"] for a in multiscale["axes"]] == ["t", "y", "x"]
        assert [a["type"] for a in multiscale["axes"]] == ["time", "space", "space"]
        assert multiscale["axes"][1]["unit"] == "micrometer"
        (dataset,) = multiscale["datasets"]
        assert dataset["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 0.24, 0.24]}]
        stored = group[dataset["path"]][:]
        np.testing.assert_array_equal(stored, np.stack([read(t) for t in seq.frame_indices]))
    assert root["labels"].attrs["labels"] == ["tracks"]
    assert root["labels/tracks"].attrs["image-label"]["source"] == {"image": "../../"}
    geff.validate_structure(str(out / "tracks.geff"))
    graph, metadata = geff.read(str(out / "tracks.geff"))
    assert graph.number_of_nodes() == 9
    assert [(r.type, r.path, r.node_prop) for r in metadata.related_objects] == [
        ("labels", "../labels/tracks/0", "track_id"),
        ("image", "../0", None),
    ]
