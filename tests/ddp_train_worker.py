"""Run by tests/test_trainer_ddp.py under ``accelerate launch``: ``scdpo train`` with the given
arguments, then this process's trainable weights and loss state written to ``OUT/rank-R.*`` (the
trainer itself exports rank 0's only, so without this nothing shows what rank 1 holds)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from scdpo import cli
from scdpo.train import trainer

seen: dict = {}
_build, _update_state = trainer._build, trainer.update_state


def build(cfg, acc):
    built = _build(cfg, acc)
    seen.update(cfg=cfg, acc=acc, policy=built[1])
    return built


def update_state(state, stats, cfg):
    seen["state"] = state
    return _update_state(state, stats, cfg)


trainer._build, trainer.update_state = build, update_state
code = cli.main(sys.argv[1:])
if code == 0:
    rank, out = int(os.environ.get("RANK", 0)), Path(seen["cfg"].out)
    unet = seen["acc"].unwrap_model(seen["policy"])
    save_file({n: p.detach().contiguous() for n, p in unet.named_parameters() if p.requires_grad},
              str(out / f"rank-{rank}.safetensors"))
    state = seen["state"]
    (out / f"rank-{rank}.json").write_text(json.dumps({"lam": state.lam, "focus_mean": state.focus_mean,
                                                       "world_size": seen["acc"].num_processes}))
sys.exit(code)
