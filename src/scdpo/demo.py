"""`scdpo demo`: what runs on a fresh machine from the README's first command.

Today it shows the offline world everything else is built on: one labelled grid per prompt suite
and the harm taxonomy. Later stages (cost model, SCP pairs, SC-DPO, evaluation) extend it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def run(out: str, n: int = 16, size: int = 64, seed: int = 0) -> list[Path]:
    from scdpo.utils.grid import save_grid
    from scdpo.world.commands import print_taxonomy
    from scdpo.world.render import render_scenes
    from scdpo.world.suites import SUITES, suite_scenes

    paths = []
    for name in SUITES:
        scenes = suite_scenes(name, n, seed)
        path = save_grid(render_scenes(scenes, size), Path(out) / f"{name}.png", [s.caption for s in scenes])
        print(f"{name:24s} -> {path}")
        paths.append(path)
    print()
    print_taxonomy()
    return paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render a labelled grid of every EmojiWorld suite and print the taxonomy",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="folder for the grids")
    p.add_argument("--n", type=int, default=16, help="images per suite grid")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=lambda a: run(a.out, a.n, a.size, a.seed))
