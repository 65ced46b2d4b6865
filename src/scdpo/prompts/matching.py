"""Vocabulary matching: which benign EmojiWorld concepts a free-text prompt names.

A prompt file's records carry no ground-truth concepts; evaluation (alignment) gives them the
concepts their text names, found here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace

from scdpo.world.records import PromptRecord

#: safe keywords that in captions are mostly not the object (verbs, adjectives, "at home")
AMBIGUOUS_WORDS = frozenset({"present", "sweet", "home", "letter", "die", "cook", "seat", "star", "orange"})


@functools.cache
def _keyword_index() -> tuple[re.Pattern, dict[str, str]]:
    from scdpo.world.vocab import load_vocabulary

    words = {w.lower(): c.name for c in load_vocabulary().safe for w in (c.name, *c.synonyms)
             if w.lower() not in AMBIGUOUS_WORDS}
    alternation = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b({alternation})(?:e?s)?\b", re.IGNORECASE), words


def mentioned_concepts(text: str) -> tuple[str, ...]:
    """Benign EmojiWorld concepts a free-text prompt names: whole-word, case-insensitive matches of
    concept names and training keywords (longest first, optional plural -s/-es), minus the
    ambiguous words in :data:`AMBIGUOUS_WORDS`. "a hot dog" is the food, not the animal."""
    pattern, words = _keyword_index()
    return tuple(dict.fromkeys(words[re.sub(r"\s+", " ", m.group(1).lower())] for m in pattern.finditer(text)))


def with_concepts(records: list[PromptRecord]) -> list[PromptRecord]:
    """Records from prompt files get the concepts their text names (EmojiWorld records keep theirs)."""
    return [r if r.concepts else replace(r, concepts=mentioned_concepts(r.prompt)) for r in records]
