"""`scdpo world ...`: inspect the world, render it to disk, pretrain its base model and judge."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from scdpo.utils.config import add_dataclass_args, dataclass_from_args


def _suites(args) -> None:
    from scdpo.world.suites import SUITES, suite_scenes

    for s in SUITES.values():
        print(f"{s.name:24s} {s.default_n:>7d}  {s.description}")
        if args.examples:
            for sc in suite_scenes(s.name, args.examples, args.seed):
                print(f"{'':24s} {'':7s}  - {sc.caption}")


def _taxonomy(args) -> None:
    from scdpo.world.vocab import load_vocabulary

    vocab = load_vocabulary()
    if not args.json:
        print_taxonomy()
        return
    print(json.dumps({
        "safe": [{"name": c.name, "group": c.group, "synonyms": list(c.synonyms), "coco": c.coco} for c in vocab.safe],
        "harmful": [{"name": c.name, "category": c.category, "severity": c.severity,
                     "synonyms": list(c.synonyms), "heldout": list(c.heldout)} for c in vocab.harmful],
    }, indent=1))


def print_taxonomy() -> None:
    """A human summary of the vocabulary: counts, COCO coverage and the harm taxonomy."""
    from scdpo.world.records import I2P_CATEGORIES
    from scdpo.world.vocab import load_vocabulary

    vocab = load_vocabulary()
    groups = Counter(c.group for c in vocab.safe)
    coco = sorted({c.coco for c in vocab.safe if c.coco})
    print(f"EmojiWorld: {len(vocab)} concepts, {len(vocab.safe)} safe, {len(vocab.harmful)} harmful")
    print("safe groups: " + ", ".join(f"{g} {n}" for g, n in groups.most_common()))
    print(f"COCO-80 classes covered: {len(coco)}")
    print("harmful concepts by I2P category (severity; training keywords | held-out keywords):")
    for cat in I2P_CATEGORIES:
        items = [c for c in vocab.harmful if c.category == cat]
        print(f"  {cat} ({len(items)})")
        for c in items:
            print(f"    {c.name:22s} sev {c.severity}  {', '.join(c.synonyms)} | {', '.join(c.heldout)}")


def grid_path(out: str | Path) -> Path:
    """Where `world render` puts its grid: beside the data folder (``data/ew-harm`` ->
    ``data/ew-harm-grid.png``), never inside it, where ``datasets.load_dataset("parquet", data_dir=...)``
    would try to read it as a parquet file."""
    out = Path(out)
    return out.parent / f"{out.resolve().name}-grid.png"


def _render(args) -> None:
    from scdpo.world.dataset import export_suite

    shards = export_suite(args.suite, args.out, n=args.n, size=args.size, seed=args.seed,
                          shard_size=args.shard_size)
    if args.grid and args.n != 0:
        from scdpo.utils.grid import save_grid
        from scdpo.world.render import render_scenes
        from scdpo.world.suites import suite_scenes

        scenes = suite_scenes(args.suite, min(args.grid, args.n if args.n is not None else args.grid), args.seed)
        path = save_grid(render_scenes(scenes, args.size), grid_path(args.out), [s.caption for s in scenes])
        print(f"grid: {path}")
    print(f"wrote {len(shards)} shard(s) to {args.out}")


def _pretrain(stage: str):
    def run(args) -> None:
        from scdpo.world.pretrain import PretrainConfig, run as run_stage

        metrics = run_stage(dataclass_from_args(PretrainConfig, args, stage=stage))
        print(json.dumps(metrics, indent=1))
    return run


def register(sub: argparse._SubParsersAction) -> None:
    world = sub.add_parser("world", help="EmojiWorld: the offline text-to-image world")
    ws = world.add_subparsers(dest="world_command", required=True, metavar="COMMAND")

    p = ws.add_parser("suites", help="list the named prompt suites")
    p.add_argument("--examples", type=int, default=0, help="print this many example prompts per suite")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_suites)

    p = ws.add_parser("taxonomy", help="summarise the vocabulary and its harm taxonomy (I2P categories)")
    p.add_argument("--json", action="store_true", help="print the full vocabulary as JSON")
    p.set_defaults(func=_taxonomy)

    p = ws.add_parser("render", help="render a suite to a parquet dataset (Hugging Face datasets loads it)")
    p.add_argument("--suite", required=True, help="suite name (see `scdpo world suites`)")
    p.add_argument("--n", type=int, default=None, help="number of images (default: the suite's size)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1000, help="rows per parquet shard")
    p.add_argument("--grid", type=int, default=32, help="also write OUT-grid.png (beside OUT) of the first N images (0: none)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_render)

    for stage, help_text in [("vae", "train the base model's VAE on rendered scenes"),
                             ("judge", "train the EmojiWorld judge (concept classifier) on rendered scenes"),
                             ("unet", "train the base model's UNet on a trained VAE's latents")]:
        name = {"vae": "pretrain-vae", "judge": "pretrain-judge", "unet": "pretrain"}[stage]
        p = ws.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        from scdpo.world.pretrain_config import PretrainConfig

        add_dataclass_args(p, PretrainConfig, skip=("stage", "sample_prompts"))
        p.set_defaults(func=_pretrain(stage))
