"""SAFREE (Yoon et al., ICLR 2025, "SAFREE: Training-Free and Adaptive Guard for Safe
Text-to-Image and Video Generation"): the prompt's token embeddings are projected away from the
subspace the unsafe concepts span in the text-embedding space, for the tokens that trigger it, and
only for the first denoising steps (the self-validating filter).

With C = [c_1 .. c_K] (D x K) the pooled embeddings of the unsafe concepts, P_C = C (C^T C)^+ C^T,
and p_j the pooled embedding of the prompt with word j left out (M = [p_1 .. p_n], P_M likewise):

    d_j = |(I - P_C) p_j|                                  distance of "prompt without j" to C
    j is a trigger  iff  d_j >= (1 + alpha) mean_{k != j} d_k
    e'_tok = (I - P_C) P_M e_tok   for the tokens of trigger words, e_tok otherwise
    beta = 1 - mean_tok cos(e_tok, (I - P_C) P_M e_tok)    over the prompt's real tokens
    t'   = round(T_up sigmoid(2 k (10 beta - t)))            k = 2.5, t = 5.333 (authors' code)

and the UNet sees e' at steps i <= t', e after. T_up = 10 of a 50-step schedule in the authors'
code, rescaled here to the sampler's steps. Differences (docs/baselines.md): words are masked
(dropped from the prompt text) rather than single tokens; the pooled embedding is the last real
token of the sampler's own context (CLIP: equal to the pooler output for SD 1.x/2.x) or, for
MiniLM, its mean over the real tokens; SDXL's pooled text embedding is left as is; the latent
re-attention in the Fourier domain (SAFREE's third part) is not implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from scdpo.models.guards.base import Guard, GuardRun, is_emojiworld, parse_options

REFERENCE_STEPS = 50
SIGMOID_K, SIGMOID_T = 2.5, 5.333  # the authors' f_beta constants for non-artist concepts


@dataclass
class Safree(Guard):
    """SAFREE; ``alpha``: trigger threshold; ``svf``: the self-validating filter (off: project at
    every step); ``up_t``: the filter's upper bound in steps of a 50-step schedule."""

    alpha: float = 0.01
    svf: bool = True
    up_t: float = 10
    concepts: list[str] | None = None
    name = "safree"

    @classmethod
    def from_options(cls, options: list[str], concepts: list[str] | None = None) -> Safree:
        return cls(**parse_options(options, {}, {"alpha": float, "svf": bool, "up_t": float}, "safree"),
                   concepts=concepts)

    def start(self, model, prompts, cond, uncond, config) -> SafreeRun:
        concept_basis = pooled(model, self.unsafe_concepts(model))
        projected, steps = [], []
        for b, prompt in enumerate(prompts):
            e, t = self.project(model, prompt, cond.context[b], concept_basis, config.steps)
            projected.append(e)
            steps.append(t)
        safe = type(cond)(torch.stack(projected).to(cond.context.dtype), cond.pooled, cond.add_time_ids)
        return SafreeRun(cond, uncond, config.guidance_scale, safe, torch.tensor(steps))

    def project(self, model, prompt: str, context: torch.Tensor, concept_basis: torch.Tensor,
                steps: int) -> tuple[torch.Tensor, int]:
        """The prompt's projected context (T, D) and the last step index that uses it."""
        words = prompt.split()
        if len(words) < 2:  # nothing to compare a word's removal with
            return context, -1
        spans, e = word_token_spans(model, words, context.shape[0]), context.float()
        masked = pooled(model, [" ".join(words[:j] + words[j + 1:]) for j in range(len(words))])
        dist = orthogonal(masked, concept_basis).norm(dim=1)
        n = len(words)
        mean_others = (dist.sum() - dist) / (n - 1)
        trigger = dist >= (1 + self.alpha) * mean_others
        safe_e = orthogonal(project_rows(e, masked), concept_basis)  # (I - P_C) P_M e for every token
        keep = torch.ones(e.shape[0], dtype=torch.bool)
        for j, (a, z) in enumerate(spans):
            if trigger[j]:
                keep[a:z] = False
        out = torch.where(keep[:, None].to(e.device), e, safe_e)
        if not self.svf:
            return out.to(context.dtype), steps
        real = real_token_mask(model, [prompt], e.shape[0])[0].to(e.device)
        beta = 1 - torch.nn.functional.cosine_similarity(safe_e[real], e[real], dim=1).mean().item()
        t_ref = round(self.up_t * _sigmoid(2 * SIGMOID_K * (10 * beta - SIGMOID_T)))
        return out.to(context.dtype), round(t_ref * steps / REFERENCE_STEPS)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def project_rows(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` projected onto the span of the rows of ``basis``: x B^T (B B^T)^+ B."""
    b = basis.float()
    return x @ b.T @ torch.linalg.pinv(b @ b.T) @ b


def orthogonal(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(I - P_B) x for the rows of ``x``."""
    return x - project_rows(x, basis)


def real_token_mask(model, prompts: list[str], length: int) -> torch.Tensor:
    """(B, T) True at the real tokens (specials included, padding not) of the first tokenizer."""
    tokens = model.tokenizers[0](prompts, padding="max_length", max_length=length, truncation=True,
                                 return_tensors="pt")
    return tokens.attention_mask.bool()


def pooled(model, prompts: list[str]) -> torch.Tensor:
    """(B, D) one vector per prompt in the space of the sampler's token context: the last real
    token (CLIP's end-of-text, its pooler output) or, for MiniLM, the mean over real tokens."""
    context = model.encode_prompts(prompts).context.float()
    mask = real_token_mask(model, prompts, context.shape[1]).to(context.device)
    if is_emojiworld(model):
        return (context * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return context[torch.arange(len(prompts)), mask.sum(1) - 1]


def word_token_spans(model, words: list[str], length: int) -> list[tuple[int, int]]:
    """[start, end) token positions of each word in the encoded prompt (after the start token)."""
    tokenizer, spans, at = model.tokenizers[0], [], 1
    for w in words:
        n = len(tokenizer(w, add_special_tokens=False).input_ids)
        spans.append((min(at, length - 1), min(at + n, length - 1)))
        at += n
    return spans


class SafreeRun(GuardRun):
    def __init__(self, cond, uncond, scale, safe, last_step: torch.Tensor):
        super().__init__(cond, uncond, scale)
        self.safe, self.last_step = safe, last_step

    def conditioning(self, i):
        from scdpo.models.conditioning import Conditioning

        use = (i <= self.last_step).to(self.cond.context.device)[:, None, None]
        text = Conditioning(torch.where(use, self.safe.context, self.cond.context), self.cond.pooled,
                            self.cond.add_time_ids)
        return text if self.uncond is None else Conditioning.cat([self.uncond, text])
