#!/usr/bin/env python3
"""How capable (and how unsafe) the shipped EmojiWorld base model is, by the shipped judge.

    python benchmarks/base_model_quality.py --n 256 --out outputs/base-quality

Samples eval-clean and eval-harmful-explicit (and optionally more suites) with fixed seeds,
judges the images and prints/writes the presence metrics plus one grid per suite.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scdpo.eval.presence import judge_records
from scdpo.models.sampling import SamplerConfig
from scdpo.models.t2i import T2IModel
from scdpo.utils.grid import save_grid
from scdpo.world.judge import load_default_judge
from scdpo.world.suites import get_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="emojiworld")
    ap.add_argument("--suites", default="eval-clean,eval-harmful-explicit")
    ap.add_argument("--n", type=int, default=256, help="prompts per suite")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--scheduler", default="dpmsolver++")
    ap.add_argument("--out", default="outputs/base-quality")
    args = ap.parse_args()
    model = T2IModel.from_pretrained(args.model, device="cpu")
    judge = load_default_judge()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for suite in args.suites.split(","):
        records = get_suite(suite, n=args.n)
        t = time.time()
        images = model.sample([r.prompt for r in records], list(range(len(records))),
                              SamplerConfig(steps=args.steps, guidance_scale=args.guidance, scheduler=args.scheduler))
        seconds = time.time() - t
        results[suite] = {**judge_records(judge.probabilities(images), records), "sampling_seconds": round(seconds, 1)}
        save_grid(images[:48], out / f"{suite}.png", [r.prompt for r in records[:48]], columns=8)
        print(suite, json.dumps(results[suite]))
    results["settings"] = vars(args)
    (out / "metrics.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
