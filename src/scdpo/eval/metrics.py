"""How reports show a metric: the registry of metric display specs, and rates with standard errors.

A suite's metrics in ``metrics.json`` are read through :data:`METRICS`: key -> label, kind, and
which direction is better. The storage convention (docs/evaluation.md, "Adding a metric") is flat:
a rate is a fraction ``key`` in [0, 1] with its count of images (or prompts) in ``key_n``; an
explicit standard error may be stored as ``key_se``. A rate's standard error is otherwise the
binomial one, ``sqrt(p (1 - p) / n)``; for a mean of per-image fractions (``alignment``) that is an
upper bound, since a variable in [0, 1] with mean p has variance at most p (1 - p).

A top-level rate that is not registered still shows (under its key, direction unknown) as long as
its ``key_n`` is stored; :func:`register` gives it a label and a direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class MetricSpec:
    """How one metric of a suite is read, pooled and shown.

    Attributes:
        key: its key in a suite's metrics; a dotted key reads a nested dict (``frechet.fd``).
        label: column title in tables and plots.
        kind: ``"rate"`` (a fraction, shown as a percentage with its standard error) or ``"number"``.
        higher_is_better: True, False, or None when neither direction is better (no regression notes).
        pool: how suites are pooled: ``"count"`` (weighted by n, as one big sample) or ``"mean"``
            (the plain mean over suites: Frechet distances of different reference sets).
        headline: which suites the printed headline table shows it for: ``"harmful"`` (suites with
            harmful prompts), ``"clean"`` (suites with clean prompts) or None (the full table only).
        fallback_n: the count for runs written before ``key_n`` was stored, from the suite's metrics.
    """

    key: str
    label: str
    kind: str = "rate"
    higher_is_better: bool | None = None
    pool: str = "count"
    headline: str | None = None
    fallback_n: Callable[[dict], int | None] | None = None

    def __post_init__(self):
        if self.kind not in ("rate", "number") or self.pool not in ("count", "mean"):
            raise ValueError(f"metric {self.key!r}: kind must be rate/number and pool count/mean")


@dataclass(frozen=True)
class Stat:
    """A metric's value with the count it is over and its standard error (None where unknown)."""

    value: float | None
    n: int | None = None
    se: float | None = None


def _images(m: dict) -> int | None:
    return m.get("images")


#: every metric reports know, in table order; :func:`register` adds more
METRICS: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    """Add (or replace) a metric's display spec; returns it."""
    METRICS[spec.key] = spec
    return spec


for _spec in [
    MetricSpec("harmful_rate_harmful_prompts", "harmful rate, harmful prompts", higher_is_better=False,
               headline="harmful", fallback_n=lambda m: m.get("harmful_images")),
    MetricSpec("harmful_rate_clean_prompts", "harmful rate, clean prompts", higher_is_better=False,
               fallback_n=lambda m: m["images"] - m["harmful_images"] if "harmful_images" in m else None),
    MetricSpec("harmful_rate", "harmful rate, all images", higher_is_better=False, fallback_n=_images),
    MetricSpec("harmful_requested_present", "requested harm drawn", higher_is_better=False),
    MetricSpec("alignment", "alignment", higher_is_better=True, headline="clean",
               fallback_n=lambda m: m.get("alignment_images")),
    MetricSpec("frechet.fd", "Frechet", kind="number", higher_is_better=False, pool="mean", headline="clean"),
    MetricSpec("reward_mean", "reward", kind="number", higher_is_better=True, fallback_n=_images),
    MetricSpec("cost.mean", "cost mean", kind="number", higher_is_better=False, fallback_n=_images),
    MetricSpec("cost.frac_positive", "cost > 0", higher_is_better=False, fallback_n=_images),
    MetricSpec("nsfw.rate", "NSFW rate", higher_is_better=False, fallback_n=_images),
    # per-suite rates of the attack and baseline suites (stored as key + key_n)
    # real-image judges (scdpo.eval.judges), None where the domain has none
    MetricSpec("judges.nudenet.rate", "NudeNet rate", higher_is_better=False, fallback_n=_images),
    MetricSpec("judges.q16.rate", "Q16-style rate", higher_is_better=False, fallback_n=_images),
    MetricSpec("judges.clip_score.mean", "CLIP score", kind="number", higher_is_better=True, fallback_n=_images),
    # what is drawn instead of the harmful concept (scdpo.eval.objects, stored as {rate, n, se})
    MetricSpec("safe_object_rate", "safe object drawn", higher_is_better=True, headline="harmful"),
    MetricSpec("counterpart_rate", "safe counterpart drawn", higher_is_better=True),
    MetricSpec("empty_rate", "empty image", higher_is_better=False, headline="harmful"),
    MetricSpec("benign_retention", "benign retention", higher_is_better=True),
    MetricSpec("attack_success_rate", "attack success", higher_is_better=False),
]:
    register(_spec)


def _lookup(m: dict, key: str):
    for part in key.split("."):
        if not isinstance(m, dict):
            return None
        m = m.get(part)
    return m


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion ``p`` over ``n`` trials: sqrt(p (1 - p) / n)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def stat(m: dict, spec: MetricSpec) -> Stat:
    """``spec``'s metric in one suite's metrics ``m``: value, count and standard error."""
    raw = _lookup(m, spec.key)
    if isinstance(raw, dict):  # tolerated: {"rate"|"value", "n", "se"}
        value, n, se = raw.get("rate", raw.get("value")), raw.get("n"), raw.get("se")
    else:
        value, n, se = raw, _lookup(m, spec.key + "_n"), _lookup(m, spec.key + "_se")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return Stat(None)
    if n is None and spec.fallback_n is not None:
        n = spec.fallback_n(m)
    if se is None and spec.kind == "rate" and n:
        se = binomial_se(float(value), int(n))
    return Stat(float(value), n, se)


def specs_for(suites: list[dict]) -> list[MetricSpec]:
    """The registered metrics any of ``suites`` has, then unregistered top-level rates (a float with
    a ``key_n``), in registry then key order."""
    found = [s for s in METRICS.values() if any(stat(m, s).value is not None for m in suites)]
    extra = sorted({k for m in suites for k, v in m.items()
                    if k not in METRICS and isinstance(v, float) and isinstance(m.get(k + "_n"), int)})
    return found + [MetricSpec(k, k) for k in extra]


def pool(stats: list[Stat], spec: MetricSpec) -> Stat:
    """One value over several suites: a rate (or a counted number) as one sample of all their
    images; a ``pool="mean"`` number (or one without counts) as the plain mean over suites."""
    stats = [s for s in stats if s.value is not None]
    if not stats:
        return Stat(None)
    if spec.pool == "count" and all(s.n for s in stats):
        n = sum(s.n for s in stats)
        value = sum(s.value * s.n for s in stats) / n
        if spec.kind == "rate":
            return Stat(value, n, binomial_se(value, n))
        return Stat(value, n)
    return Stat(sum(s.value for s in stats) / len(stats))


def fmt(s: Stat, spec: MetricSpec, se: bool = True) -> str:
    """``95.8% ± 2.9`` for a rate (percentage points), ``132.1`` for a number, ``-`` when missing."""
    if s.value is None:
        return "-"
    if spec.kind == "rate":
        text = f"{100 * s.value:.1f}%"
        return text + (f" ± {100 * s.se:.1f}" if se and s.se is not None else "")
    return f"{s.value:.4g}" if abs(s.value) < 1000 else f"{s.value:.1f}"


def worse(a: Stat, b: Stat, spec: MetricSpec, min_points: float = 1.0) -> tuple[float, float | None] | None:
    """(change, z) when ``b`` is worse than ``a`` in ``spec``'s direction, by at least ``min_points``
    percentage points for a rate (any amount for a number), else None. ``z`` is the change in
    standard errors of the difference, sqrt(se_a^2 + se_b^2) (None without standard errors)."""
    if spec.higher_is_better is None or a.value is None or b.value is None:
        return None
    change = b.value - a.value
    bad = change < 0 if spec.higher_is_better else change > 0
    if not bad or (spec.kind == "rate" and abs(change) * 100 < min_points):
        return None
    if a.se is None or b.se is None:
        return change, None
    spread = math.hypot(a.se, b.se)
    return change, (abs(change) / spread if spread > 0 else math.inf)
