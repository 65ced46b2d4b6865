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

The filter (ninth round): a candidate ``t`` of span ``h`` is kept only if

    cos(t, h) >= min_sim    and    cos(t, h) - max_{w in keep} cos(t, w) >= margin,

with ``keep`` the words the clean side uses (the clean prompts' words, the safe counterparts' words).
The first drops the word pieces and function words that a span without a meaningful mean embedding
lands on ("ogre" -> "sk", "oni" -> "in"); the second drops what sits nearer a clean word than the
harmful one ("hand" for a fist: nearer "handbag"; "knives" for a butcher knife: nearer the clean
"fork and knife"; "water" for a drop of blood), since teaching those words the safe anchor's target
teaches it to the clean prompts too (docs/results.md, eighth round: the clean grid's scissors). A
clean word itself always fails the margin (its cosine to itself is 1), so ``keep`` also excludes.
``min_sim = 0`` and ``margin <= -2`` turn the filter off (the eighth round's form).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from scdpo.models import tokens
from scdpo.prompts.edits import ARTICLES, differing_spans
from scdpo.world.records import PromptRecord

__all__ = ["clean_words", "emojiworld_excluded_words", "emojiworld_safe_words", "harmful_span", "neighbour_rewrites",
           "pick", "rewrite_span"]


def harmful_span(prompt: str, safe: str) -> tuple[int, int] | None:
    """Word positions [i, j) of ``prompt`` that differ from its counterpart ``safe`` (the article
    before them excluded), or None unless exactly one span differs."""
    spans = differing_spans(prompt, safe)
    if len(spans) != 1:
        return None
    i, j = spans[0]
    if j - i > 1 and prompt.split()[i].lower() in ARTICLES:  # "an axe" / "a sailboat": the article is not the harm
        i += 1
    return i, j


def rewrite_span(prompt: str, span: tuple[int, int], word: str) -> str:
    """``prompt`` with the words of ``span`` replaced by ``word``, and an article just before it
    made to agree ("an axe" -> "a hammer")."""
    words = prompt.split()
    i, j = span
    out = words[:i] + [word] + words[j:]
    if i > 0 and out[i - 1].lower() in ARTICLES:
        article = "an" if re.match(r"[aeiou]", word, re.IGNORECASE) else "a"
        out[i - 1] = article.capitalize() if out[i - 1][0].isupper() else article
    return " ".join(out)


def clean_words(texts: list[str]) -> set[str]:
    """The lower-cased words of ``texts`` (the filter's clean side)."""
    return {w for t in texts for w in re.findall(r"[\w'-]+", t.lower())}


def emojiworld_safe_words() -> set[str]:
    """Every word of every safe concept's keywords."""
    from scdpo.world.vocab import load_vocabulary

    return clean_words([kw for c in load_vocabulary().concepts if not c.harmful for kw in (c.name, *c.keywords("all"))])


def emojiworld_excluded_words() -> set[str]:
    """Every word of every concept's held-out keywords and of every safe concept's keywords."""
    from scdpo.world.vocab import load_vocabulary

    return emojiworld_safe_words() | clean_words([kw for c in load_vocabulary().concepts if c.harmful for kw in c.heldout])


def pick(seed: int, index: int, share: float, n: int, salt: str = "neighbours") -> tuple[bool, int]:
    """Whether prompt ``index`` is rewritten, and which of the ``n`` candidates (a stable hash, so a
    build rewrites the same prompts on every process and every resume; ``salt`` keeps two rewrites'
    choices apart: the mined words' are not the neighbours')."""
    h = int.from_bytes(hashlib.sha256(f"{salt}:{seed}:{index}".encode()).digest()[:8], "big")
    return (h % 10_000) < share * 10_000, (h // 10_000) % max(n, 1)


def neighbour_rewrites(records: list[PromptRecord], model, n: int, share: float, seed: int,
                       exclude: set[str] = frozenset(), keep: set[str] = frozenset(),
                       min_sim: float = 0.0, margin: float = -2.0) -> tuple[list[PromptRecord], int]:
    """``records`` with a share of the harmful ones rewritten (module docstring: ``keep``,
    ``min_sim`` and ``margin`` are its filter); returns them and how many were rewritten. Records
    without a safe counterpart, or whose counterpart differs in more than one span, stay as they
    are. A rewritten record keeps its concepts and counterpart and notes ``meta["neighbour_of"]``
    (the words it replaced)."""
    cache: dict[str, list[str]] = {}
    near_keep = _Nearness(model, sorted(keep)) if min_sim > 0 or (keep and margin > -2) else None
    out, rewritten = [], 0
    for index, r in enumerate(records):
        span = harmful_span(r.prompt, r.safe_prompt) if r.harmful and r.safe_prompt else None
        chosen, k = pick(seed, index, share, n)
        if span is None or not chosen:
            out.append(r)
            continue
        words = " ".join(r.prompt.split()[span[0]:span[1]])
        if words.lower() not in cache:
            cache[words.lower()] = _options(model, words, n, exclude, near_keep, min_sim, margin)
        options = cache[words.lower()]
        if not options:
            out.append(r)
            continue
        word = options[k % len(options)]
        out.append(dataclasses.replace(r, prompt=rewrite_span(r.prompt, span, word),
                                       meta={**r.meta, "neighbour_of": words}))
        rewritten += 1
    return out, rewritten


class _Nearness:
    """Cosines of candidate words to a span and to the nearest ``keep`` word (the keep matrix built once)."""

    def __init__(self, model, keep: list[str]):
        self.model = model
        self.keep = tokens.word_vectors(model, keep) if keep else None

    def __call__(self, span: str, candidates: list[str]) -> tuple[list[float], list[float]]:
        vecs = tokens.word_vectors(self.model, [span, *candidates])
        sim = (vecs[1:] @ vecs[0]).tolist()
        near = (vecs[1:] @ self.keep.T).amax(1).tolist() if self.keep is not None else [-1.0] * len(candidates)
        return sim, near


def _options(model, words: str, n: int, exclude: set[str], near_keep, min_sim: float, margin: float) -> list[str]:
    """The first ``n`` of the tokens nearest ``words`` that pass the exclusions and the filter."""
    own = set(re.findall(r"[\w'-]+", words.lower()))
    # ask for more than n: the excluded, the span's own and the filtered ones are dropped after
    found = [w for w in tokens.nearest_tokens(model, words, 8 * n + 16) if w.lower() not in exclude | own]
    if near_keep is not None and found:
        sim, near = near_keep(words, found)
        found = [w for w, s, k in zip(found, sim, near) if s >= min_sim and s - k >= margin]
    return found[:n]
