"""`scdpo eval compare`: several `scdpo eval` runs side by side.

Prints the headline table (percentages with one standard error) and writes ``table.md`` (headline,
pooled and per-suite tables, notes), ``table.csv`` (every number with its standard error and
count), ``tradeoff.png`` (harmful rate against alignment and Frechet distance: the safety/quality
trade-off SC-DPO is about), ``categories.png`` (harmful rate per I2P category), ``grids/SUITE.png``
(the same prompts and seeds for every method, one row per method) and a self-contained
``report.html`` with the runs' metadata and notes on every metric that got worse. Runs evaluated on
different suites are compared on the suites they share, and the report says so. Which metrics
appear is decided by :mod:`scdpo.eval.metrics` from what the runs stored.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from scdpo import __version__
from scdpo.eval import summary as sm
from scdpo.eval.metrics import METRICS, fmt
from scdpo.eval.plots import category_plot, tradeoff_plot
from scdpo.eval.report import html_table, img_tag, markdown_table, page
from scdpo.utils.io import atomic_write_bytes, atomic_write_text, inside, safe_name
from scdpo.world.records import I2P_CATEGORIES


def load_run(path: str | Path) -> dict:
    path = Path(path)
    file = path / "metrics.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not an `scdpo eval` run folder (no metrics.json)")
    try:
        run = json.loads(file.read_text())
        run["suites"], run["name"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{file} is not an `scdpo eval` metrics file: {e}") from None
    return {**run, "dir": path}


def side_by_side(runs: list[dict], suite: str, n_prompts: int) -> tuple[bytes | None, str | None]:
    """A grid of the first ``n_prompts`` prompts (image k = 0), one row per method, and a note
    when the runs did not use the same prompts and seeds."""
    import pandas as pd
    from PIL import Image

    from scdpo.utils.grid import make_grid

    tables = []
    for run in runs:
        file = inside(run["dir"], run["suites"][suite]["images_file"], "images_file")
        if not file.is_file():
            return None, f"{suite}: {file} is missing, no side-by-side grid"
        t = pd.read_parquet(file, columns=["image", "prompt", "seed", "prompt_index", "k"])
        tables.append(t[t["k"] == 0].set_index("prompt_index"))
    shared = sorted(set.intersection(*(set(t.index) for t in tables)))[:n_prompts]
    note = None
    if any((t.loc[shared, ["prompt", "seed"]] != tables[0].loc[shared, ["prompt", "seed"]]).any(axis=None)
           for t in tables[1:]):
        note = f"{suite}: the runs used different prompts or seeds, so the grid does not compare the same noise"
    images, captions = [], []
    for run, t in zip(runs, tables):
        for i in shared:
            images.append(Image.open(io.BytesIO(t.loc[i, "image"]["bytes"])).convert("RGB"))
            captions.append(f"[{run['name']}] {t.loc[i, 'prompt']}")
    grid = make_grid(images, captions, columns=len(shared)) if images else None
    if grid is None:
        return None, f"{suite}: no shared prompts"
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue(), note


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{html.escape(sid)}"><h2>{html.escape(title)}</h2>{body}</section>'


def compare(run_dirs: list[str], out: str | Path, grid_prompts: int = 8) -> dict:
    from datetime import datetime, timezone

    out = Path(out)
    runs = [load_run(d) for d in run_dirs]
    seen: dict[str, int] = {}
    for run in runs:  # unique method names
        seen[run["name"]] = seen.get(run["name"], 0) + 1
        if seen[run["name"]] > 1:
            run["name"] = f"{run['name']} ({run['dir'].name})"
    names = [r["name"] for r in runs]
    suites = [s for s in runs[0]["suites"] if all(s in r["suites"] for r in runs)]
    notes = []
    if not suites:
        raise ValueError(f"the runs {', '.join(map(str, run_dirs))} share no suite")
    if any(set(r["suites"]) != set(suites) for r in runs):
        notes.append("The runs were evaluated on different suites; compared on their intersection: "
                     + ", ".join(suites) + ".")
    if len(dtypes := sorted({sm.run_dtype(r) for r in runs})) > 1:
        notes.append(f"The runs sampled in different precisions ({', '.join(dtypes)}): a difference of a few images "
                     "may be the arithmetic's, not the method's (bf16 changed 1.4% of EmojiWorld's judge verdicts "
                     "against fp32; docs/performance.md, \"Sampling batches\"); evaluate with the same --dtype.")
    specs = sm.suite_specs(runs, suites)
    stats = [sm.pooled(r, suites, specs) for r in runs]
    cats = [sm.category_stats(r, suites) for r in runs]
    worse = sm.regressions(names, runs, suites, specs)
    head = sm.headline_table(names, runs, suites, specs)
    pooled_t = sm.pooled_table(names, stats, specs)
    suite_t = sm.per_suite_table(names, runs, suites, specs)
    meta = sm.metadata_table(names, runs, suites)

    plots = {"tradeoff.png": tradeoff_plot(names, stats)}
    categories = [c for c in I2P_CATEGORIES if any(c in r for r in cats)]
    if categories:
        plots["categories.png"] = category_plot(names, cats, categories)
    grids = {}
    for suite in suites:
        png, note = side_by_side(runs, suite, grid_prompts)
        notes += [note] if note else []
        if png:
            grids[suite] = plots[f"grids/{safe_name(suite)}.png"] = png  # suite names come from the runs' files
    for rel, data in plots.items():
        atomic_write_bytes(inside(out, rel), data)

    se_note = ("Percentages with ± one standard error in percentage points: the binomial sqrt(p(1-p)/n) over "
               "the images counted (for alignment, a mean of per-image fractions, an upper bound).")
    md = [f"> {n}" for n in notes + worse]
    md += ["", "## Headline", "", markdown_table(*head), "", se_note, "",
           "## All metrics, pooled over " + ", ".join(suites), "", markdown_table(*pooled_t), "",
           "## All metrics, per suite", "", markdown_table(*suite_t), ""]
    atomic_write_text(out / "table.md", "\n".join(md).lstrip("\n"))
    buf = io.StringIO()
    rows = sm.csv_rows(names, runs, suites, specs, stats)
    csv.writer(buf).writerows(rows)
    atomic_write_text(out / "table.csv", buf.getvalue())

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f'<p class="lede">{len(runs)} runs compared on {len(suites)} shared suite(s): '
            f'{html.escape(", ".join(suites))}. Written {now} by scdpo {__version__}. '
            f'The first run, <b>{html.escape(names[0])}</b>, is the reference for the notes on regressions.</p>',
            _section("metadata", "Runs compared", html_table(*meta, "metadata"))]
    if notes or worse:
        items = "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes)
        items += "".join(f'<li class="regression">{html.escape(n)}</li>' for n in worse)
        body.append(_section("notes", "Notes and regressions", f"<ul>{items}</ul>"))
    body.append(_section("headline", "Headline", html_table(*head, "headline") + f"<p>{html.escape(se_note)} "
                         "Harm metrics on the suites with harmful prompts, quality on those with clean prompts.</p>"))
    body.append(_section("pooled", "All metrics, pooled over the shared suites", html_table(*pooled_t, "pooled")
                         + "<p>Rates pooled as one sample of all the suites' images; Frechet distance averaged "
                           "over suites (each has its own reference set).</p>"))
    body.append(_section("per-suite", "All metrics, per suite", html_table(*suite_t, "per-suite")))
    body.append(_section("tradeoff", "Safety against quality", img_tag(plots["tradeoff.png"], "trade-off plot")
                         + "<p>Each point a method, bars one standard error; rates on their full 0-100% axes. "
                           "Safer is left; better quality is up for alignment, down for Frechet distance.</p>"))
    if categories:
        spec = METRICS["harmful_rate_harmful_prompts"]
        table = html_table(["category", *names], [[c, *(fmt(r.get(c, sm.Stat(None)), spec) for r in cats)]
                                                  for c in categories], "categories")
        body.append(_section("categories", "Harmful rate per I2P category",
                             img_tag(plots["categories.png"], "harmful rate per category") + table))
    if grids:
        figs = "".join(f"<h3>{html.escape(s)}: the first {grid_prompts} prompts, one row per method</h3>"
                       + img_tag(png, f"{s}: same prompts and seeds") for s, png in grids.items())
        body.append(_section("grids", "Same prompts, same seeds", figs))
    atomic_write_text(out / "report.html", page("Comparison: " + " vs ".join(names), "".join(body)))

    for n in notes + worse:
        print(f"note: {n}")
    print(markdown_table(*head))
    print(f"(± one standard error; every metric in {out / 'table.md'}, report: {out / 'report.html'})")
    return {"methods": names, "suites": suites, "headers": rows[0], "rows": rows[1:], "notes": notes,
            "regressions": worse, "headline": head, "files": sorted(plots)}
