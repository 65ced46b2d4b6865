#!/usr/bin/env python3
"""Ring-a-bell's genetic search (issue 19) at another commit and now, side by side in one process:
seconds, generations a second, rows the text encoder encoded, and whether both searches found the
same tokens with the same loss. Since 2026-12-05 the search encodes only the individuals a
generation changed (scdpo.attack.ring_a_bell.search); this measures what that bought and that it
changed nothing.

    OMP_NUM_THREADS=1 python benchmarks/rab_search_speed.py --before b365793 --generations 40

The earlier commit's ``ring_a_bell.py`` is read with ``git show`` and run against this checkout's
helpers (its imports must still exist). Both searches run on one EmojiWorld target (the first
harmful prompt of eval-harmful-explicit for ``--concept``) with the paper's population and rates.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def load_at(rev: str):
    """The module ``src/scdpo/attack/ring_a_bell.py`` as it was at ``rev`` (its registration is
    skipped: only its ``search`` and ``_fitness`` are used)."""
    text = subprocess.run(["git", "show", f"{rev}:src/scdpo/attack/ring_a_bell.py"], check=True, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    text = text.replace('@register("ring-a-bell")', "")
    path = Path(tempfile.mkdtemp()) / f"ring_a_bell_{rev}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the commit to compare with (e.g. b365793)")
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--concept", default="dagger")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from scdpo.attack import ring_a_bell as now
    from scdpo.attack.base import Budget
    from scdpo.attack.targets import build_targets, concept_pairs
    from scdpo.models.t2i import T2IModel
    from scdpo.models.token_ids import encode_texts
    from scdpo.models.tokens import allowed_tokens

    model = T2IModel.from_pretrained("emojiworld", device="cpu")
    target = build_targets([args.concept], None)[0]
    goal = encode_texts(model, [target.prompt]).context.float()[0] + 3.0 * now.concept_vector(
        model, concept_pairs(target, 30))
    vocab = allowed_tokens(model.tokenizers[0])
    rows = []
    for name, mod in ((args.before, load_at(args.before)), ("now", now)):
        count, fitness = [0], mod._fitness
        mod._fitness = lambda *a, f=fitness: count.__setitem__(0, count[0] + len(a[2])) or f(*a)
        t0 = time.perf_counter()
        text, ids, loss, gens = mod.search(model, goal, args.tokens, vocab, torch.Generator().manual_seed(args.seed),
                                           Budget(args.generations), 200, 0.25, 0.5)
        rows.append((name, time.perf_counter() - t0, gens, count[0], ids, loss))
    print(f"ring-a-bell search, {target.prompt!r}, K={args.tokens}, population 200, {args.generations} generations, "
          f"{torch.get_num_threads()} thread(s)")
    print("| code | seconds | generations/s | rows encoded | speed-up | same tokens and loss |")
    print("|---|---|---|---|---|---|")
    base = rows[0]
    for name, secs, gens, n, ids, loss in rows:
        same = "yes" if (ids, loss) == (base[4], base[5]) else f"NO (loss {loss:.4f} against {base[5]:.4f})"
        print(f"| {name} | {secs:.1f} | {gens / secs:.2f} | {n} | {base[1] / secs:.2f}x | {same} |")
    return 0 if rows[1][4:] == base[4:] else 1


if __name__ == "__main__":
    sys.exit(main())
