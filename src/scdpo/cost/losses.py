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
    ``categories`` (B, C) multi-hot float, optionally ``concepts`` (B, V) multi-hot float: which
    EmojiWorld concepts are drawn (render ground truth; None or V = 0 for data without them), and
    optionally ``certain`` (B,) bool: which labels are certain enough to anchor the cost scale
    (prompt-pair data, :mod:`scdpo.cost.pairs`; None: every label is)."""

    harmful: torch.Tensor
    severity: torch.Tensor
    categories: torch.Tensor
    concepts: torch.Tensor | None = None
    certain: torch.Tensor | None = None

    def select(self, idx) -> "CostLabels":
        """The rows ``idx`` of every field (index, slice, mask or index tensor)."""
        return CostLabels(*(None if t is None else t[idx] for t in self))

    def to(self, device) -> "CostLabels":
        return CostLabels(*(None if t is None else t.to(device) for t in self))

    @staticmethod
    def cat(parts: "list[CostLabels]") -> "CostLabels":
        """Rows of several label sets, in order; ``concepts`` only when every part has them."""
        if not parts:
            return CostLabels(torch.zeros(0, dtype=torch.bool), torch.zeros(0), torch.zeros(0, 7))
        return CostLabels(*(None if any(t is None for t in col) else torch.cat(col) for col in zip(*parts)))


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
    # a mask, not an index: no host sync per step on a GPU, and 0 with the graph kept for one class
    valid = (r[:, None] > r[None, :]).float()  # float32: a bf16 count rounds above 256 pairs
    diff = cost[:, None] - cost[None, :]
    return (F.softplus(-diff) * valid).sum() / valid.sum().clamp(min=1)  # softplus(-x) = -log sigmoid(x)


def anchor_loss(cost: torch.Tensor, logits: torch.Tensor, labels: CostLabels) -> torch.Tensor:
    """Cost anchoring: Safe-RLHF's sign term ``-log sigmoid(s * c)`` with s = +1 harmful, -1 safe
    (Eq. 5, second term), plus a squared error to fixed anchors ``a = severity`` (harmful) and
    ``a = -1`` (safe), so costs are on one scale across prompts and 0 separates safe from harmful.
    Only rows whose label is certain (``labels.certain``, when given) are anchored; 0 when none is."""
    sign = labels.harmful.float() * 2 - 1
    anchor = torch.where(labels.harmful, harm_rank(labels), torch.full_like(cost, SAFE_ANCHOR))
    per_image = F.softplus(-sign * cost) + (cost - anchor) ** 2
    if labels.certain is None:
        return per_image.mean()
    certain = labels.certain.to(per_image.dtype)  # a mask: no host sync (see ranking_loss)
    return (per_image * certain).sum() / certain.sum().clamp(min=1)


def category_loss(cost: torch.Tensor, logits: torch.Tensor, labels: CostLabels) -> torch.Tensor:
    """Binary cross-entropy of the per-category logits (the first C columns of ``logits``) against
    the multi-hot I2P categories."""
    c = labels.categories.shape[1]
    return F.binary_cross_entropy_with_logits(logits[:, :c], labels.categories.to(logits.dtype))


def concept_loss(cost: torch.Tensor, logits: torch.Tensor, labels: CostLabels) -> torch.Tensor:
    """Auxiliary multiple-instance concept loss: binary cross-entropy of the concept logits (the
    columns of ``logits`` after the C category ones) against the render's multi-hot concepts,
    summed over concepts and averaged over images. It teaches the shared per-location features which
    object is drawn, not only whether it is harmful. 0 when the labels carry no concepts."""
    if labels.concepts is None or labels.concepts.shape[1] == 0:
        return cost.sum() * 0.0
    c, v = labels.categories.shape[1], labels.concepts.shape[1]
    if logits.shape[1] != c + v:
        raise ValueError(f"the adapter gives {logits.shape[1] - c} concept logits but the labels have {v} concepts")
    bce = F.binary_cross_entropy_with_logits(logits[:, c:], labels.concepts.to(logits.dtype), reduction="none")
    return bce.sum(1).mean()


LOSSES: dict[str, LossFn] = {"ranking": ranking_loss, "anchor": anchor_loss, "category": category_loss,
                             "concept": concept_loss}


def total_loss(cost: torch.Tensor, logits: torch.Tensor, labels: CostLabels,
               weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the enabled objectives (weight 0 disables one); also returns each part,
    detached, on the device (read them once, not per step: each read is a host sync on a GPU)."""
    active = {k: w for k, w in weights.items() if w}
    if not active:
        raise ValueError("every cost-model objective is disabled; enable at least one")
    parts = {k: LOSSES[k](cost, logits, labels) for k in active}
    total = sum(active[k] * v for k, v in parts.items())
    return total, {k: v.detach() for k, v in parts.items()}
