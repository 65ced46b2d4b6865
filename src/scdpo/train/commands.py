"""`scdpo train --config FILE [--key value ...]`: a YAML config, overridden by command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import os


def config_from_args(args: argparse.Namespace):
    """TrainConfig from the dataclass defaults, then the YAML file, then the flags actually given."""
    from scdpo.train.config import TrainConfig, load_yaml_config

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = load_yaml_config(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k in names})  # only flags given (SUPPRESS)
    missing = [n for n in ("model", "dataset", "out") if n not in values]
    if missing:
        raise ValueError(f"no {', '.join(missing)}: set them in the --config file or as --{missing[0]} ...")
    return TrainConfig(**values)


def _train(args) -> None:
    from scdpo.train.trainer import TrainingDiverged, train

    cfg = config_from_args(args)
    try:
        metrics = train(cfg)
    except TrainingDiverged as err:
        raise SystemExit(f"scdpo: error: {err}") from None
    if int(os.environ.get("RANK", "0")) != 0:  # one summary line per run, not per process
        return
    shown = {k: metrics[k] for k in ("steps", "loss", "implicit_acc", "margin", "lambda") if k in metrics}
    print(f"trained {cfg.out}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in shown.items()))


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.train.config import TrainConfig
    from scdpo.utils.config import add_dataclass_args

    p = sub.add_parser("train", help="preference-train a T2I model: Diffusion-DPO, SafetyDPO or SC-DPO (LoRA or full)",
                       description="Train on Pick-a-Pic-format pairs. Settings come from the dataclass defaults, "
                                   "then --config FILE (YAML, e.g. configs/emojiworld.yaml), then the flags given. "
                                   "Several GPUs: accelerate launch --config_file configs/accelerate/ddp.yaml "
                                   "-m scdpo.cli train ...")
    p.add_argument("--config", help="YAML file of TrainConfig keys (configs/*.yaml)")
    add_dataclass_args(p, TrainConfig)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for action in p._actions:  # a flag overrides the YAML only when given
        if action.dest in names:
            action.default, action.required = argparse.SUPPRESS, False
    p.set_defaults(func=_train)
