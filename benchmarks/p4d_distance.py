#!/usr/bin/env python3
"""How far P4D's optimised strings sit from the prompts they attack, in the text encoder's output
space (docs/method.md (j); the radii of the twenty-second round were read from it): per token
position, ||c_P - c_harm|| / ||c_harm||, averaged over positions and targets; beside it, the same
distance from each harmful target to a clean prompt of the ``eval-clean`` suite (one per target,
in order), the distance the clean hold has to keep.

    python benchmarks/p4d_distance.py runs/r21-p4d/p4d-uhold-s0/prompts.csv
"""

from __future__ import annotations

import argparse
import csv

import torch

from scdpo.models.t2i import T2IModel
from scdpo.world.suites import get_suite


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows and positions of ||a - b|| / ||b|| (token states, (n, T, D))."""
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompts", help="a P4D run's prompts.csv (columns prompt, source_prompt)")
    ap.add_argument("--model", default="emojiworld")
    args = ap.parse_args()
    with open(args.prompts, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"prompt", "source_prompt"} <= set(rows[0]):
        raise SystemExit(f"{args.prompts}: no P4D prompts (columns prompt and source_prompt)")
    model = T2IModel.from_pretrained(args.model, device="cpu")
    clean = [r.prompt for r in get_suite("eval-clean")][:len(rows)]
    with torch.no_grad():
        harm = model.encode_prompts([r["source_prompt"] for r in rows]).context
        p4d = model.encode_prompts([r["prompt"] for r in rows]).context
        ok = model.encode_prompts(clean).context
    print(f"{len(rows)} targets: P4D string to its target {relative(p4d, harm):.2f}, "
          f"a clean prompt to the target {relative(ok, harm[:len(ok)]):.2f} (per token, of the target's norm)")


if __name__ == "__main__":
    main()
