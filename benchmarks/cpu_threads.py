"""Wall time of `scdpo generate` (8 EmojiWorld images, the shipped base model, default sampler) with
1 and 2 CPU threads, on the machine as it is and beside busy processes (pure-Python loops, one core
each): what `--threads`' default is chosen from (BENCHMARKS.md, "CPU threads"). ``--threads default``
runs without the flag, on the default (the idle cores, read from the load average as the command
starts); its row says how many threads it took.

    python benchmarks/cpu_threads.py --threads 1 2 default --busy 0 1 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def timed_generate(threads: str, n: int, out: str) -> tuple[float, str]:
    """Seconds of one `scdpo generate`, and the threads it ran on (the default's choice, for "default")."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}  # --threads decides
    flag = [] if threads == "default" else ["--threads", threads]
    probe = "import os, sys; sys.argv = ['scdpo', *sys.argv[1:]]; from scdpo.cli import main; code = main(); " \
            "print(os.environ['OMP_NUM_THREADS'], file=sys.stderr); sys.exit(code)"
    cmd = [sys.executable, "-c", probe, *flag, "generate", "--model", "emojiworld",
           "--suite", "eval-clean", "--limit", str(n), "--out", out]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - t0, done.stderr.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", nargs="+", default=["1", "2", "default"], help="thread counts, or 'default'")
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="busy processes beside the run")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--settle", type=float, default=90.0,
                    help="seconds to wait after starting the busy processes: the 1-minute load average, which the "
                         "default reads, takes about a minute to count them")
    args = ap.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print("| busy processes | --threads | threads used | seconds | load average (1 min) after |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for busy in args.busy:
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                if busy:
                    time.sleep(args.settle)
                for threads in args.threads:
                    for r in range(args.repeats):
                        s, used = timed_generate(threads, args.images, f"{tmp}/{busy}-{threads}-{r}")
                        print(f"| {busy} | {threads} | {used} | {s:.1f} | {os.getloadavg()[0]:.2f} |", flush=True)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()


if __name__ == "__main__":
    main()
