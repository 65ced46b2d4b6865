"""Pair rules: which of a prompt's K scored candidates become the preferred / rejected image.

Pure functions on candidate scores (no model). Scores follow the project's scorer convention:
``cost`` > 0 is harmful (0 is the threshold the cost model is anchored to), higher ``reward`` is
better. The rules implement the data construction of SC-DPO (Ruan et al. 2025):
for harmful prompts safety decides and the preference reward only breaks ties; for clean prompts
the reward decides among candidates that stay within the safety budget. Every outcome carries
a ``reason`` so the builder can count and record it; nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

#: reasons of accepted pairs
PAIR_REASONS = ("lowest_cost", "safe_prompt", "all_safe_reward", "all_unsafe_reward", "cost_tie_reward",
                "highest_reward")
#: reasons of skipped prompts
SKIP_REASONS = ("nan_score", "all_safe", "all_unsafe", "cost_tie", "reward_tie", "over_budget", "no_lower_reward")
UNIFORM_RULES = ("skip", "reward")


@dataclass(frozen=True)
class PairRules:
    """How pairs are chosen (costs and rewards in the scorers' own units).

    Attributes:
        cost_tolerance: costs within this of the lowest (highest) cost count as equally safe
            (unsafe); among them the reward decides.
        margin: a harmful prompt is "all safe" when every candidate costs < -margin and "all
            unsafe" when every candidate costs > +margin.
        uniform_rule: what to do with harmful prompts whose cost does not separate the candidates
            (all safe, all unsafe, or all within cost_tolerance): "skip" them, or pair on "reward".
        cost_budget: clean prompts: the winner must cost <= this.
        min_reward_gap: clean prompts (and reward pairs): the winner's reward must exceed the
            loser's by more than this, else the prompt is skipped as a reward tie.
        safe_prompt_winner: harmful prompts with a safe_prompt (CoProV2 pairs): the safe prompt's
            image, sampled with the loser's seed, is the winner when it is safe and the loser unsafe.
        strict: raise ValueError on a NaN score instead of skipping the prompt.
    """

    cost_tolerance: float = 0.1
    margin: float = 0.0
    uniform_rule: str = "skip"
    cost_budget: float = 0.0
    min_reward_gap: float = 0.0
    safe_prompt_winner: bool = False
    strict: bool = False

    def __post_init__(self):
        if self.uniform_rule not in UNIFORM_RULES:
            raise ValueError(f"uniform_rule must be one of {UNIFORM_RULES}, got {self.uniform_rule!r}")
        if self.cost_tolerance < 0 or self.margin < 0 or self.min_reward_gap < 0:
            raise ValueError("cost_tolerance, margin and min_reward_gap must be >= 0, got "
                             f"{self.cost_tolerance}, {self.margin}, {self.min_reward_gap}")


@dataclass(frozen=True)
class Choice:
    """The outcome for one prompt: ``winner``/``loser`` index the candidates (index K is the
    safe-prompt image), both None when the prompt is skipped."""

    reason: str
    winner: int | None = None
    loser: int | None = None

    @property
    def accepted(self) -> bool:
        return self.winner is not None


def _nan(values: Sequence[float], rules: PairRules, what: str) -> bool:
    if any(math.isnan(v) for v in values):
        if rules.strict:
            raise ValueError(f"NaN {what} among candidate scores {list(values)}")
        return True
    return False


def _reward_pair(rewards: Sequence[float], rules: PairRules, reason: str) -> Choice:
    """Highest vs lowest reward (first index on ties), if they differ by more than the gap."""
    win = max(range(len(rewards)), key=lambda k: (rewards[k], -k))
    lose = min(range(len(rewards)), key=lambda k: (rewards[k], k))
    if win == lose or rewards[win] - rewards[lose] <= rules.min_reward_gap:
        return Choice("reward_tie")
    return Choice(reason, win, lose)


def harmful_loser(costs: Sequence[float], rewards: Sequence[float], rules: PairRules) -> int | None:
    """The rejected candidate of a harmful prompt: among costs within ``cost_tolerance`` of the
    highest, the lowest reward (None on NaN). Used to pick the seed of the safe-prompt image."""
    if any(math.isnan(v) for v in (*costs, *rewards)):
        return None
    top = max(costs)
    group = [k for k, c in enumerate(costs) if c >= top - rules.cost_tolerance]
    return min(group, key=lambda k: (rewards[k], -costs[k], k))


def choose_harmful(costs: Sequence[float], rewards: Sequence[float], rules: PairRules,
                   safe: tuple[float, float] | None = None) -> Choice:
    """Pair for a harmful prompt from K candidates' ``costs`` and ``rewards``.

    ``safe`` is the (cost, reward) of the safe prompt's image (index K), when there is one.
    Normal rule: W = candidates within ``cost_tolerance`` of the lowest cost, L = those within it
    of the highest cost, not in W; winner = max reward in W, loser = min reward in L. When the cost
    spread exceeds the tolerance, L is not empty and every member of L costs strictly more than
    every member of W, so the winner always costs less than the loser.
    """
    if len(costs) != len(rewards) or len(costs) < 2:
        raise ValueError(f"need >= 2 candidates with one cost and one reward each, got {len(costs)} and {len(rewards)}")
    if _nan([*costs, *rewards], rules, "score"):
        return Choice("nan_score")
    if safe is not None and rules.safe_prompt_winner and not _nan(safe, rules, "safe-prompt score"):
        loser = harmful_loser(costs, rewards, rules)
        if safe[0] < -rules.margin and costs[loser] > rules.margin:
            return Choice("safe_prompt", len(costs), loser)
    lo, hi = min(costs), max(costs)
    uniform = ("all_safe" if hi < -rules.margin else "all_unsafe" if lo > rules.margin
               else "cost_tie" if hi - lo <= rules.cost_tolerance else None)
    if uniform is not None:
        if rules.uniform_rule == "skip":
            return Choice(uniform)
        return _reward_pair(rewards, rules, f"{uniform}_reward")
    best = [k for k, c in enumerate(costs) if c <= lo + rules.cost_tolerance]
    worst = [k for k, c in enumerate(costs) if c >= hi - rules.cost_tolerance and k not in best]
    win = max(best, key=lambda k: (rewards[k], -costs[k], -k))
    lose = min(worst, key=lambda k: (rewards[k], -costs[k], k))
    return Choice("lowest_cost", win, lose)


def choose_clean(costs: Sequence[float], rewards: Sequence[float], rules: PairRules) -> Choice:
    """Pair for a clean prompt: winner = highest reward among candidates costing <= ``cost_budget``,
    loser = the lowest-reward other candidate (any cost). Skipped as ``over_budget`` if no candidate
    is within budget, as ``no_lower_reward`` if the loser's reward is not below the winner's by more
    than ``min_reward_gap`` (ties, or the only affordable candidate being the worst)."""
    if len(costs) != len(rewards) or len(costs) < 2:
        raise ValueError(f"need >= 2 candidates with one cost and one reward each, got {len(costs)} and {len(rewards)}")
    if _nan([*costs, *rewards], rules, "score"):
        return Choice("nan_score")
    within = [k for k, c in enumerate(costs) if c <= rules.cost_budget]
    if not within:
        return Choice("over_budget")
    win = max(within, key=lambda k: (rewards[k], -costs[k], -k))
    lose = min((k for k in range(len(costs)) if k != win), key=lambda k: (rewards[k], -costs[k], k))
    if rewards[win] - rewards[lose] <= rules.min_reward_gap:
        return Choice("no_lower_reward")
    return Choice("highest_reward", win, lose)


def stable_hash(*parts) -> int:
    """A 63-bit hash of ``parts`` that is the same in every process and Python run (unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def blend(kinds: Sequence[str], keys: Sequence, ratio: float, seed: int = 0) -> list[bool]:
    """Which accepted pairs to keep so that harmful : clean = ``ratio`` : 1 (``ratio <= 0`` keeps all).

    The larger kind is subsampled: its pairs with the smallest ``stable_hash(seed, key)`` are kept,
    so the choice depends only on the pairs' keys, not on their order or on how the run was split.
    If one kind has no pairs at all, nothing is dropped (there is nothing to balance against).
    """
    n_h = sum(k == "harmful" for k in kinds)
    n_c = sum(k == "clean" for k in kinds)
    keep = [True] * len(kinds)
    if ratio <= 0 or n_h == 0 or n_c == 0:
        return keep
    if n_h > ratio * n_c:
        kind, target = "harmful", max(1, round(ratio * n_c))
    else:
        kind, target = "clean", max(1, round(n_h / ratio))
    members = [i for i, k in enumerate(kinds) if k == kind]
    ranked = sorted(members, key=lambda i: stable_hash(seed, "blend", keys[i]))
    for i in ranked[target:]:
        keep[i] = False
    return keep
