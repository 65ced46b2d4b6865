"""`scdpo baseline esd` and `scdpo baseline uce`: the concept-erasure baselines (docs/baselines.md)."""

from __future__ import annotations

import argparse


def _esd(args) -> None:
    from scdpo.baselines.esd import ESDConfig, run
    from scdpo.utils.config import dataclass_from_args

    run(dataclass_from_args(ESDConfig, args))


def _uce(args) -> None:
    from scdpo.baselines.uce import UCEConfig, run
    from scdpo.utils.config import dataclass_from_args

    run(dataclass_from_args(UCEConfig, args))


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.baselines.config import ESDConfig, UCEConfig
    from scdpo.utils.config import add_dataclass_args

    p = sub.add_parser("baseline", help="concept-erasure baselines (ESD, UCE) written as diffusers LoRAs; "
                                        "the inference-time ones are --guard sld:... / safree")
    inner = p.add_subparsers(dest="baseline_command", required=True, metavar="METHOD")
    e = inner.add_parser("esd", help="ESD-x / ESD-u: fine-tune a LoRA against negative guidance on the concepts")
    add_dataclass_args(e, ESDConfig)
    e.set_defaults(func=_esd)
    u = inner.add_parser("uce", help="UCE: closed-form edit of the cross-attention keys and values (seconds)")
    add_dataclass_args(u, UCEConfig)
    u.set_defaults(func=_uce)
