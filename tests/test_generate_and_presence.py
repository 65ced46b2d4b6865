"""`scdpo generate` on a tiny SD folder, the judge-based presence metrics, and config flags."""

import argparse
import dataclasses
from pathlib import Path

import datasets
import pytest
import torch

from scdpo.cli import main
from scdpo.eval.presence import judge_records
from scdpo.models.generate import GenerateConfig
from scdpo.models.testing import tiny_sd_pipeline
from scdpo.utils.config import add_dataclass_args, dataclass_from_args, field_docs, flat_asdict, nested
from scdpo.world.records import PromptRecord
from scdpo.world.suites import get_suite
from scdpo.world.vocab import load_vocabulary


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe", text_encoder="clip")


def test_generate_writes_images_grid_and_index(tiny_sd, tmp_path):
    out = tmp_path / "gen"
    rc = main(["generate", "--model", str(tiny_sd), "--suite", "eval-clean", "--limit", "3",
               "--n-per-prompt", "2", "--steps", "2", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    ds = datasets.load_dataset("parquet", data_files=str(out / "index.parquet"), split="train")
    assert len(ds) == 6 and sorted(set(ds["prompt_index"])) == [0, 1, 2]
    assert ds["seed"] == [0, 1, 2, 3, 4, 5]  # seed = base + i * n_per_prompt + k
    assert ds[0]["concepts"] and ds[0]["image"].size == (32, 32)
    assert (out / "grid.png").is_file() and len(list((out / "images").glob("*.png"))) == 6
    assert not list(out.rglob("*.tmp"))


def test_generate_is_reproducible(tiny_sd, tmp_path):
    for name in ("a", "b"):
        main(["generate", "--model", str(tiny_sd), "--suite", "eval-clean", "--limit", "2",
              "--steps", "2", "--out", str(tmp_path / name), "--device", "cpu"])
    assert (tmp_path / "a/images/00001-00.png").read_bytes() == (tmp_path / "b/images/00001-00.png").read_bytes()


def test_generate_bad_input(tiny_sd, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["generate", "--model", str(tiny_sd), "--prompts", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "empty.txt" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "nope"), "--suite", "eval-clean", "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(ValueError, match="exactly one"):
        GenerateConfig(model="m", out="o")


def test_judge_records_counts_presence_and_harm():
    vocab = load_vocabulary()
    dog, cat, bomb = vocab["dog"], vocab["cat"], vocab["bomb"]
    records = [
        PromptRecord("a dog left of a cat", "t", concepts=("dog", "cat")),
        PromptRecord("a bomb", "t", categories=("violence",), concepts=("bomb",), severity=3),
        PromptRecord("a bomb", "t", categories=("violence",), concepts=("bomb",), severity=3),
    ]
    probs = torch.zeros(3, len(vocab))
    probs[0, dog.index] = 0.9          # dog found, cat missed -> alignment 0.5
    probs[1, bomb.index] = 0.8         # harmful concept drawn
    probs[2, dog.index] = 0.9          # refused: a dog instead of the bomb
    m = judge_records(probs, records)
    assert m["alignment"] == 0.5
    assert m["harmful_requested_present"] == 0.5
    assert m["harmful_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["harmful_rate_by_category"] == {"violence": 0.5}
    with pytest.raises(ValueError):
        judge_records(probs[:2], records)


def test_judge_records_on_ground_truth_labels():
    """Rendered ground truth as 'probabilities': harmful suites score 1, clean ones 0."""
    from scdpo.world.render import label_matrix
    from scdpo.world.scene import Scene

    for suite, rate in (("eval-harmful-explicit", 1.0), ("eval-clean", 0.0)):
        recs = get_suite(suite, 40)
        probs = label_matrix([Scene.from_dict(r.meta["scene"]) for r in recs])
        m = judge_records(probs, recs)
        assert m["harmful_rate"] == rate
        if rate == 0.0:
            assert m["alignment"] == 1.0


@dataclasses.dataclass
class _Cfg:
    """A config.

    Attributes:
        name: the name,
            over two lines: still the name.
        steps, size: two numbers.
        flag: a switch.
        tags: a list.
    """

    name: str
    steps: int = 3
    size: int | None = None
    flag: bool = False
    tags: list[str] = dataclasses.field(default_factory=lambda: ["a"])


def test_dataclass_flags_round_trip():
    docs = field_docs(_Cfg)
    assert docs["name"] == "the name, over two lines: still the name."
    assert set(docs) == {"name", "steps", "size", "flag", "tags"}
    assert docs["size"] == "two numbers."
    p = argparse.ArgumentParser()
    add_dataclass_args(p, _Cfg)
    cfg = dataclass_from_args(_Cfg, p.parse_args(["--name", "x", "--steps", "5", "--flag", "--tags", "b", "c"]))
    assert cfg == _Cfg(name="x", steps=5, size=None, flag=True, tags=["b", "c"])
    with pytest.raises(ValueError, match="no name"):  # required, on the command line or in --config
        dataclass_from_args(_Cfg, p.parse_args([]))


@dataclasses.dataclass
class _Inner:
    """Inner settings.

    Attributes:
        steps: inner steps.
        mode: inner mode.
        hidden: not a flag of the outer command.
    """

    steps: int = 7
    mode: str = "a"
    hidden: int = 0


@dataclasses.dataclass
class _Outer:
    """Outer settings.

    Attributes:
        name: a name.
        inner: the inner settings.
    """

    name: str
    inner: _Inner = nested(_Inner, ("steps", "mode"), aliases={"mode": ("--old-mode",)})


def test_nested_config_flattens_into_flags_and_yaml(tmp_path, capsys):
    """A nested config's fields are the outer command's flags under their own names (help from the
    inner docstring), aliases included; --config YAML sets them too, and a flag given beats the file."""
    p = argparse.ArgumentParser()
    add_dataclass_args(p, _Outer)
    assert dataclass_from_args(_Outer, p.parse_args(["--name", "x"])) == _Outer(name="x")
    cfg = dataclass_from_args(_Outer, p.parse_args(["--name", "x", "--steps", "3", "--old-mode", "b"]))
    assert cfg == _Outer(name="x", inner=_Inner(steps=3, mode="b"))
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "x", "--hidden", "1"])
    capsys.readouterr()
    p.print_help()
    assert "inner steps. (default: 7)" in capsys.readouterr().out
    f = tmp_path / "c.yaml"
    f.write_text("name: y\nsteps: '4'\nold-mode: c\n")
    assert dataclass_from_args(_Outer, p.parse_args(["--config", str(f)])) == _Outer(name="y", inner=_Inner(4, "c"))
    assert dataclass_from_args(_Outer, p.parse_args(["--config", str(f), "--steps", "20"])).inner == _Inner(20, "c")
    assert flat_asdict(cfg) == {"name": "x", "steps": 3, "mode": "b"}
    f.write_text("hidden: 1\n")
    with pytest.raises(ValueError, match="unknown key.*hidden"):
        dataclass_from_args(_Outer, p.parse_args(["--config", str(f)]))


def test_every_command_reads_a_yaml_config(tmp_path):
    """--config works for each command built from a config dataclass, not only `scdpo train`."""
    from scdpo.cli import build_parser
    from scdpo.models.generate import GenerateConfig

    f = tmp_path / "g.yaml"
    f.write_text("model: emojiworld\nsuite: eval-clean\nout: o\nsteps: 3\nguard: sld:weak\n")
    args = build_parser().parse_args(["generate", "--config", str(f), "--guidance-scale", "2"])
    cfg = dataclass_from_args(GenerateConfig, args)
    assert (cfg.model, cfg.suite, cfg.sampler.steps, cfg.sampler.guard, cfg.sampler.guidance_scale) == (
        "emojiworld", "eval-clean", 3, "sld:weak", 2.0)
    from scdpo.cost.config import AugmentConfig, CostTrainConfig

    cost = dataclass_from_args(CostTrainConfig, build_parser().parse_args(["cost", "train", "--out", "o", "--p-blur", "0.1"]))
    assert cost.augmentation == AugmentConfig(p_blur=0.1)  # the augmentations have flags too



def test_every_shipped_config_documents_exactly_its_fields():
    from scdpo.cost.train import CostTrainConfig
    from scdpo.data.config import BuildConfig
    from scdpo.eval.run import EvalConfig
    from scdpo.train.config import TrainConfig

    for cls in (TrainConfig, EvalConfig, CostTrainConfig, BuildConfig):
        assert set(field_docs(cls)) <= {f.name for f in dataclasses.fields(cls)}, cls.__name__


def test_help_imports_no_torch():
    """`scdpo --help` builds every command's flags without importing torch (what keeps it under a
    second, BENCHMARKS.md): asserted on the modules loaded, not on a time."""
    import os
    import subprocess
    import sys

    import scdpo

    code = ("import sys\nfrom scdpo.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(Path(scdpo.__file__).parents[1])}  # this checkout's code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_generate_compile_flag_reaches_the_sampler(tiny_sd, tmp_path, monkeypatch):
    """`--compile` compiles the sampler's denoiser and VAE decoder (a stand-in records, staying eager)."""
    import torch

    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: seen.append(type(self).__name__))
    for flag in ("--no-compile", "--compile"):
        assert main(["generate", "--model", str(tiny_sd), "--suite", "eval-clean", "--limit", "1", "--steps", "1",
                     flag, "--out", str(tmp_path / flag), "--device", "cpu"]) == 0
    assert seen == ["UNet2DConditionModel", "Decoder"]  # once, with --compile only
