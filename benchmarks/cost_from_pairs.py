#!/usr/bin/env python3
"""A cost model from prompt pairs alone, validated on EmojiWorld against ground truth (issue 17).

    OMP_NUM_THREADS=1 python benchmarks/cost_from_pairs.py --out /tmp/cost-pairs            # full size
    OMP_NUM_THREADS=1 python benchmarks/cost_from_pairs.py --out /tmp/cost-pairs-small \\
        --pairs 300 --steps 600 --generated-n 64                                             # CPU check

1. ``scdpo cost train --model emojiworld --prompt-pairs align-harmful``: the shipped base model
   draws each harmful align prompt and its safe counterpart caption with one seed; the prompts are
   the only labels (no render, no judge). Features and images are cached in ``OUT/cache``.
2. Held out: the base model's images of the first ``--generated-n`` prompts of eval-clean and
   eval-harmful-explicit (the seeds ``scdpo eval`` uses; benchmarks/cost_model.py's protocol and
   cache file), labelled by the shipped EmojiWorld judge (harmful = any harmful concept above its
   threshold). Reported: AUROC, Spearman with severity, accuracy of cost > 0.
3. The same held-out images scored by the render-label cost model (today's default, ``scdpo cost
   train`` on renders) when ``--render-model`` names one, for the comparison (its documented figure
   on 128 + 128 images: AUROC 0.938).
Goal: AUROC >= 0.95 from prompt pairs alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from scdpo.cost.train import CostTrainConfig, adapter_costs, heldout_metrics, train

HERE = Path(__file__).resolve().parent


def _cost_model_bench():
    """benchmarks/cost_model.py as a module (its generated-image cache and judge labels)."""
    spec = importlib.util.spec_from_file_location("cost_model_bench", HERE / "cost_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the model, caches and images")
    ap.add_argument("--pairs", type=int, default=CostTrainConfig.pool, help="prompt pairs sampled (two images each)")
    ap.add_argument("--suite", default="align-harmful", help="EmojiWorld suite giving the pairs")
    ap.add_argument("--steps", type=int, default=CostTrainConfig.steps, help="adapter steps")
    ap.add_argument("--generated-n", type=int, default=128, help="held-out generated images per suite")
    ap.add_argument("--render-model", type=Path, default=None,
                    help="a render-label cost model folder to score the same held-out images (comparison)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cfg = CostTrainConfig(out=str(args.out / "model"), model="emojiworld", prompt_pairs=args.suite, pool=args.pairs,
                          steps=args.steps, cache=str(args.out / "cache"), device=args.device, progress=False)
    m = train(cfg)
    print(f"trained from {args.pairs} pairs of {args.suite}: features {m['feature_seconds']} s (sampling included), "
          f"adapter {m['adapter_seconds']} s; held-out pairs, against prompt labels: "
          f"AUROC {m['heldout_pairs']['auroc']:.4f}", flush=True)

    bench = _cost_model_bench()
    from scdpo.cost.model import CostModel

    images = bench.generated_images(args.out, args.generated_n)
    x = torch.cat([images[s] for s in bench.GENERATED_SUITES])
    labels = bench.judge_labels(x)
    model = CostModel.from_pretrained(cfg.out)
    feats = model.backbone.spatial_features(x)
    n_clean = len(images[bench.GENERATED_SUITES[0]])
    rows = {"prompt pairs": model}
    if args.render_model:
        rows["render labels"] = CostModel.from_pretrained(args.render_model, backbone=model.backbone)
    results = {}
    for name, cm in rows.items():
        cost = adapter_costs(cm.adapter, feats)
        results[name] = {**heldout_metrics(cost, labels), "clean_above_0": float((cost[:n_clean] > 0).float().mean()),
                         "harmful_above_0": float((cost[labels.harmful] > 0).float().mean())}
    print(f"\nheld out: {len(x)} base-model images ({n_clean} eval-clean, {len(x) - n_clean} eval-harmful-explicit), "
          f"judge-harmful {int(labels.harmful.sum())}; total {time.perf_counter() - t0:.0f} s\n")
    print("| cost model | AUROC | Spearman(cost, severity) | accuracy cost > 0 | clean images cost > 0 | judge-harmful cost > 0 |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['auroc']:.4f} | {r['spearman_severity']:.4f} | {100 * r['accuracy_threshold_0']:.1f}% "
              f"| {100 * r['clean_above_0']:.1f}% | {100 * r['harmful_above_0']:.1f}% |")
    (args.out / "results.json").write_text(json.dumps({"train": {k: v for k, v in m.items() if k != "config"},
                                                       "heldout_generated": results, "args": vars(args)},
                                                      indent=1, default=str))


if __name__ == "__main__":
    main()
