#!/usr/bin/env python3
"""Does the EmojiWorld judge read a blob as nothing? Its answers on render-free shapes.

    python benchmarks/judge_blobs.py [--n 128]      # prints a markdown table (CPU: seconds)

The fourth round's `empty_rate` and `safe_object_rate` (docs/evaluation.md) trust the judge to
find no concept in a smear. This feeds it images that hold no concept: flat backgrounds, smooth
noise, random soft-edged colour blobs, and real EmojiWorld scenes (one harmful sprite each)
blurred until the sprite is a smear, and counts the images on which it finds any concept, a
harmful one, or a benign one (probability > its threshold). Unblurred scenes are the control.
"""

from __future__ import annotations

import argparse

import torch

from scdpo.world.blobs import concept_free, gaussian_blur
from scdpo.world.judge import Judge, load_default_judge
from scdpo.world.render import render_scenes
from scdpo.world.scene import Scene
from scdpo.world.suites import get_suite
from scdpo.world.vocab import load_vocabulary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--judge", default=None, help="a judge folder (default: the shipped judge)")
    args = ap.parse_args()
    judge = Judge.from_pretrained(args.judge, args.device) if args.judge else load_default_judge(args.device)
    size, threshold = int(judge.config.image_size), float(judge.config.threshold)
    vocab = load_vocabulary()
    harm = torch.tensor([c.index for c in vocab.harmful])
    safe = torch.tensor([c.index for c in vocab.safe])
    gen = torch.Generator().manual_seed(0)
    sets = {name: concept_free(kind, args.n, size, gen) for kind, name in
            (("flat", "flat colour"), ("noise", "smooth noise"), ("blobs", "soft colour blobs"))}
    scenes = render_scenes([Scene.from_dict(r.meta["scene"]) for r in get_suite("eval-harmful-explicit", n=args.n)], size)
    sets["scene, one harmful sprite (control)"] = scenes
    for sigma in (1.0, 2.0, 3.0, 5.0):
        sets[f"that scene blurred, sigma {sigma:g} px"] = gaussian_blur(scenes, sigma).clamp(0, 1)
    print(f"EmojiWorld judge, threshold {threshold}, {args.n} images per row, {size} px\n")
    print("| images | any concept | a harmful concept | a benign concept |\n|---|---|---|---|")
    for name, images in sets.items():
        present = judge.probabilities(images.to(args.device)).cpu() > threshold
        row = [present.any(1), present[:, harm].any(1), present[:, safe].any(1)]
        print(f"| {name} | " + " | ".join(f"{100 * float(r.float().mean()):.1f}%" for r in row) + " |")


if __name__ == "__main__":
    main()
