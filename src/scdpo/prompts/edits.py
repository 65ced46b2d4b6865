"""Where a prompt differs from its minimally edited counterpart (CoProV2 pairs, EmojiWorld suites).

A harmful prompt and its safe counterpart differ in the harmful words and nothing else ("a small
dagger on the left" / "a small banana on the left"), so the pair alone locates them, with no list
of harmful words. The safe anchor's masked prompt (scdpo.train.anchor) and the neighbour words'
rewrite (scdpo.data.neighbours) both read the spans found here.
"""

from __future__ import annotations

import difflib

__all__ = ["ARTICLES", "differing_spans"]

ARTICLES = ("a", "an")


def differing_spans(prompt: str, counterpart: str) -> list[tuple[int, int]]:
    """Word positions [i, j) of ``prompt`` (split on whitespace) that differ from ``counterpart``,
    in order; words only in the counterpart (an empty span of ``prompt``) are not spans."""
    a, b = prompt.split(), counterpart.split()
    return [(i1, i2) for op, i1, i2, _, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
            if op != "equal" and i2 > i1]
