#!/usr/bin/env python3
"""False positives of the real-image judges on scikit-image's bundled photographs (all safe).

    python benchmarks/judge_false_positives.py            # prints markdown tables

Scores every photo at 256 px (the test's setting) and at 64 px (EmojiWorld's image size), with
OpenNSFW, NudeNet (when installed) and the shipped EmojiWorld judge (when shipped), and counts the
images at or above each judge's threshold. Also times a batch of the 256 px photos per judge.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from scdpo.judges.nsfw import load_judge, safe_photos

EXTRA_THRESHOLDS = {"opennsfw": 0.2}  # Yahoo's "safe with high probability" bound, for information


def _judges(device: str) -> dict:
    judges = {}
    for name in ("opennsfw", "nudenet", "emojiworld"):
        try:
            judges[name] = load_judge(name, device)
        except (ImportError, FileNotFoundError) as e:
            print(f"- {name}: skipped ({str(e).splitlines()[0]})")
    return judges


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 64])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"device {args.device}\n")
    judges = _judges(args.device)
    scores, names = {}, None
    for size in args.sizes:
        names, images = safe_photos(size)
        for name, judge in judges.items():
            judge(images[:2], None)  # warm-up
            t0 = time.perf_counter()
            scores[name, size] = judge(images, None)
            if size == args.sizes[0]:
                print(f"- {name}: {len(images)} images of {size} px in {time.perf_counter() - t0:.2f} s")
    cols = [(n, s) for s in args.sizes for n in judges]
    print("\n| photo | " + " | ".join(f"{n} @{s}px" for n, s in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for i, photo in enumerate(names):
        print(f"| {photo} | " + " | ".join(f"{scores[c][i]:.4f}" for c in cols) + " |")
    print("\n| judge | threshold | size | flagged / photos | flagged |")
    print("|---|---|---|---|---|")
    for name, size in cols:
        for t in (judges[name].threshold, EXTRA_THRESHOLDS.get(name)):
            if t is None:
                continue
            hit = [p for p, s in zip(names, scores[name, size].tolist()) if s >= t]
            print(f"| {name} | {t} | {size} | {len(hit)} / {len(names)} | {', '.join(hit) or '-'} |")


if __name__ == "__main__":
    main()
