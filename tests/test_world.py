"""EmojiWorld: vocabulary, scenes, suites, rendering, export and streaming, checked for behaviour.

Everything runs on CPU at tiny sizes (32 px renders, a handful of scenes) except the suite-wide
checks on scene *descriptions*, which are cheap (no rendering).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from scdpo.utils.grid import make_grid, save_grid
from scdpo.world import vocab as vocab_mod
from scdpo.world.dataset import EmojiWorldDataset, export_suite
from scdpo.world.records import I2P_CATEGORIES, PromptRecord
from scdpo.world.render import label_matrix, load_atlas, render_scenes
from scdpo.world.scene import COLORS, SIZES, TEXTURES, Scene, with_article
from scdpo.world.stream import SceneStream, scene_loader
from scdpo.world.suites import SUITES, get_suite, get_suite_spec, suite_scenes
from scdpo.world.vocab import load_vocabulary

SUITE_NAMES = ("train", "align-harmful", "align-clean", "eval-clean", "eval-harmful-explicit",
               "eval-harmful-implicit", "eval-mixed")


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary()


def _whole(phrase: str) -> re.Pattern:
    """``phrase`` as a whole phrase (not part of a longer word)."""
    return re.compile(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])")


def _centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


# ----------------------------------------------------------------------------- vocabulary

def test_vocabulary_size_taxonomy_and_heldout(vocab):
    assert len(vocab.safe) >= 150
    assert len(vocab.harmful) >= 24
    assert len(vocab) == len(vocab.safe) + len(vocab.harmful)
    assert {c.category for c in vocab.harmful} == set(I2P_CATEGORIES)
    assert all(c.category is None and c.severity == 0 for c in vocab.safe)
    for c in vocab.harmful:
        assert c.severity in (1, 2, 3), c.name
        assert len(c.heldout) >= 1, c.name
        assert not set(c.heldout) & set(c.synonyms), c.name
    # index is the row in the atlas / the label column
    assert [c.index for c in vocab.concepts] == list(range(len(vocab)))
    assert len(set(vocab.names)) == len(vocab)


def test_concept_keyword_modes(vocab):
    harm = vocab.harmful[0]
    safe = vocab.safe[0]
    assert harm.keywords("align") == harm.synonyms
    assert harm.keywords("heldout") == harm.heldout
    assert harm.keywords("all") == harm.synonyms + harm.heldout
    assert safe.keywords("heldout") == safe.synonyms  # safe concepts have no held-out words
    with pytest.raises(ValueError, match="keyword mode"):
        harm.keywords("bogus")
    with pytest.raises(KeyError, match="no-such-concept"):
        vocab["no-such-concept"]


_GOOD_SAFE = "  - {name: dog, emoji: dog2, synonyms: [dog]}\n"
_GOOD_HARM = "  - {name: bomb, emoji: bomb, category: violence, severity: 3, synonyms: [bomb], heldout: [grenade]}\n"


@pytest.mark.parametrize("safe,harmful,message", [
    (_GOOD_SAFE, "  - {name: bomb, emoji: bomb, category: violence, severity: 3, synonyms: [bomb]}\n", "heldout"),
    ("  - {name: dog, synonyms: [dog]}\n", _GOOD_HARM, "emoji"),
    (_GOOD_SAFE, _GOOD_HARM.replace("violence", "violent"), "violent"),
    (_GOOD_SAFE, _GOOD_HARM.replace("severity: 3", "severity: 5"), "severity"),
    (_GOOD_SAFE + _GOOD_SAFE, _GOOD_HARM, "duplicate"),
    (_GOOD_SAFE, _GOOD_HARM + _GOOD_HARM.replace("synonyms: [bomb]", "synonyms: [explosive]"), "duplicate"),
], ids=["missing-heldout", "missing-emoji", "bad-category", "severity-5", "duplicate-safe", "duplicate-harmful"])
def test_bad_vocabulary_file_names_the_file(tmp_path, safe, harmful, message):
    path = tmp_path / "concepts.yaml"
    path.write_text(f"safe:\n{safe}harmful:\n{harmful}", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_vocabulary(str(path))
    assert str(path) in str(info.value)


def test_good_small_vocabulary_file_loads(tmp_path):
    path = tmp_path / "concepts.yaml"
    path.write_text(f"safe:\n{_GOOD_SAFE}harmful:\n{_GOOD_HARM}", encoding="utf-8")
    v = vocab_mod._parse(yaml.safe_load(path.read_text()), path)
    assert v.names == ["dog", "bomb"]
    assert v["bomb"].harmful and v["bomb"].category == "violence" and v["bomb"].severity == 3
    assert v["bomb"].heldout == ("grenade",) and v["dog"].group == "object" and v["bomb"].group == "harm"
    with pytest.raises(FileNotFoundError):
        load_vocabulary(str(tmp_path / "missing.yaml"))


# ----------------------------------------------------------------------------- atlas

def test_atlas_matches_vocabulary_and_every_sprite_is_visible(vocab):
    atlas = load_atlas()
    assert atlas.shape == (len(vocab), 4, 64, 64)
    assert atlas.dtype == torch.float32
    assert float(atlas.min()) >= 0 and float(atlas.max()) <= 1
    alpha = atlas[:, 3]
    coverage = (alpha > 0.5).float().mean((1, 2))
    empty = [vocab.names[i] for i in torch.nonzero(coverage < 0.02).flatten().tolist()]
    assert not empty, f"sprites with (almost) no opaque pixels: {empty}"
    # premultiplied: colour never exceeds alpha
    assert bool((atlas[:, :3] <= alpha[:, None] + 1e-6).all())


# ----------------------------------------------------------------------------- determinism

def test_suite_scenes_deterministic_and_batch_independent():
    a = suite_scenes("train", 12, seed=3)
    b = suite_scenes("train", 12, seed=3)
    assert a == b
    for i in (0, 5, 11):
        assert suite_scenes("train", 1, seed=3, start=i) == [a[i]]
    assert suite_scenes("train", 4, seed=3, start=8) == a[8:12]
    other = suite_scenes("train", 12, seed=4)
    assert other != a
    assert sum(x.caption != y.caption for x, y in zip(a, other)) >= 10
    assert [s.seed for s in a] == list(range(12))
    with pytest.raises(ValueError, match="n must be"):
        suite_scenes("train", -1)
    assert suite_scenes("eval-clean", 0) == []


def test_render_deterministic_and_batch_independent():
    scenes = suite_scenes("train", 6, seed=1) + suite_scenes("eval-mixed", 2, seed=1)
    assert any(len(s.objects) != len(scenes[0].objects) for s in scenes)  # ragged sprite slots
    x = render_scenes(scenes, 32)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, render_scenes(scenes, 32))
    for i, s in enumerate(scenes):
        alone = render_scenes([s], 32)[0]
        assert torch.allclose(alone, x[i], atol=1e-6, rtol=0), i
    # a different subset/order gives the same rows
    assert torch.allclose(render_scenes(scenes[::-1][:3], 32), x.flip(0)[:3], atol=1e-6, rtol=0)
    assert render_scenes([], 32).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="too small"):
        render_scenes(scenes, 8)


def test_scene_dict_round_trip():
    for s in suite_scenes("eval-mixed", 5):
        d = json.loads(json.dumps(s.to_dict()))
        assert Scene.from_dict(d) == s


# ----------------------------------------------------------------------------- labels

def test_scene_dict_is_asdict_and_the_vocabulary_yaml_parses_the_same_either_way(vocab):
    # to_dict skips asdict's deep copies and the vocabulary parses with libyaml: neither may change a value
    from scdpo.utils.config import yaml_safe_load
    from scdpo.world.vocab import DATA_DIR

    for s in suite_scenes("eval-mixed", 30) + suite_scenes("eval-harmful-explicit", 30):
        assert s.to_dict() == dataclasses.asdict(s) and type(s.to_dict()["objects"]) is tuple
    text = (DATA_DIR / "concepts.yaml").read_text(encoding="utf-8")
    assert yaml_safe_load(text) == yaml.safe_load(text)
    assert vocab.safe is vocab.safe and vocab.safe == tuple(c for c in vocab.concepts if not c.harmful)


def test_explicit_harmful_labels(vocab):
    scenes = suite_scenes("eval-harmful-explicit")
    for s in scenes:
        harmful = [o for o in s.objects if vocab[o.concept].harmful]
        assert len(harmful) == 1, s.caption
        c = vocab[harmful[0].concept]
        assert s.harmful_categories == (c.category,)
        assert s.severity == c.severity
        assert s.harmful
        assert harmful[0].index == c.index
        assert harmful[0].keyword in c.synonyms  # training keywords only


def test_harmful_sprite_drawn_inside_its_box(vocab):
    size = 32
    scenes = suite_scenes("eval-harmful-explicit", len(vocab.harmful))  # one per harmful concept
    assert {s.concepts[0] for s in scenes} == {c.name for c in vocab.harmful}
    empty = [dataclasses.replace(s, objects=()) for s in scenes]
    with_sprite, without = render_scenes(scenes, size), render_scenes(empty, size)
    changed = (with_sprite - without).abs().amax(1) > 0.02  # B,H,W
    for i, s in enumerate(scenes):
        (x0, y0, x1, y1), = s.boxes_px(size)
        inside = torch.zeros(size, size, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        near = torch.zeros(size, size, dtype=torch.bool)  # the box grown by one pixel (edge anti-aliasing)
        near[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
        area = (x1 - x0) * (y1 - y0)
        assert int((changed[i] & inside).sum()) >= 0.1 * area, (s.concepts, s.caption)
        assert int((changed[i] & ~near).sum()) == 0, (s.concepts, s.caption)


@pytest.mark.parametrize("size", [32, 64])
def test_boxes_inside_canvas(size):
    for name in SUITE_NAMES:
        for s in suite_scenes(name, 60, seed=2):
            assert 1 <= len(s.objects) <= 3
            for o, (x0, y0, x1, y1) in zip(s.objects, s.boxes_px(size)):
                assert all(-1e-9 <= v <= 1 + 1e-9 for v in o.box), (name, o)
                assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size, (name, o)


def test_label_matrix_ones_exactly_at_concepts(vocab):
    scenes = suite_scenes("train", 20, seed=5)
    y = label_matrix(scenes)
    assert y.shape == (20, len(vocab))
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    for row, s in zip(y, scenes):
        assert set(torch.nonzero(row).flatten().tolist()) == {o.index for o in s.objects}
        assert [vocab.names[o.index] for o in s.objects] == list(s.concepts)


# ----------------------------------------------------------------------------- captions

_RELATIONS = ("left of", "right of", "above", "below")
_BACKGROUND = re.compile(r" on an? (?:(striped|checkered|dotted) )?([a-z]+) background$")


def _caption_scenes():
    return [s for name in SUITE_NAMES for s in suite_scenes(name, 150, seed=7)]


def test_captions_name_every_sprite_in_order(vocab):
    for s in _caption_scenes():
        for o in s.objects:
            assert _whole(o.keyword).search(s.caption), (o.keyword, s.caption)
            assert o.keyword in vocab[o.concept].keywords("all")
            assert o.index == vocab[o.concept].index


def test_two_sprite_relations_hold_for_boxes():
    seen = set()
    for s in _caption_scenes():
        if len(s.objects) != 2:
            continue
        rels = [r for r in _RELATIONS if f" {r} " in s.caption]
        assert len(rels) == 1, s.caption
        rel = rels[0]
        seen.add(rel)
        first, second = s.objects
        left_part, right_part = s.caption.split(f" {rel} ")
        assert _whole(first.keyword).search(left_part), s.caption
        assert _whole(second.keyword).search(right_part), s.caption
        (ax, ay), (bx, by) = _centre(first.box), _centre(second.box)
        ok = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[rel]
        assert ok, (s.caption, first.box, second.box)
    assert seen == set(_RELATIONS)


def test_three_sprites_left_to_right_in_caption_order():
    n = 0
    for s in _caption_scenes():
        if len(s.objects) == 3:
            n += 1
            xs = [_centre(o.box)[0] for o in s.objects]
            assert xs == sorted(xs), s.caption
            assert all(o.size == "small" for o in s.objects)
            assert " and " in s.caption
    assert n > 10


def test_lone_sprite_position_phrase_holds():
    seen = 0
    for s in _caption_scenes():
        if len(s.objects) != 1:
            continue
        cx, cy = _centre(s.objects[0].box)
        checks = {"on the left": cx < 0.5, "on the right": cx > 0.5, "at the top": cy < 0.5,
                  "at the bottom": cy > 0.5, "in the center": abs(cx - 0.5) <= 0.05 and abs(cy - 0.5) <= 0.05}
        for phrase, ok in checks.items():
            if phrase in s.caption:
                seen += 1
                assert ok, (s.caption, s.objects[0].box)
    assert seen > 10


def test_background_words_match_painted_background():
    named = 0
    for s in _caption_scenes():
        assert s.background in COLORS and s.texture in TEXTURES
        m = _BACKGROUND.search(s.caption)
        if "background" in s.caption:
            assert m, s.caption
            named += 1
            assert m.group(2) == s.background, s.caption
            assert (m.group(1) or "plain") == s.texture, s.caption
        else:
            assert s.texture == "plain", s.caption  # an unnamed background is plain
    assert named > 100


def test_size_words_only_for_sprites_of_that_size():
    used = {"small": 0, "big": 0}
    for s in _caption_scenes():
        assert not re.search(r"\bmedium\b", s.caption), s.caption
        for m in re.finditer(r"\b(small|big) ", s.caption):
            rest = s.caption[m.end():]
            assert any(rest.startswith(o.keyword) and o.size == m.group(1) for o in s.objects), s.caption
            used[m.group(1)] += 1
        for o in s.objects:
            assert o.size in SIZES
            for word in ("small", "big"):
                if re.search(rf"\b{word} {re.escape(o.keyword)}\b", s.caption):
                    assert any(p.size == word and p.keyword == o.keyword for p in s.objects)
    assert used["small"] > 0 and used["big"] > 0


def test_sprite_side_follows_size_word():
    for s in _caption_scenes():
        if len(s.objects) == 3:
            continue
        for o in s.objects:
            side = o.box[2] - o.box[0]
            assert abs(side - SIZES[o.size]) <= 0.07 * SIZES[o.size] + 1e-9, o
            assert abs((o.box[3] - o.box[1]) - side) < 1e-9


# ----------------------------------------------------------------------------- suites

def test_named_suites_exist():
    assert set(SUITES) == set(SUITE_NAMES)
    for name in SUITE_NAMES:
        assert get_suite_spec(name).name == name and get_suite_spec(name).default_n > 0
    assert len({s.stream for s in SUITES.values()}) == len(SUITES)


def test_unknown_suite_lists_known_ones():
    with pytest.raises(ValueError) as info:
        suite_scenes("no-such-suite", 1)
    msg = str(info.value)
    assert "no-such-suite" in msg and all(name in msg for name in SUITE_NAMES)
    with pytest.raises(ValueError, match="no-such-suite"):
        get_suite("no-such-suite", 1)
    with pytest.raises(ValueError, match="no-such-suite"):
        EmojiWorldDataset("no-such-suite")


def test_explicit_suite_covers_every_harmful_concept(vocab):
    scenes = suite_scenes("eval-harmful-explicit")
    assert len(scenes) == get_suite_spec("eval-harmful-explicit").default_n
    covered = {o.concept for s in scenes for o in s.objects}
    assert {c.name for c in vocab.harmful} <= covered


def test_heldout_keywords_never_in_align_or_explicit_prompts(vocab):
    patterns = [(c.name, h, _whole(h)) for c in vocab.harmful for h in c.heldout]
    for name in ("align-harmful", "align-clean", "eval-harmful-explicit"):
        records = get_suite(name)
        assert len(records) == get_suite_spec(name).default_n
        for r in records:
            for concept, word, pat in patterns:
                assert not pat.search(r.prompt), f"{name}: held-out {word!r} of {concept} in {r.prompt!r}"


def test_implicit_suite_uses_only_heldout_keywords(vocab):
    scenes = suite_scenes("eval-harmful-implicit")
    assert {s.concepts[0] for s in scenes} == {c.name for c in vocab.harmful}
    for s in scenes:
        (o,) = s.objects
        c = vocab[o.concept]
        assert c.harmful and o.keyword in c.heldout, s.caption
        assert not any(_whole(w).search(s.caption) for w in c.synonyms
                       if not _whole(w).search(o.keyword)), s.caption


@pytest.mark.parametrize("name", ["align-clean", "eval-clean"])
def test_clean_suites_have_no_harm(vocab, name):
    for s in suite_scenes(name):
        assert not s.harmful and s.severity == 0
        assert not any(vocab[c].harmful for c in s.concepts), s.caption


def test_mixed_suite_one_harmful_plus_benign(vocab):
    for s in suite_scenes("eval-mixed"):
        flags = [vocab[c].harmful for c in s.concepts]
        assert sum(flags) == 1 and flags.count(False) >= 1, s.caption
        assert len(set(s.concepts)) == len(s.concepts)


def test_align_harmful_one_harmful_training_keyword(vocab):
    for s in suite_scenes("align-harmful", 200):
        harm = [o for o in s.objects if vocab[o.concept].harmful]
        assert len(harm) == 1 and harm[0].keyword in vocab[harm[0].concept].synonyms


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_get_suite_records_consistent_with_scene(vocab, name):
    records = get_suite(name, 25, seed=1)
    scenes = suite_scenes(name, 25, seed=1)
    assert len(records) == 25
    for r, s in zip(records, scenes):
        assert isinstance(r, PromptRecord)
        assert r.source == f"emojiworld:{name}"
        scene = Scene.from_dict(r.meta["scene"])
        assert scene == s
        assert r.prompt == scene.caption
        assert r.concepts == scene.concepts
        assert r.categories == scene.harmful_categories
        assert r.categories == tuple(sorted({vocab[c].category for c in r.concepts if vocab[c].harmful}))
        assert r.severity == max((vocab[c].severity for c in r.concepts), default=0)
        assert r.harmful == bool(r.categories)
        json.dumps(r.meta)  # JSON-serialisable


# ----------------------------------------------------------------------------- dataset

def test_dataset_items_and_collate(vocab):
    ds = EmojiWorldDataset("eval-mixed", n=5, size=32, seed=2)
    assert len(ds) == 5
    scenes = suite_scenes("eval-mixed", 5, seed=2)
    item = ds[3]
    assert item["image"].shape == (3, 32, 32)
    assert float(item["image"].min()) >= 0 and float(item["image"].max()) <= 1
    assert item["caption"] == scenes[3].caption
    assert item["labels"].shape == (len(vocab),)
    assert set(torch.nonzero(item["labels"]).flatten().tolist()) == {o.index for o in scenes[3].objects}
    batch = ds.collate([0, 3, 4])
    assert batch["image"].shape == (3, 3, 32, 32) and batch["labels"].shape == (3, len(vocab))
    assert batch["caption"] == [scenes[i].caption for i in (0, 3, 4)]
    assert torch.allclose(batch["image"][1], item["image"], atol=1e-6, rtol=0)
    assert torch.equal(batch["labels"][1], item["labels"])
    loader = torch.utils.data.DataLoader(range(len(ds)), batch_size=2, collate_fn=ds.collate)
    assert [len(b["caption"]) for b in loader] == [2, 2, 1]
    with pytest.raises(IndexError):
        ds[5]
    assert len(EmojiWorldDataset("eval-clean")) == get_suite_spec("eval-clean").default_n


_COLUMNS = {"image", "caption", "concepts", "categories", "severity", "harmful", "boxes", "scene"}


def _shards(out: Path) -> list[Path]:
    return sorted(out.glob("shard-*.parquet"))


def _no_temp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_export_suite_loads_with_datasets(tmp_path):
    import datasets

    out = tmp_path / "ds"
    shards = export_suite("eval-mixed", out, n=7, size=32, seed=1, shard_size=3, batch_size=2)
    assert [p.name for p in shards] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert _shards(out) == shards and _no_temp_files(out)
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 7
    assert set(ds.column_names) == _COLUMNS
    scenes = suite_scenes("eval-mixed", 7, seed=1)
    assert ds["caption"] == [s.caption for s in scenes]
    assert ds["concepts"] == [list(s.concepts) for s in scenes]
    assert ds["categories"] == [list(s.harmful_categories) for s in scenes]
    assert ds["severity"] == [s.severity for s in scenes] and all(ds["harmful"])
    assert [json.loads(b) for b in ds["boxes"]] == [[list(b) for b in s.boxes_px(32)] for s in scenes]
    assert [Scene.from_dict(json.loads(x)) for x in ds["scene"]] == scenes
    img = ds[4]["image"]
    assert img.size == (32, 32) and img.mode == "RGB"
    # the PNG holds the render (8-bit rounding only)
    arr = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    assert torch.allclose(arr, render_scenes([scenes[4]], 32)[0], atol=0.5 / 255 + 1e-6)


def test_export_resume_keeps_shards(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "ds"
    first = export_suite("eval-clean", out, n=7, size=32, shard_size=3)
    before = {p.name: p.read_bytes() for p in first}
    table_last = pq.read_table(first[-1])
    mtimes = {p.name: p.stat().st_mtime_ns for p in first[:-1]}
    first[-1].unlink()
    again = export_suite("eval-clean", out, n=7, size=32, shard_size=3)
    assert again == first and _shards(out) == first
    for p in first[:-1]:
        assert p.read_bytes() == before[p.name] and p.stat().st_mtime_ns == mtimes[p.name]
    assert pq.read_table(first[-1]).equals(table_last)
    assert sum(pq.read_metadata(p).num_rows for p in _shards(out)) == 7
    assert _no_temp_files(out)


def test_interrupted_export_leaves_no_partial_shard(tmp_path, monkeypatch):
    import datasets
    import pyarrow.parquet as pq

    real = datasets.Dataset.to_parquet
    calls = []

    def flaky(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 1:
            Path(path).write_bytes(b"half a parquet file")  # a partial write, then the crash
            raise KeyboardInterrupt("killed")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "to_parquet", flaky)
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        export_suite("eval-clean", out, n=6, size=32, shard_size=3)
    assert [p.name for p in _shards(out)] == ["shard-00000.parquet"]
    assert sorted(p.name for p in out.iterdir()) == [".export.json", "shard-00000.parquet"]  # no temp file
    assert pq.read_metadata(out / "shard-00000.parquet").num_rows == 3
    monkeypatch.setattr(datasets.Dataset, "to_parquet", real)
    shards = export_suite("eval-clean", out, n=6, size=32, shard_size=3)
    assert [p.name for p in _shards(out)] == [p.name for p in shards] == ["shard-00000.parquet", "shard-00001.parquet"]
    captions = [c for p in shards for c in pq.read_table(p)["caption"].to_pylist()]
    assert captions == [s.caption for s in suite_scenes("eval-clean", 6)]


# ----------------------------------------------------------------------------- stream

def test_stream_resume_matches_fresh_stream():
    fresh = list(itertools.islice(iter(SceneStream("train", batch_size=3, seed=2)), 5))
    assert all(len(b) == 3 for b in fresh)
    assert fresh[0] == suite_scenes("train", 3, seed=2)
    assert [s.seed for b in fresh for s in b] == list(range(15))
    for k in (1, 4):
        resumed = next(iter(SceneStream("train", batch_size=3, seed=2, start_batch=k)))
        assert resumed == fresh[k]


def test_stream_workers_keep_batch_order():
    serial = list(itertools.islice(iter(scene_loader("train", 2, seed=1, workers=0)), 6))
    loader = scene_loader("train", 2, seed=1, workers=2)
    it = iter(loader)
    try:
        parallel = list(itertools.islice(it, 6))
    finally:
        it._shutdown_workers()
    assert parallel == serial
    assert serial == [suite_scenes("train", 2, seed=1, start=2 * b) for b in range(6)]
    resumed = next(iter(scene_loader("train", 2, seed=1, start_batch=3, workers=0)))
    assert resumed == serial[3]


# ----------------------------------------------------------------------------- grid

def test_make_grid_size_arithmetic():
    images = torch.rand(5, 3, 16, 12)
    g = make_grid(images, columns=2, scale=2, pad=4)
    assert g.size == (2 * (24 + 4) + 4, 3 * (32 + 4) + 4)
    g = make_grid(images, [f"caption {i}" for i in range(5)], columns=2, scale=2, pad=4, caption_lines=3)
    assert g.size == (2 * (24 + 4) + 4, 3 * (32 + 3 * 11 + 2 + 4) + 4)
    # columns never exceed the image count; tiles are nearest-neighbour upscaled
    g = make_grid(images[:1], columns=8, scale=3, pad=0)
    assert g.size == (36, 48)
    expected = (images[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
    got = torch.from_numpy(np.asarray(g).copy())
    assert torch.equal(got[::3, ::3], expected)
    with pytest.raises(ValueError, match="captions"):
        make_grid(images, ["only one"], columns=2)
    with pytest.raises(ValueError):
        make_grid(torch.rand(0, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        make_grid(torch.rand(3, 8, 8))


def test_save_grid_atomic(tmp_path):
    from PIL import Image

    path = save_grid(torch.rand(5, 3, 16, 16), tmp_path / "sub" / "grid.png", ["a"] * 5, columns=2)
    assert path == tmp_path / "sub" / "grid.png"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == make_grid(torch.rand(5, 3, 16, 16), ["a"] * 5, columns=2).size
    with pytest.raises(ValueError):
        save_grid(torch.rand(2, 3, 16, 16), tmp_path / "bad.png", ["x"])
    assert not (tmp_path / "bad.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]


# ----------------------------------------------------------------------------- grammar

@pytest.mark.parametrize("word,expected", [
    ("dog", "a dog"), ("apple", "an apple"), ("grapes", "grapes"), ("unicorn", "a unicorn"),
    ("small grapes", "small grapes"), ("big elephant", "a big elephant"), ("x-rated sign", "an x-rated sign"),
    ("one-armed bandit", "a one-armed bandit"), ("umbrella", "an umbrella"),
])
def test_with_article(word, expected):
    assert with_article(word) == expected


def test_export_refuses_to_mix_settings(tmp_path):
    out = tmp_path / "ds"
    export_suite("eval-clean", out, n=4, size=32, shard_size=2)
    with pytest.raises(ValueError, match="same settings"):
        export_suite("eval-clean", out, n=4, size=64, shard_size=2)


def test_no_minor_beside_a_sexual_concept():
    """The scene sampler keeps minors away from sexual concepts, so the prompt sources' minors
    filter (applied to every external source) has nothing to drop from any suite."""
    from scdpo.prompts.sources import filter_minors

    vocab = load_vocabulary()
    minors = {c.name for c in vocab.concepts if c.minor}
    assert {"baby", "child"} <= minors
    for name, n in (("train", 5000), ("align-harmful", None), ("eval-mixed", None)):
        records = get_suite(name, n)
        assert not [r for r in records if "sexual" in r.categories and minors & set(r.concepts)]
        assert filter_minors(records)[1] == 0


def test_safe_counterpart_is_a_minimal_safe_edit():
    from scdpo.world.scene import safe_counterpart
    from scdpo.world.suites import get_suite, suite_scenes

    vocab = load_vocabulary()
    scenes = [s for s in suite_scenes("eval-mixed", 60) if s.harmful]
    mapped = {}
    for s in scenes:
        t = safe_counterpart(s)
        assert not t.harmful and t.severity == 0 and t.caption != s.caption
        assert not any(vocab[c].harmful for c in t.concepts)
        assert [o.box for o in t.objects] == [o.box for o in s.objects]  # same places and sizes
        for a, b in zip(s.objects, t.objects):
            if vocab[a.concept].harmful:
                assert not vocab[b.concept].minor
                mapped.setdefault(a.concept, set()).add(b.concept)
            else:
                assert a == b  # benign sprites untouched
        assert (t.background, t.texture) == (s.background, s.texture)
    # one consistent counterpart per harmful concept (unless it is already in the scene)
    assert sum(len(v) == 1 for v in mapped.values()) >= 0.9 * len(mapped)
    recs = get_suite("eval-harmful-explicit", 5)
    assert all(r.safe_prompt and r.safe_prompt != r.prompt for r in recs)
    assert get_suite("eval-clean", 3)[0].safe_prompt is None
