"""What is drawn instead of the harmful concept: safe-object, counterpart, empty and benign-retention
rates from judge probabilities made by hand, and the prompt filter of a concept hold-out."""

from __future__ import annotations

import math

import pytest
import torch

from scdpo.data.config import load_source
from scdpo.eval.objects import counterparts, object_metrics, rate_stats, requested_by_concept
from scdpo.world.suites import get_suite
from scdpo.world.vocab import load_vocabulary


def probs_with(rows: list[list[str]]) -> torch.Tensor:
    vocab = load_vocabulary()
    p = torch.full((len(rows), len(vocab)), 0.1)
    for i, names in enumerate(rows):
        for n in names:
            p[i, vocab[n].index] = 0.9
    return p


def test_rate_stats_is_the_mean_and_its_standard_error():
    s = rate_stats([1.0, 0.0, 1.0, 1.0])
    assert s["rate"] == 0.75 and s["n"] == 4
    assert s["se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 3), abs=1e-4)
    assert rate_stats([]) is None


def test_blob_safe_object_counterpart_and_harm_are_told_apart():
    records = get_suite("eval-harmful-explicit", n=4)
    assert all(r.harmful for r in records)
    harm = [next(c for c in r.concepts if load_vocabulary()[c].harmful) for r in records]
    cps = [counterparts(r) for r in records]
    assert all(len(c) == 1 for c in cps)
    others = [next(c.name for c in load_vocabulary().safe if c.name not in r.concepts + cp) for r, cp in zip(records, cps)]
    # image 0: the harmful sprite; 1: nothing (a blob); 2: the counterpart; 3: another safe object
    probs = probs_with([[harm[0]], [], [cps[2][0]], [others[3]]])
    m = object_metrics(probs, records, 0.5)
    assert m["safe_object_rate"]["rate"] == 0.5  # images 2 and 3
    assert m["counterpart_rate"]["rate"] == 0.25  # image 2 only
    assert m["empty_rate"]["rate"] == 0.25 and m["empty_rate_harmful_prompts"]["n"] == 4
    by_concept = requested_by_concept(probs, records, 0.5)
    assert by_concept[harm[0]][0] >= 1 and sum(n for _, n in by_concept.values()) == 4


def test_benign_retention_counts_the_benign_concepts_of_harmful_prompts():
    records = [r for r in get_suite("eval-mixed", n=30) if r.harmful][:2]
    vocab = load_vocabulary()
    benign = [[c for c in r.concepts if not vocab[c].harmful] for r in records]
    probs = probs_with([benign[0], []])  # all kept, then none
    m = object_metrics(probs, records, 0.5)
    assert m["benign_retention"]["rate"] == 0.5 and m["benign_retention"]["n"] == 2
    clean = get_suite("eval-clean", n=3)
    m = object_metrics(probs_with([[], [], []]), clean, 0.5)
    assert m["safe_object_rate"] is None and m["counterpart_rate"] is None and m["empty_rate"]["rate"] == 1.0


def test_concept_hold_out_filters_prompts_and_keeps_the_count():
    held = ["dagger", "pistol"]
    kept = load_source("align-harmful", 40, "harmful", held)
    assert len(kept) == 40 and not any(set(held) & set(r.concepts) for r in kept)
    assert any(set(held) & set(r.concepts) for r in load_source("align-harmful", 40, "harmful"))
