"""What every attack shares: its target, its result, the context it runs in, and the registry.

An attack is a function ``attack(ctx, target, generator) -> AttackResult`` registered under a name
with :func:`register`; it must draw all randomness from ``generator`` (seeded per target by the
runner), so the same seed gives the same prompts, and stop when ``ctx.budget`` says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

ATTACKS: dict[str, Callable] = {}


def register(name: str):
    """Decorator: add an attack function to :data:`ATTACKS` under ``name``."""
    def wrap(fn):
        ATTACKS[name] = fn
        return fn
    return wrap


def get_attack(name: str) -> Callable:
    from scdpo.attack import p4d, paraphrase, ring_a_bell, unlearndiff  # noqa: F401  (registration)

    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name]


@dataclass(frozen=True)
class Target:
    """One prompt to attack: its text, the concept it asks for, its I2P categories, the words that
    name the concept in it, a safe counterpart when known, and its sampling seed."""

    prompt: str
    concept: str
    categories: tuple[str, ...]
    words: tuple[str, ...] = ()
    safe_prompt: str | None = None
    seed: int = 0


@dataclass
class AttackResult:
    """An adversarial prompt: ``prompt`` (the text written), ``token_ids`` (the searched tokens, when
    the attack works on tokens), ``loss`` (the attack's own objective, lower is better),
    ``iterations`` run, ``success`` (the judge's verdict on a check image, None when unchecked)."""

    prompt: str
    token_ids: list[int] | None = None
    loss: float | None = None
    iterations: int = 0
    success: bool | None = None


@dataclass
class Budget:
    """Per-target budget: ``iters`` iterations (the attack's own unit) and ``seconds`` of wall clock.
    Attacks ask ``over(done)`` after each iteration, which also advances ``bar`` (a tqdm bar) if any."""

    iters: int
    seconds: float | None = None
    start: float = field(default_factory=time.monotonic)
    bar: object = None

    def over(self, done: int) -> bool:
        if self.bar is not None and done > self.bar.n:
            self.bar.update(done - self.bar.n)
        return done >= self.iters or (self.seconds is not None and time.monotonic() - self.start >= self.seconds)


@dataclass
class AttackContext:
    """The model under attack (``victim``: LoRA fused, sampled with the guard), the unaligned
    ``base`` model (loaded on first use; the victim itself when there is no LoRA), the sampler, the
    judge (``harmful(images) -> bool tensor``, or None) and the attack's hyper-parameters."""

    cfg: object
    victim: object
    sampler: object
    harmful: Callable[[torch.Tensor], torch.Tensor] | None = None
    _base: object = None
    budget: Budget | None = None

    @property
    def base(self):
        if self._base is None:
            if not self.cfg.lora:
                self._base = self.victim
            else:
                from scdpo.models.t2i import T2IModel

                self._base = T2IModel.from_pretrained(self.cfg.model, device=self.victim.device,
                                                      dtype=self.victim.dtype)
        return self._base

    @property
    def base_sampler(self):
        """The sampler without guard or negative prompt (the unconstrained model makes the attacks'
        target images)."""
        return replace(self.sampler, negative_prompt=None, guard=None)

    def check(self, prompt: str, seed: int) -> bool | None:
        """Does the victim draw something harmful for ``prompt`` at ``seed`` (and, with
        ``check_seeds`` k > 1, at every one of seed + 1 .. seed + k - 1)? None without a judge."""
        if self.harmful is None:
            return None
        k = self.cfg.check_seeds
        return bool(self.harmful(self.victim.sample([prompt] * k, [seed + i for i in range(k)], self.sampler)).all())
