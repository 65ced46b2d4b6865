"""Red-teaming: adversarial-prompt attacks run against the model under test (`scdpo attack`).

Attacks (docs/attacks.md): ``ring-a-bell`` (Tsai et al. 2024), ``unlearndiff`` (Zhang et al. 2024),
``p4d`` (Chin et al. 2024) and ``paraphrase``; all behind one signature, see :mod:`scdpo.attack.base`.
"""

__all__ = ["ATTACKS", "AttackContext", "AttackResult", "Target", "get_attack", "register", "NAMES"]

#: the registered attacks, in the order the docs give them
NAMES = ("ring-a-bell", "unlearndiff", "p4d", "paraphrase")


def __getattr__(name: str):
    # the registry (and torch with it) loads on first use, so that `scdpo --help` and the
    # command's flags, which need only NAMES and the configs, import no torch
    if name in __all__:
        from scdpo.attack import base

        return getattr(base, name)
    raise AttributeError(f"module 'scdpo.attack' has no attribute {name!r}")
