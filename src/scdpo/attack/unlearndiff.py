"""UnlearnDiffAtk (Zhang et al., ECCV 2024, "To Generate or Not? Safety-Driven Unlearned Diffusion
Models Are Still Easy to Generate Unsafe Images ... For Now"), reconstructed from the paper and the
authors' code (github.com/OPTML-Group/Diffusion-MU-Attack, ``text_grad``); see docs/attacks.md.

K adversarial tokens are prepended to the harmful prompt. Each is a distribution u_k on the
probability simplex over the vocabulary; a step samples one-hot tokens from u (straight-through:
the gradient passes to u, clipped to [-1, 1]) and minimises the model under test's denoising error
on a harmful target image x0 (an image of the unaligned base model)::

    min_u  E_eps || eps_theta(x_t, t, c(prompt with tokens ~ u)) - eps ||^2,  x_t = a_t x0 + s_t eps

with Adam (lr 0.01, weight decay 0.1), each row of u projected back onto the simplex after the
step. Timesteps run in blocks of ``check_every`` (40) steps, one block per timestep, from small to
large t; after each block the argmax tokens are checked with the judge and the attack stops at the
first harmful image.
"""

from __future__ import annotations

import math

import torch

from scdpo.attack.base import AttackContext, AttackResult, Target, register
from scdpo.attack.gradient import fixed_noise, mse, target_latents
from scdpo.models.token_ids import check_shared_vocab, encode_ids, layout, with_tokens
from scdpo.models.tokens import allowed_tokens, content_ids, decode, embedding_matrices

DEFAULT_STEPS = 2000  # 50 timesteps x 40 steps, the authors' configuration
DEFAULT_TOKENS = 5
DEFAULT_LR = 0.01
DEFAULT_BLOCK = 40


def project_simplex(u: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the probability simplex (Duchi et al. 2008, sort-based;
    the authors find the same threshold by bisection)."""
    s, _ = torch.sort(u, dim=-1, descending=True)
    css = s.cumsum(-1) - 1
    k = torch.arange(1, u.shape[-1] + 1, device=u.device, dtype=u.dtype)
    rho = ((s - css / k) > 0).sum(-1, keepdim=True)
    theta = css.gather(-1, rho - 1) / rho.to(u.dtype)
    return (u - theta).clamp_min(0)


class _SampleSTE(torch.autograd.Function):
    """Forward: the given one-hot sample; backward: the gradient, clipped to [-1, 1], to u."""

    @staticmethod
    def forward(ctx, u, onehot):
        return onehot

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(-1, 1), None


def selection_loss(model, lay, tokens: torch.Tensor, x0, noise, t) -> float:
    """The denoising error of discrete ``tokens`` (K,) on the fixed noise set (lower is better)."""
    with torch.no_grad():
        cond = encode_ids(model, [i.expand(len(t), -1) for i in with_tokens(lay, tokens[None])])
        x_t = model.add_noise(x0.expand(len(t), -1, -1, -1), noise, t)
        return float(mse(model.predict(x_t, t, cond), model.noise_target(x0.expand(len(t), -1, -1, -1), noise, t)))


@register("unlearndiff")
def unlearndiff(ctx: AttackContext, target: Target, g: torch.Generator) -> AttackResult:
    cfg, model = ctx.cfg, ctx.victim
    check_shared_vocab(model)
    tok = model.tokenizers[0]
    vocab = allowed_tokens(tok, cfg.token_pool).to(model.device)
    k = cfg.tokens or DEFAULT_TOKENS
    lay = layout(model, k, content_ids(tok, target.prompt))
    mats = [m[vocab].detach() for m in embedding_matrices(model)]
    x0 = target_latents(ctx, target)
    held = fixed_noise(x0, g)
    u = torch.full((k, len(vocab)), 1.0 / len(vocab), device=model.device, requires_grad=True)
    opt = torch.optim.Adam([u], lr=cfg.lr or DEFAULT_LR, weight_decay=cfg.weight_decay)
    block = cfg.check_every or DEFAULT_BLOCK
    n_t = max(1, math.ceil(ctx.budget.iters / block))
    T = model.noise_scheduler.config.num_train_timesteps
    timesteps = [min(T // n_t // 2 + i * (T // n_t), T - 1) for i in range(n_t)]
    best, step = None, 0
    for t_value in timesteps:
        t = torch.tensor([t_value], device=model.device)
        for _ in range(block):
            if step and ctx.budget.over(step):
                break
            idx = torch.multinomial(u.detach().float().cpu(), 1, generator=g).squeeze(1).to(model.device)
            onehot = _SampleSTE.apply(u, torch.nn.functional.one_hot(idx, len(vocab)).to(u.dtype))
            cond = encode_ids(model, with_tokens(lay, vocab[idx][None]), [onehot @ m for m in mats], lay.positions)
            noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
            loss = mse(model.predict(model.add_noise(x0, noise, t), t, cond), model.noise_target(x0, noise, t))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                u.copy_(project_simplex(u))
            step += 1
        ids = vocab[u.detach().argmax(1)]
        prompt = f"{decode(tok, ids)} {target.prompt}"
        sel = selection_loss(model, lay, ids, x0, *held)
        success = ctx.check(prompt, target.seed)
        if best is None or success or (sel < best.loss and not best.success):
            best = AttackResult(prompt, ids.tolist(), sel, step, success)
        if success or ctx.budget.over(step):
            break
    best.iterations = step
    return best
