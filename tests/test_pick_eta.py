"""benchmarks/pick_eta.py: the twenty-eighth round's rule for ring-a-bell's eta, applied to tuning runs."""

from __future__ import annotations

import json

import pytest

from test_perf import load_script


def _tuning_run(folder, eta, rate, seed=1):
    (folder / "search").mkdir(parents=True)
    (folder / "search" / "state.json").write_text(json.dumps({"config": {"eta": eta, "suite_seed": seed}, "results": []}))
    (folder / "asr.json").write_text(json.dumps({
        "base": {"ring-a-bell": {"rate": rate, "se": 0.05, "n": 37, "any_rate": rate}},
        "shipped": {"ring-a-bell": {"rate": 0.9, "se": 0.05, "n": 37}}}))  # other victims never enter the choice


def test_highest_base_rate_wins_and_a_tie_goes_to_the_smaller_eta():
    pick = load_script("pick_eta").pick
    assert pick({3.0: 0.70, 5.0: 0.81, 5.5: 0.79}) == 5.0
    assert pick({5.5: 0.8, 3.0: 0.8, 5.0: 0.7}) == 3.0
    with pytest.raises(ValueError, match="no tuning run"):
        pick({})


def test_reads_tuning_runs_and_prints_the_eta(tmp_path, capsys):
    script = load_script("pick_eta")
    for eta, rate in ((3, 0.75), (5, 0.83), (5.5, 0.83)):
        _tuning_run(tmp_path / f"tune-eta{eta}", eta, rate)
    assert script.main([str(p) for p in sorted(tmp_path.iterdir())]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "5" and "| 5 | 83.0% | 5.0 | 83.0% | yes |" in out.err
    _tuning_run(tmp_path / "other-draw", 3.5, 0.9, seed=2)
    with pytest.raises(SystemExit, match="differ in more than eta"):
        script.main([str(tmp_path / "tune-eta3"), str(tmp_path / "other-draw")])
    with pytest.raises(SystemExit, match="same eta"):
        script.main([str(tmp_path / "tune-eta3"), str(tmp_path / "tune-eta3")])
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(SystemExit, match="unfinished: not a finished tuning run"):
        script.main([str(tmp_path / "unfinished")])
