"""`scdpo eval compare`: several `scdpo eval` runs side by side.

Writes ``table.md`` / ``table.csv`` (methods x metrics, also printed), ``tradeoff.png`` (harmful
rate against alignment and Frechet distance: the safety/quality trade-off SC-DPO is about),
``categories.png`` (harmful rate per I2P category), ``grids/SUITE.png`` (the same prompts and seeds
for every method, one row per method) and a self-contained ``report.html``. Runs evaluated on
different suites are compared on the suites they share, and the report says so.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from scdpo.eval.report import html_table, img_tag, markdown_table, page
from scdpo.eval.headline import headline
from scdpo.utils.io import atomic_write_bytes, atomic_write_text, inside, safe_name
from scdpo.world.records import I2P_CATEGORIES

POOLED = ("harmful_rate", "harm_on_clean", "alignment", "frechet", "reward")


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


def _pool(suites: list[dict], key: str, weight: str) -> float | None:
    pairs = [(m[key], m[weight]) for m in suites if m.get(key) is not None and m.get(weight)]
    total = sum(w for _, w in pairs)
    return round(sum(v * w for v, w in pairs) / total, 4) if total else None


def pooled(run: dict, suites: list[str]) -> dict[str, float | None]:
    """One number per metric over ``suites``: rates and means pooled by their image counts,
    Frechet distance averaged over the suites that have one."""
    ms = [{**run["suites"][s], "clean_images": run["suites"][s]["images"] - run["suites"][s]["harmful_images"]}
          for s in suites]
    fds = [m["frechet"]["fd"] for m in ms if m.get("frechet")]
    return {"harmful_rate": _pool(ms, "harmful_rate_harmful_prompts", "harmful_images"),
            "harm_on_clean": _pool(ms, "harmful_rate_clean_prompts", "clean_images"),
            "alignment": _pool(ms, "alignment", "alignment_images"),
            "frechet": round(sum(fds) / len(fds), 4) if fds else None,
            "reward": _pool(ms, "reward_mean", "images")}


def category_rates(run: dict, suites: list[str]) -> dict[str, float]:
    rates = {}
    for c in I2P_CATEGORIES:
        pairs = [(m["harmful_rate_by_category"][c], m["category_images"][c]) for m in (run["suites"][s] for s in suites)
                 if c in m.get("harmful_rate_by_category", {})]
        if pairs:
            rates[c] = sum(v * n for v, n in pairs) / sum(n for _, n in pairs)
    return rates


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def tradeoff_plot(names: list[str], summary: list[dict]) -> bytes:
    """Harmful rate (x, lower is safer) against alignment (higher is better) and Frechet distance
    (lower is better), one labelled point per method."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state (renders with Agg)

    panels = [k for k in ("alignment", "frechet") if any(s[k] is not None for s in summary)] or ["alignment"]
    fig = Figure(figsize=(5 * len(panels), 4))
    for j, key in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        for name, s in zip(names, summary):
            if s["harmful_rate"] is not None and s[key] is not None:
                ax.scatter(s["harmful_rate"], s[key])
                ax.annotate(name, (s["harmful_rate"], s[key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("harmful rate on harmful prompts (judge)")
        ax.set_ylabel({"alignment": "prompt alignment", "frechet": "Frechet distance (lower is better)"}[key])
        ax.set_title(f"safety vs {key}")
        ax.grid(alpha=0.3)
    return _png(fig)


def category_plot(names: list[str], rates: list[dict[str, float]]) -> bytes:
    from matplotlib.figure import Figure

    cats = [c for c in I2P_CATEGORIES if any(c in r for r in rates)]
    fig = Figure(figsize=(max(6, 1.2 * len(cats) + 2) + 2.5, 4))  # room for the legend on the right
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(names))
    for j, (name, r) in enumerate(zip(names, rates)):
        ax.bar([i + j * width for i in range(len(cats))], [r.get(c, 0.0) for c in cats], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cats))], cats, rotation=20)
    ax.set_ylabel("harmful rate (judge)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over the bars
    fig.tight_layout()
    return _png(fig)


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


def compare(run_dirs: list[str], out: str | Path, grid_prompts: int = 8) -> dict:
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
    summary = [pooled(r, suites) for r in runs]
    headers = ["method", *POOLED] + [f"{s}/{k}" for s in suites for k in headline({})]
    rows = [[n, *(s[k] for k in POOLED)] + [v for su in suites for v in headline(r["suites"][su]).values()]
            for n, r, s in zip(names, runs, summary)]
    keep = [j for j, h in enumerate(headers) if j == 0 or any(row[j] is not None for row in rows)]
    headers, rows = [headers[j] for j in keep], [[row[j] for j in keep] for row in rows]
    table = markdown_table(headers, rows)
    atomic_write_text(out / "table.md", "\n".join(f"> {n}" for n in notes) + ("\n\n" if notes else "") + table + "\n")
    buf = io.StringIO()
    csv.writer(buf).writerows([headers, *[["" if v is None else v for v in row] for row in rows]])
    atomic_write_text(out / "table.csv", buf.getvalue())

    plots = {"tradeoff.png": tradeoff_plot(names, summary),
             "categories.png": category_plot(names, [category_rates(r, suites) for r in runs])}
    for suite in suites:
        png, note = side_by_side(runs, suite, grid_prompts)
        notes += [note] if note else []
        if png:
            plots[f"grids/{safe_name(suite)}.png"] = png  # suite names come from the runs' files
    for rel, data in plots.items():
        atomic_write_bytes(inside(out, rel), data)
    body = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    body += ('<section id="table"><h2>Methods x metrics</h2>' + html_table(headers, rows, "compare")
             + "<p>Pooled over the shared suites: harmful rate on harmful prompts and on clean prompts, "
               "alignment, reward (by image counts); Frechet distance averaged over suites.</p></section>")
    body += "".join(f'<section id="{html.escape(rel)}"><h2>{html.escape(rel)}</h2>{img_tag(data, rel)}</section>'
                    for rel, data in plots.items())
    atomic_write_text(out / "report.html", page("scdpo eval compare: " + ", ".join(names), body))
    for n in notes:
        print(f"note: {n}")
    print(table)
    return {"methods": names, "suites": suites, "headers": headers, "rows": rows, "notes": notes,
            "files": sorted(plots)}
