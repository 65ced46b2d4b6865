#!/usr/bin/env python3
"""Train the cost model on CPU, ablate its objectives, and measure it on renders and on images the
shipped base model generates (labelled by the shipped judge, never by a cost model).

    OMP_NUM_THREADS=1 python benchmarks/cost_model.py --out /tmp/cost-bench   # prints markdown tables

1. Trains the default cost model (every objective) with its features cached in ``OUT/cache``; the
   ablations retrain only the adapter on cached features (ABLATIONS below; they leave out the VAE
   round trip of the default, so that every objective row shares one plain-render pool). A model
   whose ``metrics.json`` records the same settings is not retrained, so ``--rows`` can split the work
   over processes (start the second once ``OUT/cache`` is written) and a last run prints it all.
2. Held-out sets (train.py's protocol): eval-clean, eval-harmful-explicit and eval-mixed renders at
   seed + 1, clean and with the generator-artifact augmentations.
3. Generated images: ``T2IModel.from_pretrained("emojiworld")`` samples the first ``--generated-n``
   prompts of eval-clean and eval-harmful-explicit with its default sampler (20 steps, guidance 5,
   DPM-Solver++) and the seeds ``scdpo eval`` uses, so they are the images of the base model's
   evaluation. They are cached in ``OUT/generated-N.safetensors``. Label: harmful when the shipped
   judge finds any harmful concept (sigmoid > its threshold), severity the highest such.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from scdpo.cost.losses import CostLabels
from scdpo.cost.train import CostTrainConfig, adapter_costs, heldout_metrics, train
from scdpo.utils.io import atomic_path

# row name -> (model folder under OUT/models, settings that differ from the defaults)
NO_VAE = {"vae": None}
ABLATIONS = {
    "ranking + anchor + category + concept, VAE round trip (default)": ("5", {}),
    "ranking + anchor + category + concept": ("0", NO_VAE),
    "ranking + anchor + category": ("1", {**NO_VAE, "concept": False}),
    "ranking + anchor": ("2", {**NO_VAE, "category": False, "concept": False}),
    "ranking only": ("3", {**NO_VAE, "anchor": False, "category": False, "concept": False}),
    "anchor only": ("4", {**NO_VAE, "ranking": False, "category": False, "concept": False}),
}
GENERATED_SUITES = ("eval-clean", "eval-harmful-explicit")


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.4f}"


def generated_images(out: Path, n: int) -> dict[str, torch.Tensor]:
    """``{suite: images (n, 3, 64, 64)}`` sampled by the shipped base model (cached on disk)."""
    from scdpo.eval.run import expand
    from scdpo.prompts.records import load_records
    from scdpo.models.t2i import T2IModel

    path = out / f"generated-{n}.safetensors"
    if path.is_file():
        return load_file(str(path))
    model = T2IModel.from_pretrained("emojiworld", device="cpu")
    images = {}
    for suite in GENERATED_SUITES:
        samples = expand(suite, load_records(suite, None, n), 1)
        images[suite] = model.sample([r.prompt for *_, r in samples], [s for _, _, s, _ in samples])
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in images.items()}, str(tmp))
    return images


def judge_labels(images: torch.Tensor) -> CostLabels:
    """Harmful = the shipped judge finds any harmful concept; severity = the highest found."""
    from scdpo.world.judge import load_default_judge
    from scdpo.world.vocab import load_vocabulary

    judge, harmful = load_default_judge(), load_vocabulary().harmful
    idx = torch.tensor([c.index for c in harmful])
    sev = torch.tensor([float(c.severity) for c in harmful])
    present = judge.probabilities(images)[:, idx] > judge.config.threshold
    return CostLabels(present.any(1), (present.float() * sev).amax(1), torch.zeros(len(images), 7))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the models, feature cache and images")
    ap.add_argument("--pool", type=int, default=CostTrainConfig.pool)
    ap.add_argument("--steps", type=int, default=CostTrainConfig.steps)
    ap.add_argument("--eval-n", type=int, default=CostTrainConfig.eval_n)
    ap.add_argument("--generated-n", type=int, default=128, help="generated images per suite (0: none)")
    ap.add_argument("--rows", default=None, help="comma-separated ABLATIONS rows to train (default: all)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.machine()}; pool {args.pool}, "
          f"{args.steps} adapter steps, {args.eval_n} held-out renders per suite, "
          f"{args.generated_n} generated images per suite\n")

    wanted = None if args.rows is None else {int(r) for r in args.rows.split(",")}
    rows = []
    for i, (name, (folder, flags)) in enumerate(ABLATIONS.items()):
        if wanted is not None and i not in wanted:
            continue
        cfg = CostTrainConfig(out=str(args.out / "models" / folder), pool=args.pool, steps=args.steps,
                              eval_n=args.eval_n, cache=str(args.out / "cache"), device="cpu", progress=False,
                              **flags)
        done = Path(cfg.out) / "metrics.json"
        m = json.loads(done.read_text()) if done.is_file() else None
        if m is None or m["config"] != json.loads(json.dumps(asdict(cfg))):
            m = train(cfg)
        rows.append((name, m))
        print(f"{name}: features {m['feature_seconds']} s (pool + held-out), adapter {m['adapter_seconds']} s, "
              f"total {m['total_seconds']} s", flush=True)

    gen = {}
    if args.generated_n:
        from scdpo.cost.model import CostModel

        t0 = time.perf_counter()
        images = generated_images(args.out, args.generated_n)
        x = torch.cat([images[s] for s in GENERATED_SUITES])
        labels = judge_labels(x)
        backbone = CostModel.from_pretrained(rows[0][1]["config"]["out"]).backbone
        feats = backbone.spatial_features(x)
        n_clean = len(images[GENERATED_SUITES[0]])
        for name, m in rows:
            adapter = CostModel.from_pretrained(m["config"]["out"], backbone=backbone).adapter
            cost = adapter_costs(adapter, feats)
            gen[name] = {**heldout_metrics(cost, labels), "clean_above_0": float((cost[:n_clean] > 0).float().mean()),
                         "harmful_above_0": float((cost[labels.harmful] > 0).float().mean())}
        print(f"generated: {len(x)} images, judge finds harmful content in {int(labels.harmful.sum())} "
              f"({int(labels.harmful[:n_clean].sum())} of the {n_clean} eval-clean ones); "
              f"{time.perf_counter() - t0:.0f} s")

    print()
    print("| objectives | renders: AUROC | Spearman | acc. cost>0 | with artifacts: AUROC | Spearman | acc. cost>0 "
          "| generated: AUROC | Spearman | acc. cost>0 | clean gen. cost>0 | harmful gen. cost>0 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in rows:
        h, a, g = m["heldout"], m["heldout_augmented"], gen.get(name, {})
        print(f"| {name} | " + " | ".join(
            [_fmt(s.get("auroc")) + " | " + _fmt(s.get("spearman_severity")) + " | "
             + _fmt(s.get("accuracy_threshold_0"), True) for s in (h, a, g)]
            + [_fmt(g.get("clean_above_0"), True), _fmt(g.get("harmful_above_0"), True)]) + " |")
    h = rows[0][1]["heldout"]
    print("\nmean cost (default, clean renders): safe / severity 1 / 2 / 3 = " + " / ".join(
        f"{h.get(k, float('nan')):.2f}" for k in ("mean_cost_safe", "mean_cost_severity_1", "mean_cost_severity_2",
                                                   "mean_cost_severity_3")))


if __name__ == "__main__":
    main()
