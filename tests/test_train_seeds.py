"""`scdpo train --seeds`: one training per seed, as separate processes (scdpo.train.seeds)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from scdpo.cli import main
from scdpo.models import testing
from scdpo.train.config import TrainConfig
from scdpo.train.seeds import _step, default_at_once, finished, plan, seed_out, write_settings
from test_trainer import write_pairs

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"),
              pytest.mark.usefixtures("one_thread")]


def test_plan_gives_each_seed_its_settings_and_folder():
    cfg = TrainConfig(model="m", dataset="d", out="runs/x", lr=3e-4)
    runs = plan(cfg, [2, 0])
    assert [(r.seed, r.out, r.lr) for r in runs] == [(2, "runs/x/seed-2", 3e-4), (0, "runs/x/seed-0", 3e-4)]
    assert seed_out("runs/x", 5).as_posix() == "runs/x/seed-5"
    with pytest.raises(ValueError, match="repeats a seed"):
        plan(cfg, [1, 1])
    with pytest.raises(ValueError, match="at least one seed"):
        plan(cfg, [])
    assert default_at_once("cpu", 5) == 1  # the CPU's cores are one training's already


def test_a_seed_reads_back_every_setting_it_was_given(tmp_path):
    """The launcher hands each seed its settings as a file; an emoji in a prompt must survive that."""
    import dataclasses

    from scdpo.train.config import load_yaml_config

    cfg = TrainConfig(model="m", dataset="d", out=str(tmp_path), validate_prompts=["a 😀 and a cat"],
                      anchor_target_word="sunflower", lora_targets=["to_k", "to_v"])
    (run,) = plan(cfg, [3])
    path = write_settings(run, tmp_path / "seed-3.json")
    assert load_yaml_config(path) == dataclasses.asdict(run)


def test_the_seeds_running_at_once_share_the_command_threads(monkeypatch):
    from scdpo.train.seeds import _env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    env = _env(3, 2, threads=2)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2" and env["CUDA_VISIBLE_DEVICES"] == "5"


def test_finished_reads_the_seed_metrics(tmp_path):
    cfg = TrainConfig(model="m", dataset="d", out=str(tmp_path), max_steps=3)
    assert not finished(cfg)
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 2}))
    assert not finished(cfg)
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 3}))
    assert finished(cfg)


def test_the_running_step_is_read_from_the_log_bar(tmp_path):
    log = tmp_path / "seed-0.log"
    assert _step(log) is None  # not started
    log.write_text("loading\n")
    assert _step(log) is None
    log.write_text("x" * 5000 + "train:  45%|####5     | 450/1000 [01:00<01:10, 7.1it/s]\r"
                   "train:  46%|####6     | 460/1000 [01:01<01:10, 7.1it/s]")
    assert _step(log) == "460/1000"  # the last count, from the end of a long log


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    pipe = testing.tiny_sd_pipeline(root / "sd")
    data = write_pairs(root / "pairs.parquet", n=6)
    cfg = root / "run.yaml"
    cfg.write_text(f"model: {pipe}\ndataset: {data}\nloss: dpo\nlora_rank: 2\nlr: 1e-3\nmax_steps: 2\n"
                   "batch_size: 2\nvalidate_prompts: [a cat]\nvalidate_steps: 1\ndevice: cpu\n")
    return root, cfg


def test_each_seed_is_the_run_of_that_seed_alone(setup, capsys):
    root, cfg = setup
    out = root / "many"
    assert main(["train", "--config", str(cfg), "--seeds", "0", "1", "--at-once", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed 0:" in printed and "seed 1:" in printed and "final loss over 2 seeds" in printed
    summary = json.loads((out / "seeds.json").read_text())
    assert list(summary) == ["0", "1"] and all(r["exit_code"] == 0 for r in summary.values())
    for s in (0, 1):
        assert json.loads((out / f"seed-{s}" / "config.json").read_text())["seed"] == s
    # seed 1 of the launcher is exactly the single run with --seed 1
    assert main(["train", "--config", str(cfg), "--seed", "1", "--out", str(root / "one")]) == 0
    a = load_file(out / "seed-1" / "pytorch_lora_weights.safetensors")
    b = load_file(root / "one" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(out / "seed-0" / "pytorch_lora_weights.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seeds differ
    # a --resume relaunch skips the finished seeds
    assert main(["train", "--config", str(cfg), "--seeds", "0", "1", "--out", str(out), "--resume"]) == 0
    assert "already trained" in capsys.readouterr().out


def test_a_failed_seed_is_named_with_its_log(setup, capsys):
    root, cfg = setup
    out = root / "failing"
    out.mkdir()
    (out / "seed-1").write_text("a file where seed 1's folder goes")  # its run cannot write there
    with pytest.raises(SystemExit, match=r"seed\(s\) 1 failed; see .*seed-1.log"):
        main(["train", "--config", str(cfg), "--seeds", "0", "1", "--out", str(out)])
    assert "seed 1: FAILED (exit 1)" in capsys.readouterr().out  # with its log's last lines, as it ends
    assert json.loads((out / "seeds.json").read_text())["0"]["exit_code"] == 0  # the other seed still ran
    assert main(["train", "--config", str(cfg), "--seeds", "0", "--seed", "1", "--out", str(out)]) == 2
    assert "give --seeds or --seed, not both" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--at-once", "2", "--out", str(out)]) == 2
    assert "--at-once N goes with --seeds" in capsys.readouterr().err
