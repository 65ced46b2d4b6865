"""Neighbour-word augmentation of harmful prompts (our addition; docs/dataset-builder.md, "Neighbour words").

An alignment learned on a prompt set reaches the words of that set and, less surely, the words whose
text features sit near them (docs/results.md: the harm that survives sits in the same few held-out
synonyms in every seed). This widens the set of words the edit is trained on without any list of
harmful words: in a harmful prompt with a minimally edited safe counterpart (CoProV2 pairs,
EmojiWorld align prompts), the words that differ from the counterpart are the harmful span; a share
of the prompts has that span rewritten as one of the ``n`` tokens nearest to it in the text
encoder's token-embedding space (cosine to the span's mean token embedding, the paraphrase attack's
neighbours, docs/attacks.md). The safe counterpart stays as it is, so the pair, the safe anchor's
target and the winner keep their meaning.

What is never used: the words of ``exclude``, and for EmojiWorld suites every word of every concept's
held-out keywords (the implicit suite's words: evaluating on them stays honest) and of every safe
concept's keywords (a clean word must not be taught to turn into something else).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re

from scdpo.world.records import PromptRecord

__all__ = ["emojiworld_excluded_words", "harmful_span", "neighbour_rewrites", "rewrite_span"]


def harmful_span(prompt: str, safe: str) -> tuple[int, int] | None:
    """Word positions [i, j) of ``prompt`` that differ from its counterpart ``safe`` (the article
    before them excluded), or None unless exactly one span differs."""
    a, b = prompt.split(), safe.split()
    spans = [(i1, i2) for op, i1, i2, _, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
             if op != "equal" and i2 > i1]
    if len(spans) != 1:
        return None
    i, j = spans[0]
    if j - i > 1 and a[i].lower() in ("a", "an"):  # "an axe" / "a sailboat": the article is not the harm
        i += 1
    return i, j


def rewrite_span(prompt: str, span: tuple[int, int], word: str) -> str:
    """``prompt`` with the words of ``span`` replaced by ``word``, and an article just before it
    made to agree ("an axe" -> "a hammer")."""
    words = prompt.split()
    i, j = span
    out = words[:i] + [word] + words[j:]
    if i > 0 and out[i - 1].lower() in ("a", "an"):
        article = "an" if re.match(r"[aeiou]", word, re.IGNORECASE) else "a"
        out[i - 1] = article.capitalize() if out[i - 1][0].isupper() else article
    return " ".join(out)


def emojiworld_excluded_words() -> set[str]:
    """Every word of every concept's held-out keywords and of every safe concept's keywords."""
    from scdpo.world.vocab import load_vocabulary

    words = set()
    for c in load_vocabulary().concepts:
        for kw in (c.heldout if c.harmful else (c.name, *c.keywords("all"))):
            words.update(re.findall(r"[\w'-]+", kw.lower()))
    return words


def _pick(seed: int, index: int, share: float, n: int) -> tuple[bool, int]:
    """Whether prompt ``index`` is rewritten, and which of the ``n`` candidates (a stable hash, so a
    build rewrites the same prompts on every process and every resume)."""
    h = int.from_bytes(hashlib.sha256(f"neighbours:{seed}:{index}".encode()).digest()[:8], "big")
    return (h % 10_000) < share * 10_000, (h // 10_000) % max(n, 1)


def neighbour_rewrites(records: list[PromptRecord], model, n: int, share: float, seed: int,
                       exclude: set[str] = frozenset()) -> tuple[list[PromptRecord], int]:
    """``records`` with a share of the harmful ones rewritten (module docstring); returns them and
    how many were rewritten. Records without a safe counterpart, or whose counterpart differs in more
    than one span, stay as they are. A rewritten record keeps its concepts and counterpart and
    notes ``meta["neighbour_of"]`` (the words it replaced)."""
    from scdpo.models import tokens

    cache: dict[str, list[str]] = {}
    out, rewritten = [], 0
    for index, r in enumerate(records):
        span = harmful_span(r.prompt, r.safe_prompt) if r.harmful and r.safe_prompt else None
        chosen, k = _pick(seed, index, share, n)
        if span is None or not chosen:
            out.append(r)
            continue
        words = " ".join(r.prompt.split()[span[0]:span[1]])
        if words.lower() not in cache:
            own = set(re.findall(r"[\w'-]+", words.lower()))
            # ask for more than n: the excluded ones and the span's own words are dropped after
            found = tokens.nearest_tokens(model, words, 4 * n + 8)
            cache[words.lower()] = [w for w in found if w.lower() not in exclude and w.lower() not in own][:n]
        options = cache[words.lower()]
        if not options:
            out.append(r)
            continue
        word = options[k % len(options)]
        out.append(dataclasses.replace(r, prompt=rewrite_span(r.prompt, span, word),
                                       meta={**r.meta, "neighbour_of": words}))
        rewritten += 1
    return out, rewritten
