"""`scdpo data build` (preference pairs from a model), `scdpo data mine` (the words a model draws harm
for) and `scdpo data annotate` (cost columns)."""

from __future__ import annotations

import argparse
import json


def _build(args) -> None:
    from scdpo.data.builder import build
    from scdpo.data.config import BuildConfig
    from scdpo.utils.config import dataclass_from_args

    summary = build(dataclass_from_args(BuildConfig, args))
    if summary:  # under accelerate launch only the main process has it
        print(json.dumps(summary, indent=1))


def _mine(args) -> None:
    from scdpo.data.mine import mine
    from scdpo.data.mine_config import MineConfig
    from scdpo.utils.config import dataclass_from_args

    print(json.dumps(mine(dataclass_from_args(MineConfig, args)), indent=1))


def _annotate(args) -> None:
    import torch

    from scdpo.cost import load_cost_scorer
    from scdpo.data.annotate import annotate

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    files = annotate(args.dataset, load_cost_scorer(args.cost_model, device), args.out, batch_size=args.batch_size)
    print(f"wrote {len(files)} file(s) with cost_0 and cost_1 to {args.out}")


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.data.config import BuildConfig
    from scdpo.data.mine_config import MineConfig
    from scdpo.utils.config import add_dataclass_args

    p = sub.add_parser("data", help="build safety-constrained preference pairs; add cost columns to a dataset")
    data = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    b = data.add_parser("build", help="sample K candidates per prompt, score cost and reward, choose pairs, "
                        "write Pick-a-Pic parquet with a dataset card (resumable; accelerate launch for multi-GPU)")
    add_dataclass_args(b, BuildConfig)
    b.set_defaults(func=_build)
    m = data.add_parser("mine", help="find the words that make a model draw a harmful concept, read by the judge "
                        "or a cost model (mined.yaml for `data build --mined-words`; resumable)")
    add_dataclass_args(m, MineConfig)
    m.set_defaults(func=_mine)
    a = data.add_parser("annotate", help="add cost_0 / cost_1 columns to a Pick-a-Pic-format parquet dataset")
    a.add_argument("--dataset", required=True, help="a parquet file or a folder of them with caption, jpg_0, jpg_1")
    a.add_argument("--cost-model", required=True, help="the safety cost model folder")
    a.add_argument("--out", required=True, help="output folder (may be --dataset to annotate in place)")
    a.add_argument("--batch-size", type=int, default=64, help="images per scoring batch (default: 64)")
    a.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    a.set_defaults(func=_annotate)
