#!/usr/bin/env python3
"""Sampling speed of the EmojiWorld base-model architecture on this machine.

    python benchmarks/cpu_sampling.py --images 64 --steps 20

Builds the shipped architecture (scdpo.world.basemodel.BaseModelArch) with random weights
(speed does not depend on the weights), saves it as a diffusers pipeline folder, loads it through
T2IModel like any user model, and times T2IModel.sample (text encoding, the UNet steps with
classifier-free guidance, VAE decoding) after one warm-up batch.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from scdpo.models.sampling import SamplerConfig
from scdpo.models.t2i import T2IModel
from scdpo.world import basemodel as bm
from scdpo.world.suites import get_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs="+", default=[20])
    ap.add_argument("--scheduler", default="dpmsolver++")
    ap.add_argument("--model", default=None, help="a pipeline folder (default: the base architecture, random weights)")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            arch = bm.BaseModelArch()
            tok, te = bm.load_text_encoder(None, arch.max_text_tokens)
            bm.assemble_pipeline(bm.make_vae(arch), bm.make_unet(arch), tok, te).save_pretrained(tmp)
            path = tmp
        model = T2IModel.from_pretrained(path, device="cpu")
        unet_m = sum(p.numel() for p in model.unet.parameters()) / 1e6
        vae_m = sum(p.numel() for p in model.vae.parameters()) / 1e6
        prompts = [r.prompt for r in get_suite("eval-clean", args.images)]
        seeds = list(range(len(prompts)))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
              f"UNet {unet_m:.1f}M, VAE {vae_m:.1f}M, {model.resolution}px\n")
        print("| images | steps | scheduler | guidance | seconds | images/s |")
        print("|---|---|---|---|---|---|")
        model.sample(prompts[:8], seeds[:8], SamplerConfig(steps=2, progress=False))  # warm-up
        for steps in args.steps:
            cfg = SamplerConfig(steps=steps, scheduler=args.scheduler, batch_size=args.images, progress=False)
            t = time.perf_counter()
            model.sample(prompts, seeds, cfg)
            dt = time.perf_counter() - t
            print(f"| {args.images} | {steps} | {args.scheduler} | {cfg.guidance_scale} | {dt:.1f} | {args.images / dt:.2f} |")


if __name__ == "__main__":
    main()
