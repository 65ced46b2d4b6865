"""`scdpo attack NAME` (run an attack against a model), `scdpo attack score RUN` (its ASR, on that
model or another) and `scdpo attack merge` (join the shards of one attack)."""

from __future__ import annotations

import argparse


def _run(args) -> None:
    from scdpo.attack.config import AttackConfig
    from scdpo.attack.run import run
    from scdpo.utils.config import dataclass_from_args

    run(dataclass_from_args(AttackConfig, args, attack=args.attack_command))


def _score(args) -> None:
    from scdpo.attack.score import ScoreConfig, score
    from scdpo.utils.config import dataclass_from_args

    score(dataclass_from_args(ScoreConfig, args))


def _merge(args) -> None:
    from pathlib import Path

    from scdpo.attack.run import merge

    merge(Path(args.out), [Path(p) for p in args.shards])


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.attack import NAMES
    from scdpo.attack.config import AttackConfig
    from scdpo.attack.config import ScoreConfig
    from scdpo.utils.config import add_dataclass_args

    p = sub.add_parser("attack", help="red-team a model: search adversarial prompts (ring-a-bell, unlearndiff, p4d, "
                                      "paraphrase); `scdpo attack score` reports the attack success rate",
                       description="Run an adversarial-prompt attack against the model under test and write the "
                                   "prompts as a prompt file. See docs/attacks.md.")
    inner = p.add_subparsers(dest="attack_command", metavar="{" + ",".join(NAMES) + ",score,merge}", required=True)
    for name in NAMES:
        a = inner.add_parser(name, help=f"run the {name} attack")
        add_dataclass_args(a, AttackConfig, skip=("attack",))
        a.set_defaults(func=_run)
    s = inner.add_parser("score", help="attack success rate of an attack run (metrics.json)")
    s.add_argument("run", metavar="RUN_DIR", help="an `scdpo attack` output folder (state.json, prompts.csv)")
    add_dataclass_args(s, ScoreConfig, skip=("run",))
    s.set_defaults(func=_score)
    m = inner.add_parser("merge", help="join the shards of one attack (runs with --start/--limit) into one run")
    m.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="`scdpo attack` output folders of one command")
    m.add_argument("--out", required=True, help="the merged run's folder (state.json, prompts.csv)")
    m.set_defaults(func=_merge)
