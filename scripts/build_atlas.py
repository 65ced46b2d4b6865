#!/usr/bin/env python3
"""Rebuild EmojiWorld's committed sprite atlas from the npm packages.

The project runs from the committed atlas (src/scdpo/world/data/atlas.png + atlas.json); npm is
needed only to rebuild it, e.g. after adding a concept to concepts.yaml:

    python scripts/build_atlas.py            # runs `npm pack` into a temp dir
    python scripts/build_atlas.py --npm-dir DIR   # DIR holds the unpacked packages

Inputs: Noto emoji PNGs (64 px) and emoji.json from `emoji-datasource-google` (images Apache-2.0),
keywords from `emojilib` (MIT). Output: one RGBA sprite sheet (a row-major grid of 64x64 cells in
concepts.yaml order: safe concepts, then harmful ones), a JSON index, and a NOTICE.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "src" / "scdpo" / "world" / "data"
PACKAGES = ("emoji-datasource-google", "emojilib")
CELL, COLUMNS = 64, 16


def fetch_packages(dest: Path) -> dict[str, Path]:
    """`npm pack` each package into dest and unpack it; returns package -> unpacked dir."""
    out = {}
    for name in PACKAGES:
        tgz = subprocess.run(["npm", "pack", name, "--silent"], cwd=dest, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        target = dest / name
        with tarfile.open(dest / tgz) as tar:
            tar.extractall(target, filter="data")
        out[name] = target / "package"
    return out


def find_packages(npm_dir: Path) -> dict[str, Path]:
    out = {}
    for name in PACKAGES:
        hits = sorted(p for p in npm_dir.iterdir() if p.is_dir() and p.name.startswith(name))
        if not hits:
            raise SystemExit(f"{npm_dir}: no unpacked '{name}' package found")
        pkg = hits[-1] / "package" if (hits[-1] / "package").is_dir() else hits[-1]
        out[name] = pkg
    return out


def build(pkgs: dict[str, Path]) -> None:
    concepts = yaml.safe_load((DATA / "concepts.yaml").read_text())
    entries = concepts["safe"] + concepts["harmful"]
    src = pkgs["emoji-datasource-google"]
    by_short = {}
    for e in json.loads((src / "emoji.json").read_text()):
        for short in e["short_names"]:
            by_short[short] = e
    lib = json.loads((pkgs["emojilib"] / "dist" / "emoji-en-US.json").read_text())
    version = json.loads((src / "package.json").read_text())["version"]
    lib_version = json.loads((pkgs["emojilib"] / "package.json").read_text())["version"]

    rows = -(-len(entries) // COLUMNS)
    sheet = np.zeros((rows * CELL, COLUMNS * CELL, 4), np.uint8)
    index = []
    for i, c in enumerate(entries):
        e = by_short.get(c["emoji"])
        if e is None or not e.get("has_img_google"):
            raise SystemExit(f"concept {c['name']!r}: emoji {c['emoji']!r} has no Google image")
        img = Image.open(src / "img" / "google" / "64" / e["image"]).convert("RGBA")
        if img.size != (CELL, CELL):
            img = img.resize((CELL, CELL), Image.LANCZOS)
        r, col = divmod(i, COLUMNS)
        sheet[r * CELL:(r + 1) * CELL, col * CELL:(col + 1) * CELL] = np.asarray(img)
        char = "".join(chr(int(h, 16)) for h in e["unified"].split("-"))
        keywords = lib.get(char) or lib.get(char.replace("\ufe0f", "")) or []
        index.append({"name": c["name"], "emoji": c["emoji"], "unified": e["unified"],
                      "cldr_name": (e["name"] or "").lower(), "keywords": keywords[1:]})
    buf = io.BytesIO()
    Image.fromarray(sheet, "RGBA").save(buf, format="PNG", optimize=True)
    (DATA / "atlas.png").write_bytes(buf.getvalue())
    meta = {"cell": CELL, "columns": COLUMNS, "count": len(entries),
            "source": f"emoji-datasource-google {version} (Noto Emoji images), emojilib {lib_version}",
            "entries": index}
    (DATA / "atlas.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(entries)} sprites ({len(buf.getvalue()) / 1e6:.2f} MB) to {DATA}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npm-dir", type=Path, help="folder with the unpacked npm packages (default: npm pack)")
    args = ap.parse_args()
    if args.npm_dir:
        build(find_packages(args.npm_dir))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            build(fetch_packages(Path(tmp)))


if __name__ == "__main__":
    main()
