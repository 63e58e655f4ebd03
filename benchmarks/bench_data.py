"""Patch-video loading throughput and peak memory, cold (extract from TIFFs) and cached (.npz), same run.

Usage: python benchmarks/bench_data.py [--sequence PATH] [--epochs 3]
Defaults to ../shared/data/Fluo-N2DH-GOWT1/01 (the embedded demo data when that is absent).
Each variant runs in its own subprocess so that its peak resident memory is its own.
Last line: one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "Fluo-N2DH-GOWT1" / "01"


def _worker(sequence: str, cache: str, epochs: int) -> dict:
    from cellgen.data.patch_video import PatchVideoDataModule

    start = time.perf_counter()
    dm = PatchVideoDataModule([sequence], batch_size=8, cache_dir=cache)
    dm.setup("fit")
    setup_s = time.perf_counter() - start
    rates = []
    for _ in range(epochs):
        t0, count = time.perf_counter(), 0
        for batch in dm.train_dataloader():
            count += batch.shape[0]
        rates.append(count / (time.perf_counter() - t0))
    return {
        "setup_s": setup_s,
        "samples": len(dm.train_set),
        "samples_per_s": statistics.median(rates),
        "peak_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default=str(DEFAULT) if DEFAULT.is_dir() else "")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], args.worker[1], args.epochs)))
        return
    sequence = args.sequence
    if not sequence:
        from cellgen.data.synthetic import demo_sequence

        sequence = str(demo_sequence("phc"))
    cache = tempfile.mkdtemp(prefix="cellgen-bench-")
    try:
        results = {}
        for variant in ("cold", "cached"):  # cold fills the cache, cached reads it back
            out = subprocess.run(
                [sys.executable, __file__, "--epochs", str(args.epochs), "--worker", sequence, cache],
                check=True,
                capture_output=True,
                text=True,
            )
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[variant]
            print(
                f"{variant:>6}: setup {r['setup_s']:.2f} s, {r['samples']} train videos, "
                f"{r['samples_per_s']:.1f} samples/s (median of {args.epochs} epochs), peak {r['peak_mem_mb']:.0f} MB"
            )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    summary = {
        "bench": "data",
        "sequence": sequence,
        "cold_setup_s": round(results["cold"]["setup_s"], 3),
        "cached_setup_s": round(results["cached"]["setup_s"], 3),
        "setup_speedup": round(results["cold"]["setup_s"] / results["cached"]["setup_s"], 2),
        "samples_per_s": round(results["cached"]["samples_per_s"], 1),
        "peak_mem_mb_cold": round(results["cold"]["peak_mem_mb"]),
        "peak_mem_mb_cached": round(results["cached"]["peak_mem_mb"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
