"""Results over several training seeds: the mean, the spread and the standard error of each
metric, computed from the runs' ``metrics.json`` (never written by hand).

A method trained with seeds s = 1..k gives per-seed values x_s of a metric (each itself measured
on the same evaluation prompts). We report ``mean = sum x_s / k``, the sample standard deviation
``sd`` over seeds, ``se = sd / sqrt(k)`` (the standard error of the mean over training seeds) and
the range ``[min, max]``. The evaluation's own sampling error (``{rate, n, se}`` of one run) is
averaged too (``eval_se``): with few seeds, ``se`` alone can understate the noise.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

RUN_NAME = re.compile(r"^(?P<method>.+)-s(?P<seed>\d+)-d(?P<draw>\d+)$")


def summarize(values: list[float]) -> dict | None:
    """``{mean, sd, se, min, max, k}`` of per-seed values (None when there are none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    k = len(xs)
    mean = sum(xs) / k
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (k - 1)) if k > 1 else 0.0
    return {"mean": mean, "sd": sd, "se": sd / math.sqrt(k), "min": min(xs), "max": max(xs), "k": k}


def group_runs(folders: list[Path]) -> dict[tuple[str, int], list[dict]]:
    """Evaluation folders named ``METHOD-sSEED-dDRAW`` (``eval-`` prefix allowed) -> their
    metrics grouped by (method, draw); ``base-dDRAW`` counts as method "base" with one seed."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for f in folders:
        name = f.name.removeprefix("eval-")
        metrics = json.loads((f / "metrics.json").read_text())
        if m := RUN_NAME.match(name):
            groups[m["method"], int(m["draw"])].append(metrics)
        elif m := re.match(r"^(?P<method>.+)-d(?P<draw>\d+)$", name):
            groups[m["method"], int(m["draw"])].append(metrics)
        else:
            raise ValueError(f"{f}: evaluation folders must be named METHOD-sSEED-dDRAW or METHOD-dDRAW")
    return dict(groups)


def aggregate(runs: list[dict], suites: list[str] | None = None,
              keys: list[str] | None = None) -> dict[str, dict[str, dict | None]]:
    """``{suite: {metric key: summary over seeds}}`` of one method's runs (one metrics.json per
    seed). Metrics are read through the report's registry (:data:`scdpo.eval.metrics.METRICS`,
    :func:`~scdpo.eval.metrics.stat`; ``keys`` default: all of it), and ``eval_se`` is the mean of
    the runs' own evaluation standard errors where each has one."""
    from scdpo.eval.metrics import METRICS, stat

    suites = suites or sorted({s for r in runs for s in r["suites"]})
    specs = [METRICS[k] for k in (keys or list(METRICS))]
    out = {}
    for suite in suites:
        per = [r["suites"][suite] for r in runs if suite in r["suites"]]
        row = {}
        for spec in specs:
            stats = [stat(m, spec) for m in per]
            row[spec.key] = summarize([st.value for st in stats])
            if row[spec.key] is not None and stats and all(st.se is not None for st in stats):
                row[spec.key]["eval_se"] = sum(st.se for st in stats) / len(stats)
        out[suite] = row
    return out


def difference(a: dict | None, b: dict | None) -> dict | None:
    """``b - a`` of two methods' per-seed summaries (:func:`summarize`) with its standard error,
    the two-sample pooled form (equal seed-to-seed variance): ``se = sd_p * sqrt(1/k_a + 1/k_b)``,
    ``sd_p^2 = sum_i (k_i - 1) sd_i^2 / sum_i (k_i - 1)`` over the arms with k_i > 1, so a one-seed
    arm borrows the other arm's spread. ``z = diff / se``; ``moves``: ``|diff| > 2 se``, the
    ablation rule of docs/results.md (a part stays on only if removing it moves a headline metric
    by more than 2 standard errors). None when either side is missing or neither has 2 seeds."""
    if a is None or b is None:
        return None
    dof = (a["k"] - 1) + (b["k"] - 1)
    if dof == 0:
        return None
    sd_p = math.sqrt(((a["k"] - 1) * a["sd"] ** 2 + (b["k"] - 1) * b["sd"] ** 2) / dof)
    diff = b["mean"] - a["mean"]
    se = sd_p * math.sqrt(1 / a["k"] + 1 / b["k"])
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return {"diff": diff, "se": se, "z": z, "moves": abs(z) > 2}


def above_line(a: tuple[dict, dict], b: tuple[dict, dict], m: tuple[dict, dict]) -> dict | None:
    """How far method m lies above the straight trade-off line through methods a and b, each an
    (x, y) pair of per-seed summaries (:func:`summarize`; e.g. x = implicit harmful rate, y = clean
    alignment). With slope s = (y_b - y_a) / (x_b - x_a) and t = (x_m - x_a) / (x_b - x_a):

        d = y_m - (y_a + t (y_b - y_a))

    and its standard error by the delta method, the six means independent:

        se^2 = se(y_m)^2 + s^2 se(x_m)^2 + (1 - t)^2 se(y_a)^2 + t^2 se(y_b)^2
               + s^2 (1 - t)^2 se(x_a)^2 + s^2 t^2 se(x_b)^2

    ``{"d", "se", "t"}`` (t in [0, 1]: m's x lies between a's and b's); None when an input is
    missing or a and b share their x."""
    if any(v is None for pair in (a, b, m) for v in pair) or a[0]["mean"] == b[0]["mean"]:
        return None
    (xa, ya), (xb, yb), (xm, ym) = a, b, m
    s = (yb["mean"] - ya["mean"]) / (xb["mean"] - xa["mean"])
    t = (xm["mean"] - xa["mean"]) / (xb["mean"] - xa["mean"])
    d = ym["mean"] - (ya["mean"] + t * (yb["mean"] - ya["mean"]))
    var = (ym["se"] ** 2 + s ** 2 * xm["se"] ** 2 + (1 - t) ** 2 * ya["se"] ** 2 + t ** 2 * yb["se"] ** 2
           + s ** 2 * (1 - t) ** 2 * xa["se"] ** 2 + s ** 2 * t ** 2 * xb["se"] ** 2)
    return {"d": d, "se": math.sqrt(var), "t": t}


def held_out_rate(runs: list[dict], concepts: list[str], suite: str) -> dict | None:
    """Over seeds, the rate at which the requested concept is drawn on the prompts of ``suite``
    that request one of ``concepts`` (from ``harmful_requested_by_concept``): the concept
    hold-out's number."""
    rates = []
    for r in runs:
        by = r["suites"].get(suite, {}).get("harmful_requested_by_concept") or {}
        drawn = sum(by[c][0] for c in concepts if c in by)
        n = sum(by[c][1] for c in concepts if c in by)
        rates.append(drawn / n if n else None)
    return summarize(rates)


def fmt(s: dict | None, percent: bool = True) -> str:
    """As docs/results.md prints it: ``mean ± se [min-max]`` over several seeds (se over seeds);
    for one seed, ``value (± eval_se)``, the evaluation's own standard error where known."""
    if s is None:
        return "-"
    f = (lambda x: f"{100 * x:.1f}") if percent else (lambda x: f"{x:.1f}")
    if s["k"] == 1:
        return f(s["mean"]) + (f" (± {f(s['eval_se'])})" if "eval_se" in s else "")
    return f"{f(s['mean'])} ± {f(s['se'])} [{f(s['min'])}-{f(s['max'])}]"
