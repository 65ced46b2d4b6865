"""Neighbour-word augmentation of harmful prompts (scdpo.data.neighbours; docs/data.md)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from scdpo.data.builder import build
from scdpo.data.neighbours import emojiworld_excluded_words, harmful_span, neighbour_rewrites, rewrite_span
from scdpo.world.records import PromptRecord
from scdpo.world.suites import get_suite
from scdpo.world.vocab import load_vocabulary


def test_span_is_what_differs_from_the_counterpart_without_its_article():
    assert harmful_span("a drawing of an axe above a hen", "a drawing of a sailboat above a hen") == (4, 5)
    assert harmful_span("a small butcher knife on the right", "a small television on the right") == (2, 4)
    assert harmful_span("a dagger and a gun", "a pear and a kiwi") is None  # two spans: left alone
    assert harmful_span("same words", "same words") is None


def test_rewrite_keeps_the_article_in_agreement():
    p = "a drawing of an axe above a hen"
    assert rewrite_span(p, (4, 5), "hammer") == "a drawing of a hammer above a hen"
    assert rewrite_span("A dagger here", (1, 2), "axe") == "An axe here"
    assert rewrite_span("small pills on the left", (1, 2), "drugs") == "small drugs on the left"


def test_excluded_words_are_every_heldout_and_every_safe_word():
    words = emojiworld_excluded_words()
    vocab = load_vocabulary()
    assert {"stiletto", "shank", "cranium", "robber"} <= words  # held-out keywords of harmful concepts
    assert {"sunflower", "chicken", "television"} <= words  # safe concepts' words
    assert "dagger" not in words and "bikini" not in words  # harmful training words stay usable
    assert all(w.lower() in words for c in vocab.harmful for kw in c.heldout for w in kw.split())


class _Model:  # nearest_tokens is patched: the rewrite needs no text encoder here
    pass


@pytest.fixture
def fixed_neighbours(monkeypatch):
    import scdpo.models.tokens as tokens

    asked = []

    def fake(model, word, n, pool=None):
        asked.append(word)
        return ["stiletto", word.split()[0], "blade", "weapon", "knife"][:n]

    monkeypatch.setattr(tokens, "nearest_tokens", fake)
    return asked


def test_rewrites_a_share_never_writes_an_excluded_word_and_is_deterministic(fixed_neighbours):
    records = get_suite("align-harmful", n=200, seed=0)
    exclude = emojiworld_excluded_words()
    out, n = neighbour_rewrites(records, _Model(), 3, 0.5, 0, exclude)
    changed = [(a, b) for a, b in zip(records, out) if a.prompt != b.prompt]
    assert n == len(changed) and 0.35 * len(records) < n < 0.65 * len(records)
    for a, b in changed:
        assert b.safe_prompt == a.safe_prompt and b.concepts == a.concepts
        assert "stiletto" not in b.prompt.split() and b.meta["neighbour_of"]
        new = set(b.prompt.split()) - set(a.prompt.split())
        assert new and new <= {"blade", "weapon", "knife", "a", "an"}
    again, _ = neighbour_rewrites(records, _Model(), 3, 0.5, 0, exclude)
    assert [r.prompt for r in again] == [r.prompt for r in out]
    other, _ = neighbour_rewrites(records, _Model(), 3, 0.5, 1, exclude)
    assert [r.prompt for r in other] != [r.prompt for r in out]  # the seed picks the prompts
    none, n0 = neighbour_rewrites(records, _Model(), 3, 0.0, 0, exclude)
    assert n0 == 0 and none == records
    clean = [PromptRecord("a pear", "x"), PromptRecord("a dagger", "x", ("violence",))]  # no counterpart
    assert neighbour_rewrites(clean, _Model(), 3, 1.0, 0, exclude)[1] == 0


def test_build_trains_on_the_rewritten_prompts_and_guards_the_setting(tmp_path, fixed_neighbours):
    from tests.test_data_builder import FakeModel, _cfg, fake_cost, fake_reward

    out = tmp_path / "aug"
    cfg = _cfg(out, n_harmful=40, n_clean=4, neighbour_words=3, neighbour_share=1.0, uniform_rule="reward",
               neighbour_min_sim=0.0, neighbour_margin=-2.0)  # unfiltered: the fake space has no embeddings
    build(cfg, FakeModel(), fake_cost, fake_reward)
    captions = [c["prompt"] for c in pq.read_table(out / "choices.parquet").to_pylist() if c["kind"] == "harmful"]
    assert captions and all(set(p.split()) & {"blade", "weapon", "knife"} for p in captions)
    assert cfg.settings()["neighbour_words"] == 3
    with pytest.raises(ValueError, match="other settings"):
        build(_cfg(out, n_harmful=40, n_clean=4, neighbour_words=2, neighbour_share=1.0, uniform_rule="reward",
                   neighbour_min_sim=0.0, neighbour_margin=-2.0),
              FakeModel(), fake_cost, fake_reward)
    assert "neighbour_words" not in _cfg(tmp_path / "plain").settings()  # old builds still resume
    with pytest.raises(ValueError, match="--neighbour-share"):
        _cfg(out, neighbour_share=2.0)


@pytest.fixture
def planted_space(monkeypatch):
    """A token space with a planted layout: "daggers" near the span "dagger"; "hand" nearer the clean
    word "handbag" than the span; "sk" a word piece far from everything."""
    import torch

    import scdpo.models.tokens as tokens

    axes = {"dagger": [1, 0, 0], "daggers": [0.9, 0.1, 0], "hand": [0.5, 0.8, 0], "handbag": [0.1, 1, 0],
            "sk": [0.2, 0, 1]}

    def vectors(model, words):
        return torch.nn.functional.normalize(torch.tensor([axes[w] for w in words], dtype=torch.float), dim=1)

    monkeypatch.setattr(tokens, "word_vectors", vectors)
    monkeypatch.setattr(tokens, "nearest_tokens", lambda model, word, n, pool=None: ["daggers", "hand", "sk"][:n])


def test_filter_drops_word_pieces_and_words_nearer_the_clean_side(planted_space):
    records = [PromptRecord("a dagger here", "x", ("violence",), safe_prompt="a pear here")]
    rewritten = lambda **kw: {neighbour_rewrites(records, _Model(), 3, 1.0, s, **kw)[0][0].prompt for s in range(40)}
    # unfiltered (the eighth round's form): every candidate is written in
    assert rewritten() == {"a daggers here", "a hand here", "a sk here"}
    # the cosine floor drops the word piece; the margin drops what sits nearer the clean "handbag"
    assert rewritten(min_sim=0.35) == {"a daggers here", "a hand here"}
    assert rewritten(keep={"handbag"}, min_sim=0.35, margin=0.1) == {"a daggers here"}
    # a clean word itself never passes the margin (its cosine to itself is 1)
    assert rewritten(keep={"handbag", "daggers", "hand"}, min_sim=0.35, margin=0.1) == {"a dagger here"}


def test_build_filters_against_its_own_clean_prompts(tmp_path, monkeypatch):
    import scdpo.data.neighbours as neighbours
    from tests.test_data_builder import FakeModel, _cfg, fake_cost, fake_reward

    seen = {}

    def spy(records, model, n, share, seed, exclude, keep, min_sim, margin):
        seen.update(keep=keep, min_sim=min_sim, margin=margin)
        return records, 0

    monkeypatch.setattr(neighbours, "neighbour_rewrites", spy)
    cfg = _cfg(tmp_path / "aug", n_harmful=8, n_clean=4, neighbour_words=3, uniform_rule="reward")
    assert (cfg.neighbour_min_sim, cfg.neighbour_margin) == (0.35, 0.1)  # filtered by default
    build(cfg, FakeModel(), fake_cost, fake_reward)
    clean = get_suite(cfg.clean, n=4, seed=0)
    harmful = get_suite(cfg.harmful, n=8, seed=0)
    assert neighbours.clean_words([r.prompt for r in clean]) <= seen["keep"]  # the clean prompts' words
    assert neighbours.clean_words([r.safe_prompt for r in harmful]) <= seen["keep"]  # the counterparts'
    assert neighbours.clean_words(["a car, a cactus"]) == {"a", "car", "cactus"}
    assert {"sunflower", "television"} <= seen["keep"] and "dagger" not in seen["keep"]
    assert (seen["min_sim"], seen["margin"]) == (0.35, 0.1)
    with pytest.raises(ValueError, match="--neighbour-min-sim"):
        _cfg(tmp_path / "x", neighbour_min_sim=2.0)
