"""Where a LoRA's smear is made (docs/results.md, "Fifth round"): sample harmful prompts with the
LoRA on some denoising steps and the base model on the others, and judge what is drawn. Each row
mixes, per step, (which UNet, which prompt) for the conditional branch and the unconditional one:

* ``lora-hi-then-base``: the LoRA on the high-noise steps (t >= split), then the base model under
  the same harmful prompt: does the LoRA's layout survive?
* ``lora-hi-then-base-safe``: the same, but the base model finishes under the safe counterpart:
  is the layout compatible with the counterpart?
* ``base-hi-then-lora``: the base model first, then the LoRA: do the low-noise steps alone decide?

    python benchmarks/smear_steps.py LORA_DIR [--n 48] [--suite eval-harmful-explicit] [--split 700]
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    from scdpo.eval.objects import object_metrics
    from scdpo.models.registry import resolve_model_path
    from scdpo.models.sampling import make_scheduler
    from scdpo.models.t2i import T2IModel
    from scdpo.world.judge import load_default_judge
    from scdpo.world.suites import get_suite
    from scdpo.world.vocab import load_vocabulary

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lora")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--suite", default="eval-harmful-explicit")
    ap.add_argument("--suite-seed", type=int, default=0)
    ap.add_argument("--split", type=int, default=700, help="timestep between the high- and low-noise steps")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=5.0)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    records = get_suite(args.suite, n=args.n, seed=args.suite_seed)
    path = resolve_model_path("emojiworld")
    base, lora = T2IModel.from_pretrained(path), T2IModel.from_pretrained(path).load_lora(args.lora)
    judge = load_default_judge()
    threshold, harmful = float(judge.config.threshold), [c.index for c in load_vocabulary().harmful]
    harm = base.encode_prompts([r.prompt for r in records])
    safe = base.encode_prompts([r.safe_prompt for r in records])
    uncond = base.unconditional(args.n)
    # per row: step -> (UNet of the conditional branch, its prompt, UNet of the unconditional branch)
    rows = {
        "base": lambda hi: (base, harm, base),
        "base, safe prompt": lambda hi: (base, safe, base),
        "lora": lambda hi: (lora, harm, lora),
        "lora on the conditional branch only": lambda hi: (lora, harm, base),
        "lora-hi-then-base": lambda hi: (lora, harm, lora) if hi else (base, harm, base),
        "lora-hi-then-base-safe": lambda hi: (lora, harm, lora) if hi else (base, safe, base),
        "base-hi-then-lora": lambda hi: (base, harm, base) if hi else (lora, harm, lora),
    }
    print("| sampling | harmful | safe object | counterpart | empty |\n|---|---|---|---|---|")
    for name, plan in rows.items():
        scheduler = make_scheduler("dpmsolver++", base.scheduler_config, base.family)
        scheduler.set_timesteps(args.steps)
        lat = torch.stack([torch.randn(base.latent_channels, base.resolution // base.vae_scale_factor,
                                       base.resolution // base.vae_scale_factor,
                                       generator=torch.Generator().manual_seed(i)) for i in range(args.n)])
        for t in scheduler.timesteps:
            unet_c, prompt, unet_u = plan(int(t) >= args.split)
            pc, pu = unet_c.predict(lat, t, prompt), unet_u.predict(lat, t, uncond)
            lat = scheduler.step(pu + args.guidance * (pc - pu), t, lat, return_dict=False)[0]
        probs = judge.probabilities(((base.decode_latents(lat) + 1) / 2).clamp(0, 1))
        m = object_metrics(probs, records, threshold)
        row = {"harmful": float((probs[:, harmful] > threshold).any(1).float().mean()),
               **{k: m[k]["rate"] for k in ("safe_object_rate", "counterpart_rate", "empty_rate")}}
        print(f"| {name} | " + " | ".join(f"{100 * v:.1f}%" for v in row.values()) + " |", flush=True)
        print(json.dumps({"row": name, **row}), flush=True)


if __name__ == "__main__":
    main()
