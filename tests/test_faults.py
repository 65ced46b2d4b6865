"""Fault injection: `train`, `data build` and `world render` are killed with SIGKILL at random
points of their output (each file is renamed into place, so the renames are where a kill can
leave a run half-done), then run again; the result must equal an uninterrupted run's exactly.

Each trial forks the test process (the tiny model is already imported, so a trial takes seconds);
the child counts ``os.replace`` / ``os.rename`` calls and kills itself at the k-th one, just before
or just after it. The points are drawn from a seeded generator, so a failure reproduces.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import signal

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from scdpo.models import testing
from scdpo.models.sampler_config import SamplerConfig

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning",
                                         "ignore::DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]
TRIALS = 3


class _Counter:
    """Patch os.replace and os.rename to count calls, and with ``kill_at`` SIGKILL the process at
    that call: before it when ``before``, else just after it."""

    def __init__(self, kill_at: int | None = None, before: bool = False):
        self.n, self.kill_at, self.before, self.saved = 0, kill_at, before, {}

    def __enter__(self):
        for name in ("replace", "rename"):
            real = self.saved[name] = getattr(os, name)

            def patched(*args, _real=real, **kwargs):
                self.n += 1
                hit = self.n == self.kill_at
                if hit and self.before:
                    os.kill(os.getpid(), signal.SIGKILL)
                result = _real(*args, **kwargs)
                if hit:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result
            setattr(os, name, patched)
        return self

    def __exit__(self, *exc):
        for name, real in self.saved.items():
            setattr(os, name, real)


def _child(fn, kill_at: int, before: bool) -> None:
    with _Counter(kill_at, before):
        fn()


def killed_run(fn, kill_at: int, before: bool) -> int:
    """Run ``fn`` in a forked child killed at the ``kill_at``-th rename; its exit code (-9: killed)."""
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(fn, kill_at, before))
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode is not None, "the child hung"
    return proc.exitcode


def count_renames(fn):
    with _Counter() as c:
        result = fn()
    return c.n, result


def kill_points(total: int, seed: int) -> list[tuple[int, bool]]:
    rng = random.Random(seed)
    return [(rng.randint(1, total), rng.random() < 0.5) for _ in range(TRIALS)]


def _png(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (testing.IMAGE_SIZE,) * 2 + (3,), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _table(files) -> list[dict]:
    return [row for f in sorted(files) for row in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return testing.tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


# ------------------------------------------------------------------ train
def test_killed_training_resumes_exactly(sd, tmp_path):
    from scdpo.train.config import TrainConfig
    from scdpo.train.trainer import train

    rng = np.random.default_rng(0)
    n = 8
    data = tmp_path / "pairs.parquet"
    datasets.Dataset.from_dict({
        "caption": [f"a cat {i}" for i in range(n)], "jpg_0": [_png(rng) for _ in range(n)],
        "jpg_1": [_png(rng) for _ in range(n)], "label_0": [float(i % 2) for i in range(n)],
        "cost_0": rng.normal(size=n).tolist(), "cost_1": rng.normal(size=n).tolist()}).to_parquet(str(data))

    def config(out, resume=False):
        return TrainConfig(model=str(sd), dataset=str(data), out=str(out), loss="sc-dpo", batch_size=2, lora_rank=2,
                           max_steps=4, checkpoint_every=1, lr=1e-3, caption_dropout=0.3, validate_prompts=["a cat"],
                           validate_steps=1, device="cpu", workers=0, resume=resume)

    total, reference = count_renames(lambda: train(config(tmp_path / "ref")))
    want = load_file(str(tmp_path / "ref" / "pytorch_lora_weights.safetensors"))
    for trial, (k, before) in enumerate(kill_points(total, seed=1)):
        out = tmp_path / f"t{trial}"
        assert killed_run(lambda: train(config(out)), k, before) == -signal.SIGKILL
        metrics = train(config(out, resume=True))
        got = load_file(str(out / "pytorch_lora_weights.safetensors"))
        assert got.keys() == want.keys() and all(torch.equal(got[key], want[key]) for key in want), (k, before)
        assert metrics["lambda"] == reference["lambda"], (k, before)
        if "loss" in metrics:  # absent when the kill came after the last step: nothing was left to train
            assert metrics["loss"] == reference["loss"], (k, before)
        assert not list(out.rglob("*.tmp")) and not list(out.glob(".lora-*")), (k, before)


# ------------------------------------------------------------------ data build
def test_killed_data_build_resumes_exactly(sd, tmp_path):
    from scdpo.data.builder import build
    from scdpo.data.config import BuildConfig

    def cost(images, records):
        return images.mean((1, 2, 3)) * 10 - 5

    def reward(images, records):
        return images.std((1, 2, 3))

    def run(out):
        cfg = BuildConfig(model=str(sd), cost_model="-", reward="-", out=str(out), harmful="align-harmful",
                          clean="align-clean", n_harmful=3, n_clean=3, candidates=2, sampler=SamplerConfig(steps=2), chunk_size=1,
                          shard_size=2, uniform_rule="reward", cost_budget=10.0, device="cpu")
        return build(cfg, None, cost, reward)

    def tables(out):
        return _table((out / "data").glob("*.parquet")), _table([out / "choices.parquet"])

    total, reference = count_renames(lambda: run(tmp_path / "ref"))
    for trial, (k, before) in enumerate(kill_points(total, seed=2)):
        out = tmp_path / f"t{trial}"
        assert killed_run(lambda: run(out), k, before) == -signal.SIGKILL
        assert run(out) == reference, (k, before)
        assert tables(out) == tables(tmp_path / "ref"), (k, before)
        assert not list(out.rglob("*.tmp")) and not (out / ".work").exists()


# ------------------------------------------------------------------ world render
def test_killed_world_render_resumes_exactly(tmp_path):
    from scdpo.world.dataset import export_suite

    def run(out):
        return export_suite("eval-mixed", out, n=9, size=16, seed=3, shard_size=2, batch_size=2)

    total, _ = count_renames(lambda: run(tmp_path / "ref"))
    want = [(p.name, p.read_bytes()) for p in sorted((tmp_path / "ref").glob("shard-*.parquet"))]
    assert len(want) == 5
    for trial, (k, before) in enumerate(kill_points(total, seed=3)):
        out = tmp_path / f"t{trial}"
        assert killed_run(lambda: run(out), k, before) == -signal.SIGKILL
        run(out)
        assert [(p.name, p.read_bytes()) for p in sorted(out.glob("shard-*.parquet"))] == want, (k, before)
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".export.json"]


# ------------------------------------------------------------------ Ctrl-C, for real
def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path):
    """A real SIGINT to a real `scdpo world render` process once its first shard is written."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    # Twice in this session's CI (serial pytest) the render ran all 100,000 images (24 s) and exited 0: the
    # signal reached a process that had already finished, this loop having missed the whole window (cause not
    # found; never seen alone). A run that had finished before the signal is tried again; one that was still
    # running when it got the signal must exit 130.
    for attempt in range(3):
        out = tmp_path / f"R{attempt}"
        proc = subprocess.Popen([sys.executable, "-m", "scdpo.cli", "world", "render", "--suite", "train", "--n",
                                 "100000", "--size", "16", "--shard-size", "256", "--grid", "0", "--out", str(out)],
                                env=env, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal has it
        deadline = time.time() + 120
        while not (out / "shard-00000.parquet").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        running = proc.poll() is None
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
        if running:
            break
    assert running, "the render finished before every one of 3 signals: the test never caught it running"
    assert proc.returncode == 130, err[-500:]
    assert err.strip().splitlines()[-1] == "scdpo: interrupted; rerun the same command: it resumes from the finished shards"
    assert not (out / ".scdpo.lock").exists() and not list(out.glob(".*.tmp"))
