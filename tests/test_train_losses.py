"""The preference losses against values computed by hand, and the dual-ascent / focusing state."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from scdpo.train.losses import LOSSES, LossState, PairBatchInfo, get_loss, update_state

# two pairs; errors chosen so the hand computation is short
ERR_W, ERR_L = torch.tensor([0.10, 0.20]), torch.tensor([0.30, 0.10])
REF_W, REF_L = torch.tensor([0.12, 0.20]), torch.tensor([0.28, 0.15])
BETA = 10.0
# z = -(beta/2) [(e_w - e_l) - (r_w - r_l)]:
#   pair 0: -5 * ((0.10 - 0.30) - (0.12 - 0.28)) = -5 * (-0.04) = 0.2
#   pair 1: -5 * ((0.20 - 0.10) - (0.20 - 0.15)) = -5 * 0.05 = -0.25
Z = [0.2, -0.25]
RHO_W, RHO_L = [0.1, 0.0], [-0.1, 0.25]  # -(beta/2)(e - r) per sample
COST_W, COST_L = torch.tensor([-1.0, 0.5]), torch.tensor([1.0, 0.2])
INFO = PairBatchInfo(cost_w=COST_W, cost_l=COST_L, harmful=torch.tensor([True, False]))


def nll(z: float) -> float:
    """-log sigmoid(z) = log(1 + e^-z)."""
    return math.log1p(math.exp(-z))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def cfg(**kw):
    base = dict(beta=BETA, cost_margin=0.0, constraint=False, focus_gamma=0.0, winner_weight=0.0,
                preserve_weight=0.0, lambda_lr=0.5, cost_budget=0.0, constraint_source="offline",
                constraint_form="margin", focus_signal="batch")
    return SimpleNamespace(**{**base, **kw})


def run(name, info=INFO, state=None, **kw):
    return get_loss(name)(ERR_W, ERR_L, REF_W, REF_L, info, cfg(**kw), state or LossState())


def test_dpo_matches_hand_computation():
    loss, stats = run("dpo")
    torch.testing.assert_close(loss, torch.tensor([nll(0.2), nll(-0.25)]))
    assert stats["implicit_acc"].item() == 0.5  # pair 0 ordered right, pair 1 not
    assert stats["margin"].item() == pytest.approx((0.2 - 0.25) / 2)
    assert stats["reward_w"].item() == pytest.approx(sum(RHO_W) / 2)
    assert stats["reward_l"].item() == pytest.approx(sum(RHO_L) / 2)
    assert stats["err_w_vs_ref"].item() == pytest.approx((-0.02 + 0.0) / 2)


def test_safetydpo_is_dpo_and_all_losses_share_the_signature():
    torch.testing.assert_close(run("safetydpo")[0], run("dpo")[0])
    for name, fn in LOSSES.items():
        loss, stats = fn(ERR_W, ERR_L, REF_W, REF_L, INFO, cfg(cost_margin=1.0, constraint=True, focus_gamma=2.0),
                         LossState(lam=0.3))
        assert loss.shape == (2,) and all(v.ndim == 0 for v in stats.values()), name
    with pytest.raises(ValueError, match="unknown loss 'ipo'"):
        get_loss("ipo")


def test_sc_dpo_with_every_part_off_is_dpo():
    torch.testing.assert_close(run("sc-dpo")[0], run("dpo")[0])


def test_sc_dpo_cost_margin():
    # m tanh((c_l - c_w)_+): pair 0 gap 2 -> 2 tanh 2; pair 1 gap -0.3 -> no margin
    loss, stats = run("sc-dpo", cost_margin=2.0)
    expect = [nll(0.2 - 2 * math.tanh(2.0)), nll(-0.25)]
    torch.testing.assert_close(loss, torch.tensor(expect))
    assert stats["cost_margin"].item() == pytest.approx(math.tanh(2.0))
    assert stats["implicit_acc_margin"].item() == 0.0  # 0.2 < 2 tanh 2: pair 0 not separated enough yet


def test_sc_dpo_focus_weights_normalised_to_mean_one():
    loss, stats = run("sc-dpo", focus_gamma=2.0)
    raw = [sig(-0.2) ** 2, sig(0.25) ** 2]  # (1 - sigmoid(z))^gamma
    w = [r / (sum(raw) / 2) for r in raw]
    torch.testing.assert_close(loss, torch.tensor([w[0] * nll(0.2), w[1] * nll(-0.25)]))
    assert stats["focus_mean"].item() == pytest.approx(1.0)
    assert stats["focus_max"].item() == pytest.approx(max(w)) and w[1] > w[0]  # the misordered pair weighs more
    # after the first step the running mean normalises instead (so micro-batch 1 still focuses)
    loss_run, _ = run("sc-dpo", focus_gamma=2.0, state=LossState(focus_mean=0.5))
    torch.testing.assert_close(loss_run, torch.tensor([raw[0] / 0.5 * nll(0.2), raw[1] / 0.5 * nll(-0.25)]))


def test_focus_weights_are_detached():
    e_w = ERR_W.clone().requires_grad_()
    get_loss("sc-dpo")(e_w, ERR_L, REF_W, REF_L, INFO, cfg(focus_gamma=2.0), LossState())[0].sum().backward()
    # d/de_w of w * -log sigmoid(z) with w constant: w * -sigmoid(-z) * dz/de_w, dz/de_w = -beta/2
    raw = [sig(-0.2) ** 2, sig(0.25) ** 2]
    w = [r / (sum(raw) / 2) for r in raw]
    expect = [w[i] * sig(-Z[i]) * BETA / 2 for i in range(2)]
    torch.testing.assert_close(e_w.grad, torch.tensor(expect))


def test_sc_dpo_constraint_term():
    lam = 0.5
    loss, stats = run("sc-dpo", constraint=True, state=LossState(lam=lam))
    h_w = [0.0, math.tanh(0.5)]  # tanh(c_+): the safe winner of pair 0 does not count
    h_l = [math.tanh(1.0), math.tanh(0.2)]
    j = [0.5 * (h_w[i] * RHO_W[i] + h_l[i] * RHO_L[i]) for i in range(2)]
    torch.testing.assert_close(loss, torch.tensor([nll(0.2) + lam * j[0], nll(-0.25) + lam * j[1]]))
    assert stats["constraint"].item() == pytest.approx(sum(j) / 2, rel=1e-5)


def test_constraint_pushes_only_harmful_samples_down():
    """Gradient descent on lambda * J raises the denoising error (lowers the likelihood) of costly
    samples and leaves samples with cost <= 0 alone."""
    e_w, e_l = ERR_W.clone().requires_grad_(), ERR_L.clone().requires_grad_()
    loss_c = get_loss("sc-dpo")(e_w, e_l, REF_W, REF_L, INFO, cfg(constraint=True), LossState(lam=1.0))[0]
    loss_0 = get_loss("sc-dpo")(e_w, e_l, REF_W, REF_L, INFO, cfg(constraint=False), LossState(lam=1.0))[0]
    g_w, g_l = torch.autograd.grad((loss_c - loss_0).sum(), [e_w, e_l])
    assert g_w[0] == 0 and g_w[1] < 0  # winner of pair 0 is safe (cost -1); of pair 1 costly (0.5)
    assert (g_l < 0).all()  # both losers costly: descent increases their error


def test_sc_dpo_needs_costs():
    with pytest.raises(ValueError, match="cost_0 and cost_1"):
        run("sc-dpo", info=PairBatchInfo(), constraint=True)
    run("sc-dpo", info=PairBatchInfo(), focus_gamma=2.0)  # focusing alone needs no costs


def test_dual_ascent_direction_and_floor():
    c = cfg(constraint=True, lambda_lr=0.5, cost_budget=0.1)
    s = LossState(lam=1.0)
    update_state(s, {"constraint": 0.3}, c)  # violated: lambda grows
    assert s.lam == pytest.approx(1.0 + 0.5 * 0.2)
    update_state(s, {"constraint": -1.0}, c)  # satisfied: lambda shrinks
    assert s.lam == pytest.approx(1.1 - 0.5 * 1.1)
    update_state(s, {"constraint": -10.0}, c)
    assert s.lam == 0.0  # never negative
    update_state(s, {"constraint": float("nan")}, c)
    assert s.lam == 0.0
    off = LossState(lam=1.0)
    update_state(off, {"constraint": 5.0}, cfg(constraint=False))
    assert off.lam == 1.0


def test_focus_running_mean_and_state_round_trip():
    s = LossState(lam=0.7)
    update_state(s, {"focus_raw_mean": 0.4}, cfg())
    assert s.focus_mean == pytest.approx(0.4)
    update_state(s, {"focus_raw_mean": 0.2}, cfg())
    assert s.focus_mean == pytest.approx(0.9 * 0.4 + 0.1 * 0.2)
    assert LossState.from_dict(s.to_dict()) == s


def test_winner_term_adds_minus_a_rho_w_and_raises_winner_likelihood():
    plain, _ = run("sc-dpo")
    loss, stats = run("sc-dpo", winner_weight=0.5)
    rho_w = -(BETA / 2) * (ERR_W - REF_W)
    torch.testing.assert_close(loss, plain - 0.5 * rho_w)
    e_w = ERR_W.clone().requires_grad_(True)
    get_loss("sc-dpo")(e_w, ERR_L, REF_W, REF_L, INFO, cfg(winner_weight=0.5), LossState())[0].sum().backward()
    assert (e_w.grad > 0).all()  # descending the loss lowers the winner's denoising error


def test_preservation_term_penalises_drift_on_clean_pairs_only():
    drift = torch.tensor([0.4, 0.2], requires_grad=True)  # pair 0 harmful, pair 1 clean (INFO)
    info = PairBatchInfo(cost_w=COST_W, cost_l=COST_L, harmful=INFO.harmful, drift=drift)
    plain, _ = run("sc-dpo", info=info)
    loss, stats = run("sc-dpo", info=info, preserve_weight=2.0)
    # p (beta/2) D on the clean pair: 2 * 5 * 0.2 = 2.0; the harmful pair is free to change
    torch.testing.assert_close(loss - plain, torch.tensor([0.0, 2.0]))
    assert stats["drift_clean"].item() == pytest.approx(0.2)
    loss.sum().backward()
    assert drift.grad.tolist() == pytest.approx([0.0, 10.0])  # descending it pulls the clean pair back
    with pytest.raises(ValueError, match="drift"):
        run("sc-dpo", preserve_weight=1.0)  # INFO carries no drift


# ------------------------------------------------------------------ the second round's forms
def test_on_policy_margin_adds_lambda_to_the_cost_margin():
    """constraint_source policy, form margin: z' = z - (m + lambda) tanh((c_l - c_w)+), no J term."""
    c = cfg(cost_margin=1.0, constraint=True, constraint_source="policy", constraint_form="margin")
    loss, stats = get_loss("sc-dpo")(ERR_W, ERR_L, REF_W, REF_L, INFO, c, LossState(lam=2.0))
    g = [math.tanh(2.0), 0.0]  # (c_l - c_w)+ = 2.0 and 0 (pair 1's loser is cheaper)
    want = [nll(Z[i] - 3.0 * g[i]) for i in range(2)]
    assert loss.tolist() == pytest.approx(want, rel=1e-5)
    assert "constraint" not in stats  # lambda is not a term of its own


def test_on_policy_weight_scales_harmful_pairs_only():
    c = cfg(constraint=True, constraint_source="policy", constraint_form="weight")
    loss, _ = get_loss("sc-dpo")(ERR_W, ERR_L, REF_W, REF_L, INFO, c, LossState(lam=3.0))
    assert loss.tolist() == pytest.approx([4.0 * nll(Z[0]), nll(Z[1])], rel=1e-5)


def test_dual_ascent_on_the_measure_and_update_state_leaves_it_alone():
    from scdpo.train.losses import dual_ascent

    c = cfg(constraint=True, constraint_source="policy", lambda_lr=2.0, cost_budget=0.1)
    state = LossState(lam=0.5)
    dual_ascent(state, 0.6, c)
    assert state.lam == pytest.approx(1.5) and state.measured == 0.6
    dual_ascent(state, 0.0, c)  # under budget: lambda falls, never below 0
    assert state.lam == pytest.approx(1.3)
    dual_ascent(state, 0.0, cfg(lambda_lr=100.0, cost_budget=0.1))
    assert state.lam == 0.0
    update_state(state, {"loss": 1.0}, c)  # no offline J: lambda unchanged
    assert state.lam == 0.0


def test_pair_focusing_reads_running_logits_and_normalises_per_kind():
    """Weights from the running logit (the batch's where NaN), divided by each kind's mean."""
    from scdpo.train.losses import pair_focus_weights

    z = torch.tensor([0.0, 0.0, 1.0, -1.0])
    running = torch.tensor([2.0, float("nan"), -2.0, float("nan")])
    harmful = torch.tensor([True, True, False, False])
    w, raw = pair_focus_weights(z, running, harmful, 1.0, {})
    r = [sig(-2.0), sig(0.0), sig(2.0), sig(1.0)]
    assert raw["harmful"].item() == pytest.approx((r[0] + r[1]) / 2)
    assert w.tolist() == pytest.approx([r[0] / ((r[0] + r[1]) / 2), r[1] / ((r[0] + r[1]) / 2),
                                        r[2] / ((r[2] + r[3]) / 2), r[3] / ((r[2] + r[3]) / 2)], rel=1e-5)
    # with running means per kind, those divide instead
    w2, _ = pair_focus_weights(z, running, harmful, 1.0, {"harmful": 0.5, "clean": 0.25})
    assert w2.tolist() == pytest.approx([r[0] / 0.5, r[1] / 0.5, r[2] / 0.25, r[3] / 0.25], rel=1e-5)


def test_pair_focusing_with_one_kind_absent_gives_its_mean_nan_and_weights_the_other():
    """A batch of one kind: the absent kind's raw mean is NaN (update_state skips it), every weight finite."""
    from scdpo.train.losses import pair_focus_weights

    z = torch.tensor([0.5, -1.0, 2.0])
    w, raw = pair_focus_weights(z, None, torch.tensor([False, False, False]), 2.0, {})
    r = torch.sigmoid(-z).pow(2)
    assert torch.isnan(raw["harmful"]) and raw["clean"].item() == pytest.approx(r.mean().item())
    assert w.tolist() == pytest.approx((r / r.mean()).tolist(), rel=1e-6)
    w_run, _ = pair_focus_weights(z, None, torch.tensor([False, False, False]), 2.0, {"harmful": 0.1})
    assert torch.equal(w_run, w)  # a running mean of the absent kind changes nothing


def test_pair_focusing_in_the_loss_and_its_running_means():
    c = cfg(focus_gamma=2.0, focus_signal="pair")
    info = PairBatchInfo(cost_w=COST_W, cost_l=COST_L, harmful=torch.tensor([True, False]),
                         hardness=torch.tensor([-3.0, float("nan")]))
    loss, stats = get_loss("sc-dpo")(ERR_W, ERR_L, REF_W, REF_L, info, c, LossState())
    # one pair per kind: each normalised weight is 1, whatever its hardness
    assert loss.tolist() == pytest.approx([nll(Z[0]), nll(Z[1])], rel=1e-5)
    assert stats["focus_raw_harmful"].item() == pytest.approx(sig(3.0) ** 2)
    state = update_state(LossState(), {k: float(v) for k, v in stats.items()}, c)
    assert state.focus_mean_kind["harmful"] == pytest.approx(sig(3.0) ** 2)
    again = LossState.from_dict(state.to_dict())
    assert again.focus_mean_kind == pytest.approx(state.focus_mean_kind)


def test_pair_hardness_running_average_and_state():
    from scdpo.train.focus import PairHardness

    h = PairHardness(4, "cpu", ema=0.5)
    assert torch.isnan(h.lookup([0, 1])).all()
    h.observe([0, 2], torch.tensor([1.0, -2.0]))
    h.commit()
    h.observe([0], torch.tensor([3.0]))
    h.commit()
    assert h.lookup([0, 2]).tolist() == [2.0, -2.0] and math.isnan(h.lookup([3]).item())
    h.observe([3, 3], torch.tensor([4.0, 2.0]))  # twice in one step: applied in order
    h.commit()
    assert h.lookup([3]).item() == 3.0
    h.observe([1], torch.tensor([9.0]))
    h.discard()
    h.commit()
    assert math.isnan(h.lookup([1]).item())
    other = PairHardness(4, "cpu")
    other.load_state_dict(h.state_dict())
    assert torch.equal(other.z.nan_to_num(), h.z.nan_to_num())
    with pytest.raises(ValueError, match="same dataset"):
        PairHardness(5, "cpu").load_state_dict(h.state_dict())


def test_loss_specs_say_what_each_loss_needs():
    """The registry, not the trainer, knows which data and state a loss needs."""
    from scdpo.train.losses import LOSSES

    plain = cfg(cost_margin=0.0, constraint=False, focus_gamma=0.0)
    assert not LOSSES["dpo"].needs_costs(plain) and LOSSES["dpo"].kinds is None
    assert LOSSES["safetydpo"].kinds == ("harmful",)
    assert not LOSSES["sc-dpo"].needs_costs(plain) and LOSSES["sc-dpo"].state(plain) == frozenset()
    assert LOSSES["sc-dpo"].needs_costs(cfg(cost_margin=1.0))
    on_policy = cfg(constraint=True, constraint_source="policy", constraint_form="weight", focus_gamma=2.0,
                    focus_signal="pair")
    assert LOSSES["sc-dpo"].state(on_policy) == {"pair_hardness", "policy_probe"}
    assert not LOSSES["sc-dpo"].needs_costs(on_policy)  # the weighted form reads the kind, not the costs
