"""The adversarial anchor (scdpo.train.adversary; docs/method.md, (j)): which rows it moves, that the
moves stay in each token's ball and raise the anchor term, that training on it lowers the worst case
on the ball more than training on the plain anchor, and whole runs that resume exactly."""

from __future__ import annotations

import json

import pytest
import torch

from scdpo.models.t2i import Conditioning
from scdpo.train import model as tm
from scdpo.train.adversary import PromptBank, adversarial_anchor, project_tokens, with_bank
from scdpo.train.anchor import anchor_inputs, anchor_terms
from scdpo.train.config import TrainConfig
from scdpo.train.data import PreferencePairs
from scdpo.train.step import pair_errors, step_generator
from scdpo.train.trainer import train
from tests.test_anchor import _straight_and_resumed, lora_model, pipe, safe_pairs  # noqa: F401 (fixtures)
from tests.test_trainer import FAST, SIZE, collate

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"), pytest.mark.usefixtures("one_thread")]
BASE = dict(model="x", dataset="x", out="x", anchor_weight=1.0, anchor_states="policy", anchor_steps=2)


def _harm_terms(m, inputs):
    """A per harmful row: the policy's error against the anchor's target on the rows' own conditioning."""
    n = len(inputs.x) - inputs.clean - inputs.uncond
    cond = Conditioning(inputs.cond.context[:n])
    return (m.predict(inputs.x[:n], inputs.t[:n], cond).float() - inputs.target[:n]).pow(2).mean(dim=(1, 2, 3))


def test_project_tokens_scales_back_only_the_tokens_outside_their_ball():
    delta = torch.tensor([[[3.0, 4.0], [0.3, 0.4]]])  # norms 5 and 0.5
    out = project_tokens(delta, torch.ones(1, 2, 1))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(out[0, 1], delta[0, 1])


def test_the_search_moves_the_harmful_rows_inside_their_ball_and_raises_the_anchor(pipe, safe_pairs):
    """Only the harmful rows' text states move, each token by at most eps times its own norm; the
    states, timesteps, targets and the hold's and empty prompt's rows are kept; A rises on every row."""
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(4))  # rows 0, 3 harmful with a safe prompt
    cfg = TrainConfig(**BASE, anchor_clean_weight=1.0, anchor_uncond_weight=1.0, anchor_adv_eps=0.3,
                      anchor_adv_steps=3)
    plain = anchor_inputs(cfg, m, m.unet, ref, batch, step_generator(0, 0, 0))
    moved = adversarial_anchor(cfg, m, m.unet, plain)
    n = len(plain.x) - plain.clean - plain.uncond
    assert n == 2 and (moved.clean, moved.uncond) == (plain.clean, plain.uncond)
    for a, b in ((moved.x, plain.x), (moved.t, plain.t), (moved.target, plain.target),
                 (moved.cond.context[n:], plain.cond.context[n:])):
        assert torch.equal(a, b)
    c = plain.cond.context[:n]
    step = (moved.cond.context[:n] - c).norm(dim=-1)
    assert (step <= 0.3 * c.norm(dim=-1) * (1 + 1e-5)).all() and (step > 0).any()
    with torch.no_grad():
        assert (_harm_terms(m, moved) > _harm_terms(m, plain)).all()
    assert all(p.grad is None for p in m.unet.parameters())  # the search leaves the weights' gradients alone
    off = TrainConfig(**BASE, anchor_clean_weight=1.0)
    assert adversarial_anchor(off, m, m.unet, plain) is plain and adversarial_anchor(cfg, m, m.unet, None) is None


def _worst_case_after_training(pipe, safe_pairs, adversarial: bool) -> torch.Tensor:
    """20 gradient steps on the anchor term alone, its states read plainly or under the search; then
    the term on fresh states under the search (eps 0.5): the worst case on the ball."""
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(4))
    search = TrainConfig(**BASE, anchor_adv_eps=0.5, anchor_adv_steps=2)
    train_cfg = search if adversarial else TrainConfig(**BASE)
    opt = torch.optim.AdamW([p for p in m.unet.parameters() if p.requires_grad], lr=1e-2)

    def term(cfg, i):
        gen = step_generator(0, i, 0)
        inputs = adversarial_anchor(cfg, m, m.unet, anchor_inputs(cfg, m, m.unet, ref, batch, gen))
        return anchor_terms(pair_errors(m, m.unet, ref, batch, gen, extra=inputs[:3]).extra, inputs).anchor

    for i in range(20):
        opt.zero_grad()
        term(train_cfg, i).mean().backward()
        opt.step()
    return torch.stack([term(search, 100 + i).mean().detach() for i in range(4)]).mean()


def test_training_on_the_ball_lowers_its_worst_case_more_than_the_plain_anchor(pipe, safe_pairs):
    plain, adversarial = (_worst_case_after_training(pipe, safe_pairs, a) for a in (False, True))
    assert adversarial < plain, (adversarial, plain)


def test_runs_with_the_adversarial_anchor_resume_exactly(pipe, safe_pairs, tmp_path):
    straight, resumed = _straight_and_resumed(pipe, safe_pairs, tmp_path, anchor_adv_eps=0.2, anchor_adv_steps=2)
    assert straight["loss"] == resumed["loss"] and straight["anchor"] > 0
    one = dict(model=str(pipe), dataset=str(safe_pairs), loss="sc-dpo", batch_size=4, lr=1e-3, max_steps=1,
               anchor_weight=1.0, anchor_states="policy", anchor_steps=2, **FAST)
    plain = train(TrainConfig(out=str(tmp_path / "plain"), **one))
    adv = train(TrainConfig(out=str(tmp_path / "adv"), anchor_adv_eps=0.3, **one))
    assert adv["anchor"] > plain["anchor"]  # the first step's weights are the same: the worse states cost more
    for bad, match in ((dict(anchor_adv_eps=0.2), "anchor_adv_eps searches"),
                       (dict(anchor_weight=1.0, anchor_adv_eps=-1.0), "anchor_adv_eps must be >= 0"),
                       (dict(anchor_weight=1.0, anchor_adv_eps=0.1, anchor_adv_steps=0),
                        "anchor_adv_steps must be >= 1")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(model="m", dataset="d", out="o", **bad)


def _bank_inputs(pipe, safe_pairs):
    m = lora_model(pipe)
    ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
    batch = collate(PreferencePairs(safe_pairs, SIZE), range(8))  # rows 0, 3, 4, 6 harmful with a safe prompt
    cfg = TrainConfig(**BASE, anchor_clean_weight=1.0, anchor_p4d_every=2, anchor_p4d_steps=3, anchor_p4d_rows=2,
                      anchor_p4d_share=0.5)
    return m, ref, cfg, anchor_inputs(cfg, m, m.unet, ref, batch, step_generator(0, 0, 0))


def test_the_prompt_bank_searches_strings_against_the_policy_and_leaves_its_weights_alone(pipe, safe_pairs):
    from scdpo.models.tokens import allowed_tokens, content_ids

    m, ref, cfg, inputs = _bank_inputs(pipe, safe_pairs)
    bank = PromptBank(m, cfg.anchor_p4d_steps, cfg.anchor_p4d_rows)
    bank.search(m, m.unet, ref, inputs, torch.Generator().manual_seed(3))
    allowed = set(allowed_tokens(m.tokenizers[0]).tolist())
    assert len(bank.texts) == 2 and all(t for t in bank.texts)
    # the written text reads back as whole-word tokens of the search's vocabulary
    assert all(set(content_ids(m.tokenizers[0], t)) <= allowed for t in bank.texts)
    assert all(p.grad is None for p in m.unet.parameters())
    again = PromptBank(m, cfg.anchor_p4d_steps, cfg.anchor_p4d_rows)
    again.search(m, m.unet, ref, inputs, torch.Generator().manual_seed(3))
    assert again.texts == bank.texts
    kept = list(bank.texts)
    bank.search(m, m.unet, ref, None, torch.Generator().manual_seed(4))  # nothing to search on: the bank stays
    assert bank.texts == kept


def test_with_bank_conditions_a_share_of_the_harmful_rows_on_the_strings(pipe, safe_pairs):
    m, ref, cfg, inputs = _bank_inputs(pipe, safe_pairs)
    n = len(inputs.x) - inputs.clean - inputs.uncond
    bank = PromptBank(m, 1, 2)
    gen = torch.Generator().manual_seed(0)
    assert with_bank(cfg, m, inputs, bank, gen) is inputs  # an empty bank draws nothing
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())
    bank.texts = ["zebra zebra", "quartz"]
    out = with_bank(cfg, m, inputs, bank, gen)
    k = int(0.5 * n + 0.5)
    assert k == 2 and torch.equal(out.cond.context[k:], inputs.cond.context[k:])
    strings = m.encode_prompts(bank.texts).context
    for row in range(k):
        assert any(torch.allclose(out.cond.context[row], s) for s in strings)
    for a, b in ((out.x, inputs.x), (out.t, inputs.t), (out.target, inputs.target)):
        assert torch.equal(a, b)


def test_runs_with_p4d_in_the_loop_resume_exactly_and_check_their_settings(pipe, safe_pairs, tmp_path):
    # searches at steps 0 and 3, the resume at step 2: the bank of step 0 must come back from the checkpoint
    straight, resumed = _straight_and_resumed(pipe, safe_pairs, tmp_path, anchor_p4d_every=3, anchor_p4d_steps=2,
                                              anchor_p4d_rows=1, anchor_p4d_share=1.0)
    assert straight["loss"] == resumed["loss"] and straight["anchor"] > 0
    saved = sorted((tmp_path / "b").rglob("p4d_bank-0.json"))
    assert saved and json.loads(saved[-1].read_text())
    on = dict(model="m", dataset="d", out="o", anchor_weight=1.0, anchor_states="policy")
    for bad, match in ((dict(anchor_p4d_every=2), "anchor_p4d_every searches"),
                       (dict(on, anchor_p4d_every=3, anchor_mix=0.2), "use one or the other"),
                       (dict(on, anchor_p4d_every=2, anchor_p4d_share=1.5), "anchor_p4d_share in \\[0, 1\\]")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**({"model": "m", "dataset": "d", "out": "o"} | bad))
