"""`scdpo train --together`: several LoRA trainings in one process (scdpo.train.together, .stacked)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from scdpo.cli import main
from scdpo.models import testing
from scdpo.models.t2i import T2IModel
from scdpo.train import stacked
from scdpo.train import model as tm
from scdpo.train.commands import run_configs
from scdpo.train.config import LORA_TARGETS, TrainConfig
from scdpo.train.together import check_runs, train_together
from scdpo.train.trainer import train
from test_trainer import FAST, write_pairs

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"),
              pytest.mark.usefixtures("one_thread")]
LORA = "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("together")
    return testing.tiny_sd_pipeline(root / "sd"), write_pairs(root / "pairs.parquet", n=12)


def common(sd, **kw):
    pipe, data = sd
    return {**dict(model=str(pipe), dataset=str(data), batch_size=2, lr=1e-3, lora_rank=4, lora_alpha=8.0, beta=50.0,
                   max_steps=3, checkpoint_every=2), **FAST, **kw}


# the pipeline's kinds of runs: losses that read costs or not, one that filters the pairs (safetydpo),
# the focusing state (sc-dpo's pair hardness), another seed (its own data stream and initialisation)
RUNS = [dict(loss="dpo"), dict(loss="safetydpo"), dict(loss="sc-dpo", focus_signal="pair"),
        dict(loss="sc-dpo", constraint=False, seed=1), dict(loss="sc-dpo", winner_weight=0.0)]


def assert_close_loras(a, b):
    """Equal but for rounding: the adapters' matmuls (float32) round otherwise than peft's, and AdamW's normalised
    step turns a near-zero gradient's rounding into up to lr-sized moves. On an AMD EPYC CPU (2026-12-06) the five
    runs' weights differed by up to 3.3e-6 (atol 1e-7 of before failed there, at the commit before it too); a run
    given another's adapter or loss is off by about lr = 1e-3 after three steps, far above 2e-5."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=2e-5), (k, (a[k] - b[k]).abs().max(), b[k].abs().max())


def test_stacked_layer_gives_each_run_its_own_adapter_and_none_to_padding():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    a = [torch.randn(2, 6) for _ in range(3)]
    b = [torch.randn(5, 2) for _ in range(3)]
    layout = stacked.Layout()
    layer = stacked.StackedLoRA(base, a, b, 0.5, layout)
    x = torch.randn(3 * 4 + 2, 7, 6)  # 3 runs x 4 rows, then 2 rows of padding
    with stacked.rows_per_run(layout, rows=4):
        y = layer(x)
    for k in range(3):
        rows = x[4 * k:4 * (k + 1)]
        assert torch.allclose(y[4 * k:4 * (k + 1)], base(rows) + 0.5 * rows @ a[k].T @ b[k].T, atol=1e-5)
    assert torch.equal(y[12:], base(x[12:]))
    assert torch.equal(layer(x), base(x))  # no layout: the frozen reference
    with stacked.rows_per_run(layout, run=2):
        assert torch.allclose(layer(x), base(x) + 0.5 * x @ a[2].T @ b[2].T, atol=1e-5)
    with stacked.rows_per_run(layout, rows=5), pytest.raises(ValueError, match="fewer than 3 runs x 5"):
        layer(x)


def test_stacked_layer_under_autocast_computes_as_peft_does():
    """Under bf16 autocast the layer skips peft's cast of the input to fp32 (the matmul casts it back): the
    output and every gradient equal peft's order of casts exactly."""
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5).to(torch.bfloat16)
    a = [torch.randn(2, 6) for _ in range(2)]
    b = [torch.randn(5, 2) for _ in range(2)]
    layer = stacked.StackedLoRA(base, a, b, 0.5, stacked.Layout(rows=3))
    x = torch.randn(6, 4, 6).to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        head = x.reshape(2, 3 * 4, 6).to(torch.float32)  # peft: the input in the adapter's dtype first
        a_all, b_all = torch.stack(list(layer.lora_A)), torch.stack(list(layer.lora_B))
        delta = (head @ a_all.transpose(-1, -2) @ b_all.transpose(-1, -2) * 0.5).reshape(6, 4, 5)
        expected = (base(x) + delta).to(torch.bfloat16)
    assert torch.equal(y, expected)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *layer.lora_A, *layer.lora_B], g)
    want = torch.autograd.grad(expected, [x, *layer.lora_A, *layer.lora_B], g)
    assert all(torch.equal(u, v) for u, v in zip(got, want))


def test_stacked_unet_equals_peft_per_run(sd):
    """The stacked UNet's call, run k's rows, equals that run's own peft LoRA UNet; the adapters
    start as the trainer draws them (peft's init under the run's seed)."""
    model = T2IModel.from_pretrained(str(sd[0]), device="cpu")
    states = [stacked.initial_adapters(model.unet, s, 4, 8.0, LORA_TARGETS) for s in (0, 1)]
    g = torch.Generator().manual_seed(5)
    noise = [{k: 0.1 * torch.randn(v.shape, generator=g) for k, v in s.items()} for s in states]
    states = [{k: v + n[k] for k, v in s.items()} for s, n in zip(states, noise)]  # B != 0
    layout = stacked.stack(model.unet, states, 4, 8.0, LORA_TARGETS)
    x = torch.randn(4, 4, 8, 8)
    t = torch.tensor([10, 500, 10, 500])
    cond = model.encode_prompts(["a cat", "a dog"] * 2)
    with torch.no_grad(), stacked.rows_per_run(layout, rows=2):
        both = model.predict(x, t, cond)
    for k, seed in enumerate((0, 1)):
        own = T2IModel.from_pretrained(str(sd[0]), device="cpu")
        torch.manual_seed(seed)
        tm.add_lora(own.unet, 4, 8.0, LORA_TARGETS)
        fresh = tm.lora_state_dict(own.unet)
        assert all(torch.equal(fresh[n], v - d) or torch.allclose(fresh[n], v - d) for (n, v), d in
                   zip(states[k].items(), noise[k].values()))  # the trainer's initialisation
        tm.load_lora_state_dict(own.unet, states[k])
        with torch.no_grad():
            alone = own.predict(x[2 * k:2 * k + 2], t[2 * k:2 * k + 2], own.encode_prompts(["a cat", "a dog"]))
        assert torch.allclose(both[2 * k:2 * k + 2], alone, atol=1e-5)


def test_trainings_together_equal_the_same_trainings_alone(sd, tmp_path, monkeypatch):
    """Five runs in one process: each run's LoRA, losses, lambda and focusing state are the ones its
    own `scdpo train` gives; the LoRA loads in plain diffusers. The frozen UNet computes in float64
    here: in float32 a batch of 20 rows rounds otherwise than one of 4 (another matmul blocking), and
    beta times that, then AdamW's normalised steps of near-zero gradients, leave nothing to compare."""
    load = T2IModel.from_pretrained.__func__
    monkeypatch.setattr(T2IModel, "from_pretrained",
                        classmethod(lambda cls, path, **kw: load(cls, path, **{**kw, "dtype": torch.float64})))
    cfgs = [TrainConfig(out=str(tmp_path / f"t{k}"), **common(sd, **r)) for k, r in enumerate(RUNS)]
    together = train_together(cfgs)
    for k, (cfg, got) in enumerate(zip(cfgs, together)):
        alone = train(dataclasses.replace(cfg, out=str(tmp_path / f"a{k}")))
        assert_close_loras(load_file(str(tmp_path / f"t{k}" / LORA)), load_file(str(tmp_path / f"a{k}" / LORA)))
        for key in ("loss", "margin", "lambda", "implicit_acc", "grad_norm", "pairs", "steps", "filtered"):
            if key in alone:
                assert got[key] == pytest.approx(alone[key], rel=1e-5, abs=1e-7), (k, key)
        written = json.loads((tmp_path / f"t{k}" / "metrics.json").read_text())
        assert written["together"] == len(RUNS)
        # where the process's time went, the same for every run: each phase once, none negative
        assert set(written["seconds"]) == {"setup", "first step", "steps", "checkpoints", "validation", "export"}
        assert min(written["seconds"].values()) >= 0 and written["seconds"] == got["seconds"]
        assert (tmp_path / f"t{k}" / "samples" / "final.png").is_file()
    assert any(v.abs().max() > 0 for k, v in load_file(str(tmp_path / "t0" / LORA)).items() if ".up." in k)
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(sd[0]))
    pipe.load_lora_weights(str(tmp_path / "t2"))  # interoperates like a separate training's LoRA


def test_together_resumes_exactly(sd, tmp_path):
    cfgs = [TrainConfig(out=str(tmp_path / f"s{k}"), **common(sd, max_steps=4, caption_dropout=0.3, **r))
            for k, r in enumerate(RUNS[2:4])]
    straight = train_together(cfgs)
    half = [dataclasses.replace(c, out=str(tmp_path / f"h{k}"), max_steps=2) for k, c in enumerate(cfgs)]
    train_together(half)
    resumed = train_together([dataclasses.replace(c, max_steps=4, resume=True) for c in half])
    for k in range(2):
        a, b = (load_file(str(tmp_path / f"{p}{k}" / LORA)) for p in "sh")
        assert all(torch.equal(a[n], b[n]) for n in a)
        for key in ("loss", "lambda", "focus_mean"):
            if key in straight[k]:
                assert straight[k][key] == resumed[k][key], key
    with pytest.raises(ValueError, match="resume it with --together"):  # a separate training cannot
        train(dataclasses.replace(half[0], max_steps=6, resume=True))
    alone = dataclasses.replace(half[0], out=str(tmp_path / "alone"), max_steps=2)
    train(alone)
    with pytest.raises(ValueError, match="written by a separate training"):  # nor the other way round
        train_together([dataclasses.replace(alone, max_steps=4, resume=True)])


def test_runs_that_cannot_train_together_are_refused(sd, tmp_path):
    base = TrainConfig(out=str(tmp_path / "a"), **common(sd))
    with pytest.raises(ValueError, match="share lr"):
        check_runs([base, dataclasses.replace(base, out=str(tmp_path / "b"), lr=1.0)])
    with pytest.raises(ValueError, match="same --out"):
        check_runs([base, dataclasses.replace(base, loss="dpo")])
    with pytest.raises(ValueError, match="full"):
        check_runs([dataclasses.replace(base, full=True)])
    with pytest.raises(ValueError, match="on-policy"):
        check_runs([dataclasses.replace(base, loss="sc-dpo", constraint_source="policy", cost_model="c")])


def test_run_flags_parse_as_the_commands(sd, tmp_path):
    base = TrainConfig(out="x", **common(sd))
    a, b = run_configs(base, [f"{tmp_path}/a=--loss sc-dpo --no-constraint --focus-gamma 0", f"{tmp_path}/b="])
    assert (a.out, a.loss, a.constraint, a.focus_gamma) == (f"{tmp_path}/a", "sc-dpo", False, 0.0)
    assert dataclasses.replace(b, out="x") == base
    with pytest.raises(ValueError, match="OUT=FLAGS"):
        run_configs(base, ["--loss dpo"])
    with pytest.raises(ValueError, match="--run 'a=--no-such-flag 1': unrecognized arguments"):
        run_configs(base, ["a=--no-such-flag 1"])
    with pytest.raises(ValueError, match="--run 'a=--loss nope'"):
        run_configs(base, ["a=--loss nope"])


def test_cli_trains_seeds_together(sd, tmp_path, capsys):
    pipe, data = sd
    main(["train", "--model", str(pipe), "--dataset", str(data), "--out", str(tmp_path / "r"), "--loss", "dpo",
          "--lora-rank", "2", "--max-steps", "1", "--batch-size", "2", "--validate-prompts", "a cat",
          "--validate-steps", "1", "--device", "cpu", "--seeds", "0", "3", "--together"])
    out = capsys.readouterr().out
    assert out.count("trained ") == 2
    assert "final loss over 2 seeds" in out
    for s in (0, 3):
        assert (tmp_path / "r" / f"seed-{s}" / LORA).is_file()
        assert json.loads((tmp_path / "r" / f"seed-{s}" / "config.json").read_text())["seed"] == s
    record = json.loads((tmp_path / "r" / "seeds.json").read_text())
    assert sorted(record) == ["0", "3"] and record["3"]["metrics"]["steps"] == 1 and record["0"]["exit_code"] == 0


def test_resume_takes_the_newest_step_every_run_has(sd, tmp_path):
    """A crash between two runs' checkpoint writes leaves one run a step ahead: the runs resume from
    the step they share, and end where an uninterrupted training ends."""
    import shutil

    cfgs = [TrainConfig(out=str(tmp_path / f"r{k}"), **common(sd, max_steps=4, **r)) for k, r in enumerate(RUNS[:2])]
    train_together(cfgs)
    straight = [load_file(str(tmp_path / f"r{k}" / LORA)) for k in range(2)]
    shutil.rmtree(tmp_path / "r1" / "checkpoints" / "step-4")
    for k in range(2):
        (tmp_path / f"r{k}" / LORA).unlink()
    train_together([dataclasses.replace(c, resume=True) for c in cfgs])
    for k in range(2):
        again = load_file(str(tmp_path / f"r{k}" / LORA))
        assert all(torch.equal(straight[k][n], again[n]) for n in again)
    shutil.rmtree(tmp_path / "r1" / "checkpoints")
    with pytest.raises(ValueError, match="no checkpoint step in common"):
        train_together([dataclasses.replace(c, resume=True) for c in cfgs])


def test_a_run_whose_loss_is_not_finite_skips_its_steps_alone(sd, tmp_path, monkeypatch):
    """One AdamW holds every run's tensors: a run's non-finite step leaves its own tensors untouched (no
    update, no decay, no AdamW state or step count) while the other runs step as they would alone; a
    run that skips one step mid-way ends where a separate training with the same skip ends (its step
    counts, so its bias correction, included); a run's divergence stops the training, naming it."""
    from safetensors.torch import load_file as load
    from scdpo.train import losses
    from scdpo.train.trainer import TrainingDiverged

    load_model = T2IModel.from_pretrained.__func__
    monkeypatch.setattr(T2IModel, "from_pretrained",
                        classmethod(lambda cls, path, **kw: load_model(cls, path, **{**kw, "dtype": torch.float64})))
    calls = {"n": 0, "bad": set()}

    def flaky_loss(*args):  # non-finite at the calls in calls["bad"] (one call a step: grad_accum 1)
        calls["n"] += 1
        loss, stats = losses.safetydpo_loss(*args)
        return (loss * float("nan") if calls["n"] in calls["bad"] else loss), stats

    monkeypatch.setitem(losses.LOSSES, "safetydpo", losses.LossSpec(flaky_loss, kinds=("harmful",)))
    cfgs = [TrainConfig(out=str(tmp_path / f"n{k}"), **common(sd, max_nonfinite_in_row=10, weight_decay=0.1, **r))
            for k, r in enumerate(RUNS[:2])]
    calls.update(n=0, bad={1, 2, 3})  # run 1 never steps
    metrics = train_together(cfgs)
    assert metrics[1]["nonfinite_total"] == 3 and metrics[0]["nonfinite_total"] == 0
    ckpt = tmp_path / "n1" / "checkpoints" / "step-2"
    fresh = T2IModel.from_pretrained(str(sd[0]), device="cpu")
    start = stacked.initial_adapters(fresh.unet, cfgs[1].seed, 4, 8.0, LORA_TARGETS)
    kept = load(str(ckpt / "lora.safetensors"))
    assert all(torch.equal(kept[k], start[k].to(kept[k].dtype)) for k in start)  # A and B: not decayed either
    assert load(str(ckpt / "optimizer.safetensors")) == {}  # no AdamW state
    steps = {k: v for k, v in load(str(tmp_path / "n0" / "checkpoints" / "step-2" / "optimizer.safetensors")).items()
             if k.endswith(".step")}
    assert steps and all(v.item() == 2 for v in steps.values())
    alone = train(dataclasses.replace(cfgs[0], out=str(tmp_path / "alone")))
    assert_close_loras(load(str(tmp_path / "n0" / LORA)), load(str(tmp_path / "alone" / LORA)))
    assert metrics[0]["loss"] == pytest.approx(alone["loss"], rel=1e-5)

    calls.update(n=0, bad={2})  # run 1 skips its second step only
    together = [dataclasses.replace(c, out=str(tmp_path / f"s{k}")) for k, c in enumerate(cfgs)]
    train_together(together)
    calls.update(n=0, bad={2})
    train(dataclasses.replace(cfgs[1], out=str(tmp_path / "s-alone")))
    assert_close_loras(load(str(tmp_path / "s1" / LORA)), load(str(tmp_path / "s-alone" / LORA)))

    calls.update(n=0, bad={1, 2, 3})
    with pytest.raises(TrainingDiverged, match=r"m1: 2 non-finite steps in a row .*every run stopped"):
        train_together([dataclasses.replace(c, out=str(tmp_path / f"m{k}"), max_nonfinite_in_row=2)
                        for k, c in enumerate(cfgs)])


def test_a_narrower_filter_takes_its_latents_from_the_whole_datasets(sd, monkeypatch):
    """SafetyDPO's harmful pairs are rows of the whole dataset's: their latents are indexed out of its cache
    (one encoding pass, not two), and equal what encoding them alone gives."""
    import scdpo.train.trainer as trainer
    from scdpo.train.together import _streams

    encode, calls = trainer._cache_latents, []
    monkeypatch.setattr(trainer, "_cache_latents", lambda model, pairs: calls.append(len(pairs)) or encode(model, pairs))
    cfgs = [TrainConfig(out="unused", cache_latents=True, **common(sd, loss=loss)) for loss in ("safetydpo", "dpo")]
    model = T2IModel.from_pretrained(sd[0], device="cpu")
    streams, of_run = _streams(cfgs, model, torch.device("cpu"))
    harmful, whole = streams[of_run[0]], streams[of_run[1]]
    assert calls == [len(whole.pairs)] and 0 < len(harmful.pairs) < len(whole.pairs)
    assert not harmful.pairs.decode and harmful.cache.shape == (len(harmful.pairs), *whole.cache.shape[1:])
    harmful.pairs.decode = True  # to encode them alone
    assert torch.allclose(harmful.cache, encode(model, harmful.pairs), atol=1e-5)
