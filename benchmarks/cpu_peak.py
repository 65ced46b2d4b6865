"""Where the CPU demo's arithmetic stands against the core (BENCHMARKS.md, "EfficientNet-Lite0
folded"): FLOPs an image (``torch.utils.flop_counter``) and GFLOP/s of EmojiWorld sampling, the VAE
round trip and the EfficientNet backbone; then the two levers not taken, each against its fp32 form:
bfloat16 autocast (speed and the largest difference of the output) and channels-last for the UNet
while sampling.

    python benchmarks/cpu_peak.py --threads 1 --images 32
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def timed(fn, repeats: int = 2):
    """The output of ``fn()`` and its median seconds over ``repeats`` calls after one warm-up call."""
    fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, sorted(times)[len(times) // 2]


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    from scdpo.cost.augment import load_vae, vae_roundtrip
    from scdpo.cost.backbone import image_backbone
    from scdpo.cost.data import balanced_scenes, render_batches
    from scdpo.models.sampler_config import SamplerConfig
    from scdpo.models.t2i import T2IModel
    from scdpo.world.suites import suite_scenes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--steps", type=int, default=15, help="denoising steps (the demo's 15)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.images
    renders, _ = next(iter(render_batches(balanced_scenes("train", n, 0, None), n, 64)))
    model = T2IModel.from_pretrained("emojiworld")
    prompts = [s.caption for s in suite_scenes("eval-clean", n, 0)]
    vae, backbone = load_vae("emojiworld"), image_backbone()

    def sample(channels_last: bool = False):
        config = SamplerConfig(steps=args.steps, progress=False, channels_last=channels_last)
        return model.sample(prompts, list(range(n)), config)

    def features():
        with torch.no_grad():
            return backbone.feature_map(renders)

    work = {"sampling": sample, "VAE round trip": lambda: vae_roundtrip(renders, vae), "backbone": features}
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} thread(s), {n} images")
    print("| work | GFLOP an image | seconds an image | GFLOP/s |\n|---|---|---|---|")
    outputs = {}
    for name, fn in work.items():
        outputs[name], seconds = timed(fn)
        gflop = flops(fn) / n / 1e9
        print(f"| {name} | {gflop:.2f} | {seconds / n:.3f} | {gflop * n / seconds:.0f} |", flush=True)
    print("\n| lever not taken | fp32 s | lever s | speed-up | largest difference / largest value |\n|---|---|---|---|---|")
    for name in ("VAE round trip", "backbone"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, seconds = timed(work[name])
        _, base = timed(work[name])
        ref = outputs[name]
        diff = (out.float() - ref).abs().max().item() / ref.abs().max().item()
        print(f"| {name}, bfloat16 autocast | {base:.2f} | {seconds:.2f} | {base / seconds:.2f}x | {diff:.1e} |")
    out, seconds = timed(lambda: sample(channels_last=True))
    _, base = timed(sample)
    ref = outputs["sampling"]
    diff = (out - ref).abs().max().item() / ref.abs().max().item()
    print(f"| sampling, UNet and VAE channels-last | {base:.2f} | {seconds:.2f} | {base / seconds:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
