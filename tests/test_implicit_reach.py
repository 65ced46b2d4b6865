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
