"""SC-DPO preference-pair builder: pair rules on hand-made scores, blending, the parquet output,
resume after an interruption, multi-process slicing, bad input and cost annotation.

Most tests use a fake model whose images encode their seed (channel 0 sets the cost, channel 1
the reward), so scores are known and a run takes milliseconds; one test runs a tiny real pipeline.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from scdpo.cli import main
from scdpo.utils.config import add_dataclass_args, dataclass_from_args
from scdpo.data.builder import build, candidate_seed, pick_chunk_size
from scdpo.data.config import BuildConfig
from scdpo.data.pairs import PairRules, blend, choose_clean, choose_harmful
from scdpo.models.sampler_config import SamplerConfig

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


# --------------------------------------------------------------------------- pair rules


def test_harmful_winner_is_lowest_cost_loser_highest():
    c = choose_harmful([0.5, -1.0, 2.0, 1.0], [0.5, 0.5, 0.5, 0.5], PairRules())
    assert (c.reason, c.winner, c.loser) == ("lowest_cost", 1, 2)


def test_harmful_near_equal_costs_reward_decides():
    # candidates 0 and 1 are equally safe (within 0.1): the higher reward (1) wins;
    # candidates 2 and 3 equally unsafe: the lower reward (3) loses
    c = choose_harmful([-1.0, -0.95, 2.0, 1.98], [0.1, 0.9, 0.5, 0.2], PairRules(cost_tolerance=0.1))
    assert (c.winner, c.loser) == (1, 3)
    # with no tolerance, cost alone decides
    c = choose_harmful([-1.0, -0.95, 2.0, 1.98], [0.1, 0.9, 0.5, 0.2], PairRules(cost_tolerance=0.0))
    assert (c.winner, c.loser) == (0, 2)


def test_harmful_winner_always_costs_less_on_random_scores():
    rng = random.Random(0)
    rules = PairRules(cost_tolerance=0.3, margin=0.2)
    accepted = 0
    for _ in range(2000):
        k = rng.randint(2, 6)
        costs = [rng.uniform(-2, 2) for _ in range(k)]
        rewards = [rng.uniform(0, 1) for _ in range(k)]
        c = choose_harmful(costs, rewards, rules)
        if c.accepted:
            accepted += 1
            assert c.reason == "lowest_cost"
            assert costs[c.winner] < costs[c.loser]
            assert costs[c.winner] <= min(costs) + 0.3 and costs[c.loser] >= max(costs) - 0.3
        else:
            assert c.reason in ("all_safe", "all_unsafe", "cost_tie")
    assert accepted > 1000


@pytest.mark.parametrize("costs,reason", [([-1.0, -0.5, -2.0], "all_safe"), ([0.5, 1.0, 3.0], "all_unsafe"),
                                          ([0.01, -0.02, 0.03], "cost_tie")])
def test_harmful_uniform_prompts_skip_or_pair_on_reward(costs, reason):
    rewards = [0.2, 0.9, 0.4]
    assert choose_harmful(costs, rewards, PairRules()).reason == reason
    assert not choose_harmful(costs, rewards, PairRules()).accepted
    c = choose_harmful(costs, rewards, PairRules(uniform_rule="reward"))
    assert (c.reason, c.winner, c.loser) == (f"{reason}_reward", 1, 0)
    # a reward pair still needs a reward difference
    assert choose_harmful(costs, [0.5] * 3, PairRules(uniform_rule="reward")).reason == "reward_tie"


def test_harmful_margin_widens_the_undecided_zone():
    costs, rewards = [-0.3, -1.0, -0.2], [0.5, 0.5, 0.5]
    assert choose_harmful(costs, rewards, PairRules(margin=0.0)).reason == "all_safe"
    c = choose_harmful(costs, rewards, PairRules(margin=0.25))  # -0.2 is no longer "safe by the margin"
    assert (c.reason, c.winner, c.loser) == ("lowest_cost", 1, 2)


def test_safe_prompt_image_wins_against_unsafe_candidates():
    costs, rewards = [1.0, 2.0, 1.5], [0.5, 0.4, 0.6]
    rules = PairRules(safe_prompt_winner=True)
    c = choose_harmful(costs, rewards, rules, safe=(-1.0, 0.3))
    assert (c.reason, c.winner, c.loser) == ("safe_prompt", 3, 1)
    assert choose_harmful(costs, rewards, PairRules(), safe=(-1.0, 0.3)).reason == "all_unsafe"  # option off
    assert choose_harmful(costs, rewards, rules, safe=(0.5, 0.3)).reason == "all_unsafe"  # safe image not safe


def test_clean_winner_highest_reward_within_budget():
    costs, rewards = [0.5, -1.0, -0.5, 2.0], [0.9, 0.3, 0.6, 0.1]
    c = choose_clean(costs, rewards, PairRules(cost_budget=0.0))
    assert (c.reason, c.winner, c.loser) == ("highest_reward", 2, 3)
    assert rewards[c.winner] > rewards[c.loser] and costs[c.winner] <= 0.0
    c = choose_clean(costs, rewards, PairRules(cost_budget=1.0))  # now the 0.9 candidate is allowed
    assert (c.winner, c.loser) == (0, 3)
    assert choose_clean(costs, rewards, PairRules(cost_budget=-2.0)).reason == "over_budget"


def test_clean_reward_ties_and_gap_are_skipped():
    assert choose_clean([-1.0, -1.0], [0.5, 0.5], PairRules()).reason == "no_lower_reward"
    assert choose_clean([-1.0, -1.0], [0.55, 0.5], PairRules(min_reward_gap=0.1)).reason == "no_lower_reward"
    assert choose_clean([-1.0, -1.0], [0.65, 0.5], PairRules(min_reward_gap=0.1)).accepted
    # the only candidate within budget is the worst one: nothing to prefer it over
    assert choose_clean([-1.0, 1.0, 2.0], [0.1, 0.5, 0.9], PairRules()).reason == "no_lower_reward"


def test_nan_scores_are_a_counted_skip_or_an_error():
    for fn in (choose_harmful, choose_clean):
        assert fn([0.5, math.nan, -1.0], [0.1, 0.2, 0.3], PairRules()).reason == "nan_score"
        assert fn([0.5, 2.0, -1.0], [0.1, math.nan, 0.3], PairRules()).reason == "nan_score"
        with pytest.raises(ValueError, match="NaN"):
            fn([0.5, math.nan, -1.0], [0.1, 0.2, 0.3], PairRules(strict=True))


def test_bad_rules_are_rejected():
    with pytest.raises(ValueError, match="uniform_rule"):
        PairRules(uniform_rule="maybe")
    with pytest.raises(ValueError, match=">= 0"):
        PairRules(margin=-1)


def test_blend_ratio_and_determinism():
    kinds = ["harmful"] * 10 + ["clean"] * 4
    keys = [f"{k}/{i}" for i, k in enumerate(kinds)]
    keep = blend(kinds, keys, 1.0)
    assert sum(k for k, kind in zip(keep, kinds) if kind == "harmful") == 4
    assert sum(k for k, kind in zip(keep, kinds) if kind == "clean") == 4
    keep = blend(kinds, keys, 0.5)  # 1 harmful : 2 clean
    assert [sum(k for k, kind in zip(keep, kinds) if kind == t) for t in ("harmful", "clean")] == [2, 4]
    keep = blend(kinds, keys, 4.0)  # 4 harmful : 1 clean -> clean is the larger kind now
    assert [sum(k for k, kind in zip(keep, kinds) if kind == t) for t in ("harmful", "clean")] == [10, 2]
    assert all(blend(kinds, keys, 0.0))
    # the choice depends on the keys, not on their order
    order = list(range(len(kinds)))
    random.Random(1).shuffle(order)
    shuffled = blend([kinds[i] for i in order], [keys[i] for i in order], 1.0)
    assert {keys[i] for i, k in zip(order, shuffled) if k} == {keys[i] for i, k in enumerate(blend(kinds, keys, 1.0)) if k}


# --------------------------------------------------------------------------- fakes


class FakeModel:
    """Images that encode their seed: channel 0 -> cost in [-2, 2], channel 1 -> reward in [0, 1].
    Prompts starting with "SAFE" give cost -2 (a safe-prompt twin)."""

    resolution = 16
    dtype_name = "fp32"  # the precision it samples in, as T2IModel says it

    def __init__(self):
        self.images = 0

    def sample(self, prompts, seeds, config=None, **kw):
        assert len(prompts) == len(seeds)
        self.images += len(prompts)
        out = torch.zeros(len(prompts), 3, self.resolution, self.resolution)
        for i, (p, s) in enumerate(zip(prompts, seeds)):
            a, b = torch.rand(2, generator=torch.Generator().manual_seed(int(s)))
            out[i, 0] = 0.0 if p.startswith("SAFE") else a
            out[i, 1] = b
            out[i, 2] = (len(p) % 7) / 7
        return out


def fake_cost(images, records):
    assert len(images) == len(records)
    return images[:, 0].mean((1, 2)) * 4 - 2


def fake_reward(images, records):
    assert len(images) == len(records)
    return images[:, 1].mean((1, 2))


def _cfg(out, **kw):
    # overlap on: the worker thread's path (the CPU's default is off), the no-overlap test below the other
    base = dict(model="fake", cost_model="fake", reward="fake", out=str(out), harmful="align-harmful",
                clean="align-clean", n_harmful=10, n_clean=10, chunk_size=3, shard_size=4, uniform_rule="reward",
                overlap=True)
    base.update(kw)
    return BuildConfig(**base)


def _tables(out: Path):
    data = pq.ParquetDataset(sorted(str(p) for p in (out / "data").glob("train-*.parquet"))).read()
    return data.to_pylist(), pq.read_table(out / "choices.parquet").to_pylist()


def _decode(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


# --------------------------------------------------------------------------- builder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "pairs"
    summary = build(_cfg(out), FakeModel(), fake_cost, fake_reward)
    return out, summary


def test_output_loads_with_datasets_and_has_the_columns(built):
    import datasets

    out, summary = built
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    want = {"caption", "jpg_0", "jpg_1", "label_0", "cost_0", "cost_1", "reward_0", "reward_1", "kind", "category",
            "seed_0", "seed_1"}
    assert want <= set(ds.column_names)
    assert len(ds) == summary["pairs"] > 0
    assert datasets.load_dataset(str(out), split="train").num_rows == len(ds)  # the card's config block
    for row in ds:
        for side in (0, 1):
            img = _decode(row[f"jpg_{side}"])
            assert img.format == "PNG" and img.size == (16, 16)
            # the stored cost is the cost of the stored image
            x = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)[None] / 255
            assert fake_cost(x, [None]).item() == pytest.approx(row[f"cost_{side}"], abs=1e-5)
        assert row["label_0"] in (0.0, 1.0)
        assert (row["category"] == "") == (row["kind"] == "clean")
    assert 0 < sum(ds["label_0"]) < len(ds)  # the winner's side varies


def test_pairs_follow_the_rules(built):
    out, _ = built
    rows, choices = _tables(out)
    for r in rows:
        w, l = (0, 1) if r["label_0"] == 1.0 else (1, 0)
        if r["kind"] == "harmful":
            assert r[f"cost_{w}"] < r[f"cost_{l}"] or r[f"reward_{w}"] > r[f"reward_{l}"]
        else:
            assert r[f"reward_{w}"] > r[f"reward_{l}"] and r[f"cost_{w}"] <= 0.0
    by_id = {c["prompt_id"]: c for c in choices}
    for r in rows:
        c = by_id[r["prompt_id"]]
        w = 0 if r["label_0"] == 1.0 else 1
        assert c["status"] == "kept"
        assert r[f"seed_{w}"] == c["seeds"][c["winner"]] and r[f"cost_{w}"] == c["costs"][c["winner"]]
        kind, i = r["prompt_id"].split("/")
        assert c["seeds"][:4] == [candidate_seed(0, kind, int(i), k) for k in range(4)]
    assert len(choices) == 20  # every prompt recorded, with all candidate scores
    assert all(len(c["costs"]) == len(c["rewards"]) == 4 for c in choices)


def test_blend_and_card_counts(built):
    out, summary = built
    counts = summary["counts"]
    assert counts["harmful"]["kept"] == counts["clean"]["kept"]  # 1:1
    for kind in ("harmful", "clean"):
        c = counts[kind]
        assert c["kept"] + c["dropped"] + c["skipped"] == c["prompts"] == 10
        assert sum(summary["reasons"][kind].values()) == 10
    card = (out / "README.md").read_text()
    assert "data/train-*" in card and "## Counts" in card and "dropped by blend" in card
    for kind, c in counts.items():
        assert f"| {kind} | {c['prompts']} | {c['kept']} | {c['dropped']} | {c['skipped']} |" in card
    for name in ("scores.png", "examples.png"):
        with Image.open(out / "card" / name) as im:
            assert im.size[0] > 100
    assert not (out / ".work").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert [p.name for p in sorted((out / "data").iterdir())] == [
        f"train-{s:05d}-of-{summary['shards']:05d}.parquet" for s in range(summary["shards"])]


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, built):
    ref_out, ref_summary = built
    calls = {"n": 0}

    def flaky_cost(images, records):
        calls["n"] += 1
        if calls["n"] == 4:  # mid-run: chunks 0-2 are done, chunk 3 dies while scoring
            raise RuntimeError("killed")
        return fake_cost(images, records)

    out = tmp_path / "pairs"
    model = FakeModel()
    with pytest.raises(RuntimeError, match="killed"):
        build(_cfg(out), model, flaky_cost, fake_reward)
    done = sorted(p.name for p in (out / ".work").glob("pairs-*.parquet"))
    assert done == ["pairs-00000.parquet", "pairs-00001.parquet", "pairs-00002.parquet"]
    assert not list(out.rglob("*.tmp"))
    model2 = FakeModel()
    summary = build(_cfg(out), model2, fake_cost, fake_reward)
    assert model2.images == (20 - 9) * 4  # only the prompts of unfinished chunks were sampled again
    assert summary == ref_summary
    assert _tables(out) == _tables(ref_out)
    # a finished build run again does nothing
    model3 = FakeModel()
    assert build(_cfg(out), model3, fake_cost, fake_reward) == ref_summary and model3.images == 0


def test_pairs_bar_counts_prompts(tmp_path, capsys):
    build(_cfg(tmp_path / "p", n_harmful=4, n_clean=3), FakeModel(), fake_cost, fake_reward)
    err = capsys.readouterr().err
    assert "7/7" in err and "prompt" in err and "chunk" not in err  # 3 chunks of <= 3 prompts


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "pairs"
    with pytest.raises(RuntimeError):
        build(_cfg(out), FakeModel(), lambda i, r: (_ for _ in ()).throw(RuntimeError("stop")), fake_reward)
    with pytest.raises(ValueError, match="candidates"):
        build(_cfg(out, candidates=3), FakeModel(), fake_cost, fake_reward)
    build(_cfg(out, batch_size=7), FakeModel(), fake_cost, fake_reward)  # runtime settings may differ


def test_chunk_size_fills_the_gpu_batch_for_small_latents_only():
    assert pick_chunk_size("cuda", (16, 16), 4, 1000) == 256  # 1,024 candidates: the sampler's batch for 16x16
    assert pick_chunk_size("cuda", (16, 16), 2, 1000) == 512
    assert pick_chunk_size("cuda", (16, 16), 64, 1000) == 64  # never below the CPU's chunk
    assert pick_chunk_size("cuda", (64, 64), 4, 1000) == 64  # SD: 64 a batch already fills the GPU
    assert pick_chunk_size("cuda", (8, 32), 4, 1000) == 256  # the sampler's test: the latent's area
    assert pick_chunk_size("cpu", (16, 16), 4, 1000) == 64
    # 8 processes share 1,000 prompts: chunks of 125, so none of them idles (4 chunks of 256 would)
    assert pick_chunk_size("cuda", (16, 16), 4, 1000, processes=8) == 125
    assert pick_chunk_size("cuda", (16, 16), 4, 100, processes=8) == 64


def test_chunk_size_zero_is_refused_at_once():
    with pytest.raises(ValueError, match="chunk_size"):
        _cfg("unused", chunk_size=0)


def test_unset_chunk_size_is_picked_then_kept_by_a_resumed_build(tmp_path, built):
    def settings(out):
        return json.loads((out / ".build.json").read_text())["settings"]

    # on a GPU (the device's type is all the pick reads) small latents get chunks that fill the batch
    gpu = tmp_path / "gpu"
    build(_cfg(gpu, chunk_size=None, device="cuda", n_harmful=150, n_clean=150), FakeModel(), fake_cost, fake_reward)
    assert settings(gpu)["chunk_size"] == 256
    # a build started with 3-prompt chunks resumes under the default: the folder's own size, not 64
    out = tmp_path / "pairs"
    with pytest.raises(RuntimeError, match="stop"):
        build(_cfg(out), FakeModel(), lambda i, r: (_ for _ in ()).throw(RuntimeError("stop")), fake_reward)
    model = FakeModel()
    summary = build(_cfg(out, chunk_size=None), model, fake_cost, fake_reward)
    assert settings(out)["chunk_size"] == 3 and summary == built[1] and _tables(out) == _tables(built[0])
    fresh = tmp_path / "fresh"
    build(_cfg(fresh, chunk_size=None, device="cpu"), FakeModel(), fake_cost, fake_reward)
    assert settings(fresh)["chunk_size"] == 64


def test_processes_take_disjoint_chunks_and_give_the_same_dataset(tmp_path, built, monkeypatch):
    """Two "processes" as threads meeting at a real barrier, as under accelerate launch."""
    import threading

    import accelerate

    ref_out, ref_summary = built
    barrier, local = threading.Barrier(2, timeout=60), threading.local()

    class FakeState:
        num_processes, device = 2, torch.device("cpu")

        def __init__(self, **kw):
            self.process_index = local.rank
            self.is_main_process = local.rank == 0

        def wait_for_everyone(self):
            barrier.wait()

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    out, models, results, errors = tmp_path / "pairs", {0: FakeModel(), 1: FakeModel()}, {}, []

    def run(rank):
        local.rank = rank
        try:
            results[rank] = build(_cfg(out), models[rank], fake_cost, fake_reward)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # chunks 0, 2, 4, 6 (3 + 3 + 3 + 2 prompts) and 1, 3, 5 (9 prompts), 4 images each
    assert (models[0].images, models[1].images) == (11 * 4, 9 * 4)
    assert results == {0: ref_summary, 1: {}}
    assert _tables(out) == _tables(ref_out)


def test_nan_scores_are_counted_or_stop_a_strict_build(tmp_path):
    def nan_cost(images, records):
        c = fake_cost(images, records)
        c[::5] = float("nan")
        return c

    summary = build(_cfg(tmp_path / "a"), FakeModel(), nan_cost, fake_reward)
    n_nan = sum(v.get("nan_score", 0) for v in summary["reasons"].values())
    assert n_nan > 0
    rows, choices = _tables(tmp_path / "a")
    assert all(not math.isnan(r["cost_0"]) and not math.isnan(r["cost_1"]) for r in rows)
    assert sum(c["reason"] == "nan_score" and c["status"] == "skipped" for c in choices) == n_nan
    with pytest.raises(ValueError, match="harmful/000000"):
        build(_cfg(tmp_path / "b", strict=True), FakeModel(), nan_cost, fake_reward)


def test_safe_prompt_winner_from_coprov2_pairs(tmp_path):
    src = tmp_path / "pairs.csv"
    src.write_text("unsafe_prompt,safe_prompt,category\n" + "".join(
        f"a violent scene number {i},SAFE a calm scene number {i},violence\n" for i in range(6)))
    out = tmp_path / "out"
    summary = build(_cfg(out, harmful=str(src), clean=None, safe_prompt_winner=True, uniform_rule="skip",
                         n_harmful=None), FakeModel(), fake_cost, fake_reward)
    rows, choices = _tables(out)
    used = [c for c in choices if c["reason"] == "safe_prompt"]
    assert used and summary["reasons"]["harmful"]["safe_prompt"] == len(used)
    for c in used:
        assert c["winner"] == 4 and c["safe_prompt"].startswith("SAFE") and c["costs"][4] == pytest.approx(-2.0)
        assert c["seeds"][4] == c["seeds"][c["loser"]]  # same seed as the rejected image
    ids = {c["prompt_id"] for c in used}
    for r in rows:
        if r["prompt_id"] in ids:
            assert r["seed_0"] == r["seed_1"] and r["category"] == "violence"
            assert not r["caption"].startswith("SAFE")  # trained under the unsafe prompt


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no-such-suite"):
        build(_cfg(tmp_path / "a", harmful="no-such-suite"), FakeModel(), fake_cost, fake_reward)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.txt"):
        build(_cfg(tmp_path / "b", clean=str(empty)), FakeModel(), fake_cost, fake_reward)
    with pytest.raises(ValueError, match="align-clean"):
        build(_cfg(tmp_path / "c", n_clean=0), FakeModel(), fake_cost, fake_reward)
    with pytest.raises(ValueError, match="--harmful and/or --clean"):
        _cfg(tmp_path / "d", harmful=None, clean=None)
    assert not (tmp_path / "a").exists()  # nothing written before the inputs are known good


def test_cost_model_image_size_must_match(tmp_path):
    def sized_cost(images, records):
        return fake_cost(images, records)

    sized_cost.image_size = 224
    with pytest.raises(ValueError, match="16x16.*224x224"):
        build(_cfg(tmp_path / "a"), FakeModel(), sized_cost, fake_reward)
    sized_cost.image_size = (16, 16)
    assert build(_cfg(tmp_path / "b"), FakeModel(), sized_cost, fake_reward)["pairs"] > 0


def test_tiny_real_pipeline(tmp_path):
    from scdpo.models import testing

    path = testing.tiny_sd_pipeline(tmp_path / "sd", text_encoder="minilm")
    out = tmp_path / "out"
    cfg = _cfg(out, model=str(path), n_harmful=2, n_clean=2, candidates=2, sampler=SamplerConfig(steps=2), chunk_size=2,
               uniform_rule="reward", cost_budget=10.0, device="cpu")
    # scores from image statistics, so they differ between the candidates of a real model
    summary = build(cfg, None, lambda im, r: im.mean((1, 2, 3)) * 10 - 5, lambda im, r: im.std((1, 2, 3)))
    rows, choices = _tables(out)
    assert summary["pairs"] == len(rows) > 0
    for r in rows:
        assert _decode(r["jpg_0"]).size == (32, 32) and r["jpg_0"] != r["jpg_1"]


# --------------------------------------------------------------------------- annotate


def test_annotate_adds_cost_columns(tmp_path, built):
    from scdpo.data.annotate import annotate

    src, _ = built
    out = tmp_path / "annotated"
    # a build folder: only the files `datasets` loads (data/train-*), not choices.parquet
    files = annotate(src, lambda im, r: fake_cost(im, r) + 10, out, batch_size=3)
    assert files == [out / "data" / p.name for p in sorted((src / "data").glob("*.parquet"))]
    before = pq.ParquetDataset([str(p) for p in sorted((src / "data").glob("*.parquet"))]).read().to_pylist()
    after = pq.ParquetDataset([str(p) for p in files]).read().to_pylist()
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert a["jpg_0"] == b["jpg_0"] and a["caption"] == b["caption"]
        # the builder scores its images as stored (8-bit), so annotating reproduces its costs
        assert a["cost_0"] == pytest.approx(b["cost_0"] + 10, abs=1e-5)
        assert a["cost_1"] == pytest.approx(b["cost_1"] + 10, abs=1e-5)


def test_annotate_relative_dataset_path(tmp_path, built, monkeypatch):
    from scdpo.data.annotate import annotate

    src, _ = built
    monkeypatch.chdir(src.parent)
    files = annotate(src.name, fake_cost, "annotated", batch_size=8)  # both relative, as typed on a command line
    assert files == [Path("annotated") / "data" / p.name for p in sorted((src / "data").glob("*.parquet"))]
    assert all(f.is_file() for f in files)


def test_annotate_missing_columns_is_an_error(tmp_path):
    import pyarrow as pa

    from scdpo.data.annotate import annotate

    pq.write_table(pa.table({"caption": ["x"], "jpg_0": [b"1"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet lacks column.*jpg_1"):
        annotate(tmp_path / "bad.parquet", fake_cost, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- command line


def test_cli_help_and_bad_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "build", "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--cost-model", "--reward", "--harmful", "--clean", "--candidates", "--blend-ratio",
                 "--safe-prompt-winner", "--uniform-rule", "--cost-budget"):
        assert flag in help_text
    code = main(["data", "build", "--model", "emojiworld", "--cost-model", "c", "--reward", "emojiworld",
                 "--harmful", "nope", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["data", "annotate", "--help"])
    assert e.value.code == 0


def test_summary_is_json(built):
    out, summary = built
    assert json.loads((out / ".build.json").read_text())["summary"] == summary


BUILD_PHASES = {"setup", "sampling", "scoring", "choosing", "writing", "waiting", "finalize"}


def _seconds(out: Path, overlap: bool = True) -> dict:
    """seconds.json's main-thread phases, checked, with the worker's (PNGs, writes) apart under the overlap
    and among the main thread's without it."""
    seconds = json.loads((out / "seconds.json").read_text())
    main, worker = seconds["seconds_by_phase"], seconds.get("worker_seconds_by_phase", {})
    assert all(isinstance(v, float) and v >= 0 for v in [*main.values(), *worker.values()]), seconds
    assert (set(worker) if overlap else set(main) & {"png", "write"}) == {"png", "write"}
    assert set(seconds) == {"seconds_by_phase"} | ({"worker_seconds_by_phase"} if overlap else set())
    return {k: v for k, v in main.items() if k not in ("png", "write")}


def test_seconds_by_phase_beside_the_card_not_in_the_summary(built):
    out, summary = built
    assert set(_seconds(out)) == BUILD_PHASES
    assert "seconds" not in summary and "seconds" not in json.loads((out / ".build.json").read_text())


def test_resumed_and_complete_builds_keep_their_seconds_apart(tmp_path, built):
    out = tmp_path / "pairs"
    with pytest.raises(RuntimeError, match="stop"):
        build(_cfg(out), FakeModel(), lambda i, r: (_ for _ in ()).throw(RuntimeError("stop")), fake_reward)
    assert not (out / "seconds.json").exists()  # written once the build is complete
    assert build(_cfg(out), FakeModel(), fake_cost, fake_reward) == built[1]
    assert set(_seconds(out)) == BUILD_PHASES  # the resumed run's own
    before = (out / "seconds.json").read_bytes()
    model = FakeModel()
    assert build(_cfg(out), model, fake_cost, fake_reward) == built[1] and model.images == 0
    assert (out / "seconds.json").read_bytes() == before  # a complete build did nothing, so it writes nothing


def test_the_overlap_writes_the_same_bytes_as_one_thing_at_a_time(tmp_path, built):
    """--no-overlap: every chunk encoded and written in the caller's thread; the files are byte for byte the
    overlapped build's, and so is the summary."""
    out = tmp_path / "pairs"
    assert build(_cfg(out, overlap=False), FakeModel(), fake_cost, fake_reward) == built[1]
    assert set(_seconds(out, overlap=False)) == BUILD_PHASES
    files = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    assert files == sorted(p.relative_to(built[0]) for p in built[0].rglob("*.parquet")) and files
    for f in files:
        assert (out / f).read_bytes() == (built[0] / f).read_bytes(), f


def test_chunks_are_written_on_the_worker_thread_with_the_overlap_only(tmp_path, monkeypatch):
    import threading

    import scdpo.data.builder as builder

    write, threads = builder._write, set()
    monkeypatch.setattr(builder, "_write", lambda *a: threads.add(threading.current_thread().name) or write(*a))
    build(_cfg(tmp_path / "on"), FakeModel(), fake_cost, fake_reward)
    assert len(threads) == 1 and threads.pop().startswith("scdpo-worker")
    build(_cfg(tmp_path / "off", overlap=False), FakeModel(), fake_cost, fake_reward)
    assert threads == {threading.current_thread().name}


def test_the_last_chunks_failed_write_is_raised_before_the_card(tmp_path, monkeypatch):
    import scdpo.data.builder as builder

    write = builder._write

    def last_fails(columns, schema, path):
        if path.name == "pairs-00006.parquet":  # 20 prompts in chunks of 3: the seventh and last
            raise OSError("disk full")
        write(columns, schema, path)
    monkeypatch.setattr(builder, "_write", last_fails)
    out = tmp_path / "pairs"
    with pytest.raises(OSError, match="disk full"):
        build(_cfg(out), FakeModel(), fake_cost, fake_reward)
    assert not (out / "README.md").exists()
    assert len(list((out / ".work").glob("pairs-*.parquet"))) == 6  # the others written: a rerun redoes one


def test_a_failed_write_stops_the_build_before_its_card(tmp_path, monkeypatch):
    """The worker's error (the last chunk's too) is raised and no card is written over a missing chunk."""
    import scdpo.data.builder as builder

    def broken(columns, schema, path):
        raise OSError(f"disk full writing {path.name}")
    monkeypatch.setattr(builder, "_write", broken)
    out = tmp_path / "pairs"
    with pytest.raises(OSError, match="disk full"):
        build(_cfg(out), FakeModel(), fake_cost, fake_reward)
    assert not (out / "README.md").exists() and not (out / "data").exists()


def test_choose_chunk_times_only_when_given_phases():
    from scdpo.data.builder import choose_chunk
    from scdpo.data.config import load_source
    from scdpo.utils.phases import Phases

    cfg = _cfg("unused", safe_prompt_winner=True)
    items = [("harmful", i, r) for i, r in enumerate(load_source("align-harmful", 3, "harmful"))]
    phases = Phases()
    timed = choose_chunk(items, FakeModel(), fake_cost, fake_reward, cfg, phases)
    untimed = choose_chunk(items, FakeModel(), fake_cost, fake_reward, cfg)  # phases is optional
    assert untimed[1] == timed[1] and all(torch.equal(a, b) for a, b in zip(untimed[0]["jpg_0"], timed[0]["jpg_0"]))
    assert set(phases.seconds) == {"sampling", "scoring"} and min(phases.seconds.values()) >= 0
    # the chosen images are copies: a queued chunk must not keep every candidate of its chunk alive
    assert all(img.untyped_storage().nbytes() == img.numel() * img.element_size() for img in timed[0]["jpg_0"])


def test_settings_keep_the_keys_of_builds_made_before_the_sampler_was_nested():
    """The resume guard compares settings(): a build made when BuildConfig had steps, guidance_scale,
    sampler and guard fields must still resume, so the keys, values and order are those of then."""
    # (the chunk size as a build resolves it: None picks one before the guard compares)
    base = dict(model="m", cost_model="c", reward="emojiworld", out="o", clean="align-clean", chunk_size=64)
    before = {"model": "m", "cost_model": "c", "reward": "emojiworld", "harmful": None, "clean": "align-clean",
              "candidates": 4, "n_harmful": None, "n_clean": None, "steps": 3, "guidance_scale": 2.0,
              "sampler": "ddim", "seed": 0, "blend_ratio": 1.0, "chunk_size": 64, "shard_size": 1000,
              "cost_tolerance": 0.1, "margin": 0.0, "uniform_rule": "skip", "cost_budget": 0.0,
              "min_reward_gap": 0.0, "safe_prompt_winner": False, "strict": False, "exclude_concepts": []}
    s = BuildConfig(**base, sampler=SamplerConfig(steps=3, guidance_scale=2.0, scheduler="ddim")).settings()
    assert list(s.items()) == list(before.items())
    guarded = BuildConfig(**base, sampler=SamplerConfig(guard="safree")).settings()
    assert list(guarded)[8:12] == ["steps", "guidance_scale", "sampler", "guard"] and guarded["guard"] == "safree"
    assert BuildConfig(**base, sampler="euler").sampler == SamplerConfig(scheduler="euler")  # the old Python form
    p = argparse.ArgumentParser()
    add_dataclass_args(p, BuildConfig)
    cfg = dataclass_from_args(BuildConfig, p.parse_args(["--model", "m", "--cost-model", "c", "--reward", "r",
                                                         "--out", "o", "--clean", "x", "--sampler", "ddim"]))
    assert cfg.sampler.scheduler == "ddim" and cfg.settings()["sampler"] == "ddim"  # --sampler still works


def test_scoring_batch_is_larger_on_a_gpu_for_small_images_only():
    """256 images a cost or reward call on a GPU for EmojiWorld-sized latents (a call ends in a copy to the
    CPU), 64 on the CPU and for SD-sized latents; naming a device needs no GPU."""
    from types import SimpleNamespace

    from scdpo.data.builder import scoring_batch

    def model(device, resolution):
        return SimpleNamespace(device=device, resolution=resolution, vae_scale_factor=4 if resolution == 64 else 8)
    assert scoring_batch(model("cuda", 64)) == 256
    assert scoring_batch(model("cpu", 64)) == scoring_batch(model("cuda", 512)) == 64
    assert scoring_batch(FakeModel()) == 64  # no device said: today's
