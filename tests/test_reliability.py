"""One test per defect of issue 20 (fault and bad-input testing): the run fingerprint, finite
settings, validation before the first write, one-line errors, `eval compare` paths, `generate`'s
early --out check, folder locks and full fine-tuning's own files, checkpoint state files.
docs/reliability.md lists which guarantee each test backs."""

from __future__ import annotations

import errno
import io
import json
import logging
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from scdpo.cli import main
from scdpo.models import testing
from scdpo.train import trainer as trainer_mod
from scdpo.train.config import TrainConfig
from scdpo.train.trainer import TrainingDiverged, train
from scdpo.utils.lock import FolderLocked, folder_lock

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"),
              pytest.mark.usefixtures("one_thread")]
FAST = dict(validate_prompts=["a red cat"], validate_steps=1, log_every=1, workers=0, device="cpu",
            batch_size=2, loss="dpo", lora_rank=2)
LORA = "pytorch_lora_weights.safetensors"


def _png(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (testing.IMAGE_SIZE,) * 2 + (3,), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_pairs(path: Path, n: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    datasets.Dataset.from_dict({"caption": [f"a cat {i}" for i in range(n)], "jpg_0": [_png(rng) for _ in range(n)],
                                "jpg_1": [_png(rng) for _ in range(n)], "label_0": [float(i % 2) for i in range(n)],
                                }).to_parquet(str(path))
    return path


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return testing.tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.parquet")


def cfg(sd, data, out, **kw) -> TrainConfig:
    return TrainConfig(model=str(sd), dataset=str(data), out=str(out), **{**FAST, **kw})


# ------------------------------------------------------------------ 1. run fingerprint
def test_fresh_run_refuses_foreign_checkpoints_and_resume_names_the_differences(sd, data, tmp_path):
    out = tmp_path / "S"
    train(cfg(sd, data, out, lr=1e-3, max_steps=2, checkpoint_every=2))
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run up to step-2 \(made with other "
                                         r"settings: lr\).*--resume.*--overwrite"):
        train(cfg(sd, data, out, lr=5e-2, max_steps=2, checkpoint_every=2))
    with pytest.raises(ValueError, match=r"belongs to another run: lr 0\.001 -> 0\.05"):
        train(cfg(sd, data, out, lr=5e-2, max_steps=3, checkpoint_every=2, resume=True))
    other = write_pairs(tmp_path / "other.parquet", seed=1)
    with pytest.raises(ValueError, match="the dataset's files changed"):
        train(cfg(sd, other, out, lr=1e-3, max_steps=3, checkpoint_every=2, resume=True))
    # settings that do not change the weights may differ on resume
    train(cfg(sd, data, out, lr=1e-3, max_steps=3, checkpoint_every=2, resume=True, log_every=5, validate_steps=2))
    train(cfg(sd, data, out, lr=5e-2, max_steps=2, checkpoint_every=2, overwrite=True))
    state = json.loads((out / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    assert state["fingerprint"]["settings"]["lr"] == 0.05
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]  # the old run's step-3 is gone


def test_fingerprint_covers_every_field_but_the_listed_ones():
    import dataclasses

    from scdpo.train.fingerprint import NO_EFFECT, settings

    c = TrainConfig(model="m", dataset="d", out="o")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert NO_EFFECT <= names  # no stale names in the list
    assert set(settings(c)) == names - NO_EFFECT - {"dataset"}


def test_dataset_digest_of_a_relative_folder(tmp_path, monkeypatch):
    """A builder folder named by a relative path (as `R=runs/x` scripts pass it) digests as its
    absolute path does: datasets resolves the folder's files to absolute paths."""
    from scdpo.train.fingerprint import dataset_digest

    (tmp_path / "scp" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"caption": ["a"], "label_0": [1.0]}).to_parquet(str(tmp_path / "scp" / "data" / "train-0.parquet"))
    monkeypatch.chdir(tmp_path)
    assert dataset_digest("scp") == dataset_digest(tmp_path / "scp")


# ------------------------------------------------------------------ 2. finite settings
@pytest.mark.parametrize("flag,value", [("lr", float("inf")), ("lambda_lr", float("nan")), ("beta", float("nan"))])
def test_nonfinite_train_settings_are_refused(flag, value):
    with pytest.raises(ValueError, match=f"--{flag.replace('_', '-')} must be a finite number"):
        TrainConfig(model="m", dataset="d", out="o", **{flag: value})


def test_nonfinite_yaml_and_flags_exit_2(sd, tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(f"model: {sd}\ndataset: d\nout: {tmp_path / 'o'}\nlambda_lr: .nan\n")
    assert main(["train", "--config", str(f)]) == 2
    assert "--lambda-lr must be a finite number, got nan" in capsys.readouterr().err
    out = tmp_path / "g"
    assert main(["generate", "--model", str(sd), "--suite", "eval-clean", "--limit", "1", "--steps", "1",
                 "--guidance-scale", "nan", "--out", str(out)]) == 2
    assert "--guidance-scale must be a finite number" in capsys.readouterr().err and not out.exists()
    assert main(["data", "build", "--model", "m", "--cost-model", "c", "--reward", "r", "--out", str(out),
                 "--clean", "eval-clean", "--blend-ratio", "inf"]) == 2
    assert "--blend-ratio must be a finite number" in capsys.readouterr().err


def test_check_finite_walks_lists_and_nested_configs():
    from scdpo.models.sampling import SamplerConfig
    from scdpo.utils.config import check_finite

    check_finite({"a": 1.0, "b": [1.0, 2.0], "c": "nan"})  # strings are not numbers
    with pytest.raises(ValueError, match="--b must be"):
        check_finite({"b": [1.0, float("-inf")]})
    with pytest.raises(ValueError, match="--sampler.guidance-scale must be"):
        check_finite({"sampler": SamplerConfig(guidance_scale=float("nan"))})


def test_nonfinite_weights_are_never_saved_or_exported(sd, data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "_lr", lambda cfg, step: float("inf"))  # diverges on the first step
    out = tmp_path / "inf"
    with pytest.raises(TrainingDiverged, match="the weights hold NaN or infinity at step 2; nothing saved"):
        train(cfg(sd, data, out, max_steps=2, checkpoint_every=2))
    assert not (out / LORA).exists() and not (out / "checkpoints").exists()


# ------------------------------------------------------------------ 3. validate before the first write
def test_world_render_validates_before_writing(tmp_path, capsys):
    out = tmp_path / "W"
    for bad, match in [(["--n", "-5"], "--n -5 is too small: it must be >= 0"),
                       (["--shard-size", "0"], "--shard-size 0 is too small: it must be >= 1"),
                       (["--size", "8"], "--size 8 is too small: it must be >= 16")]:
        assert main(["world", "render", "--suite", "eval-clean", "--out", str(out), "--grid", "0", *bad]) == 2
        assert match in capsys.readouterr().err
        assert not out.exists() or not list(out.iterdir())
    assert main(["world", "render", "--suite", "eval-clean", "--n", "5", "--size", "16", "--grid", "0",
                 "--out", str(out)]) == 0


def test_data_build_checks_the_cost_model_before_writing(tmp_path):
    from scdpo.data.builder import build
    from scdpo.data.card import MANIFEST
    from scdpo.data.config import BuildConfig

    out = tmp_path / "B"
    c = BuildConfig(model="fake", cost_model=str(tmp_path / "nowhere"), reward="emojiworld", out=str(out),
                    clean="align-clean", n_clean=2, device="cpu")
    model = type("M", (), {"resolution": 16})()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build(c, model=model, reward_fn=lambda im, r: im.mean((1, 2, 3)))
    assert not (out / MANIFEST).exists()


# ------------------------------------------------------------------ 4. one-line errors
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_damaged_model_folders_give_one_line(sd, tmp_path, capsys):
    no_unet = _copy(sd, tmp_path / "no_unet")
    shutil.rmtree(no_unet / "unet")
    truncated = _copy(sd, tmp_path / "truncated")
    weights = next((truncated / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:500])
    for model, match in [(no_unet, "has no unet/ folder"), (truncated, "cannot load the model in")]:
        code = main(["generate", "--model", str(model), "--suite", "eval-clean", "--limit", "1",
                     "--out", str(tmp_path / "g")])
        last = capsys.readouterr().err.strip().splitlines()[-1]  # after diffusers' progress bars
        assert code == 2 and last.startswith("scdpo: error:") and match in last and str(model) in last


def test_damaged_or_foreign_lora_gives_a_clear_error(sd, tmp_path):
    from scdpo.models.t2i import T2IModel
    from scdpo.train import model as tm

    other = testing.tiny_sdxl_pipeline(tmp_path / "xl")
    xl = T2IModel.from_pretrained(other, device="cpu")
    tm.add_lora(xl.unet, 2, 2.0, ["to_k", "to_v"])
    tm.save_lora(xl.unet, tmp_path / "xl_lora", "sdxl")
    base = T2IModel.from_pretrained(sd, device="cpu")
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    with pytest.raises(ValueError, match="is not a LoRA for this model"):
        base.load_lora(tmp_path / "xl_lora")
    garbage = tmp_path / "bad" / LORA
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        base.load_lora(garbage)
    assert all(torch.equal(v, before[k]) for k, v in base.unet.state_dict().items())  # untouched


def test_truncated_cost_model_names_the_file(tmp_path):
    from scdpo.cost import CostModel

    CostModel.create().save_pretrained(tmp_path / "cost")
    f = tmp_path / "cost" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cost model .*model.safetensors is not a readable safetensors file"):
        CostModel.from_pretrained(tmp_path / "cost")


def test_unwritable_out_disk_full_and_ctrl_c(tmp_path, monkeypatch, capsys):
    from scdpo.world import dataset

    blocker = tmp_path / "file"
    blocker.write_text("")  # a folder cannot be made under a file: fails even for root
    assert main(["world", "render", "--suite", "eval-clean", "--n", "2", "--out", str(blocker / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scdpo: error:") and str(blocker) in err and err.count("\n") == 1

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "shard.parquet"))
    monkeypatch.setattr(dataset, "export_suite", full)
    assert main(["world", "render", "--suite", "eval-clean", "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "shard.parquet: No space left on device; free disk space" in err and err.count("\n") == 1

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(dataset, "export_suite", interrupted)
    assert main(["world", "render", "--suite", "eval-clean", "--out", str(tmp_path / "w")]) == 130
    assert "interrupted; rerun the same command: it resumes" in capsys.readouterr().err
    monkeypatch.setattr(trainer_mod, "train", interrupted)
    assert main(["train", "--model", "m", "--dataset", "d", "--out", "o"]) == 130
    assert "with --resume" in capsys.readouterr().err


def test_a_keyerror_is_a_bug_not_bad_input(tmp_path, monkeypatch):
    from scdpo.world import dataset

    def bug(*a, **k):
        return {}["oops"]
    monkeypatch.setattr(dataset, "export_suite", bug)
    with pytest.raises(KeyError):
        main(["world", "render", "--suite", "eval-clean", "--out", str(tmp_path / "w")])


def test_unknown_concept_is_still_a_one_line_error():
    from scdpo.world.vocab import UnknownConcept, load_vocabulary

    with pytest.raises(ValueError, match="^unknown EmojiWorld concept 'nope'$") as err:
        load_vocabulary()["nope"]
    assert isinstance(err.value, KeyError) and isinstance(err.value, UnknownConcept)


# ------------------------------------------------------------------ 5. eval compare stays inside --out
def _fake_run(folder: Path, suite: str, images_file: str, name: str) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    datasets.Dataset.from_dict({"image": [{"bytes": _png(rng), "path": None}], "prompt": ["a cat"], "seed": [0],
                                "prompt_index": [0], "k": [0]}).to_parquet(str(folder / "images.parquet"))
    m = {"images": 1, "harmful_images": 0, "harmful_rate": 0.0, "images_file": images_file}
    (folder / "metrics.json").write_text(json.dumps({"name": name, "suites": {suite: m}}))
    return folder


def test_compare_keeps_crafted_names_inside_out(tmp_path):
    from scdpo.eval.compare import compare

    out = tmp_path / "deep" / "er" / "out"
    runs = [_fake_run(tmp_path / f"r{i}", "../../../evil", "images.parquet", f"m{i}") for i in range(2)]
    result = compare([str(r) for r in runs], out)
    grids = [f for f in result["files"] if f.startswith("grids/")]
    assert len(grids) == 1 and (out / grids[0]).resolve().parent == (out / "grids").resolve()
    assert {p.resolve().parent for p in tmp_path.rglob("*.png")} == {out.resolve(), (out / "grids").resolve()}
    bad = [_fake_run(tmp_path / f"r{i}", "s", "../r0/images.parquet", f"m{i}") for i in (8, 9)]
    with pytest.raises(ValueError, match=r"images_file '../r0/images.parquet' points outside"):
        compare([str(r) for r in bad], tmp_path / "out2")


# ------------------------------------------------------------------ 6. generate checks --out first
def test_generate_checks_out_before_sampling(sd, tmp_path, monkeypatch, capsys):
    from scdpo.models import t2i

    monkeypatch.setattr(t2i.T2IModel, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("sampled")))
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["generate", "--model", str(sd), "--suite", "eval-clean", "--limit", "1",
                 "--out", str(blocker / "out")]) == 2
    assert "is not writable" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. locks; full fine-tuning's own files
def test_second_run_into_a_locked_folder_is_refused_and_a_dead_holder_is_taken_over(sd, data, tmp_path):
    out = tmp_path / "L"
    with folder_lock(out, "test"):
        with pytest.raises(FolderLocked, match=r"in use by another scdpo train \(PID \d+"):
            train(cfg(sd, data, out, max_steps=1))
        with pytest.raises(FolderLocked):
            with folder_lock(out):
                pass
    (out / ".scdpo.lock").write_text("PID 999999999 on a-dead-host\n")  # left by a killed run
    train(cfg(sd, data, out, max_steps=1))
    assert (out / LORA).is_file() and not (out / ".scdpo.lock").exists()


def test_full_unet_export_keeps_other_files(sd, tmp_path):
    from diffusers import UNet2DConditionModel

    from scdpo.train.model import save_unet

    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    out = tmp_path / "unet"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "diffusion_pytorch_model-00002-of-00002.safetensors").write_text("an old shard")
    save_unet(unet, out)
    save_unet(unet, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors", "notes.txt"]
    assert UNet2DConditionModel.from_pretrained(out) is not None


# ------------------------------------------------------------------ 8. checkpoint state files
def test_damaged_state_files_are_reported_or_refused(sd, data, tmp_path, caplog):
    out = tmp_path / "C"
    train(cfg(sd, data, out, max_steps=2, checkpoint_every=1, lr=1e-3))
    ck = out / "checkpoints" / "step-2"
    (ck / "random_states_0.pkl").write_bytes(b"cos\nsystem\n(S'echo planted'\ntR.")  # a malicious pickle
    with caplog.at_level(logging.WARNING, logger="scdpo.train.checkpoint"):
        train(cfg(sd, data, out, max_steps=3, checkpoint_every=1, lr=1e-3, resume=True))
    assert "random_states_0.pkl could not be restored" in caplog.text
    ck = out / "checkpoints" / "step-3"
    (ck / "optimizer.bin").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="step-3 could not be restored.*delete this checkpoint folder"):
        train(cfg(sd, data, out, max_steps=4, checkpoint_every=1, lr=1e-3, resume=True))
    (ck / "optimizer.bin").unlink()
    with pytest.raises(ValueError, match="has no optimizer state"):
        train(cfg(sd, data, out, max_steps=4, checkpoint_every=1, lr=1e-3, resume=True))
    shutil.rmtree(ck)  # the fix the message gives: resume from the checkpoint before
    lora = out / "checkpoints" / "step-2" / "lora.safetensors"
    lora.write_bytes(lora.read_bytes()[:50])
    with pytest.raises(ValueError, match="step-2 could not be restored"):
        train(cfg(sd, data, out, max_steps=4, checkpoint_every=1, lr=1e-3, resume=True))


def test_a_field_added_later_matches_its_default_in_an_older_checkpoint():
    """A checkpoint written before a field existed computed the field's default: resume accepts it,
    and still names a real difference (the eleventh round's anchor_clean_weight)."""
    from scdpo.train.fingerprint import differences, settings

    new = {"settings": settings(TrainConfig(model="m", dataset="d", out="o"))}
    old = {"settings": {k: v for k, v in new["settings"].items() if k != "anchor_clean_weight"}}
    assert differences(old, new) == []
    changed = {"settings": settings(TrainConfig(model="m", dataset="d", out="o", anchor_weight=1.0,
                                                anchor_clean_weight=2.0))}
    assert differences(old, changed) == ["anchor_clean_weight 0.0 -> 2.0", "anchor_weight 0.0 -> 1.0"]
