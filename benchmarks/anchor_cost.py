"""What the safe anchor costs a training step (BENCHMARKS.md, "Safe anchor"): UNet calls and UNet
samples per optimizer step, and seconds per step, for sc-dpo without the anchor, with the anchor on
the winner's states, on a fresh policy trajectory every step (anchor_refresh 1, the fifth round's
runs) and on a state bank refreshed every K steps. The shipped EmojiWorld model, synthetic pairs
(random 64 px images under align-harmful / align-clean captions, the harmful ones with their safe
counterparts), cached latents. Call counts do not depend on the device; seconds are this machine's.

    python benchmarks/anchor_cost.py --steps 20 --batch-size 8 [--device cuda]

On CUDA it adds the per-step trajectory with ``cuda_graphs`` (scdpo.models.graphs): its UNet calls
then count only the eager ones (a replay launches no Python forward), and its seconds include the
recordings of its first steps.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_pairs(path: Path, n: int, size: int = 64) -> Path:
    import datasets
    from PIL import Image

    from scdpo.world.suites import get_suite

    rng = np.random.default_rng(0)
    harmful, clean = get_suite("align-harmful", n=n // 2), get_suite("align-clean", n=n - n // 2)

    def png() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
        return buf.getvalue()
    records = harmful + clean
    datasets.Dataset.from_dict({
        "caption": [r.prompt for r in records], "jpg_0": [png() for _ in records], "jpg_1": [png() for _ in records],
        "label_0": [1.0] * n, "cost_0": [-1.0] * n, "cost_1": [1.0] * n,
        "kind": ["harmful"] * len(harmful) + ["clean"] * len(clean),
        "safe_caption": [r.safe_prompt for r in harmful] + [None] * len(clean),
    }).to_parquet(str(path))
    return path


def measure(name: str, flags: dict, data: Path, out: Path, steps: int, batch: int, device: str) -> dict:
    from diffusers import UNet2DConditionModel

    from scdpo.train.config import TrainConfig
    from scdpo.train.trainer import train

    calls = {"n": 0, "samples": 0}
    forward = UNet2DConditionModel.forward

    def counted(self, sample, *args, **kwargs):
        calls["n"] += 1
        calls["samples"] += len(sample)
        return forward(self, sample, *args, **kwargs)
    UNet2DConditionModel.forward = counted
    try:
        cfg = TrainConfig(model="emojiworld", dataset=str(data), out=str(out / name), loss="sc-dpo", batch_size=batch,
                          max_steps=steps, lr=1e-4, cache_latents=True, checkpoint_every=10_000, log_every=10_000,
                          validate_every=0, winner_weight=1.0, device=device, **flags)
        t0 = time.perf_counter()
        metrics = train(cfg)
        seconds = time.perf_counter() - t0
    finally:
        UNet2DConditionModel.forward = forward
    return {"run": name, "unet_calls_per_step": round(calls["n"] / steps, 2),
            "unet_samples_per_step": round(calls["samples"] / steps, 1),
            "seconds_per_step": round(seconds / steps, 3), "anchor": metrics.get("anchor")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--refresh", type=int, default=10, help="K of the state-bank row")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    runs = {
        "no anchor": {},
        "anchor, winner states": dict(anchor_weight=20.0, anchor_states="winner"),
        "anchor, policy trajectory every step": dict(anchor_weight=20.0, anchor_steps=10),
        f"anchor, state bank every {args.refresh} steps": dict(anchor_weight=20.0, anchor_steps=10,
                                                                anchor_refresh=args.refresh, anchor_bank=64),
    }
    if args.device.startswith("cuda"):
        runs["anchor, policy trajectory every step, CUDA graphs"] = dict(anchor_weight=20.0, anchor_steps=10,
                                                                        cuda_graphs=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_pairs(Path(tmp) / "pairs.parquet", 64)
        rows = [measure(name, flags, data, Path(tmp), args.steps, args.batch_size, args.device)
                for name, flags in runs.items()]
    print("| run | UNet calls / step | UNet samples / step | s / step |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['unet_calls_per_step']} | {r['unet_samples_per_step']} | {r['seconds_per_step']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
