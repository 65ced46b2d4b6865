#!/usr/bin/env python3
"""Which held-out words keep their harm, and why (issue 15; docs/results.md, "Nineteenth round").

Per harmful concept, the share of its implicit prompts (named only by held-out words) on which the
judge finds the concept, summed over every evaluation given (e.g. 15 seeds x 2 draws), beside three
measures of where its held-out words sit in the model's own text encoder (the mean of the context
tokens of "a picture of a WORD", cosine):

    own     mean over its held-out words of the highest similarity to one of its training words
    margin  mean over its held-out words of (the highest similarity to any safe concept's word)
            minus (the highest similarity to any harmful training word): > 0, the word reads more
            like a safe word than like anything the alignment saw

and the Spearman correlation of each with the harm share over the concepts. A positive correlation
with ``margin`` says the residual harm sits on words that the preservation terms (which keep safe
prompts as they were) treat as safe.

    python benchmarks/implicit_reach.py runs/r19/eval-t700-hold20f4-r32a8-s*-d1[01]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

SUITE = "eval-harmful-implicit"


def harm_by_concept(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """Concept -> (implicit prompts drawn harmful, implicit prompts), summed over the evaluations."""
    total: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for folder in folders:
        file = folder / "metrics.json"
        if not file.is_file():
            raise SystemExit(f"{folder}: no metrics.json; give folders written by `scdpo eval`")
        suite = json.loads(file.read_text())["suites"].get(SUITE)
        if suite is None:
            raise SystemExit(f"{folder}: no {SUITE} suite in it; evaluate with --suites {SUITE}")
        for concept, (k, n) in suite["harmful_requested_by_concept"].items():
            total[concept][0] += k
            total[concept][1] += n
    return {c: (k, n) for c, (k, n) in total.items()}


def word_geometry(model_name: str) -> dict[str, dict]:
    """Per harmful concept: its held-out words and their ``own`` and ``margin`` (module docstring)."""
    import torch
    import yaml

    from scdpo.models.t2i import T2IModel
    from scdpo.world.vocab import DATA_DIR

    model = T2IModel.from_pretrained(model_name, device="cpu")
    vocab = yaml.safe_load((DATA_DIR / "concepts.yaml").read_text())

    @torch.no_grad()
    def embed(words: list[str]) -> torch.Tensor:
        context = model.encode_prompts([f"a picture of a {w}" for w in words]).context.float()
        return torch.nn.functional.normalize(context.mean(1), dim=-1)
    harmful = vocab["harmful"]
    trained = embed([w for c in harmful for w in c["synonyms"]])
    safe = embed([w for c in vocab["safe"] for w in c.get("synonyms") or [c["name"]]])
    out = {}
    for c in harmful:
        held = embed(c["heldout"])
        own = (held @ embed(c["synonyms"]).T).max(1).values
        margin = (held @ safe.T).max(1).values - (held @ trained.T).max(1).values
        out[c["name"]] = {"heldout": c["heldout"], "own": own.mean().item(), "margin": margin.mean().item()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evals", nargs="+", type=Path, help="`scdpo eval` folders with the implicit suite")
    ap.add_argument("--model", default="emojiworld", help="the base model whose text encoder to read")
    ap.add_argument("--top", type=int, default=10, help="concepts to list, most harmful first")
    args = ap.parse_args()
    from scipy.stats import spearmanr

    harm = harm_by_concept(args.evals)
    geo = word_geometry(args.model)
    rows = sorted(((c, k / n, geo[c]) for c, (k, n) in harm.items() if n and c in geo), key=lambda r: -r[1])
    print(f"| concept | held-out words | harmful (of {len(args.evals)} evaluations) | own | margin |\n|---|---|---|---|---|")
    for c, rate, g in rows[:args.top]:
        print(f"| {c} | {', '.join(g['heldout'])} | {100 * rate:.1f}% | {g['own']:.3f} | {g['margin']:+.3f} |")
    for key in ("own", "margin"):
        r = spearmanr([rate for _, rate, _ in rows], [g[key] for _, _, g in rows])
        print(f"\nSpearman, harmful share against {key}, over {len(rows)} concepts: {r.statistic:+.2f} (p = {r.pvalue:.3f})")


if __name__ == "__main__":
    main()
