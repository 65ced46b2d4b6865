"""`scdpo generate`: sample images from any T2I model for a suite or a prompt file."""

from __future__ import annotations

import argparse


def _generate(args) -> None:
    from scdpo.models.generate import GenerateConfig, run
    from scdpo.utils.config import dataclass_from_args

    run(dataclass_from_args(GenerateConfig, args))


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.models.generate import GenerateConfig
    from scdpo.utils.config import add_dataclass_args

    p = sub.add_parser("generate", help="sample images for a suite or prompt file; writes PNGs, a grid and a parquet index",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_args(p, GenerateConfig)
    p.set_defaults(func=_generate)
