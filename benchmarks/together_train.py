"""The pipeline's six trainings one after another against all six in one process (`scdpo train
--together`, issue 16): the whole wall time of each row, set-up included, and each run's last loss in
both rows (they should agree but for rounding: beta 312.5 times a batch's float32 rounding).

    python benchmarks/together_train.py --steps 20 --batch-size 8                    # the 2-core CPU
    python benchmarks/together_train.py --device cuda --steps 300 --batch-size 32     # one GPU

A row ``separate`` trains each method with `scdpo train`'s own function, one after another in this
process (on a GPU the pipeline runs them as six processes at once: benchmarks/round35.sh, stage 6,
times that against ``--together``). The pairs are benchmarks/anchor_cost.py's synthetic ones unless
``--dataset`` names an SCP folder. Prints one JSON line a row, then a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from anchor_cost import synthetic_pairs

# the methods of benchmarks/emojiworld_alignment.sh, as TrainConfig settings
METHODS = {"dpo": dict(loss="dpo"), "safetydpo": dict(loss="safetydpo"), "sc-dpo": dict(loss="sc-dpo"),
           "sc-dpo-no-dfm": dict(loss="sc-dpo", focus_gamma=0.0),
           "sc-dpo-no-constraint": dict(loss="sc-dpo", constraint=False),
           "sc-dpo-no-winner-term": dict(loss="sc-dpo", winner_weight=0.0)}


def configs(data: Path, out: Path, steps: int, batch: int, device: str | None) -> list:
    from scdpo.train.config import TrainConfig, load_yaml_config

    base = TrainConfig(**{**load_yaml_config(Path(__file__).resolve().parent.parent / "configs" / "emojiworld.yaml"), "dataset": str(data), "out": str(out),
                          "max_steps": steps, "batch_size": batch, "warmup": 50, "validate_every": 0,
                          "validate_judge": False, "validate_n": 1, "validate_steps": 1, "checkpoint_every": 100000,
                          "log_every": 50, "device": device})
    return [dataclasses.replace(base, out=str(out / name), **flags) for name, flags in METHODS.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dataset", help="an SCP folder (default: 256 synthetic pairs)")
    ap.add_argument("--rows", nargs="+", default=["separate", "together"], choices=["separate", "together"])
    args = ap.parse_args()

    from scdpo.train.together import train_together
    from scdpo.train.trainer import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.dataset) if args.dataset else synthetic_pairs(Path(tmp) / "pairs.parquet", 256)
        for row in args.rows:
            cfgs = configs(data, Path(tmp) / row, args.steps, args.batch_size, args.device)
            t0 = time.perf_counter()
            metrics = [train(c) for c in cfgs] if row == "separate" else train_together(cfgs)
            seconds = time.perf_counter() - t0
            rows.append({"row": row, "seconds": round(seconds, 1), "steps_per_s_in_all":
                         round(len(cfgs) * args.steps / seconds, 2),
                         "loss": {name: round(m["loss"], 5) for name, m in zip(METHODS, metrics)}})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{len(METHODS)} methods x {args.steps} steps at {args.batch_size} pairs, device {args.device or 'default'}; "
          "seconds of wall time, set-up included\n")
    print("| row | seconds | steps/s in all | x separate | last losses |")
    print("|---|---|---|---|---|")
    for r in rows:
        x = rows[0]["seconds"] / r["seconds"] if rows[0]["row"] == "separate" else float("nan")
        print(f"| {r['row']} | {r['seconds']} | {r['steps_per_s_in_all']} | {x:.2f}x | "
              + ", ".join(f"{v:.4f}" for v in r["loss"].values()) + " |")


if __name__ == "__main__":
    main()
