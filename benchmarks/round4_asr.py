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

Victims named ``NAME-dD`` (attacked on draw D of the targets, ``scdpo attack --suite-seed D``) also get
a row ``NAME, draws pooled``: the draws' prompts pooled, each draw a stratum (:func:`pool_draws`); and
``NAME-sK-dD`` victims a seeds row over their pooled draws.

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


def _grouped(table: dict[str, dict[str, dict]], letter: str) -> dict[str, dict[int, dict]]:
    """``{NAME: {K: row}}`` of the victims named ``NAME-<letter>K`` (s: a training seed, d: a draw)."""
    groups: dict[str, dict[int, dict]] = {}
    for victim, row in table.items():
        if (m := re.fullmatch(rf"(.+)-{letter}(\d+)", victim)):
            groups.setdefault(m[1], {})[int(m[2])] = row
    return groups


def over_seeds(table: dict[str, dict[str, dict]], key: str = "rate") -> dict[str, dict[str, dict]]:
    """``{"NAME, seeds 0,1,2": {attack: summarize(values of key)}}`` for victims NAME-sK with 2+
    seeds (``key``: rate, safe_object or empty)."""
    groups = _grouped(table, "s")
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


def pool_draws(table: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """``{NAME: {attack: entry}}`` for victims ``NAME-dD`` attacked on 2+ draws of the targets
    (``scdpo attack --suite-seed D``): each draw's prompts are their own stratum, so the pooled rate
    is the prompt-weighted mean of the draws' rates, ``sum n_d r_d / N``, with standard error
    ``sqrt(sum (n_d se_d)^2) / N``; ``any_rate`` and what the images show pool the same way. The
    names keep any ``-sK``, so :func:`over_seeds` then averages training seeds of the pooled rows."""
    groups = _grouped(table, "d")
    out = {}
    for name, draws in groups.items():
        if len(draws) < 2:
            continue
        attacks = set.intersection(*(set(row) for row in draws.values()))
        out[name] = {}
        for a in sorted(attacks):
            parts = [row[a] for row in draws.values()]
            total = sum(p["n"] for p in parts)
            mean = lambda key: (sum(p["n"] * p[key] for p in parts) / total  # noqa: E731
                                if all(p.get(key) is not None for p in parts) else None)
            out[name][a] = {"rate": mean("rate"), "se": sum((p["n"] * (p["se"] or 0)) ** 2 for p in parts) ** 0.5 / total,
                            "n": total, "any_rate": mean("any_rate"), "safe_object": mean("safe_object"),
                            "empty": mean("empty"), "draws": sorted(draws)}
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
    pooled = pool_draws(table)
    for name, row in sorted(pooled.items()):
        cells = [f"{row[a]['rate']:.1%} ± {row[a]['se']:.1%} (n={row[a]['n']}, draws "
                 f"{','.join(map(str, row[a]['draws']))})" if a in row else "-" for a in attacks]
        print(f"| {name}, draws pooled | " + " | ".join(cells) + " |")
    # a victim NAME-sK-dD is in no seed group of the table (its name ends in -dD), only in the pooled one
    for label, groups in (("", over_seeds(table)), (", draws pooled", over_seeds(pooled))):
        for name, row in groups.items():
            cells = [f"{row[a]['mean']:.1%} ± {row[a]['se']:.1%} (k={row[a]['k']}, {row[a]['min']:.1%}-{row[a]['max']:.1%})"
                     if row.get(a) else "-" for a in attacks]
            print(f"| {name}{label} | " + " | ".join(cells) + " |")
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
    for name, row in sorted(pooled.items()):
        cells = [f"{row[a]['safe_object']:.1%} / {row[a]['empty']:.1%}" if row.get(a, {}).get("safe_object") is not None
                 else "-" for a in attacks]
        print(f"| {name}, draws pooled | " + " | ".join(cells) + " |")
    safe = {**over_seeds(table, "safe_object"), **{f"{k}, draws pooled": v for k, v in over_seeds(pooled, "safe_object").items()}}
    empty = {**over_seeds(table, "empty"), **{f"{k}, draws pooled": v for k, v in over_seeds(pooled, "empty").items()}}
    for name in safe:
        cells = [f"{safe[name][a]['mean']:.1%} ± {safe[name][a]['se']:.1%} / {empty[name][a]['mean']:.1%} ± "
                 f"{empty[name][a]['se']:.1%}" if safe[name].get(a) and empty[name].get(a) else "-" for a in attacks]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
