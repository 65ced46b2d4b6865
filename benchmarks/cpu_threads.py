"""Wall time of `scdpo generate` (8 EmojiWorld images, the shipped base model, default sampler) with
1 and 2 CPU threads, on the machine as it is and beside busy processes (pure-Python loops, one core
each): what `--threads`' default is chosen from (BENCHMARKS.md, "CPU threads").

    python benchmarks/cpu_threads.py --threads 1 2 --busy 0 1 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def timed_generate(threads: int, n: int, out: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}  # --threads decides
    cmd = [sys.executable, "-m", "scdpo.cli", "--threads", str(threads), "generate", "--model", "emojiworld",
           "--suite", "eval-clean", "--limit", str(n), "--out", out]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="busy processes beside the run")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print("| busy processes | threads | seconds | load average (1 min) after |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for busy in args.busy:
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                for threads in args.threads:
                    for r in range(args.repeats):
                        s = timed_generate(threads, args.images, f"{tmp}/{busy}-{threads}-{r}")
                        print(f"| {busy} | {threads} | {s:.1f} | {os.getloadavg()[0]:.2f} |", flush=True)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()


if __name__ == "__main__":
    main()
