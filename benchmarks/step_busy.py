"""How busy the GPU is during an EmojiWorld training step (issue 16): the device time of a window of
optimizer steps (every kernel, copy and fill torch's profiler sees, CUDA-graph replays included),
per step, against the wall time per step of the steps after that window (the profiler slows the
host down, so its own window's wall time is not used).

With the step's UNet calls replayed from CUDA graphs, a step runs 5.5-6.1x eager's (BENCHMARKS.md,
"Thirty-second round"), and what is left may be the host: the loss's small ops, the optimizer and
one read of the step's statistics a step (``trainer._reduce``), which holds the next step back
until the GPU has finished. The busy fraction says how much any host-side lever (no sync, more of the
step graphed) could still buy: at most wall / device time.

    python benchmarks/step_busy.py --device cuda --batch-size 32 --steps 80 --warmup 20 --window 20
    python benchmarks/step_busy.py --device cpu --batch-size 2 --steps 4 --warmup 1 --window 2   # dry run

On the CPU the "device" time is the profiler's self CPU time of the window (a dry run of the
plumbing, not a measurement). Prints one JSON line a row, then a table; "device events / step"
counts the kernels, copies and fills the profiler saw (a graph's replayed kernels should be among
them: if a graphed row shows only a handful, its replays were not traced and its device time is low).
``--top N`` lists each row's N costliest device events a step after the table.

Row ``together`` is the pipeline's six methods in one process (`scdpo train --together`, CUDA graphs on; its
step is one optimizer step of all six, so compare its times with six of the other rows'). ``--host-top N``
profiles the host too: cProfile over the ``--window`` steps after the device's window, then each row's N
Python functions with the most own time a step (what the host does while the GPU waits; cProfile slows the
host, so those steps' wall time is left out of the timing too); on a GPU the same window counts the
operations that made the host wait for the GPU (``torch.cuda.set_sync_debug_mode``: ``host_syncs_per_step``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

from anchor_cost import EVERY_STEP, measure, synthetic_pairs

ROWS = {"eager": dict(cuda_graphs=False), "graphs": dict(cuda_graphs=True),
        "anchored, graphs": dict(EVERY_STEP, cuda_graphs=True), "together": dict(cuda_graphs=True)}


def measure_together(name: str, flags: dict, data: Path, out: Path, steps: int, batch: int, device: str,
                     warmup: int = 0) -> dict:
    """``measure``'s row for the six methods of benchmarks/together_train.py in one process."""
    import dataclasses

    from together_train import configs

    from scdpo.train.together import train_together

    cfgs = [dataclasses.replace(c, **flags) for c in configs(data, out / "together", steps, batch, device)]
    metrics = train_together(cfgs)
    return {"run": f"{name} ({len(cfgs)} runs)", "unet_calls_per_step": None, "loss": metrics[0]["loss"]}


def host_top(prof, n: int, window: int) -> list[dict]:
    """The ``n`` Python functions (and builtins) with the most own time in a cProfile window, a step each."""
    import pstats

    stats = pstats.Stats(prof).stats
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return [{"name": f"{Path(f).name}:{line}({fn})"[:160], "ms_per_step": round(tt * 1e3 / window, 3),
             "calls_per_step": round(nc / window, 1)} for (f, line, fn), (_, nc, tt, _, _) in rows]


def top_events(prof, cuda: bool, n: int, window: int) -> list[dict]:
    """The ``n`` device events (kernels, copies, fills; on the CPU: ops) with the most time in the window,
    each with its time and count a step: what the step's device time is made of, and so which kernels a
    lever (fusion, fewer casts) would have to remove."""
    from torch.autograd import DeviceType

    events = [e for e in prof.key_averages() if not e.is_user_annotation
              and (e.device_type == DeviceType.CUDA if cuda else True)]
    key = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    return [{"name": e.key[:160], "ms_per_step": round(key(e) / 1e3 / window, 3),
             "count_per_step": round(e.count / window, 1)} for e in sorted(events, key=key, reverse=True)[:n]]


def device_time(prof, cuda: bool) -> tuple[float, int]:
    """The window's device time in seconds and its number of device events, summed as the footer of
    ``prof.key_averages().table()`` sums "Self CUDA time total": device-side events only (kernels,
    copies, fills; a CPU op's self device time repeats its kernels'), no user annotations (the
    optimizer's step range). On the CPU: the self CPU time of every op."""
    from torch.autograd import DeviceType

    events = prof.key_averages()
    if not cuda:
        return sum(e.self_cpu_time_total for e in events) / 1e6, sum(e.count for e in events)
    device = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    return sum(e.self_device_time_total for e in device) / 1e6, sum(e.count for e in device)


def profiled(name: str, flags: dict, data: Path, tmp: Path, args) -> dict:
    """``measure`` of one row, the profiler on for ``args.window`` optimizer steps after ``args.warmup``."""
    import cProfile

    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = args.device.startswith("cuda")
    host_window = args.window if args.host_top else 0  # the cProfile window after the device's
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    state = {"prof": None, "seconds": None, "events": None, "top": None, "host": None, "host_top": None}
    stamps: list[float] = []  # after each optimizer step, the GPU synchronised
    step = torch.optim.AdamW.step  # measure() wraps this one, so it runs inside measure's timing

    def windowed(self, *a, **kw):
        out = step(self, *a, **kw)
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if len(stamps) == args.warmup:
            state["prof"] = profile(activities=activities)
            state["prof"].__enter__()
        elif len(stamps) == args.warmup + args.window and state["prof"] is not None:
            prof, state["prof"] = state["prof"], None
            prof.__exit__(None, None, None)
            state["seconds"], state["events"] = device_time(prof, cuda)
            state["top"] = top_events(prof, cuda, args.top, args.window) if args.top else None
            stamps[-1] = time.perf_counter()  # stopping and summing up is not the next step's time
            if host_window:
                state["host"] = cProfile.Profile()
                state["host"].enable()
                if cuda:  # and count the operations that make the host wait for the GPU
                    state["syncs"] = warnings.catch_warnings(record=True)
                    state["caught"] = state["syncs"].__enter__()
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
        elif host_window and len(stamps) == args.warmup + args.window + host_window and state["host"] is not None:
            state["host"].disable()
            state["host_top"] = host_top(state["host"], args.host_top, host_window)
            state["host"] = None
            if state.get("syncs") is not None:
                torch.cuda.set_sync_debug_mode(0)
                state["syncs"].__exit__(None, None, None)
                state["syncs"] = None
                state["syncs_per_step"] = round(sum("synchronizing" in str(w.message) for w in state["caught"])
                                                / host_window, 1)
            stamps[-1] = time.perf_counter()
        return out
    torch.optim.AdamW.step = windowed
    try:
        row = (measure_together if name == "together" else measure)(name, flags, data, tmp, args.steps,
                                                                     args.batch_size, args.device, args.warmup)
    finally:
        torch.optim.AdamW.step = step
        if state["prof"] is not None:  # the run ended inside the window: stop the profiler for the next row
            state["prof"].__exit__(None, None, None)
        if state["host"] is not None:
            state["host"].disable()
        if state.get("syncs") is not None:
            torch.cuda.set_sync_debug_mode(0)
            state["syncs"].__exit__(None, None, None)
    busy = None if state["seconds"] is None else state["seconds"] / args.window
    end = args.warmup + args.window + host_window  # the unprofiled steps after the windows, and the one before them
    after = stamps[end:]
    wall = (after[-1] - stamps[end - 1]) / len(after) if after else None
    # measure()'s own seconds include the profiled window: left out
    return {"run": row["run"], "unet_calls_per_step": row["unet_calls_per_step"], "loss": row["loss"],
            "seconds_per_step_after_window": None if wall is None else round(wall, 4),
            "device_seconds_per_step": None if busy is None else round(busy, 4),
            "device_events_per_step": None if state["events"] is None else round(state["events"] / args.window, 1),
            "busy_fraction": None if busy is None or not wall else round(busy / wall, 3),
            **({"top": state["top"]} if state["top"] else {}),
            **({"host_top": state["host_top"]} if state["host_top"] else {}),
            **({"host_syncs_per_step": state["syncs_per_step"]} if "syncs_per_step" in state else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=20, help="steps before the profiled window (and the steady timing)")
    ap.add_argument("--window", type=int, default=20, help="optimizer steps profiled")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--top", type=int, default=0, metavar="N",
                    help="also list each row's N costliest device events (kernels) a step, after the table")
    ap.add_argument("--host-top", type=int, default=0, metavar="N",
                    help="also profile the host (cProfile) for --window steps after the device's window and list "
                         "each row's N Python functions with the most own time a step")
    args = ap.parse_args()
    if args.top < 0 or args.host_top < 0:
        raise SystemExit(f"--top {args.top}: give a number of events >= 0 (0 lists none)")
    windows = args.window * (2 if args.host_top else 1)
    if not 1 <= args.warmup or args.warmup + windows >= args.steps:
        raise SystemExit(f"--warmup {args.warmup} + --window {args.window} (twice with --host-top) must stay below "
                         f"--steps {args.steps}, with --warmup at least 1: steps are needed after the windows")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_pairs(Path(tmp) / "pairs.parquet", 64)
        for name in args.rows:
            rows.append(profiled(name, ROWS[name], data, Path(tmp), args))
            print(json.dumps(rows[-1]), flush=True)
    print("| row | wall s / step (after the window) | device s / step (in it) | device events / step | busy "
          "| host syncs / step | last loss |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['seconds_per_step_after_window']} | {r['device_seconds_per_step']} "
              f"| {r['device_events_per_step']} | {r['busy_fraction']} | {r.get('host_syncs_per_step', '')} "
              f"| {r['loss']:.6g} |")
    for r in rows:
        if r.get("top"):
            print(f"\n{r['run']}: the {len(r['top'])} costliest device events\n\n| event | ms / step | count / step |"
                  "\n|---|---|---|")
            print("\n".join(f"| `{e['name']}` | {e['ms_per_step']} | {e['count_per_step']} |" for e in r["top"]))
        if r.get("host_top"):
            print(f"\n{r['run']}: the host's {len(r['host_top'])} costliest functions (own time, under cProfile)"
                  "\n\n| function | ms / step | calls / step |\n|---|---|---|")
            print("\n".join(f"| `{e['name']}` | {e['ms_per_step']} | {e['calls_per_step']} |" for e in r["host_top"]))


if __name__ == "__main__":
    main()
