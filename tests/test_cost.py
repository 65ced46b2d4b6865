"""The safety cost model: backbones, losses, training on cached features, checkpoints, data, CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from scdpo.cli import main
from scdpo.cost import CostModel, load_cost_scorer
from scdpo.cost.augment import AugmentConfig, augment
from scdpo.cost.backbone import image_backbone
from scdpo.cost.data import user_batches
from scdpo.cost.losses import CostLabels, anchor_loss, category_loss, ranking_loss, total_loss
from scdpo.cost.train import CostTrainConfig, auroc_se, fit_adapter, heldout_metrics
from scdpo.world.dataset import png_bytes
from scdpo.world.records import I2P_CATEGORIES
from scdpo.world.render import render_scenes
from scdpo.world.suites import suite_scenes


def tiny_clip(path, seed=0, projection=True, hidden=32):
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=30, patch_size=10, projection_dim=16)
    (CLIPVisionModelWithProjection if projection else CLIPVisionModel)(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def effnet():
    return image_backbone("efficientnet-lite0")


def sp(x: float) -> float:  # softplus(-x) = -log sigmoid(x), by hand
    return math.log1p(math.exp(-x))


# ---------------------------------------------------------------- backbones

def test_efficientnet_has_its_imagenet_weights(effnet):
    skimage = pytest.importorskip("skimage.data")
    cat = torch.from_numpy(skimage.chelsea()).permute(2, 0, 1).float()[None] / 255
    coffee = torch.from_numpy(skimage.coffee()).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        top_cat = int(effnet.imagenet_logits(cat).argmax())
        top_coffee = int(effnet.imagenet_logits(coffee).argmax())
        f = torch.cat([effnet(cat), effnet(coffee)])
    assert 281 <= top_cat <= 285  # ImageNet's domestic-cat classes (tabby ... Egyptian cat)
    assert top_coffee in (967, 968)  # espresso, cup
    assert f.shape == (2, effnet.dim) == (2, 1280) and (f[0] - f[1]).abs().mean() > 0.1
    assert not any(p.requires_grad for p in effnet.parameters()) and not effnet.training
    with torch.no_grad():
        fmap = effnet.feature_map(torch.cat([cat[..., :300, :300], coffee[..., :300, :300]]))
    assert fmap.shape == (2, effnet.map_dim, 7, 7) == (2, 1664, 7, 7)
    # the head part of the map, averaged, is the pooled feature
    torch.testing.assert_close(fmap[:1, -1280:].mean((2, 3)), effnet(cat[..., :300, :300]), atol=1e-4, rtol=1e-4)


def test_folded_efficientnet_gives_the_published_modules_features(effnet, monkeypatch):
    import scdpo.cost.backbone as B

    monkeypatch.setattr(B, "fold_for_inference", lambda net: 0)
    published = B.EfficientNetLite0()  # as the packages load it: BatchNorms, padding modules, contiguous
    published.net.to(memory_format=torch.contiguous_format)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in published.modules()) == 49
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in effnet.modules())  # every one folded
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = published.feature_map(images.contiguous()), effnet.feature_map(images)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())
        torch.testing.assert_close(effnet(images), published(images), rtol=0, atol=1e-5)
    # checkpoints and feature caches record the published weights' fingerprint, not the folded ones'
    assert effnet.fingerprint() == published.fingerprint()


def test_efficientnet_layout_follows_its_device():
    """Channels-last where oneDNN measured it faster (the CPU), the default layout on any other device
    (on the GPU it slowed the eval's features; the meta device stands in for one here)."""
    from scdpo.cost.backbone import EfficientNetLite0
    from scdpo.models.speed import conv_layout

    assert conv_layout("cpu") == torch.channels_last and conv_layout("cuda:0") == torch.contiguous_format
    net = EfficientNetLite0()
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and min(m.weight.shape[1:]) > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    net.to("meta")
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and min(m.weight.shape[1:]) > 1]
    assert all(w.device.type == "meta" and w.is_contiguous() for w in convs)
    assert net.normalise(torch.rand(1, 3, 32, 32, device="meta")).is_contiguous()


def test_clip_backbone_from_a_local_folder(clip_path, tmp_path):
    bb = image_backbone(f"clip:{clip_path}")
    x = torch.rand(3, 3, 64, 48)  # any size: resized and centre-cropped to the config's 30 px
    assert bb(x).shape == (3, 16) and bb.dim == 16 and bb.projected
    assert bb.feature_map(x).shape == (3, 32, 3, 3) and bb.map_dim == 32  # 3x3 patches of 10 px
    assert not any(p.requires_grad for p in bb.parameters())
    plain = image_backbone(f"clip:{tiny_clip(tmp_path / 'plain', projection=False)}")
    assert plain.dim == 32 and not plain.projected  # no projection weights: pooled CLS, not a random one
    (clip_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    try:
        assert torch.allclose(image_backbone(f"clip:{clip_path}").mean, torch.full((1, 3, 1, 1), 0.5))
    finally:
        (clip_path / "preprocessor_config.json").unlink()


def test_feature_map_sees_a_corner_sprite_in_its_corner(effnet):
    """The spatial map is what lets the pooled cost see one small object: a harmful sprite drawn in
    the top-left corner changes the top-left cells of the map, not the far corner."""
    from dataclasses import replace

    from scdpo.world.scene import SceneObject
    from scdpo.world.vocab import load_vocabulary

    plain = replace(suite_scenes("eval-clean", 1, 3)[0], objects=(), texture="plain")
    pistol = load_vocabulary().by_name["pistol"]
    sprite = SceneObject("pistol", pistol.index, "pistol", (0.0, 0.0, 0.3, 0.3), "small")
    with_sprite = replace(plain, objects=(sprite,))
    images = render_scenes([plain, with_sprite], 64)
    assert (images[1] - images[0]).abs().sum() > 0
    with torch.no_grad():
        fmap = effnet.feature_map(images)
    change = (fmap[1] - fmap[0]).abs().mean(0)  # (7, 7)
    assert change[:3, :3].mean() > 5 * change[-3:, -3:].mean()


@pytest.mark.parametrize("spec", ["resnet50", "clip:", "efficientnet-b0"])
def test_unknown_backbone_is_named(spec):
    with pytest.raises(ValueError, match=f"unknown backbone '{spec}'"):
        image_backbone(spec)


# ---------------------------------------------------------------- losses

COST = torch.tensor([2.0, 0.5, -1.0])
LABELS = CostLabels(torch.tensor([True, True, False]), torch.tensor([3.0, 1.0, 0.0]),
                    torch.tensor([[0, 1.0, 0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0, 0], [0.0] * 7]))
LOGITS = torch.zeros(3, 7)


def test_ranking_loss_by_hand():
    # ordered pairs (rank 3 > 1, 3 > 0, 1 > 0) with cost differences 1.5, 3.0, 1.5
    want = (sp(1.5) + sp(3.0) + sp(1.5)) / 3
    assert ranking_loss(COST, LOGITS, LABELS).item() == pytest.approx(want, rel=1e-6)
    one_class = CostLabels(torch.tensor([False, False]), torch.zeros(2), torch.zeros(2, 7))
    c = torch.tensor([0.3, -0.2], requires_grad=True)
    loss = ranking_loss(c, torch.zeros(2, 7), one_class)
    loss.backward()  # no ordered pair: zero, but still differentiable
    assert loss.item() == 0 and torch.equal(c.grad, torch.zeros(2))


def test_anchor_and_category_losses_by_hand():
    sign_term = (sp(2.0) + sp(0.5) + sp(1.0)) / 3  # s*c = 2, 0.5, (-1)(-1)
    mse = ((2 - 3) ** 2 + (0.5 - 1) ** 2 + (-1 - -1) ** 2) / 3  # anchors: severity 3, 1, safe -1
    assert anchor_loss(COST, LOGITS, LABELS).item() == pytest.approx(sign_term + mse, rel=1e-6)
    assert category_loss(COST, LOGITS, LABELS).item() == pytest.approx(math.log(2), rel=1e-6)


def test_concept_loss_and_label_helpers():
    from scdpo.cost.losses import concept_loss

    concepts = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    labels = CostLabels(*LABELS[:3], concepts)
    logits = torch.cat([LOGITS, torch.tensor([[2.0, -1.0], [0.0, 0.0], [0.0, 0.0]])], 1)  # 7 categories + 2 concepts
    want = (sp(2.0) + sp(1.0) + 2 * math.log(2) + 2 * math.log(2)) / 3  # BCE summed over concepts, mean over images
    assert concept_loss(COST, logits, labels).item() == pytest.approx(want, rel=1e-6)
    assert category_loss(COST, logits, labels).item() == pytest.approx(math.log(2), rel=1e-6)  # first 7 columns only
    assert concept_loss(COST, LOGITS, LABELS).item() == 0  # labels without concepts: nothing to learn
    with pytest.raises(ValueError, match="0 concept logits but the labels have 2"):
        concept_loss(COST, LOGITS, labels)
    both = CostLabels.cat([labels.select(slice(0, 2)), labels.select(torch.tensor([2]))])
    assert all(torch.equal(a, b) for a, b in zip(both[:4], labels[:4])) and both.certain is None
    assert CostLabels.cat([labels, LABELS]).concepts is None  # only when every part has them


def test_lse_pool_lies_between_mean_and_max():
    from scdpo.cost.model import lse_pool

    s = torch.tensor([[0.0, 1.0, 4.0], [2.0, 2.0, 2.0]])
    pooled = lse_pool(s, 0.5)
    assert (s.mean(1) <= pooled + 1e-6).all() and (pooled <= s.amax(1) + 1e-6).all()
    assert pooled[1].item() == pytest.approx(2.0)  # constant scores pool to themselves
    assert lse_pool(s, 1e-3)[0].item() == pytest.approx(4.0, abs=0.01)
    assert lse_pool(s, 1e3)[0].item() == pytest.approx(5 / 3, abs=0.01)


def test_total_loss_weights_and_ablation():
    total, parts = total_loss(COST, LOGITS, LABELS, {"ranking": 1.0, "anchor": 0.0, "category": 0.5})
    assert set(parts) == {"ranking", "category"}
    assert total.item() == pytest.approx(float(parts["ranking"] + 0.5 * parts["category"]), rel=1e-6)
    assert all(not p.requires_grad for p in parts.values())  # detached, read once by the caller
    with pytest.raises(ValueError, match="disabled"):
        total_loss(COST, LOGITS, LABELS, {"ranking": 0, "anchor": 0, "category": 0})
    with pytest.raises(ValueError, match="enable at least one"):
        CostTrainConfig(out="x", ranking=False, anchor=False, category=False)


# ---------------------------------------------------------------- training on cached features

def synthetic(n: int, seed: int, dim: int = 64, locations: int = 9):
    """Feature maps (n, locations, dim) where severity s shifts a few dimensions by s at ONE random
    location (a stand-in for a small harmful object in a backbone's feature map)."""
    g = torch.Generator().manual_seed(seed)
    sev = torch.randint(0, 4, (n,), generator=g).float()
    x = torch.randn(n, locations, dim, generator=g)
    where = torch.randint(0, locations, (n,), generator=g)
    x[torch.arange(n), where, :4] += sev[:, None] * 2.5
    cats = torch.zeros(n, 7)
    cats[sev > 0, 1] = 1
    return x, CostLabels(sev > 0, sev, cats)


def test_adapter_training_reads_its_losses_once_not_every_step(tmp_path, monkeypatch):
    """Each read of a device value is a host sync on a GPU (issue 16): the loop keeps its losses on
    the device, masks instead of boolean indexing, and reads the whole history at the end."""
    from scdpo.cost.model import CostAdapter

    x, y = synthetic(64, 0)
    y = y._replace(certain=torch.arange(64) % 3 > 0)
    import sys

    reads = []

    def spy(name):
        real = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            if "torch/optim" not in sys._getframe(1).f_code.co_filename:  # AdamW's step counts live on the CPU
                reads.append(name)
            return real(self, *a, **k)
        return read
    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "nonzero", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    getitem = torch.Tensor.__getitem__

    def index(self, key):  # a boolean mask as an index is a nonzero() inside C++: a sync on a GPU
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
            reads.append("mask index")
        return getitem(self, key)
    monkeypatch.setattr(torch.Tensor, "__getitem__", index)
    cfg = CostTrainConfig(out=str(tmp_path), steps=25, batch_size=16, progress=False)
    hist = fit_adapter(CostAdapter(64, 32, 7, 0.0), x, y, {"ranking": 1.0, "anchor": 1.0, "category": 0.5}, cfg)
    assert len(hist) == 25 and set(hist[0]) == {"ranking", "anchor", "category", "total"}
    assert reads.count("tolist") == 1 and set(reads) == {"tolist"}


@pytest.mark.parametrize("objectives", [dict(), dict(anchor=False), dict(ranking=False)])
def test_adapter_training_ranks_harmful_above_safe(objectives, tmp_path):
    from scdpo.cost.model import CostAdapter

    torch.manual_seed(0)
    x, y = synthetic(512, 0)
    adapter = CostAdapter(64, 32, 7, 0.0)
    cfg = CostTrainConfig(out=str(tmp_path), steps=300, batch_size=64, lr=3e-3, progress=False, **objectives)
    weights = {"ranking": float(cfg.ranking), "anchor": float(cfg.anchor), "category": 0.5}
    hist = fit_adapter(adapter, x, y, weights, cfg)
    first, last = np.mean([h["total"] for h in hist[:10]]), np.mean([h["total"] for h in hist[-10:]])
    assert last < 0.6 * first
    xe, ye = synthetic(400, 1)
    with torch.no_grad():
        cost = adapter(xe)[0]
    m = heldout_metrics(cost, ye)
    assert m["auroc"] > 0.95 and m["spearman_severity"] > 0.7
    assert m["mean_cost_safe"] < m["mean_cost_severity_1"] < m["mean_cost_severity_3"]
    if cfg.anchor:  # the anchoring is what puts the threshold at 0
        assert m["accuracy_threshold_0"] > 0.9 and m["mean_cost_safe"] < 0 < m["mean_cost_severity_1"]
    # multiple-instance pooling: a harmful object at any ONE location (a corner, the centre) of an
    # otherwise safe map raises the image's cost as much, and above the same map without it
    safe = xe[ye.severity == 0][:50]
    with torch.no_grad():
        base = adapter(safe)[0]
        for where in (0, 4, 8):
            marked = safe.clone()
            marked[:, where, :4] += 3 * 2.5
            raised = adapter(marked)[0]
            assert (raised > base + 1).float().mean() > 0.95
            if cfg.anchor:
                assert (raised > 0).float().mean() > 0.95 and (base < 0).float().mean() > 0.9


def test_feature_bar_moves_per_forward_pass(monkeypatch, tmp_path):
    """A batch of 256 renders is minutes on a busy CPU: the bar counts each backbone pass."""
    from scdpo.cost import train as cost_train
    from scdpo.cost.losses import CostLabels

    class FakeBackbone:
        map_dim = 4

        def __init__(self):
            self.calls = []

        def spatial_features(self, x, batch_size):
            self.calls.append(len(x))
            return torch.zeros(len(x), 1, self.map_dim, dtype=torch.float16)

    updates = []

    class Recorded(cost_train.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(cost_train, "tqdm", Recorded)
    labels = CostLabels(torch.zeros(10, dtype=torch.bool), torch.zeros(10), torch.zeros(10, 7))
    backbone = FakeBackbone()
    cfg = CostTrainConfig(out=str(tmp_path), feature_batch_size=4, progress=False, vae="none")
    feats, lab = cost_train._extract(backbone, [(torch.zeros(10, 3, 8, 8), labels)], 10, "f", cfg, train=False)
    assert backbone.calls == updates == [4, 4, 2] and feats.shape == (10, 1, 4) and len(lab.harmful) == 10


@pytest.mark.parametrize("render_device", ["backbone", "cpu"])
def test_renders_are_drawn_where_the_setting_says(render_device, monkeypatch, tmp_path):
    """On a GPU the pool's renders and their augmentations stay on the backbone's device (the thirty-third
    round: 11.4 s of the cost stage were renders on one CPU thread); ``render_device="cpu"`` keeps them on
    the CPU, and the features' cache tells the two apart. The backbone here lives on the meta device, a
    stand-in for a GPU: the recorded device is what matters, the renders themselves are drawn on the CPU."""
    from scdpo.cost import data as D
    from scdpo.cost import train as cost_train

    monkeypatch.setattr(cost_train, "RENDER_ON", ("cuda", "meta"))

    class MetaBackbone(torch.nn.Module):
        spec, map_dim = "stub", 4

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.empty(1, device="meta"))

        def fingerprint(self):
            return 0.0

        def spatial_features(self, x, batch_size):
            return torch.zeros(len(x), 1, self.map_dim, dtype=torch.float16)

    seen, real = [], D.render_batches

    def recorded(scenes, batch_size, size=64, device="cpu"):
        seen.append(torch.device(device).type)
        return real(scenes, batch_size, size)

    monkeypatch.setattr(D, "render_batches", recorded)
    cfg = CostTrainConfig(out=str(tmp_path), pool=8, eval_n=2, vae="none", progress=False, image_size=16,
                          render_device=render_device, cache=str(tmp_path / "cache"))
    sets = cost_train.build_features(cfg, MetaBackbone())
    assert seen == ["meta" if render_device == "backbone" else "cpu"] * 3 and len(sets["train"][0]) == 8
    other = "cpu" if render_device == "backbone" else "backbone"
    files = {f.name for f in (tmp_path / "cache").iterdir()}
    cost_train.build_features(dataclasses.replace(cfg, render_device=other), MetaBackbone())
    assert len({f.name for f in (tmp_path / "cache").iterdir()}) == 2 * len(files) == 6


def test_only_gpu_renders_of_emojiworld_scenes_change_the_feature_cache_keys(monkeypatch, tmp_path):
    # CPU renders keep the keys (and so the caches) of before; prompt pairs draw no renders
    from scdpo.cost import train as cost_train

    class Stub(torch.nn.Module):
        spec = "stub"

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.empty(1, device="meta"))

        def fingerprint(self):
            return 0.0

    keys = []
    monkeypatch.setattr(cost_train, "RENDER_ON", ("cuda", "meta"))
    monkeypatch.setattr(cost_train, "cached_tensors", lambda folder, name, k, make: keys.append(k) or {
        "features": torch.zeros(1, 1, 1), "harmful": torch.zeros(1), "severity": torch.zeros(1),
        "categories": torch.zeros(1, 7)})
    for kind, extra in [("train", {}), ("train", {"render_device": "cpu"}),
                        ("pairs-train", {"prompt_pairs": "p.txt", "model": "emojiworld"})]:
        cost_train._cached(CostTrainConfig(out=str(tmp_path), **extra), Stub(), kind, None)
    assert [k.get("render") for k in keys] == ["meta", None, None]
    assert set(keys[0]) - set(keys[1]) == {"render"}


def test_renders_stay_on_the_cpu_beside_a_backbone_off_cuda(tmp_path):
    from scdpo.cost.train import render_device

    meta = torch.nn.Linear(1, 1, device="meta")  # any device other than CUDA (MPS, XPU ...)
    assert render_device(CostTrainConfig(out=str(tmp_path)), meta).type == "cpu"


def test_an_unknown_render_device_is_named(tmp_path):
    with pytest.raises(ValueError, match="--render-device 'gpu'"):
        CostTrainConfig(out=str(tmp_path), render_device="gpu")


# ---------------------------------------------------------------- checkpoints and scorer

def test_save_load_is_bit_exact_and_scorer_interface(clip_path, tmp_path):
    torch.manual_seed(1)
    model = CostModel.create(f"clip:{clip_path}", hidden=8, concepts=["dog", "pistol", "cat"])
    for p in model.adapter.parameters():
        p.data.normal_()
    model.save_pretrained(tmp_path / "cm")
    assert sorted(f.name for f in (tmp_path / "cm").iterdir()) == ["config.json", "model.safetensors"]
    back = CostModel.from_pretrained(tmp_path / "cm")
    for (k, a), (_, b) in zip(model.adapter.state_dict().items(), back.adapter.state_dict().items()):
        assert torch.equal(a, b), k
    images = torch.rand(5, 3, 32, 32)
    assert torch.equal(model.score(images), back.score(images))
    cost, logits = back(images)  # the concept head is auxiliary: the model gives cost and 7 categories
    assert cost.shape == (5,) and logits.shape == (5, 7) and back.config.concepts == ["dog", "pistol", "cat"]
    assert torch.allclose(model.score(images), back.score(images, batch_size=2), atol=1e-5)
    scorer = load_cost_scorer(tmp_path / "cm", batch_size=64)
    out = scorer(images, None)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (5,)
    assert torch.equal(out, model.score(images))
    with pytest.raises(ValueError, match="5 images but 2 prompt records"):
        scorer(images, [None, None])


def test_checkpoint_from_another_backbone_is_refused(clip_path, tmp_path):
    CostModel.create(f"clip:{clip_path}").save_pretrained(tmp_path / "cm")
    other = tiny_clip(tmp_path / "other", seed=5)  # same shapes, other weights
    with pytest.raises(ValueError, match="trained on backbone 'clip:.*other weights"):
        CostModel.from_pretrained(tmp_path / "cm", backbone=f"clip:{other}")
    wide = tiny_clip(tmp_path / "wide", hidden=48)  # 48-d patch features instead of 32-d
    with pytest.raises(ValueError, match=r"\(32-d\), not on 'clip:.*wide' \(48-d"):
        CostModel.from_pretrained(tmp_path / "cm", backbone=f"clip:{wide}")
    cfg = json.loads((tmp_path / "cm" / "config.json").read_text())
    (tmp_path / "cm" / "config.json").write_text(json.dumps({**cfg, "version": 2}))  # the pooled-feature adapter
    with pytest.raises(ValueError, match="format 2.*retrain"):
        CostModel.from_pretrained(tmp_path / "cm")
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "config.json").write_text(json.dumps({"kind": "scdpo-emojiworld-judge"}))
    with pytest.raises(ValueError, match="not a scdpo cost model"):
        CostModel.from_pretrained(tmp_path / "judge")
    with pytest.raises(FileNotFoundError, match="no cost model"):
        CostModel.from_pretrained(tmp_path / "nothing")


# ---------------------------------------------------------------- data

def _table(tmp_path, rows, name="data.parquet"):
    path = tmp_path / name
    pd.DataFrame(rows).to_parquet(path)
    return path


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 12), color).save(buf, format="PNG")
    return buf.getvalue()


def test_user_parquet_labels_and_images(tmp_path):
    rows = {"image": [_png("red"), _png("blue"), _png("green")], "label": [1, 0, 1],
            "category": ["violence", None, "sexual,hate"], "severity": [3, 0, float("nan")]}
    n, batches = user_batches(_table(tmp_path, rows), size=16, batch_size=2)
    images, labels = zip(*batches)
    images = torch.cat(images)
    assert n == 3 and images.shape == (3, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    assert images[0, 0].mean() > 0.9 and images[1, 2].mean() > 0.9  # red, then blue
    harmful = torch.cat([lb.harmful for lb in labels])
    severity = torch.cat([lb.severity for lb in labels])
    cats = torch.cat([lb.categories for lb in labels])
    assert harmful.tolist() == [True, False, True] and severity.tolist() == [3, 0, 1]  # NaN severity -> 1
    idx = {c: i for i, c in enumerate(I2P_CATEGORIES)}
    assert cats[2, idx["sexual"]] == 1 and cats[2, idx["hate"]] == 1 and cats[1].sum() == 0


@pytest.mark.parametrize("rows,match", [
    ({"image": [b"x"], "category": ["hate"]}, r"data.parquet: missing column 'label'"),
    ({"image": [b"x", b"y"], "label": [1, float("nan")]}, r"data.parquet: column 'label' has NaN"),
    ({"image": [b"x"], "label": [2]}, r"column 'label' must hold 0/1"),
    ({"image": [b"x"], "label": [1], "category": ["gore"]}, r"unknown category 'gore'"),
    ({"picture": [b"x"], "label": [1]}, r"data.parquet: missing column 'image' \(or 'path'\)"),
])
def test_bad_user_tables_are_named(tmp_path, rows, match):
    with pytest.raises(ValueError, match=match):
        user_batches(_table(tmp_path, rows), 16, 4)


def test_corrupt_image_names_its_row_and_file(tmp_path):
    _, batches = user_batches(_table(tmp_path, {"image": [_png("red"), b"not a png"], "label": [0, 1]}), 16, 4)
    with pytest.raises(ValueError, match=r"data.parquet row 1"):
        list(batches)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "metadata.csv").write_text("file_name,label\nmissing.png,1\n")
    _, batches = user_batches(tmp_path / "imgs", 16, 4)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        list(batches)


def test_augment_is_seeded_and_in_range():
    x = render_scenes(suite_scenes("eval-clean", 8, 0), 64)
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(0))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert (a - x).abs().mean() > 0.01
    blur_only = AugmentConfig(p_flip=0, p_blur=1, p_lowres=0, p_noise=0, p_color=0)
    blurred = augment(x, blur_only, torch.Generator().manual_seed(0))
    def tv(t):
        return (t[..., 1:] - t[..., :-1]).abs().mean()
    assert tv(blurred) < 0.8 * tv(x)


# ---------------------------------------------------------------- command line

def test_cli_train_and_score_round_trip(tmp_path, capsys):
    out = tmp_path / "cm"
    argv = ["cost", "train", "--out", str(out), "--pool", "16", "--eval-n", "3", "--steps", "20",
            "--batch-size", "8", "--feature-batch-size", "16", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 16 and metrics["heldout"]["n"] == 9
    assert {"auroc", "spearman_severity", "accuracy_threshold_0"} <= set(metrics["heldout"])
    assert set(metrics["final_loss"]) == {"ranking", "anchor", "category", "concept", "total"}
    model = CostModel.from_pretrained(out)
    assert len(model.config.concepts) == model.adapter.net[-1].out_features - 8 == 261

    scenes = suite_scenes("eval-mixed", 3, 7)
    images = render_scenes(scenes, 64)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        (folder / f"{i}.png").write_bytes(png_bytes(im))
    assert main(["cost", "score", "--cost-model", str(out), "--images", str(folder), "--out",
                 str(tmp_path / "s.json"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [r["file"] for r in rows] == ["0.png", "1.png", "2.png"]
    want = model.score(torch.stack([torch.from_numpy(np.asarray(Image.open(folder / f"{i}.png"), dtype=np.float32))
                                    .permute(2, 0, 1) / 255 for i in range(3)]))
    assert np.allclose([r["cost"] for r in rows], want.numpy(), atol=1e-4)

    pairs = _table(tmp_path, {"caption": ["a", "b"], "jpg_0": [png_bytes(images[0]), png_bytes(images[1])],
                              "jpg_1": [png_bytes(images[2]), png_bytes(images[0])]}, "pairs.parquet")
    assert main(["cost", "score", "--cost-model", str(out), "--images", str(pairs), "--out",
                 str(tmp_path / "s.parquet"), "--quiet"]) == 0
    table = pd.read_parquet(tmp_path / "s.parquet")
    assert list(table.columns) == ["row", "caption", "cost_0", "cost_1"]
    assert np.allclose(table["cost_0"], [want[0], want[1]], atol=1e-4)
    assert np.allclose(table["cost_1"], [want[2], want[0]], atol=1e-4)
    assert "harmful(cost>0)" in capsys.readouterr().out


def test_vae_round_trip_defaults_to_the_generators_own_vae_on_renders():
    from scdpo.cost.train import resolve_vae

    assert resolve_vae(CostTrainConfig(out="x")) == "emojiworld"  # EmojiWorld renders: the base model's decoder
    assert resolve_vae(CostTrainConfig(out="x", data="mine.parquet")) is None  # user images: none unless asked
    assert resolve_vae(CostTrainConfig(out="x", vae="none")) is None
    assert resolve_vae(CostTrainConfig(out="x", data="mine.parquet", vae="/vae")) == "/vae"


def test_cli_train_on_user_data_with_clip(clip_path, tmp_path, capsys):
    images = render_scenes(suite_scenes("eval-mixed", 12, 0), 32)
    rows = {"image": [png_bytes(im) for im in images], "label": [i % 2 for i in range(12)],
            "category": ["violence" if i % 2 else None for i in range(12)]}
    out = tmp_path / "cm"
    assert main(["cost", "train", "--out", str(out), "--data", str(_table(tmp_path, rows)), "--backbone",
                 f"clip:{clip_path}", "--steps", "5", "--batch-size", "4", "--val-fraction", "0.25",
                 "--no-progress", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 9 and metrics["heldout"]["n"] == 3
    assert "concept" not in metrics["final_loss"]  # user data names no concepts: no concept head
    model = CostModel.from_pretrained(out)
    assert model.config.concepts == [] and model.config.feature_dim == 32 and model.backbone.spec == f"clip:{clip_path}"


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["cost", "score", "--cost-model", str(tmp_path), "--images", str(tmp_path)]) == 2
    assert "no cost model" in capsys.readouterr().err
    assert main(["cost", "train", "--out", str(tmp_path / "o"), "--backbone", "vgg"]) == 2
    assert "unknown backbone 'vgg'" in capsys.readouterr().err
    for flag, value, match in (("--tau", "0", "tau must be > 0"), ("--concept-weight", "-1", "concept_weight must be >= 0")):
        assert main(["cost", "train", "--out", str(tmp_path / "o"), flag, value]) == 2
        assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_auroc_se_hanley_mcneil():
    # A = 0.9, 50 + 50 cases, by hand: Q1 = 0.818, Q2 = 0.853, se^2 = (0.09 + 49 x 0.0082 + 49 x 0.0426) / 2500
    assert auroc_se(0.9, 50, 50) == pytest.approx(0.0321, abs=2e-4)
    assert auroc_se(0.9555, 122, 134) < auroc_se(0.9555, 30, 30)  # more cases, tighter
    assert auroc_se(1.0, 10, 10) == 0.0
