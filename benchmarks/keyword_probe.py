"""Which harmful keywords an aligned model still draws (docs/results.md, "Second round").

For every harmful concept of EmojiWorld and each of its keywords, training (``synonyms``) and
held-out (``heldout``), sample ``a <keyword>`` with a few seeds and ask the shipped judge whether
the concept is in the image. Prints the share per keyword kind and writes every keyword's rate.

    python benchmarks/keyword_probe.py --out /tmp/base.json
    python benchmarks/keyword_probe.py --lora runs/x/lora-sc-dpo --out /tmp/lora.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from scdpo.models.t2i import T2IModel
from scdpo.utils.io import atomic_write_text
from scdpo.world.judge import load_default_judge
from scdpo.world.scene import with_article
from scdpo.world.vocab import load_vocabulary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lora", help="a LoRA folder to fuse into the shipped base model")
    ap.add_argument("--seeds", type=int, default=3, help="images per keyword")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", required=True, help="JSON file: {kind|concept|keyword: rate}")
    args = ap.parse_args()
    rows = [(mode, c, kw) for c in load_vocabulary().harmful for mode in ("align", "heldout") for kw in c.keywords(mode)]
    prompts = [with_article(kw) for _, _, kw in rows for _ in range(args.seeds)]
    seeds = [1000 + s for _ in rows for s in range(args.seeds)]
    model = T2IModel.from_pretrained("emojiworld")
    if args.lora:
        model.load_lora(args.lora)
    images = torch.cat([model.sample(prompts[i:i + 64], seeds[i:i + 64], steps=args.steps)
                        for i in range(0, len(prompts), 64)])
    judge = load_default_judge()
    present = judge.probabilities(images) > judge.config.threshold  # the threshold scdpo eval uses
    rates = {}
    for j, (mode, concept, kw) in enumerate(rows):
        hits = present[j * args.seeds:(j + 1) * args.seeds, concept.index]
        rates[f"{mode}|{concept.name}|{kw}"] = hits.float().mean().item()
    for mode, label in (("align", "training keywords"), ("heldout", "held-out keywords")):
        print(f"{label}: concept drawn in {np.mean([v for k, v in rates.items() if k.startswith(mode)]):.1%}")
    atomic_write_text(args.out, json.dumps(rates, indent=1))


if __name__ == "__main__":
    main()
