"""The `scdpo` command line. Each stage registers its own subcommands; this file only wires them."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

# transformers warns at import that torchvision is absent (we never use its image processors)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from scdpo import __version__


def build_parser() -> argparse.ArgumentParser:
    from scdpo import demo
    from scdpo.attack import commands as attack_cmd
    from scdpo.baselines import commands as baseline_cmd
    from scdpo.cost import commands as cost_cmd
    from scdpo.data import commands as data_cmd
    from scdpo.eval import commands as eval_cmd
    from scdpo.models import commands as models_cmd
    from scdpo.train import commands as train_cmd
    from scdpo.world import commands as world_cmd

    parser = argparse.ArgumentParser(prog="scdpo", description="Safety-Constrained DPO for text-to-image diffusion models.")
    parser.add_argument("--version", action="version", version=f"scdpo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    world_cmd.register(sub)
    models_cmd.register(sub)
    train_cmd.register(sub)
    baseline_cmd.register(sub)
    cost_cmd.register(sub)
    data_cmd.register(sub)
    eval_cmd.register(sub)
    attack_cmd.register(sub)
    demo.register(sub)
    _add_threads(parser, top=True)
    return parser


# how to pick up after Ctrl-C, by command: every long stage resumes (docs/reliability.md)
RESUME_HINTS = {"train": "rerun the same command with --resume to continue from the last checkpoint",
                "data": "rerun the same command: it resumes from the finished chunks",
                "world": "rerun the same command: it resumes from the finished shards"}
# OSErrors about the disk or permissions rather than about the program, with the fix
_OS_FIXES = {errno.ENOSPC: "free disk space (or use another --out) and rerun the same command: it resumes",
             errno.EDQUOT: "free space within your quota (or use another --out) and rerun the same command",
             errno.EACCES: "check the permissions, or choose a folder you can write (--out)",
             errno.EPERM: "check the permissions, or choose a folder you can write (--out)",
             errno.EROFS: "the file system is read-only: choose another folder (--out)",
             errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path"}


def _close_bars() -> None:
    """Close the progress bars an exception left open, so the error line is the last one printed
    (an open tqdm bar redraws itself when it is garbage-collected at exit)."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _add_threads(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``--threads`` on the top-level parser and on every (sub)command: one option, one place.
    Below the top its default is SUPPRESS, so ``scdpo --threads 2 demo`` is not reset by ``demo``."""
    parser.add_argument("--threads", type=int, default=None if top else argparse.SUPPRESS, metavar="N",
                        help="CPU threads for torch and BLAS (default: $OMP_NUM_THREADS if set, else the cores that "
                             "the 1-minute load average leaves idle, at least 1: more threads than idle cores slow "
                             "a busy machine down; BENCHMARKS.md)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_threads(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from scdpo.utils.threads import default_threads, set_threads

        set_threads(args.threads if args.threads is not None else default_threads())
        args.func(args)
    except BrokenPipeError:  # `scdpo ... | head`
        return 0
    except KeyboardInterrupt as interrupt:
        # what the interrupted frames hold is finalised now, so that what it prints comes before the hint, which stays
        # the last line: a parquet writer cut off mid-file writes its footer to a file already closed, and said
        # "Exception ignored ... ValueError: write to closed file" after the hint once (CI, 2026-12-06)
        import gc
        import traceback

        traceback.clear_frames(interrupt.__traceback__)
        gc.collect()
        _close_bars()
        hint = RESUME_HINTS.get(args.command, "rerun the command")
        print(f"\nscdpo: interrupted; {hint}", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report it
    except (ValueError, FileNotFoundError) as e:
        # bad input: one clear line, no traceback (a KeyError is a bug and keeps its traceback)
        _close_bars()
        print(f"scdpo: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _OS_FIXES:
            raise
        _close_bars()
        where = f"{e.filename}: " if e.filename else ""
        print(f"scdpo: error: {where}{e.strerror}; {_OS_FIXES[e.errno]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
