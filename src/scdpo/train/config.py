"""The trainer's configuration: one documented dataclass, read from YAML and the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scdpo.utils import config as utils_config
from scdpo.utils.config import check_finite

# Diffusion-DPO's beta with the per-element mean error: 5000 in the authors' SD 1.5 and SDXL
# launchers (diffusers' script writes the same objective with 2500 = 5000 x 1/2 folded in).
# EmojiWorld: 5000 x (16*16*4) / (64*64*4) = 312.5, i.e. the same strength per latent element
# as SD 1.5 at 512 px (docs/method.md, "beta").
BETA_DEFAULTS = {"sd": 5000.0, "sdxl": 5000.0, "emojiworld": 312.5}
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# Micro-batches from which regional compile pays (TrainConfig.compile's default): above the largest
# break-even measured on an H100 for an SD 1.5-shaped UNet, full fine-tuning at 8 pairs against the
# eager step at 8 pairs (about 3,600; docs/performance.md, "Compile in the trainer at SD scale")
COMPILE_PAYS_FROM = 4000


@dataclass
class TrainConfig:
    """Settings of one `scdpo train` run (YAML under configs/, each key overridable as --key).

    Attributes:
        model: base model: a local diffusers StableDiffusion(XL)Pipeline folder, or "emojiworld".
        dataset: Pick-a-Pic-format preference pairs: a .parquet file or a folder of them (columns
            caption, jpg_0, jpg_1, label_0; cost_0, cost_1 for sc-dpo; kind for safetydpo).
        out: output folder: the LoRA (pytorch_lora_weights.safetensors) or unet/, checkpoints/,
            logs/ (TensorBoard), samples/, metrics.json.
        loss: "dpo" (Diffusion-DPO), "sc-dpo" (safety-constrained, docs/method.md) or
            "safetydpo" (Diffusion-DPO on the kind == "harmful" pairs only).
        beta: KL strength of Diffusion-DPO (per-element mean errors); default by model: 5000 for
            SD/SDXL (the Diffusion-DPO authors' launchers), 312.5 for "emojiworld".
        cost_margin: sc-dpo (a): margin m of m*tanh((c_l - c_w)_+) in logits; 0 turns it off.
        constraint: sc-dpo (b): the Lagrangian safety constraint on cost-weighted implicit rewards.
        lambda_init: initial Lagrange multiplier of the constraint.
        lambda_lr: dual-ascent step size: lambda <- max(0, lambda + lambda_lr * (J - cost_budget)).
        cost_budget: budget of the constraint: with constraint_source offline, of J (in logits; 0 =
            the policy may not raise the likelihood of harmful samples above the reference's, on
            average); with policy, of the measure (an unsafe rate such as 0.05, or a mean cost).
        constraint_source: sc-dpo (b): "offline" (the first round's J on the dataset's images) or
            "policy" (dual ascent on the unsafe rate of the policy's own samples, scored by
            cost_model every constraint_every steps; Safe RLHF's form, docs/method.md).
        constraint_form: how lambda enters with constraint_source policy: "margin" (lambda is added
            to the cost margin m of (a), a lambda-scaled cost margin) or "weight" (harmful pairs'
            loss times 1 + lambda).
        constraint_every: optimizer steps between two on-policy measurements.
        constraint_prompts: harmful training prompts in the held probe batch (one image each).
        constraint_steps: sampler steps of the probe's images.
        constraint_measure: "unsafe_rate" (fraction of probe images with cost > 0) or "cost" (mean cost).
        cost_model: the cost model folder that scores the probe (constraint_source policy).
        focus_gamma: sc-dpo (c): Dynamic Focusing exponent of (1 - sigmoid(z))^gamma; 0 turns it off.
        focus_signal: what focusing measures hardness on: "batch" (this draw's logit, the first
            round's form) or "pair" (each pair's running logit over the draws it has seen,
            normalised per kind; docs/method.md).
        focus_ema: decay of each pair's running logit with focus_signal pair.
        winner_weight: sc-dpo (d): weight a of the winner-likelihood term -a * rho_w, i.e. the
            denoising loss on preferred images scaled by a * beta / 2 (DPO + NLL as in RPO, Pang et
            al. 2024); it stops DPO from widening the margin only by degrading both images. 0 = off.
        preserve_weight: sc-dpo (e): weight p of the preservation term p * (beta/2) * D on clean
            pairs (kind != "harmful"), D the mean squared difference between the policy's and the
            reference's predictions on the pair's noisy latents: the edit may change what harmful
            prompts draw, not what clean prompts draw. 0 = off.
        anchor_weight: weight q of the safe anchor q * (beta/2) * A (our addition, every loss;
            docs/method.md, "Safe anchor"): A is the mean squared difference between the policy's
            prediction under a harmful prompt and the frozen reference's under the prompt's safe
            counterpart (dataset column safe_caption), so the harmful prompt is redirected to what
            the base model draws for the safe one, not to a smear. 0 = off.
        anchor_states: where A is measured: "policy" (states of the policy's own guided sampling
            trajectory under the harmful prompt, stopped at a random step, as ESD samples them;
            on-policy, so the states the sampler will visit are covered) or "winner" (the pair's
            noisy winner at a uniform timestep; cheaper, off-policy).
        anchor_steps: sampler steps of the policy trajectory (anchor_states policy), and so the
            timesteps its states sit at (those of evaluation sampling at this many steps).
        anchor_guidance: classifier-free guidance of that trajectory (evaluation's default, 5).
        anchor_refresh: with anchor_states policy, optimizer steps between two refreshes of a bank
            of trajectory states (scdpo.train.anchor.StateBank); 1 = a fresh trajectory for every
            micro-batch (exactly on-policy, and up to anchor_steps UNet calls a step). With K > 1,
            checkpoint_every must be a multiple of K, so a resumed run redraws the same bank.
            Measured NOT equivalent: K = 10 with a bank of 64 cost 9.6 +- 1.4 points of clean
            alignment against the per-step form over 3 seeds (docs/results.md, "Tenth round").
        anchor_bank: harmful prompts sampled per refresh (each gives anchor_steps states).
        anchor_keyword_dropout: probability that the anchor's policy prediction reads the harmful
            prompt with its harmful words (the span that differs from safe_caption) replaced by a
            neutral word, on the same states: the edit must then follow what the image is becoming,
            not which word asked for it, as it must for words it never saw. 0 = off.
        anchor_target_word: if set, the anchor's target prompt is the harmful prompt with its
            harmful words replaced by this one safe object ("sunflower") instead of the prompt's
            own safe counterpart: one target for every harmful concept, which a held-out word can
            reach without the edit knowing which concept it names. None = the counterpart.
        anchor_mix: a_max in [0, 1) of the anchor's mixed conditionings (our addition, twentieth round;
            docs/method.md, "(i) Mixed conditionings"): the policy's prediction on each anchor state
            reads (1 - a) c_harm + a c_safe, a ~ U(0, a_max) per row, the text encoder's outputs of
            the harmful prompt and of its safe counterpart mixed, against the same target. The edit
            then covers the texts between a harmful prompt and the safe words, where held-out words
            that read like safe words sit (docs/results.md, "Nineteenth round"); the hold keeps the
            clean prompts themselves. 0 = off.
        anchor_clean_weight: weight q_c of the on-policy hold on clean prompts, q_c * (beta/2) * C
            (our addition, eleventh round; docs/method.md, "(g) The on-policy hold"): the anchor's
            trajectory also runs the micro-batch's clean prompts (in the same batched UNet calls),
            and C is the mean squared difference between the policy's and the frozen reference's
            predictions on those states under the clean prompt itself. Preservation (e) holds the
            policy on noisy *dataset* images; this holds it on the states the policy's own sampler
            visits, where the anchor's target had leaked into look-alike clean objects (docs/results.md,
            "Tenth round"). Needs anchor_weight > 0 and anchor_states policy, per-step (anchor_refresh
            1). 0 = off.
        anchor_clean_focus: gamma >= 0 of the hold's focus on the prompts the base model meets least
            surely (our addition, sixteenth round; docs/method.md, "(g) The on-policy hold"): clean pair i's
            term of C is weighted by w_i = (1 + gamma r_i) / mean_j (1 + gamma r_j), r_i in [0, 1] the rank
            of its weaker candidate's reward (``reward_0``/``reward_1``, which ``scdpo data build``
            writes) from the top (1 = the dataset's lowest), the mean over the dataset's clean pairs: the
            hold's dose stays the same on average and moves to the requests the base draws only narrowly,
            the ones the LoRA's change tips over (docs/results.md, "Sixteenth round"). Needs
            anchor_clean_weight > 0 and the reward columns. 0 = every clean prompt alike.
        anchor_clean_guided: the on-policy hold in its guided form (our addition, twenty-first round;
            docs/method.md, "(g) The on-policy hold", "The guided form"): C is measured on what
            classifier-free guidance draws, || w dc - (w - 1) du ||^2 / w^2 with dc and du the LoRA's
            change of the clean prompt's and of the empty prompt's prediction on the hold's states and
            w = anchor_guidance, instead of || dc ||^2. On clean prompts du is 1.1-2.2 times dc
            (docs/results.md, "Thirteenth round"), so holding dc alone leaves most of what the sampler
            draws free. Adds the hold's states once more under the empty prompt (every anchor state
            when anchor_uncond_weight > 0, which needs them too). Needs anchor_clean_weight > 0.
            False = the hold on dc (the shipped recipe's).
        anchor_uncond_weight: weight q_u of the unconditional hold, q_u * (beta/2) * U (our addition,
            thirteenth round; docs/method.md, "(h) The unconditional hold"): on every anchor state
            (the harmful prompts' and, with anchor_clean_weight, the clean prompts'), U is the mean
            squared difference between the policy's and the frozen reference's predictions under the
            empty prompt. A fused LoRA changes the unconditional prediction too, and classifier-free
            guidance subtracts that change w - 1 times from every prompt's sample, clean ones
            included (benchmarks/uncond_shift.py); this keeps the change in the prompt's branch,
            so guidance amplifies the redirect and not a prompt-blind shift. Needs anchor_weight > 0.
            0 = off.
        anchor_adv_eps: radius eps of the adversarial anchor (our addition, twenty-second round;
            docs/method.md, "(j) The adversarial anchor"; scdpo.train.adversary): the anchor's
            harmful rows are read under the text states within ||delta_k|| <= eps ||c_k|| of their own
            (every token k) that most raise the anchor term, found by projected gradient ascent
            (Madry et al. 2018) before the step's forward pass. Aimed at P4D, whose optimised token
            strings reach states the edit never saw (docs/attacks.md). Costs anchor_adv_steps
            forward and backward passes of the harmful anchor rows a micro-batch. Needs
            anchor_weight > 0. 0 = off.
        anchor_adv_steps: gradient-ascent steps of that search (step size 2.5 eps / steps).
        anchor_p4d_every: P4D in the loop (our addition, twenty-second round; docs/method.md, "(k) P4D
            in the loop"; scdpo.train.adversary.PromptBank): every this many optimizer steps,
            anchor_p4d_rows strings of 16 free tokens are searched against the current policy with
            P4D's objective on the anchor's own states (the policy under the string made to predict
            what the reference predicts under the harmful prompt); until the next search a share
            anchor_p4d_share of the anchor's harmful rows reads one of them instead of its prompt,
            against its own safe target. The bank is saved with each checkpoint. Needs anchor_weight
            > 0 and anchor_states policy; not with anchor_keyword_dropout or anchor_mix, or under FSDP.
            0 = off.
        anchor_p4d_steps: PEZ steps of each search (AdamW, lr 0.1, weight decay 0.1, as P4D).
        anchor_p4d_rows: strings per search (the micro-batch's first harmful anchor rows).
        anchor_p4d_share: share of the anchor's harmful rows that read a string of the bank, in [0, 1].
        kinds: train only on pairs of these kinds (dataset column kind: harmful, clean); None
            means all, except for safetydpo, which means harmful (SafetyDPO trains on harmful
            prompts' pairs only). E.g. sc-dpo with --kinds harmful, --cost-margin 0,
            --no-constraint and --focus-gamma 0 is SafetyDPO with the winner term.
        full: full fine-tuning of the UNet (the reference is a frozen copy) instead of LoRA.
        lora_rank, lora_alpha: LoRA rank and alpha (alpha default: the rank, i.e. scale 1).
        lora_targets: module names LoRA adapts (peft target_modules).
        lr: AdamW learning rate (after warm-up; constant).
        warmup: linear warm-up steps.
        weight_decay, max_grad_norm: AdamW weight decay; gradient clipping.
        batch_size: pairs per micro-batch and process (the UNet sees 2x this).
        grad_accum: micro-batches per optimizer step (global batch = batch_size * grad_accum * GPUs).
        max_steps: optimizer steps.
        mixed_precision: "no", "fp16", "bf16", or "auto" (the accelerate launch config's, else bf16 on
            CUDA and no on CPU). With LoRA the frozen weights are kept in this precision too.
        autocast: with bf16 mixed precision, compute under torch.autocast as diffusers' training
            scripts do (True), or hold bf16 weights and compute without autocast (False: full
            fine-tuning keeps fp32 master weights for the optimizer; not under FSDP). None (the
            default) picks what measured best on an H200 (docs/performance.md): no autocast for
            full fine-tuning (1.17x the plain step, losses within bf16 tolerance), autocast for
            LoRA (no autocast gained nothing there and moved the losses further from fp32).
        attention: the scaled-dot-product attention kernel preferred on CUDA: auto (torch's
            choice), flash, cudnn, efficient or math (docs/performance.md).
        compile: torch.compile each resnet and transformer block of the UNet (regional
            compilation; the first steps take longer while it compiles). Every denoiser batch is
            then padded to a power of two (``T2IModel.pad_rows``), so the blocks meet a handful
            of batch sizes: 108 graphs for EmojiWorld's recipe step (docs/performance.md). None
            (the default): on where it was measured to pay (TrainConfig.compiles): a CUDA device, a
            model other than EmojiWorld's, and at least ``COMPILE_PAYS_FROM`` (4,000)
            micro-batches in the run (max_steps x grad_accum); on an H100 an SD 1.5-shaped UNet's
            compiled step ran 1.17-1.38x the eager one after 87-143 s of warm-up, which breaks even
            by 3,600 micro-batches in every measured case (docs/performance.md, "Compile in the
            trainer at SD scale"). EmojiWorld stays eager: six trainings at once lost with compile,
            and its compiled losses varied between identical runs.
        compile_mode: torch.compile's mode for those blocks: None (the default: torch's own
            default), "default", "reduce-overhead" (CUDA graphs through cudagraph trees; in the
            trainer it failed at its first step on an H200, docs/performance.md) or
            "max-autotune-no-cudagraphs" (autotuned kernels: a longer compile). Refused with
            ``compile=False``; with compile unset and off for the run (TrainConfig.compiles), a
            warning says it does nothing.
        compile_cache: a folder that carries torch.compile's kernels from run to run (torch's
            "mega-cache"; ``scdpo.models.speed.compile_cache``): its files are read before the first
            step, and a run that compiled a kernel none of them held adds one (atomically) when it
            ends. Point runs on the same GPU model and torch at one folder, and a fresh machine skips
            inductor's kernel compilation; dynamo still traces. Refused with ``compile=False``, as
            compile_mode. None (the default):
            torch's own cache in its temporary folder only.
        cuda_graphs: replay the step's UNet calls from CUDA graphs (one process on a CUDA device,
            without gradient checkpointing, loader workers or compile), for the launch-bound
            EmojiWorld UNet: the policy's forward and backward (two graphs a padded batch size;
            scdpo.models.graphs_train), the reference's forward and the safe anchor's
            policy-trajectory calls (one graph a padded batch size; scdpo.models.graphs). The
            training graphs are checked against eager, by norm, until the weights have moved and
            then every 200th replay; the anchor trajectory's until they have moved and then every
            50th; the reference's on their first replay; a checked call goes on with eager's values;
            any failure falls back to eager with one warning. None (the default): on for a LoRA of
            EmojiWorld's model on a CUDA device without the safe anchor
            (``TrainConfig.uses_cuda_graphs``), where an H100 measured it: the plain step at 32 pairs
            5.5-6.1x eager in one process (0.029 against 0.162-0.180 s a step), the same last loss to
            the digit after 100 steps (BENCHMARKS.md, "Thirty-second round"); six graphed trainings
            at once (the pipeline's, ``--seeds``) 1.65x as many eager ones in all (the thirty-third
            round). Off elsewhere: full fine-tuning is unmeasured, SD-scale steps are
            compute-bound and unmeasured. With the safe anchor it stays off unless asked for: the
            anchored step ran 6.0-6.3x on an H100, its last loss 0.5% off eager's (likely the padded
            batches' rounding, not verified), but its earlier H200 runs, made before the stale weight
            cast was fixed, died with a CUDA illegal memory access at the second step, which no
            fallback can catch, and no H200 has run it since.
        gradient_checkpointing: recompute UNet activations in the backward pass (less memory).
        caption_dropout: fraction of captions replaced by "" (the Diffusion-DPO authors used 0.2).
        min_timestep, max_timestep: training timesteps are drawn uniformly from min_timestep ..
            max_timestep - 1 (None: the scheduler's num_train_timesteps), as kohya's sd-scripts'
            options of the same names. High timesteps decide which objects appear, low ones how
            they look: the best EmojiWorld run trains on 700 .. 999 only (docs/results.md).
        clean_min_timestep: min_timestep of the clean pairs (kind != "harmful") alone; None: the
            same as min_timestep. The safe anchor acts at every timestep of the sampler's
            trajectory, so with min_timestep 700 nothing holds clean prompts below 700, where the
            anchor's target can leak into look-alike clean objects (docs/results.md, "Tenth
            round"); 0 here keeps the harmful pairs at 700 .. 999 and trains (and preserves) the
            clean ones at every timestep, at no extra UNet call.
        cache_latents: encode every image with the VAE once, before training (each process keeps
            all latents on its device; for datasets that fit).
        resize: resize and centre-crop images of another size instead of refusing them.
        workers: DataLoader worker processes decoding images (0 = in the training process).
        seed: seeds the data order, noise, timesteps and caption dropout (all derived per step).
        log_every: TensorBoard / progress-bar interval in steps.
        checkpoint_every, keep_checkpoints: accelerate checkpoints every N steps; keep the last K.
        validate_every: sample a grid of fixed prompts every N steps (0: only at the end).
        validate_prompts: prompts of the grid (default: validate_n harmful and validate_n clean
            EmojiWorld prompts, from eval-harmful-explicit and eval-clean).
        validate_n: EmojiWorld prompts per suite in the default grid.
        validate_steps: sampler steps of the grid.
        validate_judge: also report the EmojiWorld judge's harmful rate and alignment on the grid
            (skipped when no judge is shipped).
        max_nonfinite_in_row: abort after this many consecutive non-finite steps (each one skipped).
        resume: continue from the newest checkpoint in out/checkpoints (refused when the checkpoint
            was made with other settings or data: the run fingerprint, docs/reliability.md).
        overwrite: discard the checkpoints another run left in out (a fresh run refuses them).
        merge: also export a whole pipeline folder (out/pipeline) with the LoRA fused in.
        device: "cpu" forces the CPU; otherwise accelerate picks this process's GPU (or the CPU).
    """

    model: str
    dataset: str
    out: str
    loss: str = "sc-dpo"
    beta: float | None = None
    cost_margin: float = 1.0
    constraint: bool = True
    lambda_init: float = 1.0
    lambda_lr: float = 0.05
    cost_budget: float = 0.0
    constraint_source: str = "offline"
    constraint_form: str = "margin"
    constraint_every: int = 25
    constraint_prompts: int = 64
    constraint_steps: int = 10
    constraint_measure: str = "unsafe_rate"
    cost_model: str | None = None
    focus_gamma: float = 2.0
    focus_signal: str = "batch"
    focus_ema: float = 0.5
    winner_weight: float = 0.0
    preserve_weight: float = 0.0
    anchor_weight: float = 0.0
    anchor_states: str = "policy"
    anchor_steps: int = 20
    anchor_guidance: float = 5.0
    anchor_refresh: int = 1
    anchor_bank: int = 64
    anchor_keyword_dropout: float = 0.0
    anchor_target_word: str | None = None
    anchor_mix: float = 0.0
    anchor_clean_weight: float = 0.0
    anchor_clean_focus: float = 0.0
    anchor_clean_guided: bool = False
    anchor_uncond_weight: float = 0.0
    anchor_adv_eps: float = 0.0
    anchor_adv_steps: int = 1
    anchor_p4d_every: int = 0
    anchor_p4d_steps: int = 50
    anchor_p4d_rows: int = 8
    anchor_p4d_share: float = 0.25
    kinds: list[str] | None = None
    full: bool = False
    lora_rank: int = 8
    lora_alpha: float | None = None
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    lr: float = 1e-5
    warmup: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = 1000
    mixed_precision: str = "auto"
    autocast: bool | None = None
    attention: str = "auto"
    compile: bool | None = None
    compile_mode: str | None = None
    compile_cache: str | None = None
    cuda_graphs: bool | None = None
    gradient_checkpointing: bool = False
    caption_dropout: float = 0.0
    min_timestep: int = 0
    max_timestep: int | None = None
    clean_min_timestep: int | None = None
    cache_latents: bool = False
    resize: bool = False
    workers: int = 0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 0
    validate_prompts: list[str] | None = None
    validate_n: int = 8
    validate_steps: int = 20
    validate_judge: bool = False
    max_nonfinite_in_row: int = 5
    resume: bool = False
    overwrite: bool = False
    merge: bool = False
    device: str | None = None

    def __post_init__(self):
        # imported here, not at the top: `scdpo --help` builds the flags of this config without torch
        from scdpo.models.speed import ATTENTION_BACKENDS, COMPILE_MODES
        from scdpo.train.losses import LOSSES

        check_finite(self)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.beta is None:
            self.beta = BETA_DEFAULTS["emojiworld" if str(self.model) == "emojiworld" else "sd"]
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_BACKENDS)}, got {self.attention!r}")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be unset (None) or one of {', '.join(COMPILE_MODES)}, "
                             f"got {self.compile_mode!r}")
        # refused only against an explicit --no-compile: unset, compile may turn on by itself (compiles())
        if self.compile_mode is not None and self.compile is False:
            raise ValueError(f"compile_mode {self.compile_mode!r} is torch.compile's mode: it needs --compile")
        if self.compile_cache and self.compile is False:
            raise ValueError(f"compile_cache {self.compile_cache!r} holds torch.compile's kernels: it needs --compile")
        for name, allowed in (("constraint_source", ("offline", "policy")), ("constraint_form", ("margin", "weight")),
                              ("constraint_measure", ("unsafe_rate", "cost")), ("focus_signal", ("batch", "pair")),
                              ("anchor_states", ("policy", "winner"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.on_policy_constraint and not self.cost_model:
            raise ValueError("constraint_source: policy scores the policy's samples with a cost model: give "
                             "--cost-model DIR (the one the dataset was built with)")
        if not 0 <= self.focus_ema < 1:
            raise ValueError(f"focus_ema must be in [0, 1), got {self.focus_ema}")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be auto, no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "max_steps", "checkpoint_every", "keep_checkpoints",
                     "lora_rank", "log_every", "max_nonfinite_in_row", "validate_steps", "constraint_every",
                     "constraint_prompts", "constraint_steps", "anchor_steps", "anchor_refresh",
                     "anchor_bank", "anchor_adv_steps", "anchor_p4d_steps", "anchor_p4d_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "lambda_lr", "lambda_init", "cost_margin", "focus_gamma", "winner_weight",
                     "preserve_weight", "anchor_weight", "anchor_clean_weight", "anchor_clean_focus", "anchor_uncond_weight",
                     "anchor_adv_eps",
                     "anchor_guidance", "warmup",
                     "weight_decay", "validate_every", "workers", "validate_n"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_timestep < 0 or (self.max_timestep is not None and self.max_timestep <= self.min_timestep):
            raise ValueError(f"need 0 <= min_timestep < max_timestep, got {self.min_timestep} and {self.max_timestep}")
        if self.clean_min_timestep is not None and (self.clean_min_timestep < 0 or (
                self.max_timestep is not None and self.max_timestep <= self.clean_min_timestep)):
            raise ValueError(f"need 0 <= clean_min_timestep < max_timestep, got {self.clean_min_timestep} and "
                             f"{self.max_timestep}")
        if not 0 <= self.anchor_keyword_dropout <= 1:
            raise ValueError(f"anchor_keyword_dropout must be in [0, 1], got {self.anchor_keyword_dropout}")
        if not 0 <= self.anchor_mix < 1:
            raise ValueError(f"anchor_mix is the largest share of the safe counterpart's text in the anchor's "
                             f"conditioning, in [0, 1), got {self.anchor_mix}")
        if self.anchor_mix > 0 and self.anchor_weight <= 0:
            raise ValueError("anchor_mix mixes the safe anchor's conditionings: it needs --anchor-weight > 0")
        if self.anchor_clean_weight > 0 and (self.anchor_weight <= 0 or self.anchor_states != "policy"
                                             or self.anchor_refresh > 1):
            raise ValueError("anchor_clean_weight rides on the anchor's per-step policy trajectory: it needs "
                             "--anchor-weight > 0, --anchor-states policy and --anchor-refresh 1")
        if self.anchor_clean_focus > 0 and self.anchor_clean_weight <= 0:
            raise ValueError("anchor_clean_focus weights the on-policy hold's clean prompts: it needs "
                             "--anchor-clean-weight > 0")
        if self.anchor_clean_guided and self.anchor_clean_weight <= 0:
            raise ValueError("anchor_clean_guided is a form of the on-policy hold: it needs --anchor-clean-weight > 0")
        if self.anchor_p4d_every < 0 or not 0 <= self.anchor_p4d_share <= 1:
            raise ValueError(f"anchor_p4d_every must be >= 0 and anchor_p4d_share in [0, 1], got "
                             f"{self.anchor_p4d_every} and {self.anchor_p4d_share}")
        if self.anchor_p4d_every > 0 and (self.anchor_weight <= 0 or self.anchor_states != "policy"):
            raise ValueError("anchor_p4d_every searches on the safe anchor's policy states: it needs "
                             "--anchor-weight > 0 and --anchor-states policy")
        if self.anchor_p4d_every > 0 and (self.anchor_keyword_dropout > 0 or self.anchor_mix > 0):
            raise ValueError("anchor_p4d_every aims its search at the harmful prompt's own conditioning, which "
                             "anchor_keyword_dropout and anchor_mix replace: use one or the other")
        if self.anchor_adv_eps > 0 and self.anchor_weight <= 0:
            raise ValueError("anchor_adv_eps searches the safe anchor's harmful conditionings: it needs "
                             "--anchor-weight > 0")
        if self.anchor_uncond_weight > 0 and self.anchor_weight <= 0:
            raise ValueError("anchor_uncond_weight holds the empty prompt on the anchor's states: it needs "
                             "--anchor-weight > 0")
        if self.anchor_refresh > 1 and self.checkpoint_every % self.anchor_refresh:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of anchor_refresh "
                             f"({self.anchor_refresh}), so a resumed run redraws the same anchor states; change either")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if isinstance(self.kinds, str):
            self.kinds = [k.strip() for k in self.kinds.split(",") if k.strip()]
        if self.kinds is not None and (not self.kinds or set(self.kinds) - {"harmful", "clean"}):
            raise ValueError(f"kinds must name harmful and/or clean, got {self.kinds}")
        if self.anchor_clean_weight > 0 and self.pair_kinds == ("harmful",):
            raise ValueError("anchor_clean_weight holds the clean pairs' prompts, and this run trains on harmful "
                             "pairs only (--kinds harmful, or safetydpo): drop --anchor-clean-weight or add clean pairs")
        if self.lora_alpha is None:
            self.lora_alpha = float(self.lora_rank)
        if isinstance(self.lora_targets, str):
            self.lora_targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]

    def compiles(self, device_type: str) -> bool:
        """``compile`` resolved for a run on ``device_type``: the setting when given, else on for a
        CUDA device, a model other than EmojiWorld's, and at least ``COMPILE_PAYS_FROM``
        micro-batches (where it was measured to pay; the field's doc)."""
        if self.compile is not None:
            return self.compile
        return (device_type == "cuda" and str(self.model) != "emojiworld"
                and self.max_steps * self.grad_accum >= COMPILE_PAYS_FROM)

    def uses_cuda_graphs(self, device_type: str) -> bool:
        """``cuda_graphs`` resolved for a run on ``device_type``: the setting when given (where it
        cannot run, the trainer says so and runs eagerly), else on for a CUDA device, EmojiWorld's
        model, a LoRA and no safe anchor (where it was measured to pay; the field's doc), when
        :meth:`cuda_graphs_can_run`."""
        if self.cuda_graphs is not None:
            return self.cuda_graphs
        return (device_type == "cuda" and str(self.model) == "emojiworld" and self.anchor_weight == 0
                and not self.full and self.cuda_graphs_can_run(device_type))

    def cuda_graphs_can_run(self, device_type: str) -> bool:
        """Whether nothing CUDA graphs cannot run with is on: gradient checkpointing, loader workers
        (their pin-memory thread's CUDA calls would invalidate a recording) or torch.compile (whose
        own CUDA graphs and recompilations do not belong inside one). The trainer adds: one process."""
        return not self.gradient_checkpointing and self.workers == 0 and not self.compiles(device_type)

    @property
    def uses_costs(self) -> bool:
        """Whether the loss reads cost_0/cost_1."""
        from scdpo.train.losses import LOSSES

        return LOSSES[self.loss].needs_costs(self)

    @property
    def pair_kinds(self) -> tuple[str, ...] | None:
        """The pair kinds the run trains on (None: all)."""
        from scdpo.train.losses import LOSSES

        return tuple(self.kinds) if self.kinds else LOSSES[self.loss].kinds

    @property
    def on_policy_constraint(self) -> bool:
        """Whether the run samples the policy to measure the constraint (needs cost_model)."""
        from scdpo.train.losses import LOSSES

        return "policy_probe" in LOSSES[self.loss].state(self)


def load_yaml_config(path: str | Path) -> dict:
    """Read a YAML config file into TrainConfig field values (unknown keys are an error)."""
    return utils_config.load_yaml_config(path, TrainConfig)
