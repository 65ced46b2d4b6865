"""What a LoRA draws when it acts on the prompt's branch of classifier-free guidance only (issue 15;
docs/results.md, "Thirteenth round"). Guidance samples along eps_u + w (eps_c - eps_u); a fused LoRA
changes both predictions, and its change of eps_u reaches every prompt, w - 1 times over and with
the sign flipped (benchmarks/uncond_shift.py). Here eps_u comes from the base model and eps_c from
the LoRA model: the inference-time limit of the unconditional hold (docs/method.md, (h)), which
trains the LoRA to leave eps_u as the base has it. Same seeds, prompts and judge for both rows, so
the difference is the unconditional branch alone.

    python benchmarks/cond_only_lora.py runs/r11/lora-timestep700-s0 --n 150 --draw 0
"""

from __future__ import annotations

import argparse
import json

import torch

from anchor_probe import judge_model


def cond_only(model, base):
    """``model`` with its ``predict`` split per guidance half: the first half of a guided batch
    (the unconditional rows, as the sampler orders them) from ``base``, the second from ``model``."""
    from scdpo.models.t2i import Conditioning

    own = model.predict

    def rows(cond, s: slice):
        return Conditioning(*(None if v is None else v[s] for v in (cond.context, cond.pooled, cond.add_time_ids)))

    def predict(x, t, cond):  # the sampler passes one timestep for the whole batch
        h = len(x) // 2
        return torch.cat([base.predict(x[:h], t, rows(cond, slice(0, h))), own(x[h:], t, rows(cond, slice(h, None)))])

    model.predict = predict
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lora", help="a LoRA folder (pytorch_lora_weights.safetensors)")
    ap.add_argument("--n", type=int, default=150, help="prompts per suite")
    ap.add_argument("--draw", type=int, default=0, help="suite draw (tuning draw 0 by default)")
    args = ap.parse_args()
    from scdpo.models.t2i import T2IModel

    torch.set_num_threads(1)
    base = T2IModel.from_pretrained("emojiworld", device="cpu")
    for mode in ("fused", "cond-only"):
        model = T2IModel.from_pretrained("emojiworld", device="cpu").load_lora(args.lora)
        if mode == "cond-only":
            cond_only(model, base)
        for row in judge_model(model, args.n, args.draw):
            print(json.dumps({"lora": args.lora, "mode": mode, "draw": args.draw, **row}), flush=True)


if __name__ == "__main__":
    main()
