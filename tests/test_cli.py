"""The `scdpo` command line: help, the `world` subcommands, bad input and a tiny pretraining run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scdpo.cli import main
from scdpo.world.records import I2P_CATEGORIES
from scdpo.world.suites import SUITES
from scdpo.world.vocab import load_vocabulary

SUBCOMMANDS = [
    ["world"], ["world", "suites"], ["world", "taxonomy"], ["world", "render"], ["world", "pretrain-vae"],
    ["world", "pretrain-judge"], ["world", "pretrain"], ["generate"],
]


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's --help / usage errors
        return e.code


def test_help_subprocess():
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    r = subprocess.run([sys.executable, "-m", "scdpo.cli", "--help"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: scdpo")
    for cmd in ("world", "generate"):
        assert cmd in r.stdout


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_subcommand_help(argv, capsys):
    assert _exit_code(argv + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: scdpo {' '.join(argv)}")


def _parsers(parser, path=()):
    """Every (sub)parser of the command line with its command path."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_every_command_has_threads_and_prints_each_default_once():
    from scdpo.cli import build_parser

    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 15
    for path, p in parsers:
        text = " ".join(p.format_help().split())  # unwrapped
        assert "--threads N" in text, path
        assert not re.search(r"\(default: [^()]*\) \(default:", text), (path, text)
        assert "==SUPPRESS==" not in text, path
    demo_help = dict(parsers)[("demo",)].format_help()
    assert "eval-sc-dpo/" in demo_help and "eval-aligned" not in demo_help  # the folder the demo writes


@pytest.mark.parametrize("argv, want", [(["--threads", "1", "world", "suites"], 1),
                                        (["world", "suites", "--threads", "2"], 2),
                                        (["--threads", "2", "world", "suites"], 2)])
def test_threads_option_sets_torch_and_the_environment(argv, want, monkeypatch, capsys):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert main(argv) == 0
        assert torch.get_num_threads() == want and os.environ["OMP_NUM_THREADS"] == str(want)
    finally:
        torch.set_num_threads(before)


def test_threads_default_and_bad_value(monkeypatch, capsys):
    from scdpo.utils import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.7, 0.0, 0.0))
        monkeypatch.setattr(threads, "usable_cores", lambda: 2)
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
        assert threads.default_threads() == 1  # a busy 2-core machine: one thread
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
        assert threads.default_threads() == 2  # an idle one: both cores, as torch would take
        assert main(["world", "suites"]) == 0 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # an explicit choice outside scdpo is kept
        assert main(["world", "suites"]) == 0 and torch.get_num_threads() == 2
        assert main(["--threads", "0", "world", "suites"]) == 2
        assert "--threads must be an integer >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_idle_cores_counts_the_cores_the_load_leaves():
    from scdpo.utils.threads import idle_cores

    assert [idle_cores(load, 2, 2) for load in (0.0, 0.4, 0.6, 1.0, 2.0, 9.0)] == [2, 2, 1, 1, 1, 1]
    assert idle_cores(3.0, 16, 16) == 13
    # 4 usable cores of a 64-core host at load 32: half of every core is busy, so half of ours
    assert idle_cores(32.0, 4, 64) == 2


def test_pretrain_help_lists_config_flags(capsys):
    assert _exit_code(["world", "pretrain-vae", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--arch", "--max-steps", "--batch-size", "--checkpoint-every", "--keep-checkpoints", "--resume", "--out"):
        assert flag in out
    assert "--stage" not in out and "--sample-prompts" not in out


def test_missing_subcommand_is_a_usage_error(capsys):
    assert _exit_code([]) == 2
    assert _exit_code(["world"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_ctrl_c_hint_is_the_last_line_after_what_the_interrupted_frames_print(monkeypatch, capsys):
    # an object the interrupted command held that prints when finalised (as a parquet writer cut off mid-file does:
    # "Exception ignored ... write to closed file") prints before the hint, never after it
    import sys

    from scdpo.cli import build_parser

    class SaysGoodbye:
        def __del__(self):
            print("finalised", file=sys.stderr)

    def interrupted(args):
        held = SaysGoodbye()  # noqa: F841 (kept alive by this frame until the interrupt is handled)
        raise KeyboardInterrupt

    monkeypatch.setattr("scdpo.cli.build_parser", lambda: _with_func(build_parser(), "world", interrupted))
    assert main(["world", "suites"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "scdpo: interrupted; rerun the same command: it resumes from the finished shards"
    assert "finalised" in err[:-1]


def _with_func(parser, command: str, func):
    """``parser`` with every subcommand of ``command`` running ``func``."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices[command]._actions:
                if isinstance(sub, argparse._SubParsersAction):
                    for child in sub.choices.values():
                        child.set_defaults(func=func)
    return parser


def test_world_suites_lists_every_suite(capsys):
    assert main(["world", "suites"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == len(SUITES)
    for name, suite in SUITES.items():
        assert any(line.split()[:2] == [name, str(suite.default_n)] for line in lines), name


def test_world_suites_examples(capsys):
    from scdpo.world.suites import suite_scenes

    assert main(["world", "suites", "--examples", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for name in SUITES:
        for s in suite_scenes(name, 2, seed=3):
            assert f"- {s.caption}" in out


def test_world_taxonomy(capsys):
    vocab = load_vocabulary()
    assert main(["world", "taxonomy"]) == 0
    out = capsys.readouterr().out
    assert f"EmojiWorld: {len(vocab)} concepts, {len(vocab.safe)} safe, {len(vocab.harmful)} harmful" in out
    for cat in I2P_CATEGORIES:
        n = sum(c.category == cat for c in vocab.harmful)
        assert re.search(rf"^  {re.escape(cat)} \({n}\)$", out, re.M), cat
    for c in vocab.harmful:
        assert c.name in out


def test_world_taxonomy_json(capsys):
    vocab = load_vocabulary()
    assert main(["world", "taxonomy", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in data["safe"]] == [c.name for c in vocab.safe]
    assert [c["name"] for c in data["harmful"]] == [c.name for c in vocab.harmful]
    for entry in data["harmful"]:
        c = vocab[entry["name"]]
        assert entry["category"] == c.category and entry["severity"] == c.severity
        assert entry["heldout"] == list(c.heldout) and entry["synonyms"] == list(c.synonyms)


def test_world_render(tmp_path, capsys):
    import pyarrow.parquet as pq
    from PIL import Image

    out = tmp_path / "out"
    assert main(["world", "render", "--suite", "eval-clean", "--n", "12", "--size", "32", "--out", str(out),
                 "--shard-size", "5", "--grid", "4"]) == 0
    shards = sorted(out.glob("shard-*.parquet"))
    assert [p.name for p in shards] == [f"shard-{k:05d}.parquet" for k in range(3)]
    assert [pq.read_metadata(p).num_rows for p in shards] == [5, 5, 2]
    assert sorted(p.name for p in out.iterdir()) == [".export.json"] + [p.name for p in shards]  # no temp files
    with Image.open(tmp_path / "out-grid.png") as im:  # beside the data, never inside it
        # 4 tiles in one row, 2x upscaled 32 px tiles, 3 caption lines, 4 px padding
        assert im.size == (4 * (64 + 4) + 4, 64 + 3 * 11 + 2 + 4 + 4)
    stdout = capsys.readouterr().out
    assert "wrote 3 shard(s)" in stdout and "out-grid.png" in stdout


def test_readme_datasets_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's `world render` line, then its `datasets` snippet, verbatim, in a fresh folder."""
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = re.search(r"^scdpo (world render [^#\n]*?)\s*$", readme, re.M).group(1)
    snippet = re.search(r"```python\n(import datasets\n.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command)) == 0
    out = Path(shlex.split(command)[shlex.split(command).index("--out") + 1])
    assert list(out.glob("*.png")) == [] and out.with_name(out.name + "-grid.png").is_file()
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 (the README's own code)
    ds = scope["ds"]
    assert len(ds) == int(re.search(r"--n (\d+)", command).group(1))
    assert ds[0]["image"].size == (64, 64) and ds[0]["caption"] and ds[0]["categories"]


def test_render_unknown_suite_is_exit_2(tmp_path, capsys):
    code = _exit_code(["world", "render", "--suite", "no-such-suite", "--out", str(tmp_path / "x"), "--size", "32"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no-such-suite" in err and "eval-clean" in err
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("*.parquet"))


def test_render_bad_size_is_exit_2(tmp_path, capsys):
    code = _exit_code(["world", "render", "--suite", "eval-clean", "--n", "2", "--size", "8",
                       "--grid", "0", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "too small" in capsys.readouterr().err


def test_render_non_integer_n_is_usage_error(tmp_path, capsys):
    assert _exit_code(["world", "render", "--suite", "eval-clean", "--n", "many", "--out", str(tmp_path)]) == 2
    assert "--n" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tiny pretraining

@pytest.fixture
def fast_pretrain(monkeypatch):
    """Record where each run's data stream starts, and leave accelerate's global state clean."""
    import scdpo.world.pretrain as pretrain

    real_loader = pretrain.scene_loader
    starts = []

    def recording_loader(suite, batch_size, seed=0, start_batch=0, workers=0):
        starts.append(start_batch)
        return real_loader(suite, batch_size, seed, start_batch, workers)

    monkeypatch.setattr(pretrain, "scene_loader", recording_loader)
    yield starts
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


COMMON = ["--arch", "tiny", "--batch-size", "4", "--workers", "0", "--sample-every", "0", "--log-every", "1",
          "--heldout-per-suite", "4"]


def test_pretrain_vae_resume_and_judge(tmp_path, fast_pretrain, capsys):
    from diffusers import AutoencoderKL

    from scdpo.world.judge import Judge

    starts = fast_pretrain
    vae_out = tmp_path / "vae"
    argv = ["world", "pretrain-vae", *COMMON, "--checkpoint-every", "2", "--out", str(vae_out)]
    assert main(argv + ["--max-steps", "3"]) == 0
    metrics = json.loads((vae_out / "metrics.json").read_text())
    assert metrics["stage"] == "vae" and metrics["steps"] == 3
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):]) == metrics  # the command prints the metrics it wrote
    ckpts = sorted(p.name for p in (vae_out / "checkpoints").iterdir())
    assert ckpts == ["step-2", "step-3"]
    assert starts == [0]

    assert main(argv + ["--max-steps", "4", "--resume"]) == 0
    assert starts == [0, 3]  # the data stream continues at batch 3
    metrics = json.loads((vae_out / "metrics.json").read_text())
    assert metrics["steps"] == 4
    ckpts = sorted(p.name for p in (vae_out / "checkpoints").iterdir())
    assert "step-4" in ckpts and len(ckpts) <= 2 and ckpts == ["step-3", "step-4"]
    state = torch.load(vae_out / "checkpoints" / "step-4" / "custom_checkpoint_0.pkl", weights_only=False)
    assert state == {"step": 4}
    vae = AutoencoderKL.from_pretrained(vae_out / "vae")
    assert vae.config.scaling_factor == pytest.approx(metrics["scaling_factor"])

    judge_out = tmp_path / "judge"
    assert main(["world", "pretrain-judge", *COMMON, "--max-steps", "2", "--checkpoint-every", "100",
                 "--out", str(judge_out)]) == 0
    metrics = json.loads((judge_out / "metrics.json").read_text())
    assert metrics["stage"] == "judge" and metrics["steps"] == 2
    assert 0 <= metrics["label_accuracy_renders"] <= 1
    assert [p.name for p in (judge_out / "checkpoints").iterdir()] == ["step-2"]

    from scdpo.world.render import render_scenes
    from scdpo.world.suites import suite_scenes

    vocab = load_vocabulary()
    judge = Judge.from_pretrained(judge_out / "judge")
    assert judge.config.concepts == vocab.names and judge.config.num_concepts == len(vocab)
    assert not judge.training
    images = render_scenes(suite_scenes("eval-mixed", 3), 32)  # resized to the judge's 64 px
    probs = judge.probabilities(images, batch_size=2)
    assert probs.shape == (3, len(vocab))
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1
    # a fine-tune of that judge with concept-free negatives: it starts from its weights and
    # reports its false positives on each kind of concept-free image
    tuned_out = tmp_path / "judge-tuned"
    assert main(["world", "pretrain-judge", *COMMON, "--max-steps", "1", "--checkpoint-every", "100", "--lr", "0",
                 "--init", str(judge_out / "judge"), "--negatives", "0.5", "--out", str(tuned_out)]) == 0
    tuned = json.loads((tuned_out / "metrics.json").read_text())
    assert {"false_positive_flat", "false_positive_smear"} <= set(tuned)
    init_w, tuned_w = Judge.from_pretrained(judge_out / "judge"), Judge.from_pretrained(tuned_out / "judge")
    # lr 0: the init's weights, unchanged (batch-norm statistics do move in train mode)
    assert all(torch.equal(a, b) for a, b in zip(init_w.parameters(), tuned_w.parameters()))
    from scdpo.world.pretrain import PretrainConfig

    with pytest.raises(ValueError, match="judge stage"):
        PretrainConfig(stage="vae", out=str(tmp_path / "x"), negatives=0.2)
    judge.save_pretrained(tmp_path / "judge-copy")
    assert sorted(p.name for p in (tmp_path / "judge-copy").iterdir()) == ["config.json", "model.safetensors"]
    again = Judge.from_pretrained(tmp_path / "judge-copy").probabilities(images, batch_size=2)
    assert torch.equal(again, probs)
    # batching only changes float rounding
    assert torch.allclose(judge.probabilities(images), probs, atol=1e-5, rtol=0)

    cfg = json.loads((tmp_path / "judge-copy" / "config.json").read_text())
    cfg["concepts"] = cfg["concepts"][::-1]
    (tmp_path / "judge-copy" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="vocabulary"):
        Judge.from_pretrained(tmp_path / "judge-copy")
    with pytest.raises(FileNotFoundError):
        Judge.from_pretrained(tmp_path / "nowhere")


def test_pretrain_bad_arch_is_exit_2(tmp_path, capsys):
    code = _exit_code(["world", "pretrain-vae", "--arch", "huge", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "huge" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_pretrain_unet_from_latent_pool_with_profile(tmp_path, fast_pretrain):
    """The UNet stage trains from a cached latent pool (no per-step rendering: the scene stream is
    never opened), writes a profile, and its pipeline loads through T2IModel and samples."""
    from scdpo.models.t2i import T2IModel

    assert main(["world", "pretrain-vae", *COMMON, "--max-steps", "1", "--out", str(tmp_path / "vae")]) == 0
    fast_pretrain.clear()
    assert main(["world", "pretrain", *COMMON, "--max-steps", "8", "--pool-size", "8", "--profile-steps", "2",
                 "--vae", str(tmp_path / "vae" / "vae"), "--out", str(tmp_path / "unet")]) == 0
    assert fast_pretrain == []
    assert "steps" in (tmp_path / "unet" / "profile.txt").read_text()
    model = T2IModel.from_pretrained(tmp_path / "unet" / "pipeline", device="cpu")
    img = model.sample(["a dog"], [0], steps=2, progress=False)
    assert img.shape == (1, 3, 64, 64) and 0 <= img.min() and img.max() <= 1
