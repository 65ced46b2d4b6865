"""`scdpo train --seeds S [S ...]`: one training per seed, several at once on one GPU.

A science claim needs three or more training seeds (docs/results.md reports every recipe over its
seeds), and EmojiWorld's training step is launch-bound: on an H200 one training runs 1.6 steps/s
while the GPU idles, six at once run 9.9-10.6 steps/s in all and twelve 14.3, each keeping its losses
to the last digit (benchmarks/concurrent_train.py; docs/performance.md, "Concurrent trainings").
So seeds run as separate processes side by side, each an ordinary `scdpo train` of the same
settings with its own ``seed`` and ``out`` (``OUT/seed-S``): a seed's LoRA is exactly the one a
single run with ``--seed S`` writes, and resumes as one.

Each process gets the settings as a file (``OUT/seeds/seed-S.json``, every TrainConfig key) and
logs to ``OUT/seeds/seed-S.log`` (the command's bar counts finished seeds and shows each running
one's step, read from its log); with several GPUs visible, seed i goes to GPU i mod n; with more
than one at once, each gets one intra-op CPU thread unless ``OMP_NUM_THREADS`` is set (the CPU
threads of twelve processes would otherwise fight over the cores). ``OUT/seeds.json`` records each
seed's exit code, seconds and final metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: most trainings at once on one GPU by default: twelve measured best of 1, 6 and 12 on an H200
MAX_AT_ONCE = 12


def seed_out(out: str | os.PathLike, seed: int) -> Path:
    """Where seed ``seed`` of a run into ``out`` writes its LoRA, checkpoints and metrics."""
    return Path(out) / f"seed-{seed}"


def plan(cfg, seeds: list[int]) -> list:
    """One TrainConfig per seed: ``cfg`` with that seed and its own output folder."""
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))} repeats a seed; give each once")
    return [dataclasses.replace(cfg, seed=s, out=str(seed_out(cfg.out, s))) for s in seeds]


def default_at_once(device: str | None, n: int) -> int:
    """All seeds at once (at most MAX_AT_ONCE) on a GPU; one at a time on the CPU, whose cores a
    single training already uses."""
    import torch

    on_gpu = device != "cpu" and torch.cuda.is_available()
    return min(n, MAX_AT_ONCE) if on_gpu else 1


def finished(cfg) -> bool:
    """A seed whose metrics.json says it reached max_steps (skipped by a ``--resume`` relaunch)."""
    path = Path(cfg.out) / "metrics.json"
    try:
        return json.loads(path.read_text()).get("steps", -1) >= cfg.max_steps
    except (OSError, ValueError):
        return False


def _env(index: int, at_once: int, gpus: int) -> dict:
    env = dict(os.environ)
    if at_once > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = "1"
    if gpus > 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        env["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)]
    return env


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _step(log: Path) -> str | None:
    """The child's last progress-bar count ("450/1000") from the end of its log, if any."""
    import re

    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    found = re.findall(r"\|\s*(\d+/\d+)\s*\[", tail)
    return found[-1] if found else None


def train_seeds(cfg, seeds: list[int], at_once: int | None = None) -> dict:
    """Train ``cfg`` once per seed, ``at_once`` processes at a time (default: default_at_once);
    returns (and writes to ``OUT/seeds.json``) ``{seed: {"out", "exit_code", "seconds", "metrics"}}``.
    Raises RuntimeError naming every failed seed and its log's last lines, after all have run."""
    from tqdm.auto import tqdm

    from scdpo.utils.io import atomic_write_text

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--seeds starts its own processes: run it without accelerate launch")
    runs = plan(cfg, seeds)
    at_once = at_once or default_at_once(cfg.device, len(runs))
    if at_once < 1:
        raise ValueError(f"--at-once must be >= 1, got {at_once}")
    import torch

    gpus = torch.cuda.device_count() if cfg.device != "cpu" else 0
    folder = Path(cfg.out) / "seeds"
    folder.mkdir(parents=True, exist_ok=True)
    results, queue, running = {}, [], {}
    for i, run in enumerate(runs):
        if cfg.resume and finished(run):
            results[run.seed] = {"out": run.out, "exit_code": 0, "seconds": 0.0, "skipped": "already trained"}
            continue
        settings = folder / f"seed-{run.seed}.json"
        atomic_write_text(settings, json.dumps(dataclasses.asdict(run), indent=1))
        queue.append((i, run, settings))
    bar = tqdm(total=len(runs), initial=len(results), desc=f"seeds ({at_once} at once)", unit="seed")
    shown = 0.0
    try:
        while queue or running:
            while queue and len(running) < at_once:
                i, run, settings = queue.pop(0)
                log = folder / f"seed-{run.seed}.log"
                with open(log, "w") as f:  # the child keeps its own handle
                    proc = subprocess.Popen([sys.executable, "-m", "scdpo.cli", "train", "--config", str(settings)],
                                            stdout=f, stderr=subprocess.STDOUT, env=_env(i, at_once, gpus))
                running[proc] = (run, log, time.time())
            time.sleep(0.2)
            if time.time() - shown > 5:  # each running seed's step, read from its log's progress bar
                shown = time.time()
                bar.set_postfix_str(", ".join(f"seed {r.seed} {_step(log) or 'starting'}"
                                              for r, log, _ in running.values()), refresh=True)
            for proc in [p for p in running if p.poll() is not None]:
                run, log, start = running.pop(proc)
                entry = {"out": run.out, "exit_code": proc.returncode, "seconds": round(time.time() - start, 1)}
                if proc.returncode == 0:
                    entry["metrics"] = json.loads((Path(run.out) / "metrics.json").read_text())
                else:
                    entry["log"] = str(log)
                results[run.seed] = entry
                bar.update(1)
                bar.write(f"seed {run.seed}: " + ("done" if proc.returncode == 0 else
                                                  f"FAILED (exit {proc.returncode}): {_tail(log)}"))
    finally:
        for proc in running:  # interrupted: no training is left running behind the command
            proc.terminate()
        for proc in running:
            proc.wait()
        bar.close()
    ordered = {str(s): results[s] for s in seeds if s in results}
    atomic_write_text(Path(cfg.out) / "seeds.json", json.dumps(ordered, indent=1))
    failed = [s for s in seeds if results.get(s, {}).get("exit_code") != 0]
    if failed:
        raise RuntimeError(f"seed(s) {', '.join(map(str, failed))} failed; see "
                           + ", ".join(str(folder / f'seed-{s}.log') for s in failed))
    return ordered
