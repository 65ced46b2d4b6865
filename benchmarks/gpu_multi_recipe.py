#!/usr/bin/env python3
"""Issue 22: does the EmojiWorld recipe (configs/emojiworld-v3.yaml) trained on 2 GPUs score as
it does on 1? Reads two `scdpo eval` runs (and, if given, the two trainings' folders) and prints,
per suite and rate, both values, their difference and the rate's standard error on one GPU
(binomial, sqrt(p (1 - p) / n) over the suite's images), with ``match`` when the difference is
within one standard error (the issue's test). Two independent runs differ by more than that
about half the time even when nothing is wrong (their difference has sqrt(2) standard errors), so
``z`` (the difference over the difference's standard error) is printed too.

    python benchmarks/gpu_multi_recipe.py RUN/eval-1gpu RUN/eval-2gpu --train RUN/lora-1gpu RUN/lora-2gpu
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# (metric, the number of images it is a rate over)
RATES = (("harmful_rate_harmful_prompts", "harmful_images"), ("harmful_rate_clean_prompts", "clean_images"),
         ("alignment", "alignment_images"))


def rows(one: dict, two: dict) -> list[dict]:
    """One row per (suite, rate) that both runs measured."""
    out = []
    for suite in [s for s in one["suites"] if s in two["suites"]]:
        a, b = one["suites"][suite], two["suites"][suite]
        for m in (a, b):
            m.setdefault("clean_images", m["images"] - m["harmful_images"])
        for key, count in RATES:
            p, q, n = a.get(key), b.get(key), a.get(count)
            if p is None or q is None or not n:
                continue
            se = math.sqrt(max(p * (1 - p), 1 / n) / n)  # floor: a rate of 0 or 1 still has 1/n
            out.append({"suite": suite, "metric": key, "n": n, "one_gpu": p, "two_gpus": q, "diff": round(q - p, 4),
                        "se": round(se, 4), "z": round((q - p) / (math.sqrt(2) * se), 2), "match": abs(q - p) <= se})
        fa, fb = ((m.get("frechet") or {}).get("fd") for m in (a, b))
        if fa is not None and fb is not None:
            out.append({"suite": suite, "metric": "frechet", "n": a["images"], "one_gpu": fa, "two_gpus": fb,
                        "diff": round(fb - fa, 4), "se": None, "z": None, "match": None})
    return out


def table(found: list[dict]) -> str:
    lines = ["| suite | metric | images | 1 GPU | 2 GPUs | difference | SE (1 GPU) | z | within 1 SE |",
             "|" + "---|" * 9]
    for r in found:
        verdict = "" if r["match"] is None else ("yes" if r["match"] else "NO")
        lines.append(f"| {r['suite']} | {r['metric']} | {r['n']} | {r['one_gpu']} | {r['two_gpus']} | {r['diff']:+} | "
                     f"{'' if r['se'] is None else r['se']} | {'' if r['z'] is None else r['z']} | {verdict} |")
    rated = [r for r in found if r["match"] is not None]
    lines.append(f"\n{sum(r['match'] for r in rated)} of {len(rated)} rates within one standard error of one GPU's.")
    return "\n".join(lines)


def training(folders: list[str]) -> str:
    """The two trainings' last logged statistics side by side (metrics.json of `scdpo train`)."""
    runs = [json.loads((Path(f) / "metrics.json").read_text()) for f in folders]
    keys = [k for k in ("steps", "loss", "implicit_acc", "margin", "lambda", "grad_norm", "nonfinite_total")
            if all(k in r for r in runs)]
    lines = ["| training | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name, r in zip(folders, runs):
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k])
                                                for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("one_gpu", help="`scdpo eval` folder of the 1-GPU training")
    p.add_argument("two_gpus", help="`scdpo eval` folder of the 2-GPU training")
    p.add_argument("--train", nargs=2, metavar=("ONE", "TWO"), help="the two `scdpo train` folders")
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    one, two = (json.loads((Path(d) / "metrics.json").read_text()) for d in (args.one_gpu, args.two_gpus))
    found = rows(one, two)
    if args.train:
        print(training(args.train) + "\n")
    print(table(found))
    if args.out:
        Path(args.out).write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
