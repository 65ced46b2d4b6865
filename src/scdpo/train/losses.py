"""Preference losses for diffusion models, all with one signature (see :data:`LossFn`).

Every loss receives the per-sample denoising errors of the policy and of the frozen reference on
the winner and the loser of each pair (winner and loser share noise and timestep, so their errors
are comparable) and returns a loss per pair plus detached statistics for logging.

Notation (docs/method.md gives the derivations):

* ``e = mean over (C, H, W) of (prediction - target)^2``, per sample;
* implicit reward of a sample ``rho = -(beta / 2) (e_theta - e_ref)`` (Diffusion-DPO's
  reparametrised reward, Wallace et al. 2024, with the factor 1/2 of the authors' code);
* Diffusion-DPO logit ``z = rho_w - rho_l = -(beta/2) [(e_w - e_l) - (e_ref_w - e_ref_l)]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "LossFn", "LossSpec", "LossState", "PairBatchInfo", "dpo_logit", "dual_ascent", "get_loss", "update_state"]

FOCUS_EMA = 0.9  # decay of the running mean that normalises focusing weights (see update_state)


@dataclass
class PairBatchInfo:
    """Per-pair side information.  ``cost_w``/``cost_l``: safety costs of winner and loser
    (higher = more harmful, 0 = the safe/harmful threshold), float32 (B,) or None when the dataset
    has none; ``harmful``: bool (B,), pairs from harmful prompts, or None; ``drift``: float32 (B,),
    the mean squared difference between policy and reference predictions on the pair (with
    gradient; ``scdpo.train.step.pair_errors`` computes it), or None; ``hardness``: float32 (B,), each
    pair's running Diffusion-DPO logit (:class:`scdpo.train.focus.PairHardness`; NaN for a pair not
    seen yet), read by focusing with ``focus_signal="pair"``, or None."""

    cost_w: torch.Tensor | None = None
    cost_l: torch.Tensor | None = None
    harmful: torch.Tensor | None = None
    drift: torch.Tensor | None = None
    hardness: torch.Tensor | None = None


@dataclass
class LossState:
    """Training state the losses read, updated once per optimizer step by :func:`update_state` and
    saved in every checkpoint: ``lam`` the Lagrange multiplier of the safety constraint,
    ``focus_mean`` the running mean of the focusing weights (None before the first step),
    ``focus_mean_kind`` the same per pair kind ("harmful", "clean") for ``focus_signal="pair"``, and
    ``measured`` the last on-policy measurement of the constraint (``constraint_source="policy"``,
    :mod:`scdpo.train.constraint`)."""

    lam: float = 0.0
    focus_mean: float | None = None
    focus_mean_kind: dict[str, float] = field(default_factory=dict)
    measured: float | None = None

    def to_dict(self) -> dict:
        return {"lam": self.lam, "focus_mean": self.focus_mean, "focus_mean_kind": dict(self.focus_mean_kind),
                "measured": self.measured}

    @classmethod
    def from_dict(cls, d: dict) -> LossState:
        opt = lambda k: None if d.get(k) is None else float(d[k])  # noqa: E731
        return cls(lam=float(d["lam"]), focus_mean=opt("focus_mean"),
                   focus_mean_kind={k: float(v) for k, v in (d.get("focus_mean_kind") or {}).items()},
                   measured=opt("measured"))


class LossConfig(Protocol):
    """The fields of :class:`scdpo.train.config.TrainConfig` that losses read."""

    beta: float
    cost_margin: float
    constraint: bool
    focus_gamma: float
    winner_weight: float
    preserve_weight: float
    lambda_lr: float
    cost_budget: float
    constraint_source: str
    constraint_form: str
    focus_signal: str


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, PairBatchInfo, LossConfig, LossState],
                  tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``loss_fn(err_w, err_l, ref_err_w, ref_err_l, info, cfg, state) -> (loss per pair (B,), stats)``."""


def _common_stats(err_w, err_l, ref_err_w, ref_err_l, rho_w, rho_l, z) -> dict[str, torch.Tensor]:
    return {
        "implicit_acc": (z > 0).float().mean(),  # fraction of pairs the policy orders right vs the reference
        "margin": z.mean(),
        "reward_w": rho_w.mean(), "reward_l": rho_l.mean(),
        # > 0: the policy denoises this sample worse than the reference (Diffusion-DPO raises both)
        "err_w_vs_ref": (err_w - ref_err_w).mean(), "err_l_vs_ref": (err_l - ref_err_l).mean(),
        "mse_policy": torch.cat([err_w, err_l]).mean(), "mse_ref": torch.cat([ref_err_w, ref_err_l]).mean(),
    }


def _rewards(err_w, err_l, ref_err_w, ref_err_l, beta: float):
    rho_w = -0.5 * beta * (err_w.float() - ref_err_w.float())
    rho_l = -0.5 * beta * (err_l.float() - ref_err_l.float())
    return rho_w, rho_l


def dpo_loss(err_w, err_l, ref_err_w, ref_err_l, info: PairBatchInfo, cfg: LossConfig, state: LossState):
    """Diffusion-DPO (Wallace et al., CVPR 2024, eq. 14 as implemented by the authors):
    ``loss = -log sigmoid(z)``, ``z = -(beta/2) [(e_w - e_l) - (e_ref_w - e_ref_l)]``."""
    rho_w, rho_l = _rewards(err_w, err_l, ref_err_w, ref_err_l, cfg.beta)
    z = rho_w - rho_l
    return -F.logsigmoid(z), _common_stats(err_w, err_l, ref_err_w, ref_err_l, rho_w, rho_l, z)


def _need_costs(info: PairBatchInfo, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    if info.cost_w is None or info.cost_l is None:
        raise ValueError(f"sc-dpo's {part} needs the costs of both images (dataset columns cost_0 and cost_1)")
    return info.cost_w.float(), info.cost_l.float()


def cost_margin(cost_w: torch.Tensor, cost_l: torch.Tensor, m: float) -> torch.Tensor:
    """Cost-aware margin ``m * tanh((c_l - c_w)_+)``: pairs whose loser is much costlier than the
    winner must be separated by up to ``m`` logits more (an offset as in ODPO, Amini et al. 2024);
    tanh bounds it whatever the cost model's scale."""
    return m * torch.tanh(F.relu(cost_l - cost_w))


def harmfulness(cost: torch.Tensor) -> torch.Tensor:
    """Weight of a sample in the safety constraint: ``tanh(c_+)``, 0 for safe samples (c <= 0)."""
    return torch.tanh(F.relu(cost))


def focus_weights(z: torch.Tensor, gamma: float, running_mean: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic Focusing Mechanism, ``focus_signal="batch"`` (the first round's form): focal weight
    ``(1 - sigmoid(z))^gamma`` (Lin et al. 2017, with p = sigmoid(z) the probability the pair is
    ordered right), detached, divided by its mean so the effective learning rate stays DPO's.  The
    mean is the running one from :func:`update_state` (shared by all processes, so it also works at
    micro-batch 1), or the batch's before the first update.  Returns (normalised weights, raw weights)."""
    raw = torch.sigmoid(-z.detach()).pow(gamma)
    denom = raw.mean() if running_mean is None else _scalar(running_mean, raw)
    return raw / denom.clamp_min(1e-12), raw


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-dim tensor on ``like``'s device, filled there: ``torch.as_tensor(value, device=cuda)``
    copies it from the host and waits for the GPU (docs/performance.md, "Host syncs"), and dividing by the
    Python number instead would multiply by its reciprocal on CUDA, one bit off a true division."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


KINDS = ("harmful", "clean")


def pair_focus_weights(z: torch.Tensor, hardness: torch.Tensor | None, harmful: torch.Tensor | None,
                       gamma: float, running: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dynamic Focusing Mechanism, ``focus_signal="pair"``: the focal weight of a pair is computed
    from its *running* logit ``z_bar`` (an average over the draws of noise and timestep it has
    seen, :class:`scdpo.train.focus.PairHardness`; this batch's ``z`` for a pair not seen yet),
    ``w_raw = (1 - sigmoid(z_bar))^gamma``, and normalised *per kind*, ``w = w_raw / M_kind``, with
    ``M_kind`` the running mean of ``w_raw`` over the pairs of that kind (harmful or clean; the
    batch's before the first update).  One draw of (noise, t) explains most of a single ``z``'s
    variance, so a one-draw weight is mostly noise; per-kind normalisation keeps the harmful and
    the clean half of the data at their blend's weight.  Returns (weights, raw means per kind)."""
    z = z.detach()
    zbar = z if hardness is None else torch.where(torch.isnan(hardness), z, hardness.to(z.dtype))
    raw = torch.sigmoid(-zbar).pow(gamma)
    is_harm = torch.zeros_like(raw, dtype=torch.bool) if harmful is None else harmful
    w = torch.zeros_like(raw)
    raw_means = {}
    # masked sums, not raw[mask]: boolean indexing (and mask.any()) waits for the GPU, and this runs
    # between a step's UNet calls and its backward (docs/performance.md, "Host syncs"); the same mean up to
    # summation order, and a kind without pairs in the batch gets 0 / 0 = NaN, as before
    for kind, mask in zip(KINDS, (is_harm, ~is_harm)):
        raw_means[kind] = torch.where(mask, raw, 0).sum() / mask.sum()
        denom = raw_means[kind] if kind not in running else _scalar(running[kind], raw)
        w = torch.where(mask, raw / denom.clamp_min(1e-12), w)
    return w, raw_means


def sc_dpo_loss(err_w, err_l, ref_err_w, ref_err_l, info: PairBatchInfo, cfg: LossConfig, state: LossState):
    """SC-DPO as reconstructed here (the paper's formulas are not public; docs/method.md):

    ``z' = z - (m + lambda_margin) tanh((c_l - c_w)_+)``        (a) cost-aware margin, off if m = 0
    ``l_pref = w * -log sigmoid(z')``, ``w = focus(z')``        (c) focusing, off if gamma = 0
    ``loss = l_pref - a rho_w + p (beta/2) D [clean]``          (d) winner term, (e) preservation
    (b) the safety constraint, by ``cfg.constraint_source``:

    * ``"offline"`` (the first round's form): ``+ lambda * J``, ``J = (tanh(c_w+) rho_w +
      tanh(c_l+) rho_l) / 2``, lambda from dual ascent on ``E[J] - budget`` (C-DPO, Liu et al.
      2024) over the dataset's images;
    * ``"policy"`` (Safe RLHF's form, Dai et al. 2023): lambda from dual ascent on what the
      *policy itself* generates (:mod:`scdpo.train.constraint`: every K steps its samples on held
      harmful prompts are scored by the cost model), and it enters the preference signal:
      ``constraint_form="margin"`` adds ``lambda_margin = lambda`` to the cost margin of (a), the
      lambda-scaled cost margin of C-DPO's preference ``r - lambda c``; ``"weight"`` scales the
      harmful pairs' loss by ``1 + lambda`` (the Lagrangian ``L_pref + lambda L_safety``).

    ``- a rho_w`` (d) is the winner-likelihood term (RPO, Pang et al. 2024), off if a = 0; ``D``
    (e) is the policy's drift from the reference's prediction on clean pairs only (a preservation
    term, as DreamBooth's prior preservation, Ruiz et al. 2023), off if p = 0. Focusing reads one
    draw's ``z'`` (``focus_signal="batch"``) or each pair's running logit (``"pair"``,
    :func:`pair_focus_weights`).
    """
    rho_w, rho_l = _rewards(err_w, err_l, ref_err_w, ref_err_l, cfg.beta)
    z = rho_w - rho_l
    stats = _common_stats(err_w, err_l, ref_err_w, ref_err_l, rho_w, rho_l, z)
    on_policy = cfg.constraint and cfg.constraint_source == "policy"
    margin = cfg.cost_margin + (state.lam if on_policy and cfg.constraint_form == "margin" else 0.0)
    logit = z
    if margin > 0:
        cost_w, cost_l = _need_costs(info, "cost-aware margin")
        m = cost_margin(cost_w, cost_l, margin)
        logit = z - m
        stats["cost_margin"] = m.mean()
        stats["implicit_acc_margin"] = (logit > 0).float().mean()
    loss = -F.logsigmoid(logit)
    if cfg.focus_gamma > 0 and cfg.focus_signal == "pair":
        w, raw_means = pair_focus_weights(logit, info.hardness, info.harmful, cfg.focus_gamma, state.focus_mean_kind)
        loss = w * loss
        stats.update({f"focus_raw_{k}": v for k, v in raw_means.items()})
        stats.update(focus_mean=w.mean(), focus_max=w.max())
    elif cfg.focus_gamma > 0:
        w, raw = focus_weights(logit, cfg.focus_gamma, state.focus_mean)
        loss = w * loss
        stats.update(focus_raw_mean=raw.mean(), focus_mean=w.mean(), focus_max=w.max())
    if cfg.winner_weight > 0:  # (d) keep raising the preferred sample's likelihood (DPO + NLL)
        loss = loss - cfg.winner_weight * rho_w
        stats["winner_term"] = (-rho_w).mean().detach()
    if on_policy and cfg.constraint_form == "weight":
        if info.harmful is None:
            raise ValueError("sc-dpo's weighted constraint needs each pair's kind (dataset column kind)")
        loss = loss * (1 + state.lam * info.harmful.float())
    if cfg.preserve_weight > 0:  # (e) clean prompts keep the reference's predictions
        if info.drift is None:
            raise ValueError("sc-dpo's preservation term needs the policy-reference drift (PairBatchInfo.drift)")
        clean = torch.ones_like(info.drift) if info.harmful is None else (~info.harmful).float()
        loss = loss + cfg.preserve_weight * 0.5 * cfg.beta * clean * info.drift
        stats["drift_clean"] = (clean * info.drift).sum().detach() / clean.sum().clamp_min(1)
    if cfg.constraint and not on_policy:
        cost_w, cost_l = _need_costs(info, "safety constraint")
        j = 0.5 * (harmfulness(cost_w) * rho_w + harmfulness(cost_l) * rho_l)
        loss = loss + state.lam * j
        stats["constraint"] = j.mean().detach()
    return loss, stats


def dpo_logit(err_w, err_l, ref_err_w, ref_err_l, beta: float) -> torch.Tensor:
    """Diffusion-DPO's logit ``z = rho_w - rho_l`` per pair, detached (what focusing tracks)."""
    rho_w, rho_l = _rewards(err_w.detach(), err_l.detach(), ref_err_w.detach(), ref_err_l.detach(), beta)
    return rho_w - rho_l


def safetydpo_loss(err_w, err_l, ref_err_w, ref_err_l, info: PairBatchInfo, cfg: LossConfig, state: LossState):
    """SafetyDPO (Liu et al. 2024): Diffusion-DPO trained on (safe, unsafe) pairs of harmful prompts
    only; the trainer keeps only ``kind == "harmful"`` pairs, so the loss itself is :func:`dpo_loss`."""
    return dpo_loss(err_w, err_l, ref_err_w, ref_err_l, info, cfg, state)


@dataclass(frozen=True)
class LossSpec:
    """A loss and what it needs from the trainer, so that adding a loss is one function and one
    :data:`LOSSES` entry (the trainer and the config ask the spec, never the loss's name).

    Attributes:
        fn: the loss (:data:`LossFn`).
        needs_costs: whether, under a config, it reads the dataset's cost_0/cost_1 columns.
        kinds: the pair kinds it trains on by default (None: all); ``--kinds`` overrides.
        state: which training state, under a config, it needs the trainer to keep:
            ``"pair_hardness"`` (:class:`scdpo.train.focus.PairHardness`) and/or
            ``"policy_probe"`` (:class:`scdpo.train.constraint.PolicyProbe`).
    """

    fn: LossFn
    needs_costs: Callable[[LossConfig], bool] = lambda cfg: False
    kinds: tuple[str, ...] | None = None
    state: Callable[[LossConfig], frozenset[str]] = lambda cfg: frozenset()

    def __call__(self, *args):
        return self.fn(*args)


def _sc_dpo_costs(cfg) -> bool:
    policy = cfg.constraint and cfg.constraint_source == "policy"
    return cfg.cost_margin > 0 or (cfg.constraint and not policy) or (policy and cfg.constraint_form == "margin")


def _sc_dpo_state(cfg) -> frozenset[str]:
    return frozenset({"pair_hardness"} if cfg.focus_gamma > 0 and cfg.focus_signal == "pair" else set()) | (
        {"policy_probe"} if cfg.constraint and cfg.constraint_source == "policy" else set())


LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(dpo_loss),
    "sc-dpo": LossSpec(sc_dpo_loss, needs_costs=_sc_dpo_costs, state=_sc_dpo_state),
    "safetydpo": LossSpec(safetydpo_loss, kinds=("harmful",)),
}


def get_loss(name: str) -> LossSpec:
    """The registered loss ``name`` (callable as a :data:`LossFn`)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def update_state(state: LossState, stats: dict[str, float], cfg: LossConfig) -> LossState:
    """Once per optimizer step, with ``stats`` averaged over the step's micro-batches and processes:

    * dual ascent on the constraint (C-DPO): ``lambda <- max(0, lambda + lr_lambda (J - budget))``;
    * running mean of the raw focusing weights, ``M <- 0.9 M + 0.1 mean(w_raw)`` (per kind with
      ``focus_signal="pair"``).

    With ``constraint_source="policy"`` lambda is not updated here but by :func:`dual_ascent`.
    """
    if getattr(cfg, "constraint", False) and "constraint" in stats and math.isfinite(stats["constraint"]):
        state.lam = max(0.0, state.lam + cfg.lambda_lr * (stats["constraint"] - cfg.cost_budget))
    state.focus_mean = _ema(state.focus_mean, stats.get("focus_raw_mean"))
    for kind in KINDS:
        if (v := _ema(state.focus_mean_kind.get(kind), stats.get(f"focus_raw_{kind}"))) is not None:
            state.focus_mean_kind[kind] = v
    return state


def _ema(old: float | None, new: float | None) -> float | None:
    if new is None or not math.isfinite(new):
        return old
    return new if old is None else FOCUS_EMA * old + (1 - FOCUS_EMA) * new


def dual_ascent(state: LossState, measured: float, cfg: LossConfig) -> LossState:
    """The on-policy constraint's dual step (Safe RLHF, Dai et al. 2023; C-DPO's update):
    ``lambda <- max(0, lambda + lambda_lr * (measured - budget))``, ``measured`` being the unsafe
    rate or mean cost of the policy's own samples (:mod:`scdpo.train.constraint`)."""
    state.measured = float(measured)
    state.lam = max(0.0, state.lam + cfg.lambda_lr * (float(measured) - cfg.cost_budget))
    return state
