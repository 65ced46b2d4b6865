"""The last step of a build: blend the kinds, write the output shards, choices and dataset card.

Runs once, on the main process, after every chunk is in ``out/.work/``. It reads the chunks in
order, so the output depends only on the chunks' contents, never on how many processes made
them or how often the run was interrupted.
"""

from __future__ import annotations

import collections
import io
import json
import shutil
from pathlib import Path

import numpy as np

from scdpo.utils.io import atomic_path

EXAMPLES = 8
#: The build folder's work area and manifest, hidden: `datasets` skips both when loading the folder.
WORK, MANIFEST = ".work", ".build.json"


def _read(path: Path):
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: a build process did not finish its chunks; run the "
                                "same command again to complete them")
    return pq.read_table(path)


def finalize(out: Path, cfg, n_chunks: int, pair_schema) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from scdpo.data.pairs import blend

    work = out / WORK
    choices = pa.concat_tables([_read(work / f"choices-{c:05d}.parquet") for c in range(n_chunks)])
    status = choices.column("status").to_pylist()
    accepted = [i for i, s in enumerate(status) if s == "pair"]
    kinds, ids = choices.column("kind").to_pylist(), choices.column("prompt_id").to_pylist()
    keep = blend([kinds[i] for i in accepted], [ids[i] for i in accepted], cfg.blend_ratio, cfg.seed)
    for i, k in zip(accepted, keep):
        status[i] = "kept" if k else "dropped"
    choices = choices.set_column(choices.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
    kept = {ids[i] for i, s in enumerate(status) if s == "kept"}
    n_shards = max(1, -(-len(kept) // cfg.shard_size))
    data = out / "data"
    names = [f"train-{s:05d}-of-{n_shards:05d}.parquet" for s in range(n_shards)]
    for old in data.glob("train-*.parquet"):  # left by an interrupted finalize with another shard count
        if old.name not in names:
            old.unlink()
    buffer, written = [], 0

    def flush(rows: pa.Table) -> None:
        nonlocal written
        with atomic_path(data / names[written]) as tmp:
            pq.write_table(rows, tmp)
        written += 1

    for c in range(n_chunks):
        table = _read(work / f"pairs-{c:05d}.parquet")
        buffer.append(table.filter(pc.is_in(table.column("prompt_id"), pa.array(sorted(kept), pa.string()))))
        rows = pa.concat_tables(buffer)
        while rows.num_rows >= cfg.shard_size:
            flush(rows.slice(0, cfg.shard_size))
            rows = rows.slice(cfg.shard_size)
        buffer = [rows]
    rows = pa.concat_tables(buffer).cast(pair_schema)
    if rows.num_rows or written == 0:  # an empty build still gets one (empty) shard, so it loads
        flush(rows)
    with atomic_path(out / "choices.parquet") as tmp:
        pq.write_table(choices, tmp)
    summary = _summary(choices, n_shards)
    write_card(out, cfg, choices, summary)
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"settings": cfg.settings(), "complete": True, "summary": summary}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _summary(choices, n_shards: int) -> dict:
    rows = choices.select(["kind", "category", "reason", "status"]).to_pylist()
    counts = collections.defaultdict(collections.Counter)
    reasons = collections.defaultdict(collections.Counter)
    categories = collections.Counter()
    for r in rows:
        counts[r["kind"]]["prompts"] += 1
        counts[r["kind"]][r["status"]] += 1
        reasons[r["kind"]][r["reason"]] += 1
        if r["status"] == "kept":
            categories[f'{r["kind"]}:{r["category"]}' if r["category"] else r["kind"]] += 1
    return {"pairs": sum(c["kept"] for c in counts.values()), "shards": n_shards,
            "counts": {k: {s: c[s] for s in ("prompts", "kept", "dropped", "skipped")} for k, c in counts.items()},
            "reasons": {k: dict(sorted(v.items())) for k, v in reasons.items()},
            "categories": dict(sorted(categories.items()))}


def _plot_scores(choices, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = choices.select(["status", "winner", "loser", "costs", "rewards"]).to_pylist()
    kept = [r for r in rows if r["status"] == "kept"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, name in zip(axes, ("costs", "rewards")):
        every = [v for r in rows for v in r[name] if v == v]  # drops NaN
        bins = np.histogram_bin_edges(every or [0.0], bins=30)  # shared, so the three are comparable
        ax.hist(every, bins=bins, color="0.85", label="all candidates")
        ax.hist([r[name][r["winner"]] for r in kept], bins=bins, histtype="step", lw=2, label="preferred (kept)")
        ax.hist([r[name][r["loser"]] for r in kept], bins=bins, histtype="step", lw=2, label="rejected (kept)")
        if name == "costs":
            ax.axvline(0.0, color="k", ls="--", lw=1)
        ax.set_xlabel(name[:-1])
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _example_grid(out: Path, path: Path) -> int:
    import pyarrow.parquet as pq
    from PIL import Image

    from scdpo.utils.grid import save_grid

    rows = []
    for shard in sorted((out / "data").glob("train-*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=EXAMPLES):  # never a whole shard in memory
            rows += batch.to_pylist()[:EXAMPLES - len(rows)]
            break
        if len(rows) == EXAMPLES:
            break
    if not rows:
        return 0
    images, captions = [], []
    for r in rows:
        win = 0 if r["label_0"] == 1.0 else 1
        for side, tag in ((win, "W"), (1 - win, "L")):
            img = Image.open(io.BytesIO(r[f"jpg_{side}"])).convert("RGB")
            img.thumbnail((128, 128))
            images.append(img)
            captions.append(f'{tag} c={r[f"cost_{side}"]:.2f} r={r[f"reward_{side}"]:.2f} {r["caption"]}')
    scale = max(1, 128 // images[0].width)  # small images are upscaled so the captions fit
    save_grid(images, path, captions, columns=4, scale=scale)
    return len(rows)


def write_card(out: Path, cfg, choices, summary: dict) -> None:
    """README.md with a `datasets` config block, settings, counts, reasons, categories and figures."""
    _plot_scores(choices, out / "card" / "scores.png")
    n_examples = _example_grid(out, out / "card" / "examples.png")
    s = cfg.settings()
    lines = ["---", "configs:", "- config_name: default", "  data_files:", "  - split: train",
             "    path: data/train-*", "---", "", "# Safety-constrained preference pairs", "",
             "Built by `scdpo data build` for SC-DPO training (rules: docs/dataset-builder.md). Pick-a-Pic "
             "columns `caption`, `jpg_0`, `jpg_1` (PNG), `label_0` (1.0 when `jpg_0` is preferred), plus "
             "`cost_*`, `reward_*`, `seed_*`, `kind`, `category`, `prompt_id`. Every prompt's candidates, "
             "scores and the rule applied are in `choices.parquet`.", "",
             "| setting | value |", "|---|---|", *[f"| {k} | `{v}` |" for k, v in s.items()], "",
             f"## Counts ({summary['pairs']} pairs in {summary['shards']} shard(s))", "",
             "| kind | prompts | pairs kept | dropped by blend | skipped |", "|---|---|---|---|---|"]
    for kind, c in summary["counts"].items():
        lines.append(f"| {kind} | {c['prompts']} | {c['kept']} | {c['dropped']} | {c['skipped']} |")
    lines += ["", "## Reasons (rule that made the pair, or why the prompt was skipped)", "",
              "| kind | reason | prompts |", "|---|---|---|"]
    lines += [f"| {k} | {r} | {n} |" for k, v in summary["reasons"].items() for r, n in v.items()]
    lines += ["", "## Kept pairs per category", "", "| kind:category | pairs |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in summary["categories"].items()]
    lines += ["", "## Scores", "", "Cost (0 = safety threshold) and reward of all candidates, and of the kept "
              "pairs' preferred and rejected images.", "", "![scores](card/scores.png)", ""]
    if n_examples:
        lines += ["## Example pairs", "", f"The first {n_examples} pairs: W = preferred, L = rejected, "
                  "c = cost, r = reward.", "", "![examples](card/examples.png)", ""]
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
