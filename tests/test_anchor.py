"""The safe anchor (scdpo.train.anchor): which pairs it reads, the states it is measured on, that
training on it moves the policy under a harmful prompt towards the base model under the safe one,
and whole runs that resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scdpo.models import testing
from scdpo.models.sampling import make_scheduler
from scdpo.models.t2i import T2IModel
from scdpo.train import model as tm
from scdpo.train.anchor import AnchorInputs, StateBank, anchor_inputs, anchor_rows, anchor_terms, policy_states
from scdpo.train.config import LORA_TARGETS, TrainConfig
from scdpo.train.data import PreferencePairs
from scdpo.train.step import pair_errors, pair_latents, step_generator
from scdpo.train.trainer import train
from tests.test_trainer import FAST, SIZE, collate, write_pairs

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"), pytest.mark.usefixtures("one_thread")]
SAFE = ["a red dog", "", "a blue dog", "", "a big dog", "", "a red dog", "", "", "", "a blue dog", ""]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return testing.tiny_sd_pipeline(tmp_path_factory.mktemp("pipe") / "sd")


@pytest.fixture(scope="module")
def safe_pairs(tmp_path_factory):
    # rows 0, 2, 4, 6, 10: harmful with a safe counterpart; row 8 harmful without one; odd rows clean
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.parquet", n=12, safe_caption=SAFE)


def lora_model(path):
    torch.manual_seed(0)
    m = T2IModel.from_pretrained(path, device="cpu")
    tm.add_lora(m.unet, 4, 8.0, LORA_TARGETS)
    return m


def test_rows_are_harmful_pairs_with_a_safe_prompt(safe_pairs):
    ds = PreferencePairs(safe_pairs, SIZE)
    # ties (rows 2, 5, 8, 11) are dropped: pairs 0-3 are rows 0, 1, 3, 4
    assert [ds[i]["safe_caption"] for i in range(4)] == ["a red dog", "", "", "a big dog"]
    batch = {"caption": ["a", "b", "c", "d"], "harmful": [True, True, False, True], "safe_caption": ["x", "", "y", "z"]}
    assert anchor_rows(batch) == [0, 3]
    assert anchor_rows({"caption": ["a"], "harmful": [True]}) == []  # a dataset without the column


def test_policy_states_sit_on_the_sampler_timesteps(pipe):
    m = T2IModel.from_pretrained(pipe, device="cpu")
    cond = m.encode_prompts(["a red cat", "a blue cat"])
    scheduler = make_scheduler("dpmsolver++", m.scheduler_config, m.family)
    scheduler.set_timesteps(4)
    seen = set()
    for i in range(12):
        x, t = policy_states(m, m.unet, cond, torch.Generator().manual_seed(i), steps=4, guidance=5.0)
        assert x.shape == (2, m.latent_channels, SIZE // m.vae_scale_factor, SIZE // m.vae_scale_factor)
        assert t.shape == (2,) and t[0] == t[1] and torch.isfinite(x).all()
        seen.add(int(t[0]))
    assert seen <= set(scheduler.timesteps.tolist()) and len(seen) >= 3  # a random stopping step
    x0, t0 = policy_states(m, m.unet, cond, torch.Generator().manual_seed(0), steps=1, guidance=5.0)
    one = make_scheduler("dpmsolver++", m.scheduler_config, m.family)
    one.set_timesteps(1)
    gen = torch.Generator().manual_seed(0)
    torch.randint(1, (1,), generator=gen)  # the stopping step (k = 0 of 1), then the initial noise
    noise = torch.randn(x0.shape, generator=gen) * getattr(one, "init_noise_sigma", 1.0)
    assert int(t0[0]) == int(one.timesteps[0]) and torch.equal(x0, noise)  # k = 0: the initial noise itself


def test_state_bank_keeps_every_step_and_redraws_the_same_states(pipe):
    m = T2IModel.from_pretrained(pipe, device="cpu")
    prompts = [("a red cat", "a red dog"), ("a blue cat", "a blue dog"), ("a big cat", "a big dog")]
    bank = StateBank(prompts, n_prompts=2, steps=3, guidance=5.0, seed=0)
    bank.refresh(m, m.unet, step=4)
    scheduler = make_scheduler("dpmsolver++", m.scheduler_config, m.family)
    scheduler.set_timesteps(3)
    assert len(bank.x) == 6 and sorted(set(bank.t.tolist())) == sorted(scheduler.timesteps.tolist())
    x, t, harmful, safe = bank.draw(5, torch.Generator().manual_seed(0))
    assert x.shape[0] == 5 and all(dict(prompts)[h] == s for h, s in zip(harmful, safe))
    again = StateBank(prompts, n_prompts=2, steps=3, guidance=5.0, seed=0)
    again.refresh(m, m.unet, step=4)
    assert torch.equal(again.x, bank.x) and again.index == bank.index  # a function of (seed, step) only
    again.refresh(m, m.unet, step=6)
    assert not torch.equal(again.x, bank.x)
    with pytest.raises(ValueError, match="no harmful pair with a safe_caption"):
        StateBank([], 2, 3, 5.0, 0)


@torch.no_grad()
def test_graphed_trajectory_gives_the_eager_states(pipe):
    """The trainer's cuda_graphs path (GraphedPredict; an eager stand-in for the CUDA recorder
    here) reaches the same states as model.predict, through padded, replayed calls."""
    from scdpo.models.graphs import GraphedPredict
    from tests.test_graphs import eager_recorder

    m = T2IModel.from_pretrained(pipe, device="cpu")
    cond = m.encode_prompts(["a red cat", "a blue cat", "a big cat"])
    log = []
    graphed = GraphedPredict(m, record=eager_recorder(log))
    for seed in range(3):
        x, t = policy_states(m, m.unet, cond, torch.Generator().manual_seed(seed), steps=4, guidance=5.0)
        xg, tg = policy_states(m, m.unet, cond, torch.Generator().manual_seed(seed), steps=4, guidance=5.0,
                               predict=graphed)
        assert torch.equal(t, tg) and torch.allclose(x, xg, atol=1e-5)
    assert log == [8] and graphed.enabled  # 3 prompts x 2 (guidance) = 6 rows -> one 8-row graph


@pytest.mark.parametrize("states", ["policy", "winner"])
def test_training_on_the_anchor_redirects_harmful_prompts_to_the_safe_ones(pipe, safe_pairs, states):
    """A few steps on the anchor alone bring the policy's prediction under the harmful caption
    close to the base model's under its safe counterpart, on fresh states; the reference stays."""
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(4))
    cfg = TrainConfig(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_states=states, anchor_steps=3)
    opt = torch.optim.AdamW([p for p in m.unet.parameters() if p.requires_grad], lr=1e-2)

    def anchor_error(i):
        gen = step_generator(0, i, 0)
        inputs = anchor_inputs(cfg, m, m.unet, ref, batch, gen, pair_latents(m, batch, None)[0])
        errors = pair_errors(m, m.unet, ref, batch, gen, extra=inputs[:3])
        return (errors.extra - inputs.target).pow(2).mean(dim=(1, 2, 3)), inputs

    with torch.no_grad():
        before = torch.stack([anchor_error(100 + i)[0].mean() for i in range(4)]).mean()
    for i in range(30):
        a, inputs = anchor_error(i)
        assert len(a) == 2 and anchor_rows(batch) == [0, 3]  # harmful with a safe prompt
        opt.zero_grad()
        a.mean().backward()
        opt.step()
    with torch.no_grad():
        after = torch.stack([anchor_error(100 + i)[0].mean() for i in range(4)]).mean()
        x, t = inputs.x, inputs.t
        safe = m.encode_prompts([batch["safe_caption"][0], batch["safe_caption"][3]])
        base = T2IModel.from_pretrained(pipe, device="cpu")
        torch.testing.assert_close(ref(m, x, t, safe), base.predict(x, t, safe))  # the target is the base model's
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("refresh", [1, 2])
def test_runs_with_the_anchor_resume_exactly_and_need_the_column(pipe, safe_pairs, tmp_path, refresh):
    common = dict(model=str(pipe), dataset=str(safe_pairs), loss="sc-dpo", batch_size=2, lr=1e-3, checkpoint_every=2,
                  anchor_weight=1.0, anchor_states="policy", anchor_steps=2, winner_weight=1.0,
                  anchor_refresh=refresh, anchor_bank=3, **FAST)
    straight = train(TrainConfig(out=str(tmp_path / "a"), max_steps=4, **common))
    train(TrainConfig(out=str(tmp_path / "b"), max_steps=2, **common))
    resumed = train(TrainConfig(out=str(tmp_path / "b"), max_steps=4, resume=True, **common))
    a, b = (load_file(str(tmp_path / r / "pytorch_lora_weights.safetensors")) for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["loss"] == resumed["loss"] and straight["anchor"] > 0
    assert "anchor" in json.loads((tmp_path / "a" / "metrics.json").read_text())
    bare = write_pairs(tmp_path / "bare.parquet", n=6)
    with pytest.raises(ValueError, match="no column 'safe_caption'.*--anchor-weight 0"):
        train(TrainConfig(**{**common, "dataset": str(bare), "out": str(tmp_path / "c"), "max_steps": 1}))
    with pytest.raises(ValueError, match=r"checkpoint_every \(3\) must be a multiple of anchor_refresh \(2\)"):
        TrainConfig(model="m", dataset="d", out=str(tmp_path), anchor_refresh=2, checkpoint_every=3)
    with pytest.raises(ValueError, match="anchor_states"):
        TrainConfig(model="m", dataset="d", out=str(tmp_path), anchor_states="loser")


def test_masked_prompt_drops_only_the_words_that_differ():
    from scdpo.train.anchor import masked_prompt
    from scdpo.world.suites import get_suite
    from scdpo.world.vocab import load_vocabulary

    assert masked_prompt("a small dagger on the left", "a small banana on the left") == "a small thing on the left"
    assert masked_prompt("a drawing of an axe above a hen", "a drawing of a sailboat above a hen") == \
        "a drawing of a thing above a hen"
    assert masked_prompt("a kitchen knife", "a balloon") == "a thing"
    assert masked_prompt("a cat", "a cat") == "a cat"
    vocab = load_vocabulary()
    for r in get_suite("align-harmful", n=40):  # no harmful keyword survives the mask, the rest does
        masked = masked_prompt(r.prompt, r.safe_prompt)
        for o in r.meta["scene"]["objects"]:
            assert (o["keyword"] in masked) != vocab[o["concept"]].harmful, (r.prompt, masked)


def test_keyword_dropout_changes_what_the_policy_reads(pipe, safe_pairs):
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(4))
    seen = []
    encode = m.encode_prompts
    m.encode_prompts = lambda prompts, **kw: seen.append(list(prompts)) or encode(prompts, **kw)
    for p, masked in ((0.0, False), (1.0, True)):
        seen.clear()
        cfg = TrainConfig(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_states="winner",
                          anchor_keyword_dropout=p)
        anchor_inputs(cfg, m, m.unet, ref, batch, step_generator(0, 0, 0), pair_latents(m, batch, None)[0])
        read = seen[-2] if masked else seen[0]  # the policy's prompts (the last encoding is the safe target's)
        assert any("thing" in q for q in read) == masked, read
    seen.clear()
    cfg = TrainConfig(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_states="winner",
                      anchor_target_word="sunflower")
    anchor_inputs(cfg, m, m.unet, ref, batch, step_generator(0, 0, 0), pair_latents(m, batch, None)[0])
    from scdpo.train.anchor import masked_prompt

    # the target: the harmful prompt with its harmful words replaced by one safe object, every concept alike
    assert seen[-1] == [masked_prompt(batch["caption"][i], batch["safe_caption"][i], "sunflower") for i in (0, 3)]
    assert all("sunflower" in q for q in seen[-1])
    with pytest.raises(ValueError, match="anchor_keyword_dropout"):
        TrainConfig(model="m", dataset="d", out="o", anchor_keyword_dropout=1.5)


def _straight_and_resumed(pipe, safe_pairs, tmp_path, **term) -> tuple[dict, dict]:
    """Four steps of an sc-dpo run with the per-step policy anchor and ``term``, straight and
    stopped at step 2 then resumed: the two runs' last logged statistics."""
    common = dict(model=str(pipe), dataset=str(safe_pairs), loss="sc-dpo", batch_size=2, lr=1e-3, checkpoint_every=2,
                  anchor_weight=1.0, anchor_states="policy", anchor_steps=2, **term, **FAST)
    straight = train(TrainConfig(out=str(tmp_path / "a"), max_steps=4, **common))
    train(TrainConfig(out=str(tmp_path / "b"), max_steps=2, **common))
    return straight, train(TrainConfig(out=str(tmp_path / "b"), max_steps=4, resume=True, **common))


def test_the_on_policy_hold_rides_on_the_anchor_trajectory(pipe, safe_pairs, tmp_path):
    """anchor_clean_weight: the batch's clean prompts join the harmful ones on the policy's trajectory;
    their rows come last, the policy reads the clean prompt and the target is the reference under it."""
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(4))  # rows 0, 3 harmful with a safe prompt; 1, 2 clean
    cfg = TrainConfig(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_states="policy", anchor_steps=2,
                      anchor_clean_weight=2.0)
    inputs = anchor_inputs(cfg, m, m.unet, ref, batch, step_generator(0, 0, 0))
    assert inputs.clean == 2 and len(inputs.x) == len(inputs.t) == len(inputs.cond) == 4
    clean = [batch["caption"][i] for i in (1, 2)]
    x, t = inputs.x[2:], inputs.t[2:]
    torch.testing.assert_close(inputs.target[2:], ref(m, x, t, m.encode_prompts(clean)).float())
    torch.testing.assert_close(inputs.cond.context[2:], m.encode_prompts(clean).context)
    # off: the harmful rows alone, as before
    off = anchor_inputs(TrainConfig(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_steps=2), m, m.unet,
                        ref, batch, step_generator(0, 0, 0))
    assert off.clean == 0 and len(off.x) == 2
    # a run logs the hold beside the anchor and resumes exactly
    straight, resumed = _straight_and_resumed(pipe, safe_pairs, tmp_path, anchor_clean_weight=1.0)
    assert straight["loss"] == resumed["loss"] and straight["hold"] > 0 and straight["anchor"] > 0
    for bad in (dict(anchor_weight=0.0), dict(anchor_weight=1.0, anchor_states="winner"),
                dict(anchor_weight=1.0, anchor_refresh=2, checkpoint_every=2)):
        with pytest.raises(ValueError, match="anchor_clean_weight rides on the anchor's per-step policy trajectory"):
            TrainConfig(model="m", dataset="d", out="o", anchor_clean_weight=1.0, **bad)
    for harmful_only in (dict(kinds="harmful"), dict(loss="safetydpo")):
        with pytest.raises(ValueError, match="harmful pairs only"):
            TrainConfig(model="m", dataset="d", out="o", anchor_weight=1.0, anchor_clean_weight=1.0, **harmful_only)


def _term_after_training(pipe, safe_pairs, weight: str, **extra) -> tuple[torch.Tensor, torch.Tensor]:
    """A LoRA pushed off the reference, then 20 gradient steps on one anchor-side term alone
    (``weight``: anchor_clean_weight, the hold's rows, or anchor_uncond_weight, the empty prompt's;
    ``extra``: more TrainConfig fields): the term's mean on fresh trajectory states before and after."""
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    with torch.no_grad():  # push the LoRA off the reference
        for n, p in m.unet.named_parameters():
            if p.requires_grad and "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(4))
    cfg = TrainConfig(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_states="policy", anchor_steps=2,
                      **{weight: 1.0}, **extra)
    opt = torch.optim.AdamW([p for p in m.unet.parameters() if p.requires_grad], lr=1e-2)

    def term(i):
        gen = step_generator(0, i, 0)
        inputs = anchor_inputs(cfg, m, m.unet, ref, batch, gen)
        errors = pair_errors(m, m.unet, ref, batch, gen, extra=inputs[:3])
        terms = anchor_terms(errors.extra, inputs, cfg.anchor_guidance if cfg.anchor_clean_guided else None)
        return terms.uncond if weight == "anchor_uncond_weight" else terms.hold

    with torch.no_grad():
        before = torch.stack([term(100 + i).mean() for i in range(4)]).mean()
    for i in range(20):
        opt.zero_grad()
        term(i).mean().backward()
        opt.step()
    with torch.no_grad():
        after = torch.stack([term(100 + i).mean() for i in range(4)]).mean()
    return before, after


def test_the_hold_pulls_the_policy_back_on_its_own_clean_states(pipe, safe_pairs):
    """Gradient steps on the hold alone shrink the policy's drift from the reference on fresh
    clean-prompt trajectory states after the LoRA was pushed off (the term does what it says)."""
    before, after = _term_after_training(pipe, safe_pairs, "anchor_clean_weight")
    assert after < 0.5 * before, (before, after)


def _hold_inputs(pipe, safe_pairs, **extra):
    """(model, reference, the hold's anchor inputs, the same with ``extra`` TrainConfig fields) on
    one batch and one generator seed."""
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(4))
    base = dict(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_states="policy", anchor_steps=2,
                anchor_clean_weight=2.0)
    held = anchor_inputs(TrainConfig(**base), m, m.unet, ref, batch, step_generator(0, 0, 0))
    return m, ref, held, anchor_inputs(TrainConfig(**base, **extra), m, m.unet, ref, batch, step_generator(0, 0, 0))


def test_the_unconditional_hold_adds_every_state_under_the_empty_prompt(pipe, safe_pairs, tmp_path):
    """anchor_uncond_weight (docs/method.md, (h)): after the anchor's (and the hold's) rows come the
    same states again under the empty prompt, with the reference's unconditional prediction as the
    target; the rows before them are unchanged, and a run logs the term and resumes exactly."""
    m, ref, held, both = _hold_inputs(pipe, safe_pairs, anchor_uncond_weight=3.0)
    n = len(held.x)
    assert (both.clean, both.uncond, len(both.x), len(both.cond)) == (2, n, 2 * n, 2 * n)
    torch.testing.assert_close(both.x[:n], held.x), torch.testing.assert_close(both.target[:n], held.target)
    torch.testing.assert_close(both.x[n:], held.x)
    empty = m.unconditional(n)
    torch.testing.assert_close(both.cond.context[n:], empty.context)
    torch.testing.assert_close(both.target[n:], ref(m, held.x, held.t, empty).float())
    straight, resumed = _straight_and_resumed(pipe, safe_pairs, tmp_path, anchor_uncond_weight=1.0)
    assert straight["loss"] == resumed["loss"] and straight["uncond"] > 0 and straight["anchor"] > 0
    with pytest.raises(ValueError, match="anchor_uncond_weight holds the empty prompt"):
        TrainConfig(model="m", dataset="d", out="o", anchor_uncond_weight=1.0)


def test_the_unconditional_hold_shrinks_the_prompt_blind_change(pipe, safe_pairs):
    """Gradient steps on the unconditional hold alone shrink the LoRA's change of the empty prompt's
    prediction on fresh anchor states, after the LoRA was pushed off (the term does what it says)."""
    before, after = _term_after_training(pipe, safe_pairs, "anchor_uncond_weight")
    assert after < 0.5 * before, (before, after)


def test_the_guided_hold_adds_the_hold_states_under_the_empty_prompt(pipe, safe_pairs, tmp_path):
    """anchor_clean_guided (docs/method.md, (g), "The guided form"): the clean states come once more
    under the empty prompt, with the reference's unconditional prediction as the target (every state
    with anchor_uncond_weight, as (h) needs); the rows before them are unchanged; a run logs the hold,
    adds no U term, and resumes exactly."""
    m, ref, held, guided = _hold_inputs(pipe, safe_pairs, anchor_clean_guided=True)
    n = len(held.x)
    assert (guided.clean, guided.uncond, len(guided.x), len(guided.cond)) == (2, 2, n + 2, n + 2)
    torch.testing.assert_close(guided.x[:n], held.x), torch.testing.assert_close(guided.target[:n], held.target)
    torch.testing.assert_close(guided.x[n:], held.x[n - 2:])
    torch.testing.assert_close(guided.target[n:], ref(m, held.x[n - 2:], held.t[n - 2:], m.unconditional(2)).float())
    both = _hold_inputs(pipe, safe_pairs, anchor_clean_guided=True, anchor_uncond_weight=1.0)[3]
    assert both.uncond == n and len(both.x) == 2 * n
    straight, resumed = _straight_and_resumed(pipe, safe_pairs, tmp_path, anchor_clean_weight=1.0,
                                              anchor_clean_guided=True)
    assert straight["loss"] == resumed["loss"] and straight["hold"] > 0 and "uncond" not in straight
    with pytest.raises(ValueError, match="anchor_clean_guided is a form of the on-policy hold"):
        TrainConfig(model="m", dataset="d", out="o", anchor_weight=1.0, anchor_clean_guided=True)


def test_the_guided_hold_is_the_change_of_what_guidance_draws():
    """C_g = || w dc - (w - 1) du ||^2 / w^2 per clean state: the squared change of the guided
    prediction eps_u + w (eps_c - eps_u) over w^2; C when du = 0; 0 when the two changes cancel
    under guidance although each is large. A and U are the same rows as without the guided form."""
    g = torch.Generator().manual_seed(0)
    shape, w = (1, 4, 2, 2), 5.0
    # rows: 1 anchor, 2 clean, then the 2 clean states under the empty prompt
    target = torch.randn((5, *shape[1:]), generator=g)
    dc, du = torch.randn((2, *shape[1:]), generator=g), torch.randn((2, *shape[1:]), generator=g)
    pred = target.clone()
    pred[0] += 1.0
    pred[1:3] += dc
    pred[3:] += du
    inputs = AnchorInputs(x=torch.zeros(5, *shape[1:]), t=torch.zeros(5), cond=None, target=target, clean=2, uncond=2)
    plain, guided = anchor_terms(pred, inputs), anchor_terms(pred, inputs, guided=w)
    guide = lambda c, u: u + w * (c - u)  # noqa: E731
    want = (guide(pred[1:3], pred[3:]) - guide(target[1:3], target[3:])).pow(2).mean(dim=(1, 2, 3)) / w ** 2
    torch.testing.assert_close(guided.hold, want)
    torch.testing.assert_close(plain.hold, dc.pow(2).mean(dim=(1, 2, 3)))
    for t in (plain, guided):
        torch.testing.assert_close(t.anchor, torch.ones(1)), torch.testing.assert_close(t.uncond, du.pow(2).mean(dim=(1, 2, 3)))
    pred[3:] = target[3:]  # du = 0: the guided hold is the plain one
    torch.testing.assert_close(anchor_terms(pred, inputs, guided=w).hold, plain.hold)
    pred[3:] = target[3:] + w / (w - 1) * dc  # w dc = (w - 1) du: guidance draws what the reference draws
    assert anchor_terms(pred, inputs, guided=w).hold.max() < 1e-10 < anchor_terms(pred, inputs).hold.min()
    with pytest.raises(ValueError, match="empty prompt"):
        anchor_terms(pred[:3], inputs._replace(target=target[:3], uncond=0), guided=w)


def test_the_guided_hold_pulls_the_guided_prediction_back(pipe, safe_pairs):
    """Gradient steps on the guided hold alone shrink the change of the guided prediction on fresh
    clean trajectory states, after the LoRA was pushed off (the term does what it says)."""
    before, after = _term_after_training(pipe, safe_pairs, "anchor_clean_weight", anchor_clean_guided=True)
    assert after < 0.5 * before, (before, after)


def test_hold_weights_rank_the_weakest_clean_prompts_highest_and_keep_the_dose():
    """anchor_clean_focus: w = (1 + gamma r) / mean(1 + gamma r) over the clean pairs, r the rank of
    the pair's weaker reward from the top; harmful pairs keep 1, ties share their weight."""
    from scdpo.train.anchor import hold_weights

    reward = np.array([5.0, -1.0, 3.0, 0.0, 9.0])
    harmful = np.array([True, False, False, False, True])
    w = hold_weights(reward, harmful, 2.0)
    # clean rewards -1, 3, 0 -> r = 1, 0, 0.5 -> raw 3, 1, 2 (mean 2)
    np.testing.assert_allclose(w, [1.0, 1.5, 0.5, 1.0, 1.0])
    assert w[~harmful].mean() == pytest.approx(1.0)
    tied = hold_weights(np.array([1.0, 1.0, 0.0]), np.zeros(3, bool), 1.0)
    assert tied[0] == tied[1] < tied[2]
    np.testing.assert_array_equal(hold_weights(reward, harmful, 0.0), np.ones(5))


def test_the_hold_focus_reweights_the_hold_and_needs_rewards(pipe, safe_pairs, tmp_path):
    """Two steps with and without the focus: the first step's hold is 0 (a fresh LoRA is the
    reference), so the second starts from the same weights, sees the same unweighted hold, and only
    its loss (the weighted sum) differs."""
    common = dict(model=str(pipe), dataset=str(safe_pairs), loss="sc-dpo", batch_size=4, lr=1e-3, max_steps=2,
                  anchor_weight=1.0, anchor_states="policy", anchor_steps=2, anchor_clean_weight=4.0, **FAST)
    plain = train(TrainConfig(out=str(tmp_path / "plain"), **common))
    focused = train(TrainConfig(out=str(tmp_path / "focus"), anchor_clean_focus=8.0, **common))
    assert plain["hold"] == pytest.approx(focused["hold"], rel=1e-6) and plain["hold"] > 0
    assert plain["loss"] != pytest.approx(focused["loss"], rel=1e-6)
    bare = write_pairs(tmp_path / "bare.parquet", n=12, safe_caption=SAFE, drop=("reward_0", "reward_1"))
    with pytest.raises(ValueError, match="no column 'reward_0'.*--anchor-clean-focus 0"):
        train(TrainConfig(out=str(tmp_path / "bare"), **{**common, "dataset": str(bare)}, anchor_clean_focus=1.0))
    with pytest.raises(ValueError, match="anchor_clean_focus weights the on-policy hold"):
        TrainConfig(model="m", dataset="d", out="o", anchor_clean_focus=1.0)


def test_mix_conditioning_moves_the_first_rows_towards_the_counterparts():
    from scdpo.models.t2i import Conditioning
    from scdpo.train.anchor import mix_conditioning

    c = Conditioning(torch.zeros(3, 2, 4), torch.zeros(3, 5), torch.ones(3, 6))
    toward = Conditioning(torch.ones(2, 2, 4), torch.full((2, 5), 2.0), torch.zeros(2, 6))
    out = mix_conditioning(c, toward, torch.tensor([0.25, 1.0]))
    assert out.context[0].eq(0.25).all() and out.context[1].eq(1.0).all() and out.context[2].eq(0).all()
    assert out.pooled[0].eq(0.5).all() and out.pooled[1].eq(2.0).all() and out.pooled[2].eq(0).all()
    torch.testing.assert_close(out.add_time_ids, c.add_time_ids)  # size ids are not text
    assert mix_conditioning(Conditioning(torch.zeros(1, 2, 4)), Conditioning(torch.ones(1, 2, 4)),
                            torch.tensor([0.5])).pooled is None


def test_anchor_mix_reads_between_the_harmful_prompt_and_its_counterpart(pipe, safe_pairs, tmp_path):
    """anchor_mix = a_max: the same states and targets as without it; the policy's conditioning of each
    harmful row is (1 - a) c_harm + a c_safe with a in [0, a_max]; the hold's clean rows are untouched."""
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(4))  # rows 0, 3 harmful with a safe prompt; 1, 2 clean
    common = dict(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_steps=2, anchor_clean_weight=1.0)
    off = anchor_inputs(TrainConfig(**common), m, m.unet, ref, batch, step_generator(0, 0, 0))
    on = anchor_inputs(TrainConfig(anchor_mix=0.5, **common), m, m.unet, ref, batch, step_generator(0, 0, 0))
    for a, b in ((on.x, off.x), (on.t, off.t), (on.target, off.target), (on.cond.context[2:], off.cond.context[2:])):
        torch.testing.assert_close(a, b)
    harm = m.encode_prompts([batch["caption"][i] for i in (0, 3)]).context
    safe = m.encode_prompts([batch["safe_caption"][i] for i in (0, 3)]).context
    for row in range(2):  # the share a that explains the row, and that it explains all of it
        d = safe[row] - harm[row]
        a = ((on.cond.context[row] - harm[row]) * d).sum() / d.pow(2).sum()
        assert 0 < a <= 0.5
        torch.testing.assert_close(on.cond.context[row], harm[row] + a * d)
    straight, resumed = _straight_and_resumed(pipe, safe_pairs, tmp_path, anchor_mix=0.3)
    assert straight["loss"] == resumed["loss"] and straight["anchor"] > 0
    for bad, match in ((dict(anchor_weight=1.0, anchor_mix=1.0), "in \\[0, 1\\)"), (dict(anchor_mix=0.2), "anchor-weight")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(model="m", dataset="d", out="o", **bad)
