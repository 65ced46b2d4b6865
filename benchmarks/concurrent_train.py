"""Aggregate training throughput of N EmojiWorld trainings at once on one GPU, eager against
regionally compiled (issue 16; docs/performance.md, "Concurrent trainings"). The science rounds run
6-12 trainings at once as separate processes; whether they should turn ``--compile`` on depends on
the steps/s of all of them together, and on how long N compilations at once take, not on one
compiled training alone.

Each row starts N copies of the recipe's "every step" training (benchmarks/anchor_cost.py, the
workload of its compiled row; synthetic pairs, cached latents) as separate processes
(benchmarks/concurrent_worker.py), OMP_NUM_THREADS=1 each as the rounds run them, and waits on their
PIDs. Every process stops at the end of its W-th optimizer step until the whole row has got there,
so the timed steps run side by side. Per row: each process's warm steps/s (the steps after the
first W), their sum, N times the slowest, each one's warm-up seconds (start of training to the end
of step W), its wait for the row, the loss of its last step (equal data and seeds: the variants'
losses should agree to rounding) and its peak memory. Rows are VARIANT x N; the variants are
``eager``, ``graphs`` (``TrainConfig.cuda_graphs``: the step's UNet calls replayed from CUDA graphs),
``compile`` (``TrainConfig.compile``, torch's default mode) and ``compile-MODE`` for the other
``TrainConfig.compile_mode`` values (``compile-reduce-overhead``: CUDA graphs through cudagraph
trees, never tried in the trainer). ``--workload plain`` trains the step without the safe anchor,
as the pipeline's trainings do (``benchmarks/emojiworld_alignment.sh``), instead of the recipe's.

    python benchmarks/concurrent_train.py --device cuda --rows eager:1 eager:6 eager:12 compile:1 --out OUT
    python benchmarks/concurrent_train.py --device cuda --rows compile:12 compile:6 --out OUT
    python benchmarks/concurrent_train.py --device cpu --n 1 2 --variants eager --steps 3 --warmup 1 \
        --batch-size 2 --out /tmp/ct                                           # CPU dry run

Plan for the H200 (ESTIMATED, nothing here measured yet; 60 steps, warm-up 10, batch 32): eager x1
about 45 s (0.46-0.72 s a warm step alone), x6 about 80 s and x12 about 100 s (the rounds' 1.0-1.4
steps/s each, plus the set-up of N processes at once), so the eager rows and compile x1 (197 s of
warm-up alone, then 0.27 s a step: about 4 minutes) fill one 10-minute call. compile x12 is the
unknown: 12 compilations share 16 cores, so its warm-up may well pass the call's budget; it gets a
call of its own, with compile x6 after it only if 240 s are left.

Each row stops at its deadline (``--row-timeout``, and never past ``--budget`` seconds from the
script's start: a device call lasts 10 minutes); a row is not started with less than 60 s (eager)
or 240 s (compiled) left, and is then reported as skipped. Processes of a row that times out or
fails are stopped (their process groups, by PID), and the row is reported with each log's last line
(``step K at T s`` says how far a process got). ``--cache row`` (the default) gives each row a
fresh inductor cache, as a round on a fresh machine would meet; ``--cache shared`` shares one under
the temp folder across rows and calls on the same machine (a pre-warmed cache: run compile:1
first). Results in --out: ``rows.jsonl`` (appended, a row a line, each process in it),
``table.md`` (from every row of rows.jsonl), ``logs/`` (each process's log); every file written
under a temporary name, then renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anchor_cost import EVERY_STEP, synthetic_pairs

from scdpo.models.speed import COMPILE_MODES
from scdpo.utils.io import atomic_write_text

HERE = Path(__file__).resolve().parent
BAR = re.compile(r"\d+%\|")  # tqdm's "desc:  33%|###  | 1/3 [...]"
VARIANTS = {"eager": {"cuda_graphs": False}, "graphs": {"cuda_graphs": True}, "compile": {"compile": True},
            **{f"compile-{m}": {"compile": True, "compile_mode": m} for m in COMPILE_MODES if m != "default"}}
# what each process trains: the recipe's anchored step ("every-step"), or the pipeline's plain one
# (benchmarks/emojiworld_alignment.sh trains without the anchor)
WORKLOADS = {"every-step": EVERY_STEP, "plain": {}}
# seconds of the budget a row needs to be worth starting: one compiled training alone took 197 s
# of warm-up on the H200 (docs/performance.md)
MIN_LEFT_EAGER, MIN_LEFT_COMPILED = 60, 240


def rows_to_run(args) -> list[tuple[str, int]]:
    """(variant, N) in order: ``--rows`` as given, else every variant by every N."""
    if not args.rows:
        return [(v, n) for v in args.variants for n in args.n]
    rows = []
    for token in args.rows:
        variant, _, n = token.rpartition(":")
        if variant not in VARIANTS or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--rows {token!r}: write VARIANT:N, VARIANT one of {', '.join(VARIANTS)}")
        rows.append((variant, int(n)))
    return rows


def last_line(path: Path) -> str:
    """The log's last non-empty line that is not a progress bar (a bar closing as the process dies
    writes itself after the traceback)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip() and not BAR.search(ln)]
    return lines[-1][:300] if lines else "(empty log)"


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop the row's processes still running, each with its own process group (compile workers)."""
    running = [p for p in procs if p.poll() is None]
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for p in running:
            try:
                os.killpg(p.pid, sig)  # the group this script started the process in
            except ProcessLookupError:
                pass
        end = time.time() + grace
        while time.time() < end and any(p.poll() is None for p in running):
            time.sleep(0.2)


def wait_row(procs: list[subprocess.Popen], deadline: float) -> str:
    """Wait on the row's PIDs: "ok" when all exit cleanly; "failed" as soon as one exits with an
    error, "timeout" at the deadline (the others are then stopped: the row is lost either way)."""
    try:
        while True:
            codes = [p.poll() for p in procs]
            if all(c == 0 for c in codes):
                return "ok"
            if any(c not in (None, 0) for c in codes):
                return "failed"
            if time.time() > deadline:
                return "timeout"
            time.sleep(0.5)
    finally:
        stop(procs)


def run_row(variant: str, n: int, args, data: Path, work: Path, deadline: float) -> dict:
    slug = f"{variant}-x{n}"
    folder = work / slug
    (folder / "ready").mkdir(parents=True)
    # "shared" outlives the script, so a later call on the same machine finds what this one compiled
    cache = Path(tempfile.gettempdir()) / "concurrent_train-inductor" if args.cache == "shared" else folder / "inductor"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TORCHINDUCTOR_CACHE_DIR=str(cache),
               TRITON_CACHE_DIR=str(cache / "triton"))
    flags = {**WORKLOADS[args.workload], **VARIANTS[variant]}
    procs, logs = [], [folder / f"{i}.log" for i in range(n)]
    t0 = time.time()
    for i in range(n):
        cmd = [sys.executable, str(HERE / "concurrent_worker.py"), "--variant", variant, "--flags", json.dumps(flags),
               "--data", str(data), "--out", str(folder / f"train-{i}"), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--device", args.device,
               "--index", str(i), "--n", str(n), "--barrier", str(folder / "ready"), "--deadline", str(deadline),
               "--result", str(folder / f"{i}.json")]
        with open(logs[i], "w") as log:  # the child holds its own copy of the descriptor
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
    status = wait_row(procs, deadline)
    wall = round(time.time() - t0, 1)
    results = []
    for i, (p, log) in enumerate(zip(procs, logs)):
        result = folder / f"{i}.json"
        if p.returncode == 0 and result.exists():
            results.append({"status": "ok", **json.loads(result.read_text())})
        else:
            results.append({"status": "failed" if p.returncode not in (None, 0, -15, -9) else "stopped",
                            "returncode": p.returncode, "last_line": last_line(log)})
        atomic_write_text(Path(args.out) / "logs" / f"{slug}-{i}.log", log.read_text(errors="replace"))
    return summarise(variant, n, status, wall, results, flags, args)


def summarise(variant: str, n: int, status: str, wall: float, procs: list[dict], flags: dict, args) -> dict:
    rates = [p["steps_per_s"] for p in procs if p["status"] == "ok" and p.get("steps_per_s")]
    whole = status == "ok" and len(rates) == n
    return {"row": f"{variant} x{n}", "variant": variant, "n": n, "status": status, "wall_s": wall,
            "aggregate_steps_per_s": round(sum(rates), 3) if whole else None,
            "aggregate_slowest_steps_per_s": round(n * min(rates), 3) if whole else None,
            "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size, "device": args.device,
            "cache": args.cache, "flags": flags, "procs": procs}


def span(values: list, digits: int = 2) -> str:
    """min-max of the numbers given (one number when they agree), '' for none."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    lo, hi = round(min(values), digits), round(max(values), digits)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def table(rows: list[dict]) -> str:
    lines = ["| row | status | warm steps/s, each | aggregate steps/s (sum) | N x slowest | warm-up s | wait s "
             "| last loss | peak GB, each | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = [p for p in r["procs"] if p["status"] == "ok"]
        status = r["status"]
        if status != "ok":
            # the process that failed first names the cause; the ones stopped after it do not
            bad = next((p for p in r["procs"] if p["status"] == "failed"),
                       next((p for p in r["procs"] if p["status"] != "ok"), None))
            status += f": {bad['last_line']}" if bad else ""
        status = status.replace("|", "/")
        lines.append(f"| {r['row']} | {status} | {span([p['steps_per_s'] for p in ok], 3)} "
                     f"| {r['aggregate_steps_per_s'] or ''} | {r['aggregate_slowest_steps_per_s'] or ''} "
                     f"| {span([p.get('warmup_s') for p in ok], 1)} | {span([p.get('wait_s') for p in ok], 1)} "
                     f"| {span([p.get('loss') for p in ok], 5)} | {span([p['peak_gb'] for p in ok])} "
                     f"| {r['wall_s'] if r['wall_s'] is not None else ''} |")
    first = rows[0] if rows else {}
    return (f"Settings: {first.get('steps')} steps, warm-up {first.get('warmup')}, batch {first.get('batch_size')}, "
            f"device {first.get('device')}, cache {first.get('cache')} (benchmarks/concurrent_train.py)\n\n"
            + "\n".join(lines) + "\n")


def record(out: Path, row: dict) -> None:
    """Append the row to rows.jsonl and rewrite table.md from all of them (each atomically)."""
    path = out / "rows.jsonl"
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + json.dumps(row) + "\n")
    atomic_write_text(out / "table.md", table([json.loads(ln) for ln in (old + json.dumps(row)).splitlines() if ln]))


def skipped(variant: str, n: int, left: float, args) -> dict:
    return {**summarise(variant, n, "skipped", None, [], {**WORKLOADS[args.workload], **VARIANTS[variant]}, args),
            "reason": f"{left:.0f} s of the budget left"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 6, 12], help="processes at once, a row each")
    ap.add_argument("--variants", nargs="+", default=["eager", "compile"], choices=list(VARIANTS))
    ap.add_argument("--rows", nargs="+", help="only these rows, in this order, as VARIANT:N (replaces --n/--variants)")
    ap.add_argument("--workload", choices=list(WORKLOADS), default="every-step",
                    help="the anchored recipe's step, or the plain one of the pipeline's trainings")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10, help="W: steps before the timed ones (and the row's barrier)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cache", choices=("row", "shared"), default="row",
                    help="inductor cache: fresh for each row, or one shared by rows and calls")
    ap.add_argument("--row-timeout", type=float, default=540, help="seconds a row may take at most")
    ap.add_argument("--budget", type=float, default=570, help="seconds the whole script may take")
    ap.add_argument("--out", required=True, help="folder for rows.jsonl, table.md and logs/")
    args = ap.parse_args(argv)
    start = time.time()
    if not 1 <= args.warmup < args.steps:
        raise SystemExit(f"--warmup {args.warmup} must be at least 1 and below --steps {args.steps}")
    rows = rows_to_run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # a SIGTERM (the device call's end) unwinds through wait_row's finally, which stops the row
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="concurrent_train-") as tmp:
        data = synthetic_pairs(Path(tmp) / "pairs.parquet", 64)
        for variant, n in rows:
            left = start + args.budget - time.time()
            if left < (MIN_LEFT_COMPILED if variant.startswith("compile") else MIN_LEFT_EAGER):
                row = skipped(variant, n, left, args)
            else:  # 20 s before the budget's end: time to stop the processes and write
                deadline = min(time.time() + args.row_timeout, start + args.budget - 20)
                row = run_row(variant, n, args, data, Path(tmp), deadline)
            record(out, row)
            print(json.dumps({k: v for k, v in row.items() if k != "procs"}), flush=True)
    print((out / "table.md").read_text(), end="")


if __name__ == "__main__":
    main()
