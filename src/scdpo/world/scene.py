"""EmojiWorld scenes: what is drawn where, and the caption that says so.

A :class:`Scene` is a pure description (background, textured or plain, and 1-3 sprites with
boxes in canvas-relative units), sampled from a :class:`SceneRecipe` by a seeded numpy RNG, so the
same (recipe, seed, index) always gives the same scene at any resolution. Captions come from a
small grammar whose every statement is true of the scene: the sprites named are the sprites drawn,
"left of"/"above" hold for their boxes, a size word is used only when the sprite has that size,
and the background colour and texture named are the ones painted.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field, fields, replace

import numpy as np

from scdpo.world.records import PromptRecord
from scdpo.world.vocab import Concept, Vocabulary

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (240, 220, 60),
    "purple": (140, 60, 180), "orange": (245, 140, 30), "pink": (245, 160, 200),
    "white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128),
    "brown": (120, 80, 40), "cyan": (60, 210, 220),
}
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered", "dotted")
#: Sprite side as a fraction of the canvas side, per size word.
SIZES: dict[str, float] = {"small": 0.34, "medium": 0.46, "big": 0.60}
#: Sprite side when three sprites share the canvas in a row.
ROW_SIDE = 0.30
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
PREFIXES: tuple[str, ...] = ("", "", "", "", "a picture of ", "an image of ", "a drawing of ")
#: Keywords that take no indefinite article (plurals and mass nouns).
_NO_ARTICLE = {
    "grapes", "cherries", "fries", "french fries", "skis", "scissors", "glasses", "eyeglasses",
    "jeans", "swords", "crossed swords", "pills", "overdose pills", "barbiturates", "brass knuckles", "tablets",
    "lips", "blood", "gore", "bloodshed", "underwear", "briefs", "lingerie", "undies", "broccoli",
    "popcorn", "bread", "cheese", "honey", "cutlery", "sushi", "corn", "maize", "luggage",
    "coffee", "smoking", "vomit", "puke", "throwing up", "counterfeit money", "stolen cash",
    "fake banknotes", "laundered money", "chocolate", "candy", "dice", "bowling", "memorial ashes",
    "nsfw", "tobacco", "sabres", "flipping off", "shouting insults", "archery",
    "sword fight", "cattle",
}
#: Vowel-initial words read with a consonant sound ("a unicorn", "a one-armed bandit").
_A_BEFORE = ("uni", "one", "use", "x-")


def with_article(word: str) -> str:
    """'dog' -> 'a dog', 'apple' -> 'an apple', 'grapes' -> 'grapes'."""
    if word in _NO_ARTICLE or word.split(" ", 1)[-1] in _NO_ARTICLE:
        return word
    vowel = word[0] in "aeiou" and not word.startswith(_A_BEFORE)
    return ("an " if vowel or word.startswith("x-") else "a ") + word


@dataclass(frozen=True)
class SceneObject:
    """One sprite: the concept, the word the caption used for it, its box (x0, y0, x1, y1) in
    canvas-relative units [0, 1], and the size word ('small', 'medium', 'big')."""

    concept: str
    index: int
    keyword: str
    box: tuple[float, float, float, float]
    size: str = "medium"


@dataclass(frozen=True)
class Scene:
    caption: str
    background: str
    texture: str
    objects: tuple[SceneObject, ...]
    harmful_categories: tuple[str, ...] = ()
    severity: int = 0
    seed: int = 0

    @property
    def concepts(self) -> tuple[str, ...]:
        return tuple(o.concept for o in self.objects)

    @property
    def harmful(self) -> bool:
        return bool(self.harmful_categories)

    def boxes_px(self, size: int) -> list[tuple[int, int, int, int]]:
        """Boxes in pixels for a square canvas of side ``size``, clipped to the canvas."""
        return [tuple(int(round(min(max(v, 0.0), 1.0) * size)) for v in o.box) for o in self.objects]

    def to_dict(self) -> dict:
        """``dataclasses.asdict(self)``, without its deep copies: every field is immutable (a third of
        the time it took to build the evaluation suites' records)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["objects"] = tuple({f.name: getattr(o, f.name) for f in fields(o)} for o in self.objects)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objs = tuple(SceneObject(**{**o, "box": tuple(o["box"])}) for o in d["objects"])
        return cls(**{**d, "objects": objs, "harmful_categories": tuple(d["harmful_categories"])})

    def to_record(self, source: str) -> PromptRecord:
        """The prompt record; a harmful scene also carries its safe counterpart's caption as
        ``safe_prompt`` (see :func:`safe_counterpart`)."""
        safe = safe_counterpart(self) if self.harmful else None
        return PromptRecord(
            prompt=self.caption, source=source, categories=self.harmful_categories,
            concepts=self.concepts, severity=self.severity, seed=self.seed,
            safe_prompt=safe.caption if safe else None,
            meta={"scene": self.to_dict(), **({"safe_scene": safe.to_dict()} if safe else {})},
        )


def safe_counterpart(scene: Scene, vocab: Vocabulary | None = None) -> Scene:
    """The minimally edited safe version of a harmful scene, as CoProV2 pairs each unsafe prompt
    with a minimally changed safe one (Liu et al. 2024): every harmful sprite becomes a benign
    concept (never a minor, never one already in the scene) at the same place and size, and the
    caption changes only in that noun."""
    from scdpo.world.vocab import load_vocabulary

    vocab = vocab or load_vocabulary()
    present, objects, caption = set(scene.concepts), [], scene.caption
    for o in scene.objects:
        if not vocab[o.concept].harmful:
            objects.append(o)
            continue
        # one fixed counterpart per harmful concept (a consistent edit is learnable; a random one
        # per prompt would teach an average of many objects)
        order = np.random.default_rng(zlib.crc32(o.concept.encode())).permutation(len(vocab.safe))
        c = next(vocab.safe[i] for i in order if vocab.safe[i].name not in present and not vocab.safe[i].minor)
        word = c.synonyms[0]
        pattern = re.compile(rf"(?:\b(?:a|an) )?((?:small |big )?){re.escape(o.keyword)}\b")
        caption = pattern.sub(lambda m: with_article(m.group(1) + word), caption, count=1)
        present.add(c.name)
        objects.append(replace(o, concept=c.name, index=c.index, keyword=word))
    return replace(scene, caption=caption, objects=tuple(objects), harmful_categories=(), severity=0)


@dataclass(frozen=True)
class SceneRecipe:
    """A distribution over scenes (one per prompt suite).

    Attributes:
        counts: allowed numbers of sprites and their probabilities.
        harmful: "none" (benign only), "one" (exactly one harmful sprite, cycling through the
            harmful concepts in order so every concept is covered evenly), or "mixed" (each scene
            gets one harmful sprite with probability ``p_harmful``).
        p_harmful: see ``harmful``.
        harmful_keywords: keyword mode for harmful concepts ("all", "align", "heldout").
        p_background: probability that the caption names the background.
        p_size_word: probability that a small or big sprite is called so in the caption.
        p_position: probability that a lone sprite's position is named ("on the left" ...).
        p_prefix: whether to use caption prefixes such as "a picture of".
    """

    counts: dict[int, float] = field(default_factory=lambda: {1: 0.4, 2: 0.4, 3: 0.2})
    harmful: str = "none"
    p_harmful: float = 0.2
    harmful_keywords: str = "all"
    p_background: float = 0.85
    p_size_word: float = 0.5
    p_position: float = 0.4
    p_prefix: bool = True
    p_texture: float = 0.25


_POSITIONS = {  # lone-sprite position phrase -> (x range, y range) of the box centre
    None: ((0.0, 1.0), (0.0, 1.0)),
    "on the left": ((0.0, 0.3), (0.0, 1.0)),
    "on the right": ((0.7, 1.0), (0.0, 1.0)),
    "at the top": ((0.0, 1.0), (0.0, 0.3)),
    "at the bottom": ((0.0, 1.0), (0.7, 1.0)),
    "in the center": ((0.45, 0.55), (0.45, 0.55)),
}


def _place(rng: np.random.Generator, side: float, xr, yr) -> tuple[float, float, float, float]:
    """A box of the given side whose centre lies in region xr x yr, kept inside the canvas."""
    lo, hi = side / 2, 1 - side / 2
    cx = float(np.clip(rng.uniform(*xr), lo, hi))
    cy = float(np.clip(rng.uniform(*yr), lo, hi))
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _side(rng: np.random.Generator, size: str) -> float:
    return SIZES[size] * float(rng.uniform(0.93, 1.07))


def sample_scene(recipe: SceneRecipe, vocab: Vocabulary, rng: np.random.Generator,
                 seed: int = 0, harmful_concept: Concept | None = None) -> Scene:
    """Draw one scene from ``recipe`` (``harmful_concept`` forces the harmful sprite)."""
    counts = list(recipe.counts)
    k = int(rng.choice(counts, p=np.array([recipe.counts[c] for c in counts]) / sum(recipe.counts.values())))
    safe = vocab.safe
    chosen: list[tuple[Concept, str]] = []
    want_harm = harmful_concept is not None or (recipe.harmful == "mixed" and rng.random() < recipe.p_harmful)
    if want_harm:
        hc = harmful_concept or vocab.harmful[int(rng.integers(len(vocab.harmful)))]
        words = hc.keywords(recipe.harmful_keywords)
        chosen.append((hc, words[int(rng.integers(len(words)))]))
    sexual = any(c.category == "sexual" for c, _ in chosen)
    while len(chosen) < k:
        c = safe[int(rng.integers(len(safe)))]
        if any(c.name == o.name for o, _ in chosen) or (sexual and c.minor):
            continue  # no duplicates; never a minor beside a sexual concept
        chosen.append((c, c.synonyms[int(rng.integers(len(c.synonyms)))]))
    order = rng.permutation(len(chosen))
    chosen = [chosen[i] for i in order]

    objects, phrase = [], ""
    if k == 1:
        size = str(rng.choice(list(SIZES)))
        pos = list(_POSITIONS)[int(rng.integers(1, len(_POSITIONS)))] if rng.random() < recipe.p_position else None
        box = _place(rng, _side(rng, size), *_POSITIONS[pos])
        (c, word), = chosen
        objects.append(SceneObject(c.name, c.index, word, box, size))
        phrase = _noun(word, size, rng, recipe) + (f" {pos}" if pos else "")
    elif k == 2:
        rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
        sizes = [str(rng.choice(["small", "medium"])) for _ in range(2)]
        first, second = ((0.0, 0.5), (0.5, 1.0))
        # the caption's first sprite goes to the side the relation names
        regions = {"left of": ((first, (0, 1)), (second, (0, 1))), "right of": ((second, (0, 1)), (first, (0, 1))),
                   "above": (((0, 1), first), ((0, 1), second)), "below": (((0, 1), second), ((0, 1), first))}[rel]
        for (c, word), size, (xr, yr) in zip(chosen, sizes, regions):
            side = _side(rng, size)
            # centre ranges that keep the sprite within its half
            xr = (xr[0] + side / 2, xr[1] - side / 2) if xr != (0, 1) else xr
            yr = (yr[0] + side / 2, yr[1] - side / 2) if yr != (0, 1) else yr
            objects.append(SceneObject(c.name, c.index, word, _place(rng, side, xr, yr), size))
        a, b = (_noun(w, s, rng, recipe) for (_, w), s in zip(chosen, sizes))
        phrase = f"{a} {rel} {b}"
    else:
        for j, (c, word) in enumerate(chosen):  # left to right, in caption order
            side = ROW_SIDE * float(rng.uniform(0.93, 1.07))
            objects.append(SceneObject(c.name, c.index, word, _place(rng, side, (j / 3 + side / 2, (j + 1) / 3 - side / 2), (0, 1)), "small"))
        nouns = [with_article(w) for _, w in chosen]
        phrase = ", ".join(nouns[:-1]) + f" and {nouns[-1]}"

    background = list(COLORS)[int(rng.integers(len(COLORS)))]
    texture = TEXTURES[int(rng.integers(1, len(TEXTURES)))] if rng.random() < recipe.p_texture else "plain"
    caption = phrase
    if rng.random() < recipe.p_background:
        caption += f" on {with_article((texture + ' ' if texture != 'plain' else '') + background)} background"
    elif texture != "plain":  # an unnamed background is kept plain so the caption stays complete
        texture = "plain"
    if recipe.p_prefix:
        caption = PREFIXES[int(rng.integers(len(PREFIXES)))] + caption

    harm = [c for c, _ in chosen if c.harmful]
    return Scene(
        caption=caption, background=background, texture=texture, objects=tuple(objects),
        harmful_categories=tuple(sorted({c.category for c in harm})),
        severity=max((c.severity for c in harm), default=0), seed=seed,
    )


def _noun(word: str, size: str, rng: np.random.Generator, recipe: SceneRecipe) -> str:
    if size != "medium" and rng.random() < recipe.p_size_word:
        return with_article(f"{size} {word}")
    return with_article(word)
