"""`--dtype` of the sampling commands (SamplerConfig.dtype): which precision "auto" means where, that
the commands load the model in it and record it, and that resumable folders refuse to mix precisions."""

import json

import pytest
import torch

from scdpo.models import testing
from scdpo.models.sampler_config import SamplerConfig, sampling_dtype, with_sampling_dtype, without_fp32
from scdpo.models.t2i import T2IModel


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return str(testing.tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "sd"))


def test_auto_is_bf16_on_cuda_for_a_real_model_only(sd, monkeypatch):
    capability = {"cuda": (9, 0), "cuda:1": (7, 0)}  # an H100, and a V100 (bf16 emulated only)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: capability[str(d)])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sampling_dtype("auto", sd, "cuda") == "bf16"
    assert sampling_dtype("auto", sd, "cuda:1") == "fp16"  # the device's own GPU decides
    assert sampling_dtype("auto", "emojiworld", "cuda") == "tf32"  # fp32 weights, TF32 matmuls
    assert sampling_dtype("auto", "emojiworld", "cuda:1") == "fp32"  # no TF32 before Ampere
    assert sampling_dtype("auto", "emojiworld", "cpu") == "fp32"
    assert sampling_dtype("auto", sd, "cpu") == "fp32"
    assert sampling_dtype("auto", sd, None) == "bf16"  # no device given: what T2IModel would pick
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sampling_dtype("auto", sd, None) == "fp32"
    assert sampling_dtype("auto", sd, "cuda") == "fp32"  # no CUDA: loading the model on "cuda" says so itself
    for name in ("fp32", "bf16", "fp16"):  # a given precision is kept on every device
        assert sampling_dtype(name, "emojiworld", "cpu") == name


def test_tf32_is_fp32_with_tf32_matmuls_on_cuda_only(sd, monkeypatch, one_thread):
    capability = {"cuda": (9, 0), "cuda:1": (7, 0)}  # an H100, and a V100 (no TF32)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: capability[str(d)])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sampling_dtype("tf32", "emojiworld", "cuda") == "tf32"
    assert sampling_dtype("tf32", sd, "cuda:1") == "fp32"
    assert sampling_dtype("tf32", sd, "cpu") == "fp32"  # a CUDA mode: elsewhere the arithmetic is fp32's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sampling_dtype("tf32", sd, "cuda") == "fp32"
    assert T2IModel.for_sampling(sd, SamplerConfig(dtype="tf32"), device="cpu").dtype_name == "fp32"
    # where it resolves to tf32 (a CUDA GPU), the model loads in fp32 and turns torch's switch on; its
    # name says what is in force on its device (a CUDA device stood in for by the CPU here)
    monkeypatch.setattr("scdpo.models.t2i.sampling_dtype", lambda choice, model, device: "tf32")
    monkeypatch.setattr("scdpo.models.speed.tf32_in_force", lambda device: torch.backends.cuda.matmul.allow_tf32)
    before, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, False
    try:
        model = T2IModel.for_sampling(sd, SamplerConfig(dtype="tf32"), device="cpu")
        assert (model.unet.dtype, model.dtype_name, torch.backends.cuda.matmul.allow_tf32) == \
            (torch.float32, "tf32", True)
        assert with_sampling_dtype(SamplerConfig(), sd, "cpu", model).dtype == "tf32"  # what a build records
        assert model.to(dtype=torch.bfloat16).dtype_name == "bf16"  # a cast says what it is
        torch.backends.cuda.matmul.allow_tf32 = False
        assert model.to(dtype=torch.float32).dtype_name == "fp32"  # the switch off: fp32 again
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_tf32_in_force_needs_a_cuda_device():
    from scdpo.models.speed import tf32_in_force

    before, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, True
    try:
        assert not tf32_in_force("cpu") and tf32_in_force("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False
        assert not tf32_in_force("cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_an_unknown_dtype_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"unknown --dtype 'fp64'; choose one of auto, fp32, tf32, bf16, fp16"):
        SamplerConfig(dtype="fp64")


def test_the_model_loads_and_samples_in_the_dtype(sd, one_thread):
    model = T2IModel.for_sampling(sd, SamplerConfig(dtype="bf16"), device="cpu")
    assert (model.unet.dtype, model.text_encoders[0].dtype, model.dtype_name) == (torch.bfloat16,) * 2 + ("bf16",)
    fp32 = T2IModel.for_sampling(sd, device="cpu")  # auto on the CPU
    assert (fp32.unet.dtype, fp32.dtype_name) == (torch.float32, "fp32")
    # its VAE asks for fp32 (force_upcast) and gets its own weights, not their bf16 rounding
    assert model.vae.config.force_upcast and model.vae.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(model.vae.state_dict().values(), fp32.vae.state_dict().values()))
    with pytest.raises(ValueError, match="torch.float64, which the commands do not sample in"):
        T2IModel.from_pretrained(sd, device="cpu", dtype=torch.float64).dtype_name
    cfg = SamplerConfig(steps=3, progress=False)
    low, high = model.sample(["a red cat", "a dog"], [1, 2], cfg), fp32.sample(["a red cat", "a dog"], [1, 2], cfg)
    assert low.dtype == torch.float32 and low.shape == high.shape
    assert 0 < (low - high).abs().mean() < 0.05  # the same images up to bf16's rounding


def test_resolved_settings_record_the_precision_and_keep_old_folders(sd):
    cfg = with_sampling_dtype(SamplerConfig(), sd, "cpu")
    assert cfg.dtype == "fp32"
    loaded = T2IModel.from_pretrained(sd, device="cpu", dtype=torch.float16)
    assert with_sampling_dtype(SamplerConfig(dtype="bf16"), sd, "cpu", loaded).dtype == "fp16"  # the model's own
    # a folder written before --dtype existed has no key, and sampled in fp32
    assert without_fp32({"steps": 3, "dtype": "fp32"}) == {"steps": 3}
    assert without_fp32({"steps": 3, "dtype": "bf16"}) == {"steps": 3, "dtype": "bf16"}


def half_model():
    """The data builder tests' stand-in model, sampling in bf16 (what "auto" gives a real model on a GPU)."""
    from test_data_builder import FakeModel

    return type("HalfModel", (FakeModel,), {"dtype_name": "bf16"})


def test_a_build_refuses_to_resume_in_another_precision(tmp_path):
    from test_data_builder import FakeModel, _cfg, fake_cost, fake_reward

    from scdpo.data.builder import build
    from scdpo.data.card import MANIFEST

    HalfModel = half_model()
    out = tmp_path / "pairs"
    with pytest.raises(RuntimeError):
        build(_cfg(out), HalfModel(), lambda i, r: (_ for _ in ()).throw(RuntimeError("stop")), fake_reward)
    assert json.loads((out / MANIFEST).read_text())["settings"]["dtype"] == "bf16"
    with pytest.raises(ValueError, match=r"'dtype': \('bf16', 'fp32'\)"):
        build(_cfg(out, device="cpu"), FakeModel(), fake_cost, fake_reward)  # "auto" on the CPU: fp32
    build(_cfg(out), HalfModel(), fake_cost, fake_reward)  # the same precision resumes


def test_a_build_sampled_before_dtype_existed_says_how_to_resume(tmp_path):
    from test_data_builder import FakeModel, _cfg, fake_cost, fake_reward

    from scdpo.data.builder import build

    HalfModel = half_model()
    out = tmp_path / "pairs"
    with pytest.raises(RuntimeError):  # an fp32 build: its settings have no dtype, as every build's before
        build(_cfg(out, device="cpu"), FakeModel(), lambda i, r: (_ for _ in ()).throw(RuntimeError("stop")), fake_reward)
    with pytest.raises(ValueError, match=r"'dtype': \('fp32', 'bf16'\).*add --dtype fp32 to resume it"):
        build(_cfg(out), HalfModel(), fake_cost, fake_reward)


def test_an_emojiworld_build_of_before_resumes_with_fp32_only(monkeypatch):
    """A GPU build of EmojiWorld recorded no precision until 2026-12-06 ("auto" was fp32); "auto" now resolves
    to tf32 there, so the settings differ and the refusal names the fix."""
    from scdpo.data.config import BuildConfig
    from scdpo.models.sampler_config import dtype_hint

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (9, 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    common = dict(model="emojiworld", cost_model="c", reward="emojiworld", harmful="align-harmful", out="o",
                  device="cuda", chunk_size=64)
    now = BuildConfig(**common).settings()
    assert now["dtype"] == "tf32"
    before = BuildConfig(**common, sampler=SamplerConfig(dtype="fp32")).settings()
    assert "dtype" not in before and {k: v for k, v in now.items() if k != "dtype"} == before
    assert dtype_hint(before, now).endswith("this run would sample in tf32: add --dtype fp32 to resume it")


def test_a_process_of_several_commands_keeps_each_ones_tf32_switch(monkeypatch, tmp_path):
    """tf32_restored puts torch's process-wide switch back, and the demo runs each stage inside it: a GPU build's
    "tf32" sampling does not carry into the training after it."""
    from scdpo import demo
    from scdpo.models.speed import allow_tf32, tf32_restored

    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with tf32_restored():
            allow_tf32()
            assert torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
        seen = []
        demo._stage("build", tmp_path / "not-done", allow_tf32)
        demo._stage("train", tmp_path / "not-done", lambda: seen.append(torch.backends.cuda.matmul.allow_tf32))
        assert seen == [False]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_generate_records_the_dtype(sd, tmp_path, one_thread):
    from scdpo.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\n")
    main(["generate", "--model", sd, "--prompts", str(prompts), "--out", str(tmp_path / "g"), "--steps", "2",
          "--device", "cpu", "--dtype", "bf16"])
    assert json.loads((tmp_path / "g" / "generate.json").read_text())["dtype"] == "bf16"


def test_compare_says_when_the_runs_sampled_in_different_precisions(tmp_path, fake_runs):
    from scdpo.eval.compare import compare

    assert not any("precisions" in n for n in compare(fake_runs, tmp_path / "same")["notes"])
    metrics = json.loads((tmp_path / "eval-sc-dpo" / "metrics.json").read_text())
    (tmp_path / "eval-sc-dpo" / "metrics.json").write_text(json.dumps({**metrics, "dtype": "bf16"}))
    notes = compare(fake_runs, tmp_path / "mixed")["notes"]
    assert any("different precisions (bf16, fp32)" in n for n in notes)


def test_the_cost_models_pair_images_are_keyed_by_a_precision_other_than_fp32():
    from scdpo.cost.config import CostTrainConfig
    from scdpo.cost.train import pair_settings

    cfg = CostTrainConfig(out="x", model="m", prompt_pairs="p.csv", device="cpu")
    assert "dtype" not in pair_settings(cfg)  # auto on the CPU, and fp32 below: the caches sampled before keep their key
    assert "dtype" not in pair_settings(CostTrainConfig(out="x", model="m", prompt_pairs="p.csv", sample_dtype="fp32"))
    assert pair_settings(CostTrainConfig(out="x", model="m", prompt_pairs="p.csv", sample_dtype="bf16"))["dtype"] == "bf16"
    with pytest.raises(ValueError, match="unknown --sample-dtype 'half'"):
        CostTrainConfig(out="x", sample_dtype="half")


def test_a_lora_fuses_into_a_bf16_model(sd, tmp_path, random_lora, one_thread):
    lora, _ = random_lora(sd, tmp_path / "lora")
    cfg = SamplerConfig(steps=2, progress=False, dtype="bf16")
    plain = T2IModel.for_sampling(sd, cfg, device="cpu")
    fused = T2IModel.for_sampling(sd, cfg, device="cpu", lora=lora)
    assert fused.unet.dtype == torch.bfloat16
    assert (fused.sample(["a red cat"], [3], cfg) - plain.sample(["a red cat"], [3], cfg)).abs().max() > 0.05


def test_a_small_lora_is_fused_before_the_cast(sd, tmp_path, random_lora):
    """Fused into bf16 weights, an update below half a bf16 step would be lost; fused in fp32 and then
    cast, the weights are the fp32 model's rounded once."""
    lora, _ = random_lora(sd, tmp_path / "small", rank=4, alpha=0.01)  # scale 0.0025: a small update
    half = T2IModel.for_sampling(sd, SamplerConfig(dtype="bf16"), device="cpu", lora=lora).unet.state_dict()
    full = T2IModel.for_sampling(sd, SamplerConfig(dtype="fp32"), device="cpu", lora=lora).unet.state_dict()
    assert all(torch.equal(half[k], v.to(torch.bfloat16)) for k, v in full.items())
    late = T2IModel.from_pretrained(sd, device="cpu", dtype=torch.bfloat16).load_lora(lora).unet.state_dict()
    assert any(not torch.equal(half[k], late[k]) for k in half)  # what fusing into bf16 would have given


@pytest.mark.parametrize("family", ["sdxl", "sd3"])
@pytest.mark.parametrize("guard", [None, "sld:medium"])
def test_every_family_samples_in_bf16(family, guard, tmp_path, one_thread):
    """What "auto" now gives every real model on a GPU: each family (and a guard) samples finite images
    within bf16's rounding of fp32's. SD 1.5's own test is above."""
    path = str(getattr(testing, f"tiny_{family}_pipeline")(tmp_path / family))
    images = {}
    for dtype in ("bf16", "fp32"):
        cfg = SamplerConfig(steps=3, progress=False, dtype=dtype, guard=guard)
        images[dtype] = T2IModel.for_sampling(path, cfg, device="cpu").sample(["a red cat", "a dog"], [1, 2], cfg)
    assert torch.isfinite(images["bf16"]).all() and images["bf16"].dtype == torch.float32
    assert 0 < (images["bf16"] - images["fp32"]).abs().mean() < 0.05
