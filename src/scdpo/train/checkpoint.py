"""Training checkpoints: accelerate's ``save_state`` (weights, optimizer, RNG) plus
``trainer_state.json`` (step, data position, loss state, run fingerprint), written under a
temporary name and renamed when complete, with rotation.

Weights are safetensors (the trainer's save hooks). accelerate keeps the optimizer in
``optimizer.bin`` and the RNG in ``random_states_N.pkl``, torch pickles it loads with
``weights_only=True``; it has no safetensors option for them. The RNG state is not needed (every
random draw derives from (seed, data position)), so a file that does not load is reported and
skipped; every other state file is required, and a damaged one stops the resume naming it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from scdpo.train.fingerprint import differences
from scdpo.train.losses import LossState
from scdpo.utils import checkpoints as shared
from scdpo.utils.checkpoints import checkpoints

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
RNG_FILE = "random_states_{}.pkl"


@dataclasses.dataclass
class Progress:
    """Where training is: optimizer steps taken, stream position, skipped-step counters."""

    step: int = 0
    samples: int = 0  # stream position: pairs consumed by all processes together
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0


def recorded_fingerprint(ckpt: Path) -> dict | None:
    """The run fingerprint a checkpoint recorded (None if unreadable or from an older scdpo)."""
    try:
        return json.loads((ckpt / STATE_FILE).read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def save_checkpoint(acc, out: Path, prog: Progress, state: LossState, meta: dict, keep: int) -> None:
    """Write ``out/checkpoints/step-N`` with the trainer state beside accelerate's (every process
    takes part) and keep the newest ``keep``. An existing ``step-N`` is this run's own (the
    fingerprint was checked at the start), kept as is."""
    record = {**dataclasses.asdict(prog), "loss_state": state.to_dict(), **meta}
    shared.save_checkpoint(acc, out, prog.step, keep, extra={STATE_FILE: json.dumps(record, indent=1)})


def check_fresh(out: Path, overwrite: bool, settings_now: dict | None = None) -> None:
    """A run without --resume must not meet another run's checkpoints (it would keep their weights
    under its own name): refuse, naming what differs, or with ``overwrite`` delete them."""
    ckpts = checkpoints(out)
    if not ckpts:
        return
    if overwrite:
        log.warning("--overwrite: deleting %d checkpoint(s) of an earlier run in %s", len(ckpts), out / "checkpoints")
        shutil.rmtree(out / "checkpoints")
        return
    diff = ""
    old = recorded_fingerprint(ckpts[-1])
    if settings_now is not None and old and "settings" in old:
        changed = [k for k in sorted(set(old["settings"]) | set(settings_now))
                   if old["settings"].get(k) != settings_now.get(k)]
        diff = f" (made with other settings: {', '.join(changed)})" if changed else ""
    raise ValueError(f"{out} holds checkpoints of an earlier run up to {ckpts[-1].name}{diff}; continue it with "
                     "--resume, discard them with --overwrite, or use another --out")


def _brief(err: Exception) -> str:
    """An exception as one line (torch's unpickling errors run to a dozen)."""
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _check_state_files(acc, ckpt: Path) -> None:
    """Check the state files before accelerate reads them: it skips an unreadable RNG file
    silently (say so in the log) and reads the others with a traceback (name them here)."""
    from accelerate.utils.other import load

    if not list(ckpt.glob("optimizer*")):
        raise ValueError(f"checkpoint {ckpt} has no optimizer state (optimizer.bin); it is incomplete: delete this "
                         "checkpoint folder to resume from the one before, or start over with --overwrite")
    rng = ckpt / RNG_FILE.format(acc.process_index)
    try:
        load(rng, map_location="cpu")
    except Exception as err:  # noqa: BLE001  (torch raises several types for bad pickles)
        log.warning("%s could not be restored (%s); skipped: the RNG state is not needed, every random "
                    "draw derives from the seed and the data position", rng, _brief(err))


def resume(acc, out: Path, meta: dict) -> tuple[Progress, LossState] | None:
    """Load the newest checkpoint into the prepared objects; None if there is none.  Its recorded
    run fingerprint must equal ``meta["fingerprint"]``; a mismatch names the differing settings."""
    ckpts = checkpoints(out)
    if not ckpts:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out / "checkpoints")
        return None
    last = ckpts[-1]
    try:
        record = json.loads((last / STATE_FILE).read_text())
        prog = Progress(**{f.name: int(record[f.name]) for f in dataclasses.fields(Progress)})
        loss_state = LossState.from_dict(record["loss_state"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {last}: {STATE_FILE} is unreadable ({err}); delete this checkpoint folder "
                         "to resume from the one before, or start over with --overwrite") from err
    if record.get("together"):
        raise ValueError(f"--resume: checkpoint {last} was written by `scdpo train --together` (its optimizer state is "
                         "not accelerate's); resume it with --together")
    diff = differences(record.get("fingerprint"), meta["fingerprint"])
    if diff:
        raise ValueError(f"--resume: checkpoint {last} belongs to another run: {'; '.join(diff)}. Resume with the "
                         "same settings and data, start over with --overwrite, or use another --out")
    _check_state_files(acc, last)
    try:
        acc.load_state(str(last))
    except Exception as err:  # noqa: BLE001  (safetensors, torch and peft each raise their own types)
        raise ValueError(f"checkpoint {last} could not be restored ({_brief(err)}); delete this "
                         "checkpoint folder to resume from the one before, or start over with --overwrite") from err
    log.info("resumed from %s at step %d", last, prog.step)
    return prog, loss_state
