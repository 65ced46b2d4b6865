"""The comparison report's plots, with honest axes: rates on 0-100%, Frechet distance from 0, and
one standard error as error bars, so that a one-point change looks like one point."""

from __future__ import annotations

import io

from scdpo.eval.metrics import METRICS, MetricSpec, Stat

X_KEY = "harmful_rate_harmful_prompts"  # the safety axis of the trade-off


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _axis(ax, spec: MetricSpec, values: list[float], which: str) -> None:
    """Rates in percent over 0-100; numbers from 0 to a little above the largest value."""
    setter = ax.set_xlim if which == "x" else ax.set_ylim
    if spec.kind == "rate":
        setter(0, 100)
    else:
        setter(0, 1.15 * max([v for v in values if v is not None] or [1.0]))


def _scaled(s: Stat, spec: MetricSpec) -> tuple[float | None, float | None]:
    k = 100 if spec.kind == "rate" else 1
    return (None if s.value is None else k * s.value), (None if s.se is None else k * s.se)


def tradeoff_plot(names: list[str], pooled: list[dict[str, Stat]]) -> bytes:
    return _png(tradeoff_figure(names, pooled))


def tradeoff_figure(names: list[str], pooled: list[dict[str, Stat]]):
    """Harmful rate on harmful prompts (x, lower is safer) against alignment and Frechet distance,
    one labelled point per method with one standard error as bars."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state (renders with Agg)

    x_spec = METRICS[X_KEY]
    panels = [k for k in ("alignment", "frechet.fd") if any(p.get(k, Stat(None)).value is not None for p in pooled)]
    panels = panels or ["alignment"]
    # constrained layout keeps each panel's labels clear of its neighbour
    fig = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    for j, key in enumerate(panels):
        spec = METRICS[key]
        ax = fig.add_subplot(1, len(panels), j + 1)
        ys = []
        for name, p in zip(names, pooled):
            (x, xe), (y, ye) = _scaled(p.get(X_KEY, Stat(None)), x_spec), _scaled(p.get(key, Stat(None)), spec)
            ys.append(y)
            if x is not None and y is not None:
                ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", capsize=3, clip_on=False)  # 100% stays whole
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        _axis(ax, x_spec, [], "x")
        _axis(ax, spec, ys, "y")
        better = "higher" if spec.higher_is_better else "lower"
        ax.set_xlabel("harmful rate on harmful prompts, % (lower is safer)")
        ax.set_ylabel(f"{spec.label}{', %' if spec.kind == 'rate' else ''} ({better} is better)")
        ax.set_title(f"safety against {spec.label}")
        ax.grid(alpha=0.3)
    return fig


def category_plot(names: list[str], rates: list[dict[str, Stat]], categories: list[str]) -> bytes:
    """Harmful rate per I2P category, grouped bars per method, 0-100% with one standard error."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6, 1.2 * len(categories) + 2) + 2.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(names))
    for j, (name, r) in enumerate(zip(names, rates)):
        stats = [r.get(c, Stat(None)) for c in categories]
        ax.bar([i + j * width for i in range(len(categories))], [100 * (s.value or 0.0) for s in stats], width,
               yerr=[100 * (s.se or 0.0) for s in stats], capsize=2, label=name)
    counts = [max((r[c].n or 0) for r in rates if c in r) for c in categories]
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(categories))],
                  [f"{c}\n({n} images)" for c, n in zip(categories, counts)], fontsize=8)
    ax.set_ylabel("harmful rate, % (judge; lower is safer)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over the bars
    return _png(fig)
