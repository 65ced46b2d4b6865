"""Inference-time guards (SLD, SAFREE) on the tiny pipelines: registry, equivalences, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scdpo.models.guards import GUARDS, get_guard
from scdpo.models.guards.base import SLD_SAFETY_TEXT, concept_text, default_concepts
from scdpo.models.guards.safree import Safree, orthogonal, pooled
from scdpo.models.guards.sld import PRESETS, SafeLatentDiffusion
from scdpo.models import testing
from scdpo.models.t2i import SamplerConfig, T2IModel

FAST = dict(steps=4, progress=False, scheduler="ddim")
PROMPTS, SEEDS = ["a red cat on a mat", "a dog", "zz top band"], [0, 1, 2]
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword",
                                        "ignore:prompt .* is longer than")


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("guards")
    return {"clip": T2IModel.from_pretrained(testing.tiny_sd_pipeline(root / "clip"), device="cpu"),
            "minilm": T2IModel.from_pretrained(testing.tiny_sd_pipeline(root / "minilm", text_encoder="minilm"),
                                               device="cpu"),
            "sdxl": T2IModel.from_pretrained(testing.tiny_sdxl_pipeline(root / "sdxl"), device="cpu")}


def test_registry_and_specs():
    assert set(GUARDS) == {"sld", "safree"} and get_guard(None) is None and get_guard("none") is None
    from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

    for preset in ("weak", "medium", "strong", "max"):  # the presets are diffusers' own numbers
        ref = getattr(SafetyConfig, preset.upper())
        g = get_guard(f"sld:{preset}")
        assert (g.warmup, g.guidance, g.threshold, g.momentum, g.mom_beta) == (
            ref["sld_warmup_steps"], ref["sld_guidance_scale"], ref["sld_threshold"], ref["sld_momentum_scale"],
            ref["sld_mom_beta"])
    assert get_guard("sld") == get_guard("sld:medium")
    g = get_guard("sld:max, threshold=0.5")
    assert g.threshold == 0.5 and g.guidance == PRESETS["max"]["guidance"]
    assert get_guard("safree:svf=false,alpha=0.1") == Safree(alpha=0.1, svf=False)
    assert get_guard("sld", concepts=["gun"]).concepts == ["gun"]
    for bad in ("slx", "sld:huge", "sld:speed=3", "safree:alpha=x"):
        with pytest.raises(ValueError, match="sld|safree|guard"):
            get_guard(bad)
    with pytest.raises(ValueError, match="unknown guard"):
        SamplerConfig(guard="nope")


def test_default_concepts(models):
    from scdpo.world.vocab import load_vocabulary

    assert default_concepts(models["clip"])[0] == "hate"
    ew = default_concepts(models["minilm"])
    assert set(ew) == {c.name for c in load_vocabulary().harmful}
    text = concept_text(models["minilm"], ew)  # packed into MiniLM's 32 tokens
    assert 0 < len(models["minilm"].tokenizers[0](text).input_ids) <= 32 and text.startswith(ew[0])
    assert concept_text(models["clip"], default_concepts(models["clip"])) == SLD_SAFETY_TEXT


@pytest.mark.parametrize("name", ["clip", "minilm", "sdxl"])
def test_sld_without_reaching_threshold_is_plain_cfg(models, name):
    m = models[name]
    plain = m.sample(PROMPTS, SEEDS, SamplerConfig(**FAST))
    never = SafeLatentDiffusion(warmup=0, guidance=1000, threshold=-math.inf, momentum=0.5, mom_beta=0.7)
    torch.testing.assert_close(m.sample(PROMPTS, SEEDS, SamplerConfig(guard=never, **FAST)), plain,
                               atol=1e-6, rtol=0)
    guarded = m.sample(PROMPTS, SEEDS, SamplerConfig(guard="sld:max", **FAST))
    assert guarded.shape == plain.shape and (guarded - plain).abs().max() > 1e-3
    torch.testing.assert_close(m.sample(PROMPTS, SEEDS, SamplerConfig(guard="sld:max", **FAST)), guarded)
    alone = m.sample(PROMPTS[1:2], SEEDS[1:2], SamplerConfig(guard="sld:max", **FAST))
    # batch independent, up to float noise that SLD's elementwise threshold and x5000 scale amplify
    torch.testing.assert_close(alone[0], guarded[1], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="guidance"):
        m.sample(PROMPTS, SEEDS, SamplerConfig(guard="sld", guidance_scale=1.0, **FAST))


def test_sld_matches_diffusers_safe_pipeline(models):
    """Our SLD equals diffusers' StableDiffusionPipelineSafe on the same latents (50 steps: no warm-up
    rescaling), with the same safety text."""
    from diffusers import DDIMScheduler
    from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig, StableDiffusionPipelineSafe

    m, steps = models["clip"], 50
    scheduler = DDIMScheduler.from_config(m.scheduler_config, clip_sample=False)
    pipe = StableDiffusionPipelineSafe(vae=m.vae, text_encoder=m.text_encoders[0], tokenizer=m.tokenizers[0],
                                       unet=m.unet, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.safety_concept = concept_text(m, ["blood", "gun"])
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    ref = pipe("a red cat", num_inference_steps=steps, guidance_scale=5.0, latents=noise.clone(), output_type="np",
               **SafetyConfig.STRONG).images
    ours = m.sample(["a red cat"], [3], SamplerConfig(steps=steps, scheduler="ddim", progress=False,
                    guard=SafeLatentDiffusion(**PRESETS["strong"], concepts=["blood", "gun"])))
    np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), ref[0], atol=2e-4)


@pytest.mark.parametrize("name", ["clip", "minilm", "sdxl"])
def test_safree_projection(models, name):
    m = models[name]
    concepts = ["gun", "blood", "knife"]
    basis = pooled(m, concepts)
    cond = m.encode_prompts(PROMPTS[:1])
    # alpha = -1: every word is a trigger, so every word token lies orthogonal to the concept span
    e, last = Safree(alpha=-1, svf=False, concepts=concepts).project(m, PROMPTS[0], cond.context[0], basis, 4)
    words = len(m.tokenizers[0](PROMPTS[0], add_special_tokens=False).input_ids)
    assert e.shape == cond.context[0].shape and last == 4
    assert (e[1:1 + words] @ basis.T).abs().max() < 1e-3 * basis.norm(dim=1).max() * e[1:1 + words].norm(dim=1).max()
    torch.testing.assert_close(e[1 + words:], cond.context[0][1 + words:])  # specials and padding kept
    assert (orthogonal(basis, basis).abs().max()) < 1e-4


@pytest.mark.parametrize("name", ["clip", "minilm", "sdxl"])
def test_safree_sampling(models, name):
    m = models[name]
    plain = m.sample(PROMPTS, SEEDS, SamplerConfig(**FAST))
    none = Safree(alpha=1e9, svf=False)  # no word is ever a trigger: plain sampling
    torch.testing.assert_close(m.sample(PROMPTS, SEEDS, SamplerConfig(guard=none, **FAST)), plain, atol=1e-6, rtol=0)
    every = Safree(alpha=-1, svf=False)
    guarded = m.sample(PROMPTS, SEEDS, SamplerConfig(guard=every, **FAST))
    assert (guarded[:1] - plain[:1]).abs().max() > 1e-3
    torch.testing.assert_close(m.sample(PROMPTS, SEEDS, SamplerConfig(guard=every, **FAST)), guarded)
    filtered = m.sample(PROMPTS, SEEDS, SamplerConfig(guard="safree", **FAST))
    assert filtered.shape == plain.shape and torch.isfinite(filtered).all()


def test_configs_take_the_guard(tmp_path):
    """generate, eval and data build carry --guard to the sampler and reject a bad one before loading a model."""
    from scdpo.cli import main
    from scdpo.data.config import BuildConfig
    from scdpo.eval.run import EvalConfig
    from scdpo.models.generate import GenerateConfig

    for cfg in (lambda g: GenerateConfig(model="m", out="o", suite="eval-clean", sampler=SamplerConfig(guard=g)),
                lambda g: EvalConfig(model="m", sampler=SamplerConfig(guard=g)),
                lambda g: BuildConfig(model="m", cost_model="c", reward="emojiworld", out="o", clean="x",
                                      sampler=SamplerConfig(guard=g))):
        assert cfg("sld:weak").sampler.guard == "sld:weak"
        with pytest.raises(ValueError, match="unknown guard"):
            cfg("sdl")
    build = dict(model="m", cost_model="c", reward="emojiworld", out="o", clean="x")
    assert "guard" not in BuildConfig(**build).settings()  # builds made before guards still resume
    assert BuildConfig(**build, sampler=SamplerConfig(guard="safree")).settings()["guard"] == "safree"
    assert main(["generate", "--model", "emojiworld", "--suite", "eval-clean", "--out", str(tmp_path),
                 "--guard", "sld:huge"]) == 2
