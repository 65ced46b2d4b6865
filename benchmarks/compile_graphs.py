"""How many graphs regional ``torch.compile`` builds over the recipe's training steps (issue 16;
docs/performance.md, "Compile in the trainer"): on the H200 the compiled step hit dynamo's
recompile limit (64) in ``ResnetBlock2D.forward`` and ran at 40-160 s a step. This counts, on any
device and in seconds, the graphs each compiled block's code compiles into, with a backend that
records each graph and runs it eagerly (dynamo's tracing and guards are the same as with inductor;
only the kernels differ), so the shapes, grad modes and recompiles can be read without a GPU.

    python benchmarks/compile_graphs.py --steps 12 --batch-size 8 --dynamic false   # the trainer's static shapes
    python benchmarks/compile_graphs.py --dynamic none --reasons                    # + why each recompile happened

Prints one JSON line per mode: graphs per block class, the running count after each optimizer step,
and the first dynamo warnings of a hit recompile limit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchor_cost import synthetic_pairs  # noqa: E402  (the same synthetic pairs as the timing)

DYNAMIC = {"false": False, "none": None, "true": True}


def count_graphs(data: Path, out: Path, steps: int, batch: int, dynamic, reasons: bool, limit: int = 0) -> dict:
    import torch
    import torch._dynamo

    import scdpo.train.model as tm
    from scdpo.models.speed import compile_blocks
    from scdpo.train.config import TrainConfig
    from scdpo.train.trainer import train

    graphs: Counter = Counter()

    def backend(gm, example_inputs):
        # a transformer block's graph reads its proj_in; every other compiled block is a resnet
        graphs["Transformer2DModel" if "proj_in" in gm.code else "ResnetBlock2D"] += 1
        return gm.forward

    torch._dynamo.reset()
    if limit:  # before compile_blocks, which only ever raises the limit
        torch._dynamo.config.recompile_limit = limit
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4 * limit)
    per_step: list[int] = []
    opt_step = torch.optim.AdamW.step

    def counted_step(self, *args, **kwargs):
        per_step.append(sum(graphs.values()))
        return opt_step(self, *args, **kwargs)
    torch.optim.AdamW.step = counted_step
    hits: list[str] = []

    class Hit(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if "recompile_limit" in msg or "cache_size_limit" in msg:
                hits.append(msg.splitlines()[0][:160])
    handler = Hit()
    logging.getLogger("torch._dynamo").addHandler(handler)
    if reasons:
        torch._logging.set_logs(recompiles=True)
    orig = tm.compile_blocks
    tm.compile_blocks = partial(compile_blocks, backend=backend, dynamic=dynamic)
    try:
        cfg = TrainConfig(model="emojiworld", dataset=str(data), out=str(out), loss="sc-dpo", batch_size=batch,
                          max_steps=steps, lr=1e-4, cache_latents=True, checkpoint_every=10_000, log_every=10_000,
                          validate_every=0, winner_weight=1.0, device="cpu", anchor_weight=20.0, anchor_steps=10,
                          compile=True)
        train(cfg)
    finally:
        tm.compile_blocks = orig
        torch.optim.AdamW.step = opt_step
        logging.getLogger("torch._dynamo").removeHandler(handler)
    return {"dynamic": dynamic, "steps": steps, "graphs": dict(graphs), "graphs_after_each_step": per_step,
            "limit_hit": hits[:3],
            "recompile_limit": torch._dynamo.config.recompile_limit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dynamic", nargs="+", default=["false", "none"], choices=sorted(DYNAMIC),
                    help="torch.compile's dynamic= for the blocks")
    ap.add_argument("--limit", type=int, default=0, help="dynamo's recompile_limit (0: what compile_blocks sets)")
    ap.add_argument("--reasons", action="store_true", help="log why each recompile happened (TORCH_LOGS=recompiles)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_pairs(Path(tmp) / "pairs.parquet", 64)
        for mode in args.dynamic:
            row = count_graphs(data, Path(tmp) / f"run-{mode}", args.steps, args.batch_size, DYNAMIC[mode], args.reasons, args.limit)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
