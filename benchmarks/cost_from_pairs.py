#!/usr/bin/env python3
"""A cost model from prompt pairs alone, validated on EmojiWorld against ground truth (issue 17).

    OMP_NUM_THREADS=1 python benchmarks/cost_from_pairs.py --out /tmp/cost-pairs            # full size
    OMP_NUM_THREADS=1 python benchmarks/cost_from_pairs.py --out /tmp/cost-pairs-small \\
        --pairs 300 --steps 600 --generated-n 64                                             # CPU check

1. ``scdpo cost train --model emojiworld --prompt-pairs align-harmful``: the shipped base model
   draws each harmful align prompt and its safe counterpart caption with one seed; the prompts are
   the only labels (no render, no judge). Features and images are cached in ``OUT/cache``. A second
   model adds ``--clean-prompts align-clean`` (as many clean prompts' images, labelled safe by
   their prompts); ``--clean-prompts none`` skips it. A model whose ``metrics.json`` records the
   same settings is not retrained.
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
from dataclasses import asdict
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
    ap.add_argument("--clean-prompts", default="align-clean",
                    help="clean prompts for the second model (suite or file; 'none': no second model)")
    ap.add_argument("--render-model", type=Path, default=None,
                    help="a render-label cost model folder to score the same held-out images (comparison)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    t0 = time.perf_counter()
    variants = {"prompt pairs": ("model", None)}
    if args.clean_prompts != "none":
        variants["prompt pairs + clean prompts"] = ("model-clean", args.clean_prompts)
    trained = {}
    for name, (folder, clean) in variants.items():
        cfg = CostTrainConfig(out=str(args.out / folder), model="emojiworld", prompt_pairs=args.suite,
                              clean_prompts=clean, pool=args.pairs, steps=args.steps, cache=str(args.out / "cache"),
                              device=args.device, progress=False)
        done = Path(cfg.out) / "metrics.json"
        m = json.loads(done.read_text()) if done.is_file() else None
        if m is None or m["config"] != json.loads(json.dumps(asdict(cfg))):
            m = train(cfg)
        trained[name] = (cfg, m)
        print(f"{name}: {m['train_images']} training images ({args.pairs} pairs of {args.suite}); features "
              f"{m['feature_seconds']} s (sampling included), adapter {m['adapter_seconds']} s; held-out pairs, "
              f"against prompt labels: AUROC {m['heldout_pairs']['auroc']:.4f}", flush=True)

    bench = _cost_model_bench()
    from scdpo.cost.model import CostModel

    images = bench.generated_images(args.out, args.generated_n)
    x = torch.cat([images[s] for s in bench.GENERATED_SUITES])
    labels = bench.judge_labels(x)
    backbone = CostModel.from_pretrained(trained["prompt pairs"][0].out).backbone
    feats = backbone.spatial_features(x)
    n_clean = len(images[bench.GENERATED_SUITES[0]])
    rows = {name: CostModel.from_pretrained(cfg.out, backbone=backbone) for name, (cfg, _) in trained.items()}
    if args.render_model:
        rows["render labels"] = CostModel.from_pretrained(args.render_model, backbone=backbone)
    results = {}
    for name, cm in rows.items():
        cost = adapter_costs(cm.adapter, feats)
        results[name] = {**heldout_metrics(cost, labels), "clean_above_0": float((cost[:n_clean] > 0).float().mean()),
                         "harmful_above_0": float((cost[labels.harmful] > 0).float().mean())}
    print(f"\nheld out: {len(x)} base-model images ({n_clean} eval-clean, {len(x) - n_clean} eval-harmful-explicit), "
          f"judge-harmful {int(labels.harmful.sum())}; total {time.perf_counter() - t0:.0f} s\n")
    print("| cost model | AUROC ± SE (Hanley-McNeil) | Spearman(cost, severity) | accuracy cost > 0 | clean images cost > 0 | judge-harmful cost > 0 |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['auroc']:.4f} ± {r['auroc_se']:.4f} | {r['spearman_severity']:.4f} | {100 * r['accuracy_threshold_0']:.1f}% "
              f"| {100 * r['clean_above_0']:.1f}% | {100 * r['harmful_above_0']:.1f}% |")
    (args.out / "results.json").write_text(json.dumps({"train": {n: {k: v for k, v in m.items() if k != "config"}
                                                                for n, (_, m) in trained.items()},
                                                       "heldout_generated": results, "args": vars(args)},
                                                      indent=1, default=str))


if __name__ == "__main__":
    main()
