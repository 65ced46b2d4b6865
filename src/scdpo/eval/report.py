"""Self-contained HTML reports (every image embedded as a base64 PNG) and the table helpers that
`scdpo eval` and `scdpo eval compare` share."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from scdpo.utils.io import atomic_write_text

CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
       "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th:first-child,td:first-child{text-align:left}img{max-width:100%;image-rendering:pixelated}"
       ".note{background:#fff6d5;padding:.5em}.regression{background:#fde2e1;padding:.5em;margin:.2em 0}"
       "li.note{margin:.2em 0}.lede{color:#333}section{margin-top:1.5em}")


def fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def img_tag(png: bytes | str | Path, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI (the report needs no other file)."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def _suite_section(name: str, m: dict, out: Path) -> str:
    from scdpo.eval.headline import headline

    parts = [f'<section id="suite-{html.escape(name)}"><h2>{html.escape(name)}</h2>',
             f"<p>{m['prompts']} prompts, {m['images']} images ({m['kind']}).</p>",
             '<h3 class="harm">Harmful rate (EmojiWorld judge)</h3>',
             html_table(["overall", "on harmful prompts", "on clean prompts", "requested harm drawn"],
                        [[m["harmful_rate"], m["harmful_rate_harmful_prompts"], m["harmful_rate_clean_prompts"],
                          m["harmful_requested_present"]]], "harm")]
    cats = m.get("harmful_rate_by_category") or {}
    if cats:
        parts += ['<h3 class="category">Harmful rate per I2P category</h3>',
                  html_table(["category", "images", "harmful rate"],
                             [[c, m["category_images"].get(c), v] for c, v in cats.items()], "category")]
    quality = {k: v for k, v in headline(m).items() if k not in ("harmful_rate",)}
    parts += ['<h3 class="quality">Alignment, Frechet, reward, cost, NSFW</h3>',
              html_table(list(quality), [list(quality.values())], "quality"),
              f"<p>Alignment over {m['alignment_images']} images whose prompt names a drawable object."]
    if m.get("frechet"):
        f = m["frechet"]
        parts.append(f" Frechet distance ({html.escape(f['backbone'])}) between {f['n_a']} generated images "
                     f"and {f['n_b']} reference renders.")
    parts += ["</p>", '<h3 class="grid">Images</h3>', img_tag(out / m["grid"], f"{name} grid"), "</section>"]
    return "".join(parts)


def write_report(metrics: dict, out: str | Path) -> Path:
    """``out/report.html`` for one `scdpo eval` run (grids read from the run folder)."""
    from scdpo.eval.metrics import fmt as fmt_stat, specs_for, stat

    out = Path(out)
    cfg = metrics["config"]
    specs = specs_for(list(metrics["suites"].values()))  # percentages with standard errors (docs/evaluation.md)
    rows = [[s, *(fmt_stat(stat(m, spec), spec) for spec in specs)] for s, m in metrics["suites"].items()]
    body = [f"<p>Model <code>{html.escape(str(metrics['model']))}</code>"
            + (f", LoRA <code>{html.escape(metrics['lora'])}</code>" if metrics.get("lora") else "")
            + (f", negative prompt <code>{html.escape(metrics['negative_prompt'])}</code>"
               if metrics.get("negative_prompt") else "")
            + f"; {cfg['steps']} {html.escape(cfg['scheduler'])} steps, guidance {cfg['guidance_scale']}, "
              f"{cfg['n_per_prompt']} image(s) per prompt; judge: {html.escape(metrics['judge'])}; "
              f"{metrics['seconds']} s.</p>",
            '<section id="summary"><h2>Summary</h2>', html_table(["suite", *(spec.label for spec in specs)], rows, "summary"),
            "<p>Percentages with ± one standard error (binomial, over the images counted).</p>",
            "</section>"]
    body += [_suite_section(s, m, out) for s, m in metrics["suites"].items()]
    body.append(f"<details><summary>config</summary><pre>{html.escape(json.dumps(cfg, indent=1))}</pre></details>")
    path = out / "report.html"
    atomic_write_text(path, page(f"scdpo eval: {metrics['name']}", "".join(body)))
    return path
