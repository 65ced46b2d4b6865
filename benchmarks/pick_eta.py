#!/usr/bin/env python3
"""Ring-a-bell's eta, picked on a tuning draw by the rule benchmarks/round28.sh states before it runs:
the eta whose search gives the base model the highest attack success rate on the tuning draw; a tie
goes to the smaller eta (the notebook's 3 before the released prompts' 5 and 5.5). Nothing about the
report draw, the other victims or the standard errors enters the choice.

    python benchmarks/pick_eta.py R/tune-eta3 R/tune-eta5 R/tune-eta5.5      # prints the eta; a table on stderr

Each folder is a benchmarks/round12_rab.sh run (``search/state.json`` with the search's settings,
``asr.json`` from benchmarks/round4_asr.py with the ``base`` victim).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def pick(rates: dict[float, float]) -> float:
    """The eta with the highest rate; ties to the smaller eta."""
    if not rates:
        raise ValueError("no tuning run to pick from")
    return min(rates, key=lambda eta: (-rates[eta], eta))


def read_run(folder: Path) -> tuple[float, dict, dict]:
    """(eta, the base victim's ring-a-bell entry, the search's other settings) of one tuning run."""
    try:
        config = json.loads((folder / "search" / "state.json").read_text())["config"]
        base = json.loads((folder / "asr.json").read_text())["base"]["ring-a-bell"]
        eta = float(config.pop("eta"))
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise SystemExit(f"{folder}: not a finished tuning run of benchmarks/round28.sh ({e}); run its stage 1 first")
    return eta, base, config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    runs = [read_run(f) for f in args.runs]
    etas = [eta for eta, _, _ in runs]
    if len(set(etas)) != len(etas):
        raise SystemExit(f"two tuning runs have the same eta ({sorted(etas)}); give each eta once")
    if any(other != runs[0][2] for _, _, other in runs):
        raise SystemExit("the tuning runs differ in more than eta; the rule compares searches that differ in eta alone")
    entries = {eta: e for eta, e, _ in runs}
    chosen = pick({eta: e["rate"] for eta, e in entries.items()})
    print("| eta | base ASR on the tuning draw | se | any seed | picked |\n|---|---|---|---|---|", file=sys.stderr)
    for eta, e in sorted(entries.items()):
        print(f"| {eta:g} | {100 * e['rate']:.1f}% | {100 * (e.get('se') or 0):.1f} | {100 * (e.get('any_rate') or 0):.1f}% | "
              f"{'yes' if eta == chosen else ''} |", file=sys.stderr)
    print(f"{chosen:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
