"""Cost-model objectives: small functions with one signature, ``loss(cost, logits, labels) -> scalar``.

Our reconstruction (the SC-DPO paper body is not public) of a cost model in the style of
Safe-RLHF's (Dai et al. 2023, "Safe RLHF: Safe Reinforcement Learning from Human Feedback", Eq. 5):
a pairwise Bradley-Terry term that orders costs, plus a sign term that puts the threshold at 0.
Equations and choices are written out in docs/cost-model.md.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class CostLabels(NamedTuple):
    """Per-image targets: ``harmful`` (B,) bool, ``severity`` (B,) float (0 safe, 1-3 harmful),
    ``categories`` (B, C) multi-hot float."""

    harmful: torch.Tensor
    severity: torch.Tensor
    categories: torch.Tensor


LossFn = Callable[[torch.Tensor, torch.Tensor, CostLabels], torch.Tensor]
SAFE_ANCHOR = -1.0


def harm_rank(labels: CostLabels) -> torch.Tensor:
    """The order the costs must follow: 0 for safe images, severity (at least 1) for harmful ones."""
    return torch.where(labels.harmful, labels.severity.clamp(min=1.0), torch.zeros_like(labels.severity))


def ranking_loss(cost: torch.Tensor, logits: torch.Tensor, labels: CostLabels) -> torch.Tensor:
    """Contrastive ranking: mean over every pair (i, j) of the batch with rank_i > rank_j of the
    Bradley-Terry loss ``-log sigmoid(c_i - c_j)`` (Safe-RLHF Eq. 5, first term). Harmful-vs-safe
    and higher-vs-lower-severity pairs are both covered by the rank. 0 when no pair is ordered."""
    r = harm_rank(labels)
    valid = r[:, None] > r[None, :]
    if not valid.any():
        return cost.sum() * 0.0  # keeps the graph (and the device) for a batch of one class
    diff = cost[:, None] - cost[None, :]
    return F.softplus(-diff[valid]).mean()  # softplus(-x) = -log sigmoid(x), stable


def anchor_loss(cost: torch.Tensor, logits: torch.Tensor, labels: CostLabels) -> torch.Tensor:
    """Cost anchoring: Safe-RLHF's sign term ``-log sigmoid(s * c)`` with s = +1 harmful, -1 safe
    (Eq. 5, second term), plus a squared error to fixed anchors ``a = severity`` (harmful) and
    ``a = -1`` (safe), so costs are on one scale across prompts and 0 separates safe from harmful."""
    sign = labels.harmful.float() * 2 - 1
    anchor = torch.where(labels.harmful, harm_rank(labels), torch.full_like(cost, SAFE_ANCHOR))
    return F.softplus(-sign * cost).mean() + F.mse_loss(cost, anchor)


def category_loss(cost: torch.Tensor, logits: torch.Tensor, labels: CostLabels) -> torch.Tensor:
    """Binary cross-entropy of the per-category logits against the multi-hot I2P categories."""
    return F.binary_cross_entropy_with_logits(logits, labels.categories.to(logits.dtype))


LOSSES: dict[str, LossFn] = {"ranking": ranking_loss, "anchor": anchor_loss, "category": category_loss}


def total_loss(cost: torch.Tensor, logits: torch.Tensor, labels: CostLabels,
               weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the enabled objectives (weight 0 disables one); also returns each part."""
    active = {k: w for k, w in weights.items() if w}
    if not active:
        raise ValueError("every cost-model objective is disabled; enable at least one")
    parts = {k: LOSSES[k](cost, logits, labels) for k in active}
    total = sum(active[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
