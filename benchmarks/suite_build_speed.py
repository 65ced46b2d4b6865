#!/usr/bin/env python3
"""Building the four default evaluation suites' prompt records (`scdpo eval`'s ``collect_suites``, 1,610
records; `scdpo data build` and `scdpo attack` build theirs the same way) at another commit and now, each in
a fresh process as a command pays it, alternated ``--repeats`` times, and whether both built the same
records (a digest of every prompt, safe prompt and scene).

    OMP_NUM_THREADS=1 python benchmarks/suite_build_speed.py --before f59f3fb --repeats 5

The earlier commit's ``src/`` is exported with ``git archive`` into a temporary folder and put first on
``PYTHONPATH`` of its processes (this checkout's installed packages serve both).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import hashlib, json, time
t0 = time.perf_counter()
from scdpo.eval.config import EvalConfig
from scdpo.eval.run import collect_suites
t1 = time.perf_counter()
suites = collect_suites(EvalConfig(model="emojiworld", out="unused"))
t2 = time.perf_counter()
again = time.perf_counter(); collect_suites(EvalConfig(model="emojiworld", out="unused")); t3 = time.perf_counter()
h = hashlib.sha256()
for name, records in suites.items():
    for r in records:
        h.update(json.dumps([name, r.prompt, r.safe_prompt, r.meta], sort_keys=True, default=str).encode())
print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "again_s": t3 - again,
                  "records": sum(map(len, suites.values())), "digest": h.hexdigest()[:16]}))
"""


def run_once(src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the commit to compare with (e.g. f59f3fb)")
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes of each, alternated")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        sources = {args.before: Path(tmp) / "src", "now": ROOT / "src"}
        rows = {name: [] for name in sources}
        for _ in range(args.repeats):
            for name, src in sources.items():
                rows[name].append(run_once(src))
    print("| code | first build s (median, min-max) | a second build in the same process s | records | digest |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        first = [r["first_s"] for r in runs]
        print(f"| {name} | {statistics.median(first):.2f} ({min(first):.2f}-{max(first):.2f}) | "
              f"{statistics.median(r['again_s'] for r in runs):.2f} | {runs[0]['records']} | {runs[0]['digest']} |")
    same = len({r["digest"] for runs in rows.values() for r in runs}) == 1
    print(f"\nthe same records: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
