#!/usr/bin/env python3
"""EmojiWorld render throughput on this machine (images/s), by image size and batch size.

    python benchmarks/render_throughput.py            # prints a markdown table

Times scene sampling (numpy, per image) and batched torch rendering separately, after a warm-up.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from scdpo.world.render import load_atlas, render_scenes
from scdpo.world.suites import suite_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048, help="images per measurement")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    load_atlas()
    render_scenes(suite_scenes("train", 64), 64, args.device)  # warm-up
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, device {args.device}\n")
    print("| size | batch | scene sampling (img/s) | rendering (img/s) | both (img/s) |")
    print("|---|---|---|---|---|")
    for size in (32, 64):
        for batch in (64, 256):
            t0 = time.perf_counter()
            batches = [suite_scenes("train", batch, seed=1, start=b) for b in range(0, args.n, batch)]
            t1 = time.perf_counter()
            for scenes in batches:
                render_scenes(scenes, size, args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            n = len(batches) * batch
            print(f"| {size} | {batch} | {n / (t1 - t0):,.0f} | {n / (t2 - t1):,.0f} | {n / (t2 - t0):,.0f} |")


if __name__ == "__main__":
    main()
