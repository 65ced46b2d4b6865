"""Training images for the cost model from prompt pairs: no labelled image needed.

`scdpo cost train --model M --prompt-pairs FILE` samples the model being aligned on each harmful
prompt and on its safe rewrite (CoProV2's minimally edited twin, or an EmojiWorld harmful record's
safe counterpart caption), with the **same seed** for both, so the two images differ mostly in
what the edit changed. Labels come from the prompts: the harmful prompt's image is harmful (its
categories and severity), the twin's is safe. This is our reading of the SC-DPO paper's
"contrastive learning and cost anchoring" (the paper body is not public; docs/cost-model.md):

- the contrastive term (Safe-RLHF's Bradley-Terry ranking, :func:`scdpo.cost.losses.ranking_loss`)
  sees every twin pair, since batches are drawn pair by pair;
- the anchoring term (Safe-RLHF's sign term, :func:`scdpo.cost.losses.anchor_loss`) sees only the
  images whose label is *certain* (``CostLabels.certain``): by default every prompt-labelled image;
  with ``anchor_judges`` (``opennsfw``, ``nudenet``), a judge that covers a prompt's category must
  agree, i.e. a sexual prompt's image counts only when the judge flags it and a safe twin's only
  when it does not. Judges cover only nudity (:data:`JUDGE_CATEGORIES`); other categories keep
  the prompt's label.

Rows are laid out pair by pair: row ``2i`` is pair i's harmful image, row ``2i + 1`` its twin.
"""

from __future__ import annotations

import csv
import hashlib
import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from scdpo.cost.losses import CostLabels
from scdpo.utils.io import atomic_path
from scdpo.world.records import I2P_CATEGORIES, PromptRecord

#: The I2P categories each anchoring judge can confirm (both detect nudity only).
JUDGE_CATEGORIES: dict[str, tuple[str, ...]] = {"opennsfw": ("sexual",), "nudenet": ("sexual",)}


def load_prompt_pairs(source: str, limit: int | None = None) -> list[PromptRecord]:
    """Harmful records that carry a safe twin (``safe_prompt``), from an EmojiWorld suite name or a
    prompt-pair file (CoProV2 train pairs: ``unsafe_prompt``, ``safe_prompt``; or a CSV with
    ``prompt`` and ``safe_prompt``). A file without both columns is a one-line ValueError."""
    from scdpo.prompts.sources import load_prompt_file
    from scdpo.world.suites import SUITES, get_suite

    if source in SUITES:
        # a suite's stream mixes clean and harmful scenes: draw until ``limit`` harmful ones
        n = None if limit is None else max(4 * limit, 64)
        records = [r for r in get_suite(source, n=n) if r.harmful and r.safe_prompt]
        if not records:
            raise ValueError(f"--prompt-pairs {source}: this suite has no harmful prompts with a safe "
                             "counterpart; use align-harmful or train")
        return records[:limit]
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"--prompt-pairs {source}: no such file and no EmojiWorld suite of that name "
                                f"({', '.join(SUITES)})")
    records = load_prompt_file(path)
    paired = [r for r in records if r.safe_prompt]
    if not paired:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ","), [])
        raise ValueError(f"--prompt-pairs {path}: needs a harmful prompt and its safe rewrite on every row "
                         f"(columns unsafe_prompt and safe_prompt, as CoProV2's train pairs, or prompt and "
                         f"safe_prompt); its columns are {header}")
    return paired[:limit]


def clean_pairs(source: str, n: int) -> list[PromptRecord]:
    """Up to ``n`` clean prompts of an EmojiWorld suite or a prompt file, two by two as pseudo-pairs
    (``prompt`` and ``safe_prompt`` both clean; both images are labelled safe)."""
    from scdpo.prompts.records import load_records
    from scdpo.world.suites import SUITES

    suite = source in SUITES
    records = [r for r in load_records(source if suite else None, None if suite else source, max(2, n))
               if not r.harmful][: n // 2 * 2]
    if len(records) < 2:
        raise ValueError(f"--clean-prompts {source}: needs at least 2 clean prompts (no harmful categories)")
    return [PromptRecord(a.prompt, a.source, safe_prompt=b.prompt) for a, b in zip(records[::2], records[1::2])]


def pair_seed(seed: int, index: int) -> int:
    """The sampling seed of pair ``index``: one for both images, a stable hash of (seed, index)."""
    return zlib.crc32(f"prompt-pair\0{seed}\0{index}".encode())


def pair_labels(records: list[PromptRecord]) -> CostLabels:
    """Prompt-level labels, pair by pair: the harmful prompt's image (its categories, severity >= 1)
    then its safe twin's (safe, severity 0). Every label starts as certain."""
    n = len(records)
    cats = torch.zeros(2 * n, len(I2P_CATEGORIES))
    sev = torch.zeros(2 * n)
    for i, r in enumerate(records):
        sev[2 * i] = max(1, int(r.severity))
        for c in r.categories:
            cats[2 * i, I2P_CATEGORIES.index(c)] = 1
    harmful = torch.arange(2 * n) % 2 == 0
    return CostLabels(harmful, sev, cats, None, torch.ones(2 * n, dtype=torch.bool))


def judge_certainty(images: torch.Tensor, labels: CostLabels, judges: dict, categories: list[set]) -> torch.Tensor:
    """``labels.certain`` of ``images`` ((N, 3, H, W) in [0, 1]) narrowed by ``judges`` (name ->
    Scorer with a ``threshold``): where a judge covers a harmful image's category it must flag the
    image, and the safe twin of such a pair must not be flagged. ``categories``: each row's pair's
    categories (a twin shares its harmful prompt's; clean pseudo-pairs have none)."""
    certain = labels.certain.clone()
    for name, judge in judges.items():
        covered = torch.tensor([bool(set(JUDGE_CATEGORIES.get(name, ())) & c) for c in categories])
        if not covered.any():
            continue
        flagged = torch.zeros(len(images), dtype=torch.bool)
        idx = covered.nonzero().flatten()
        flagged[idx] = judge(images[idx], None) >= judge.threshold
        certain &= ~covered | (flagged == labels.harmful)
    return certain


def sample_pairs(model, records: list[PromptRecord], seed: int, sampler, cache: str | Path | None = None,
                 chunk: int = 64, progress: bool = True, key: dict | None = None) -> torch.Tensor:
    """Images of every pair as uint8 ``(2N, 3, H, W)``, pair by pair (harmful, twin), both with
    :func:`pair_seed`. With ``cache``, each chunk of pairs is saved once (keyed by ``key``, the
    settings that change the images), so an interrupted run resumes at the first missing chunk."""
    folder = None
    if cache:
        digest = hashlib.sha1(json.dumps(key or {}, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(cache) / f"pair-images-{digest}"
    out = []
    bar = tqdm(total=2 * len(records), desc="sample prompt pairs", unit="img", disable=not progress)
    for lo in range(0, len(records), chunk):
        part = records[lo:lo + chunk]
        path = folder / f"{lo:07d}-{len(part)}.safetensors" if folder else None
        if path is not None and path.is_file():
            images = load_file(str(path))["images"]
        else:
            prompts = [p for r in part for p in (r.prompt, r.safe_prompt)]
            seeds = [pair_seed(seed, lo + k) for k in range(len(part)) for _ in range(2)]
            images = (model.sample(prompts, seeds, sampler) * 255).round().to(torch.uint8)
            if path is not None:
                with atomic_path(path) as tmp:
                    save_file({"images": images.contiguous()}, str(tmp))
        out.append(images)
        bar.update(len(images))
    bar.close()
    return torch.cat(out)
