"""`scdpo train --config FILE [--key value ...]`: a YAML config, overridden by command-line flags;
`scdpo train average LORA LORA ... --out DIR`: one LoRA that is the mean of several (seeds' soup)."""

from __future__ import annotations

import argparse
import os


def config_from_args(args: argparse.Namespace):
    """TrainConfig from the dataclass defaults, then the YAML file, then the flags actually given."""
    from scdpo.train.config import TrainConfig
    from scdpo.utils.config import dataclass_from_args

    return dataclass_from_args(TrainConfig, args)


def _train(args) -> None:
    from scdpo.train.trainer import TrainingDiverged, train

    cfg = config_from_args(args)
    if args.at_once is not None and not args.seeds:
        raise ValueError("--at-once N goes with --seeds S ...; without --seeds there is one training")
    if args.run and not args.together:
        raise ValueError("--run goes with --together (several trainings in one process)")
    if args.together:
        _train_together(cfg, args)
        return
    if args.seeds:
        _train_seeds(cfg, args)
        return
    try:
        metrics = train(cfg)
    except TrainingDiverged as err:
        raise SystemExit(f"scdpo: error: {err}") from None
    if int(os.environ.get("RANK", "0")) != 0:  # one summary line per run, not per process
        return
    shown = {k: metrics[k] for k in ("steps", "loss", "implicit_acc", "margin", "lambda") if k in metrics}
    print(f"trained {cfg.out}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in shown.items()))


def _train_seeds(cfg, args) -> None:
    from scdpo.eval.seeds import summarize
    from scdpo.train.seeds import train_seeds

    if getattr(args, "seed", None) is not None:
        raise ValueError("give --seeds or --seed, not both")
    try:
        results = train_seeds(cfg, args.seeds, args.at_once)
    except RuntimeError as err:
        raise SystemExit(f"scdpo: error: {err}") from None
    losses = [r["metrics"]["loss"] for r in results.values() if "loss" in r.get("metrics", {})]
    for seed, r in results.items():
        print(f"seed {seed}: {r['out']}" + (f" ({r['skipped']})" if "skipped" in r else
                                           f", loss {r['metrics'].get('loss', float('nan')):.4g}, {r['seconds']} s"))
    s = summarize(losses)
    if s and s["k"] > 1:
        print(f"final loss over {s['k']} seeds: {s['mean']:.4g} ± {s['se']:.2g} (standard error)")


def run_configs(cfg, runs: list[str]) -> list:
    """One TrainConfig per ``--run OUT=FLAGS``: ``cfg`` with the run's flags (the command's own, e.g.
    ``--loss dpo --no-constraint``) on top and ``out`` = OUT."""
    import dataclasses
    import shlex

    from scdpo.train.config import TrainConfig
    from scdpo.utils.config import add_dataclass_args

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line naming the run, not argparse's usage text and exit
            raise ValueError(message)

    parser = Parser(prog="--run", add_help=False)
    add_dataclass_args(parser, TrainConfig, skip=("out",))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = []
    for spec in runs:
        where, sep, flags = spec.partition("=")
        if not sep or not where:
            raise ValueError(f"--run {spec!r}: write OUT=FLAGS, e.g. --run 'runs/dpo=--loss dpo'")
        try:
            given = vars(parser.parse_args(shlex.split(flags)))
            if given.pop("config", None) is not None:
                raise ValueError("--config belongs to the command, not to one run")
            out.append(dataclasses.replace(cfg, out=where, **{k: v for k, v in given.items() if k in fields}))
        except ValueError as err:
            raise ValueError(f"--run {spec!r}: {err} (its flags are `scdpo train`'s own)") from None
    return out


def _train_together(cfg, args) -> None:
    from scdpo.train.seeds import plan
    from scdpo.train.together import train_together
    from scdpo.train.trainer import TrainingDiverged

    if args.seeds and args.run:
        raise ValueError("--together trains either --seeds S ... or --run OUT=FLAGS ..., not both")
    if args.seeds and getattr(args, "seed", None) is not None:
        raise ValueError("give --seeds or --seed, not both")
    if args.at_once is not None:
        raise ValueError("--at-once counts processes; --together trains every run in one")
    import json
    import time
    from pathlib import Path

    from scdpo.utils.io import atomic_write_text

    cfgs = plan(cfg, args.seeds) if args.seeds else run_configs(cfg, args.run) if args.run else [cfg]
    start = time.time()
    try:
        results = train_together(cfgs)
    except TrainingDiverged as err:
        raise SystemExit(f"scdpo: error: {err}") from None
    if args.seeds:  # what `--seeds` without --together records, the seconds being the one process's
        record = {str(c.seed): {"out": c.out, "exit_code": 0, "seconds": round(time.time() - start, 1),
                                "together": True, "metrics": m} for c, m in zip(cfgs, results)}
        atomic_write_text(Path(cfg.out) / "seeds.json", json.dumps(record, indent=1))
    for c, m in zip(cfgs, results):
        print(f"trained {c.out}: steps {m['steps']}, loss {m.get('loss', float('nan')):.4g}, lambda {m['lambda']:.4g}")
    if args.seeds and len(results) > 1:
        from scdpo.eval.seeds import summarize

        st = summarize([m["loss"] for m in results if "loss" in m])
        print(f"final loss over {st['k']} seeds: {st['mean']:.4g} ± {st['se']:.2g} (standard error)")


def _average(args) -> None:
    from scdpo.train.average import average_loras

    print(f"wrote {average_loras(args.loras, args.out, args.weights)}")


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.train.config import TrainConfig
    from scdpo.utils.config import add_dataclass_args

    p = sub.add_parser("train", help="preference-train a T2I model: Diffusion-DPO, SafetyDPO or SC-DPO (LoRA or full)",
                       description="Train on Pick-a-Pic-format pairs. Settings come from the dataclass defaults, "
                                   "then --config FILE (YAML, e.g. configs/emojiworld.yaml), then the flags given. "
                                   "Several GPUs: accelerate launch --config_file configs/accelerate/ddp.yaml "
                                   "-m scdpo.cli train ...")
    p.add_argument("--config", help="YAML file of TrainConfig keys (configs/*.yaml)")
    add_dataclass_args(p, TrainConfig)  # a flag overrides the YAML only when given
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train once per seed, into OUT/seed-S, several at once on a GPU (docs/training.md, "
                        "\"Several seeds at once\")")
    p.add_argument("--at-once", type=int, metavar="N",
                   help="with --seeds: trainings at a time (default on a GPU: an EmojiWorld recipe's all, at most "
                        "12, another model's one per GPU; on the CPU: 1)")
    p.add_argument("--together", action="store_true",
                   help="train the --seeds or --run runs in this one process, one UNet call a step for all "
                        "(LoRA; docs/training.md, \"Trainings in one process\")")
    p.add_argument("--run", action="append", metavar="OUT=FLAGS",
                   help="with --together, repeated: one run into OUT with these flags on top of the command's, "
                        "e.g. --run 'runs/dpo=--loss dpo' --run 'runs/no-dfm=--focus-gamma 0'")
    p.set_defaults(func=_train)
    inner = p.add_subparsers(dest="train_command", metavar="{average}")
    a = inner.add_parser("average", help="one LoRA whose weight change is the mean of several LoRAs' (e.g. the "
                         "training seeds of one recipe): rank = the sum of ranks, exact (peft's 'cat' merge)")
    a.add_argument("loras", nargs="+", metavar="LORA_DIR", help="LoRA folders written by `scdpo train`")
    a.add_argument("--out", required=True, help="folder for pytorch_lora_weights.safetensors and average.json")
    a.add_argument("--weights", type=float, nargs="+", help="one weight per LoRA (default: 1/n each)")
    a.set_defaults(func=_average)
