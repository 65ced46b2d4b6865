"""Adversarial anchor conditionings (our additions, twenty-second round; docs/method.md, "(j) The
adversarial anchor" and "(k) P4D in the loop"; :class:`PromptBank` below).

The safe anchor (f) teaches the policy to draw the safe target under the harmful prompts' text
states. P4D (Chin et al. 2024) searches token strings whose states the edit never saw and under
which the policy still predicts what the base model predicts for the harmful prompt; against the
shipped LoRA a third of its targets succeed (docs/attacks.md). Here the anchor's harmful rows are
read under the worst text states within a small ball around their own, found by projected gradient
ascent on the anchor term (Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks", eq. 2.1, in the text encoder's output space as Receler does, Huang et al.
2023):

``delta* = argmax_{||delta_k|| <= eps ||c_k||, every token k}  A(c_harm + delta)``,
``A(c) = || eps_theta(x, t, c) - sg[eps_ref(x, t, c_target)] ||^2``

by ``anchor_adv_steps`` steps ``delta <- P(delta + alpha ||c_k|| g_k / ||g_k||)``, alpha = 2.5 eps / steps,
from delta = 0, with P the projection onto each token's ball. The policy then predicts on
``c_harm + delta*`` in the step's one forward pass, against the same target: the edit is taught on the
ball instead of the point. The clean hold's and the empty prompt's rows are left as they are, and so
is the pooled embedding of families that have one (SDXL, SD3): the ball is in the token states.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from scdpo.models.t2i import Conditioning, T2IModel
from scdpo.models.token_ids import check_shared_vocab, encode_ids, layout, room, with_tokens
from scdpo.models.tokens import allowed_tokens, decode, embedding_matrices, nearest
from scdpo.train.anchor import AnchorInputs

__all__ = ["PromptBank", "adversarial_anchor", "project_tokens", "with_bank"]


def _rows(cond: Conditioning, n: int) -> Conditioning:
    """The first ``n`` rows of ``cond`` (the anchor's harmful rows)."""
    return Conditioning(*(None if v is None else v[:n] for v in (cond.context, cond.pooled, cond.add_time_ids)))


def project_tokens(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``delta`` (n, T, D) with each token's vector scaled back onto its ball of ``radius`` (n, T, 1)
    where it lies outside."""
    norm = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(radius / norm.clamp_min(1e-12), max=1.0)


def adversarial_anchor(cfg, model: T2IModel, policy, inputs: AnchorInputs | None) -> AnchorInputs | None:
    """``inputs`` with the harmful rows' text states moved to ``c_harm + delta*`` (module docstring);
    unchanged when ``cfg.anchor_adv_eps`` is 0 or there are no harmful rows. ``cfg``: TrainConfig
    (anchor_adv_eps, anchor_adv_steps); ``policy``: the (possibly DDP-wrapped) trainable UNet, whose
    parameters get no gradient from the search."""
    if inputs is None or cfg.anchor_adv_eps <= 0:
        return inputs
    n = len(inputs.x) - inputs.clean - inputs.uncond  # the harmful rows come first
    if n == 0:
        return inputs
    from scdpo.train.model import using_unet

    unet = getattr(policy, "module", policy)  # outside DDP: this forward has no backward of the weights
    x, t, target = inputs.x[:n], inputs.t[:n], inputs.target[:n]
    head = _rows(inputs.cond, n)
    context = head.context.detach().float()
    radius = cfg.anchor_adv_eps * context.norm(dim=-1, keepdim=True)
    delta = torch.zeros_like(context)
    with torch.enable_grad(), using_unet(model, unet):
        for _ in range(cfg.anchor_adv_steps):
            delta.requires_grad_(True)
            cond = Conditioning((context + delta).to(head.context.dtype), head.pooled, head.add_time_ids)
            a = (model.predict(x, t, cond).float() - target).pow(2).mean(dim=(1, 2, 3)).sum()
            (g,) = torch.autograd.grad(a, delta)
            g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta = project_tokens(delta.detach() + 2.5 / cfg.anchor_adv_steps * radius * g, radius)
    moved = torch.cat([(context + delta).to(inputs.cond.context.dtype), inputs.cond.context[n:]])
    return inputs._replace(cond=Conditioning(moved, inputs.cond.pooled, inputs.cond.add_time_ids))


class PromptBank:
    """P4D in the loop (our addition; docs/method.md, "(k) P4D in the loop"): every
    ``anchor_p4d_every`` optimizer steps, ``anchor_p4d_rows`` strings of 16 free tokens are searched
    against the current policy with P4D-N's objective (Chin et al. 2024; scdpo.attack.p4d) on the
    anchor's own states,

    ``min_P || eps_theta(x, t, c(P)) - sg[eps_ref(x, t, c_harm)] ||^2``

    by ``anchor_p4d_steps`` AdamW steps on P with the PEZ projection (Wen et al. 2023: the forward pass
    reads the nearest vocabulary embeddings, the gradient moves P), as AdvUnlearn (Zhang et al. 2024)
    puts an attack inside unlearning. The bank holds the last search's strings as text; between
    searches a share ``anchor_p4d_share`` of the anchor's harmful rows reads a string of the bank
    instead of its prompt, against the row's own safe target (:func:`with_bank`)."""

    def __init__(self, model: T2IModel, steps: int, rows: int, tokens: int = 16):
        check_shared_vocab(model)
        self.vocab = allowed_tokens(model.tokenizers[0]).to(model.device)
        self.layout = layout(model, min(tokens, room(model.tokenizers[0])))  # 16 (P4D's), or what fits
        self.steps, self.rows = steps, rows
        self.texts: list[str] = []

    def register(self, acc) -> None:
        """Save and load the bank with accelerate's checkpoints (one JSON file per process), so a
        resumed run reads the strings the uninterrupted one read."""
        from scdpo.utils.io import atomic_write_text

        name = f"p4d_bank-{acc.process_index}.json"

        def save(models, weights, output_dir):
            atomic_write_text(Path(output_dir) / name, json.dumps(self.texts))

        def load(models, input_dir):
            path = Path(input_dir) / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: this checkpoint was made without anchor_p4d_every; "
                                        "resume with the settings it was made with")
            self.texts = json.loads(path.read_text())
        acc.register_save_state_pre_hook(save)
        acc.register_load_state_pre_hook(load)

    def search(self, model: T2IModel, policy, reference, inputs: AnchorInputs | None, gen: torch.Generator) -> None:
        """Replace the bank by strings searched on the first ``rows`` harmful rows of ``inputs``
        (kept as it is when there are none); ``gen`` draws the starting tokens."""
        from scdpo.train.model import using_unet

        m = 0 if inputs is None else min(self.rows, len(inputs.x) - inputs.clean - inputs.uncond)
        if m == 0:
            return
        x, t = inputs.x[:m], inputs.t[:m]
        goal = reference(model, x, t, _rows(inputs.cond, m)).float()
        mats = [e[self.vocab].detach() for e in embedding_matrices(model)]
        start = torch.randint(len(self.vocab), (m, len(self.layout.positions)), generator=gen).to(self.vocab.device)
        p = mats[0][start].clone().float().requires_grad_(True)
        opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.1)  # P4D's settings (docs/attacks.md)
        unet = getattr(policy, "module", policy)
        with torch.enable_grad(), using_unet(model, unet):
            for _ in range(self.steps):
                idx = nearest(p.detach(), mats[0])
                emb = p + (mats[0][idx].to(p.dtype) - p).detach()  # forward: the tokens; gradient: to P
                adv = [emb] + [e[idx] for e in mats[1:]]
                cond = encode_ids(model, with_tokens(self.layout, self.vocab[idx]), adv, self.layout.positions)
                loss = (model.predict(x, t, cond).float() - goal).pow(2).mean()
                (p.grad,) = torch.autograd.grad(loss, p)  # the weights get no gradient from the search
                opt.step()
        ids = with_tokens(self.layout, self.vocab[nearest(p.detach(), mats[0])])[0]
        self.texts = [decode(model.tokenizers[0], row) for row in ids]


def with_bank(cfg, model: T2IModel, inputs: AnchorInputs | None, bank: PromptBank | None,
              gen: torch.Generator) -> AnchorInputs | None:
    """``inputs`` with the first ``anchor_p4d_share * n`` (rounded half up) of its n harmful rows conditioned on
    strings of ``bank`` drawn by ``gen`` (their states and targets kept); unchanged, and nothing
    drawn, without a bank, strings or harmful rows."""
    if inputs is None or bank is None or not bank.texts:
        return inputs
    k = int(cfg.anchor_p4d_share * (len(inputs.x) - inputs.clean - inputs.uncond) + 0.5)  # half up: 0.5 of 1 row is 1
    if k == 0:
        return inputs
    pick = torch.randint(len(bank.texts), (k,), generator=gen).tolist()
    strings = model.encode_prompts([bank.texts[i] for i in pick])

    def put(new: torch.Tensor | None, old: torch.Tensor | None) -> torch.Tensor | None:
        return None if old is None else torch.cat([new.to(old.device, old.dtype), old[k:]])
    cond = inputs.cond
    return inputs._replace(cond=Conditioning(put(strings.context, cond.context), put(strings.pooled, cond.pooled),
                                             cond.add_time_ids))
