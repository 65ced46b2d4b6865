"""One process of benchmarks/concurrent_train.py: the recipe's "every step" training
(anchor_cost.measure) in one variant, which stops at the end of its W-th optimizer step until every
process of its row has got there, so that the row's warm steps all run at the same time. Writes one
JSON result: anchor_cost's row plus its warm steps/s, its own warm-up seconds (the start of
``train()`` to the end of step W: model, latents, compilation, the first W steps), the seconds it
then waited for the row, the loss of its last step and its peak memory. Prints a line per step, so
a killed process's log says how far it got."""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

from anchor_cost import measure

from scdpo.utils.io import atomic_write_text


def barrier(folder: Path, index: int, n: int, deadline: float) -> None:
    """Mark this process ready in ``folder`` and wait until all ``n`` of the row are."""
    (folder / str(index)).touch()
    while sum(1 for _ in folder.iterdir()) < n:
        if time.time() > deadline:
            raise TimeoutError(f"the row's other processes did not finish their warm-up by the deadline ({n} expected)")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True, help="the run's name")
    ap.add_argument("--flags", required=True, help="TrainConfig fields of the variant, as JSON")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="folder for the training's outputs")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--index", type=int, required=True, help="this process's number in its row")
    ap.add_argument("--n", type=int, required=True, help="processes in the row")
    ap.add_argument("--barrier", required=True, help="the row's folder of ready marks")
    ap.add_argument("--deadline", type=float, required=True, help="the row's end, in time.time() seconds")
    ap.add_argument("--result", required=True, help="JSON file to write")
    args = ap.parse_args(argv)

    import torch

    cuda = args.device.startswith("cuda")
    own: dict = {}
    done = [0]
    step = torch.optim.AdamW.step  # measure() times on top of this wrapper, so the wait below is warm-up

    def paced(self, *a, **kw):
        result = step(self, *a, **kw)
        done[0] += 1
        if done[0] == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            ready = time.perf_counter()
            barrier(Path(args.barrier), args.index, args.n, args.deadline)
            own.update(warmup_s=round(ready - start, 2), wait_s=round(time.perf_counter() - ready, 2))
        print(f"step {done[0]} at {time.perf_counter() - start:.1f} s", flush=True)
        return result

    torch.optim.AdamW.step = paced
    start = time.perf_counter()
    try:
        row = measure(args.variant, json.loads(args.flags), Path(args.data), Path(args.out), args.steps,
                      args.batch_size, args.device, args.warmup)
    finally:
        torch.optim.AdamW.step = step
    steady = row["steady_seconds_per_step"]
    peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    # reserved: what the caching allocator held of the GPU, the share N processes must fit into
    reserved = {"peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)} if cuda else {}
    atomic_write_text(args.result, json.dumps({
        **row, **own, "steps_per_s": round(1 / steady, 3) if steady else None, "peak_gb": round(peak / 2**30, 2),
        "peak_of": "torch.cuda.max_memory_allocated" if cuda else "max RSS", **reserved, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
