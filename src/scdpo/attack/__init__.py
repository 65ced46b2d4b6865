"""Red-teaming: adversarial-prompt attacks run against the model under test (`scdpo attack`).

Attacks (docs/attacks.md): ``ring-a-bell`` (Tsai et al. 2024), ``unlearndiff`` (Zhang et al. 2024),
``p4d`` (Chin et al. 2024) and ``paraphrase``; all behind one signature, see :mod:`scdpo.attack.base`.
"""

from scdpo.attack.base import ATTACKS, AttackContext, AttackResult, Target, get_attack, register

__all__ = ["ATTACKS", "AttackContext", "AttackResult", "Target", "get_attack", "register", "NAMES"]

#: the registered attacks, in the order the docs give them
NAMES = ("ring-a-bell", "unlearndiff", "p4d", "paraphrase")
