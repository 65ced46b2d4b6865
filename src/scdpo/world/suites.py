"""Named, deterministic prompt suites of EmojiWorld.

Each suite is a :class:`SceneRecipe`, a default size and its own seed stream: scene ``i`` of suite
``name`` with user seed ``s`` is drawn from ``numpy.random.default_rng([suite_id, s, i])``, so it
does not depend on how many scenes are asked for or how they are batched. Every prompt carries its
ground truth (concepts, harm categories, severity, the full scene) in ``PromptRecord.meta``.

Keyword promise: harmful concepts in ``align-*`` and ``eval-harmful-explicit`` prompts are named
only by their training keywords (``synonyms``); ``eval-harmful-implicit`` names them only by
``heldout`` keywords, which no align prompt ever contains.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from scdpo.world.records import PromptRecord
from scdpo.world.scene import Scene, SceneRecipe, sample_scene
from scdpo.world.vocab import load_vocabulary


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    recipe: SceneRecipe
    default_n: int

    @property
    def stream(self) -> int:
        """A stable per-suite seed stream (so suites never share scenes by seed)."""
        return zlib.crc32(self.name.encode())


_ONE, _FEW = {1: 1.0}, {1: 0.5, 2: 0.5}
SUITES: dict[str, Suite] = {s.name: s for s in [
    Suite("train", "pretraining scenes: 1-3 sprites, 20% with a harmful one, every keyword",
          SceneRecipe(harmful="mixed", p_harmful=0.2, harmful_keywords="all"), 100_000),
    Suite("align-harmful", "preference-pair prompts naming one harmful concept (training keywords), alone or beside a benign one",
          SceneRecipe(counts=_FEW, harmful="one", harmful_keywords="align"), 2_000),
    Suite("align-clean", "preference-pair prompts with 1-3 benign sprites",
          SceneRecipe(harmful="none"), 2_000),
    Suite("eval-clean", "evaluation: 1-2 benign sprites (prompt alignment, quality)",
          SceneRecipe(counts=_FEW, harmful="none"), 500),
    Suite("eval-harmful-explicit", "evaluation: one harmful concept named by a training keyword",
          SceneRecipe(counts=_ONE, harmful="one", harmful_keywords="align"), 370),
    Suite("eval-harmful-implicit", "evaluation: one harmful concept named only by held-out keywords",
          SceneRecipe(counts=_ONE, harmful="one", harmful_keywords="heldout"), 370),
    Suite("eval-mixed", "evaluation: a harmful concept plus 1-2 benign ones; the safe answer keeps the benign ones",
          SceneRecipe(counts={2: 0.6, 3: 0.4}, harmful="one", harmful_keywords="align"), 370),
]}


def get_suite_spec(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown EmojiWorld suite {name!r}; known suites: {', '.join(SUITES)}") from None


def suite_scenes(name: str, n: int | None = None, seed: int = 0, start: int = 0) -> list[Scene]:
    """Scenes ``start .. start+n-1`` of a suite (``n`` defaults to the suite's size)."""
    suite = get_suite_spec(name)
    n = suite.default_n if n is None else n
    if n < 0:
        raise ValueError(f"suite {name}: n must be >= 0, got {n}")
    vocab = load_vocabulary()
    harmful = vocab.harmful
    scenes = []
    for i in range(start, start + n):
        rng = np.random.default_rng([suite.stream, seed, i])
        forced = harmful[i % len(harmful)] if suite.recipe.harmful == "one" else None
        scenes.append(sample_scene(suite.recipe, vocab, rng, seed=i, harmful_concept=forced))
    return scenes


def get_suite(name: str, n: int | None = None, seed: int = 0) -> list[PromptRecord]:
    """A suite's prompts with their ground truth, as :class:`PromptRecord`s."""
    return [s.to_record(f"emojiworld:{name}") for s in suite_scenes(name, n, seed)]
