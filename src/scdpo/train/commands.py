"""`scdpo train --config FILE [--key value ...]`: a YAML config, overridden by command-line flags."""

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
    add_dataclass_args(p, TrainConfig)  # a flag overrides the YAML only when given
    p.set_defaults(func=_train)
