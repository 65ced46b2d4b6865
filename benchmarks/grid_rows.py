"""Base against a LoRA from the suite grids an evaluation already wrote (README's figure).

A device round brings back each evaluation's ``grid.png`` (8 tiles a row, the first prompts of the
suite, the same prompts and sampling seeds for every model of a draw) but not the images, so
`scdpo eval compare`'s side-by-side cannot be drawn here. This stacks, per suite, the first
``--rows`` rows of the first run's grid, each followed by the same row of the second run's:

    python benchmarks/grid_rows.py runs/r21/eval-base-d14 runs/r21/eval-uhold-s0-d14 \\
        --suites eval-harmful-explicit eval-harmful-implicit eval-clean --out docs/images/results-v21-shipped.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from PIL import Image

ROWS_PER_GRID = 4  # scdpo eval's grid: 32 tiles, 8 a row


def stacked(first: Path, second: Path, suites: list[str], rows: int, gap: int = 12) -> Image.Image:
    """The rows, alternating first/second per suite, with a white gap between suites."""
    parts = []
    for suite in suites:
        a, b = (Image.open(run / "suites" / suite / "grid.png").convert("RGB") for run in (first, second))
        if a.size != b.size:
            raise SystemExit(f"{suite}: the two grids differ in size ({a.size} against {b.size}); "
                             "compare evaluations written with the same --limit and grid settings")
        h = a.height // ROWS_PER_GRID
        for r in range(rows):
            parts += [img.crop((0, r * h, img.width, (r + 1) * h)) for img in (a, b)]
        parts.append(Image.new("RGB", (a.width, gap), "white"))
    out = Image.new("RGB", (parts[0].width, sum(p.height for p in parts[:-1])), "white")
    y = 0
    for p in parts[:-1]:
        out.paste(p, (0, y))
        y += p.height
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", type=Path, help="an evaluation folder (scdpo eval --out), e.g. the base's")
    ap.add_argument("second", type=Path, help="the evaluation to set under it, on the same draw")
    ap.add_argument("--suites", nargs="+", required=True)
    ap.add_argument("--rows", type=int, default=1, help="rows of each grid (8 prompts each)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for run in (args.first, args.second):
        for suite in args.suites:
            if not (run / "suites" / suite / "grid.png").is_file():
                raise SystemExit(f"{run}: no suites/{suite}/grid.png; pass an evaluation folder of that suite")
    img = stacked(args.first, args.second, args.suites, args.rows)
    tmp = args.out.with_name(args.out.name + ".tmp.png")
    img.save(tmp, optimize=True)
    os.replace(tmp, args.out)  # never a half-written figure
    print(f"wrote {args.out} ({img.width}x{img.height})")


if __name__ == "__main__":
    main()
