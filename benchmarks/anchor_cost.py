"""What the safe anchor costs a training step (BENCHMARKS.md, "Safe anchor"): UNet calls and UNet
samples per optimizer step, and seconds per step, for sc-dpo without the anchor, with the anchor on
the winner's states, on a fresh policy trajectory every step (anchor_refresh 1, the fifth round's
runs) and on a state bank refreshed every K steps. The shipped EmojiWorld model, synthetic pairs
(random 64 px images under align-harmful / align-clean captions, the harmful ones with their safe
counterparts), cached latents. Call counts do not depend on the device; seconds are this machine's.

    python benchmarks/anchor_cost.py --steps 20 --batch-size 8 [--device cuda]

On CUDA it adds the plain step and the per-step trajectory with ``cuda_graphs`` (the policy's
forward and backward, the reference and the trajectory replayed from CUDA graphs;
scdpo.models.graphs_train, scdpo.models.graphs): their UNet calls then count only the eager ones (a
replay launches no Python forward), and their seconds include the recordings of the first steps.
The table's last loss (equal data and seeds) checks that a replayed step is the eager step.
``--compile`` adds the per-step trajectory with regional ``torch.compile`` (``TrainConfig.compile``,
issue 16). ``--warmup W`` also reports the seconds per step after the first W optimizer steps
(timed at each AdamW step, after a CUDA synchronise), so set-up, compilation and graph recording
drop out of that column. ``--only TEXT`` keeps the rows
whose name contains TEXT, ``--skip TEXT`` drops those that do. ``--compile-cache DIR`` gives the
compiled row ``TrainConfig.compile_cache`` (benchmarks/compile_cache.sh times a fresh machine with
and without it).

    python benchmarks/anchor_cost.py --device cuda --batch-size 32 --steps 60 --warmup 10 --compile \
        --only "every step" --skip "CUDA graphs"
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

# the recipe's anchor on a fresh policy trajectory every step (the "every step" rows)
EVERY_STEP = dict(anchor_weight=20.0, anchor_steps=10)


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


def measure(name: str, flags: dict, data: Path, out: Path, steps: int, batch: int, device: str,
            warmup: int = 0) -> dict:
    import torch
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
    stamps: list[float] = []
    opt_step = torch.optim.AdamW.step

    def timed(self, *args, **kwargs):
        out = opt_step(self, *args, **kwargs)
        if torch.cuda.is_available() and device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return out
    torch.optim.AdamW.step = timed
    try:
        cfg = TrainConfig(model="emojiworld", dataset=str(data), out=str(out / name), loss="sc-dpo", batch_size=batch,
                          max_steps=steps, lr=1e-4, cache_latents=True, checkpoint_every=10_000, log_every=10_000,
                          validate_every=0, winner_weight=1.0, device=device,
                          **{"cuda_graphs": False, **flags})  # eager unless a row asks (they are on by default on CUDA)
        t0 = time.perf_counter()
        metrics = train(cfg)
        seconds = time.perf_counter() - t0
    finally:
        UNet2DConditionModel.forward = forward
        torch.optim.AdamW.step = opt_step
    steady = None
    if 0 < warmup < len(stamps):  # the steps after the first `warmup`: no set-up, compile or recording
        steady = round((stamps[-1] - stamps[warmup - 1]) / (len(stamps) - warmup), 4)
    return {"run": name, "unet_calls_per_step": round(calls["n"] / steps, 2),
            "unet_samples_per_step": round(calls["samples"] / steps, 1),
            "seconds_per_step": round(seconds / steps, 3), "steady_seconds_per_step": steady,
            "anchor": metrics.get("anchor"), "loss": metrics.get("loss")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--refresh", type=int, default=10, help="K of the state-bank row")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="add the per-step trajectory, regionally compiled")
    ap.add_argument("--compile-cache", default=None, metavar="DIR", help="the compiled row's TrainConfig.compile_cache")
    ap.add_argument("--warmup", type=int, default=0, help="W: also time the steps after the first W")
    ap.add_argument("--only", default="", help="keep the rows whose name contains this text")
    ap.add_argument("--skip", default=None, help="drop the rows whose name contains this text")
    args = ap.parse_args()
    if args.warmup and args.warmup >= args.steps:
        raise SystemExit(f"--warmup {args.warmup} must be below --steps {args.steps}: no step is left to time")
    runs = {
        "no anchor": {},
        "anchor, winner states": dict(anchor_weight=20.0, anchor_states="winner"),
        "anchor, policy trajectory every step": dict(EVERY_STEP),
        f"anchor, state bank every {args.refresh} steps": dict(EVERY_STEP, anchor_refresh=args.refresh,
                                                                anchor_bank=64),
    }
    if args.device.startswith("cuda"):
        runs["no anchor, CUDA graphs"] = dict(cuda_graphs=True)
        runs["anchor, policy trajectory every step, CUDA graphs"] = dict(EVERY_STEP, cuda_graphs=True)
    if args.compile:
        runs["anchor, policy trajectory every step, compiled"] = dict(EVERY_STEP, compile=True,
                                                                      compile_cache=args.compile_cache)
    runs = {name: flags for name, flags in runs.items()
            if args.only in name and not (args.skip and args.skip in name)}
    if not runs:
        raise SystemExit(f"--only {args.only!r} / --skip {args.skip!r} keep no row: use part of a row's name, "
                         "e.g. --only 'every step'")
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_pairs(Path(tmp) / "pairs.parquet", 64)
        rows = []
        for name, flags in runs.items():
            rows.append(measure(name, flags, data, Path(tmp), args.steps, args.batch_size, args.device, args.warmup))
            print(json.dumps(rows[-1]), flush=True)  # each row as it lands: a cut run keeps what it measured
    print(f"| run | UNet calls / step | UNet samples / step | s / step | s / step after {args.warmup} | last loss |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        steady = "" if r["steady_seconds_per_step"] is None else r["steady_seconds_per_step"]
        loss = "" if r["loss"] is None else f"{r['loss']:.6g}"
        print(f"| {r['run']} | {r['unet_calls_per_step']} | {r['unet_samples_per_step']} | {r['seconds_per_step']} "
              f"| {steady} | {loss} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
