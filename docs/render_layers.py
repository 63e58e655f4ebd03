"""Render docs/napari_layers.png: a synthetic sequence as napari shows it (image, labels, tracks), in microns.

napari cannot start on the headless build machine, so this draws the same three layers with matplotlib:
the frame (grey), the TRA masks (labels, semi-transparent) and the lineage from `cellgen export geff`
(track tails over the last frames, one colour per lineage), with the pixel size the frames carry.

    python docs/render_layers.py [SEQUENCE] [FRAME]     # default: the demo sequence, frame 40
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cellgen.data.ctc import CTCSequence, read_pixel_size
from cellgen.data.lineage_export import lineage_graph
from cellgen.data.synthetic import demo_sequence


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else demo_sequence("fluo")
    frame = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    seq, graph = CTCSequence(path), lineage_graph(path)
    size = read_pixel_size(path)
    sy, sx, unit = (size.y, size.x, "µm") if size else (1.0, 1.0, "px")
    image, labels = seq.image(frame).astype(np.float32), seq.tra_mask(frame)
    height, width = image.shape
    extent = (0, width * sx, height * sy, 0)

    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    low, high = np.percentile(image, [0.5, 99.5])
    ax.imshow(image, cmap="gray", vmin=low, vmax=high, extent=extent)
    colours = plt.get_cmap("tab20")(np.arange(20))
    overlay = np.zeros((height, width, 4))
    overlay[labels > 0] = colours[labels[labels > 0] % 20] * [1, 1, 1, 0] + [0, 0, 0, 0.35]
    ax.imshow(overlay, extent=extent)
    for track in np.unique(graph.track_id[graph.t == frame]):
        keep = (graph.track_id == track) & (graph.t <= frame) & (graph.t > frame - 12)
        lineage = int(graph.lineage_id[keep][0])
        ax.plot(graph.x[keep] * sx, graph.y[keep] * sy, "-", lw=2, color=plt.get_cmap("tab10")(lineage % 10))
    for parent_node, child_node in graph.edges:  # divisions in the window: a line from the parent to the daughter
        if graph.track_id[parent_node] != graph.track_id[child_node] and frame - 12 < graph.t[child_node] <= frame:
            xs = [graph.x[parent_node] * sx, graph.x[child_node] * sx]
            ax.plot(xs, [graph.y[parent_node] * sy, graph.y[child_node] * sy], "--", lw=1.5, color="yellow")
    bar = 20.0 if size else 50.0
    ax.plot([width * sx * 0.95 - bar, width * sx * 0.95], [height * sy * 0.95] * 2, color="white", lw=4)
    ax.text(width * sx * 0.95 - bar / 2, height * sy * 0.92, f"{bar:g} {unit}", color="white", ha="center")
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    ax.set_title(f"{path.parent.name}/{path.name}, frame {frame}: image, labels (TRA), tracks (GEFF)", fontsize=9)
    fig.tight_layout()
    out = Path(__file__).with_name("napari_layers.png")
    fig.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
