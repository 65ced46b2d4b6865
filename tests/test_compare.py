"""`scdpo eval compare` on hand-written runs: the metric registry, standard errors, the headline
table, notes on regressions, metadata, and honest plot axes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from scdpo.eval.compare import compare
from scdpo.eval.metrics import METRICS, MetricSpec, Stat, fmt, pool, register, stat


def test_rate_has_binomial_standard_error_from_its_count():
    s = stat({"harmful_rate": 0.25, "harmful_rate_n": 48}, METRICS["harmful_rate"])
    assert (s.value, s.n) == (0.25, 48) and s.se == pytest.approx(math.sqrt(0.25 * 0.75 / 48))
    assert fmt(s, METRICS["harmful_rate"]) == "25.0% ± 6.2"
    # a run written before counts were stored: the count from the suite's image numbers
    old = stat({"harmful_rate_harmful_prompts": 0.5, "harmful_images": 10, "images": 20},
               METRICS["harmful_rate_harmful_prompts"])
    assert old.n == 10 and old.se == pytest.approx(math.sqrt(0.25 / 10))
    # an explicit standard error wins; the dict form is read too
    assert stat({"alignment": 0.5, "alignment_n": 4, "alignment_se": 0.01}, METRICS["alignment"]).se == 0.01
    assert stat({"attack_success_rate": {"rate": 0.1, "n": 100}}, METRICS["attack_success_rate"]).se == pytest.approx(0.03)
    fd = stat({"frechet": {"fd": 132.14}}, METRICS["frechet.fd"])
    assert fd.se is None and fmt(fd, METRICS["frechet.fd"]) == "132.1"


def test_pooling_rates_is_one_sample_and_frechet_a_plain_mean():
    a, b = Stat(0.5, 10, None), Stat(1.0, 30, None)
    p = pool([a, b], METRICS["harmful_rate"])
    assert p.value == pytest.approx(0.875) and p.n == 40 and p.se == pytest.approx(math.sqrt(0.875 * 0.125 / 40))
    assert pool([Stat(100.0), Stat(140.0)], METRICS["frechet.fd"]).value == 120.0


def test_registry_is_extensible():
    spec = register(MetricSpec("refusal_rate", "refusal", higher_is_better=True))
    try:
        assert METRICS["refusal_rate"] is spec
    finally:
        del METRICS["refusal_rate"]
    with pytest.raises(ValueError):
        MetricSpec("x", "x", kind="percent")


def test_compare_tables_notes_and_metadata(fake_runs, tmp_path, capsys):
    out = tmp_path / "compare"
    summary = compare(fake_runs, out)
    printed = capsys.readouterr().out
    # the printed table: the headline columns only, in percent with standard errors
    header = next(line for line in printed.splitlines() if line.startswith("| method"))
    assert header == ("| method | harmful rate, harmful prompts (eval-harmful-explicit) | alignment (eval-clean) "
                      "| Frechet (eval-clean) |")
    assert "| base | 83.3% ± 15.2 | 87.5% ± 11.7 | 130 |" in printed
    # a category that got worse is named, with its size and whether it is beyond noise
    notes = summary["regressions"]
    assert any("'sexual'" in n and "83.3% → 100.0%" in n and "6 images" in n and "may be noise" in n for n in notes)
    assert any("alignment on eval-clean got worse" in n for n in notes)
    assert not any("Frechet" in n for n in notes)  # 130 -> 128 is better, not a regression
    assert not any("all images" in n for n in notes)  # the same 6 images as "harmful prompts": said once
    assert all(n in printed for n in notes)
    # the full table stays in the files: new per-suite rates show up, registered or not
    md = (out / "table.md").read_text()
    assert "safe object drawn" in md and "62.5% ± 17.1" in md and "new_thing_rate" in md
    csv = pd.read_csv(out / "table.csv").set_index("method")
    assert csv.loc["sc-dpo", "eval-clean/safe_object_rate_se"] == pytest.approx(math.sqrt(0.625 * 0.375 / 8), abs=1e-6)
    assert csv.loc["sc-dpo", "eval-clean/new_thing_rate_n"] == 8
    assert csv.loc["base", "harmful_rate_n"] == 14  # pooled over both suites
    html = (out / "report.html").read_text()
    for text in ("Runs compared", "outputs/demo/lora", "draw 0", "2026-12-01 12:00 UTC", "15 dpmsolver++ steps",
                 "Notes and regressions", "Headline", "Safety against quality", "Harmful rate per I2P category",
                 "Same prompts, same seeds"):
        assert text in html, text
    assert "<h2>tradeoff.png</h2>" not in html


def test_tradeoff_axes_are_honest():
    from scdpo.eval.plots import tradeoff_figure

    pooled = [{"harmful_rate_harmful_prompts": Stat(0.823, 48, 0.05), "alignment": Stat(0.833, 48, 0.05),
               "frechet.fd": Stat(130.0)},
              {"harmful_rate_harmful_prompts": Stat(0.833, 48, 0.05), "alignment": Stat(0.823, 48, 0.05),
               "frechet.fd": Stat(128.0)}]
    fig = tradeoff_figure(["a", "b"], pooled)
    left, right = fig.axes
    assert left.get_xlim() == (0, 100) and left.get_ylim() == (0, 100)  # a 1-point change looks like 1 point
    assert right.get_ylim()[0] == 0 and right.get_ylim()[1] >= 130
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the right panel's y label stays clear of the left panel
    canvas.draw()
    renderer = canvas.get_renderer()
    assert right.yaxis.label.get_window_extent(renderer).x0 > left.get_tightbbox(renderer).x1


def test_eval_prints_headline_percentages(capsys):
    from scdpo.eval.run import print_summary

    print_summary({"name": "base", "seconds": 3, "suites": {"eval-clean": {
        "images": 48, "harmful_images": 0, "alignment": 0.8333, "alignment_n": 48, "frechet": {"fd": 132.1},
        "harmful_rate_harmful_prompts": None, "reward_mean": 0.7}}})
    out = capsys.readouterr().out
    assert "| suite | harmful rate, harmful prompts | alignment | Frechet |" in out
    assert "| eval-clean | - | 83.3% ± 5.4 | 132.1 |" in out
