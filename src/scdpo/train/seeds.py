"""`scdpo train --seeds S [S ...]`: one training per seed, several at once on one GPU.

A science claim needs three or more training seeds (docs/results.md reports every recipe over its
seeds), and EmojiWorld's training step is launch-bound: on an H200 one training runs 1.6 steps/s
while the GPU idles, six at once run 9.9-10.6 steps/s in all and twelve 14.3, each keeping its losses
to the last digit (benchmarks/concurrent_train.py; docs/performance.md, "Concurrent trainings"; the
anchored recipe, eager). Without the anchor, a training now replays its UNet calls from CUDA graphs by
default, 5.5-6.1x faster alone (TrainConfig.cuda_graphs); six graphed ones at once run 51.9 steps/s in all on
an H100 against six eager ones' 31.5, and twelve no more than six (BENCHMARKS.md, "Thirty-third and
thirty-fourth rounds"). So seeds run as separate processes side by side, each an ordinary `scdpo train` of the same
settings with its own ``seed`` and ``out`` (``OUT/seed-S``): a seed's LoRA is exactly the one a
single run with ``--seed S`` writes, and resumes as one. ``--seeds ... --together`` trains them in one
process instead (:mod:`scdpo.train.together`; the pipeline's six methods ran 1.26x faster so on an H100,
1.82x on the CPU; seeds draw data of their own, so they share no reference call and gain less).

Each process gets the settings as a file (``OUT/seeds/seed-S.json``, every TrainConfig key) and
logs to ``OUT/seeds/seed-S.log`` (the command's bar counts finished seeds and shows each running
one's step, read from its log); with several GPUs visible and ``device`` unset or "cuda", seed i
goes to GPU i mod n; the processes running at once share the command's CPU threads (``--threads``,
by default the idle cores): each gets its share, at least one, as torchrun gives each of its
processes one, so twelve trainings do not start twelve threads a core. ``OUT/seeds.json`` records
each seed's exit code, seconds and final metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
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


def default_at_once(device: str | None, n: int, model: str = "emojiworld") -> int:
    """How many seeds train at once by default: on a GPU, EmojiWorld's all (at most MAX_AT_ONCE:
    measured there, each training uses under 1 GB) and any other model's one per GPU (an SD training
    fills a GPU); on the CPU one, whose cores a single training already uses."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return 1
    if model == "emojiworld":
        return min(n, MAX_AT_ONCE)
    return max(1, min(n, torch.cuda.device_count())) if device in (None, "cuda") else 1


def finished(cfg) -> bool:
    """A seed whose metrics.json says it reached max_steps (skipped by a ``--resume`` relaunch)."""
    path = Path(cfg.out) / "metrics.json"
    try:
        return json.loads(path.read_text()).get("steps", -1) >= cfg.max_steps
    except (OSError, ValueError):
        return False


def write_settings(run, path: Path) -> Path:
    """Write a seed's TrainConfig where its `scdpo train --config` reads it back (every key)."""
    from scdpo.utils.io import atomic_write_text

    # ensure_ascii=False: the YAML reader would turn an escaped emoji into two lone surrogates
    atomic_write_text(path, json.dumps(dataclasses.asdict(run), indent=1, ensure_ascii=False, default=str))
    return path


def _env(index: int, spread: int, threads: int = 1) -> dict:
    """A seed's environment: the command's own, with ``threads`` CPU threads (its share of the
    command's); with ``spread`` > 1 GPUs to spread over, seed ``index`` sees GPU index mod spread alone."""
    from scdpo.utils.threads import ENV_VARS

    env = dict(os.environ, **dict.fromkeys(ENV_VARS, str(threads)))
    if spread > 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(spread)]
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


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def _stop(running: dict) -> None:
    """Stop the seeds still running (interrupted): no training is left behind the command."""
    for proc in running:
        proc.terminate()
    for proc in running:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def train_seeds(cfg, seeds: list[int], at_once: int | None = None) -> dict:
    """Train ``cfg`` once per seed, ``at_once`` processes at a time (default: default_at_once);
    returns (and writes to ``OUT/seeds.json``) ``{seed: {"out", "exit_code", "seconds", "metrics"}}``.
    Raises RuntimeError naming every failed seed and its log's last lines, after all have run."""
    from tqdm.auto import tqdm

    from scdpo.utils.io import atomic_write_text

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--seeds starts its own processes: run it without accelerate launch")
    runs = plan(cfg, seeds)
    at_once = default_at_once(cfg.device, len(runs), cfg.model) if at_once is None else at_once
    if at_once < 1:
        raise ValueError(f"--at-once must be >= 1, got {at_once}")
    import torch

    spread = torch.cuda.device_count() if cfg.device in (None, "cuda") and torch.cuda.is_available() else 0
    share = max(1, torch.get_num_threads() // min(at_once, len(runs)))  # each running seed's CPU threads
    folder = Path(cfg.out) / "seeds"
    folder.mkdir(parents=True, exist_ok=True)
    results, queue, running = {}, [], {}
    for i, run in enumerate(runs):
        if cfg.resume and finished(run):
            results[run.seed] = {"out": run.out, "exit_code": 0, "seconds": 0.0, "skipped": "already trained",
                                 "metrics": json.loads((Path(run.out) / "metrics.json").read_text())}
            continue
        settings = write_settings(run, folder / f"seed-{run.seed}.json")
        queue.append((i, run, settings))
    bar = tqdm(total=len(runs), initial=len(results), desc=f"seeds ({at_once} at once)", unit="seed")
    shown = 0.0
    # a SIGTERM (a scheduler's or timeout's stop) unwinds like Ctrl-C, so the finally below stops the seeds
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, _raise_exit) if main else None
    try:
        while queue or running:
            while queue and len(running) < at_once:
                i, run, settings = queue.pop(0)
                log = folder / f"seed-{run.seed}.log"
                with open(log, "a") as f:  # the child keeps its own handle; a relaunch appends
                    proc = subprocess.Popen([sys.executable, "-m", "scdpo.cli", "train", "--config", str(settings)],
                                            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=_env(i, spread, share))
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
        _stop(running)
        if main:
            signal.signal(signal.SIGTERM, previous)
        bar.close()
    ordered = {str(s): results[s] for s in seeds if s in results}
    atomic_write_text(Path(cfg.out) / "seeds.json", json.dumps(ordered, indent=1))
    failed = [s for s in seeds if results.get(s, {}).get("exit_code") != 0]
    if failed:
        raise RuntimeError(f"seed(s) {', '.join(map(str, failed))} failed; see "
                           + ", ".join(str(folder / f'seed-{s}.log') for s in failed))
    return ordered
