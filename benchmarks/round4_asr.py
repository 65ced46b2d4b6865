#!/usr/bin/env python3
"""The attack success rates of benchmarks/round4_baselines_attacks.sh as one table: every
``R/attack-VICTIM-ATTACK/metrics.json`` (written by `scdpo attack ... --evaluate`) -> ``R/asr.json``
(``{victim: {attack: {rate, se, n, any_rate}}}``) and a markdown table on stdout.

    python benchmarks/round4_asr.py runs/round4
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def collect(root: Path) -> dict[str, dict[str, dict]]:
    table: dict[str, dict[str, dict]] = {}
    for f in sorted(root.glob("attack-*/metrics.json")):
        m = json.loads(f.read_text())
        attack = m["attack"]
        victim = f.parent.name.removeprefix("attack-").removesuffix(f"-{attack}")
        asr = m["attack_success_rate"][attack]
        table.setdefault(victim, {})[attack] = {k: asr.get(k) for k in ("rate", "se", "n", "any_rate")}
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    root = ap.parse_args().root
    table = collect(root)
    tmp = root / "asr.json.tmp"  # written whole, then renamed: the packer never reads half a file
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, root / "asr.json")
    attacks = sorted({a for row in table.values() for a in row})
    print("| victim | " + " | ".join(f"{a} ASR" for a in attacks) + " |\n|" + "---|" * (len(attacks) + 1))
    for victim, row in table.items():
        cells = [f"{row[a]['rate']:.1%} ± {row[a]['se'] or 0:.1%} (n={row[a]['n']})" if a in row else "-"
                 for a in attacks]
        print(f"| {victim} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
