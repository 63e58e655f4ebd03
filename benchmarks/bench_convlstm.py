"""ConvLSTM and bidirectional mitosis-detector throughput and peak memory at the paper's working size.

Phan et al. 2019 work on frames downscaled to 260x348 (Sec. IV A); the detector sees windows of k frames (k = 8 here)
with batch 1. Variants, each timed forward (no grad) and forward+backward:

* ``convlstm``: ``cellgen.nn.convlstm.ConvLSTM(1, 16)`` (one direction, fused gate convolution);
* ``detector``: ``BidirectionalMitosisNet(16)``, the full M3 (two ConvLSTMs, dropout, 3x3 and 1x1 head);
* ``reference``: an unfused ConvLSTM (eight separate gate convolutions, as in many tutorials) - the ratio
  ``convlstm / reference`` is the speed-up of the fused gates.

Usage: python benchmarks/bench_convlstm.py [--height 260 --width 348 --frames 8 --iters 3 --device cpu]
Each variant runs in its own subprocess on the CPU so its peak resident memory is its own (on CUDA: peak allocated).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("convlstm", "detector", "reference")


def _build(variant: str, hidden: int):
    import torch
    from torch import nn

    from cellgen.models.mitosis_detector import BidirectionalMitosisNet
    from cellgen.nn.convlstm import ConvLSTM

    class UnfusedConvLSTM(nn.Module):
        """Reference: separate input and hidden convolutions per gate (8 convolutions per step)."""

        def __init__(self, cin: int, ch: int) -> None:
            super().__init__()
            self.ch = ch
            self.wx = nn.ModuleList(nn.Conv2d(cin, ch, 3, padding=1) for _ in range(4))
            self.wh = nn.ModuleList(nn.Conv2d(ch, ch, 3, padding=1, bias=False) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _, hgt, wid = x.shape
            h = c = x.new_zeros(b, self.ch, hgt, wid)
            outs = []
            for step in range(t):
                i, f, o, g = (wx(x[:, step]) + wh(h) for wx, wh in zip(self.wx, self.wh, strict=True))
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            return torch.stack(outs, 1)

    if variant == "convlstm":
        lstm = ConvLSTM(1, hidden)
        return lambda x: lstm(x.transpose(1, 2))[0], lstm
    if variant == "detector":
        net = BidirectionalMitosisNet(hidden)
        return net, net
    ref = UnfusedConvLSTM(1, hidden)
    return lambda x: ref(x.transpose(1, 2)), ref


def _worker(variant: str, args: argparse.Namespace) -> dict:
    import torch

    device = torch.device(args.device)
    fn, module = _build(variant, args.hidden)
    module.to(device)
    x = torch.rand(args.batch, 1, args.frames, args.height, args.width, device=device)
    frames = args.batch * args.frames

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(step) -> float:
        step()  # warm-up
        sync()
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        return frames / min(times)

    def forward() -> None:
        with torch.no_grad():
            fn(x)

    def forward_backward() -> None:
        module.zero_grad(set_to_none=True)
        fn(x).float().mean().backward()

    module.eval()
    fwd = timed(forward)
    module.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fwd_bwd = timed(forward_backward)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"forward_fps": fwd, "forward_backward_fps": fwd_bwd, "peak_mem_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=260)
    parser.add_argument("--width", type=int, default=348)
    parser.add_argument("--frames", type=int, default=8, help="window length k")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=16, help="ConvLSTM channels (paper: 16)")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args)))
        return
    import torch

    results = {}
    passthrough = [f"--{k}={v}" for k, v in vars(args).items() if k != "worker"]
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, *passthrough, "--worker", variant],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        results[variant] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{variant:>9}: forward {r['forward_fps']:.1f} frames/s, forward+backward "
            f"{r['forward_backward_fps']:.1f} frames/s, peak {r['peak_mem_mb']:.0f} MB"
        )
    summary = {
        "bench": "convlstm",
        "size": [args.height, args.width],
        "frames": args.frames,
        "batch": args.batch,
        "hidden": args.hidden,
        "device": args.device,
        "threads": torch.get_num_threads(),
        **{f"{v}_{key}": round(results[v][key], 2) for v in VARIANTS for key in results[v]},
        "fused_vs_reference_forward_backward": round(
            results["convlstm"]["forward_backward_fps"] / results["reference"]["forward_backward_fps"], 3
        ),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
