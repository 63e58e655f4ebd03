"""BVDM synthesis speed: the reference procedure against cellgen's default, same weights, same run.

Reference (the authors' inference): one cell-frame at a time, ancestral DDPM steps, 200 for a cell's first
frame and 10 for each later frame. cellgen: all cells of a frame in one network call per step, DDIM for the
first frame (``first_frame_steps``), and ``--later`` steps for later frames.

Usage: python benchmarks/bench_bvdm.py [--cells 4] [--frames 4] [--crop 96] [--width 32]
Each variant runs in its own subprocess (clean peak memory); the model weights are random but identical
(seeded), which does not change the cost of a network call. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _build(args: argparse.Namespace):
    import numpy as np
    import torch

    from cellgen.data.synthetic import demo_sequence
    from cellgen.models.bvdm import BVDM
    from cellgen.synth.scene import compose_scene
    from cellgen.synth.shape_model import ShapeModel

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    ddpm = {"base_channels": args.width, "channel_mults": [1, 2, 4], "attention_levels": [False, False, True]}
    model = BVDM(crop_size=args.crop, ddpm=ddpm, flow={"base_channels": args.width}).eval()
    shape = ShapeModel.fit([demo_sequence("fluo")], max_frames=16)
    model.shape_state = shape.to_dict()
    layout = compose_scene(shape, np.random.default_rng(0), args.frames, 256, 256, args.cells, False, crop=args.crop)
    return model, layout


def _reference(model, layout, seed: int) -> int:
    """One cell-frame per network call, ancestral steps: 200 first, 10 later (the authors' procedure)."""
    import torch

    from cellgen.flow import warp_by_flow
    from cellgen.synth.pipeline import cell_generator

    previous, count = {}, 0
    for cells in layout.cell_frames:
        current = {}
        for c in cells:
            mask = torch.from_numpy(c.local_mask[None, None].astype("float32"))
            gen = [cell_generator(seed, c.track_id, c.t, torch.device("cpu"))]
            if c.prev_mask is None:
                tex = model.mask_ddpm.denoise_from(mask * 0.588, 200, sampler="ddpm", generators=gen)
            else:
                prev = torch.from_numpy(c.prev_mask[None, None].astype("float32"))
                flow = model.voxelmorph.flow_between(prev, mask)
                warped = warp_by_flow(previous[c.track_id][None], flow)
                tex = model.mask_ddpm.denoise_from(warped.clamp(0, 1), 10, sampler="ddpm", generators=gen)
            current[c.track_id] = (tex * mask)[0]
            count += 1
        previous = current
    return count


def _cellgen(model, layout, seed: int, later_sampler: str, later_steps: int | None) -> int:
    import torch

    from cellgen.synth.pipeline import SynthesisSettings, texture_frame

    settings = SynthesisSettings.from_hparams(
        model.hparams, later_frame_sampler=later_sampler, later_frame_steps=later_steps, cell_brightness="constant"
    )
    models = model.synthesis_models()
    previous, count = {}, 0
    for cells in layout.cell_frames:
        brightness = torch.full((len(cells),), 0.588)
        textures, previous = texture_frame(models, cells, previous, brightness, seed, settings)
        count += len(cells)
    return count


def _worker(args: argparse.Namespace) -> dict:
    import torch

    model, layout = _build(args)
    with torch.inference_mode():
        start = time.perf_counter()
        if args.worker == "reference":
            count = _reference(model, layout, 0)
        else:
            sampler, steps = ("ddpm", None) if args.worker == "cellgen_paper_later" else ("ddim", args.later)
            count = _cellgen(model, layout, 0, sampler, steps)
        seconds = time.perf_counter() - start
    return {
        "cell_frames": count,
        "seconds": seconds,
        "cell_frames_per_s": count / seconds,
        "peak_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--later", type=int, default=3, help="DDIM steps for later frames (cellgen default run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    results = {}
    passthrough = [f"--{k}={getattr(args, k)}" for k in ("cells", "frames", "crop", "width", "later", "threads")]
    for variant in ("reference", "cellgen_paper_later", "cellgen"):
        out = subprocess.run(
            [sys.executable, __file__, *passthrough, f"--worker={variant}"], check=True, capture_output=True, text=True
        )
        results[variant] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{variant:>20}: {r['cell_frames']} cell-frames in {r['seconds']:.1f} s = "
            f"{r['cell_frames_per_s']:.2f} cell-frames/s, peak {r['peak_mem_mb']:.0f} MB"
        )
    ref = results["reference"]["cell_frames_per_s"]
    summary = {
        "bench": "bvdm",
        "cells": args.cells,
        "frames": args.frames,
        "crop": args.crop,
        "reference_cell_frames_per_s": round(ref, 3),
        "cellgen_cell_frames_per_s": round(results["cellgen"]["cell_frames_per_s"], 3),
        "ratio": round(results["cellgen"]["cell_frames_per_s"] / ref, 2),
        "ratio_ddim_first_only": round(results["cellgen_paper_later"]["cell_frames_per_s"] / ref, 2),
        "peak_mem_mb_reference": round(results["reference"]["peak_mem_mb"]),
        "peak_mem_mb_cellgen": round(results["cellgen"]["peak_mem_mb"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
