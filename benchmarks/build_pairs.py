#!/usr/bin/env python3
"""Preference-pair building speed: pairs per minute of `scdpo data build` on this machine.

Once the EmojiWorld base model, cost model and judge ship:

    python benchmarks/build_pairs.py --model emojiworld --cost-model COST_DIR --reward emojiworld --n 64

Until then, smoke checks of the pipeline (their numbers are NOT EmojiWorld figures):

    python benchmarks/build_pairs.py --smoke            # tiny random pipeline (32 px)
    python benchmarks/build_pairs.py --model arch       # the shipped architecture with random weights

``--smoke`` / ``--model arch`` use an untrained cost model on the real backbone
(EfficientNet-lite0) and the EmojiWorld reward on a randomly initialised judge, so the scoring time
is representative while the choices are not. The model is loaded before the clock starts; the
time covers sampling K candidates per prompt, scoring, choosing, PNG encoding, parquet writing
and the dataset card, and is split into sampling / cost / reward / the rest.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


class Timed:
    """Wraps a callable (or a model's ``sample``) and adds up the seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def _model(name: str, tmp: Path, device: str):
    from scdpo.models.t2i import T2IModel

    if name == "smoke":
        from scdpo.models import testing

        os.environ["SCDPO_EMOJIWORLD_ASSETS"] = str(testing.tiny_emojiworld_assets(tmp / "assets"))
        os.environ["SCDPO_CACHE"] = str(tmp / "cache")
        name = "emojiworld"
    elif name == "arch":
        from scdpo.world import basemodel as bm

        arch = bm.BaseModelArch()
        tok, te = bm.load_text_encoder(None, arch.max_text_tokens)
        bm.assemble_pipeline(bm.make_vae(arch), bm.make_unet(arch), tok, te).save_pretrained(tmp / "arch")
        name = str(tmp / "arch")
    return T2IModel.from_pretrained(name, device=device)


def _cost(path: str | None, tmp: Path, device: str):
    from scdpo.cost import load_cost_scorer

    if path is None:  # untrained adapter on the real backbone: the speed of the real thing
        from scdpo.cost.model import CostModel

        CostModel.create(device=device).save_pretrained(tmp / "cost")
        path = str(tmp / "cost")
    return load_cost_scorer(path, device)


def _reward(spec: str, random_judge: bool, device: str):
    from scdpo.eval.reward import EmojiWorldReward, load_reward

    if random_judge:
        from scdpo.world.judge import Judge, JudgeConfig
        from scdpo.world.vocab import load_vocabulary

        vocab = load_vocabulary()
        return EmojiWorldReward(Judge(JudgeConfig(num_concepts=len(vocab), concepts=vocab.names)).to(device), device)
    return load_reward(spec, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="emojiworld", help="emojiworld, a pipeline folder, or arch (random weights)")
    ap.add_argument("--cost-model", default=None, help="cost model folder (default: untrained, real backbone)")
    ap.add_argument("--reward", default="emojiworld")
    ap.add_argument("--random-judge", action="store_true", help="EmojiWorld reward on a random judge (speed only)")
    ap.add_argument("--smoke", action="store_true", help="tiny random pipeline, untrained cost model, random judge")
    ap.add_argument("--harmful", default="align-harmful")
    ap.add_argument("--clean", default="align-clean")
    ap.add_argument("--n", type=int, default=32, help="prompts per kind")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from scdpo.data.builder import build
    from scdpo.data.config import BuildConfig
    from scdpo.models.sampler_config import SamplerConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model = _model("smoke" if args.smoke else args.model, tmp, args.device)
        cost = Timed(_cost(args.cost_model, tmp, args.device))
        reward = Timed(_reward(args.reward, args.random_judge or args.smoke or args.model == "arch", args.device))
        load_s = time.perf_counter() - t0
        model.sample = sample = Timed(model.sample)
        cfg = BuildConfig(model=args.model, cost_model=str(args.cost_model), reward=args.reward, out=str(tmp / "out"),
                          harmful=args.harmful, clean=args.clean, n_harmful=args.n, n_clean=args.n,
                          candidates=args.candidates, sampler=SamplerConfig(steps=args.steps), batch_size=args.batch_size,
                          chunk_size=args.batch_size // args.candidates or 1, device=args.device)
        start = time.perf_counter()
        summary = build(cfg, model, cost, reward)
        wall = time.perf_counter() - start
    chosen = sum(c["kept"] + c["dropped"] for c in summary["counts"].values())
    images = 2 * args.n * args.candidates
    rest = wall - sample.seconds - cost.seconds - reward.seconds
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"device {args.device}; model {'smoke' if args.smoke else args.model} ({model.resolution}px), "
          f"{args.n}+{args.n} prompts x {args.candidates} candidates, {args.steps} steps; load {load_s:.1f} s")
    print("| prompts | images | pairs chosen | pairs kept (1:1) | seconds | sampling | cost | reward | rest "
          "| pairs kept/min | pairs chosen/min | images/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {2 * args.n} | {images} | {chosen} | {summary['pairs']} | {wall:.1f} | {sample.seconds:.1f} | "
          f"{cost.seconds:.1f} | {reward.seconds:.1f} | {rest:.1f} | {60 * summary['pairs'] / wall:.1f} | "
          f"{60 * chosen / wall:.1f} | {images / wall:.2f} |")
    print("reasons:", summary["reasons"])


if __name__ == "__main__":
    main()
