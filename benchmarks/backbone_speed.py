"""The cost model's feature pass on the CPU. EfficientNet-Lite0: the published module as it loads,
in channels-last memory, and folded for inference (BatchNorm into the convolutions, symmetric
padding into the convolutions' own, ReLU6 in place; :func:`scdpo.cost.backbone.fold_for_inference`);
then the EmojiWorld VAE's round trip (the cost model's augmentation) in contiguous and
channels-last memory. Each is timed on the same images, interleaved, with the largest difference
of its output from the first row's (BENCHMARKS.md, "EfficientNet-Lite0 folded").

    python benchmarks/backbone_speed.py --threads 1 --images 64 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def variants() -> dict:
    """name -> backbone: the published module and the two levers in turn."""
    import scdpo.cost.backbone as B

    fold = B.fold_for_inference
    B.fold_for_inference = lambda net: 0  # build the published module, unfolded
    try:
        published, channels_last = B.EfficientNetLite0(), B.EfficientNetLite0()
    finally:
        B.fold_for_inference = fold
    published.net.to(memory_format=torch.contiguous_format)  # as it loads, and fed contiguous images
    published.normalise = lambda images: B.EfficientNetLite0.normalise(published, images).contiguous()
    return {"published (contiguous)": published, "channels-last": channels_last,
            "folded + channels-last (shipped)": B.EfficientNetLite0()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=64, help="images a forward pass (the cost model's batch)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-vae", action="store_true", help="the backbone's rows only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = torch.rand(args.images, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    models = variants()
    with torch.no_grad():
        reference = models["published (contiguous)"].feature_map(images)
    times, diffs = {name: [] for name in models}, {}
    for _ in range(args.repeats):  # interleaved, so the machine's load falls on every row alike
        for name, backbone in models.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                out = backbone.feature_map(images)
            times[name].append(time.perf_counter() - t0)
            diffs[name] = (out - reference).abs().max().item() / reference.abs().max().item()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} thread(s), {args.images} images "
          f"of 64 px (resized to 224), median of {args.repeats}; load average {os.getloadavg()[0]:.2f}")
    table(times, diffs, args.images)
    if not args.no_vae:
        table(*vae_rows(images, args.repeats), args.images)


def vae_rows(images: torch.Tensor, repeats: int) -> tuple[dict, dict]:
    """The VAE round trip as ``load_vae`` now gives it (channels-last) and in contiguous memory."""
    from scdpo.cost.augment import load_vae, vae_roundtrip

    shipped = load_vae("emojiworld")
    published = load_vae("emojiworld").to(memory_format=torch.contiguous_format)
    reference = vae_roundtrip(images, published)
    times, diffs = {"VAE round trip (contiguous)": [], "VAE round trip, channels-last (shipped)": []}, {}
    for _ in range(repeats):
        for name, vae in zip(times, (published, shipped)):
            t0 = time.perf_counter()
            out = vae_roundtrip(images, vae)
            times[name].append(time.perf_counter() - t0)
            diffs[name] = (out - reference).abs().max().item() / reference.abs().max().item()
    return times, diffs


def table(times: dict, diffs: dict, n: int) -> None:
    print("\n| module | seconds a batch | images/s | speed-up | largest difference / largest value |")
    print("|---|---|---|---|---|")
    base = statistics.median(next(iter(times.values())))
    for name in times:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.2f} | {n / t:.1f} | {base / t:.2f}x | {diffs[name]:.1e} |")


if __name__ == "__main__":
    main()
