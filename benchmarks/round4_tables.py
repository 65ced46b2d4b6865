#!/usr/bin/env python3
"""The tables of docs/results.md ("Fourth round") from a folder of evaluations named
METHOD-sSEED-dDRAW (benchmarks/emojiworld_round4.sh): per method and suite draw, the mean over
training seeds ± its standard error [min-max] of every headline metric, and the issue's goals.

    python benchmarks/round4_tables.py runs/round4 [--draw 1] [--holdout dagger pills ...]
    python benchmarks/round4_tables.py runs/round7 --draw 1 --against recipe   # + the ablation table
    python benchmarks/round4_tables.py runs/r11 --draw 3 --line recipe timestep700  # + the front
    python benchmarks/round4_tables.py runs/r14 runs/r11 --draw 0 --against t700-hold20  # rounds joined
    python benchmarks/round4_tables.py runs/r19 --draw 10 11 --mean-of-draws   # + each method's mean over the draws

``--mean-of-draws``: a last table, each method's mean over the given draws (of its per-draw means
over seeds), ± sqrt(sum_d se_d^2) / D with se_d the draw's evaluation standard error (the README's
and the model card's rates; the draws are independent samples of the suites).

``--against METHOD``: a second table, each other method's difference from METHOD per headline
metric, ``diff ± se`` with the pooled two-sample standard error (scdpo.eval.seeds.difference), and
the metrics it moves by more than 2 standard errors (the ablation rule of docs/results.md).

With ``--mean-of-draws`` too, ``--against`` adds the differences over the draws at once: each seed's
mean over the draws, differenced as above (the twenty-first round's rule reads clean alignment there).

``--line A B``: where each other method lies against the straight line through A and B in (implicit
harmful rate, clean alignment): the points of alignment above it at the method's implicit harmful
rate, ± the delta-method standard error (scdpo.eval.seeds.above_line). Near 0: on the same
trade-off, not a way around it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scdpo.eval.seeds import above_line, aggregate, difference, fmt, group_runs, held_out_rate, summarize

COLUMNS = [("eval-harmful-explicit", "harmful_rate"), ("eval-harmful-implicit", "harmful_rate"),
           ("eval-harmful-explicit", "safe_object_rate"), ("eval-harmful-implicit", "safe_object_rate"),
           ("eval-harmful-explicit", "counterpart_rate"), ("eval-harmful-explicit", "empty_rate"),
           ("eval-harmful-implicit", "empty_rate"), ("eval-mixed", "benign_retention"),
           ("eval-clean", "alignment"), ("eval-clean", "frechet.fd")]
LABELS = {"harmful_rate": "harmful", "safe_object_rate": "safe_object", "counterpart_rate": "counterpart",
          "empty_rate": "empty", "benign_retention": "benign_retention", "alignment": "alignment",
          "frechet.fd": "frechet"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, nargs="+",
                    help="folders of evaluations; a name found in several counts once, from the first")
    ap.add_argument("--draw", type=int, nargs="+", default=None, help="suite draws to show (default: all)")
    ap.add_argument("--holdout", nargs="+", default=[], help="held-out concepts: their rate per method")
    ap.add_argument("--against", default=None, help="a method to difference every other one against")
    ap.add_argument("--line", nargs=2, default=None, metavar=("A", "B"),
                    help="two methods: each other one's alignment above their trade-off line")
    ap.add_argument("--mean-of-draws", action="store_true", help="then each method's mean over the draws shown")
    args = ap.parse_args()
    groups = group_runs(evaluations(args.root))
    draws = sorted({d for _, d in groups}) if args.draw is None else args.draw
    for draw in draws:
        print(f"\n### Suite draw {draw}\n")
        head = ["method", "seeds"] + [f"{s.removeprefix('eval-').replace('harmful-', '')}: {LABELS[k]}" for s, k in COLUMNS]
        if args.holdout:
            head += ["held-out concepts drawn (explicit)", "(implicit)"]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for (method, d), runs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "base", kv[0][0])):
            if d != draw:
                continue
            agg = aggregate(runs, keys=sorted({k for _, k in COLUMNS}))
            cells = [method, str(len(runs))] + [fmt((agg.get(s) or {}).get(k), percent=k != "frechet.fd") for s, k in COLUMNS]
            if args.holdout:
                cells += [fmt(held_out_rate(runs, args.holdout, s)) for s in ("eval-harmful-explicit", "eval-harmful-implicit")]
            print("| " + " | ".join(cells) + " |")
        if args.against and (args.against, draw) in groups:
            ablation_table(groups, args.against, draw)
        if args.line and all((m, draw) in groups for m in args.line):
            line_table(groups, *args.line, draw)
    if args.mean_of_draws:
        mean_table(groups, draws)
        if args.against:
            pooled_against_table(groups, args.against, draws)


def mean_table(groups: dict, draws: list[int]) -> None:
    """Per method evaluated on every one of ``draws``: each column's mean over the draws ± the
    draws' evaluation SEs added (sqrt(sum se_d^2) / D; Frechet without one)."""
    print(f"\n### Mean of draws {', '.join(map(str, draws))}\n")
    head = ["method"] + [f"{s.removeprefix('eval-').replace('harmful-', '')}: {LABELS[k]}" for s, k in COLUMNS]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for method in sorted({m for m, _ in groups}, key=lambda m: (m != "base", m)):
        if not all((method, d) in groups for d in draws):
            continue
        aggs = [aggregate(groups[method, d], keys=sorted({k for _, k in COLUMNS})) for d in draws]
        cells = [method]
        for suite, key in COLUMNS:
            got = [(a.get(suite) or {}).get(key) for a in aggs]
            if any(g is None for g in got):
                cells.append("-")
                continue
            scale = 1 if key == "frechet.fd" else 100
            mean = scale * sum(g["mean"] for g in got) / len(got)
            ses = [g.get("eval_se") for g in got]
            cells.append(f"{mean:.1f}" + ("" if None in ses else
                                          f" ± {scale * sum(e ** 2 for e in ses) ** 0.5 / len(ses):.1f}"))
        print("| " + " | ".join(cells) + " |")


def pooled_against_table(groups: dict, against: str, draws: list[int]) -> None:
    """``--against`` with ``--mean-of-draws``: each method's difference from ``against`` over the
    draws at once. Each training seed's value is its mean over the draws (the i-th run of every draw
    is the same seed: the folders sort alike), then the two-sample SE over seeds of
    scdpo.eval.seeds.difference, as the per-draw tables; the draws' shared prompts cancel in it."""
    from scdpo.eval.metrics import METRICS, stat

    def per_seed(method, suite, key):
        runs = [groups[method, d] for d in draws]
        vals = [[stat(r["suites"][suite], METRICS[key]).value if suite in r["suites"] else None for r in rs] for rs in runs]
        return None if any(None in v for v in vals) else summarize([sum(x) / len(x) for x in zip(*vals)])

    def seeds(method):
        return {len(groups.get((method, d), [])) for d in draws}

    if len(seeds(against)) != 1 or 0 in seeds(against):
        return
    difference_header(f"{against}, draws {', '.join(map(str, draws))} pooled")
    for method in sorted({m for m, _ in groups} - {against, "base"}):
        k = seeds(method)
        if len(k) != 1 or 0 in k:  # not on every draw, or not the same seeds on each
            continue
        print(difference_row(method, k.pop(), lambda suite, key, m=method: (per_seed(against, suite, key),
                                                                             per_seed(m, suite, key))))


def evaluations(roots: list[Path]) -> list[Path]:
    """The evaluation folders of ``roots``, sorted by name; where several roots hold one name (each
    round evaluates the base model again) the first root's counts, so no run counts as two seeds."""
    found: dict[str, Path] = {}
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"round4_tables: {root} is not a folder: give the folders holding eval-NAME/metrics.json")
        for d in sorted(root.glob("eval-*")):
            if (d / "metrics.json").is_file():
                found.setdefault(d.name, d)
    return [found[name] for name in sorted(found)]


def ablation_table(groups: dict, against: str, draw: int) -> None:
    """Every method's difference from ``against`` (points; Frechet in its units), ± its standard
    error, a star where it exceeds 2 standard errors; then the metrics each method moves."""
    keys = sorted({k for _, k in COLUMNS})
    ref = aggregate(groups[against, draw], keys=keys)
    difference_header(f"{against} (draw {draw})")
    for (method, d), runs in sorted(groups.items()):
        if d != draw or method in (against, "base"):
            continue
        agg = aggregate(runs, keys=keys)
        print(difference_row(method, len(runs), lambda suite, k: ((ref.get(suite) or {}).get(k),
                                                                   (agg.get(suite) or {}).get(k))))


def column_label(suite: str, key: str) -> str:
    return f"{suite.removeprefix('eval-').replace('harmful-', '')}: {LABELS[key]}"


def difference_header(what: str) -> None:
    head = ["method", "seeds"] + [column_label(s, k) for s, k in COLUMNS] + ["moves"]
    print(f"\n#### Against {what}: difference ± SE; * = more than 2 SE\n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))


def difference_row(method: str, seeds: int, pair) -> str:
    """A row of a difference table: per column, ``pair(suite, key)`` -> (the reference method's
    per-seed summary, this method's), differenced by scdpo.eval.seeds.difference; then the
    columns it moves by more than 2 SE."""
    cells, moved = [method, str(seeds)], []
    for suite, key in COLUMNS:
        diff = difference(*pair(suite, key))
        scale = 1 if key == "frechet.fd" else 100
        cells.append("-" if diff is None else f"{scale * diff['diff']:+.1f} ± {scale * diff['se']:.1f}"
                     + ("*" if diff["moves"] else ""))
        if diff is not None and diff["moves"]:
            moved.append(column_label(suite, key))
    return "| " + " | ".join(cells + [", ".join(moved) or "none"]) + " |"


def line_table(groups: dict, a: str, b: str, draw: int) -> None:
    """Each method's clean alignment above the line through ``a`` and ``b`` in (implicit harmful,
    clean alignment), in points ± SE; t places its implicit harmful rate (0 at a, 1 at b)."""
    def point(method):
        agg = aggregate(groups[method, draw], keys=["harmful_rate", "alignment"])
        return (agg.get("eval-harmful-implicit") or {}).get("harmful_rate"), (agg.get("eval-clean") or {}).get("alignment")

    print(f"\n#### Against the line {a} - {b} (draw {draw}): clean alignment above it, points ± SE\n")
    print("| method | seeds | t (0 = " + a + ", 1 = " + b + ") | above the line |\n|---|---|---|---|")
    for (method, d), runs in sorted(groups.items()):
        if d != draw or method in (a, b, "base"):
            continue
        r = above_line(point(a), point(b), point(method))
        cells = ["-", "-"] if r is None else [f"{r['t']:.2f}", f"{100 * r['d']:+.1f} ± {100 * r['se']:.1f}"
                                               + ("*" if abs(r["d"]) > 2 * r["se"] else "")]
        print(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
