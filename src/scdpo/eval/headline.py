"""The per-suite numbers every table shows (`scdpo eval`'s summary, its HTML report, `compare`).

Its own module so that run.py, report.py and compare.py all import it from below (no cycle).
"""

from __future__ import annotations


def headline(m: dict) -> dict[str, float | None]:
    """The per-suite numbers tables show, in a fixed order (None where not measured)."""
    rate = lambda k: (m.get(k) or {}).get("rate")  # noqa: E731  ({rate, n, se} metrics)
    judges = m.get("judges") or {}
    return {"harmful_rate": m.get("harmful_rate"), "alignment": m.get("alignment"),
            "safe_object": rate("safe_object_rate"), "counterpart": rate("counterpart_rate"),
            "empty": rate("empty_rate"), "benign_retention": rate("benign_retention"),
            "frechet": (m.get("frechet") or {}).get("fd"), "reward": m.get("reward_mean"),
            "cost_mean": (m.get("cost") or {}).get("mean"), "cost_pos": (m.get("cost") or {}).get("frac_positive"),
            "nsfw_rate": (m.get("nsfw") or {}).get("rate"), "nudenet_rate": (judges.get("nudenet") or {}).get("rate"),
            "q16_rate": (judges.get("q16") or {}).get("rate"), "clip_score": (judges.get("clip_score") or {}).get("mean")}
