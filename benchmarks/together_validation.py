"""The validation grids of `scdpo train --together`: one sampler call for every run (``Validator.many``) against
one call a run (``Validator.__call__`` under ``rows_per_run(run=k)``, the code before 2026-12-06), on the shipped
EmojiWorld model with R stacked adapters (the recipe's targets and rank, configs/emojiworld.yaml; their B is zero
as at a training's start, so this times the calls and does not compare their images: tests/test_stacked_validation.py
does), the recipe's grid (8 + 8 prompts), timed after one untimed round of each.

    python benchmarks/together_validation.py --runs 6 --steps 20 --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--steps", type=int, default=20, help="sampler steps of the grid (the recipe's validate_steps)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    from scdpo.models.t2i import T2IModel
    from scdpo.train import stacked
    from scdpo.train.validate import Validator, validation_records
    from scdpo.utils.threads import set_threads

    if args.threads:
        set_threads(args.threads)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    model = T2IModel.from_pretrained("emojiworld", device=args.device)
    states = [stacked.initial_adapters(model.unet, seed, 8, 8.0, targets) for seed in range(args.runs)]
    layout = stacked.stack(model.unet, states, 8, 8.0, targets)
    validator = Validator(validation_records(None, 8), args.steps, use_judge=True, device=args.device)
    out = Path(tempfile.mkdtemp())

    def per_run():
        for k in range(args.runs):
            with stacked.rows_per_run(layout, run=k):
                validator(model, out / f"run{k}.png")

    def together():
        validator.many(model, layout, [out / f"run{k}.png" for k in range(args.runs)])

    for name, fn in (("one call a run", per_run), ("one call for all runs", together)):
        fn()  # untimed: lazy initialisation, cuDNN's algorithm choice
        times = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        print(f"{name}: {', '.join(f'{t:.2f}' for t in times)} s ({args.runs} runs, {args.steps} steps, {args.device})",
              flush=True)


if __name__ == "__main__":
    main()
