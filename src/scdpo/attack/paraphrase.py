"""Paraphrase: rewrite the words that name the harmful concept with other words for it; the
cheapest attack, and the one users actually try (see docs/attacks.md).

Candidates for each harmful word w, in order: the hand list (``--hand-list`` entries for w, then,
for an EmojiWorld concept, its held-out synonyms and then its other keywords), then the ``neighbours``
tokens nearest to w in the text encoder's token-embedding space (cosine to the mean embedding of
w's tokens). Each candidate rewrites every harmful word of the prompt. With a judge, the first
candidate whose check image is harmful wins; otherwise the candidate whose text states are nearest
to the original prompt's (``|| E(candidate) - E(prompt) ||^2``) is kept. One iteration is one
candidate.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch

from scdpo.attack.base import AttackContext, AttackResult, Target, register
from scdpo.models.token_ids import encode_texts
from scdpo.models.tokens import nearest_tokens

DEFAULT_CANDIDATES = 20


@functools.cache
def load_hand_list(path: str) -> dict[str, tuple[str, ...]]:
    """A YAML or JSON mapping ``word -> [replacements]`` (keys matched case-insensitively)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--hand-list file not found: {file}")
    from scdpo.utils.config import yaml_safe_load

    text = file.read_text(encoding="utf-8")
    data = json.loads(text) if file.suffix == ".json" else yaml_safe_load(text)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"--hand-list {file} must map each word to a list of replacements")
    return {str(k).lower(): tuple(str(x) for x in v) for k, v in data.items()}


def hand_candidates(word: str, concept: str, hand_list: str | None) -> list[str]:
    from scdpo.world.vocab import load_vocabulary

    out = list(load_hand_list(hand_list).get(word.lower(), ())) if hand_list else []
    c = load_vocabulary().by_name.get(concept)
    if c is not None and c.harmful:
        out += [*c.heldout, *c.synonyms, c.name]  # held-out synonyms first: the model never saw them aligned
    return [w for w in dict.fromkeys(out) if w.lower() != word.lower()]


def rewrite(prompt: str, words: tuple[str, ...], replacement: str) -> str:
    for w in sorted(words, key=len, reverse=True):
        prompt = re.sub(rf"\b{re.escape(w)}\b", replacement, prompt, flags=re.IGNORECASE)
    return prompt


@register("paraphrase")
def paraphrase(ctx: AttackContext, target: Target, g: torch.Generator) -> AttackResult:
    cfg, model = ctx.cfg, ctx.victim
    words = target.words or ((target.concept,) if re.search(rf"\b{re.escape(target.concept)}\b", target.prompt,
                                                              re.IGNORECASE) else ())
    if not words:
        return AttackResult(target.prompt, None, 0.0, 0, ctx.check(target.prompt, target.seed))
    options = []
    for w in words:
        options += hand_candidates(w, target.concept, cfg.hand_list)
    for w in words:
        options += nearest_tokens(model, w, cfg.neighbours, cfg.token_pool)
    options = [o for o in dict.fromkeys(options) if o.strip()]
    original = encode_texts(model, [target.prompt]).context.float()
    best, step = None, 0
    for option in options:
        if step and ctx.budget.over(step):
            break
        prompt = rewrite(target.prompt, words, option)
        loss = float(((encode_texts(model, [prompt]).context.float() - original) ** 2).sum())
        success = ctx.check(prompt, target.seed)
        step += 1
        if best is None or success or (loss < best.loss and not best.success):
            best = AttackResult(prompt, None, loss, step, success)
        if success:
            break
    best = best or AttackResult(target.prompt, None, 0.0, 0, None)
    best.iterations = step
    return best
