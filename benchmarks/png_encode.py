#!/usr/bin/env python3
"""PNG encoding speed and size of generated EmojiWorld images, by zlib level (scdpo.utils.io.PNG_LEVEL).

    python benchmarks/png_encode.py                 # 256 images of the shipped model, 20 steps, on this CPU
    python benchmarks/png_encode.py --images 64 --steps 2 --levels 6 1   # seconds-scale

Samples the shipped EmojiWorld model on mixed prompts (generated images compress worse and slower than
renders, so the renders' figures would flatter every level), then encodes every image on one thread at each
level through the commands' own encoder (``png_bytes_many``, one thread), after one warm-up pass. Prints a
markdown table: images/s, mean bytes, and whether the decoded pixels equal the 8-bit images (PNG is lossless at
every level).
"""

from __future__ import annotations

import argparse
import io
import platform
import time

import numpy as np
from PIL import Image

from scdpo.models.sampler_config import SamplerConfig
from scdpo.models.t2i import T2IModel
from scdpo.world.dataset import png_bytes_many
from scdpo.world.suites import get_suite


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--levels", type=int, nargs="+", default=[6, 3, 1, 0], help="zlib levels (Pillow's default: 6)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    cfg = SamplerConfig(steps=args.steps, progress=False, batch_size=min(args.images, 128))
    model = T2IModel.for_sampling("emojiworld", cfg, device=args.device)
    half = args.images // 2
    records = get_suite("eval-harmful-explicit", n=half) + get_suite("eval-clean", n=args.images - half)
    images = model.sample([r.prompt for r in records], list(range(len(records))), cfg)
    images = images.float().cpu()
    arr = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()
    print(f"{len(arr)} generated EmojiWorld images ({args.steps} steps), {platform.processor() or platform.machine()}, "
          f"one thread\n")
    print("| zlib level | images/s | mean bytes | pixels equal |")
    print("|---|---|---|---|")
    for level in args.levels:
        png_bytes_many(images[:16], threads=1, level=level)  # warm-up
        start = time.perf_counter()
        blobs = png_bytes_many(images, threads=1, level=level)
        seconds = time.perf_counter() - start
        equal = all(np.array_equal(np.asarray(Image.open(io.BytesIO(b))), a) for b, a in zip(blobs, arr))
        print(f"| {level} | {len(arr) / seconds:.0f} | {sum(map(len, blobs)) / len(blobs):.0f} | {equal} |")


if __name__ == "__main__":
    main()
