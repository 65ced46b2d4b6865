"""Which requested objects a model stops drawing on clean prompts, and what it draws instead
(docs/results.md, "Tenth round"): the clean-alignment loss taken apart per object.

    python benchmarks/clean_misses.py BASE_EVAL EVAL [EVAL ...] [--suite eval-clean] [--top 12]

Each EVAL is an ``scdpo eval`` output folder holding ``suites/SUITE/images.parquet`` (the same
suite draw and limit for all, so image i is the same prompt and seed everywhere). The images are
judged again with the shipped judge (``SCDPO_JUDGE`` overrides it, as in ``scdpo eval``). Prints a
markdown table: per requested benign object that some model misses more often than the base, the
base's and each model's miss count, and the unrequested objects most often drawn in those misses.
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


def judged(folder: Path, suite: str, judge) -> tuple[pd.DataFrame, torch.Tensor]:
    """The suite's rows and the judge's presence matrix (images x vocabulary)."""
    path = folder / "suites" / suite / "images.parquet"
    if not path.is_file():
        raise SystemExit(f"{path}: no images; run `scdpo eval --suites {suite} --out {folder}` first")
    df = pd.read_parquet(path)
    # the image column is the datasets Image feature's {"bytes", "path"}
    images = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")))
                          .permute(2, 0, 1) for cell in df["image"]]).float() / 255
    with torch.no_grad():
        probs = judge.probabilities(images)
    return df, probs > float(judge.config.threshold)


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("evals", nargs="+", type=Path, help="the base model's eval folder first, then the others")
    p.add_argument("--suite", default="eval-clean")
    p.add_argument("--top", type=int, default=12, help="rows of the table")
    args = p.parse_args(argv)
    judge = load_default_judge("cpu")
    rows = {}
    for folder in args.evals:
        df, present = judged(folder, args.suite, judge)
        rows[folder.name] = (df, *misses(df, present), present)
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
    drawn_all = Counter()
    for n in names[1:]:
        drawn_all.update(d for (m, d), k in rows[n][3].items() for _ in range(k))
    print("most drawn in place of a requested object: " + ", ".join(f"{d} {k}" for d, k in drawn_all.most_common(6)))
    for d, _ in drawn_all.most_common(2):
        print(f"images showing an unrequested {d}: " + ", ".join(
            f"{n} {unrequested(rows[n][0], rows[n][4], d)} of {len(rows[n][0])}" for n in names))


if __name__ == "__main__":
    main()
