"""The safe anchor (our addition to SC-DPO; docs/method.md, "Safe anchor").

On harmful prompts, preference training alone learns to *destroy* the harmful object: Diffusion-DPO
raises the policy's error on the loser, and the cheapest way is to turn any state that starts to
look like the harmful sprite into a smear (docs/results.md, fourth round: 40-70% of harmful prompts
drew no object at all). The anchor gives the harmful prompt a target instead:

``A = || eps_theta(x, t, c_harm) - sg[eps_ref(x, t, c_safe)] ||^2``   (mean over latent elements)

with ``c_safe`` the prompt's minimally edited safe counterpart (the dataset's ``safe_caption``,
CoProV2-style) and ``eps_ref`` the frozen base model. Minimising ``A`` on every state the sampler
visits makes the policy's sampling trajectory under ``c_harm`` the base model's under ``c_safe``,
which draws a good safe object. It is the model-based target of Concept Ablation (Kumari et al.
2023, with the counterpart as the anchor concept) measured on ESD's states (Gandikota et al. 2023:
the policy's own sampling trajectory, stopped at a random step), which are the states evaluation
sampling visits; ``anchor_states="winner"`` uses the pair's noisy winner instead (off-policy).
The trainer adds ``q * (beta/2) * sum(A) / B`` to the loss, the scale of the winner term.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from scdpo.models.speed import to_device
from scdpo.models.t2i import Conditioning, T2IModel
from scdpo.prompts.edits import ARTICLES, differing_spans

__all__ = ["AnchorInputs", "AnchorTerms", "StateBank", "anchor_inputs", "anchor_rows", "anchor_terms", "build_bank",
           "clean_rows", "hold_weights", "masked_prompt", "mix_conditioning", "policy_states"]


class AnchorInputs(NamedTuple):
    """The anchor's states ``x`` at timesteps ``t`` (n,), the harmful prompts' conditioning the
    policy predicts under, and the reference's prediction under the safe prompts (the target).
    With ``anchor_clean_weight``, the ``clean`` rows before those of ``uncond`` are the on-policy
    hold's: clean prompts' states, the policy conditioned on the clean prompt, the reference's
    prediction under it. The last ``uncond`` rows are the last ``uncond`` states above again, under
    the empty prompt, with the reference's unconditional prediction as target: every state with
    ``anchor_uncond_weight``, else the hold's states with ``anchor_clean_guided``."""

    x: torch.Tensor
    t: torch.Tensor
    cond: Conditioning
    target: torch.Tensor
    clean: int = 0
    uncond: int = 0  # the last rows: the last `uncond` states again, under the empty prompt


class AnchorTerms(NamedTuple):
    """Per row, the anchor-side terms of docs/method.md (f)-(h): ``anchor`` A on the harmful
    prompts' states, ``hold`` C on the clean prompts' (in its guided form with
    ``anchor_clean_guided``), ``uncond`` U on the empty prompt's rows."""

    anchor: torch.Tensor
    hold: torch.Tensor
    uncond: torch.Tensor


NEUTRAL_WORD = "thing"


def masked_prompt(harmful: str, safe: str, word: str = NEUTRAL_WORD) -> str:
    """``harmful`` with the words that differ from its minimally edited ``safe`` counterpart
    replaced by ``word`` ("a small dagger on the left" / "a small banana on the left" ->
    "a small thing on the left"): the prompt without its harmful words, found from the pair alone,
    so no list of harmful words is needed (and none held out for evaluation is used)."""
    words, out, at = harmful.split(), [], 0
    for i, j in differing_spans(harmful, safe):
        out += words[at:i]
        # "an axe" / "a teapot" differ from their article on: keep one
        out += ["a", word] if words[i].lower() in ARTICLES else [word]
        at = j
    return " ".join(out + words[at:])


def anchor_rows(batch: dict) -> list[int]:
    """Rows of ``batch`` that are harmful pairs with a safe counterpart prompt."""
    safe = batch.get("safe_caption") or [""] * len(batch["caption"])
    return [i for i, (h, s) in enumerate(zip(batch["harmful"], safe)) if bool(h) and s]


def clean_rows(batch: dict) -> list[int]:
    """Rows of ``batch`` that are clean pairs (the on-policy hold's prompts)."""
    return [i for i, h in enumerate(batch["harmful"]) if not bool(h)]


def hold_weights(reward_min: np.ndarray, harmful: np.ndarray, focus: float) -> np.ndarray:
    """Per pair, the on-policy hold's weight with ``anchor_clean_focus`` = gamma (docs/method.md,
    "(g) The on-policy hold"): over the clean pairs, w_i = (1 + gamma r_i) / mean_j (1 + gamma r_j),
    r_i in [0, 1] the rank of the pair's weaker reward from the top (1: the lowest, the prompt the
    base model meets least surely; tied rewards share their mean rank). Mean 1 over the clean pairs,
    so the hold's dose is unchanged on average; 1 for harmful pairs and for gamma = 0."""
    w = np.ones(len(harmful), dtype=np.float32)
    clean = np.flatnonzero(~np.asarray(harmful, bool))
    if focus <= 0 or len(clean) < 2:
        return w
    # average ranks (0-based) of -reward: the lowest reward ranks highest, ties share their mean
    _, inverse, counts = np.unique(-np.asarray(reward_min, np.float64)[clean], return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    r = (first + (counts - 1) / 2)[inverse] / (len(clean) - 1)
    raw = 1 + focus * r
    w[clean] = raw / raw.mean()
    return w


def _trajectory(model: T2IModel, policy, cond: Conditioning, gen: torch.Generator, steps: int, guidance: float,
                stop: int | None = None, predict=None):
    """Yield ``(x_k, t_k)`` along the policy's guided DPM-Solver++ trajectory under ``cond`` from
    fresh noise (``gen``): the state before each step k = 0, 1, ... (up to ``stop``, excluded by
    the sampler step: the state at ``stop`` is the last one yielded). ``predict``: how the UNet is
    called (default ``model.predict``; the trainer passes a :class:`scdpo.models.graphs.GraphedPredict`
    with cuda_graphs)."""
    predict = predict or model.predict
    from scdpo.models.sampling import make_scheduler
    from scdpo.train.model import using_unet

    n = len(cond)
    scheduler = make_scheduler("dpmsolver++", model.scheduler_config, model.family)
    scheduler.set_timesteps(steps, device=model.device)
    side = model.resolution // model.vae_scale_factor
    lat = torch.randn((n, model.latent_channels, side, side), generator=gen).to(model.device, model.dtype)
    lat = lat * getattr(scheduler, "init_noise_sigma", 1.0)
    scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
    both = Conditioning.cat([model.unconditional(n), cond]) if guidance > 1 else cond
    last = steps - 1 if stop is None else stop
    with using_unet(model, policy):
        for k, t in enumerate(scheduler.timesteps):
            yield scale(lat, t), t.reshape(1).repeat(n).to(model.device)
            if k == last:
                return
            x = scale(torch.cat([lat, lat]) if guidance > 1 else lat, t)
            pred = predict(x, t, both)
            if guidance > 1:
                uncond, text = pred.chunk(2)
                pred = uncond + guidance * (text - uncond)
            lat = scheduler.step(pred, t, lat, return_dict=False)[0]


@torch.no_grad()
def policy_states(model: T2IModel, policy, cond: Conditioning, gen: torch.Generator, steps: int,
                  guidance: float, predict=None) -> tuple[torch.Tensor, torch.Tensor]:
    """States of the policy's guided trajectory under ``cond`` (fresh noise from ``gen``), stopped
    before step ``k`` (uniform in 0..steps-1, one ``k`` per batch, as the scheduler steps a batch
    together): returns ``(x_k, t_k)`` with ``t_k`` repeated per sample."""
    k = int(torch.randint(steps, (1,), generator=gen))
    for x, t in _trajectory(model, policy, cond, gen, steps, guidance, stop=k, predict=predict):
        pass
    return x, t


class StateBank:
    """``anchor_refresh = K > 1``: the policy's trajectory states, refreshed every K optimizer
    steps. One refresh samples ``n_prompts`` of the dataset's harmful prompts in one batch and keeps
    the state before *every* step (``steps`` states per prompt); each micro-batch then draws its
    anchor states from the bank. The trajectory costs ``steps`` guided UNet calls of the whole
    bank per K steps instead of up to ``steps`` calls of the micro-batch every step: the same
    states in far fewer, larger launches (the EmojiWorld UNet is launch-bound on a GPU), at most K
    steps stale, as the on-policy constraint's probe (docs/method.md, "Safe anchor")."""

    def __init__(self, prompts: list[tuple[str, str]], n_prompts: int, steps: int, guidance: float, seed: int):
        if not prompts:
            raise ValueError("the safe anchor found no harmful pair with a safe_caption in the dataset")
        self.prompts, self.n, self.steps, self.guidance, self.seed = sorted(set(prompts)), n_prompts, steps, guidance, seed
        self.x = self.t = None
        self.index: list[int] = []

    @torch.no_grad()
    def refresh(self, model: T2IModel, policy, step: int, process_index: int = 0, predict=None) -> None:
        """New states from the current policy, a function of (seed, step, process) only, so a run
        resumed at a refresh step redraws what an uninterrupted one drew."""
        rng = np.random.default_rng([self.seed, step, process_index])
        pick = rng.choice(len(self.prompts), size=self.n, replace=self.n > len(self.prompts))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        cond = model.encode_prompts([self.prompts[i][0] for i in pick])
        xs, ts = zip(*_trajectory(model, policy, cond, gen, self.steps, self.guidance, predict=predict))
        self.x, self.t = torch.cat(xs), torch.cat(ts)
        self.index = [int(i) for i in pick] * len(xs)

    def draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
        """``n`` states of the bank (with replacement): ``(x, t, harmful captions, safe captions)``."""
        rows = torch.randint(len(self.x), (n,), generator=gen)
        prompts = [self.prompts[self.index[i]] for i in rows.tolist()]
        rows = to_device(rows, self.x.device)
        return self.x[rows], self.t[rows], [p[0] for p in prompts], [p[1] for p in prompts]


@torch.no_grad()
def anchor_inputs(cfg, model: T2IModel, policy, reference, batch: dict, gen: torch.Generator,
                  winners: torch.Tensor | None = None, bank: StateBank | None = None,
                  predict=None) -> AnchorInputs | None:
    """The anchor's inputs for ``batch`` (:func:`_states`), then the empty prompt's rows after them,
    with the reference's unconditional prediction as target: every state again with
    ``anchor_uncond_weight`` (docs/method.md, (h)), else the hold's states with
    ``anchor_clean_guided`` ((g), "The guided form")."""
    a = _states(cfg, model, policy, reference, batch, gen, winners, bank, predict)
    # the empty prompt's rows: every state for (h), the hold's states alone for the guided hold
    n = 0 if a is None else len(a.x) if cfg.anchor_uncond_weight > 0 else a.clean if cfg.anchor_clean_guided else 0
    if n == 0:
        return a
    x, t, empty = a.x[len(a.x) - n:], a.t[len(a.x) - n:], model.unconditional(n)
    target = reference(model, x, t, empty).float()
    return AnchorInputs(torch.cat([a.x, x]), torch.cat([a.t, t]), Conditioning.cat([a.cond, empty]),
                        torch.cat([a.target, target]), a.clean, uncond=n)


def anchor_terms(pred: torch.Tensor, inputs: AnchorInputs, guided: float | None = None) -> AnchorTerms:
    """The per-row terms from the policy's predictions ``pred`` on ``inputs``' rows. Each is a mean
    over latent elements of a squared difference from the target: A and U as docs/method.md (f) and
    (h) write them, C as (g) does, or with ``guided`` = w (``anchor_clean_guided``; (g), "The
    guided form") on what guidance at w draws,

    ``C_g = || w dc - (w - 1) du ||^2 / w^2``,  ``dc = eps_theta(c) - eps_ref(c)``, ``du = eps_theta("") - eps_ref("")``,

    on each clean state (its own row and its row under the empty prompt); the division by w^2 makes
    C_g = C where du = 0, so the weight q_c keeps its scale."""
    diff = pred - inputs.target
    per_row = diff.pow(2).mean(dim=(1, 2, 3))
    body = len(pred) - inputs.uncond
    a, c, u = per_row[:body - inputs.clean], per_row[body - inputs.clean:body], per_row[body:]
    if guided is not None and inputs.clean:
        if inputs.uncond < inputs.clean:
            raise ValueError("the guided hold needs the hold's states under the empty prompt: build the inputs "
                             "with anchor_clean_guided")
        dc, du = diff[body - inputs.clean:body], diff[len(pred) - inputs.clean:]
        c = (dc - (guided - 1) / guided * du).pow(2).mean(dim=(1, 2, 3))
    return AnchorTerms(a, c, u)


def _states(cfg, model: T2IModel, policy, reference, batch: dict, gen: torch.Generator,
            winners: torch.Tensor | None = None, bank: StateBank | None = None,
            predict=None) -> AnchorInputs | None:
    """The anchor's states for ``batch`` (None when it holds no harmful pair with a safe prompt):
    one state per such pair, reached under the harmful prompt; with ``anchor_keyword_dropout``,
    the policy predicts on it under the prompt with its harmful words masked (:func:`masked_prompt`);
    with ``anchor_target_word``, the target prompt has them replaced by that one safe object.
    ``cfg``: TrainConfig (anchor_states, anchor_steps, anchor_guidance, the two above);
    ``winners``: the batch's winner latents, needed for ``anchor_states="winner"``; ``bank``: with
    ``anchor_refresh > 1``, the states (and their prompts) are drawn from it instead; ``predict``:
    how the trajectory calls the UNet (:func:`_trajectory`)."""
    rows = anchor_rows(batch)
    # the on-policy hold (anchor_clean_weight): the clean prompts ride on the same trajectory, after
    # the harmful rows; their target is the reference under their own prompt
    held = [batch["caption"][i] for i in clean_rows(batch)] if cfg.anchor_clean_weight > 0 else []
    if not rows and not held:
        return None
    harmful, safe = [batch["caption"][i] for i in rows], [batch["safe_caption"][i] for i in rows]
    if cfg.anchor_states == "policy" and bank is not None:
        x, t, harmful, safe = bank.draw(len(rows), gen)
        cond = model.encode_prompts(harmful)
    elif cfg.anchor_states == "policy":
        cond = model.encode_prompts(harmful + held)
        x, t = policy_states(model, policy, cond, gen, cfg.anchor_steps, cfg.anchor_guidance, predict)
        if held:  # the hold needs no masking or target word: the states, the prompt and the target are its own
            target = reference(model, x, t, model.encode_prompts([*_targets(cfg, harmful, safe), *held])).float()
            if cfg.anchor_keyword_dropout > 0:
                cond = model.encode_prompts([*_dropped(cfg, harmful, safe, gen), *held])
            return AnchorInputs(x, t, _mixed(cfg, model, cond, safe, gen), target, clean=len(held))
    else:
        cond = model.encode_prompts(harmful)
        x0 = winners[to_device(rows, winners.device)]
        noise = to_device(torch.randn(x0.shape, generator=gen), x0.device, x0.dtype)
        t = to_device(model.sample_timesteps(len(rows), gen), model.device)
        x = model.add_noise(x0, noise, t)
    if cfg.anchor_keyword_dropout > 0:  # the policy predicts under the prompt without its harmful words
        cond = model.encode_prompts(_dropped(cfg, harmful, safe, gen))
    target = reference(model, x, t, model.encode_prompts(_targets(cfg, harmful, safe))).float()
    return AnchorInputs(x, t, _mixed(cfg, model, cond, safe, gen), target)


def mix_conditioning(cond: Conditioning, toward: Conditioning, share: torch.Tensor) -> Conditioning:
    """``(1 - a_i) c_i + a_i c'_i`` for the first ``len(toward)`` rows of ``cond`` (c) and the rows
    of ``toward`` (c'), ``a_i = share[i]``; the rows after them are kept (docs/method.md, (i)). The
    text encoder's outputs are mixed token by token (and the pooled embedding, where the family has
    one), as Ring-A-Bell's concept vectors are differences of whole prompt embeddings."""
    n = len(toward)
    w = torch.zeros(len(cond))
    w[:n] = share

    def mix(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        if a is None:
            return None
        b = torch.cat([b.to(a.device, a.dtype), a[n:]])
        return a + w.to(a.device, a.dtype).view(-1, *[1] * (a.dim() - 1)) * (b - a)
    return Conditioning(mix(cond.context, toward.context), mix(cond.pooled, toward.pooled), cond.add_time_ids)


def _mixed(cfg, model: T2IModel, cond: Conditioning, safe: list[str], gen: torch.Generator) -> Conditioning:
    """With ``anchor_mix`` = a_max: the harmful rows of ``cond`` (the first ``len(safe)``) moved a
    share a ~ U(0, a_max) towards their safe counterparts' conditioning; else ``cond``. Drawn after
    the states, so a run's states are the same with and without it."""
    if cfg.anchor_mix <= 0 or not safe:
        return cond
    share = torch.rand(len(safe), generator=gen) * cfg.anchor_mix
    return mix_conditioning(cond, model.encode_prompts(safe), share)


def _dropped(cfg, harmful: list[str], safe: list[str], gen: torch.Generator) -> list[str]:
    """The policy's prompts with anchor_keyword_dropout: the harmful words masked on a share of rows."""
    drop = (torch.rand(len(harmful), generator=gen) < cfg.anchor_keyword_dropout).tolist()
    return [masked_prompt(h, s) if d else h for h, s, d in zip(harmful, safe, drop)]


def _targets(cfg, harmful: list[str], safe: list[str]) -> list[str]:
    """The target prompts: the safe counterparts, or with anchor_target_word one safe object for
    every harmful concept (a target no word has to name)."""
    if cfg.anchor_target_word:
        return [masked_prompt(h, s, cfg.anchor_target_word) for h, s in zip(harmful, safe)]
    return safe


def build_bank(cfg, pairs) -> StateBank | None:
    """The run's state bank (None unless anchor_states is policy and anchor_refresh > 1)."""
    if cfg.anchor_weight <= 0 or cfg.anchor_states != "policy" or cfg.anchor_refresh <= 1:
        return None
    prompts = [(c, s) for c, s, h in zip(pairs.captions, pairs.safe_captions, pairs.harmful) if h and s]
    return StateBank(prompts, cfg.anchor_bank, cfg.anchor_steps, cfg.anchor_guidance, seed=20_000 + cfg.seed)
