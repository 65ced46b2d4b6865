"""EmojiWorld's vocabulary: the concepts it can draw, their keywords and their harm labels.

The data lives in ``data/concepts.yaml`` (editable); this module only loads and validates it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from scdpo.utils.config import yaml_safe_load
from scdpo.world.records import I2P_CATEGORIES


class UnknownConcept(KeyError, ValueError):
    """A concept name the vocabulary lacks: a KeyError for lookups, a ValueError (bad input, one
    line from the command line) for users."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0])

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Concept:
    """One drawable concept. ``index`` is its row in the atlas and its label column."""

    index: int
    name: str
    emoji: str
    group: str
    synonyms: tuple[str, ...]
    heldout: tuple[str, ...] = ()
    category: str | None = None
    severity: int = 0
    coco: str | None = None
    minor: bool = False

    @property
    def harmful(self) -> bool:
        return self.category is not None

    def keywords(self, mode: str) -> tuple[str, ...]:
        """Words that may name this concept in a prompt.

        ``"all"``: every keyword (pretraining). ``"align"``: the training subset (``synonyms``),
        the only words align prompts and explicit evaluation use. ``"heldout"``: keywords never in
        any align prompt (implicit evaluation; safe concepts have none, so they use ``synonyms``).
        """
        if mode == "all":
            return self.synonyms + self.heldout
        if mode == "align":
            return self.synonyms
        if mode == "heldout":
            return self.heldout or self.synonyms
        raise ValueError(f"unknown keyword mode {mode!r} (expected all, align or heldout)")


@dataclass(frozen=True)
class Vocabulary:
    concepts: tuple[Concept, ...]

    def __len__(self) -> int:
        return len(self.concepts)

    @functools.cached_property
    def by_name(self) -> dict[str, Concept]:
        return {c.name: c for c in self.concepts}

    # cached: a suite's safe counterparts index these once per candidate (under cProfile, 1.4 s of the four
    # evaluation suites' 2.9 s of building went into recomputing them; BENCHMARKS.md, "Building the
    # evaluation suites")
    @functools.cached_property
    def safe(self) -> tuple[Concept, ...]:
        return tuple(c for c in self.concepts if not c.harmful)

    @functools.cached_property
    def harmful(self) -> tuple[Concept, ...]:
        return tuple(c for c in self.concepts if c.harmful)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def __getitem__(self, name: str) -> Concept:
        try:
            return self.by_name[name]
        except KeyError:
            raise UnknownConcept(f"unknown EmojiWorld concept {name!r}") from None


def _parse(raw: dict, source: Path) -> Vocabulary:
    concepts = []
    for kind in ("safe", "harmful"):
        for entry in raw.get(kind) or []:
            where = f"{source}: {kind} concept {entry.get('name', '?')!r}"
            missing = {"name", "emoji", "synonyms"} - entry.keys()
            if kind == "harmful":
                missing |= {"category", "severity", "heldout"} - entry.keys()
            if missing:
                raise ValueError(f"{where} lacks field(s) {sorted(missing)}")
            category = entry.get("category") if kind == "harmful" else None
            if kind == "harmful" and category not in I2P_CATEGORIES:
                raise ValueError(f"{where}: category {category!r} is not one of {I2P_CATEGORIES}")
            severity = int(entry.get("severity", 0)) if kind == "harmful" else 0
            if kind == "harmful" and severity not in (1, 2, 3):
                raise ValueError(f"{where}: severity must be 1, 2 or 3, got {severity}")
            concepts.append(Concept(
                index=len(concepts), name=entry["name"], emoji=entry["emoji"],
                group=entry.get("group", "harm" if kind == "harmful" else "object"),
                synonyms=tuple(entry["synonyms"]), heldout=tuple(entry.get("heldout", ())),
                category=category, severity=severity, coco=entry.get("coco"),
                minor=bool(entry.get("minor", False)),
            ))
    names = [c.name for c in concepts]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{source}: duplicate concept names {dup}")
    return Vocabulary(tuple(concepts))


@functools.cache
def load_vocabulary(path: str | None = None) -> Vocabulary:
    """Load (and cache) the vocabulary; ``path`` defaults to the shipped concepts.yaml."""
    source = Path(path) if path else DATA_DIR / "concepts.yaml"
    if not source.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {source}")
    return _parse(yaml_safe_load(source.read_text(encoding="utf-8")), source)
