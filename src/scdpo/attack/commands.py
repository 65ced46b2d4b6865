"""`scdpo attack NAME` (run an attack against a model) and `scdpo attack score RUN` (its ASR)."""

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


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.attack import NAMES
    from scdpo.attack.config import AttackConfig
    from scdpo.attack.config import ScoreConfig
    from scdpo.utils.config import add_dataclass_args

    p = sub.add_parser("attack", help="red-team a model: search adversarial prompts (ring-a-bell, unlearndiff, p4d, "
                                      "paraphrase); `scdpo attack score` reports the attack success rate",
                       description="Run an adversarial-prompt attack against the model under test and write the "
                                   "prompts as a prompt file. See docs/attacks.md.")
    inner = p.add_subparsers(dest="attack_command", metavar="{" + ",".join(NAMES) + ",score}", required=True)
    for name in NAMES:
        a = inner.add_parser(name, help=f"run the {name} attack")
        add_dataclass_args(a, AttackConfig, skip=("attack",))
        a.set_defaults(func=_run)
    s = inner.add_parser("score", help="attack success rate of an attack run (metrics.json)")
    s.add_argument("run", metavar="RUN_DIR", help="an `scdpo attack` output folder (state.json, prompts.csv)")
    add_dataclass_args(s, ScoreConfig, skip=("run",))
    s.set_defaults(func=_score)
