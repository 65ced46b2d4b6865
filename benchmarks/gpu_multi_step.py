#!/usr/bin/env python3
"""Issue 22: the SC-DPO training step of `scdpo train` on 1 and 2 GPUs, under DDP and FSDP.

One launch measures one (mode, strategy, GPU count); benchmarks/gpu_multi.sh makes every launch
and then prints the table (``--summarize``). The step is the trainer's own code: the Accelerator
(``trainer._accelerator``: the ``accelerate launch`` config decides DDP, FSDP or one device), the
model, reference and optimizer (``trainer._build``), the micro-batch passes (``trainer._accumulate``)
and the statistics' all-reduce (``trainer._reduce``), with the sc-dpo loss at its defaults. The
model is a pipeline folder whose UNet is randomly initialised from SD 1.5's config (``--prepare``
writes it); pairs are random latents and 77-token text states from benchmarks/gpu_train_step.py's
``Bench`` (the VAE and text encoder never run, as with ``--cache-latents``). Each rank draws its
own pairs; the per-GPU micro-batch is the same at every GPU count.

pairs/s counts the pairs of all GPUs per second (every pass, the reference too, as
gpu_train_step.py); peak memory is ``torch.cuda.max_memory_allocated()`` of each rank.

    python benchmarks/gpu_multi_step.py --prepare /tmp/sd15-random          # once
    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 \\
        benchmarks/gpu_multi_step.py --model /tmp/sd15-random --mode full --out rows.jsonl
    python benchmarks/gpu_multi_step.py --summarize rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpu_common import exit_now, sync  # noqa: E402 (benchmarks/ is on sys.path)
from gpu_train_step import SHAPES, Bench  # noqa: E402

GOAL = 1.8  # issue 22: 2 GPUs at >= 1.8x one GPU's pairs/s, at equal per-GPU micro-batch


def prepare(folder: Path, tiny: bool) -> None:
    """A pipeline folder: the test suite's tiny VAE, text encoder and scheduler, and a UNet of
    the SD 1.5 shape (--tiny: gpu_train_step.py's tiny UNet), randomly initialised."""
    import shutil

    from diffusers import UNet2DConditionModel

    from scdpo.models import testing

    shape = SHAPES["tiny" if tiny else "sd15"]
    testing.tiny_sd_pipeline(folder)
    shutil.rmtree(folder / "unet")
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu"):
        unet = UNet2DConditionModel(**shape.unet)
    unet.save_pretrained(folder / "unet")
    print(f"wrote {folder} ({sum(p.numel() for p in unet.parameters()) / 1e6:.0f} M UNet parameters)")


def pair_batches(bench: Bench, micro: int, rank: int, world: int):
    """This rank's micro-batches: disjoint pairs across ranks, with the columns sc-dpo reads
    (loser harmful, winner safe; every other pair from a harmful prompt)."""
    k = 0
    while True:
        batch = bench.batch(k * world + rank, micro)
        batch.update(cost_w=[-1.0] * micro, cost_l=[1.0] * micro, harmful=[i % 2 == 0 for i in batch["index"]])
        yield batch
        k += 1


def measure(args) -> dict:
    """One launch: build as the trainer does, warm up, time; the row (main process)."""
    with tempfile.TemporaryDirectory(prefix="gpu-multi-") as tmp:
        return _measure(args, Path(tmp))


def _measure(args, tmp: Path) -> dict:
    from accelerate.utils import DistributedType

    from scdpo.train import trainer
    from scdpo.train.checkpoint import Progress
    from scdpo.train.config import TrainConfig
    from scdpo.train.losses import LossState, get_loss, update_state

    shape = SHAPES["tiny" if args.tiny else "sd15"]
    # the pair pool, made before the process group exists: Bench writes a tiny pipeline folder,
    # which transformers' save_pretrained would write on the main process only once it does
    bench = Bench(shape, torch.device("cpu"), tmp, 0.0, 0.0)
    cfg = TrainConfig(model=args.model, dataset="-", out=str(tmp / "out"), full=args.mode == "full", lora_rank=8,
                      batch_size=args.micro, lr=1e-5 if args.mode == "full" else 1e-4, attention=args.attention,
                      mixed_precision="no" if args.tiny else "auto", device="cpu" if args.tiny else None)
    acc = trainer._accelerator(cfg, Path(cfg.out))
    strategy = {DistributedType.FSDP: "fsdp", DistributedType.NO: "single"}.get(acc.distributed_type, "ddp")
    row = {"mode": args.mode, "strategy": strategy, "gpus": acc.num_processes, "micro": args.micro,
           "global_pairs": args.micro * acc.num_processes, "mixed_precision": acc.mixed_precision,
           "device": torch.cuda.get_device_name() if acc.device.type == "cuda" else "cpu"}
    try:
        model, policy, reference, opt, params, master = trainer._build(cfg, acc)
        bench.latents, bench.context = bench.latents.to(acc.device), bench.context.to(acc.device)
        bench.model = model  # the pool's text states go into the trainer's model's prompt cache
        bench.prime_prompts(model.dtype)
        loader = pair_batches(bench, args.micro, acc.process_index, acc.num_processes)
        loss_fn, state, prog = get_loss(cfg.loss), LossState(lam=cfg.lambda_init), Progress()
        row["pure_bf16"] = trainer.pure_bf16(cfg, acc.mixed_precision, strategy == "fsdp")

        def step() -> dict:  # the body of trainer.train's loop, without logging and checkpoints
            micro_stats = trainer._accumulate(cfg, acc, model, policy, reference, loader, loss_fn, state, prog,
                                              bench.latents)
            if master is not None:
                master.grads_to_master()
            grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
            stats, _, finite = trainer._reduce(acc, micro_stats, grad_norm)  # syncs, as the trainer
            if finite:
                opt.step()
                if master is not None:
                    master.master_to_model()
                update_state(state, stats, cfg)
            opt.zero_grad(set_to_none=True)
            prog.step += 1
            return stats

        if acc.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        losses = [step()["loss"] for _ in range(args.warmup)]
        sync(acc.device)
        acc.wait_for_everyone()
        t0 = time.perf_counter()
        losses += [step()["loss"] for _ in range(args.steps)]
        sync(acc.device)
        dt = (time.perf_counter() - t0) / args.steps
        peak = torch.cuda.max_memory_allocated() / 2**30 if acc.device.type == "cuda" else 0.0
        peaks = acc.gather(torch.tensor([peak], device=acc.device)).tolist()
        row.update(status="ok", s_per_step=round(dt, 4), pairs_per_s=round(row["global_pairs"] / dt, 2),
                   peak_gb_per_gpu=[round(p, 1) for p in peaks], loss_first=round(losses[0], 5),
                   loss_last=round(losses[-1], 5), lam=round(state.lam, 5))
    except torch.OutOfMemoryError:
        row["status"] = "OOM"
    except Exception as exc:  # a strategy that fails on this stack is a result, not the end of the run
        row["status"] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    row["is_main"] = acc.is_main_process
    return row


def summarize(path: Path) -> str:
    """The markdown table of a rows file: each row's scaling against one GPU of the same mode
    (``x 1 GPU``: the single-device run; ``x 1 GPU, same strategy``: FSDP on one GPU for FSDP)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ok = [r for r in rows if r.get("status") == "ok"]

    def base(r, strategy):
        same = [b for b in ok if b["mode"] == r["mode"] and b["gpus"] == 1 and b["strategy"] == strategy
                and b["micro"] == r["micro"]]
        return same[-1]["pairs_per_s"] if same else None

    lines = ["| mode | strategy | GPUs | micro-batch per GPU | pairs/s | x 1 GPU | x 1 GPU, same strategy | "
             f"goal >= {GOAL}x | peak GB per GPU | status |", "|" + "---|" * 10]
    for r in rows:
        one, same = (base(r, "single"), base(r, r["strategy"])) if r.get("status") == "ok" else (None, None)
        x1 = r["pairs_per_s"] / one if one else None
        xs = r["pairs_per_s"] / same if same else None
        best = max([x for x in (x1, xs) if x is not None], default=None)
        goal = "" if r["gpus"] < 2 or best is None else ("met" if best >= GOAL else "NOT met")
        peaks = ", ".join(str(p) for p in r.get("peak_gb_per_gpu", []))
        lines.append(f"| {r['mode']} | {r['strategy']} | {r['gpus']} | {r['micro']} | {r.get('pairs_per_s', '')} | "
                     f"{'' if x1 is None else f'{x1:.2f}'} | {'' if xs is None else f'{xs:.2f}'} | {goal} | {peaks} | "
                     f"{r.get('status', '')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepare", metavar="DIR", help="write the random SD 1.5-shaped pipeline folder and exit")
    p.add_argument("--summarize", metavar="JSONL", help="print the table of a rows file and exit")
    p.add_argument("--model", help="the folder --prepare wrote")
    p.add_argument("--mode", choices=("full", "lora"), default="full")
    p.add_argument("--micro", type=int, default=8, help="pairs per GPU per step (8: docs/performance.md's rows)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=15, help="timed steps")
    p.add_argument("--attention", default="auto", help="scdpo train --attention")
    p.add_argument("--tiny", action="store_true", help="tiny UNet on the CPU (gloo): a dry run of the code path")
    p.add_argument("--out", help="append the row (JSON) to this file")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare), args.tiny)
        return 0
    if args.summarize:
        print(summarize(Path(args.summarize)))
        return 0
    if not args.model:
        p.error("--model (the folder --prepare wrote) is required")
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    row = measure(args)
    if row["status"] != "ok":  # every rank says why (a rank's failure may be where it started)
        print(f"rank {os.environ.get('RANK', 0)}: {row['status']}", file=sys.stderr, flush=True)
    if row.pop("is_main"):
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0 if row["status"] == "ok" else 1


if __name__ == "__main__":
    exit_now(main())
