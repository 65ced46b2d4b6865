"""SD3 (rectified flow) through the family adapters, on a tiny random SD3 pipeline: prompt encoding
and sampling agree with diffusers' own StableDiffusion3Pipeline, the forward process and the
velocity target are the flow-matching ones, a Diffusion-DPO step on the velocity error orders the
pair, the LoRA the trainer writes loads with StableDiffusion3Pipeline.load_lora_weights, and the
attacks' token-level encoding agrees with encode_prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdpo.models import testing
from scdpo.models.families import FAMILIES, get_family
from scdpo.models.t2i import T2IModel
from scdpo.train import losses
from scdpo.train import model as tm
from scdpo.train.config import LORA_TARGETS, TrainConfig
from scdpo.train.data import PreferencePairs
from scdpo.train.losses import LossState, PairBatchInfo
from scdpo.train.step import pair_errors, step_generator
from scdpo.train.trainer import train

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"),
              pytest.mark.usefixtures("one_thread")]
SIZE = testing.IMAGE_SIZE


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return testing.tiny_sd3_pipeline(tmp_path_factory.mktemp("sd3") / "sd3")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    from test_trainer import write_pairs

    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.parquet", n=12)


def diffusers_pipe(path):
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(path)


def test_registry_names_each_family_once():
    assert set(FAMILIES) == {"sd", "sdxl", "sd3"}
    assert get_family("sd3").pipeline_class == "StableDiffusion3Pipeline"
    with pytest.raises(ValueError, match="unknown model family 'flux'"):
        get_family("flux")


def test_encoding_matches_diffusers(sd3):
    m = T2IModel.from_pretrained(sd3, device="cpu")
    assert (m.family, m.prediction_type) == ("sd3", "flow")
    cond = m.encode_prompts(["a red cat", "dog"])
    # 16 CLIP tokens (L and G side by side, zero-padded to T5's width 32) then 16 T5 tokens
    assert cond.context.shape == (2, 32, 32) and cond.pooled.shape == (2, 32) and cond.add_time_ids is None
    with torch.no_grad():
        embeds, _, pooled, _ = diffusers_pipe(sd3).encode_prompt(
            ["a red cat", "dog"], None, None, do_classifier_free_guidance=False, max_sequence_length=16)
    torch.testing.assert_close(cond.context, embeds)
    torch.testing.assert_close(cond.pooled, pooled)


@pytest.mark.parametrize("scheduler", ["euler", "dpmsolver++"])
def test_sampling_is_seeded_and_euler_matches_diffusers(sd3, scheduler):
    m = T2IModel.from_pretrained(sd3, device="cpu")
    kw = dict(steps=3, guidance_scale=4.0, scheduler=scheduler, progress=False)
    both = m.sample(["a red cat", "dog"], [1, 2], **kw)
    alone = m.sample(["dog"], [2], **kw)
    assert both.shape == (2, 3, SIZE, SIZE) and 0 <= both.min() and both.max() <= 1
    torch.testing.assert_close(both[1], alone[0], rtol=0, atol=1e-5)  # depends on (prompt, seed) only
    assert (both[0] - m.sample(["a red cat"], [3], **kw)[0]).abs().max() > 1e-3  # another seed
    if scheduler == "euler":  # SD3's own sampler: diffusers' pipeline from the same initial noise
        noise = torch.randn(4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(2))[None]
        with torch.no_grad():
            ref = diffusers_pipe(sd3)("dog", latents=noise, num_inference_steps=3, guidance_scale=4.0,
                                      max_sequence_length=16, output_type="pt").images
        torch.testing.assert_close(alone, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="flow-matching"):
        m.sample(["dog"], [2], steps=2, scheduler="ddim", progress=False)


def test_forward_process_and_velocity_target(sd3):
    m = T2IModel.from_pretrained(sd3, device="cpu")
    x, noise = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    t = torch.tensor([0.0, 750.0])  # sigma = t / 1000
    noisy = m.add_noise(x, noise, t)
    torch.testing.assert_close(noisy[0], x[0])
    torch.testing.assert_close(noisy[1], 0.25 * x[1] + 0.75 * noise[1])
    torch.testing.assert_close(m.noise_target(x, noise, t), noise - x)  # d x_t / d sigma
    gen = torch.Generator().manual_seed(0)
    drawn = m.sample_timesteps(4000, gen)
    schedule = set(m.noise_scheduler.timesteps.tolist())
    assert set(drawn.tolist()) <= schedule and len(set(drawn.tolist())) > 900
    low = m.sample_timesteps(200, gen, 0, 10)  # the 10 least noisy training timesteps
    assert set(low.tolist()) == set(sorted(schedule)[:10])


def test_dpo_step_on_the_velocity_error(sd3, pairs_file):
    torch.manual_seed(0)
    m = T2IModel.from_pretrained(sd3, device="cpu")
    tm.add_lora(m.unet, 4, 8.0, LORA_TARGETS)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = torch.utils.data.default_collate([PreferencePairs(pairs_file, SIZE)[i] for i in range(4)])
    cfg = TrainConfig(model="x", dataset="x", out="x", loss="dpo", beta=500.0)

    def errors():
        return pair_errors(m, m.unet, ref, batch, step_generator(0, 0, 0))

    e_w, e_l, r_w, r_l, drift, _ = errors()
    torch.testing.assert_close(e_w, r_w, rtol=0, atol=0)  # LoRA B = 0: policy == reference
    assert torch.count_nonzero(drift) == 0 and (e_w != e_l).all()
    opt = torch.optim.AdamW([p for p in m.unet.parameters() if p.requires_grad], lr=1e-3)
    loss, stats = losses.dpo_loss(e_w, e_l, r_w, r_l, PairBatchInfo(), cfg, LossState())
    loss.mean().backward()
    opt.step()
    e_w2, e_l2, r_w2, r_l2, drift2, _ = errors()
    torch.testing.assert_close(r_w2, r_w, rtol=0, atol=0)  # the reference did not move
    assert (drift2 > 0).all()
    _, stats2 = losses.dpo_loss(e_w2, e_l2, r_w2, r_l2, PairBatchInfo(), cfg, LossState())
    assert stats2["margin"] > stats["margin"]  # the winner's velocity error fell relative to the loser's


def test_lora_run_loads_in_plain_diffusers(sd3, pairs_file, tmp_path):
    from test_trainer import FAST

    out = tmp_path / "run"
    metrics = train(TrainConfig(model=str(sd3), dataset=str(pairs_file), out=str(out), max_steps=1, lr=1e-2,
                                lora_rank=4, lora_alpha=8, merge=True, **FAST))
    assert metrics["steps"] == 1 and np.isfinite(metrics["loss"])
    pipe = diffusers_pipe(sd3)
    policy = T2IModel.from_pretrained(sd3, device="cpu").load_lora(out)  # our loader: fused
    merged = T2IModel.from_pretrained(out / "pipeline", device="cpu")  # --merge
    cond = policy.encode_prompts(["a big cat", "a blue cat"])
    x, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([10.0, 700.0])

    def out_of(transformer):
        with torch.no_grad():
            return transformer(hidden_states=x, timestep=t, encoder_hidden_states=cond.context,
                               pooled_projections=cond.pooled).sample

    before = out_of(pipe.transformer)
    pipe.load_lora_weights(str(out))
    after = out_of(pipe.transformer)
    assert (after - before).abs().max() > 1e-5
    torch.testing.assert_close(after, out_of(policy.unet), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after, out_of(merged.unet), rtol=1e-4, atol=1e-5)


def test_attack_encoding_matches_encode_prompts(sd3):
    from scdpo.models.token_ids import encode_texts

    m = T2IModel.from_pretrained(sd3, device="cpu")
    prompts = ["a red cat", "a dog on a hill"]
    ours, cached = encode_texts(m, prompts), m.encode_prompts(prompts)
    torch.testing.assert_close(ours.context, cached.context)
    torch.testing.assert_close(ours.pooled, cached.pooled)
