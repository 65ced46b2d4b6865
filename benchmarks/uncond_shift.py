"""Where a LoRA's change acts: through the prompt, or on every prompt alike (issue 15; docs/results.md,
"Thirteenth round"). A LoRA fused into the UNet changes the unconditional prediction too. Under
classifier-free guidance the sampler follows eps_u + w (eps_c - eps_u), so the LoRA's change of
what is drawn is

    dg = du + w (dc - du),    dc = eps_lora(x, t, c) - eps_base(x, t, c),   du = the same at c = "".

A change with du = dc is prompt-independent: it moves every prompt's sample by du, clean prompts
included. This measures, along the LoRA's own guided trajectories (the states its samples visit),
per prompt group (explicit harmful, implicit harmful, clean) and per timestep band:
||du|| / ||dc||, cos(du, dc), and how large the guided change is on each group (||dg||, relative
to ||eps_base guided||). A LoRA whose guided change on clean prompts is as large as on harmful ones,
and mostly du, redirects by the picture and not by the words.

    python benchmarks/uncond_shift.py runs/r11/lora-timestep700-s0 runs/r10/lora-recipe-s0 --n 32 > shift.jsonl
    python benchmarks/uncond_shift.py --table shift.jsonl      # the markdown table of docs/results.md
"""

from __future__ import annotations

import argparse
import json

import torch

BANDS = [(700, 1000), (400, 700), (0, 400)]


def _guided(model, x, t, cond, w):
    n = len(x)
    both = type(cond).cat([model.unconditional(n), cond])
    u, c = model.predict(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
    return u, c, u + w * (c - u)


@torch.no_grad()
def shift(base, lora, prompts: list[str], steps: int, w: float, seed: int) -> dict:
    """Per timestep band: mean ||du||/||dc||, cos(du, dc), ||dg|| / ||eps_base guided||, along the
    LoRA model's guided DPM-Solver++ trajectories (20 steps, evaluation's sampler)."""
    from scdpo.models.sampling import make_scheduler

    sched = make_scheduler("dpmsolver++", lora.scheduler_config, lora.family)
    sched.set_timesteps(steps)
    cond = lora.encode_prompts(prompts)
    side = lora.resolution // lora.vae_scale_factor
    gen = torch.Generator().manual_seed(seed)
    lat = torch.randn((len(prompts), lora.latent_channels, side, side), generator=gen) * sched.init_noise_sigma
    rows = {b: [] for b in BANDS}
    for t in sched.timesteps:
        x = sched.scale_model_input(lat, t)
        tt = t.reshape(1).repeat(len(prompts))
        u1, c1, g1 = _guided(lora, x, tt, cond, w)
        u0, c0, g0 = _guided(base, x, tt, cond, w)
        du, dc, dg = (u1 - u0).flatten(1), (c1 - c0).flatten(1), (g1 - g0).flatten(1)
        ratio = du.norm(dim=1) / dc.norm(dim=1).clamp_min(1e-8)
        cos = torch.nn.functional.cosine_similarity(du, dc, dim=1)
        rel = dg.norm(dim=1) / g0.flatten(1).norm(dim=1).clamp_min(1e-8)
        band = next(b for b in BANDS if b[0] <= int(t) < b[1])
        rows[band].append(torch.stack([ratio, cos, rel], 1))
        lat = sched.step(g1, t, lat, return_dict=False)[0]
    out = {}
    for (lo, hi), r in rows.items():
        if r:
            m = torch.cat(r)
            out[f"{lo}-{hi}"] = {k: round(float(v), 3) for k, v in zip(["du/dc", "cos(du,dc)", "|dg|/|g|"], m.mean(0))}
    return out


def table(path: str) -> str:
    """The markdown table of a file of this script's JSON lines: per LoRA and prompt group,
    ||du||/||dc|| and ||dg||/||g|| in each timestep band."""
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    bands = [f"{lo}-{hi}" for lo, hi in BANDS]
    head = ["LoRA", "prompts"] + [f"du/dc {b}" for b in bands] + [f"cos {b}" for b in bands] + [f"dg/g {b}" for b in bands]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for g in ("harmful-explicit", "harmful-implicit", "clean"):
            cells = [r[g][b][k] for k in ("du/dc", "cos(du,dc)", "|dg|/|g|") for b in bands]
            out.append("| " + " | ".join([r["lora"].rstrip("/").split("/")[-1], g] + [f"{c:.2f}" for c in cells]) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("loras", nargs="*", help="LoRA folders (pytorch_lora_weights.safetensors)")
    ap.add_argument("--table", help="print the markdown table of a file of this script's output instead")
    ap.add_argument("--n", type=int, default=32, help="prompts per group")
    ap.add_argument("--draw", type=int, default=0, help="suite draw (tuning draw 0 by default)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=5.0)
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    from scdpo.models.t2i import T2IModel
    from scdpo.world.suites import get_suite

    torch.set_num_threads(1)
    groups = {g: [r.prompt for r in get_suite(f"eval-{g}", args.n, seed=args.draw)]
              for g in ["harmful-explicit", "harmful-implicit", "clean"]}
    base = T2IModel.from_pretrained("emojiworld", device="cpu")
    for path in args.loras:
        lora = T2IModel.from_pretrained("emojiworld", device="cpu").load_lora(path)
        res = {g: shift(base, lora, p, args.steps, args.guidance, seed=1) for g, p in groups.items()}
        print(json.dumps({"lora": path, **res}))


if __name__ == "__main__":
    main()
