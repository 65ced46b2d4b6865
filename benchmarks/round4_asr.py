#!/usr/bin/env python3
"""The attack success rates of benchmarks/round4_baselines_attacks.sh as one table: every
``R/attack-VICTIM-ATTACK/metrics.json`` (written by `scdpo attack ... --evaluate`) -> ``R/asr.json``
(``{victim: {attack: {rate, se, n, any_rate}}}``) and a markdown table on stdout. Several roots
are read as one (asr.json goes to the first). Victims named ``NAME-sK`` (training seed K) also get a
row ``NAME, seeds ...``: the mean over the seeds ± the standard error over the seeds
(scdpo.eval.seeds.summarize), with the range. A second table gives what each attack's images show
(safe-object and empty rates, with the EmojiWorld judge), per victim and over seeds.

    python benchmarks/round4_asr.py runs/round4
    python benchmarks/round4_asr.py runs/r10-attacks runs/r9-attacks   # ESD-x's seeds from both rounds
    python benchmarks/round4_asr.py runs/r25dev/attacks runs/r23/attacks runs/r23b-atk --against loop50

``--against NAME`` adds a table of each other seed group's ASR minus NAME's (NAME-sK victims, 2+ seeds
each), ``diff ± se`` with the pooled two-sample standard error over training seeds
(scdpo.eval.seeds.difference, as ``round4_tables.py --against``), starred when beyond 2 SE.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from scdpo.eval.seeds import difference, summarize


def collect(roots: list[Path]) -> dict[str, dict[str, dict]]:
    table: dict[str, dict[str, dict]] = {}
    for f in sorted(f for root in roots for f in root.glob("attack-*/metrics.json")):
        m = json.loads(f.read_text())
        attack = m["attack"]
        victim = f.parent.name.removeprefix("attack-").removesuffix(f"-{attack}")
        asr = m["attack_success_rate"][attack]
        images = m.get("suites", {}).get(attack, {})  # the attack's images as an eval suite (EmojiWorld judge)
        table.setdefault(victim, {})[attack] = {**{k: asr.get(k) for k in ("rate", "se", "n", "any_rate")},
                                                **{k: (images.get(f"{k}_rate") or {}).get("rate")
                                                   for k in ("safe_object", "empty")}}
    return table


def over_seeds(table: dict[str, dict[str, dict]], key: str = "rate") -> dict[str, dict[str, dict]]:
    """``{"NAME, seeds 0,1,2": {attack: summarize(values of key)}}`` for victims NAME-sK with 2+
    seeds (``key``: rate, safe_object or empty)."""
    groups: dict[str, dict[int, dict]] = {}
    for victim, row in table.items():
        if (m := re.fullmatch(r"(.+)-s(\d+)", victim)):
            groups.setdefault(m[1], {})[int(m[2])] = row
    out = {}
    for name, seeds in groups.items():
        if len(seeds) < 2:
            continue
        attacks = {a for row in seeds.values() for a in row}
        rates = {a: [row[a][key] for row in seeds.values() if a in row and row[a].get(key) is not None]
                 for a in attacks}
        out[f"{name}, seeds {','.join(map(str, sorted(seeds)))}"] = {
            a: summarize(r) if len(r) >= 2 else None for a, r in rates.items()}  # one seed: no spread
    return out


def against(groups: dict[str, dict[str, dict]], name: str) -> dict[str, dict[str, dict]]:
    """``{group: {attack: difference(NAME's summary, group's)}}`` for every seed group of
    :func:`over_seeds` but NAME's; raises KeyError naming the groups when NAME has none."""
    keys = {g.split(", seeds ")[0]: g for g in groups}
    if name not in keys:
        raise KeyError(f"--against {name}: no victims {name}-sK with 2+ seeds; seed groups: {sorted(keys) or 'none'}")
    ref = groups[keys[name]]
    return {g: {a: difference(ref.get(a), s) for a, s in groups[g].items()}
            for short, g in keys.items() if short != name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, nargs="+")
    ap.add_argument("--against", metavar="NAME", help="a seed group: each other group's ASR minus its")
    args = ap.parse_args()
    roots = args.root
    table = collect(roots)
    root = roots[0]
    tmp = root / "asr.json.tmp"  # written whole, then renamed: the packer never reads half a file
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, root / "asr.json")
    attacks = sorted({a for row in table.values() for a in row})
    print("| victim | " + " | ".join(f"{a} ASR" for a in attacks) + " |\n|" + "---|" * (len(attacks) + 1))
    for victim, row in sorted(table.items()):
        cells = [f"{row[a]['rate']:.1%} ± {row[a]['se'] or 0:.1%} (n={row[a]['n']})" if a in row else "-"
                 for a in attacks]
        print(f"| {victim} | " + " | ".join(cells) + " |")
    for name, row in over_seeds(table).items():
        cells = [f"{row[a]['mean']:.1%} ± {row[a]['se']:.1%} (k={row[a]['k']}, {row[a]['min']:.1%}-{row[a]['max']:.1%})"
                 if row.get(a) else "-" for a in attacks]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.against:
        try:
            diffs = against(over_seeds(table), args.against)
        except KeyError as e:
            raise SystemExit(e.args[0]) from None
        print(f"\n| minus {args.against} | " + " | ".join(f"{a}: diff ± se" for a in attacks) + " |\n|"
              + "---|" * (len(attacks) + 1))
        for name, row in diffs.items():
            cells = [f"{d['diff'] * 100:+.1f} ± {d['se'] * 100:.1f}{'*' if d['moves'] else ''}" if (d := row.get(a)) else "-"
                     for a in attacks]
            print(f"| {name} | " + " | ".join(cells) + " |")
    # what the attacks' images show: a low ASR by drawing nothing is not a safe model (issue 15)
    print("\n| victim | " + " | ".join(f"{a}: safe object / empty" for a in attacks) + " |\n|"
          + "---|" * (len(attacks) + 1))
    for victim, row in sorted(table.items()):
        cells = [f"{row[a]['safe_object']:.1%} / {row[a]['empty']:.1%}" if row.get(a, {}).get("safe_object") is not None
                 else "-" for a in attacks]
        print(f"| {victim} | " + " | ".join(cells) + " |")
    safe, empty = over_seeds(table, "safe_object"), over_seeds(table, "empty")
    for name in safe:
        cells = [f"{safe[name][a]['mean']:.1%} ± {safe[name][a]['se']:.1%} / {empty[name][a]['mean']:.1%} ± "
                 f"{empty[name][a]['se']:.1%}" if safe[name].get(a) and empty[name].get(a) else "-" for a in attacks]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
