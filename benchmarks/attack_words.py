#!/usr/bin/env python3
"""Which adversarial prompts succeed, run by run (issue 19; docs/attacks.md, "Twenty-fifth round").
An attack's ASR says how many of its images the judge finds harmful, not whether the same prompts
win against every seed of a recipe. Given attack runs against several victims (each NAME=RUN, a
folder of `scdpo attack ... --evaluate` or `scdpo attack score`: prompts.csv and
suites/ATTACK/images.parquet), this judges every image with the shipped EmojiWorld judge and prints,
for each source prompt that won on some run, the harmful images out of the prompt's seeds and the
adversarial prompt, run by run; then how many source prompts won on every run, on some, and how
many harmful images those shared prompts hold.

    python benchmarks/attack_words.py s0=runs/r23/attacks/attack-loop50-s0-paraphrase \\
        s1=runs/r23b-atk/attack-loop50-s1-paraphrase s2=runs/r23b-atk/attack-loop50-s2-paraphrase
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from concept_trace import read_images  # noqa: E402 (benchmarks/ is on sys.path)


def run_table(run: Path, judge, harmful_idx: list[int]) -> dict[str, tuple[int, int, str]]:
    """source prompt -> (harmful images, images, adversarial prompt) of one attack run."""
    import pyarrow.parquet as pq

    prompts = run / "prompts.csv"
    suites = sorted((run / "suites").glob("*/images.parquet")) if (run / "suites").is_dir() else []
    if not prompts.is_file() or len(suites) != 1:
        raise SystemExit(f"{run}: expected prompts.csv and one suites/ATTACK/images.parquet (an attack run "
                         "scored with --evaluate or `scdpo attack score`)")
    with prompts.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    index = torch.tensor(pq.read_table(suites[0], columns=["prompt_index"]).column("prompt_index").to_pylist())
    probs = judge.probabilities(read_images(suites[0]))
    harm = (probs[:, harmful_idx] > float(judge.config.threshold)).any(1)
    out = {}
    for i, row in enumerate(rows):
        mine = index == i
        out[row["source_prompt"]] = (int(harm[mine].sum()), int(mine.sum()), row["prompt"])
    return out


def shared(tables: dict[str, dict]) -> dict:
    """Source prompts that won (some harmful image) on every run and on some run, and the share of all
    harmful images that the every-run winners hold."""
    sources = set().union(*tables.values())
    won = {s: [t[s][0] > 0 for t in tables.values() if s in t] for s in sources}
    every = sorted(s for s, w in won.items() if len(w) == len(tables) and all(w))
    some = sorted(s for s, w in won.items() if any(w))
    total = sum(t[s][0] for t in tables.values() for s in t)
    held = sum(t[s][0] for t in tables.values() for s in every if s in t)
    return {"every": every, "some": some, "harmful_images": total, "held_by_every": held}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=RUN", help="an attack run folder per victim")
    args = p.parse_args(argv)
    from scdpo.world.judge import load_default_judge
    from scdpo.world.vocab import load_vocabulary

    runs = {}
    for spec in args.runs:
        name, eq, path = spec.partition("=")
        if not eq or not name:
            raise SystemExit(f"{spec!r}: give NAME=RUN_DIR")
        runs[name] = Path(path)
    judge, harmful_idx = load_default_judge("cpu"), [c.index for c in load_vocabulary().harmful]
    tables = {name: run_table(run, judge, harmful_idx) for name, run in runs.items()}
    summary = shared(tables)
    print("| source prompt | " + " | ".join(tables) + " |")
    print("|---|" + "---|" * len(tables))
    for source in summary["some"]:
        cells = [f"{t[source][0]}/{t[source][1]}: {t[source][2]}" if source in t else "" for t in tables.values()]
        print(f"| {source} | " + " | ".join(cells) + " |")
    print(f"\n{len(summary['every'])} source prompts won on every run, {len(summary['some'])} on some; they hold "
          f"{summary['held_by_every']} of the {summary['harmful_images']} harmful images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
