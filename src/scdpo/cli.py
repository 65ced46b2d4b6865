"""The `scdpo` command line. Each stage registers its own subcommands; this file only wires them."""

from __future__ import annotations

import argparse
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
    cost_cmd.register(sub)
    data_cmd.register(sub)
    eval_cmd.register(sub)
    baseline_cmd.register(sub)
    attack_cmd.register(sub)
    demo.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except BrokenPipeError:  # `scdpo ... | head`
        return 0
    except (ValueError, FileNotFoundError, KeyError) as e:
        # bad input: one clear line, no traceback
        print(f"scdpo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
