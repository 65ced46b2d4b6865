"""Training checkpoints: accelerate's ``save_state`` (weights, optimizer, RNG) plus
``trainer_state.json`` (step, data position, loss state), written under a temporary name and
renamed when complete, with rotation."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from scdpo.train.losses import LossState

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"


@dataclasses.dataclass
class Progress:
    """Where training is: optimizer steps taken, stream position, skipped-step counters."""

    step: int = 0
    samples: int = 0  # stream position: pairs consumed by all processes together
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints in ``out/checkpoints``, oldest first."""
    return sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(acc, out: Path, prog: Progress, state: LossState, meta: dict, keep: int) -> None:
    """Write ``out/checkpoints/step-N`` (every process takes part) and keep the newest ``keep``."""
    target = out / "checkpoints" / f"step-{prog.step}"
    if target.exists():
        return
    tmp = out / "checkpoints" / f".tmp-step-{prog.step}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        record = {**dataclasses.asdict(prog), "loss_state": state.to_dict(), **meta}
        (tmp / STATE_FILE).write_text(json.dumps(record, indent=1))
        tmp.rename(target)  # a checkpoint folder exists only once it is complete
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def resume(acc, out: Path, meta: dict) -> tuple[Progress, LossState] | None:
    """Load the newest checkpoint into the prepared objects; None if there is none.  ``meta``
    (dataset size, global batch, seed, loss) must match what the checkpoint recorded."""
    ckpts = checkpoints(out)
    if not ckpts:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out / "checkpoints")
        return None
    last = ckpts[-1]
    record = json.loads((last / STATE_FILE).read_text())
    for key, value in meta.items():
        if record.get(key) != value:
            raise ValueError(f"checkpoint {last} was made with {key}={record.get(key)!r}, this run has {value!r}; "
                             "resume with the same dataset and global batch, or use another --out")
    acc.load_state(str(last))
    prog = Progress(**{f.name: int(record[f.name]) for f in dataclasses.fields(Progress)})
    log.info("resumed from %s at step %d", last, prog.step)
    return prog, LossState.from_dict(record["loss_state"])
