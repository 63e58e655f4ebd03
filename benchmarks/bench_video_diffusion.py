"""Video diffusion hot paths: one training step (fwd + bwd + Adam), one denoising step, and Horn-Schunck flow.

Usage: python benchmarks/bench_video_diffusion.py [--steps 2] [--threads N] [--frames 10] [--size 64] [--batch 2]
                                                   [--no-reference]

cellgen's ``VideoDiffusion`` denoiser at the reference's size (base 32, mults (1, 2, 4), linear spatial attention
per level, full in the middle: 3.24M parameters) against the implementation it adapts, lucidrains'
``video_diffusion_pytorch.Unet3D(dim=32, dim_mults=(1, 2, 4), channels=1)`` (3.16M; install with
``pip install --no-deps video-diffusion-pytorch==0.7.0 einops-exts rotary-embedding-torch``), on 10 x 64 x 64
videos, batch 2, L1 loss on the noise and Adam, as in training. Variants: ``reference`` (fp32), ``cellgen-fp32``
(defaults: backward-pass recomputation of norms and attention), ``cellgen-fp32-store`` (no recomputation: faster,
more memory) and ``cellgen-bf16`` (bf16 autocast, what ``trainer.precision: bf16-mixed`` does; fast on CPUs with
AMX and on GPUs). Each variant runs in its own subprocess, so its peak resident memory (``ru_maxrss`` after the
steps minus before the first step, allocator caching included) is its own. The headline ratios compare fp32 to fp32.
Last line: one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE_INSTALL = "pip install --no-deps video-diffusion-pytorch==0.7.0 einops-exts rotary-embedding-torch"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _install_torchvision_placeholders() -> None:
    """The reference imports torchvision at module level for its GIF utilities; placeholders keep it out."""

    class Placeholder(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)
            return lambda *args, **kwargs: None

    root = Placeholder("torchvision")
    root.transforms = Placeholder("torchvision.transforms")
    root.utils = Placeholder("torchvision.utils")
    sys.modules.update(
        {"torchvision": root, "torchvision.transforms": root.transforms, "torchvision.utils": root.utils}
    )


def _reference_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("video_diffusion_pytorch") is not None


def _build(variant: str):  # noqa: ANN202 (torch module)
    if variant == "reference":
        _install_torchvision_placeholders()
        from video_diffusion_pytorch import Unet3D

        return Unet3D(dim=32, dim_mults=(1, 2, 4), channels=1)
    from cellgen.models.video_diffusion import VideoDiffusion

    net = VideoDiffusion(base_channels=32, channel_mults=(1, 2, 4), ema_decay=None).net
    net.set_recompute(variant != "cellgen-fp32-store")
    return net


def _worker(variant: str, steps: int, frames: int, size: int, batch: int, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = _build(variant)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x0 = torch.rand(batch, 1, frames, size, size) * 2 - 1
    autocast = variant == "cellgen-bf16"

    def train_step() -> None:
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            eps = net(x0 + noise, t)
        loss = (eps.float() - noise).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(steps + 1):  # the first step warms up (allocator, Adam state, oneDNN kernels)
        start = time.perf_counter()
        train_step()
        if i:
            times.append(time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    denoise = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        t = torch.full((batch,), 500)
        for i in range(steps + 1):
            start = time.perf_counter()
            net(x0, t)
            if i:
                denoise.append(time.perf_counter() - start)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "train_step_s": statistics.median(times),
        "peak_mem_mb": peak_mb,
        "denoise_step_s": statistics.median(denoise),
    }


def _flow_throughput(threads: int | None, frames: int = 10, size: int = 128, videos: int = 8, repeats: int = 3) -> dict:
    """Frame pairs per second of Horn-Schunck (10 iterations) on (videos, frames, size, size), torch vs NumPy."""
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    from cellgen.flow import horn_schunck, horn_schunck_numpy

    video = torch.rand(videos, frames, size, size)
    pairs = videos * (frames - 1)
    rates = {}
    for name, fn, arg in (("torch", horn_schunck, video), ("numpy", horn_schunck_numpy, video.numpy())):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn(arg)
            best = min(best, time.perf_counter() - start)
        rates[name] = pairs / best
    error = float(np.abs(horn_schunck(video).numpy() - horn_schunck_numpy(video.numpy())).max())
    return {"torch_pairs_per_s": rates["torch"], "numpy_pairs_per_s": rates["numpy"], "max_abs_diff": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per variant (0: torch's default)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference even when installed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    options = ["--steps", str(args.steps), "--threads", str(args.threads), "--frames", str(args.frames)]
    options += ["--size", str(args.size), "--batch", str(args.batch)]
    if args.worker:
        print(json.dumps(_worker(args.worker, args.steps, args.frames, args.size, args.batch, args.threads)))
        return

    variants = ["cellgen-fp32", "cellgen-fp32-store", "cellgen-bf16"]
    if not args.no_reference and _reference_available():
        variants.insert(0, "reference")
    elif not args.no_reference:
        print("reference not installed: " + REFERENCE_INSTALL)
    results = {}
    for variant in variants:
        out = subprocess.run(
            [sys.executable, __file__, *options, "--worker", variant], check=True, capture_output=True, text=True
        )
        r = results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{variant:>18}: {r['params'] / 1e6:.2f}M params, train step {r['train_step_s']:.2f} s, "
            f"peak +{r['peak_mem_mb']:.0f} MB, denoise step {r['denoise_step_s']:.2f} s "
            f"({args.batch} x {args.frames} x {args.size} x {args.size})"
        )
    flow = _flow_throughput(args.threads)
    print(
        f"Horn-Schunck (8 x 10 x 128 x 128, 10 iterations): torch {flow['torch_pairs_per_s']:.0f} pairs/s, "
        f"NumPy {flow['numpy_pairs_per_s']:.0f} pairs/s, max |diff| {flow['max_abs_diff']:.1e}"
    )
    fp32, store, bf16 = results["cellgen-fp32"], results["cellgen-fp32-store"], results["cellgen-bf16"]
    summary = {
        "bench": "video_diffusion",
        "shape": [args.batch, 1, args.frames, args.size, args.size],
        "threads": args.threads or None,
        "params": fp32["params"],
        "train_step_s": fp32["train_step_s"],
        "train_step_store_s": store["train_step_s"],
        "train_step_bf16_s": bf16["train_step_s"],
        "peak_mem_mb": fp32["peak_mem_mb"],
        "peak_mem_store_mb": store["peak_mem_mb"],
        "peak_mem_bf16_mb": bf16["peak_mem_mb"],
        "denoise_step_s": fp32["denoise_step_s"],
        "denoise_step_bf16_s": bf16["denoise_step_s"],
        "hs_torch_pairs_per_s": round(flow["torch_pairs_per_s"], 1),
        "hs_numpy_pairs_per_s": round(flow["numpy_pairs_per_s"], 1),
    }
    if "reference" in results:
        ref = results["reference"]
        summary.update(
            {
                "ref_params": ref["params"],
                "ref_train_step_s": ref["train_step_s"],
                "ref_peak_mem_mb": ref["peak_mem_mb"],
                "ref_denoise_step_s": ref["denoise_step_s"],
                "train_speedup": ref["train_step_s"] / fp32["train_step_s"],
                "train_speedup_store": ref["train_step_s"] / store["train_step_s"],
                "train_speedup_bf16": ref["train_step_s"] / bf16["train_step_s"],
                "memory_ratio": fp32["peak_mem_mb"] / ref["peak_mem_mb"],
                "memory_ratio_store": store["peak_mem_mb"] / ref["peak_mem_mb"],
                "memory_ratio_bf16": bf16["peak_mem_mb"] / ref["peak_mem_mb"],
                "denoise_speedup": ref["denoise_step_s"] / fp32["denoise_step_s"],
            }
        )
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}))


if __name__ == "__main__":
    main()
