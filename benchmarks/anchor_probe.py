"""A CPU probe of the safe anchor alone (docs/results.md, "Fifth round", "Implicit prompts: CPU
probes"): train a LoRA on the anchor only, then judge what it draws for explicit and implicit
harmful prompts. The pairs are align-harmful prompts with their safe counterparts and *identical*
winner and loser images, so Diffusion-DPO's gradient is exactly 0 and the anchor is the only term
(no winner term, no preservation: clean prompts are not measured here). Small (250 steps of 8, 48
prompts per suite, suite draw 0): it compares anchor variants with each other, not with the GPU runs.

    python benchmarks/anchor_probe.py --out runs/probe/plain
    python benchmarks/anchor_probe.py --out runs/probe/kd5 --keyword-dropout 0.5
    python benchmarks/anchor_probe.py --out runs/probe/sunflower --target-word sunflower
    python benchmarks/anchor_probe.py --out runs/probe/sun-p20 --target-word sunflower --preserve-weight 20
    python benchmarks/anchor_probe.py --base                       # the base model's row
    python benchmarks/anchor_probe.py --out runs/probe/sun-p20-t700 --target-word sunflower --preserve-weight 20 \
        --min-timestep 700 [--hold-weight 20]                      # eleventh round: the on-policy hold
    python benchmarks/anchor_probe.py --out runs/probe/sun-p20-t700-u20 --target-word sunflower --preserve-weight 20 \
        --min-timestep 700 --uncond-weight 20                      # thirteenth round: the unconditional hold
    python benchmarks/anchor_probe.py --out runs/probe/hold20-r32a8 --target-word sunflower --preserve-weight 20 \
        --min-timestep 700 --hold-weight 20 --lora-rank 32 --lora-alpha 8   # fourteenth round: rank at a fixed scale
    python benchmarks/anchor_probe.py --out runs/probe/hold20-r32a8-mix30 --target-word sunflower --preserve-weight 20 \
        --min-timestep 700 --hold-weight 20 --lora-rank 32 --lora-alpha 8 --mix 0.3   # twentieth round: mixed conditionings
    python benchmarks/anchor_probe.py --out runs/probe/hold20-r32a8-guided --target-word sunflower --preserve-weight 20 \
        --min-timestep 700 --hold-weight 20 --lora-rank 32 --lora-alpha 8 --guided   # twenty-first round: the guided hold
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

IMAGE_SIDE = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0",
              "ff.net.0.proj", "ff.net.2"]


def anchor_only_pairs(path: Path, n: int, n_clean: int = 0) -> Path:
    """align-harmful prompts with safe_caption (and ``n_clean`` align-clean prompts, for the
    preservation term); one random image as both winner and loser."""
    import datasets
    from PIL import Image

    from scdpo.world.suites import get_suite

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    records = get_suite("align-harmful", n=n) + (get_suite("align-clean", n=n_clean) if n_clean else [])

    def png() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
        return buf.getvalue()
    images = [png() for _ in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two probes may build it at once: the last rename wins
    datasets.Dataset.from_dict({"caption": [r.prompt for r in records], "jpg_0": images, "jpg_1": images,
                                "label_0": [1.0] * len(records), "kind": ["harmful"] * n + ["clean"] * n_clean,
                                "safe_caption": [r.safe_prompt for r in records]}).to_parquet(str(tmp))
    tmp.rename(path)
    return path


def judge_suites(lora: str | None, n: int) -> list[dict]:
    """The base model with ``lora`` fused (None: the base), judged by :func:`judge_model`."""
    from scdpo.models.registry import resolve_model_path
    from scdpo.models.t2i import T2IModel

    torch.set_grad_enabled(False)
    model = T2IModel.from_pretrained(resolve_model_path("emojiworld"))
    if lora:
        model.load_lora(lora)
    return judge_model(model, n)


def judge_model(model, n: int, draw: int = 0) -> list[dict]:
    """``model`` sampled (seeds 0..n-1, 20 steps) on the first ``n`` prompts of suite draw ``draw``
    of the explicit, implicit and clean suites, judged: harmful, safe-object and empty rates on
    harmful prompts, alignment (and the three concepts drawn most) on clean ones."""
    from scdpo.eval.objects import object_metrics, rate_stats
    from scdpo.eval.presence import alignment_values
    from scdpo.models.sampler_config import SamplerConfig
    from scdpo.world.judge import load_default_judge
    from scdpo.world.suites import get_suite
    from scdpo.world.vocab import load_vocabulary

    torch.set_grad_enabled(False)
    judge = load_default_judge()
    threshold, harmful = float(judge.config.threshold), [c.index for c in load_vocabulary().harmful]
    rows = []
    for suite in ("eval-harmful-explicit", "eval-harmful-implicit"):
        records = get_suite(suite, n=n, seed=draw)
        images = model.sample([r.prompt for r in records], list(range(n)), SamplerConfig(steps=20, progress=False))
        probs = judge.probabilities(images.clamp(0, 1))
        m = object_metrics(probs, records, threshold)
        rows.append({"suite": suite, "harmful": round(float((probs[:, harmful] > threshold).any(1).float().mean()), 4),
                     "safe_object": m["safe_object_rate"], "empty": m["empty_rate"]})
    records = get_suite("eval-clean", n=n, seed=draw)  # what the edit does to clean prompts
    probs = judge.probabilities(model.sample([r.prompt for r in records], list(range(n)),
                                             SamplerConfig(steps=20, progress=False)).clamp(0, 1))
    drawn = (probs > threshold).float().mean(0)  # per concept: how often it appears on clean prompts
    rows.append({"suite": "eval-clean", "alignment": rate_stats(alignment_values(probs, records, threshold)),
                 "most_drawn": {load_vocabulary().names[i]: round(float(drawn[i]), 3)
                                for i in drawn.argsort(descending=True)[:3].tolist()}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="the probe's LoRA folder (trained unless it holds one)")
    ap.add_argument("--base", action="store_true", help="judge the base model instead")
    ap.add_argument("--keyword-dropout", type=float, default=0.0)
    ap.add_argument("--target-word", default=None)
    ap.add_argument("--weight", type=float, default=20.0)
    ap.add_argument("--preserve-weight", type=float, default=0.0,
                    help="> 0: half the pairs are clean prompts, and preservation p keeps them (batch doubled)")
    ap.add_argument("--hold-weight", type=float, default=0.0,
                    help="the on-policy hold q_c (--anchor-clean-weight; needs --preserve-weight > 0 for clean pairs)")
    ap.add_argument("--uncond-weight", type=float, default=0.0,
                    help="the unconditional hold q_u (--anchor-uncond-weight; docs/method.md, (h))")
    ap.add_argument("--guided", action="store_true",
                    help="the hold in its guided form (--anchor-clean-guided; docs/method.md, (g), \"The guided form\")")
    ap.add_argument("--mix", type=float, default=0.0, help="the anchor's mixed conditionings a_max (--anchor-mix; docs/method.md, (i))")
    ap.add_argument("--min-timestep", type=int, default=0, help="the pairs' lower timestep bound (preservation's)")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=None,
                    help="the LoRA's alpha (default: the rank, so alpha / rank = 1 as in every GPU round)")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n", type=int, default=48, help="prompts per suite")
    ap.add_argument("--data", default="runs/probe/pairs.parquet")
    args = ap.parse_args()
    if args.base == bool(args.out):
        ap.error("give --out DIR (train and judge a probe) or --base (judge the base model)")
    if args.out and not (Path(args.out) / "pytorch_lora_weights.safetensors").exists():
        from scdpo.train.config import TrainConfig
        from scdpo.train.trainer import train

        clean = 1000 if args.preserve_weight > 0 else 0
        data = Path(args.data) if not clean else Path(args.data).with_name("pairs-with-clean.parquet")
        # sc-dpo with its own parts off is dpo plus preservation (the DPO gradient stays 0)
        parts = dict(loss="sc-dpo", cost_margin=0.0, constraint=False, focus_gamma=0.0,
                     preserve_weight=args.preserve_weight) if clean else dict(loss="dpo")
        train(TrainConfig(model="emojiworld", dataset=str(anchor_only_pairs(data, 1000, clean)), out=args.out,
                          **parts, batch_size=args.batch_size * (2 if clean else 1), max_steps=args.steps,
                          lr=3e-3, warmup=20,
                          lora_targets=IMAGE_SIDE, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                          anchor_weight=args.weight, anchor_states="policy", anchor_steps=10,
                          anchor_keyword_dropout=args.keyword_dropout, anchor_target_word=args.target_word,
                          anchor_clean_weight=args.hold_weight, anchor_clean_guided=args.guided,
                          anchor_uncond_weight=args.uncond_weight, anchor_mix=args.mix, min_timestep=args.min_timestep,
                          cache_latents=True, checkpoint_every=1000, log_every=25, validate_every=0, device="cpu"))
    for row in judge_suites(args.out, args.n):
        print(json.dumps({"run": args.out or "base", **row}))


if __name__ == "__main__":
    main()
