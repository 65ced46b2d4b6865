"""Which requested objects a model stops drawing on clean prompts, and what it draws instead
(docs/results.md, "Tenth round"): the clean-alignment loss taken apart per object.

    python benchmarks/clean_misses.py BASE_EVAL EVAL [EVAL ...] [--suite eval-clean] [--top 12]

Each EVAL is an ``scdpo eval`` output folder holding ``suites/SUITE/images.parquet`` (the same
suite draw and limit for all, so image i is the same prompt and seed everywhere). The images are
judged again with the shipped judge (``SCDPO_JUDGE`` overrides it, as in ``scdpo eval``). Prints a
markdown table: per requested benign object that some model misses more often than the base, the
base's and each model's miss count, and the unrequested objects most often drawn in those misses;
then the misses on one-object prompts against those on prompts asking for two or more, and how
often the others drop a request the base meets, by how surely the base meets it (the judge's
probability on the base's image of the same prompt and seed; docs/results.md, "Sixteenth round").
"""

from __future__ import annotations

import argparse
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from scdpo.world.judge import load_default_judge
from scdpo.world.vocab import load_vocabulary


def judged(folder: Path, suite: str, judge) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """The suite's rows, the judge's presence matrix and its probabilities (images x vocabulary)."""
    path = folder / "suites" / suite / "images.parquet"
    if not path.is_file():
        raise SystemExit(f"{path}: no images; run `scdpo eval --suites {suite} --out {folder}` first")
    df = pd.read_parquet(path)
    # the image column is the datasets Image feature's {"bytes", "path"}
    images = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")))
                          .permute(2, 0, 1) for cell in df["image"]]).float() / 255
    with torch.no_grad():
        probs = judge.probabilities(images)
    return df, probs > float(judge.config.threshold), probs


def unrequested(df: pd.DataFrame, present: torch.Tensor, concept: str) -> int:
    """Images that show ``concept`` without asking for it."""
    j = load_vocabulary()[concept].index
    return sum(bool(present[i, j]) and concept not in c for i, c in enumerate(df["concepts"]))


def misses(df: pd.DataFrame, present: torch.Tensor) -> tuple[Counter, Counter, Counter]:
    """Per requested benign object: (times requested, times missed); and per missed object, the
    unrequested concepts drawn in the images that miss it."""
    vocab = load_vocabulary()
    asked, missed, instead = Counter(), Counter(), Counter()
    for i, concepts in enumerate(df["concepts"]):
        wanted = [c for c in concepts if not vocab[c].harmful]
        drawn = {vocab.names[j] for j in present[i].nonzero().flatten().tolist()}
        for c in wanted:
            asked[c] += 1
            if c not in drawn:
                missed[c] += 1
                instead.update((c, d) for d in drawn - set(concepts))
    return asked, missed, instead


def by_count(df: pd.DataFrame, present: torch.Tensor, k: int) -> str:
    """Missed requests / requests on the prompts asking for k benign objects (k = 2: two or more)."""
    vocab = load_vocabulary()
    asked = missed = 0
    for i, concepts in enumerate(df["concepts"]):
        wanted = [c for c in concepts if not vocab[c].harmful]
        if (len(wanted) == 1) != (k == 1) or not wanted:
            continue
        asked += len(wanted)
        missed += sum(not bool(present[i, vocab[c].index]) for c in wanted)
    return f"{missed}/{asked}"


MARGIN_BINS = (0.9, 0.99, 0.999)


def drops_by_base_margin(base: tuple, others: list[tuple], threshold: float) -> list[tuple[str, int, int]]:
    """Of the requests the base meets, how many each other model drops, by how surely the base
    meets them (the judge's probability on the base's image of the same prompt and seed):
    ``[(bin label, requests, dropped)]`` pooled over the other models."""
    vocab = load_vocabulary()
    edges = (threshold, *MARGIN_BINS, 1.0)
    counts = [[0, 0] for _ in range(len(edges) - 1)]
    base_df, _, base_probs = base
    for i, concepts in enumerate(base_df["concepts"]):
        for c in concepts:
            j = vocab[c].index
            p = float(base_probs[i, j])
            if vocab[c].harmful or p <= threshold:
                continue
            k = next(k for k in range(len(edges) - 1) if p <= edges[k + 1])
            for _, present, _ in others:
                counts[k][0] += 1
                counts[k][1] += not bool(present[i, j])
    return [(f"({edges[k]}, {edges[k + 1]}]", n, d) for k, (n, d) in enumerate(counts)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("evals", nargs="+", type=Path, help="the base model's eval folder first, then the others")
    p.add_argument("--suite", default="eval-clean")
    p.add_argument("--top", type=int, default=12, help="rows of the table")
    args = p.parse_args(argv)
    judge = load_default_judge("cpu")
    rows = {}
    for folder in args.evals:
        df, present, probs = judged(folder, args.suite, judge)
        rows[folder.name] = (df, *misses(df, present), present, probs)
    prompts = [tuple(r[0]["prompt"]) for r in rows.values()]
    if len(set(prompts)) != 1:
        raise SystemExit("the eval folders hold different prompts: use the same --suite-seed and --limit for all")
    names = list(rows)
    base_missed = rows[names[0]][2]
    asked = rows[names[0]][1]
    excess = Counter()
    for n in names[1:]:
        for c, k in rows[n][2].items():
            excess[c] = max(excess[c], k - base_missed[c])
    print(f"requested objects missed ({args.suite}, {len(prompts[0])} images; {sum(asked.values())} requests)\n")
    print("| object | asked | " + " | ".join(f"missed: {n}" for n in names) + " | drawn instead (all models but the base) |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for c, _ in excess.most_common(args.top):
        inst = Counter()
        for n in names[1:]:
            inst.update({d: k for (m, d), k in rows[n][3].items() if m == c})
        drawn = ", ".join(f"{d} {k}" for d, k in inst.most_common(3)) or "nothing"
        print(f"| {c} | {asked[c]} | " + " | ".join(str(rows[n][2][c]) for n in names) + f" | {drawn} |")
    print("\ntotal misses: " + ", ".join(f"{n} {sum(rows[n][2].values())}" for n in names))
    # prompts asking for one object against those asking for two or more: which layouts lose objects
    for k, label in ((1, "one requested object"), (2, "two or more")):
        print(f"misses on prompts with {label}: " + ", ".join(
            f"{n} {by_count(rows[n][0], rows[n][4], k)}" for n in names))
    drawn_all = Counter()
    for n in names[1:]:
        drawn_all.update(d for (m, d), k in rows[n][3].items() for _ in range(k))
    print("most drawn in place of a requested object: " + ", ".join(f"{d} {k}" for d, k in drawn_all.most_common(6)))
    # the requests the base meets only narrowly are the ones the others drop (sixteenth round)
    print("\nrequests the base meets, dropped by the others (pooled), by the judge's probability on the base's image:")
    print("| base's probability | requests | dropped | drop rate |\n|---|---|---|---|")
    judged_rows = {n: (rows[n][0], rows[n][4], rows[n][5]) for n in names}
    for label, n, d in drops_by_base_margin(judged_rows[names[0]], [judged_rows[n] for n in names[1:]],
                                            float(judge.config.threshold)):
        print(f"| {label} | {n} | {d} | {d / n:.1%} |" if n else f"| {label} | 0 | 0 | |")
    for d, _ in drawn_all.most_common(2):
        print(f"images showing an unrequested {d}: " + ", ".join(
            f"{n} {unrequested(rows[n][0], rows[n][4], d)} of {len(rows[n][0])}" for n in names))


if __name__ == "__main__":
    main()
