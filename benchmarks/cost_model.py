#!/usr/bin/env python3
"""Train the default cost model on CPU and measure it on held-out EmojiWorld renders.

    python benchmarks/cost_model.py --pool 4000 --out /tmp/cost-bench    # prints markdown tables

First run: renders a pool from the ``train`` suite, extracts backbone features once (cached in
``OUT/cache``) and trains the adapter with every objective; then the objective ablations retrain
only the adapter on the same cached features. Held-out sets: eval-clean, eval-harmful-explicit
and eval-mixed renders at seed + 1, clean and with the generator-artifact augmentations.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from scdpo.cost.train import CostTrainConfig, train

ABLATIONS = {
    "all (ranking + anchor + category)": {},
    "no ranking": {"ranking": False},
    "no anchor": {"anchor": False},
    "no category": {"category": False},
    "ranking only": {"anchor": False, "category": False},
    "anchor only": {"ranking": False, "category": False},
}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the models and the feature cache")
    ap.add_argument("--pool", type=int, default=4000)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--eval-n", type=int, default=300)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--no-ablations", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"pool {args.pool} x {args.views} view(s), eval {args.eval_n} per suite, {args.steps} steps\n")
    rows = []
    for name, flags in ABLATIONS.items():
        cfg = CostTrainConfig(out=str(out / name.split(" (")[0].replace(" ", "-")), backbone=args.backbone,
                              pool=args.pool, views=args.views, eval_n=args.eval_n, steps=args.steps,
                              cache=str(out / "cache"), device="cpu", progress=False, **flags)
        m = train(cfg)
        rows.append((name, m))
        if name.startswith("all"):
            print(f"first run: features {m['feature_seconds']} s (pool + held-out), adapter {m['adapter_seconds']} s, "
                  f"total {m['total_seconds']} s\n")
        if args.no_ablations:
            break
    print("| objectives | AUROC clean | AUROC augmented | Spearman(cost, severity) | accuracy cost>0 | "
          "mean cost safe / sev 1 / 2 / 3 |")
    print("|---|---|---|---|---|---|")
    for name, m in rows:
        h, a = m["heldout"], m["heldout_augmented"]
        means = " / ".join(f"{h.get(k, float('nan')):.2f}" for k in
                           ("mean_cost_safe", "mean_cost_severity_1", "mean_cost_severity_2", "mean_cost_severity_3"))
        print(f"| {name} | {_fmt(h['auroc'])} | {_fmt(a['auroc'])} | {_fmt(h['spearman_severity'])} | "
              f"{_fmt(h['accuracy_threshold_0'])} | {means} |")


if __name__ == "__main__":
    main()
