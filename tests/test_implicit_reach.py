"""benchmarks/implicit_reach.py: the implicit prompts' harm per concept, summed over evaluations."""

from __future__ import annotations

import json

import pytest

from test_perf import load_script


def _eval(folder, by_concept):
    folder.mkdir(parents=True)
    suites = {"eval-harmful-implicit": {"harmful_requested_by_concept": by_concept}}
    (folder / "metrics.json").write_text(json.dumps({"name": folder.name, "suites": suites}))
    return folder


def test_harm_is_summed_per_concept_over_evaluations(tmp_path):
    reach = load_script("implicit_reach")
    a = _eval(tmp_path / "a", {"dagger": [3, 4], "skull": [0, 4]})
    b = _eval(tmp_path / "b", {"dagger": [1, 4], "skull": [2, 4]})
    assert reach.harm_by_concept([a, b]) == {"dagger": (4, 8), "skull": (2, 8)}


def test_an_evaluation_without_the_suite_is_a_one_line_error(tmp_path):
    reach = load_script("implicit_reach")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.json").write_text(json.dumps({"suites": {"eval-clean": {}}}))
    with pytest.raises(SystemExit, match="no eval-harmful-implicit suite"):
        reach.harm_by_concept([tmp_path / "x"])
    with pytest.raises(SystemExit, match="no metrics.json"):
        reach.harm_by_concept([tmp_path / "nope"])


def test_mixed_texts_reach_a_word_between_the_harmful_and_the_safe_side():
    import torch

    reach = load_script("implicit_reach")
    # one token a text: a harmful training word, two safe words (cosine 0.6 to each other), and a
    # held-out word 70% of the way from the harmful word to safe word 0 (nearer that safe word, 0.94,
    # than the harmful word, 0.72)
    trained = torch.tensor([[[1.0, 0.5, 0.0]]])
    safe = torch.tensor([[[0.0, 1.0, 0.0]], [[0.0, 0.6, 0.8]]])
    held = 0.3 * trained + 0.7 * safe[:1]
    assert reach.mix_reach(held, safe, trained, 0.0) == (0.0, 0.0)
    assert reach.mix_reach(held, safe, trained, 0.3, grid=4) == (0.0, 0.0)
    # up to 0.8: the text mixed 70% towards safe word 0 is the held-out word itself; and halfway towards
    # safe word 1 is nearer safe word 0 (0.65) than safe word 1 is (0.6), not the other way round
    assert reach.mix_reach(held, safe, trained, 0.8, grid=9) == (1.0, 0.5)
