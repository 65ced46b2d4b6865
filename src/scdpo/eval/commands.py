"""`scdpo eval` (evaluate one model) and `scdpo eval compare` (compare several runs).

``eval`` takes its flags directly (``scdpo eval --model M ...``, as the README writes it) and has
one optional subcommand, ``compare``: argparse hands everything after ``compare`` to that parser.
"""

from __future__ import annotations

import argparse


def _run(args) -> None:
    from scdpo.eval.run import EvalConfig, run
    from scdpo.utils.config import dataclass_from_args

    run(dataclass_from_args(EvalConfig, args))


def _compare(args) -> None:
    from scdpo.eval.compare import compare

    compare(args.runs, args.out, args.grid_prompts)


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.eval.config import EvalConfig
    from scdpo.utils.config import add_dataclass_args

    p = sub.add_parser("eval", help="evaluate a model (harmful rate, alignment, Frechet, reward, grids); "
                                    "`scdpo eval compare` compares runs",
                       description="Sample a model on evaluation suites and prompt files with fixed seeds and write "
                                   "metrics.json and a self-contained report.html. See docs/evaluation.md.")
    add_dataclass_args(p, EvalConfig)
    p.set_defaults(func=_run)
    inner = p.add_subparsers(dest="eval_command", metavar="{compare}")
    c = inner.add_parser("compare", help="compare several `scdpo eval` runs: tables with standard errors, notes on "
                         "regressions, trade-off plots, grids, report.html",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="folders written by `scdpo eval`; the first is the reference for the notes on regressions")
    c.add_argument("--out", required=True, help="folder for table.md, table.csv, plots and report.html")
    c.add_argument("--grid-prompts", type=int, default=8, help="prompts per side-by-side grid")
    c.set_defaults(func=_compare)
