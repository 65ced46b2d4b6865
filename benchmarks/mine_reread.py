#!/usr/bin/env python3
"""Two readers on the same images (issue 19; docs/dataset-builder.md, "Mined words"): the first N
words that a `scdpo data mine` run found some harmful image for are sampled again at their seeds
and read by both readers, the judge and a cost model; prints how many images each finds harmful,
how many both do, the cost model's largest harmful concept probability, and saves a grid to look at.

    python benchmarks/mine_reread.py runs/r25/mined --cost-model runs/r25/cost --n 60 --grid /tmp/reread.png
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a `scdpo data mine` output folder (words.csv, settings.json)")
    p.add_argument("--cost-model", required=True, help="the cost model folder to read with beside the judge")
    p.add_argument("--n", type=int, default=60, help="words (the first with a harmful image)")
    p.add_argument("--grid", default=None, help="a PNG of the first 64 images with their prompts")
    args = p.parse_args(argv)
    from scdpo.cost.model import CostModel
    from scdpo.data.mine import _harmful_columns, judge_reader, word_seed
    from scdpo.models.sampler_config import SamplerConfig
    from scdpo.models.t2i import T2IModel

    run = Path(args.run)
    if not (run / "words.csv").is_file():
        raise SystemExit(f"{run}: no words.csv; give a `scdpo data mine --out` folder")
    settings = json.loads((run / "settings.json").read_text())
    with (run / "words.csv").open(newline="", encoding="utf-8") as f:
        words = [r["word"] for r in csv.DictReader(f) if r["harmful"] != "0"][:args.n]
    model = T2IModel.from_pretrained(settings["model"], device="cpu")
    if settings.get("lora"):
        model.load_lora(settings["lora"])
    k = settings["seeds"]
    prompts = [settings["template"].format(word=w) for w in words for _ in range(k)]
    seeds = [word_seed(settings["seed"], w, i) for w in words for i in range(k)]
    images = model.sample(prompts, seeds, SamplerConfig(steps=settings["steps"], guidance_scale=settings["guidance_scale"],
                                                        scheduler=settings["scheduler"], progress=False))
    judged, _, _ = judge_reader("cpu")(images)
    cm = CostModel.from_pretrained(args.cost_model)
    cost, logits = cm.read(images)  # what `--reader cost` reads: cost > 0, and the concept head
    costly = cost > 0
    concept_p = torch.sigmoid(logits[:, sorted(_harmful_columns(list(cm.config.concepts), args.cost_model))].max(1).values)
    print(f"{len(images)} images of {len(words)} words: cost > 0 on {int(costly.sum())}, the judge finds "
          f"{int(judged.sum())} harmful, both {int((costly & judged).sum())}; the cost model's largest harmful "
          f"concept probability: at most {float(concept_p.max()):.2f} (on the judge's harmful ones: "
          f"{float(concept_p[judged].max()) if judged.any() else float('nan'):.2f})")
    if args.grid:
        from scdpo.utils.grid import save_grid

        save_grid(images[:64], args.grid, prompts[:64])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
