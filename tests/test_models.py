"""T2IModel, sampling and the model registry, on tiny random pipelines loaded from disk like a user's."""

from __future__ import annotations

import warnings

import pytest
import torch

from scdpo.models import testing
from scdpo.models.registry import ModelNotShippedError, resolve_model_path
from scdpo.models.t2i import Conditioning, SamplerConfig, T2IModel

FAST = dict(steps=3, progress=False)
# diffusers' schedulers call np.array on torch tensors, which numpy 2 flags; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {
        "clip": testing.tiny_sd_pipeline(root / "sd-clip", text_encoder="clip"),
        "minilm": testing.tiny_sd_pipeline(root / "sd-minilm", text_encoder="minilm"),
        "sdxl": testing.tiny_sdxl_pipeline(root / "sdxl"),
    }


@pytest.fixture(scope="module")
def models(paths):
    return {name: T2IModel.from_pretrained(path, device="cpu") for name, path in paths.items()}


ALL = ["clip", "minilm", "sdxl"]


@pytest.mark.parametrize("name,family", [("clip", "sd"), ("minilm", "sd"), ("sdxl", "sdxl")])
def test_loads_local_folder(models, name, family):
    m = models[name]
    assert (m.family, m.resolution, m.latent_channels, m.prediction_type) == (family, 32, 4, "epsilon")
    assert m.device == torch.device("cpu") and m.dtype == torch.float32
    assert not any(p.requires_grad for e in m.text_encoders for p in e.parameters())
    assert all(p.requires_grad for p in m.unet.parameters())


@pytest.mark.parametrize("name", ALL)
def test_sample_shape_range_and_batch_independence(models, name):
    m = models[name]
    prompts, seeds = ["a red cat", "a dog", "a red cat", "zzz"], [0, 1, 2, 3]
    batch = m.sample(prompts, seeds, SamplerConfig(**FAST))
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.float32 and batch.device.type == "cpu"
    assert 0.0 <= batch.min() and batch.max() <= 1.0 and batch.std() > 0.01
    for i in range(4):  # image i does not depend on its batch mates or on the batch size
        alone = m.sample([prompts[i]], [seeds[i]], SamplerConfig(**FAST))
        torch.testing.assert_close(alone[0], batch[i], atol=1e-5, rtol=0)
    chunked = m.sample(prompts, seeds, SamplerConfig(batch_size=3, **FAST))
    torch.testing.assert_close(chunked, batch, atol=1e-5, rtol=0)
    assert (batch[0] - batch[2]).abs().max() > 1e-3  # same prompt, other seed


def _out_of_memory_above(monkeypatch, module, name, rows: int, calls: list):
    """``module.name`` (a method of the model or its VAE) raising CUDA's out-of-memory error for more than ``rows``
    rows, as a GPU shared with other commands would; each call's row count goes to ``calls``."""
    real = getattr(module, name)

    def limited(x, *args, **kwargs):
        calls.append(len(x))
        if len(x) > rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x, *args, **kwargs)
    monkeypatch.setattr(module, name, limited)


def test_sampler_halves_its_batch_after_an_out_of_memory_error(models, monkeypatch):
    """A UNet batch that runs out of memory is sampled again in halves, and the rest of the call keeps the smaller
    batch: the same images as a call that started there (each image has its own seed), with one warning a halving."""
    m, prompts, seeds = models["clip"], ["a red cat", "a dog", "a cat", "zzz", "a tree"], [0, 1, 2, 3, 4]
    want = m.sample(prompts, seeds, SamplerConfig(batch_size=2, **FAST))
    calls = []
    _out_of_memory_above(monkeypatch, m, "predict", 4, calls)  # guided: 2 rows an image, so 2 images fit
    with pytest.warns(RuntimeWarning, match="out of memory at 4 images a UNet batch.*going on at 2") as caught:
        got = m.sample(prompts, seeds, SamplerConfig(batch_size=4, **FAST))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert len([w for w in caught if "out of memory" in str(w.message)]) == 1
    steps = FAST["steps"]  # one failed call at 4 images, then 2, 2 and the last 1
    assert calls == [8] + [4] * 2 * steps + [2] * steps
    calls.clear()  # a short batch halves from its own size: 3 images at batch 8 fail once (not at 8 and again at 4)
    with pytest.warns(RuntimeWarning, match="out of memory at 3 images.*going on at 1"):
        m.sample(prompts[:3], seeds[:3], SamplerConfig(batch_size=8, **FAST))
    assert calls == [6] + [2] * 3 * steps
    calls.clear()
    _out_of_memory_above(monkeypatch, m, "predict", 0, calls)
    with pytest.raises(torch.cuda.OutOfMemoryError), pytest.warns(RuntimeWarning):  # one image still too many
        m.sample(prompts[:2], seeds[:2], SamplerConfig(batch_size=2, **FAST))
    assert calls == [4, 2]


def test_sampler_decodes_in_smaller_calls_after_an_out_of_memory_error(models, monkeypatch):
    """The decoder's out-of-memory error keeps the denoised latents and halves only its calls: the UNet runs once."""
    m, prompts, seeds = models["clip"], ["a red cat", "a dog", "a cat", "zzz"], [0, 1, 2, 3]
    want = m.sample(prompts, seeds, SamplerConfig(batch_size=4, **FAST))
    decoded, predicted = [], []
    _out_of_memory_above(monkeypatch, m.vae, "decode", 1, decoded)
    _out_of_memory_above(monkeypatch, m, "predict", 99, predicted)
    with pytest.warns(RuntimeWarning, match="VAE decoder call"):
        got = m.sample(prompts, seeds, SamplerConfig(batch_size=4, vae_batch_size=4, **FAST))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert decoded == [4, 2, 1, 1, 1, 1] and predicted == [8] * FAST["steps"]


def test_progress_bar_counts_denoising_steps(models, monkeypatch):
    """A 64-image batch is minutes on a CPU: the bar moves once per denoising step, not per batch."""
    from scdpo.models import sampling

    bars = []

    class Recorded(sampling.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(sampling, "tqdm", Recorded)
    models["minilm"].sample(["a", "b", "c"], [0, 1, 2], SamplerConfig(**{**FAST, "progress": True}, batch_size=2))
    (bar,) = bars
    assert (bar.total, bar.n, bar.unit, bar.desc) == (6, 6, "step", "sampling 3 images")  # 2 batches x 3 steps
    models["minilm"].sample(["a"], [0], SamplerConfig(**FAST))
    assert bars[1].disable
    models["minilm"].sample(["a"], [0], SamplerConfig(**{**FAST, "progress": True}, guard="sld:weak"))
    assert (bars[2].total, bars[2].n) == (3, 3)  # a guard's steps count too (the bar stood still under one)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmsolver++"])
def test_schedulers_are_deterministic(models, scheduler):
    cfg = SamplerConfig(scheduler=scheduler, **FAST)
    a = models["clip"].sample(["a cat", "a dog"], [5, 6], cfg)
    assert a.shape == (2, 3, 32, 32)
    assert torch.equal(a, models["clip"].sample(["a cat", "a dog"], [5, 6], cfg))


@pytest.mark.parametrize("name", ALL)
def test_guidance_and_negative_prompt_change_output(models, name):
    m, p, s = models[name], ["a red cat"], [7]
    base = m.sample(p, s, SamplerConfig(guidance_scale=5.0, **FAST))
    unguided = m.sample(p, s, SamplerConfig(guidance_scale=1.0, **FAST))
    negative = m.sample(p, s, SamplerConfig(guidance_scale=5.0, negative_prompt="blue dog", **FAST))
    assert (base - unguided).abs().max() > 1e-4
    assert (base - negative).abs().max() > 1e-4


def test_sample_sizes(models):
    m = models["sdxl"]
    assert m.sample(["a"], [0], SamplerConfig(height=16, width=48, **FAST)).shape == (1, 3, 16, 48)
    with pytest.raises(ValueError, match="33x32"):
        m.sample(["a"], [0], SamplerConfig(height=33, **FAST))
    with pytest.raises(ValueError, match="scheduler"):
        SamplerConfig(scheduler="pndm")
    with pytest.raises(ValueError, match="seed"):
        m.sample(["a", "b"], [0], SamplerConfig(**FAST))
    with pytest.raises(ValueError, match="3 negative prompts for 2 prompts"):
        m.sample(["a", "b"], [0, 1], SamplerConfig(**FAST, negative_prompt=["x", "y", "z"]))


def test_sdxl_conditioning(models):
    m = models["sdxl"]
    c = m.encode_prompts(["a", "b", "c"])
    assert c.context.shape == (3, testing.CLIP_MAX_LENGTH, 64)  # both encoders' features concatenated
    assert c.pooled.shape == (3, 24)
    assert c.add_time_ids.tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 3
    assert m.encode_prompts(["a"], size=(16, 48)).add_time_ids.tolist() == [[16.0, 48.0, 0.0, 0.0, 16.0, 48.0]]
    u = m.unconditional(2)  # diffusers' force_zeros_for_empty_prompt
    assert len(u) == 2 and not u.context.any() and not u.pooled.any()
    assert m.unconditional(2, "ugly").context.abs().sum() > 0
    per = m.unconditional(2, ["ugly", None])  # one negative prompt per image; None: zeros, as above
    assert torch.equal(per.context[0], m.unconditional(1, "ugly").context[0]) and not per.context[1].any()
    assert torch.equal(per.pooled[0], m.unconditional(1, "ugly").pooled[0]) and not per.pooled[1].any()
    with pytest.raises(ValueError, match="1 negative prompts for 2 images"):
        m.unconditional(2, ["ugly"])
    both = Conditioning.cat([u, c])
    assert len(both) == 5 and both.add_time_ids.shape == (5, 6)
    assert models["clip"].encode_prompts(["a"]).added_cond_kwargs is None


def test_noise_target_and_add_noise_epsilon(models):
    m = models["clip"]
    x, noise, t = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16), torch.tensor([0, 400, 999])
    assert torch.equal(m.noise_target(x, noise, t), noise)
    ab = m.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(m.add_noise(x, noise, t), ab.sqrt() * x + (1 - ab).sqrt() * noise)


def test_noise_target_v_prediction(tmp_path):
    m = T2IModel.from_pretrained(testing.tiny_sd_pipeline(tmp_path / "v", prediction_type="v_prediction"),
                                 device="cpu")
    assert m.prediction_type == "v_prediction"
    x, noise, t = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16), torch.tensor([10, 700])
    ab = m.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(m.noise_target(x, noise, t), ab.sqrt() * noise - (1 - ab).sqrt() * x)
    torch.testing.assert_close(m.noise_target(x, noise, t), m.noise_scheduler.get_velocity(x, noise, t))
    assert m.sample(["a"], [0], SamplerConfig(**FAST)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name", ALL)
def test_predict_shape_and_gradients(models, name):
    m = models[name]
    latents = torch.randn(2, 4, 16, 16)
    pred = m.predict(m.add_noise(latents, torch.randn_like(latents), torch.tensor([3, 900])),
                     torch.tensor([3, 900]), m.encode_prompts(["a cat", "a dog"]))
    assert pred.shape == latents.shape
    pred.square().mean().backward()
    assert all(p.grad is not None for p in m.unet.parameters() if p.requires_grad)
    m.unet.zero_grad(set_to_none=True)


def test_encode_decode_images(models):
    m = models["minilm"]
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    z = m.encode_images(images)
    assert z.shape == (3, 4, 16, 16)
    torch.testing.assert_close(z, m.encode_images(images))  # posterior mean: deterministic
    g = torch.Generator().manual_seed(0)
    assert not torch.allclose(z, m.encode_images(images, g, sample=True))
    torch.testing.assert_close(m.encode_images(images, batch_size=1), z)
    out = m.decode_latents(z, batch_size=2)
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("name", ALL)
def test_prompt_cache(models, name, monkeypatch):
    m = models[name]
    m.clear_prompt_cache()
    calls = []
    hooks = [e.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
             for e in m.text_encoders]
    try:
        first = m.encode_prompts(["cache a", "cache b", "cache a"])
        assert calls == [2] * len(m.text_encoders)  # one batched call, duplicates encoded once
        again = m.encode_prompts(["cache b", "cache a"])
        assert len(calls) == len(m.text_encoders)  # cache hit: no encoder call
        torch.testing.assert_close(again.context, first.context[[1, 0]])
        monkeypatch.setattr(m, "prompt_cache_size", 2, raising=False)
        m.encode_prompts(["cache c", "cache d", "cache e"])
        assert len(m._prompt_cache) == 2
    finally:
        for h in hooks:
            h.remove()


def test_text_encoder_calls_take_the_devices_batch(models, monkeypatch):
    m = models["minilm"]
    prompts = [f"batch {i}" for i in range(7)]
    m.clear_prompt_cache()
    whole = m.encode_prompts(prompts).context
    calls = []
    hook = m.text_encoders[0].register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        m.clear_prompt_cache()
        monkeypatch.setattr(m, "text_batch_size", {"cpu": 3, "cuda": 512}, raising=False)
        torch.testing.assert_close(m.encode_prompts(prompts).context, whole)
        assert calls == [3, 3, 1]
    finally:
        hook.remove()
        m.clear_prompt_cache()


@pytest.mark.parametrize("name", ["clip", "minilm"])
def test_long_prompt_warns_once_and_truncates(models, name):
    m = models[name]
    long = "a very long prompt " + "with many many words " * 20
    with pytest.warns(UserWarning, match="a very long prompt") as record:
        c = m.encode_prompts([long, "short"])
    assert len(record) == 1 and "truncated" in str(record[0].message)
    assert c.context.shape[1] == m.tokenizers[0].model_max_length
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.encode_prompts([long])  # cached: no second warning


def test_half_precision_keeps_upcast_vae_in_fp32(paths):
    m = T2IModel.from_pretrained(paths["sdxl"], device="cpu", dtype=torch.bfloat16)
    assert m.unet.dtype == torch.bfloat16 and m.vae.dtype == torch.float32  # vae.config.force_upcast
    z = m.encode_images(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert z.dtype == torch.bfloat16
    assert m.predict(z, torch.tensor([1, 2]), m.encode_prompts(["a", "b"])).dtype == torch.bfloat16
    images = m.sample(["a"], [0], SamplerConfig(**FAST))
    assert images.dtype == torch.float32 and images.shape == (1, 3, 32, 32)


def test_errors_name_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        T2IModel.from_pretrained(missing)
    empty = tmp_path / "not-a-pipeline"
    empty.mkdir()
    with pytest.raises(ValueError, match="not-a-pipeline.*model_index.json"):
        T2IModel.from_pretrained(empty)
    (empty / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    with pytest.raises(ValueError, match="not-a-pipeline.*FluxPipeline"):
        T2IModel.from_pretrained(empty)


@pytest.mark.parametrize("name", ["minilm", "sdxl"])
def test_save_pretrained_round_trip(models, name, tmp_path):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    m = models[name]
    out = tmp_path / "saved"
    m.save_pretrained(out)
    m.save_pretrained(out)  # overwriting works and leaves no temporary folders
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]
    cls = StableDiffusionXLPipeline if name == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(out, **({"safety_checker": None} if name != "sdxl" else {}))
    cond = m.encode_prompts(["a cat"])
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    with torch.no_grad():
        expected = m.predict(x, t, cond)
        got = pipe.unet(x, t, encoder_hidden_states=cond.context, added_cond_kwargs=cond.added_cond_kwargs).sample
    torch.testing.assert_close(got, expected)
    reloaded = T2IModel.from_pretrained(out, device="cpu")
    torch.testing.assert_close(reloaded.encode_prompts(["a cat"]).context, cond.context)


def test_registry_materialises_emojiworld(tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline
    from transformers import BertModel

    assets = testing.tiny_emojiworld_assets(tmp_path / "assets")
    assert not (assets / "text_encoder").exists()
    cache = tmp_path / "cache"
    folder = resolve_model_path("emojiworld", assets_dir=assets, cache_dir=cache)
    assert folder.parent == cache / "models" and folder.name.startswith("emojiworld-")
    assert (folder / "text_encoder" / "model.safetensors").is_file()
    assert resolve_model_path("emojiworld", assets_dir=assets, cache_dir=cache) == folder  # idempotent
    assert [p.name for p in (cache / "models").iterdir()] == [folder.name]

    (folder / "unet").unlink()  # a damaged folder is rebuilt
    assert resolve_model_path("emojiworld", assets_dir=assets, cache_dir=cache) == folder
    assert (folder / "unet").exists() and len(list((cache / "models").iterdir())) == 1

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    assert isinstance(pipe.text_encoder, BertModel) and pipe.tokenizer.model_max_length == 32

    monkeypatch.setenv("SCDPO_EMOJIWORLD_ASSETS", str(assets))
    monkeypatch.setenv("SCDPO_CACHE", str(cache))
    m = T2IModel.from_pretrained("emojiworld", device="cpu")
    assert m.family == "sd" and m.sample(["a cat"], [0], SamplerConfig(**FAST)).shape == (1, 3, 32, 32)
    assert resolve_model_path(str(assets)) == assets  # a plain path is returned as is

    monkeypatch.setenv("SCDPO_EMOJIWORLD_ASSETS", str(tmp_path / "missing"))
    with pytest.raises(ModelNotShippedError, match="not been shipped"):
        resolve_model_path("emojiworld")
