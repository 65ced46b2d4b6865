"""`scdpo cost train` and `scdpo cost score`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def score_path(model, images: str | Path, batch_size: int = 64, progress: bool = True):
    """Costs of every image in a folder (PNG/JPG/...; sorted by name) or a parquet file / folder of
    shards with Pick-a-Pic ``jpg_0``/``jpg_1`` columns (-> ``cost_0``/``cost_1``) or an ``image`` /
    ``path`` column (-> ``cost``). Returns a pandas DataFrame, one row per image or pair."""
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from scdpo.cost import data as D

    images, size = Path(images), model.backbone.input_size
    if not images.exists():
        raise FileNotFoundError(f"no such images: {images}")
    if D.is_image_folder(images):
        files = D.folder_images(images)
        costs = [model.score(x, batch_size) for x in tqdm(D.image_batches(images, size, batch_size),
                                                          total=-(-len(files) // batch_size), desc="score",
                                                          disable=not progress)]
        return pd.DataFrame({"file": [f.name for f in files], "cost": torch.cat(costs).tolist()})

    table, root, source = D.read_table(images)
    pairs = [c for c in ("jpg_0", "jpg_1") if c in table.columns]
    columns = pairs or [c for c in ("image", "path") if c in table.columns][:1]
    if not columns:
        raise ValueError(f"{source}: no image column (expected jpg_0/jpg_1, image or path); "
                         f"columns are {list(table.columns)}")
    out = pd.DataFrame({"row": range(len(table))})
    for col in ("caption", "path"):
        if col in table.columns:
            out[col] = table[col].to_numpy()
    for col in columns:
        view = table[[col]].rename(columns={col: "image" if col != "path" else "path"})  # one image column
        costs = [model.score(x, batch_size) for x in tqdm(
            D.table_images(view, root, f"{source} column {col!r}", size, batch_size),
            total=-(-len(table) // batch_size), desc=f"score {col}", disable=not progress)]
        name = "cost" if col in ("image", "path") else f"cost_{col[-1]}"
        out[name] = torch.cat(costs).tolist() if costs else []
    return out


def _train(args) -> None:
    from scdpo.cost.train import CostTrainConfig, train
    from scdpo.utils.config import dataclass_from_args

    cfg = dataclass_from_args(CostTrainConfig, args)
    metrics = train(cfg)
    print(json.dumps({k: metrics[k] for k in metrics if k != "config"}, indent=1))
    print(f"cost model saved to {cfg.out}")


def _score(args) -> None:
    from scdpo.cost.model import CostModel
    from scdpo.cost.train import resolve_device
    from scdpo.utils.io import atomic_path

    if args.out and Path(args.out).suffix not in (".parquet", ".json"):
        raise ValueError(f"--out {args.out}: expected a .parquet or .json file name")
    model = CostModel.from_pretrained(args.cost_model, resolve_device(args.device))
    table = score_path(model, args.images, args.batch_size, progress=not args.quiet)
    if args.out:
        out = Path(args.out)
        with atomic_path(out) as tmp:
            if out.suffix == ".parquet":
                table.to_parquet(tmp, index=False)
            else:
                tmp.write_text(table.to_json(orient="records", indent=1))
        print(f"wrote {len(table)} rows to {out}")
    else:
        print(table.to_string(index=False))
    for col in [c for c in table.columns if c.startswith("cost")]:
        c = table[col]
        print(f"{col}: n={len(c)} mean={c.mean():.3f} std={c.std():.3f} min={c.min():.3f} max={c.max():.3f} "
              f"harmful(cost>0)={(c > 0).mean():.1%}")


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.cost.config import CostTrainConfig
    from scdpo.utils.config import add_dataclass_args

    cost = sub.add_parser("cost", help="the safety cost model: train it, score images with it")
    cs = cost.add_subparsers(dest="cost_command", required=True, metavar="COMMAND")

    p = cs.add_parser("train", help="train a cost model (frozen backbone + adapter) on EmojiWorld renders or your data")
    add_dataclass_args(p, CostTrainConfig)
    p.set_defaults(func=_train)

    p = cs.add_parser("score", help="score images with a trained cost model (higher = more harmful, 0 = threshold)")
    p.add_argument("--cost-model", required=True, help="folder written by `scdpo cost train`")
    p.add_argument("--images", required=True,
                   help="folder of PNG/JPG images, or a parquet file/folder with jpg_0/jpg_1 or image/path columns")
    p.add_argument("--out", help="write the scores to this .parquet or .json file (default: print them)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--device", default="auto", help="auto (accelerator if any), cpu, cuda, mps ... (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_score)
