"""`scdpo data mine` and `data build --mined-words`: which words a model draws harm for, read by the
cost model, and the harmful prompts rewritten with them."""

from __future__ import annotations

import pytest
import torch
import yaml

from scdpo.cli import main
from scdpo.data.mine import candidate_words, known_words, load_mined, mine, mined_rewrites, read_words
from scdpo.data.mine_config import MineConfig
from scdpo.models.sampler_config import SamplerConfig
from scdpo.world.suites import get_suite

CONCEPTS = ["sunflower", "dagger", "pistol"]  # the cost model's concept head: one safe, two harmful


class StubModel:
    """Draws a white image for prompts naming a planted word (on the seeds ``harmful_seeds`` allows),
    else black; records what it was asked."""

    def __init__(self, planted: dict[str, int]):
        self.planted, self.calls, self.device = planted, [], torch.device("cpu")

    def sample(self, prompts, seeds, sampler):
        self.calls.append(list(prompts))
        out = []
        for k, p in enumerate(prompts):
            word = p.split(" ", 1)[1]
            # the first planted[word] images of the word are harmful (seeds go in order per word)
            index = sum(1 for q in prompts[:k] if q == p)
            out.append(torch.full((3, 4, 4), 1.0 if index < self.planted.get(word, 0) else 0.0))
        return torch.stack(out)


def stub_reader(images):
    """White images are harmful and read as "dagger"."""
    level = images.mean((1, 2, 3))
    return level > 0.5, ["dagger" if x > 0.5 else "pistol" for x in level], level


def _cfg(tmp_path, words, **kw):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(words) + "\n")
    return MineConfig(out=str(tmp_path / "out"), words=str(path),
                      sampler=SamplerConfig(steps=1, progress=False), **kw)


def test_known_words_are_never_candidates(tmp_path):
    known = known_words()
    assert {"dagger", "stiletto", "jolly", "roger", "sunflower"} <= known  # names, keywords, held-out ones
    assert {"the", "on", "background", "small"} <= known  # the clean captions' words
    cfg = _cfg(tmp_path, ["pirate", "dagger", "jolly roger", "old galleon", "pirate"])
    assert candidate_words(cfg, None) == ["pirate", "old galleon"]
    assert candidate_words(_cfg(tmp_path, ["pirate", "dagger"], exclude_known=False), None) == ["pirate", "dagger"]
    assert candidate_words(_cfg(tmp_path, ["a", "b", "c"], exclude_known=False, limit=2), None) == ["a", "b"]
    with pytest.raises(ValueError, match="no candidate words"):
        candidate_words(_cfg(tmp_path, ["dagger"]), None)


def test_a_word_is_mined_when_enough_of_its_images_read_as_one_harmful_concept(tmp_path):
    cfg = _cfg(tmp_path, [], seeds=3, min_hits=2)
    model = StubModel({"xylo": 3, "once": 1})
    got = {r.word: r for r in read_words(["xylo", "once", "calm"], model, stub_reader, cfg)}
    assert (got["xylo"].harmful, got["xylo"].concept, got["xylo"].hits) == (3, "dagger", 3)
    assert (got["once"].harmful, got["once"].hits) == (1, 1) and got["calm"].concept == "" and got["calm"].hits == 0
    assert model.calls == [["a xylo"] * 3 + ["a once"] * 3 + ["a calm"] * 3]  # one batch, the template applied


def test_mine_writes_its_files_resumes_and_guards_its_settings(tmp_path):
    cfg = _cfg(tmp_path, ["xylo", "once", "calm", "zest", "quip"], chunk_size=2)
    model = StubModel({"xylo": 2, "quip": 2, "once": 1})
    summary = mine(cfg, model, stub_reader)
    out = tmp_path / "out"
    assert summary["mined"] == 2 and summary["any_harmful_image"] == 3
    assert yaml.safe_load((out / "mined.yaml").read_text()) == {"dagger": ["quip", "xylo"]}
    assert load_mined(out / "mined.yaml") == {"dagger": ["quip", "xylo"]}
    assert (out / "words.csv").read_text().splitlines()[0] == "word,harmful,concept,hits,mean_score"
    assert len(model.calls) == 3  # chunks of 2, 2 and 1 words
    (out / "chunks" / "chunk-00002.json").unlink()  # a run killed before its last chunk
    again = StubModel({"xylo": 2, "quip": 2, "once": 1})
    assert mine(cfg, again, stub_reader) == summary and again.calls == [["a quip", "a quip"]]
    with pytest.raises(ValueError, match="other settings"):
        mine(_cfg(tmp_path, ["xylo", "once", "calm", "zest", "quip"], chunk_size=2, seeds=3), model, stub_reader)


def test_rewrites_keep_the_counterpart_and_are_stable():
    records = get_suite("align-harmful", 40)
    mined = {"dagger": ["shiv"], "pistol": ["revolverish"], "bomb": ["boomer"]}
    out, n = mined_rewrites(records, mined, 1.0, seed=0)
    changed = [(a, b) for a, b in zip(records, out) if a.prompt != b.prompt]
    assert n == len(changed) > 0
    for a, b in changed:
        assert b.safe_prompt == a.safe_prompt and b.concepts == a.concepts and b.meta["mined_for"]
        assert any(w in b.prompt for ws in mined.values() for w in ws)
    assert all(not set(a.concepts) & set(mined) for a, b in zip(records, out) if a.prompt == b.prompt)
    half, m = mined_rewrites(records, mined, 0.5, seed=0)
    assert 0 < m < n and mined_rewrites(records, mined, 0.5, seed=0)[0] == half  # the same prompts every time


def test_bad_input_is_refused(tmp_path, capsys):
    for args, message in [(["--template", "a thing"], "{word}"), (["--seeds", "2", "--min-hits", "3"], "--min-hits"),
                          (["--reader", "cost"], "--cost-model"), (["--reader", "clip"], "--reader clip")]:
        assert main(["data", "mine", "--out", str(tmp_path / "o"), *args]) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sunflower": ["sun"]}))
    with pytest.raises(ValueError, match="not EmojiWorld harmful concepts"):
        load_mined(bad)
    with pytest.raises(FileNotFoundError, match="scdpo data mine"):
        load_mined(tmp_path / "missing.yaml")


def test_build_settings_name_the_mined_words_only_when_used(tmp_path):
    from scdpo.data.config import BuildConfig

    common = dict(model="emojiworld", cost_model="c", reward="emojiworld", out=str(tmp_path / "o"), harmful="align-harmful")
    plain = BuildConfig(**common).settings()
    assert not any(k.startswith("mined_") for k in plain)  # builds made before the option resume
    words = tmp_path / "mined.yaml"
    words.write_text(yaml.safe_dump({"dagger": ["shiv"]}))
    on = BuildConfig(**common, mined_words=str(words)).settings()
    words.write_text(yaml.safe_dump({"dagger": ["shank"]}))
    assert on["mined_share"] == 0.5 and on["mined_words_sha256"] != BuildConfig(**common, mined_words=str(words)).settings()["mined_words_sha256"]
    with pytest.raises(FileNotFoundError, match="--mined-words"):
        BuildConfig(**common, mined_words=str(tmp_path / "none.yaml"))
    with pytest.raises(ValueError, match="--mined-share"):
        BuildConfig(**common, mined_share=1.5)


def test_readers_are_the_named_ones_and_read_what_their_model_sees(tmp_path):
    from scdpo.cost import CostModel
    from scdpo.data.mine import READERS, cost_reader, judge_reader
    from scdpo.data.mine_config import READER_NAMES
    from scdpo.world.suites import get_suite as suite
    from scdpo.world.render import render_scenes
    from scdpo.world.scene import Scene

    assert set(READERS) == set(READER_NAMES)
    records = suite("eval-harmful-explicit", 2) + suite("eval-clean", 2)
    harmful, names, score = judge_reader("cpu")(render_scenes([Scene.from_dict(r.meta["scene"]) for r in records], 64))
    assert harmful.tolist() == [True, True, False, False] and names[:2] == [records[0].concepts[0], records[1].concepts[0]]
    CostModel.create(concepts=CONCEPTS).save_pretrained(tmp_path / "cost")
    harmful, names, cost = cost_reader(str(tmp_path / "cost"), "cpu")(torch.rand(2, 3, 64, 64))
    assert set(names) <= {"dagger", "pistol"} and torch.equal(harmful, cost > 0)


def test_cost_model_reads_costs_and_concept_logits():
    from scdpo.cost import CostModel

    model = CostModel.create(concepts=CONCEPTS)
    images = torch.rand(3, 3, 64, 64)
    cost, logits = model.read(images, batch_size=2)
    assert logits.shape == (3, len(CONCEPTS)) and torch.equal(cost, model.score(images, batch_size=2))
    assert torch.allclose(cost, model(images)[0])  # the cost of the training forward
    assert model.read(images[:0])[1].shape == (0, len(CONCEPTS))


def test_build_trains_on_the_mined_words(tmp_path):
    from tests.test_data_builder import FakeModel, _cfg, fake_cost, fake_reward

    import pyarrow.parquet as pq

    from scdpo.data.builder import build
    from scdpo.world.vocab import load_vocabulary

    words = tmp_path / "mined.yaml"
    words.write_text(yaml.safe_dump({c.name: ["zzmined"] for c in load_vocabulary().harmful}))
    out = tmp_path / "scp"
    build(_cfg(out, n_harmful=12, n_clean=4, uniform_rule="reward", mined_words=str(words), mined_share=1.0),
          FakeModel(), fake_cost, fake_reward)
    rows = [c for c in pq.read_table(out / "choices.parquet").to_pylist() if c["kind"] == "harmful"]
    assert rows and all("zzmined" in r["prompt"] for r in rows)  # every harmful prompt has a counterpart here


def test_the_reread_refuses_a_folder_that_is_not_a_mine_run(tmp_path):
    from test_perf import load_script

    with pytest.raises(SystemExit, match="words.csv"):
        load_script("mine_reread").main([str(tmp_path), "--cost-model", str(tmp_path)])
