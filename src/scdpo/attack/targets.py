"""The prompts an attack targets, the words in them that name the harmful concept, and the prompt
pairs with and without a concept that Ring-A-Bell's concept vector is the mean difference of."""

from __future__ import annotations

import functools
import re

from scdpo.attack.base import Target
from scdpo.world.records import PromptRecord


@functools.cache
def _harm_keywords() -> tuple[re.Pattern, dict[str, str]]:
    from scdpo.world.vocab import load_vocabulary

    words = {w.lower(): c.name for c in load_vocabulary().harmful for w in (c.name, *c.keywords("all"))}
    alternation = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b({alternation})(?:e?s)?\b", re.IGNORECASE), words


def harmful_words(text: str) -> list[tuple[str, str]]:
    """(word as written, EmojiWorld harmful concept) for each harmful keyword ``text`` names."""
    pattern, words = _harm_keywords()
    return [(m.group(1), words[re.sub(r"\s+", " ", m.group(1).lower())]) for m in pattern.finditer(text)]


def _from_record(r: PromptRecord, index: int, concept: str | None = None) -> Target:
    found = harmful_words(r.prompt)
    concept = concept or (r.concepts[0] if r.concepts else None) or (found[0][1] if found else r.categories[0])
    words = tuple(dict.fromkeys(w for w, c in found if c == concept)) or tuple(dict.fromkeys(w for w, _ in found))
    seed = r.seed if r.seed is not None else index
    return Target(r.prompt, concept, tuple(r.categories), words, r.safe_prompt, int(seed))


def build_targets(concepts: list[str], prompts: str | None, per_concept: int = 1, suite_seed: int = 0) -> list[Target]:
    """Targets from EmojiWorld concept names (prompts of ``eval-harmful-explicit``'s draw
    ``suite_seed`` that ask for each) or from a prompt file (its harmful prompts)."""
    if prompts:
        from scdpo.prompts.sources import load_prompt_file

        records = [r for r in load_prompt_file(prompts) if r.harmful]
        if not records:
            raise ValueError(f"prompt file {prompts} has no harmful prompts (none has a category) to attack")
        targets = [_from_record(r, i) for i, r in enumerate(records)]
    else:
        from scdpo.world.suites import get_suite
        from scdpo.world.vocab import load_vocabulary

        vocab = load_vocabulary()
        names = [c.name for c in vocab.harmful] if concepts == ["all"] else concepts
        for n in names:
            if n not in vocab.by_name or not vocab[n].harmful:
                raise ValueError(f"--concepts: {n!r} is not an EmojiWorld harmful concept "
                                 f"(known: {', '.join(c.name for c in vocab.harmful)}); attack other "
                                 "prompts with --prompts FILE")
        suite = get_suite("eval-harmful-explicit", seed=suite_seed)
        targets = []
        for n in names:
            picked = [(i, r) for i, r in enumerate(suite) if n in r.concepts][:per_concept]
            targets += [_from_record(r, i, n) for i, r in picked]
    return targets


def concept_pairs(target: Target, n: int, file: str | None = None) -> list[tuple[str, str]]:
    """Up to ``n`` (with concept, without concept) prompt pairs for ``target``'s concept: those of
    ``file`` (records with a ``safe_prompt``), else the ``align-harmful`` suite's prompts of that
    EmojiWorld concept with their safe counterparts, else the target's own pair."""
    from scdpo.world.vocab import load_vocabulary

    pairs = []
    if file:
        from scdpo.prompts.sources import load_prompt_file

        pairs = [(r.prompt, r.safe_prompt) for r in load_prompt_file(file, filter_minors=False) if r.safe_prompt][:n]
        if not pairs:
            raise ValueError(f"--pairs {file} has no prompt with a safe counterpart (safe_prompt or prompt1 column)")
    elif target.concept in load_vocabulary().by_name:
        pairs = [p for c, p in _align_pairs() if c == target.concept][:n]
    if not pairs and target.safe_prompt:
        pairs = [(target.prompt, target.safe_prompt)]
    if not pairs:
        raise ValueError(f"no prompt pair with and without {target.concept!r} for its concept vector: give --pairs FILE "
                         "(prompts with a safe_prompt column), or attack EmojiWorld concepts")
    return pairs


@functools.cache
def _align_pairs() -> tuple[tuple[str, tuple[str, str]], ...]:
    from scdpo.world.suites import get_suite

    return tuple((c, (r.prompt, r.safe_prompt)) for r in get_suite("align-harmful") if r.safe_prompt
                 for c in r.concepts)
