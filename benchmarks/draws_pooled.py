#!/usr/bin/env python3
"""One LoRA's goals over several test draws at once (issue 15; docs/results.md, "Seventeenth round").

One test draw is 150 prompts a suite, so a rate near 93% carries a sampling error of about 2 points,
and a goal such as "clean alignment >= base - 2" compares two such rates: on one draw the answer is
mostly the draw's luck. Every test draw of the same LoRA answers the same question with new prompts,
so this pools them. Per draw d and goal (bound ``a + b * base``, benchmarks/round4_pick.py GOALS):

    margin_d = sign * (x_d - a - b * y_d)                 (points by which the goal is met; < 0: missed)
    se_d     = sqrt(se(x_d)^2 + b^2 * se(y_d)^2)          (the run's and the base's sampling errors)
    pooled   = mean_d margin_d  +-  sqrt(sum_d se_d^2) / D

with x the run's rate (the mean over its seeds where a draw has several; se(x) then the mean of their
SEs, since the seeds share the draw's prompts) and y the base's on the same prompts and sampling seeds. The draws are independent samples of the suites, so their errors add as
independent ones. It is the error of these trained weights on new prompts, not of the recipe over
training seeds (benchmarks/round4_tables.py gives that). Frechet's margin is in percent of the base's
distance and has no standard error here.

    python benchmarks/draws_pooled.py DIR... --method shipped --draws 2 3 4 5 6 7   # per draw
    python benchmarks/draws_pooled.py DIR... --method shipped t700-hold20-r32a8      # one row each
    python benchmarks/draws_pooled.py DIR... --method NAME --spread                   # a row per seed

``--spread`` splits each method into its training seeds (one row each) and ends with their mean ±
its standard error, the SD across the rows, the goals the mean misses beyond 2 SE and how many
rows miss none beyond their own: the recipe's spread over seeds, which the pooled SE above does not
hold (nineteenth round). The mean's SE adds the two parts: the seeds' spread, SD / sqrt(n), and the
draws' sampling error, which every seed shares (their prompts are the same), the mean of the rows'
pooled SEs. Rows of several methods count as draws of one recipe (e.g. five soups).

Each DIR (one round's folder) holds evaluation folders named as benchmarks/round4_tables.py reads
them (eval-METHOD-dN, eval-METHOD-sK-dN, eval-base-dN); a draw needs both the method and the base,
read from the same DIR where it has both. A method met in several DIRs on the same draw counts once,
from the first DIR given. Without ``--draws``
every test draw (>= 1) that has both is pooled; draw 0 is the tuning draw and never pooled. A name
evaluated in several rounds may be different weights of the same recipe (trained again); the
table's SE is still the evaluations' sampling error only, not the training seeds' spread.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from round4_pick import CLEAN, FRECHET_GOAL, GOALS

from scdpo.eval.metrics import METRICS, stat
from scdpo.eval.seeds import RUN_NAME, group_runs


def margins(runs: list[dict], base: dict) -> dict[str, tuple[float, float | None] | None]:
    """Per goal, (margin, its standard error) in points for one draw; None where not measured."""
    out: dict[str, tuple[float, float | None] | None] = {}
    for label, suite, key, a, b, sign in GOALS:
        xs = [stat(r["suites"][suite], METRICS[key]) for r in runs if suite in r["suites"]]
        y = stat(base["suites"].get(suite, {}), METRICS[key])
        if not xs or any(s.value is None for s in xs) or y.value is None:
            out[label] = None
            continue
        x = sum(s.value for s in xs) / len(xs)
        # the seeds of one draw share its prompts and sampling seeds, so their errors are not
        # independent: the mean of their SEs (fully correlated), not sqrt(sum se^2) / k, which would
        # shrink the prompts' share of the error with every seed added
        se = None if any(v.se is None for v in [*xs, y]) else \
            math.sqrt((sum(s.se for s in xs) / len(xs)) ** 2 + b ** 2 * y.se ** 2)
        out[label] = (100 * sign * (x - a - b * y.value), None if se is None else 100 * se)
    fx = [stat(r["suites"][CLEAN], METRICS["frechet.fd"]).value for r in runs if CLEAN in r["suites"]]
    fy = stat(base["suites"].get(CLEAN, {}), METRICS["frechet.fd"]).value
    out[FRECHET_GOAL] = (105.0 - 100 * (sum(fx) / len(fx)) / fy, None) if fx and None not in fx and fy else None
    return out


def pool(per_draw: list[dict[str, tuple[float, float | None] | None]]) -> dict[str, tuple[float, float | None] | None]:
    """Per goal, the mean margin over the draws that measured it and its standard error
    (sqrt(sum se_d^2) / D; None if any draw lacks one)."""
    out = {}
    for label in per_draw[0]:
        got = [m[label] for m in per_draw if m.get(label) is not None]
        if not got:
            out[label] = None
            continue
        ses = [se for _, se in got]
        out[label] = (sum(v for v, _ in got) / len(got),
                      None if None in ses else math.sqrt(sum(se ** 2 for se in ses)) / len(got))
    return out


def shortfall(pooled: dict[str, tuple[float, float | None] | None]) -> float:
    """The summed pooled shortfall: the points by which the missed goals' pooled margins miss,
    sum_g max(0, -margin_g) (Frechet's in percent of the base's), the ship rule's second test
    (docs/results.md, "Seventeenth round", "Next")."""
    return sum(max(0.0, -m[0]) for m in pooled.values() if m is not None)


def cell(m: tuple[float, float | None] | None) -> str:
    """A margin as the tables print it: +x.x ± se (points), "-" where not measured."""
    return "-" if m is None else f"{m[0]:+.1f}" + (f" ± {m[1]:.1f}" if m[1] is not None else "")


def table(method: str, draws: list[int], per_draw: list[dict], pooled: dict) -> str:
    """The markdown table: each draw's margin, the pooled margin ± SE, and the verdict."""
    def verdict(m):
        if m is None:
            return "-"
        v, se = m
        if se is None or se == 0:
            return "met" if v >= 0 else "missed"
        return ("met" if v >= 0 else "missed") + (" (beyond 2 SE)" if abs(v) > 2 * se else " (within 2 SE)")
    head = f"| goal ({method}: margin in points, > 0 met) | " + " | ".join(f"draw {d}" for d in draws) + \
        f" | pooled over {len(draws)} draws | verdict |\n|---|" + "---|" * (len(draws) + 2) + "\n"
    return head + "".join(f"| {label} | " + " | ".join(cell(m[label]) for m in per_draw) +
                          f" | **{cell(pooled[label])}** | {verdict(pooled[label])} |\n" for label in pooled) + \
        f"| summed shortfall (points) | " + " | ".join(f"{shortfall(m):.1f}" for m in per_draw) + \
        f" | **{shortfall(pooled):.1f}** | |\n"


def summary(rows: dict[str, tuple[list[int], dict]]) -> str:
    """One row per method: its pooled draws and each goal's pooled margin ± SE (points)."""
    labels = list(next(iter(rows.values()))[1])
    head = "| method | draws | " + " | ".join(labels) + " | summed shortfall | goals missed beyond 2 SE |\n|---|---|" + \
        "---|" * (len(labels) + 2) + "\n"
    out = head
    for method, (draws, pooled) in rows.items():
        missed = [k for k, m in pooled.items() if m is not None and m[0] < 0 and (m[1] is None or -m[0] > 2 * m[1])]
        out += f"| {method} | {','.join(map(str, draws))} | " + " | ".join(cell(pooled[k]) for k in labels) + \
            f" | {shortfall(pooled):.1f} | {', '.join(missed) or 'none'} |\n"
    return out


def spread(rows: dict[str, tuple[list[int], dict]]) -> str:
    """The summary's rows, then the mean over the rows ± SE across them (SD / sqrt(n)) and the SD,
    per goal and for the summed shortfall, and the count of rows that miss no goal beyond 2 SE."""
    out = summary(rows)
    labels = list(next(iter(rows.values()))[1])
    pooled = [p for _, p in rows.values()]

    def across(values: list[float], shared: list[float] = ()) -> tuple[float, float, float]:
        n = len(values)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        common = sum(shared) / len(shared) if shared else 0.0
        return mean, math.sqrt(sd ** 2 / n + common ** 2), sd
    stats = {k: across([p[k][0] for p in pooled if p[k] is not None],
                       [p[k][1] for p in pooled if p[k] is not None and p[k][1] is not None])
             for k in labels if any(p[k] is not None for p in pooled)}
    falls = across([shortfall(p) for p in pooled])
    clean = sum(not any(m is not None and m[0] < 0 and (m[1] is None or -m[0] > 2 * m[1]) for m in p.values())
                for p in pooled)
    missed = [k for k, (mean, se, _) in stats.items() if mean < 0 and -mean > 2 * se]
    draws = ",".join(map(str, next(iter(rows.values()))[0]))
    out += f"| **mean of {len(pooled)} (± SE: seeds and draws)** | {draws} | " + \
        " | ".join(f"**{stats[k][0]:+.1f} ± {stats[k][1]:.1f}**" if k in stats else "-" for k in labels) + \
        f" | **{falls[0]:.1f} ± {falls[1]:.1f}** | {', '.join(missed) or 'none'}; {clean} of {len(pooled)} rows miss none |\n"
    out += f"| SD across them | {draws} | " + " | ".join(f"{stats[k][2]:.1f}" if k in stats else "-" for k in labels) + \
        f" | {falls[2]:.1f} | |\n"
    return out


def predicts(rows: dict, collect, draw: int) -> str:
    """The Spearman correlation over ``rows`` ("METHOD sK") of each row's summed shortfall on the
    tuning ``draw`` with its pooled one: whether a choice made on that draw carries to the test draws."""
    from scipy.stats import spearmanr

    tuned, tested = [], []
    for name, (_, per_draw) in rows.items():
        method, seed = name.rsplit(" s", 1)
        _, found = collect(method, int(seed), [draw])
        tuned.append(shortfall(margins(*found[draw])))
        tested.append(shortfall(pool(per_draw)))
    r = spearmanr(tuned, tested)
    return (f"\nSpearman, summed shortfall on draw {draw} against pooled, over {len(rows)} rows: "
            f"{r.statistic:+.2f} (p = {r.pvalue:.4f})\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path, help="folders of evaluations (eval-METHOD-dN, eval-base-dN)")
    ap.add_argument("--method", nargs="+", required=True, help="the runs' METHOD names (e.g. shipped)")
    ap.add_argument("--draws", nargs="+", type=int, help="the test draws to pool (default: every draw >= 1 evaluated)")
    ap.add_argument("--seed", type=int, help="only this training seed's evaluations (eval-METHOD-sSEED-dN; "
                    "default: every seed, averaged per draw); runs without a seed in their name are kept")
    ap.add_argument("--spread", action="store_true", help="a row per training seed of each method, then their mean, "
                    "SE and SD across the rows (the recipe's spread over seeds)")
    ap.add_argument("--tuning-draw", type=int, help="with --spread: also the Spearman correlation, over the rows, "
                    "of each row's summed shortfall on this draw (e.g. 0) with its pooled one (does tuning predict?)")
    args = ap.parse_args()

    folders = [sorted(f.parent for f in d.glob("**/eval-*/metrics.json")) for d in args.dirs]

    def seed_of(folder: Path) -> int | None:
        m = RUN_NAME.match(folder.name.removeprefix("eval-"))
        return None if m is None else int(m["seed"])

    def collect(method: str, seed: int | None, only: list[int] | None = None) -> tuple[list[int], dict]:
        """The method's pooled draws and, per draw, (its runs, the base's run), from the first DIR
        that has the runs (read against the base of the same round where there is one: same sampler,
        judge and code); only training seed ``seed``'s runs where given (runs without one are kept);
        the draws ``only`` where given, else --draws."""
        per_dir = [group_runs([f for f in fs if seed is None or seed_of(f) in (None, seed)]) for fs in folders]
        found = {}
        for groups in per_dir:
            for (m, d), runs in groups.items():
                if m == method and d not in found:
                    base = groups.get(("base", d)) or next((g["base", d] for g in per_dir if ("base", d) in g), None)
                    found[d] = (runs, base[0] if base else None)
        draws = only or args.draws or sorted(d for d in found if d >= 1 and found[d][1] is not None)
        missing = [d for d in draws if d not in found or found[d][1] is None]
        if missing or not draws:
            raise SystemExit(f"--method {method} --draws {' '.join(map(str, missing or draws)) or '(none)'}: no "
                             f"eval-{method}-d* or eval-base-d* there under {' '.join(map(str, args.dirs))}; "
                             "drop those draws or evaluate them first")
        return draws, found
    rows = {}
    for method in args.method:
        if not args.spread:
            draws, found = collect(method, args.seed)
            rows[method] = (draws, [margins(*found[d]) for d in draws])
            continue
        seeds = sorted({seed_of(f) for fs in folders for f in fs
                        if seed_of(f) is not None and f.name.removeprefix("eval-").startswith(f"{method}-s")})
        for k in seeds:
            draws, found = collect(method, k)
            rows[f"{method} s{k}"] = (draws, [margins(*found[d]) for d in draws])
    if args.spread:
        sys.stdout.write(spread({m: (d, pool(p)) for m, (d, p) in rows.items()}))
        if args.tuning_draw is not None:
            sys.stdout.write(predicts(rows, collect, args.tuning_draw))
    elif len(rows) == 1:
        (method, (draws, per_draw)), = rows.items()
        sys.stdout.write(table(method, draws, per_draw, pool(per_draw)))
    else:
        sys.stdout.write(summary({m: (d, pool(p)) for m, (d, p) in rows.items()}))


if __name__ == "__main__":
    main()
