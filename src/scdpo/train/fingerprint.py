"""The run fingerprint: every setting that changes what training computes, plus the dataset's
identity. Checkpoints record it; ``--resume`` continues only a run with the same fingerprint,
and a fresh run refuses a folder holding another run's checkpoints (docs/reliability.md).

Every TrainConfig field counts unless it is listed in :data:`NO_EFFECT`, so a field added later
is covered without anyone remembering to add it here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from scdpo.train.config import TrainConfig
from scdpo.utils.datasets import parquet_files

# fields that change where output goes, how progress is shown or how fast it runs, never the
# weights: a resumed run may change them (max_steps: the schedule does not depend on it, so a
# resumed run may train for longer)
NO_EFFECT = frozenset({
    "out", "resume", "overwrite", "max_steps", "log_every", "checkpoint_every", "keep_checkpoints",
    "validate_every", "validate_prompts", "validate_n", "validate_steps", "validate_judge",
    "max_nonfinite_in_row", "workers", "merge", "device", "compile", "compile_mode", "compile_cache",
    "cuda_graphs",
    "gradient_checkpointing",
})
_TAIL = 1 << 16  # parquet keeps its footer (schema, row groups, statistics) at the end


def settings(cfg: TrainConfig) -> dict:
    """The fingerprinted settings of ``cfg`` (JSON-comparable values)."""
    # the dataset's path does not count, its contents do (dataset_digest): a moved dataset resumes
    return json.loads(json.dumps({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                                  if f.name not in NO_EFFECT and f.name != "dataset"}, default=str))


def dataset_digest(path: str | Path) -> str:
    """Identity of a parquet dataset: each file's name, size and footer, hashed. The footer holds
    every row group's offsets and column statistics, so any rewrite of the rows changes it; reading
    it costs the same for a 10 MB and a 100 GB dataset."""
    root = Path(path).expanduser().resolve()  # datasets resolves a folder's files to absolute paths
    h = hashlib.sha256()
    for f in (f.resolve() for f in parquet_files(root)):
        size = f.stat().st_size
        h.update(f"{f.relative_to(root) if f != root else f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            fh.seek(max(0, size - _TAIL))
            h.update(fh.read())
    return h.hexdigest()


def fingerprint(cfg: TrainConfig, pairs: int, global_batch: int, precision: str | None = None) -> dict:
    """What a checkpoint records: the settings, the dataset digest, the usable pairs, the global
    batch (processes x batch size) and the precision actually used (``mixed_precision: auto``
    resolves by machine), and one hash of all of it."""
    record = {"settings": settings(cfg), "dataset_digest": dataset_digest(cfg.dataset), "pairs": pairs,
              "global_batch": global_batch, "precision": precision}
    record["hash"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    return record


def differences(old: dict | None, new: dict) -> list[str]:
    """Human lines naming what differs between two fingerprints (empty when they match)."""
    if not old or "settings" not in old:
        return ["the checkpoint has no run fingerprint (an older scdpo made it)"]
    out = []
    keys = sorted(set(old["settings"]) | set(new["settings"]))
    # a field added after the checkpoint was written computed its default then (the option did not exist)
    defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(TrainConfig)
                                      if f.default is not dataclasses.MISSING}, default=str))
    for k in keys:
        a, b = old["settings"].get(k, defaults.get(k, "<unset>")), new["settings"].get(k, "<unset>")
        if a != b:
            out.append(f"{k} {a!r} -> {b!r}")
    if old.get("dataset_digest") != new.get("dataset_digest"):
        out.append("the dataset's files changed")
    for k in ("pairs", "global_batch", "precision"):
        if old.get(k) != new.get(k):
            out.append(f"{k} {old.get(k)!r} -> {new.get(k)!r}")
    return out
