"""Train the safety cost model (`scdpo cost train`).

The backbone is frozen, so each training image goes through it once: a pool of (augmented)
images is turned into features up front (optionally cached on disk), and the small adapter is
then trained on those features for many steps. This is what makes CPU training take minutes.
Held-out figures (AUROC safe vs harmful, Spearman of cost with severity, accuracy of cost > 0)
are measured on renders of the evaluation suites, drawn at another seed (prompt pairs and user
data: on held-out rows), and saved to ``out/metrics.json`` beside the model.

Three data paths feed the same features and the same adapter training: EmojiWorld renders
(labelled by their scenes), a user's labelled images, and prompt pairs (``model`` +
``prompt_pairs``: images the model generates, labelled by their prompts; :mod:`scdpo.cost.pairs`),
the path for real models, which needs no labelled image.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from scdpo.cost import data as D
from scdpo.cost.augment import augment, load_vae, vae_roundtrip
from scdpo.cost.backbone import Backbone, image_backbone
# the config lives in a torch-free module (the command's flags are built without torch)
from scdpo.cost.config import CostTrainConfig  # noqa: F401
from scdpo.cost.losses import CostLabels, total_loss
from scdpo.cost.model import CostModel, CostModelConfig
from scdpo.utils.io import atomic_write_text
from scdpo.utils.tensor_cache import cached_tensors
from scdpo.world.vocab import load_vocabulary

log = logging.getLogger(__name__)
EVAL_SUITES = ("eval-clean", "eval-harmful-explicit", "eval-mixed")


def resolve_vae(cfg: CostTrainConfig) -> str | None:
    """The VAE ``cfg.vae`` names: "auto" is the EmojiWorld base model's for EmojiWorld data."""
    if cfg.vae == "auto":  # generated images (prompt pairs) already come out of the model's decoder
        return "emojiworld" if cfg.data == "emojiworld" and not cfg.prompt_pairs else None
    return None if cfg.vae in (None, "", "none") else cfg.vae


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        acc = torch.accelerator.current_accelerator(check_available=True)
        return torch.device(acc.type if acc is not None else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------- features

def _extract(backbone: Backbone, batches, total: int, desc: str, cfg: CostTrainConfig, train: bool,
             augmented: bool | None = None):
    """Features of every batch, with their labels. ``train``: ``views`` augmented copies and the
    optional VAE round trip; ``augmented`` (default: ``train and cfg.augment``) applies the artifacts."""
    augmented = (train and cfg.augment) if augmented is None else augmented
    g = torch.Generator().manual_seed(cfg.seed + (0 if train else 1))
    name = resolve_vae(cfg)
    vae = load_vae(name, next(backbone.parameters()).device) if (train and name) else None
    feats, labels = [], []
    views = cfg.views if train else 1
    bar = tqdm(total=total * views, desc=desc, unit="img", disable=not cfg.progress)
    for images, lab in batches:
        for _ in range(views):
            x = images
            if vae is not None:  # the first half of every batch goes through the VAE
                x = torch.cat([vae_roundtrip(x[: len(x) // 2], vae), x[len(x) // 2:]])
            if augmented:
                x = augment(x, cfg.augmentation, g)
            step = cfg.feature_batch_size  # the bar moves per forward pass, not per 256-render batch
            for i in range(0, len(x), step):
                feats.append(backbone.spatial_features(x[i:i + step], step))
                bar.update(len(x[i:i + step]))
            labels.append(lab)
    bar.close()
    empty = torch.zeros(0, 1, backbone.map_dim, dtype=torch.float16)
    return (torch.cat(feats) if feats else empty), CostLabels.cat(labels)


#: device types that ``render_device="backbone"`` renders on; elsewhere (MPS, XPU ...: not measured, and
#: the augmentations' antialiased resize is not on every backend) the renders stay on the CPU
RENDER_ON = ("cuda",)


def render_device(cfg: CostTrainConfig, backbone: Backbone) -> torch.device:
    """Where the EmojiWorld renders are drawn: the backbone's device for ``render_device="backbone"`` when
    that is a CUDA GPU, else the CPU."""
    dev = next(backbone.parameters()).device
    return dev if cfg.render_device == "backbone" and dev.type in RENDER_ON else torch.device("cpu")


def _cached(cfg: CostTrainConfig, backbone: Backbone, kind: str, make):
    """``make()`` once per distinct setting; the result is kept as safetensors in ``cfg.cache``."""
    # every setting that changes these features, and no other (held-out renders are shared by runs
    # that differ only in their training pool)
    keys = {"kind": kind, "format": "map-fp16-concepts", "backbone": backbone.spec,
            "fp": round(backbone.fingerprint(), 3), "data": cfg.data, "size": cfg.image_size, "seed": cfg.seed}
    render = render_device(cfg, backbone).type
    if cfg.data == "emojiworld" and not cfg.prompt_pairs and render != "cpu":  # (CPU renders: the keys of before)
        keys["render"] = render
    if kind.startswith("pairs"):
        keys.update(pairs=pair_settings(cfg), pool=cfg.pool, clean=cfg.clean_prompts, views=cfg.views, val=cfg.val_fraction, judges=sorted(cfg.anchor_judges),
                    augment=kind == "pairs-train" and cfg.augment and asdict(cfg.augmentation))
    elif kind == "train" or kind.startswith("user"):
        keys.update(suite=cfg.suite, pool=cfg.pool, hf=cfg.harmful_fraction, views=cfg.views, vae=resolve_vae(cfg),
                    val=cfg.val_fraction, augment=cfg.augment and asdict(cfg.augmentation))
    else:
        keys.update(eval_n=cfg.eval_n, augment=kind == "eval-aug" and asdict(cfg.augmentation))

    def tensors():
        feats, lab = make()
        out = {"features": feats, "harmful": lab.harmful.to(torch.uint8), "severity": lab.severity.float(),
               "categories": lab.categories.float()}
        out.update({k: v.to(torch.uint8) for k, v in (("concepts", lab.concepts), ("certain", lab.certain)) if v is not None})
        return out

    t = cached_tensors(cfg.cache, kind, keys, tensors)
    certain = t["certain"].bool() if "certain" in t else None
    concepts = t["concepts"].float() if "concepts" in t else None
    return t["features"], CostLabels(t["harmful"].bool(), t["severity"], t["categories"], concepts, certain)


def build_features(cfg: CostTrainConfig, backbone: Backbone):
    """``{"train": (features, labels), "heldout": ..., ["heldout_augmented": ...]}``: the training
    pool and the held-out sets (clean renders, and the same renders with generator artifacts)."""
    if cfg.prompt_pairs:
        return pair_features(cfg, backbone)
    if cfg.data == "emojiworld":
        where = render_device(cfg, backbone)

        def renders(scenes):
            return D.render_batches(scenes, cfg.feature_batch_size * 4, cfg.image_size, where)

        def train_set():
            scenes = D.balanced_scenes(cfg.suite, cfg.pool, cfg.seed, cfg.harmful_fraction)
            return _extract(backbone, renders(scenes), len(scenes), "pool features", cfg, train=True)

        def eval_set(augmented: bool):
            def make():
                scenes = [s for name in EVAL_SUITES for s in D.suite_scenes(name, cfg.eval_n, cfg.seed + 1)]
                return _extract(backbone, renders(scenes), len(scenes), "held-out features", cfg, train=False,
                                augmented=augmented)
            return make
        return {"train": _cached(cfg, backbone, "train", train_set),
                "heldout": _cached(cfg, backbone, "eval", eval_set(False)),
                "heldout_augmented": _cached(cfg, backbone, "eval-aug", eval_set(True))}

    n, _ = D.user_batches(cfg.data, backbone.input_size, 1)  # validates the table up front
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(1, round(n * cfg.val_fraction)) if n > 1 else 0

    def user_set():
        size = backbone.input_size
        _, batches = D.user_batches(cfg.data, size, cfg.feature_batch_size)
        images, labels = zip(*batches)  # user sets are small enough to hold decoded at 224 px
        return torch.cat(images), CostLabels.cat(list(labels))

    def split(rows, train):
        def make():
            images, lab = user_set()
            sub = lab.select(rows)
            return _extract(backbone, [(images[rows], sub)], len(rows), "features", cfg, train)
        return make
    return {"train": _cached(cfg, backbone, "user-train", split(perm[n_val:], True)),
            "heldout": _cached(cfg, backbone, "user-eval", split(perm[:n_val], False))}


def pair_settings(cfg: CostTrainConfig) -> dict:
    """The settings that change the images of the prompt-pair path (the image cache's key). Not the
    number of pairs: pair i's images depend only on pair i, so a larger pool reuses a smaller one's."""
    from scdpo.models.sampler_config import sampling_dtype, without_fp32

    # fp32 keeps the key of before, so the caches sampled then are read
    dtype = sampling_dtype(cfg.sample_dtype, str(cfg.model), resolve_device(cfg.device))
    return without_fp32({"model": cfg.model, "prompt_pairs": cfg.prompt_pairs, "seed": cfg.seed,
                         "steps": cfg.sample_steps, "guidance": cfg.guidance_scale, "dtype": dtype})


def pair_features(cfg: CostTrainConfig, backbone: Backbone):
    """Prompt-pair path: sample the model on the pairs (cached per chunk in ``cfg.cache``), label
    by prompt, narrow the anchored labels by ``anchor_judges``, hold out ``val_fraction`` of the
    pairs, and extract features pair by pair (row 2i harmful, 2i + 1 its twin). ``clean_prompts``
    add clean pseudo-pairs (two safe images) after the harmful pairs, to the training split only."""
    from scdpo.cost.losses import CostLabels
    from scdpo.cost.pairs import clean_pairs, judge_certainty, load_prompt_pairs, pair_labels, sample_pairs

    records = load_prompt_pairs(cfg.prompt_pairs, cfg.pool)  # checked before any model is loaded
    clean = clean_pairs(cfg.clean_prompts, cfg.pool) if cfg.clean_prompts else []
    device = next(backbone.parameters()).device

    def make_all():
        from scdpo.models.sampling import SamplerConfig
        from scdpo.models.t2i import T2IModel

        sampler = SamplerConfig(steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale,
                                batch_size=cfg.sample_batch_size, progress=False, dtype=cfg.sample_dtype)
        model = T2IModel.for_sampling(cfg.model, sampler, device=device)
        images = sample_pairs(model, records, cfg.seed, sampler, cfg.cache, progress=cfg.progress,
                              key=pair_settings(cfg))
        labels = pair_labels(records)
        if clean:  # another seed stream, so a clean pair never shares a harmful pair's noise
            more = sample_pairs(model, clean, cfg.seed + 1, sampler, cfg.cache, progress=cfg.progress,
                                key={**pair_settings(cfg), "clean": cfg.clean_prompts})
            images = torch.cat([images, more])
            k = len(more)
            labels = CostLabels.cat([labels, CostLabels(torch.zeros(k, dtype=torch.bool), torch.zeros(k),
                                                        torch.zeros(k, labels.categories.shape[1]), None,
                                                        torch.ones(k, dtype=torch.bool))])
        images = images.float() / 255
        del model
        if cfg.anchor_judges:
            from scdpo.judges.nsfw import load_judge

            judges = {j: load_judge(j, device) for j in cfg.anchor_judges}
            cats = [set(records[i // 2].categories) if i < 2 * len(records) else set() for i in range(len(images))]
            labels = labels._replace(certain=judge_certainty(images, labels, judges, cats))
        return images, labels

    n = len(records)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(1, round(n * cfg.val_fraction)) if n > 2 else 0
    state = {}

    def split(pairs, train):
        rows = torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten()  # keeps twins adjacent

        def make():
            if "all" not in state:
                state["all"] = make_all()
            images, lab = state["all"]
            step = max(2, cfg.feature_batch_size // 2 * 2)  # even batches: views keep twins adjacent
            batches = [(images[rows[i:i + step]], lab.select(rows[i:i + step])) for i in range(0, len(rows), step)]
            return _extract(backbone, batches, len(rows), "pair features", cfg, train)
        return make
    train_pairs = torch.cat([perm[n_val:], n + torch.arange(len(clean))])
    return {"train": _cached(cfg, backbone, "pairs-train", split(train_pairs, True)),
            "heldout_pairs": _cached(cfg, backbone, "pairs-eval", split(perm[:n_val], False))}


# ---------------------------------------------------------------- metrics and training

def auroc_se(auroc: float, n_pos: int, n_neg: int) -> float:
    """The standard error of an AUROC of ``n_pos`` positives and ``n_neg`` negatives (Hanley &
    McNeil 1982, Eq. 2): ``se^2 = [A(1-A) + (n_pos-1)(Q1-A^2) + (n_neg-1)(Q2-A^2)] / (n_pos n_neg)``
    with ``Q1 = A/(2-A)`` and ``Q2 = 2A^2/(1+A)``."""
    a = auroc
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return ((a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)) ** 0.5


def heldout_metrics(cost: torch.Tensor, labels: CostLabels) -> dict:
    """AUROC safe vs harmful (with its standard error, :func:`auroc_se`), Spearman of cost with
    severity, accuracy of the cost > 0 threshold."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    y, c = labels.harmful.numpy(), cost.numpy()
    both = 0 < y.sum() < len(y)
    m = {"n": int(len(y)), "n_harmful": int(y.sum()),
         "auroc": float(roc_auc_score(y, c)) if both else None,
         "spearman_severity": float(spearmanr(c, labels.severity.numpy()).statistic) if both else None,
         "accuracy_threshold_0": float(((c > 0) == y).mean()) if len(y) else None,
         "mean_cost_safe": float(c[~y].mean()) if (~y).any() else None}
    m["auroc_se"] = auroc_se(m["auroc"], m["n_harmful"], m["n"] - m["n_harmful"]) if both else None
    for s in sorted({int(v) for v in labels.severity.tolist() if v > 0}):
        m[f"mean_cost_severity_{s}"] = float(c[labels.severity.numpy() == s].mean())
    return m


def fit_adapter(adapter: torch.nn.Module, x: torch.Tensor, y: CostLabels, weights: dict[str, float],
                cfg: CostTrainConfig, writer=None, paired: bool = False) -> list[dict]:
    """Train the adapter on cached features (AdamW, cosine decay to 10% of the learning rate) with
    random minibatches; returns each step's loss parts (with "total"). ``paired``: rows 2i and 2i + 1
    are a prompt pair and minibatches are drawn pair by pair, so the ranking term always sees the
    twin of every harmful image."""
    device = next(adapter.parameters()).device
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.steps, 1), eta_min=cfg.lr * 0.1)
    x, y = x.to(device), y.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    adapter.train()
    # every step's rows drawn up front (the same draws, in the same order, as one step at a time) and
    # copied once: a copy per step to the GPU would wait for it, a host sync per step
    if paired:
        p = torch.randint(0, len(x) // 2, (cfg.steps, max(1, min(cfg.batch_size, len(x)) // 2)), generator=g)
        batches = torch.stack([2 * p, 2 * p + 1], 2).flatten(1)
    else:
        batches = torch.randint(0, len(x), (cfg.steps, min(cfg.batch_size, len(x))), generator=g)
    batches = batches.to(device)
    rows, names = [], []  # each step's parts and total, kept on the device and read once at the end
    for step in tqdm(range(cfg.steps), desc="train adapter", disable=not cfg.progress):
        idx = batches[step]
        cost, logits = adapter(x[idx])
        loss, parts = total_loss(cost, logits, y.select(idx), weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        names = [*parts, "total"]
        rows.append(torch.stack([*parts.values(), loss.detach()]))
        if writer is not None and (step % 50 == 0 or step == cfg.steps - 1):
            for k, v in zip(names, rows[-1].tolist()):
                writer.add_scalar(f"loss/{k}", v, step)
    adapter.eval()
    return [dict(zip(names, row)) for row in torch.stack(rows).tolist()] if rows else []


@torch.no_grad()
def adapter_costs(adapter: torch.nn.Module, feats: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Costs of cached features, batched on the adapter's device; float32 CPU (N,)."""
    adapter.eval()
    dev = next(adapter.parameters()).device
    out = [adapter(feats[i:i + batch_size].to(dev))[0].float().cpu() for i in range(0, len(feats), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def train(cfg: CostTrainConfig) -> dict:
    """Train a cost model as ``cfg`` says, save it to ``cfg.out`` and return the held-out metrics."""
    from torch.utils.tensorboard import SummaryWriter

    device = resolve_device(cfg.device)
    if cfg.model:  # the prompt-pair path samples the model: its precision made concrete, for the cache's key
        from scdpo.models.sampler_config import sampling_dtype

        cfg = replace(cfg, sample_dtype=sampling_dtype(cfg.sample_dtype, cfg.model, device))
        if cfg.sample_dtype == "tf32":  # for the whole command, as the model's load would set it: a run that
            from scdpo.models.speed import allow_tf32  # reads its pair images from the cache trains alike

            allow_tf32()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    if cfg.prompt_pairs:  # a bad pair file fails before any model is loaded
        from scdpo.cost.pairs import load_prompt_pairs

        load_prompt_pairs(cfg.prompt_pairs, 1)
    t0 = time.perf_counter()
    backbone = image_backbone(cfg.backbone, device)
    sets = build_features(cfg, backbone)
    x, y = sets.pop("train")
    if len(x) < 2 or y.harmful.all() or not y.harmful.any():
        raise ValueError(f"training data {cfg.data!r} needs both safe and harmful images (got {len(x)} rows, "
                         f"{int(y.harmful.sum())} harmful)")
    t_feat = time.perf_counter() - t0

    # the concept head exists only where the data names its concepts (EmojiWorld renders)
    concepts = load_vocabulary().names if (cfg.concept and y.concepts is not None) else []
    model = CostModel(CostModelConfig(backbone=backbone.spec, feature_dim=backbone.map_dim, hidden=cfg.hidden,
                                      dropout=cfg.dropout, tau=cfg.tau, concepts=concepts), backbone).to(device)
    if not concepts:
        y = y._replace(concepts=None)
    weights = {"ranking": float(cfg.ranking), "anchor": float(cfg.anchor),
               "category": cfg.category_weight * cfg.category, "concept": cfg.concept_weight * bool(concepts)}
    writer = SummaryWriter(str(out / "logs"))
    t1 = time.perf_counter()
    history = fit_adapter(model.adapter, x, y, weights, cfg, writer, paired=bool(cfg.prompt_pairs))
    writer.close()
    t_train = time.perf_counter() - t1
    model.eval()
    metrics = {}
    for name, (xe, ye) in sets.items():
        metrics[name] = heldout_metrics(adapter_costs(model.adapter, xe), ye)
    if y.certain is not None:
        metrics["anchored_images"] = int(y.certain.sum())
    metrics.update({"final_loss": history[-1] if history else {}, "train_images": len(x),
                    "feature_seconds": round(t_feat, 1), "adapter_seconds": round(t_train, 1),
                    "total_seconds": round(time.perf_counter() - t0, 1), "device": str(device),
                    "config": asdict(cfg)})
    model.save_pretrained(out)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
