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

``--mix A ...`` (twentieth round; docs/method.md (i)) reads, from the text encoder alone, what the
anchor's mixed conditionings ``(1 - a) c_harm + a c_safe``, a <= A, can reach: the share of held-out
words that sit nearer some mixed text than any safe word (the edit's reach), and the share of safe
words that sit nearer a text mixed towards *another* safe word than that word's nearest safe word
(what the hold then has to defend). That is how the round's two strengths were fixed before training:

    python benchmarks/implicit_reach.py --mix 0 0.15 0.3 0.45 0.6
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


def _pooled(context):
    import torch

    return torch.nn.functional.normalize(context.mean(-2), dim=-1)


def mix_reach(held, safe, trained, share: float, grid: int = 4) -> tuple[float, float]:
    """(held-out words reached, safe words reached) by the texts ``(1 - a) t + a s``, ``a`` on a grid
    of ``grid`` points in [0, share], ``t`` a harmful training word's and ``s`` a safe word's context
    (each (N, T, D), compared mean-pooled, cosine): a held-out word is reached when some mixed text
    is nearer it than any safe word; a safe word when some text mixed towards another safe word is
    nearer it than its nearest other safe word (module docstring)."""
    import torch

    h, sp = _pooled(held), _pooled(safe)
    own = (h @ sp.T).max(1).values
    others = (sp @ sp.T).fill_diagonal_(-2).max(1).values
    best_h, best_s = torch.full_like(own, -2), torch.full_like(others, -2)
    for a in torch.linspace(0, share, grid) if share > 0 else torch.zeros(1):
        for t in trained:
            mixed = _pooled((1 - a) * t + a * safe)  # row j: mixed towards safe word j
            best_h = torch.maximum(best_h, (h @ mixed.T).max(1).values)
            best_s = torch.maximum(best_s, (sp @ mixed.T).fill_diagonal_(-2).max(1).values)
    return (best_h > own).float().mean().item(), (best_s > others).float().mean().item()


def _contexts(model_name: str):
    """The vocabulary (concepts.yaml) and ``embed(words)``: each word's context in "a picture of a WORD"."""
    import torch
    import yaml

    from scdpo.models.t2i import T2IModel
    from scdpo.world.vocab import DATA_DIR

    model = T2IModel.from_pretrained(model_name, device="cpu")

    @torch.no_grad()
    def embed(words: list[str]) -> torch.Tensor:
        return model.encode_prompts([f"a picture of a {w}" for w in words]).context.float()
    return yaml.safe_load((DATA_DIR / "concepts.yaml").read_text()), embed


def print_mix_reach(model_name: str, shares: list[float]) -> None:
    vocab, embed = _contexts(model_name)
    harmful = vocab["harmful"]
    held = embed([w for c in harmful for w in c["heldout"]])
    safe = embed([w for c in vocab["safe"] for w in c.get("synonyms") or [c["name"]]])
    trained = embed([w for c in harmful for w in c["synonyms"]])
    print(f"| a_max | held-out words reached (of {len(held)}) | safe words reached (of {len(safe)}) |\n|---|---|---|")
    for a in shares:
        h, s = mix_reach(held, safe, trained, a)
        print(f"| {a:g} | {100 * h:.0f}% | {100 * s:.0f}% |")


def word_geometry(model_name: str) -> tuple[dict[str, dict], int]:
    """Per harmful concept: its held-out words, their ``own`` and ``margin`` (module docstring) and
    each one's nearest safe word with that word's rank by closeness to a harmful training word; and
    how many safe words there are."""
    vocab, contexts = _contexts(model_name)

    def embed(words: list[str]):
        return _pooled(contexts(words))
    harmful = vocab["harmful"]
    trained = embed([w for c in harmful for w in c["synonyms"]])
    safe_words = [w for c in vocab["safe"] for w in c.get("synonyms") or [c["name"]]]
    safe = embed(safe_words)
    # each safe word's rank (1 = nearest) by its closeness to any harmful training word: where a
    # filter on the clean prompts nearest the harmful training words would have to reach
    rank = (-(safe @ trained.T).max(1).values).argsort().argsort() + 1
    out = {}
    for c in harmful:
        held = embed(c["heldout"])
        own = (held @ embed(c["synonyms"]).T).max(1).values
        near = (held @ safe.T).max(1)
        margin = near.values - (held @ trained.T).max(1).values
        out[c["name"]] = {"heldout": c["heldout"], "own": own.mean().item(), "margin": margin.mean().item(),
                          "nearest": [f"{safe_words[j]} ({rank[j]})" for j in near.indices.tolist()]}
    return out, len(safe_words)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evals", nargs="*", type=Path, help="`scdpo eval` folders with the implicit suite")
    ap.add_argument("--mix", nargs="+", type=float, metavar="A", help="print what mixed conditionings up to A reach")
    ap.add_argument("--model", default="emojiworld", help="the base model whose text encoder to read")
    ap.add_argument("--top", type=int, default=10, help="concepts to list, most harmful first")
    args = ap.parse_args()
    if args.mix:
        print_mix_reach(args.model, args.mix)
    if not args.evals:
        return
    from scipy.stats import spearmanr

    harm = harm_by_concept(args.evals)
    geo, n_safe = word_geometry(args.model)
    rows = sorted(((c, k / n, geo[c]) for c, (k, n) in harm.items() if n and c in geo), key=lambda r: -r[1])
    print(f"| concept | held-out words | harmful (of {len(args.evals)} evaluations) | own | margin | nearest safe word "
          f"(its rank of {n_safe} by closeness to a harmful training word) |\n|---|---|---|---|---|---|")
    for c, rate, g in rows[:args.top]:
        print(f"| {c} | {', '.join(g['heldout'])} | {100 * rate:.1f}% | {g['own']:.3f} | {g['margin']:+.3f} | "
              f"{', '.join(g['nearest'])} |")
    for key in ("own", "margin"):
        r = spearmanr([rate for _, rate, _ in rows], [g[key] for _, _, g in rows])
        print(f"\nSpearman, harmful share against {key}, over {len(rows)} concepts: {r.statistic:+.2f} (p = {r.pvalue:.3f})")


if __name__ == "__main__":
    main()
