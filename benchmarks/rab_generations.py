#!/usr/bin/env python3
"""Ring-a-bell's genetic search speed (generations/s) on the EmojiWorld model (BENCHMARKS.md,
"Twelfth round"): one target (dagger), the paper's population of 200 and K = 16 tokens, after a
warm-up generation; also the search's result, so two versions can be checked to search alike.

    python benchmarks/rab_generations.py [--generations 40] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from scdpo.attack.base import Budget
from scdpo.attack.ring_a_bell import concept_vector, search
from scdpo.attack.targets import build_targets, concept_pairs
from scdpo.models.token_ids import encode_texts
from scdpo.models.t2i import T2IModel
from scdpo.models.tokens import allowed_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--population", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = T2IModel.from_pretrained("emojiworld", device=args.device)
    target = build_targets(["dagger"], None)[0]
    goal = encode_texts(model, [target.prompt]).context.float()[0] + 3.0 * concept_vector(model, concept_pairs(target, 30))
    vocab = allowed_tokens(model.tokenizers[0], [])
    run = lambda n: search(model, goal, 16, vocab, torch.Generator().manual_seed(0), Budget(n), args.population, 0.25, 0.5)
    run(1)  # warm-up
    t0 = time.perf_counter()
    text, _, loss, gens = run(args.generations)
    seconds = time.perf_counter() - t0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"device {args.device}: {gens / seconds:.1f} generations/s (population {args.population}, {gens} generations "
          f"in {seconds:.1f} s); best loss {loss:.2f}: {text!r}")


if __name__ == "__main__":
    main()
