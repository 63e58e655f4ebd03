"""Detection speed of ``cellgen detect-mitoses`` on one CPU thread (issue 12 target: a 100-frame 1024x1024 movie in
under 5 minutes).

Times the whole path after reading the files: area downscale to the working scale, normalisation, windows of k frames
at stride 2 (with the 4 test-time flips when ``--flip_tta``), peak finding and mapping back to original pixels. The
weights are random: the cost does not depend on them. Frames are a smooth random texture with bright disks.

Usage: python benchmarks/bench_detect_mitoses.py [--frames 20 --size 1024 --architecture unet --flip_tta]
Last line: one JSON object with frames/s (from the process's CPU time, which on a shared machine is the one-thread
figure; the wall-clock rate is given too) and the projected minutes for 100 frames.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def movie(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """(T, size, size) uint16 frames: 60 bright disks drifting over a dim background with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(0, size, (60, 2))
    out = np.empty((frames, size, size), np.uint16)
    for t in range(frames):
        image = np.full((size, size), 200.0)
        for cy, cx in centres + t * rng.normal(0, 2, centres.shape):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size / 40) ** 2] += 800
        out[t] = np.clip(image + rng.normal(0, 30, image.shape), 0, 65535)
    return out


def main() -> None:
    import torch

    from cellgen.data.event_frames import FrameVolume, area_downscale, normalise_stack, scaled_size
    from cellgen.models.mitosis_detector import MitosisDetector

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--downscale", type=float, default=0.25)
    parser.add_argument("--architecture", default="unet", choices=("unet", "m3"))
    parser.add_argument("--flip_tta", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    head = "heatmap" if args.architecture == "unet" else "blob"
    model = MitosisDetector(args.k, architecture=args.architecture, head=head, flip_tta=args.flip_tta)
    raw = movie(args.frames, args.size)
    started, cpu_started = time.perf_counter(), time.process_time()
    size = scaled_size(raw.shape[1:], args.downscale)
    frames = normalise_stack(np.stack([area_downscale(plane, size) for plane in raw]))
    volume = FrameVolume(frames, list(range(args.frames)), tuple(raw.shape[1:]), Path("bench"))
    found = model.detect_volume(volume, 0.5)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    # On a shared machine the wall clock counts other people's work; one thread's CPU time does not.
    fps = args.frames / cpu_seconds
    summary = {
        "bench": "detect_mitoses",
        "architecture": args.architecture,
        "flip_tta": args.flip_tta,
        "k": args.k,
        "frames": args.frames,
        "size": args.size,
        "downscale": args.downscale,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "wall_frames_per_s": round(args.frames / seconds, 3),
        "frames_per_s": round(fps, 3),
        "minutes_per_100_frames": round(100 / fps / 60, 2),
        "target_minutes": 5.0,
        "ratio_to_target": round(5.0 / (100 / fps / 60), 2),
        "detections": len(found),
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(
        f"{args.architecture} (flips {args.flip_tta}): {fps:.2f} frames/s of {args.size}x{args.size}, "
        f"{summary['minutes_per_100_frames']} min per 100 frames"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
