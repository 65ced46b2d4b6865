"""Where an EmojiWorld training step's work is dispatched from (issue 16; BENCHMARKS.md, "CUDA graphs
for the training step"): the aten calls of one optimizer step, counted by phase with a dispatch mode,
on the shipped model with synthetic pairs and cached latents (benchmarks/anchor_cost.py's). Each call
is one trip from Python through the dispatcher; the ones that are not views (``OpOverload.is_view``:
no data moved) are the candidates for a GPU kernel launch, counted apart (a count on the CPU, not a
measurement of launches on a GPU). The phases: the policy's forward with gradients, its backward,
the reference's forward, the optimizer, and the rest (noise, timesteps, the loss, clipping). On the
CPU the optimizer is not fused, so its row is the for-loop one, where CUDA's fused AdamW is a few
kernels.

    python benchmarks/step_ops.py --batch-size 8 --steps 4
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

from anchor_cost import synthetic_pairs


def count(data: Path, out: Path, batch: int, steps: int) -> dict[str, float]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import scdpo.train.trainer as tr
    from scdpo.models.t2i import T2IModel
    from scdpo.train import model as tm
    from scdpo.train.config import TrainConfig

    counts, phase, snap, done = collections.Counter(), ["other"], collections.Counter(), [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counts[phase[0]] += 1
            if not func.is_view:
                counts[phase[0] + " (not views)"] += 1
            return func(*args, **(kwargs or {}))

    def labelled(fn, label):
        def call(*a, **k):
            outer = phase[0]
            phase[0] = label if outer == "other" else outer
            try:
                return fn(*a, **k)
            finally:
                phase[0] = outer
        return call

    def stepped(fn):  # counts from the end of the first step to the end of the last but one
        def call(self, *a, **k):
            done[0] += 1
            if done[0] == 2:
                counts.clear()
            if done[0] == steps:
                snap.update(counts)
            return labelled(fn, "optimizer")(self, *a, **k)
        return call

    saved = (T2IModel.predict, tm.Reference.__call__, torch.Tensor.backward, torch.optim.AdamW.step)
    T2IModel.predict = labelled(T2IModel.predict, "policy forward")
    tm.Reference.__call__ = labelled(tm.Reference.__call__, "reference forward")
    torch.Tensor.backward = labelled(torch.Tensor.backward, "backward")
    torch.optim.AdamW.step = stepped(torch.optim.AdamW.step)
    try:
        cfg = TrainConfig(model="emojiworld", dataset=str(data), out=str(out), loss="sc-dpo", batch_size=batch,
                          max_steps=steps, cache_latents=True, checkpoint_every=10_000, log_every=10_000,
                          validate_every=0, winner_weight=1.0, device="cpu")
        with Count():
            tr.train(cfg)
    finally:
        T2IModel.predict, tm.Reference.__call__, torch.Tensor.backward, torch.optim.AdamW.step = saved
    return {k: v / (steps - 2) for k, v in snap.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4,
                    help="optimizer steps; the first and the last are not counted (set-up, the run's end)")
    args = ap.parse_args()
    if args.steps < 3:
        raise SystemExit(f"--steps {args.steps}: give at least 3 (the first and the last are not counted)")
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_pairs(Path(tmp) / "pairs.parquet", 64)
        per_step = count(data, Path(tmp) / "run", args.batch_size, args.steps)
    phases = sorted((k for k in per_step if not k.endswith(" (not views)")), key=lambda k: -per_step[k])
    print(f"| phase | aten calls a step (batch {args.batch_size}) | not views |\n|---|---|---|")
    for k in phases:
        print(f"| {k} | {per_step[k]:.0f} | {per_step.get(k + ' (not views)', 0):.0f} |")
    print(f"| all | {sum(per_step[k] for k in phases):.0f} | "
          f"{sum(per_step.get(k + ' (not views)', 0) for k in phases):.0f} |")

if __name__ == "__main__":
    main()
