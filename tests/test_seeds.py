"""Results over training seeds: mean, spread and standard errors computed from metrics files."""

from __future__ import annotations

import json
import math

import pytest

from scdpo.eval.seeds import aggregate, difference, fmt, group_runs, held_out_rate, summarize


def test_summarize_mean_sd_se_and_range():
    s = summarize([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["sd"] == pytest.approx(0.1)
    assert s["se"] == pytest.approx(0.1 / math.sqrt(3)) and (s["min"], s["max"], s["k"]) == (0.1, 0.3, 3)
    assert summarize([None]) is None and summarize([0.5])["se"] == 0.0
    assert fmt(s) == "20.0 ± 5.8 [10.0-30.0]"
    assert fmt({**summarize([0.5]), "eval_se": 0.04}) == "50.0 (± 4.0)" and fmt(summarize([2.0]), percent=False) == "2.0"


def _metrics(harm: float, n_drawn: int) -> dict:
    return {"suites": {"eval-harmful-explicit": {
        "harmful_rate": harm, "harmful_rate_n": 10, "harmful_rate_se": 0.1,
        "safe_object_rate": {"rate": 1 - harm, "n": 10, "se": 0.05}, "alignment": None,
        "harmful_requested_by_concept": {"dagger": [n_drawn, 10], "pistol": [10, 10]}}}}


def test_group_aggregate_and_held_out(tmp_path):
    for name, harm, drawn in (("sc-s0-d1", 0.1, 1), ("sc-s1-d1", 0.3, 3), ("base-d1", 0.9, 9)):
        (tmp_path / f"eval-{name}").mkdir()
        (tmp_path / f"eval-{name}" / "metrics.json").write_text(json.dumps(_metrics(harm, drawn)))
    groups = group_runs(sorted(tmp_path.iterdir()))
    assert set(groups) == {("sc", 1), ("base", 1)} and len(groups["sc", 1]) == 2
    agg = aggregate(groups["sc", 1])["eval-harmful-explicit"]
    assert agg["harmful_rate"]["mean"] == pytest.approx(0.2) and agg["harmful_rate"]["eval_se"] == pytest.approx(0.1)
    assert agg["safe_object_rate"]["mean"] == pytest.approx(0.8) and agg["alignment"] is None
    held = held_out_rate(groups["sc", 1], ["dagger"], "eval-harmful-explicit")
    assert held["mean"] == pytest.approx(0.2)
    (tmp_path / "eval-oddname").mkdir()
    (tmp_path / "eval-oddname" / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="METHOD-sSEED-dDRAW"):
        group_runs([tmp_path / "eval-oddname"])


def test_difference_pooled_se_and_the_two_se_rule():
    a, b = summarize([0.10, 0.20, 0.30]), summarize([0.40, 0.50, 0.60])  # both sd 0.1, 3 seeds
    d = difference(a, b)
    assert d["diff"] == pytest.approx(0.3) and d["se"] == pytest.approx(0.1 * math.sqrt(2 / 3))
    assert d["z"] == pytest.approx(0.3 / (0.1 * math.sqrt(2 / 3))) and d["moves"]
    near = difference(a, summarize([0.15, 0.25, 0.35]))  # 0.05 apart: 0.6 SE, no effect
    assert not near["moves"] and near["z"] == pytest.approx(0.05 / (0.1 * math.sqrt(2 / 3)))
    one = difference(a, summarize([0.45]))  # a one-seed arm borrows the other's spread
    assert one["se"] == pytest.approx(0.1 * math.sqrt(1 / 3 + 1)) and one["moves"]
    assert difference(summarize([0.1]), summarize([0.2])) is None and difference(a, None) is None


def test_above_line_is_the_vertical_distance_to_the_line_with_its_delta_method_se():
    from scdpo.eval.seeds import above_line, summarize

    pt = lambda x, y: (summarize(x), summarize(y))
    a, b = pt([0.20, 0.24], [0.90, 0.94]), pt([0.08, 0.10], [0.80, 0.84])  # means (0.22, 0.92), (0.09, 0.82)
    on = above_line(a, b, pt([0.15, 0.16], [0.86, 0.87]))  # x = 0.155: halfway, the line gives 0.87
    assert on["t"] == pytest.approx(0.5) and on["d"] == pytest.approx(-0.005)
    above = above_line(a, b, pt([0.155, 0.155], [0.95, 0.95]))
    assert above["d"] == pytest.approx(0.08)
    # no spread anywhere: no uncertainty; spread in a's alignment alone enters with weight (1 - t)
    flat = lambda x, y: (summarize([x, x]), summarize([y, y]))
    assert above_line(flat(0.2, 0.9), flat(0.1, 0.8), flat(0.15, 0.9))["se"] == 0
    r = above_line((summarize([0.2, 0.2]), summarize([0.88, 0.92])), flat(0.1, 0.8), flat(0.15, 0.9))
    assert r["se"] == pytest.approx(0.5 * summarize([0.88, 0.92])["se"])
    assert above_line(a, (a[0], b[1]), a) is None  # a vertical line has no slope
