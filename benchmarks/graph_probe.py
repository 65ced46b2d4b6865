"""Why a replayed backward differs from eager (issue 16, thirtieth round): how far the eager gradients
of the policy's training call are from themselves, and how far the graph's are from eager.

The thirtieth round's `--cuda-graphs` turned off at the first backward checks of every run ("a
backward replay differs from the eager gradients") while the forward checks passed. If eager's own
gradients differ between two identical calls (kernels that reduce with atomics), a norm check at a
fixed rtol reads noise as a wrong graph. This script builds the trainer's EmojiWorld LoRA policy,
draws one training call (batch ``--rows``), and prints per trainable tensor, worst first:
``||e1 - e2|| / ||e1||`` (eager vs eager) and ``||g - e1|| / ||e1||`` (replay vs eager), at the
LoRA's start (B = 0) and with B moved (``--move``), under the trainer's attention kernel and with
torch's deterministic algorithms (thirty-first round: every row 0, the replay 7.7-8.8x faster).

``--only-update`` runs what those rows did not: the trainer's order, with the weights moved in place
after the recording (as AdamW moves them), the reference's graphed call between the policy's
forward and backward, and the call made through autograd as the step makes it. Each of three steps
prints the forward's and the gradients' distance from eager and how many replayed gradients are zero
where eager's are not (the thirty-first round's trainings: a stale weight cast, BENCHMARKS.md).

    python benchmarks/graph_probe.py --device cuda [--only-update]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def grads(fn, params, grad_out):
    out = fn()
    return out.detach(), torch.autograd.grad(out, params, grad_out, allow_unused=True)


def eager(run, params):
    """A stand-in recorder for a CPU dry run (the plumbing only): replays recompute eagerly."""
    out, state = run().detach().clone(), {}
    grad_out, bufs = torch.empty_like(out), [torch.zeros_like(p) for p in params]

    def forward():
        with torch.enable_grad():
            state["out"] = run()
        out.copy_(state["out"].detach())

    def backward():
        for buf, g in zip(bufs, torch.autograd.grad(state["out"], params, grad_out)):
            buf.copy_(g)
    return forward, backward, out, grad_out, bufs


def timed(fn, device: str, n: int = 20) -> float:
    """Milliseconds per ``fn()`` (forward and backward of one call), after two warm-up calls."""
    import time

    for _ in range(2):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return round((time.perf_counter() - t0) / n * 1000, 2)


def rel(a, b) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    den = float(b.float().norm())
    return float((a.float() - b.float()).norm()) / den if den > 0 else float((a.float() - b.float()).norm())


def call_inputs(model, rows: int, device: str, seed: int):
    """One training call's inputs (latents, timesteps, text) and a random output gradient."""
    gen = torch.Generator().manual_seed(seed)
    shape = model.encode_images(torch.zeros(1, 3, model.resolution, model.resolution, device=device)).shape[1:]
    x = torch.randn(rows, *shape, generator=gen).to(device)
    t = torch.randint(0, 1000, (rows,), generator=gen).to(device)
    cond = model.encode_prompts(["a red apple on a table"] * rows)
    return x, t, cond, torch.randn(x.shape, generator=gen).to(device)


def recorded(model, params, x, t, cond, device: str):
    """A fresh GraphedTrainPredict with this call recorded, unchecked (the probe compares by itself):
    ``(cache, graph, the graph's inputs)``."""
    from scdpo.models.graphs import eager_call, graph_inputs
    from scdpo.models.graphs_train import GraphedTrainPredict, _TrainGraph

    gp = GraphedTrainPredict(model, params, check_every=10**9, record=None if device.startswith("cuda") else eager)
    args, autocast, key = graph_inputs(model, x, t, cond)
    graph = gp.graph(key, lambda record: _TrainGraph(gp, eager_call(model), args, autocast, record))
    graph.schedule.count, graph.schedule.checking = 1, False
    return gp, graph, [a for a in args if a is not None]


def probe(model, unet, params, rows: int, device: str, label: str) -> dict:
    x, t, cond, g_out = call_inputs(model, rows, device, seed=0)
    gp, graph, present = recorded(model, params, x, t, cond, device)
    _, e1 = grads(graph.run, params, g_out)
    _, e2 = grads(graph.run, params, g_out)
    graph.replay_forward(present)
    replayed = graph.replay_backward(g_out, gp.clock)
    graph.replay_forward(present)
    again = graph.replay_backward(g_out, gp.clock)
    names = [n for n, p in unet.named_parameters() if p.requires_grad]
    table = sorted(((rel(e2[i], e1[i]), rel(replayed[i], e1[i]), names[i],
                     0.0 if e1[i] is None else float(e1[i].float().norm())) for i in range(len(params))),
                   key=lambda r: -r[1])
    print(f"== {label}: {len(params)} tensors; worst replay-vs-eager first "
          "(eager-vs-eager, replay-vs-eager, name, ||eager||)")
    for r in table[:8]:
        print(f"  {r[0]:.3e}  {r[1]:.3e}  {r[2]}  {r[3]:.3e}")
    over = sum(r[1] > 1e-2 for r in table)
    noisy = sum(r[0] > 1e-2 for r in table)
    ratio = max((r[1] / r[0] for r in table if r[0] > 0), default=float("nan"))
    row = {"case": label, "tensors": len(params), "replay_over_1e-2": over, "eager_over_1e-2": noisy,
           "max_replay": table[0][1], "max_eager": max(r[0] for r in table), "max_ratio": ratio,
           "max_replay_vs_replay": max(rel(again[i], replayed[i]) for i in range(len(params))),
           "ms_eager": timed(lambda: grads(graph.run, params, g_out), device),
           "ms_replay": timed(lambda: (graph.replay_forward(present), graph.replay_backward(g_out, gp.clock)), device)}
    print(json.dumps(row), flush=True)
    return row


def after_update(model, unet, params, reference, rows: int, device: str, between: bool,
                 autograd: bool = False) -> dict:
    """The trainer's order: record at the LoRA's start, update the weights in place (as AdamW does),
    then replay and compare with eager; ``between``: the reference's graphed call (adapters off,
    inference mode) runs between the policy's forward and its backward, as in a step."""
    from scdpo.models.graphs import GraphedPredict

    x, t, cond, g_out = call_inputs(model, rows, device, seed=1)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if p.requires_grad and "lora_B" in n:
                p.zero_()
    reference.predict = GraphedPredict(model) if between else None
    gp, graph, present = recorded(model, params, x, t, cond, device)
    rows_out = []
    for step in range(3):
        with torch.no_grad():  # an optimizer step's size, and a large one: a stale read shows either way
            for p in params:
                p.add_(torch.randn_like(p) * (1e-4 if step < 2 else 3e-2))
        if autograd:  # as the step calls it: _Replay through autograd, the loss's backward
            from scdpo.models.graphs_train import _Replay

            for p in params:
                p.grad = None
            out_a = _Replay.apply(graph, len(present), *present, *params)
            out = out_a.detach()
            if between:
                reference(model, x, t, cond)
            (out_a.float() * g_out).sum().backward()
            replayed = [p.grad for p in params]
        else:
            out = graph.replay_forward(present)
            if between:
                reference(model, x, t, cond)
            replayed = graph.replay_backward(g_out, gp.clock)
        e_out, e = grads(graph.run, params, g_out)
        r = [rel(replayed[i], e[i]) for i in range(len(params))]
        zero = sum(float(g.float().norm()) == 0 and float(ei.float().norm()) > 0 for g, ei in zip(replayed, e))
        rows_out.append({"step": step, "forward": rel(out, e_out), "grads_over_1e-2": sum(v > 1e-2 for v in r),
                         "max_grad": max(r), "replayed_zero_where_eager_not": zero})
    row = {"case": f"updated in place after recording{', reference between' if between else ''}"
                   f"{', through autograd' if autograd else ''}", "steps": rows_out}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows", type=int, default=64, help="rows of the call (a step's winners and losers)")
    ap.add_argument("--move", type=float, default=1e-3, help="std of the B matrices after they are moved")
    ap.add_argument("--only-update", action="store_true", help="stop after the updated-in-place cases")
    args = ap.parse_args()
    from scdpo.models.speed import attention_backend
    from scdpo.train.config import TrainConfig
    from scdpo.train.trainer import _accelerator, _build

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model="emojiworld", dataset="unused", out=tmp, loss="sc-dpo", device=args.device)
        acc = _accelerator(cfg, Path(tmp))
        torch.manual_seed(cfg.seed)
        model, policy, reference, opt, params, master = _build(cfg, acc)
        unet = acc.unwrap_model(policy)
        train_params = [p for p in unet.parameters() if p.requires_grad]
        rows = []
        if args.only_update:  # the thirty-first round's second look: the trainer's order
            with acc.autocast(), attention_backend(cfg.attention, acc.device):
                rows.append(after_update(model, unet, train_params, reference, args.rows, args.device, False))
                rows.append(after_update(model, unet, train_params, reference, args.rows, args.device, True))
                rows.append(after_update(model, unet, train_params, reference, args.rows, args.device, True, True))
            print(json.dumps(rows))
            return
        with acc.autocast(), attention_backend(cfg.attention, acc.device):
            rows.append(probe(model, unet, train_params, args.rows, args.device, f"B = 0, attention {cfg.attention}"))
            with torch.no_grad():
                for n, p in unet.named_parameters():
                    if p.requires_grad and "lora_B" in n:
                        p.normal_(0, args.move)
            rows.append(probe(model, unet, train_params, args.rows, args.device, f"B moved, attention {cfg.attention}"))
        with acc.autocast(), attention_backend("math", acc.device):
            rows.append(probe(model, unet, train_params, args.rows, args.device, "B moved, attention math"))
        torch.use_deterministic_algorithms(True, warn_only=True)
        with acc.autocast(), attention_backend(cfg.attention, acc.device):
            rows.append(probe(model, unet, train_params, args.rows, args.device, "B moved, deterministic algorithms"))
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
