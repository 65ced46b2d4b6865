"""What `scdpo eval compare` says about its runs: metrics per suite and pooled (with standard
errors), the headline table, regressions against the first run, and each run's metadata. Every
metric goes through the registry in :mod:`scdpo.eval.metrics`, so a metric a run stores shows up
without code here knowing it."""

from __future__ import annotations

from pathlib import Path

from scdpo.eval.metrics import MetricSpec, Stat, binomial_se, fmt, pool, specs_for, stat, worse
from scdpo.world.records import I2P_CATEGORIES


def suite_specs(runs: list[dict], suites: list[str]) -> list[MetricSpec]:
    """The metrics any run has on any of ``suites``."""
    return specs_for([r["suites"][s] for r in runs for s in suites])


def suite_stats(run: dict, suite: str, specs: list[MetricSpec]) -> dict[str, Stat]:
    return {spec.key: stat(run["suites"][suite], spec) for spec in specs}


def pooled(run: dict, suites: list[str], specs: list[MetricSpec]) -> dict[str, Stat]:
    """Each metric over all of ``suites`` (:func:`scdpo.eval.metrics.pool`)."""
    return {spec.key: pool([stat(run["suites"][s], spec) for s in suites], spec) for spec in specs}


def category_stats(run: dict, suites: list[str]) -> dict[str, Stat]:
    """Harmful rate per I2P category over ``suites``, pooled by the category's image counts."""
    out = {}
    for c in I2P_CATEGORIES:
        pairs = [(m["harmful_rate_by_category"][c], m["category_images"][c]) for m in (run["suites"][s] for s in suites)
                 if (m.get("harmful_rate_by_category") or {}).get(c) is not None and m.get("category_images", {}).get(c)]
        if pairs:
            n = sum(k for _, k in pairs)
            p = sum(v * k for v, k in pairs) / n
            out[c] = Stat(p, n, binomial_se(p, n))
    return out


def headline_columns(runs: list[dict], suites: list[str], specs: list[MetricSpec]) -> list[tuple[str, MetricSpec]]:
    """(suite, metric) pairs of the printed table: the harm metrics on suites with harmful prompts,
    the quality metrics on suites with clean prompts, each only where some run has a value."""
    cols = []
    for s in suites:
        m = runs[0]["suites"][s]
        kinds = {"harmful"} if m.get("harmful_images") else set()
        kinds |= {"clean"} if m.get("images", 0) > m.get("harmful_images", 0) else set()
        cols += [(s, spec) for spec in specs if spec.headline in kinds
                 and any(stat(r["suites"][s], spec).value is not None for r in runs)]
    return cols


def headline_table(names: list[str], runs: list[dict], suites: list[str], specs: list[MetricSpec]):
    cols = headline_columns(runs, suites, specs)
    headers = ["method", *(f"{spec.label} ({s})" for s, spec in cols)]
    rows = [[n, *(fmt(stat(r["suites"][s], spec), spec) for s, spec in cols)] for n, r in zip(names, runs)]
    return headers, rows


def pooled_table(names: list[str], stats: list[dict[str, Stat]], specs: list[MetricSpec]):
    keep = [spec for spec in specs if any(st[spec.key].value is not None for st in stats)]
    return (["method", *(spec.label for spec in keep)],
            [[n, *(fmt(st[spec.key], spec) for spec in keep)] for n, st in zip(names, stats)])


def per_suite_table(names: list[str], runs: list[dict], suites: list[str], specs: list[MetricSpec]):
    """One row per (suite, method), one column per metric: the full numbers, readable."""
    rows = [[s, n, *(stat(r["suites"][s], spec) for spec in specs)] for s in suites for n, r in zip(names, runs)]
    keep = [j for j, _ in enumerate(specs) if any(row[2 + j].value is not None for row in rows)]
    return (["suite", "method", *(specs[j].label for j in keep)],
            [[*row[:2], *(fmt(row[2 + j], specs[j]) for j in keep)] for row in rows])


def csv_rows(names: list[str], runs: list[dict], suites: list[str], specs: list[MetricSpec],
             stats: list[dict[str, Stat]]) -> list[list]:
    """Raw numbers for machines: pooled ``key``, ``key_se``, ``key_n``, then ``suite/key``... per method."""
    def cells(st: Stat) -> list:
        return ["" if v is None else (round(v, 6) if isinstance(v, float) else v) for v in (st.value, st.se, st.n)]

    def names_of(prefix: str) -> list[str]:
        return [f"{prefix}{spec.key}{end}" for spec in specs for end in ("", "_se", "_n")]

    header = ["method", *names_of(""), *(h for s in suites for h in names_of(f"{s}/"))]
    rows = [[n, *(c for spec in specs for c in cells(st[spec.key])),
             *(c for s in suites for spec in specs for c in cells(stat(r["suites"][s], spec)))]
            for n, r, st in zip(names, runs, stats)]
    return [header, *rows]


def _change(a: Stat, b: Stat, spec: MetricSpec, z: float | None) -> str:
    delta = b.value - a.value
    size = f"{100 * delta:+.1f} points" if spec.kind == "rate" else f"{delta:+.4g}"
    count = f", {b.n} images" if b.n else ""
    if z is None:
        verdict = "no standard error to judge it by"
    elif z >= 2:
        verdict = f"{z:.1f} standard errors: beyond noise"
    else:
        verdict = f"{z:.1f} standard errors: may be noise"
    return f"{fmt(a, spec, se=False)} → {fmt(b, spec, se=False)} ({size}{count}; {verdict})"


def regressions(names: list[str], runs: list[dict], suites: list[str], specs: list[MetricSpec]) -> list[str]:
    """Every metric on every shared suite, and every category's harmful rate, that is worse in a
    later run than in the first (the reference, usually the base model): one sentence each."""
    notes = []
    ref = runs[0]
    cat_spec = MetricSpec("category", "harmful rate", higher_is_better=False)
    ref_cats = category_stats(ref, suites)
    for name, run in zip(names[1:], runs[1:]):
        for s in suites:
            said = set()  # on an all-harmful suite "harmful prompts" and "all images" are one number
            for spec in specs:
                a, b = stat(ref["suites"][s], spec), stat(run["suites"][s], spec)
                if (w := worse(a, b, spec)) is not None and (a, b) not in said:
                    said.add((a, b))
                    notes.append(f"{name} vs {names[0]}: {spec.label} on {s} got worse, {_change(a, b, spec, w[1])}.")
        for c, b in category_stats(run, suites).items():
            a = ref_cats.get(c, Stat(None))
            if (w := worse(a, b, cat_spec)) is not None:
                notes.append(f"{name} vs {names[0]}: harmful rate in category {c!r} got worse, "
                             f"{_change(a, b, cat_spec, w[1])}.")
    return notes


def run_dtype(run: dict) -> str:
    """The precision an evaluation sampled in; "fp32" for the runs written before `scdpo eval --dtype`."""
    return run.get("dtype") or "fp32"


def metadata_table(names: list[str], runs: list[dict], suites: list[str]) -> tuple[list[str], list[list]]:
    """Who was compared, with what: model, LoRA, negative prompt, suites and draws, seeds, sampler,
    judge, and when each run was written."""
    from datetime import datetime, timezone

    rows = []
    for name, run in zip(names, runs):
        cfg = run.get("config", {})
        created = run.get("created") or datetime.fromtimestamp(
            (Path(run["dir"]) / "metrics.json").stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        draws = ", ".join(f"{s} ({run['suites'][s].get('prompts', '?')} prompts"
                          + (f", draw {cfg.get('suite_seed', 0)}" if run["suites"][s].get("kind") == "emojiworld" else "")
                          + ")" for s in suites)
        rows.append([name, run.get("model"), run.get("lora") or "none", run.get("negative_prompt") or "none", draws,
                     f"{cfg.get('n_per_prompt', 1)} per prompt, seeds fixed by (suite, prompt, k)",
                     f"{cfg.get('steps')} {cfg.get('scheduler')} steps, guidance {cfg.get('guidance_scale')}, "
                     f"{run_dtype(run)}",
                     run.get("judge", "-"), created, run.get("seconds")])
    return (["method", "model", "LoRA", "negative prompt", "suites (prompts, draw)", "images and seeds", "sampler",
             "judge", "written", "seconds"], rows)
