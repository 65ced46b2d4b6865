"""One Diffusion-DPO forward: per-sample denoising errors of policy and reference on a batch of
pairs.  Winner and loser share noise and timestep and go through the UNet in one batch
``[winners; losers]``; the prompt is encoded once and repeated (as Wallace et al.'s code does)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from scdpo.models.speed import to_device
from scdpo.models.t2i import Conditioning, T2IModel
from scdpo.train.losses import PairBatchInfo


def step_generator(seed: int, position: int, process_index: int) -> torch.Generator:
    """The CPU generator of one micro-batch: a function of (seed, stream position, process) only,
    so a resumed run draws the same noise, timesteps and caption dropout as an uninterrupted one
    (and CPU and GPU runs draw the same numbers). The trainer passes the stream position of the
    process's own slice and ``process_index`` 0, so a data-parallel run draws exactly what one
    process with the same global batch (by gradient accumulation) draws."""
    state = np.random.SeedSequence([seed, position, process_index]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


class PairErrors(NamedTuple):
    """What :func:`pair_errors` returns, each (B,) float32: the four denoising errors the losses
    read and the policy's drift from the reference."""

    err_w: torch.Tensor
    err_l: torch.Tensor
    ref_err_w: torch.Tensor
    ref_err_l: torch.Tensor
    drift: torch.Tensor
    extra: torch.Tensor | None = None  # the policy's predictions on ``pair_errors(extra=...)`` states

    @property
    def errors(self) -> tuple[torch.Tensor, ...]:
        """``(err_w, err_l, ref_err_w, ref_err_l)``: the first arguments of every loss."""
        return self.err_w, self.err_l, self.ref_err_w, self.ref_err_l


def batch_info(batch: dict, device, errors: PairErrors | None = None) -> PairBatchInfo:
    """The losses' side information of a batch (with ``errors``, the policy's drift too)."""
    def col(name, dtype):  # no host sync: the step's only one reads its statistics (trainer.pack_stats)
        return to_device(batch[name], device, dtype)
    return PairBatchInfo(cost_w=col("cost_w", torch.float32), cost_l=col("cost_l", torch.float32),
                         harmful=col("harmful", torch.bool), drift=None if errors is None else errors.drift)


@torch.no_grad()
def pair_latents(model: T2IModel, batch: dict, cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled VAE latents (posterior mean) of winners and losers, from ``cache`` (N, 2, C, h, w)
    when latents were precomputed, else encoded now."""
    if cache is not None:
        idx = to_device(batch["index"], cache.device)
        both = cache[idx].to(model.device)
        return both[:, 0], both[:, 1]
    images = torch.cat([batch["image_w"], batch["image_l"]]).to(model.device)
    latents = model.encode_images(images)
    return latents.chunk(2)


class PairInputs(NamedTuple):
    """A batch of pairs as the UNet sees it: ``[winners; losers]`` noised with shared noise and
    timesteps, their conditioning and regression target; ``pairs`` = B."""

    noisy: torch.Tensor
    t: torch.Tensor
    cond: Conditioning
    target: torch.Tensor
    pairs: int


def pair_inputs(model: T2IModel, batch: dict, gen: torch.Generator, *, caption_dropout: float = 0.0,
                cache: torch.Tensor | None = None, timesteps: tuple[int, int | None] = (0, None),
                clean_timesteps: tuple[int, int | None] | None = None,
                latents: tuple[torch.Tensor, torch.Tensor] | None = None) -> PairInputs:
    """What :func:`pair_errors` feeds the UNet, drawn from ``gen`` in its order (arguments: there)."""
    lat_w, lat_l = latents if latents is not None else pair_latents(model, batch, cache)
    b = len(lat_w)
    captions = list(batch["caption"])
    if caption_dropout > 0:
        drop = torch.rand(b, generator=gen) < caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    # drawn on the CPU (the same numbers on every device) and copied without a host sync (speed.to_device)
    noise = to_device(torch.randn(lat_w.shape, generator=gen), model.device, lat_w.dtype)
    t = to_device(model.sample_timesteps(b, gen, *timesteps), model.device)
    if clean_timesteps is not None and tuple(clean_timesteps) != tuple(timesteps):
        # a second draw only then, so every other run draws exactly what it drew before
        t_clean = to_device(model.sample_timesteps(b, gen, *clean_timesteps), model.device)
        harmful = to_device(batch["harmful"], model.device, torch.bool)
        t = torch.where(harmful, t, t_clean)
    latents = torch.cat([lat_w, lat_l])
    noise, t = torch.cat([noise, noise]), torch.cat([t, t])
    cond = model.encode_prompts(captions)
    cond = Conditioning.cat([cond, cond])
    noisy = model.add_noise(latents, noise, t)
    return PairInputs(noisy, t, cond, model.noise_target(latents, noise, t).float(), b)


def errors_of(pred: torch.Tensor, ref_pred: torch.Tensor, inputs: PairInputs,
              extra: torch.Tensor | None = None) -> PairErrors:
    """The :class:`PairErrors` of the policy's and the reference's predictions on ``inputs``."""
    err = (pred - inputs.target).pow(2).mean(dim=(1, 2, 3))
    ref_err = (ref_pred - inputs.target).pow(2).mean(dim=(1, 2, 3))
    drift = (pred - ref_pred).pow(2).mean(dim=(1, 2, 3)).view(2, inputs.pairs).mean(0)
    return PairErrors(*err.chunk(2), *ref_err.chunk(2), drift, extra)


def pair_errors(model: T2IModel, policy, reference, batch: dict, gen: torch.Generator, *,
                caption_dropout: float = 0.0, cache: torch.Tensor | None = None,
                timesteps: tuple[int, int | None] = (0, None),
                clean_timesteps: tuple[int, int | None] | None = None,
                extra: tuple[torch.Tensor, torch.Tensor, Conditioning] | None = None,
                latents: tuple[torch.Tensor, torch.Tensor] | None = None,
                predict=None) -> PairErrors:
    """``(err_w, err_l, ref_err_w, ref_err_l, drift)``, each (B,) float32. The errors are the mean
    over (C, H, W) of the squared error between prediction and regression target (epsilon, v or
    sample, per the model; SD3: the flow-matching velocity noise - x_0); ``drift`` is the mean squared difference between the policy's and the
    reference's predictions, averaged over winner and loser (what sc-dpo's preservation term reads).

    ``policy`` is the (possibly DDP-wrapped) trainable UNet; ``reference(model, noisy, t, cond)``
    returns the frozen reference's prediction without gradients. ``timesteps = (lo, hi)``: training
    timesteps are drawn uniformly from ``lo .. hi - 1`` (``hi`` None: the scheduler's
    ``num_train_timesteps``; SD3: indices into its ascending training timesteps, see
    :meth:`scdpo.models.families.SD3.sample_timesteps`). ``clean_timesteps``: the same bounds for
    the batch's clean pairs (``harmful`` False) when they differ (TrainConfig.clean_min_timestep).

    ``extra = (x, t, cond)``: more states the policy predicts on in the same forward pass (the safe
    anchor's, :mod:`scdpo.train.anchor`; one pass, so a DDP policy sees one forward per backward);
    their predictions (with gradient) come back as ``extra``. ``latents``: the batch's (winner,
    loser) latents when the caller already has them (:func:`pair_latents`), so they are not encoded twice.
    ``predict``: how the policy's call with gradients is made (default ``model.predict``; the trainer
    passes a :class:`scdpo.models.graphs_train.GraphedTrainPredict` with cuda_graphs).
    """
    from scdpo.train.model import using_unet

    inputs = pair_inputs(model, batch, gen, caption_dropout=caption_dropout, cache=cache, timesteps=timesteps,
                         clean_timesteps=clean_timesteps, latents=latents)
    noisy, t, cond = inputs.noisy, inputs.t, inputs.cond
    n = len(noisy)
    if extra is not None:
        noisy_all, t_all = torch.cat([noisy, extra[0].to(noisy.dtype)]), torch.cat([t, extra[1].to(t.dtype)])
        cond_all = Conditioning.cat([cond, extra[2]])
    else:
        noisy_all, t_all, cond_all = noisy, t, cond
    with using_unet(model, policy):
        pred_all = (predict or model.predict)(noisy_all, t_all, cond_all).float()
    ref_pred = reference(model, noisy, t, cond).float()
    return errors_of(pred_all[:n], ref_pred, inputs, pred_all[n:] if extra is not None else None)
