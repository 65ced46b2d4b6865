"""The trainer on tiny random SD / SDXL pipelines and tiny parquet datasets: data loading and its
errors, one DPO step's direction, the LoRA reference, exact resume, every mode, the outputs as
plain diffusers loads them, non-finite steps and the `scdpo train` command."""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from scdpo.cli import main
from scdpo.models import testing
from scdpo.models.t2i import T2IModel
from scdpo.train import losses
from scdpo.train import model as tm
from scdpo.train.config import LORA_TARGETS, TrainConfig, load_yaml_config
from scdpo.train.data import PreferencePairs, StreamSampler
from scdpo.train.losses import LossState, PairBatchInfo
from scdpo.train.step import batch_info, pair_errors, step_generator
from scdpo.train.trainer import TrainingDiverged, _cache_latents, train

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"), pytest.mark.usefixtures("one_thread")]
FAST = dict(validate_prompts=["a red cat"], validate_steps=1, log_every=1, workers=0, device="cpu")
SIZE = testing.IMAGE_SIZE


def png(value: int | None, rng, size: int = SIZE) -> bytes:
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if value is None else np.full((size, size, 3), value, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_pairs(path, n: int = 8, size: int = SIZE, seed: int = 0, drop=(), **columns):
    """A Pick-a-Pic-format parquet like the SCP builder's: label_0 alternates 1, 0, 0.5 (a tie)."""
    rng = np.random.default_rng(seed)
    rows = {
        "caption": [f"a {c} cat" for c in rng.choice(["red", "blue", "big"], n)],
        "jpg_0": [png(None, rng, size) for _ in range(n)], "jpg_1": [png(None, rng, size) for _ in range(n)],
        "label_0": [(1.0, 0.0, 0.5)[i % 3] for i in range(n)],
        "cost_0": rng.normal(size=n).tolist(), "cost_1": rng.normal(size=n).tolist(),
        "reward_0": rng.normal(size=n).tolist(), "reward_1": rng.normal(size=n).tolist(),
        "kind": ["harmful" if i % 2 == 0 else "clean" for i in range(n)], "category": ["violence"] * n,
        "seed_0": list(range(n)), "seed_1": list(range(n, 2 * n)),
    }
    rows.update(columns)
    for name in drop:
        rows.pop(name)
    datasets.Dataset.from_dict(rows).to_parquet(str(path))
    return path


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    return {"sd": testing.tiny_sd_pipeline(root / "sd"), "sdxl": testing.tiny_sdxl_pipeline(root / "sdxl")}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.parquet", n=12)


def lora_model(path, seed: int = 0):
    torch.manual_seed(seed)
    m = T2IModel.from_pretrained(path, device="cpu")
    tm.add_lora(m.unet, 4, 8.0, LORA_TARGETS)
    return m


def collate(ds, idx):
    return torch.utils.data.default_collate([ds[i] for i in idx])


# ------------------------------------------------------------------ data
def test_pairs_order_by_label_drop_ties_and_filter(tmp_path):
    rng = np.random.default_rng(1)
    path = write_pairs(tmp_path / "p.parquet", n=6, jpg_0=[png(0, rng)] * 6, jpg_1=[png(255, rng)] * 6,
                       cost_0=[0.0] * 6, cost_1=[1.0] * 6)
    ds = PreferencePairs(path, SIZE, need_costs=True)
    assert (len(ds), ds.ties) == (4, 2) and list(ds.rows) == [0, 1, 3, 4]
    first, second = ds[0], ds[1]  # label_0 = 1: jpg_0 (black) wins; label_0 = 0: jpg_1 (white) wins
    assert first["image_w"].max() == -1 and first["image_l"].min() == 1 and first["cost_l"] == 1.0
    assert second["image_w"].min() == 1 and second["cost_w"] == 1.0 and second["image_w"].shape == (3, SIZE, SIZE)
    harmful = PreferencePairs(path, SIZE, kinds=("harmful",))
    assert list(harmful.rows) == [0, 4] and harmful.filtered == 2


@pytest.mark.parametrize("problem,match", [
    (dict(drop=("jpg_1",)), "no column 'jpg_1'"),
    (dict(drop=("cost_1",)), "no column 'cost_1'"),
    (dict(size=24), r"row 0 column jpg_0 is 24x24 pixels but the model works at 32x32; pass --resize"),
    (dict(cost_1=[0.0, float("nan")] + [0.0] * 4), "row 1: cost_1 is nan"),
    (dict(label_0=[1.0, 2.0] + [1.0] * 4), "row 1: label_0 must be in"),
])
def test_bad_datasets_name_the_problem(tmp_path, problem, match):
    path = write_pairs(tmp_path / "bad.parquet", n=6, **problem)
    with pytest.raises(ValueError, match=match) as err:
        PreferencePairs(path, SIZE, need_costs=True).check_sizes()
    assert str(path) in str(err.value)


def test_resize_flag_and_missing_dataset(tmp_path):
    path = write_pairs(tmp_path / "big.parquet", n=3, size=48)
    ds = PreferencePairs(path, SIZE, resize=True)
    ds.check_sizes()
    assert ds[0]["image_w"].shape == (3, SIZE, SIZE)
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        PreferencePairs(tmp_path / "nope", SIZE)


def test_builder_folder_layout(tmp_path):
    """A dataset folder as `scdpo data build` writes it: data/train-*.parquet beside choices.parquet
    (another schema), which must not be read as pairs."""
    for k in range(2):
        write_pairs(tmp_path / "data" / f"train-0000{k}-of-00002.parquet", n=3, seed=k)
    datasets.Dataset.from_dict({"prompt": ["x"], "rule": ["safety"]}).to_parquet(str(tmp_path / "choices.parquet"))
    ds = PreferencePairs(tmp_path, SIZE)
    assert (len(ds), ds.ties) == (4, 2)


def test_stream_sampler_shards_and_resumes():
    whole = StreamSampler(10, 6, seed=3)
    ranks = [StreamSampler(10, 3, seed=3, num_processes=2, process_index=r) for r in range(2)]
    for k in range(4):  # the processes split each global batch of the single-process stream
        assert ranks[0].batch(k) + ranks[1].batch(k) == whole.batch(k)
    stream = [i for k in range(5) for i in whole.batch(k)]
    assert sorted(stream[:10]) == list(range(10)) and stream[:10] != stream[10:20]  # epochs, reshuffled
    resumed = StreamSampler(10, 6, seed=3, start=12)
    assert [i for k in range(3) for i in resumed.batch(k)] == stream[12:30]
    assert StreamSampler(10, 6, seed=4).batch(0) != whole.batch(0)


# ------------------------------------------------------------------ the DPO step and the reference
def test_one_step_orders_the_pair_better_and_reference_stays_the_base(pipes, pairs_file):
    m = lora_model(pipes["sd"])
    base = T2IModel.from_pretrained(pipes["sd"], device="cpu")
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    ds = PreferencePairs(pairs_file, SIZE)
    batch = collate(ds, range(4))
    cfg = TrainConfig(model="x", dataset="x", out="x", loss="dpo", beta=500.0)

    def errors():
        return pair_errors(m, m.unet, ref, batch, step_generator(0, 0, 0))

    e_w, e_l, r_w, r_l, drift, _ = errors()
    torch.testing.assert_close(e_w, r_w, rtol=0, atol=0)  # LoRA B = 0 at init: policy == reference
    assert drift.shape == (4,) and torch.count_nonzero(drift) == 0
    cached = pair_errors(m, m.unet, ref, batch, step_generator(0, 0, 0), cache=_cache_latents(m, ds))
    for a, b in zip(cached, (e_w, e_l, r_w, r_l, drift)):  # --cache-latents changes nothing but the speed
        torch.testing.assert_close(a, b)
    cond = m.encode_prompts(["a red cat"])
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([400])

    def outputs():
        with torch.no_grad():
            return m.predict(x, t, cond), ref(m, x, t, cond), base.predict(x, t, cond)

    pol0, ref0, base0 = outputs()
    assert torch.equal(ref0, base0) and torch.equal(pol0, base0)
    opt = torch.optim.AdamW([p for p in m.unet.parameters() if p.requires_grad], lr=1e-3)
    loss, stats = losses.dpo_loss(e_w, e_l, r_w, r_l, PairBatchInfo(), cfg, LossState())
    loss.mean().backward()
    opt.step()
    e_w2, e_l2, r_w2, r_l2, drift2, _ = errors()
    torch.testing.assert_close(r_w2, r_w, rtol=0, atol=0)  # the reference did not move
    assert (drift2 > 0).all()  # the policy's predictions left the reference's
    _, stats2 = losses.dpo_loss(e_w2, e_l2, r_w2, r_l2, PairBatchInfo(), cfg, LossState())
    assert stats2["margin"] > stats["margin"]  # z rose: the winner's error fell relative to the loser's
    assert ((e_w2 - e_l2) - (e_w - e_l)).mean() < 0
    pol1, ref1, base1 = outputs()
    assert torch.equal(ref1, base1)  # adapters disabled == the untouched base model
    assert (pol1 - base1).abs().max() > 1e-6


def test_timestep_range_bounds_the_training_timesteps(pipes, pairs_file, monkeypatch):
    m = lora_model(pipes["sd"])
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(pairs_file, SIZE), range(4))
    seen, add_noise = [], m.add_noise  # the timesteps the UNet's inputs are noised to
    monkeypatch.setattr(m, "add_noise", lambda x, n, t: seen.append(t) or add_noise(x, n, t))
    for i in range(8):
        pair_errors(m, m.unet, ref, batch, step_generator(0, i, 0), timesteps=(600, 602))
    for t in seen:
        assert torch.equal(t[:4], t[4:])  # winner and loser share t
    assert set(torch.cat(seen).tolist()) == {600, 601}  # max_timestep is exclusive, as kohya's
    for bad in (dict(min_timestep=-1), dict(min_timestep=500, max_timestep=500)):
        with pytest.raises(ValueError, match="min_timestep"):
            TrainConfig(model="x", dataset="x", out="x", **bad)


def test_clean_pairs_get_their_own_timestep_range(pipes, pairs_file, monkeypatch):
    m = lora_model(pipes["sd"])
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(pairs_file, SIZE), range(4))  # harmful, clean, harmful, clean
    harmful = batch_info(batch, "cpu").harmful
    seen, add_noise = [], m.add_noise
    monkeypatch.setattr(m, "add_noise", lambda x, n, t: seen.append(t) or add_noise(x, n, t))
    for i in range(8):
        pair_errors(m, m.unet, ref, batch, step_generator(0, i, 0), timesteps=(700, 702), clean_timesteps=(3, 5))
    t = torch.stack([s[:4] for s in seen])
    assert set(t[:, harmful].flatten().tolist()) == {700, 701}
    assert set(t[:, ~harmful].flatten().tolist()) == {3, 4}
    # the same bounds for both kinds draw exactly what a run without the option draws
    same, plain = [], []
    for out, kw in ((same, dict(clean_timesteps=(700, 702))), (plain, {})):
        seen.clear()
        pair_errors(m, m.unet, ref, batch, step_generator(0, 0, 0), timesteps=(700, 702), **kw)
        out.append(seen[0])
    assert torch.equal(same[0], plain[0])
    with pytest.raises(ValueError, match="clean_min_timestep"):
        TrainConfig(model="x", dataset="x", out="x", clean_min_timestep=900, max_timestep=900)


def test_preservation_keeps_clean_predictions_near_the_reference(pipes, pairs_file):
    batch = collate(PreferencePairs(pairs_file, SIZE), range(4))  # harmful, clean, harmful, clean
    clean = ~batch_info(batch, "cpu").harmful

    def clean_drift_after_training(p: float) -> float:
        m = lora_model(pipes["sd"])
        ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
        cfg = TrainConfig(model="x", dataset="x", out="x", loss="sc-dpo", beta=500.0, winner_weight=1.0,
                          preserve_weight=p, constraint=False, cost_margin=0.0, focus_gamma=0.0)
        opt = torch.optim.AdamW([q for q in m.unet.parameters() if q.requires_grad], lr=1e-2)
        for i in range(6):
            errors = pair_errors(m, m.unet, ref, batch, step_generator(0, i, 0))
            loss, _ = losses.sc_dpo_loss(*errors.errors, batch_info(batch, "cpu", errors), cfg, LossState())
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
        with torch.no_grad():
            drift = pair_errors(m, m.unet, ref, batch, step_generator(0, 99, 0)).drift
        return drift[clean].mean().item()

    free, kept = clean_drift_after_training(0.0), clean_drift_after_training(1000.0)
    assert free > 0 and kept < 0.5 * free, (free, kept)


# ------------------------------------------------------------------ whole runs
def test_resume_matches_uninterrupted_run(pipes, pairs_file, tmp_path):
    common = dict(model=str(pipes["sd"]), dataset=str(pairs_file), loss="sc-dpo", batch_size=2, grad_accum=2,
                  lr=1e-3, checkpoint_every=2, caption_dropout=0.3, **FAST)
    straight = train(TrainConfig(out=str(tmp_path / "a"), max_steps=4, **common))
    train(TrainConfig(out=str(tmp_path / "b"), max_steps=2, **common))
    resumed = train(TrainConfig(out=str(tmp_path / "b"), max_steps=4, resume=True, **common))
    a, b = (load_file(str(tmp_path / r / "pytorch_lora_weights.safetensors")) for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().max() > 0 for k, v in a.items() if "up" in k or "lora_B" in k)  # it did train
    for key in ("loss", "margin", "lambda", "focus_mean", "constraint"):
        assert straight[key] == resumed[key], key
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["samples"] == 16 and state["loss_state"]["lam"] == straight["lambda"]
    assert [p.name for p in sorted((tmp_path / "b" / "checkpoints").iterdir())] == ["step-2", "step-4"]


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_lora_run_loads_in_plain_diffusers(pipes, pairs_file, tmp_path, family):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    out = tmp_path / "run"
    precision = "bf16" if family == "sdxl" else "no"  # bf16: half-precision base, fp32 adapter
    metrics = train(TrainConfig(model=str(pipes[family]), dataset=str(pairs_file), out=str(out), max_steps=1,
                                lr=1e-2, lora_rank=4, lora_alpha=8, merge=family == "sd", mixed_precision=precision,
                                **FAST))
    assert metrics["steps"] == 1 and np.isfinite(metrics["loss"]) and (out / "samples" / "final.png").is_file()
    assert set(metrics["seconds"]) == {"setup", "first step", "steps", "checkpoints", "validation", "export"}
    assert list((out / "logs").rglob("events.out.tfevents*"))  # TensorBoard
    policy = lora_model(pipes[family])  # rebuilt from the last checkpoint's adapter
    tm.load_lora_state_dict(policy.unet, load_file(str(out / "checkpoints" / "step-1" / "lora.safetensors")))
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(pipes[family])
    cond = policy.encode_prompts(["a big cat", "a blue cat"])
    x, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 700])

    def unet_out(unet):
        with torch.no_grad():
            return unet(x, t, encoder_hidden_states=cond.context, added_cond_kwargs=cond.added_cond_kwargs).sample

    before = unet_out(pipe.unet)
    pipe.load_lora_weights(str(out))
    after = unet_out(pipe.unet)
    assert (after - before).abs().max() > 1e-5
    torch.testing.assert_close(after, unet_out(policy.unet), rtol=1e-5, atol=1e-6)
    if family == "sd":  # --merge: a whole pipeline with the LoRA fused in
        merged = T2IModel.from_pretrained(out / "pipeline", device="cpu")
        torch.testing.assert_close(unet_out(merged.unet), after, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_full_finetuning_run(pipes, pairs_file, tmp_path, family):
    from diffusers import UNet2DConditionModel

    out = tmp_path / "full"
    metrics = train(TrainConfig(model=str(pipes[family]), dataset=str(pairs_file), out=str(out), full=True,
                                max_steps=1, lr=1e-3, loss="dpo", gradient_checkpointing=True, **FAST))
    assert np.isfinite(metrics["loss"]) and metrics["implicit_acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    trained = UNet2DConditionModel.from_pretrained(out / "unet")
    base = UNet2DConditionModel.from_pretrained(pipes[family], subfolder="unet")
    diffs = [(a - b).abs().max() for a, b in zip(trained.parameters(), base.parameters())]
    assert max(diffs) > 0


def test_nonfinite_steps_are_skipped_then_abort(pipes, pairs_file, tmp_path, monkeypatch):
    def nan_loss(*args):
        loss, stats = losses.dpo_loss(*args)
        return loss * float("nan"), stats

    monkeypatch.setitem(losses.LOSSES, "dpo", losses.LossSpec(nan_loss))
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"3 non-finite steps in a row .*checkpoints/step-2"):
        train(TrainConfig(model=str(pipes["sd"]), dataset=str(pairs_file), out=str(out), loss="dpo", max_steps=10,
                          checkpoint_every=2, max_nonfinite_in_row=3, lr=1e-2, **FAST))
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    kept = load_file(str(out / "checkpoints" / "step-2" / "lora.safetensors"))
    assert all(v.abs().max() == 0 for k, v in kept.items() if "lora_B" in k)  # no update was applied
    state = json.loads((out / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    assert state["nonfinite_total"] == 2


# ------------------------------------------------------------------ configs and the command line
def test_shipped_configs_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("emojiworld", "emojiworld-v3", "emojiworld-gpu", "sd15", "sdxl"):
        cfg = TrainConfig(**load_yaml_config(root / f"{name}.yaml"))
        assert cfg.loss == "sc-dpo" and cfg.beta > 0 and cfg.lr > 0
    anchor = TrainConfig(**load_yaml_config(root / "emojiworld-gpu.yaml"))
    assert anchor.anchor_weight > 0 and anchor.on_policy_constraint and anchor.cost_model
    assert anchor.anchor_target_word == "sunflower" and anchor.preserve_weight == 20  # the shipped LoRA's recipe
    for name in ("sd15", "sdxl"):  # the real-model configs carry the same terms (the rewrite as the target)
        real = TrainConfig(**load_yaml_config(root / f"{name}.yaml"))
        assert (real.anchor_weight, real.anchor_states, real.min_timestep, real.winner_weight) == (20.0, "policy", 0, 1.0)
        assert real.on_policy_constraint and real.focus_signal == "pair" and real.anchor_target_word is None
    assert TrainConfig(model="emojiworld", dataset="d", out="o").beta == 312.5
    assert TrainConfig(model="/m/sd15", dataset="d", out="o").beta == 5000.0
    for name in ("single_gpu", "ddp", "fsdp"):
        assert (root / "accelerate" / f"{name}.yaml").is_file()


@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_nonpositive_beta_is_refused(beta):
    with pytest.raises(ValueError, match="beta must be > 0"):
        TrainConfig(model="m", dataset="d", out="o", beta=beta)


def test_cli_yaml_with_overrides_and_errors(pipes, tmp_path, capsys):
    data = write_pairs(tmp_path / "pairs.parquet", n=9)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"model: {pipes['sd']}\ndataset: {data}\nout: {tmp_path / 'out'}\nloss: dpo\n"
                        "lora_rank: 2\nlr: 1e-3\nmax_steps: 5\nvalidate_prompts: [a cat]\nvalidate_steps: 1\n")
    code = main(["train", "--config", str(cfg_file), "--max-steps", "1", "--loss", "safetydpo", "--device", "cpu"])
    assert code == 0 and "trained" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (saved["loss"], saved["max_steps"], saved["lora_rank"], saved["lr"]) == ("safetydpo", 1, 2, 1e-3)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (metrics["pairs"], metrics["filtered"]) == (3, 3)  # safetydpo keeps the harmful non-tie pairs
    cfg_file.write_text(cfg_file.read_text() + "betta: 3\n")
    assert main(["train", "--config", str(cfg_file)]) == 2
    assert "unknown key(s) betta" in capsys.readouterr().err
    assert main(["train", "--model", "m", "--out", "o"]) == 2
    assert "no dataset" in capsys.readouterr().err
    cfg_file.write_text(cfg_file.read_text().replace("betta: 3\n", ""))
    assert main(["train", "--config", str(cfg_file), "--max-timestep", "5000", "--device", "cpu", "--overwrite"]) == 2
    assert "within the model's 1000 training timesteps" in capsys.readouterr().err


def test_yaml_list_values_stay_lists(tmp_path):
    from scdpo.train.config import load_yaml_config

    f = tmp_path / "c.yaml"
    f.write_text("lora_targets: [to_q, to_out.0]\nlr: 1e-5\nbeta: 312.5\n")
    values = load_yaml_config(f)
    assert values["lora_targets"] == ["to_q", "to_out.0"] and values["lr"] == 1e-5


def test_on_policy_constraint_and_pair_focusing_resume_exactly(pipes, pairs_file, tmp_path, monkeypatch):
    """constraint_source policy samples the policy every K steps, scores it with the cost model
    and moves lambda by dual ascent; focus_signal pair keeps running logits in the checkpoint.
    Both survive an interruption: 2 + 2 steps equal 4 straight."""
    import scdpo.cost

    calls = []

    def fake_loader(path, device):
        def scorer(images, records):  # brightness above 0.45 counts as "harmful"
            calls.append(len(images))
            return images.mean(dim=(1, 2, 3)) - 0.45
        return scorer
    monkeypatch.setattr(scdpo.cost, "load_cost_scorer", fake_loader)
    common = dict(model=str(pipes["sd"]), dataset=str(pairs_file), loss="sc-dpo", batch_size=2, grad_accum=1,
                  lr=1e-3, checkpoint_every=2, constraint_source="policy", constraint_every=1, constraint_prompts=3,
                  constraint_steps=1, cost_model="unused", cost_budget=0.2, lambda_init=0.0, lambda_lr=1.0,
                  focus_signal="pair", **FAST)
    straight = train(TrainConfig(out=str(tmp_path / "a"), max_steps=4, **common))
    assert calls and set(calls) == {3}  # every step, the 3 held prompts (only the 6 harmful captions qualify)
    assert straight["lambda"] != 0.0 and straight["policy_measure"] is not None
    train(TrainConfig(out=str(tmp_path / "b"), max_steps=2, **common))
    resumed = train(TrainConfig(out=str(tmp_path / "b"), max_steps=4, resume=True, **common))
    a, b = (load_file(str(tmp_path / r / "pytorch_lora_weights.safetensors")) for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("loss", "lambda", "policy_measure", "focus_mean"):
        assert straight[key] == resumed[key], key
    ckpt = tmp_path / "b" / "checkpoints" / "step-4"
    z = load_file(str(ckpt / "pair_hardness.safetensors"))["z"]
    assert (~torch.isnan(z)).sum() >= 2  # pairs seen have a running logit
    state = json.loads((ckpt / "trainer_state.json").read_text())["loss_state"]
    assert set(state["focus_mean_kind"]) <= {"harmful", "clean"} and state["measured"] == straight["policy_measure"]


def test_on_policy_constraint_needs_a_cost_model(tmp_path):
    with pytest.raises(ValueError, match="--cost-model"):
        TrainConfig(model="m", dataset="d", out=str(tmp_path), constraint_source="policy")
    with pytest.raises(ValueError, match="focus_signal"):
        TrainConfig(model="m", dataset="d", out=str(tmp_path), focus_signal="sometimes")


def test_pair_kinds_filter(tmp_path):
    """--kinds harmful trains sc-dpo on harmful pairs only (SafetyDPO with the extras); safetydpo
    defaults to harmful; bad kinds are refused."""
    base = dict(model="m", dataset="d", out=str(tmp_path))
    assert TrainConfig(**base).pair_kinds is None
    assert TrainConfig(**base, loss="safetydpo").pair_kinds == ("harmful",)
    assert TrainConfig(**base, kinds="harmful").pair_kinds == ("harmful",)
    with pytest.raises(ValueError, match="kinds"):
        TrainConfig(**base, kinds=["toxic"])
