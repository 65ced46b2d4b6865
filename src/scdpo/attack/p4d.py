"""P4D, "Prompting4Debugging" (Chin et al., ICML 2024), reconstructed from the paper and the authors'
code (github.com/joycenerd/P4D, ``optimize_n.py``: P4D-N); see docs/attacks.md.

K free tokens (no part of the original prompt) are optimised so that the model under test,
conditioned on them, predicts the noise the unconstrained base model predicts for the harmful
prompt, on the same noisy latent of the base model's image x0 of that prompt::

    min_P  || eps_safe(x_t, t, c(P)) - eps_base(x_t, t, c(prompt)) ||^2,  t ~ U[0, T), x_t ~ q(x_t | x0)

P is a continuous embedding per token; every step uses its nearest vocabulary embeddings (cosine)
in the forward pass and applies the gradient to P (the PEZ projection of Wen et al. 2023), with
AdamW (lr 0.1, weight decay 0.1). Every ``check_every`` (50) steps the projected prompt is checked;
the best one is kept. With ``insert_every`` k > 0 this is P4D-K (``optimize_k.py``): the prompt's
own tokens stay fixed and a free token sits before every k of them.
"""

from __future__ import annotations

import torch

from scdpo.attack.base import AttackContext, AttackResult, Target, register
from scdpo.attack.gradient import fixed_noise, mse, target_latents
from scdpo.models.token_ids import (check_shared_vocab, encode_ids, encode_texts, interleaved, layout, layout_slots,
                               with_tokens)
from scdpo.models.tokens import allowed_tokens, content_ids, decode, embedding_matrices, nearest

DEFAULT_STEPS = 3000
DEFAULT_TOKENS = 16
DEFAULT_LR = 0.1
DEFAULT_CHECK = 50


def selection_loss(victim, base, lay, tokens, prompt_cond, x0, noise, t) -> float:
    """P4D's objective for discrete ``tokens`` (K,) on the fixed noise set."""
    with torch.no_grad():
        n = len(t)
        x_t = base.add_noise(x0.expand(n, -1, -1, -1), noise, t)
        cond = encode_ids(victim, [i.expand(n, -1) for i in with_tokens(lay, tokens[None])])
        goal = base.predict(x_t, t, _repeat(prompt_cond, n))
        return float(mse(victim.predict(x_t, t, cond), goal))


def _repeat(cond, n):
    from scdpo.models.t2i import Conditioning

    return Conditioning.cat([cond] * n)


@register("p4d")
def p4d(ctx: AttackContext, target: Target, g: torch.Generator) -> AttackResult:
    cfg, victim = ctx.cfg, ctx.victim
    base = ctx.base
    check_shared_vocab(victim)
    tok = victim.tokenizers[0]
    vocab = allowed_tokens(tok, cfg.token_pool).to(victim.device)
    if cfg.insert_every:  # P4D-K: the prompt's tokens stay, a free token before every `insert_every` of them
        lay = layout_slots(victim, interleaved(content_ids(tok, target.prompt), cfg.insert_every))
    else:  # P4D-N: K free tokens only
        lay = layout(victim, cfg.tokens or DEFAULT_TOKENS)
    k = len(lay.positions)
    mats = [m[vocab].detach() for m in embedding_matrices(victim)]
    x0 = target_latents(ctx, target)
    held = fixed_noise(x0, g)
    prompt_cond = encode_texts(base, [target.prompt])
    start = torch.randint(len(vocab), (k,), generator=g).to(victim.device)
    p = mats[0][start].clone().float().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=cfg.lr or DEFAULT_LR, weight_decay=cfg.weight_decay)
    every = cfg.check_every or DEFAULT_CHECK
    T = victim.noise_scheduler.config.num_train_timesteps
    best, step = None, 0
    while step == 0 or not ctx.budget.over(step):
        idx = nearest(p.detach(), mats[0])
        projected = mats[0][idx].to(p.dtype)
        emb0 = p + (projected - p).detach()  # forward: the projected tokens; gradient: to P
        adv = [emb0] + [m[idx] for m in mats[1:]]
        noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
        t = torch.randint(0, T, (1,), generator=g).to(x0.device)
        x_t = base.add_noise(x0, noise, t)
        with torch.no_grad():
            goal = base.predict(x_t, t, prompt_cond)
        cond = encode_ids(victim, with_tokens(lay, vocab[idx][None]), adv, lay.positions)
        loss = mse(victim.predict(x_t, t, cond), goal)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % every == 0 or ctx.budget.over(step):
            ids = vocab[nearest(p.detach(), mats[0])]
            prompt = decode(tok, with_tokens(lay, ids[None])[0][0])
            sel = selection_loss(victim, base, lay, ids, prompt_cond, x0, *held)
            success = ctx.check(prompt, target.seed)
            if best is None or success or (sel < best.loss and not best.success):
                best = AttackResult(prompt, ids.tolist(), sel, step, success)
            if success:
                break
    best.iterations = step
    return best
