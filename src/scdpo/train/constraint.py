"""The on-policy safety constraint (``constraint_source="policy"``): measure what the policy itself
generates, and move lambda by dual ascent on it.

The first round's constraint read the dataset's offline images. Its winners are safe by
construction, so its J only measured the losers' likelihood, which DPO pushes down anyway: J < 0
and lambda fell to 0 within 150 steps whatever the budget (docs/results.md). Safe RLHF (Dai et al.
2023) constrains the expected cost of the policy's *own* outputs instead. Here, every
``constraint_every`` optimizer steps, the policy samples a held batch of the dataset's harmful
prompts (fixed prompts and seeds, so measurements are comparable and a resumed run repeats them),
the cost model scores the images, and

``lambda <- max(0, lambda + lambda_lr * (measure - cost_budget))``

with ``measure`` the unsafe rate (fraction of images with cost > 0) or the mean cost
(:func:`scdpo.train.losses.dual_ascent`). Each process samples its share of the prompts and the
counts are summed over processes, so all hold the same lambda.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)
MEASURES = ("unsafe_rate", "cost")


def held_prompts(captions: list[str], harmful: np.ndarray, n: int, seed: int) -> list[str]:
    """``n`` distinct harmful captions of the dataset, in a seeded order (the held probe batch)."""
    pool = sorted({c for c, h in zip(captions, harmful) if h})
    if not pool:
        raise ValueError("constraint_source: policy needs harmful pairs (dataset column kind == 'harmful')")
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[:n]]


@dataclass
class PolicyProbe:
    """Samples the policy on ``prompts`` and scores the images with ``scorer`` (a cost scorer:
    images -> cost, > 0 harmful)."""

    prompts: list[str]
    scorer: object
    steps: int
    measure: str = "unsafe_rate"
    seed: int = 0

    @torch.no_grad()
    def __call__(self, acc, model) -> float:
        """The measure over all prompts (summed over processes); ``model.unet`` is the policy."""
        mine = list(range(acc.process_index, len(self.prompts), acc.num_processes))
        total = torch.zeros(2, dtype=torch.float64, device=acc.device)
        if mine:
            was_training = model.unet.training
            model.unet.eval()
            try:
                images = model.sample([self.prompts[i] for i in mine], [self.seed + i for i in mine],
                                      steps=self.steps, progress=False, batch_size=len(mine))
            finally:
                model.unet.train(was_training)
            cost = self.scorer(images, None).double()
            value = (cost > 0).double() if self.measure == "unsafe_rate" else cost
            total += torch.stack([value.sum(), torch.tensor(float(len(mine)), dtype=torch.float64)]).to(acc.device)
        if acc.num_processes > 1:
            total = acc.reduce(total, "sum")
        return float(total[0] / total[1].clamp_min(1))


def build_probe(cfg, pairs, device) -> PolicyProbe:
    """The probe of a run (``cfg``: TrainConfig with constraint_source "policy"; ``pairs``: the
    PreferencePairs it trains on)."""
    from scdpo.cost import load_cost_scorer

    if not cfg.cost_model:
        raise ValueError("constraint_source: policy samples the policy and scores it with a cost model: "
                         "give --cost-model DIR (the one the dataset was built with)")
    prompts = held_prompts(pairs.captions, pairs.harmful, cfg.constraint_prompts, cfg.seed)
    return PolicyProbe(prompts, load_cost_scorer(cfg.cost_model, device), cfg.constraint_steps,
                       cfg.constraint_measure, seed=10_000 + cfg.seed)
