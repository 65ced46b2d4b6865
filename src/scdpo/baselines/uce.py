"""UCE (Gandikota et al., WACV 2024, "Unified Concept Editing in Diffusion Models"): a closed-form
edit of every cross-attention key and value projection W (out x in). With c_i the text embedding
of concept i to erase, c*_i that of its target (guide) concept, c_j those of the concepts to
preserve, and lambda a ridge on the old weights (eq. 7 of the paper, as the authors' code writes it):

    W_new = (lambda W + s_e sum_i W c*_i c_i^T + s_p sum_j W c_j c_j^T)
            (lambda I + s_e sum_i c_i c_i^T + s_p sum_j c_j c_j^T)^-1

Each concept's embedding is its last word token's (the token before end-of-text), as in the
authors' code. Since W_new - W = s_e sum_i (W c*_i - W c_i) c_i^T M^-1, the edit of each
projection has rank <= the number of erased concepts; it is written as a LoRA of that rank (its SVD,
alpha = rank, so it applies at scale 1 exactly): ``--lora`` and diffusers' ``load_lora_weights``
apply it.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from scdpo.baselines.common import lora_modules, safe_concepts, split_concepts, write_record
# the config lives in a torch-free module (the command's flags are built without torch)
from scdpo.baselines.config import UCEConfig  # noqa: F401

TARGETS = ("attn2.to_k", "attn2.to_v")


def last_token_embeddings(model, prompts: list[str]) -> torch.Tensor:
    """(N, D) the context at each prompt's last word token (index 0, the start token, for "")."""
    if not prompts:
        return torch.empty(0)
    context = model.encode_prompts(prompts).context.float()
    tokens = model.tokenizers[0](prompts, padding="max_length", max_length=context.shape[1], truncation=True,
                                 return_tensors="pt")
    index = (tokens.attention_mask.sum(1) - 2).clamp(min=0)
    return context[torch.arange(len(prompts)), index.to(context.device)]


@torch.no_grad()
def uce_weights(weight: torch.Tensor, erase: torch.Tensor, guide: torch.Tensor, preserve: torch.Tensor,
                erase_scale: float, preserve_scale: float, lamb: float) -> torch.Tensor:
    """UCE's eq. 7 for one projection ``weight`` (out x in), in float64; rows of erase / guide /
    preserve are the concept embeddings (in)."""
    w = weight.double()
    c, g = erase.double().to(w.device), guide.double().to(w.device)
    left = lamb * w + erase_scale * (w @ g.T) @ c
    right = lamb * torch.eye(w.shape[1], dtype=w.dtype, device=w.device) + erase_scale * c.T @ c
    if len(preserve):
        p = preserve.double().to(w.device)
        left = left + preserve_scale * (w @ p.T) @ p
        right = right + preserve_scale * p.T @ p
    return torch.linalg.solve(right, left, left=False)  # left @ right^-1


def uce_edit(model, concepts: list[str], guides: list[str], preserve: list[str], erase_scale: float = 1.0,
             preserve_scale: float = 1.0, lamb: float = 0.5) -> dict[str, torch.Tensor]:
    """Module name -> its edited weight, for every cross-attention to_k / to_v of the UNet."""
    if len(guides) == 1:
        guides = guides * len(concepts)
    if len(guides) != len(concepts):
        raise ValueError(f"{len(guides)} guide concepts for {len(concepts)} concepts: give one, or one per concept")
    c, g = last_token_embeddings(model, concepts), last_token_embeddings(model, guides)
    p = last_token_embeddings(model, preserve)
    return {name: uce_weights(module.weight, c, g, p, erase_scale, preserve_scale, lamb)
            for name, module in model.unet.named_modules() if name.endswith(TARGETS)}


def delta_to_lora(unet, edits: dict[str, torch.Tensor], rank: int) -> None:
    """Add a rank-``rank`` LoRA whose B A equals each ``edits[name] - W`` (truncated SVD; exact when
    the delta's rank is <= rank)."""
    from scdpo.train.model import add_lora

    add_lora(unet, rank, rank, list(edits))  # alpha = rank: the LoRA applies at scale 1
    layers = lora_modules(unet)
    with torch.no_grad():
        for name, new in edits.items():
            layer = layers[name]
            u, s, vh = torch.linalg.svd(new - layer.base_layer.weight.double(), full_matrices=False)
            root = s[:rank].sqrt()
            layer.lora_B["default"].weight.copy_((u[:, :rank] * root).float())
            layer.lora_A["default"].weight.copy_((root[:, None] * vh[:rank]).float())


def run(cfg: UCEConfig) -> Path:
    from scdpo.models.guards.base import default_concepts
    from scdpo.models.t2i import T2IModel
    from scdpo.train.model import save_lora

    start = time.time()
    model = T2IModel.from_pretrained(cfg.model, device=cfg.device)
    concepts = split_concepts(cfg.concepts) or default_concepts(model)
    guides = [g.strip() for g in cfg.guide.replace(";", ",").split(",")] if cfg.guide.strip() else [""]
    preserve = ([] if (cfg.preserve or "").strip().lower() == "none" else split_concepts(cfg.preserve)) \
        if cfg.preserve is not None else safe_concepts(model)
    preserve = [p for p in preserve if p not in concepts]
    loaded = time.time()
    edits = uce_edit(model, concepts, guides, preserve, cfg.erase_scale, cfg.preserve_scale, cfg.lamb)
    edit_seconds = time.time() - loaded
    rank = min(len(concepts), *(min(w.shape) for w in edits.values()))
    delta_to_lora(model.unet, edits, rank)
    path = save_lora(model.unet, cfg.out, model.family)
    write_record(cfg.out, {"method": "uce", "settings": asdict(cfg), "concepts": concepts, "guides": guides,
                           "preserve": preserve, "rank": rank, "modules": len(edits),
                           "seconds": round(time.time() - start, 2), "edit_seconds": round(edit_seconds, 3)})
    print(f"UCE: edited {len(edits)} projections for {len(concepts)} concepts ({len(preserve)} preserved) "
          f"in {edit_seconds:.2f} s ({time.time() - start:.1f} s with loading); LoRA of rank {rank} in {path}")
    return path
