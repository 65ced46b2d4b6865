"""`scdpo attack`: every attack on the tiny SD pipeline with budgets of seconds: determinism from
the seed, exact resume, a planted target the search must find; the prompt file eval reads; ASR."""

import csv
import json

import pytest
import torch

from scdpo.attack.base import AttackContext, Budget, Target, get_attack
from scdpo.attack.config import AttackConfig
from scdpo.attack.run import run, sampler_for, target_seed
from scdpo.attack.score import success_rate
from scdpo.models.token_ids import encode_texts
from scdpo.models.tokens import allowed_tokens
from scdpo.models.t2i import T2IModel
from scdpo.models.testing import tiny_sd_pipeline

NAMES = ["ring-a-bell", "unlearndiff", "p4d", "paraphrase"]
FAST = dict(budget_iters=4, population=16, steps=2, check_every=2, tokens=2, neighbours=2, judge="none",
            device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("attack") / "sd")


@pytest.fixture(scope="module")
def model(tiny):
    m = T2IModel.from_pretrained(tiny, device="cpu")
    m.unet.requires_grad_(False)
    return m


def _ctx(model, iters, **cfg):
    cfg = AttackConfig(attack="p4d", model="x", concepts=["dagger"], **{**FAST, **cfg})
    return AttackContext(cfg, model, sampler_for(cfg), None, budget=Budget(iters))


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_prompts_and_exact_resume(tiny, tmp_path, name):
    cfg = dict(attack=name, model=str(tiny), concepts=["dagger", "pistol"], **FAST)
    run(AttackConfig(out=str(tmp_path / "a"), **cfg))
    run(AttackConfig(out=str(tmp_path / "b"), **cfg))
    first = _rows(tmp_path / "a" / "prompts.csv")
    assert len(first) == 2 and first == _rows(tmp_path / "b" / "prompts.csv")
    assert all(r["prompt"] and r["categories"] == "violence" for r in first)

    # killed during the second target: the first is on disk; the rerun finishes exactly as run "a"
    calls = []

    def dies_on_second(ctx, target, g):
        calls.append(target.prompt)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return get_attack(name)(ctx, target, g)

    with pytest.raises(KeyboardInterrupt):
        run(AttackConfig(out=str(tmp_path / "c"), **cfg), attack_fn=dies_on_second)
    assert len(_rows(tmp_path / "c" / "prompts.csv")) == 1
    run(AttackConfig(out=str(tmp_path / "c"), **cfg))
    assert _rows(tmp_path / "c" / "prompts.csv") == first


def test_resume_refuses_other_settings(tiny, tmp_path):
    cfg = dict(attack="paraphrase", model=str(tiny), concepts=["dagger"], out=str(tmp_path), **FAST)
    run(AttackConfig(**cfg))
    with pytest.raises(ValueError, match="budget_iters"):
        run(AttackConfig(**{**cfg, "budget_iters": 5}))


def test_ring_a_bell_seed_changes_the_search(model):
    from scdpo.attack.ring_a_bell import search

    vocab = allowed_tokens(model.tokenizers[0])
    goal = encode_texts(model, ["k q"]).context[0].float()
    found = [search(model, goal, 2, vocab, torch.Generator().manual_seed(s), Budget(1), 16, 0.25, 0.5)[0]
             for s in (0, 0, 1)]
    assert found[0] == found[1] != found[2]


def test_ring_a_bell_finds_a_planted_prompt(model):
    """The target embedding is exactly that of "k q": the genetic search, at the paper's population
    of 200, must find those tokens (a population of 64 can stall in a local optimum: seed 0 does)."""
    from scdpo.attack.ring_a_bell import search

    vocab = allowed_tokens(model.tokenizers[0])
    goal = encode_texts(model, ["k q"]).context[0].float()
    text, ids, loss, gens = search(model, goal, 2, vocab, torch.Generator().manual_seed(0), Budget(100), 200, 0.25, 0.5)
    assert text == "k q" and loss < 1e-6 and gens <= 100


def test_ring_a_bell_encodes_only_what_a_generation_changed(model, monkeypatch):
    """Kept parents that no mutation touched carry their loss over: fewer rows are encoded than
    population x generations, and the loss returned is the returned tokens' own. Exact because a
    row's loss does not depend on its batch (checked here on the CPU)."""
    from scdpo.attack import ring_a_bell as rab
    from scdpo.models.token_ids import layout_slots

    vocab = allowed_tokens(model.tokenizers[0])
    goal = encode_texts(model, ["k q"]).context[0].float()
    pop = torch.randint(len(vocab), (32, 2), generator=torch.Generator().manual_seed(0))
    lay = layout_slots(model, [None] * 2)
    whole = rab._fitness(model, lay, pop, vocab, goal)
    assert torch.equal(whole[5:12], rab._fitness(model, lay, pop[5:12], vocab, goal))

    encoded, fitness = [], rab._fitness
    monkeypatch.setattr(rab, "_fitness", lambda *a: encoded.append(len(a[2])) or fitness(*a))
    for seed in range(3):
        encoded.clear()
        text, ids, loss, gens = rab.search(model, goal, 2, vocab, torch.Generator().manual_seed(seed), Budget(6), 32,
                                           0.25, 0.5)
        assert gens == 6 and sum(encoded) < 6 * 32 and encoded[0] == 32
        mine = fitness(model, lay, torch.tensor([[vocab.tolist().index(i) for i in ids]]), vocab, goal)
        assert float(mine[0]) == loss


def test_p4d_finds_the_planted_prompt(model):
    """No LoRA, so the base and the attacked model are one: the P4D objective is exactly zero at the
    target prompt's own token, the planted answer among the pool."""
    ctx = _ctx(model, 60, tokens=1, token_pool=["k", "q", "x", "z"], check_every=5)
    res = get_attack("p4d")(ctx, Target("q", "dagger", ("violence",)), torch.Generator().manual_seed(0))
    assert res.prompt == "q" and res.loss < 1e-8


def test_unlearndiff_keeps_the_best_token_of_the_pool(model):
    """With one adversarial token drawn from a pool of three, the search (which samples tokens from
    its distribution) must return the pool's token of least denoising error on the fixed noise set."""
    from scdpo.attack.gradient import fixed_noise, target_latents
    from scdpo.models.token_ids import layout
    from scdpo.models.tokens import content_ids
    from scdpo.attack.unlearndiff import selection_loss

    ctx = _ctx(model, 40, tokens=1, token_pool=["k", "q", "x"], check_every=4)
    target = Target("a b", "dagger", ("violence",))
    res = get_attack("unlearndiff")(ctx, target, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    x0 = target_latents(ctx, target)
    held = fixed_noise(x0, g)
    lay = layout(model, 1, content_ids(model.tokenizers[0], "a b"))
    pool = allowed_tokens(model.tokenizers[0], ["k", "q", "x"])
    losses = {int(i): selection_loss(model, lay, i[None], x0, *held) for i in pool}
    assert res.token_ids == [min(losses, key=losses.get)]
    assert res.prompt.endswith(" a b")


def test_paraphrase_uses_the_hand_list_then_the_nearest_token(model, tmp_path):
    # plant: token "q" gets the embedding of "z" plus a little, so it is z's nearest neighbour
    emb = model.text_encoders[0].get_input_embeddings().weight
    tok = model.tokenizers[0]
    z, q = tok("z", add_special_tokens=False).input_ids[0], tok("q", add_special_tokens=False).input_ids[0]
    saved = emb[q].clone()
    try:
        with torch.no_grad():
            emb[q] = emb[z] * 1.01
        target = Target("a z", "z", ("violence",), ("z",))
        res = get_attack("paraphrase")(_ctx(model, 1, neighbours=1), target, torch.Generator())
        assert res.prompt == "a q"
        hand = tmp_path / "hand.yaml"
        hand.write_text("z: [m n]\n")
        res = get_attack("paraphrase")(_ctx(model, 1, neighbours=1, hand_list=str(hand)), target, torch.Generator())
        assert res.prompt == "a m n"
    finally:
        with torch.no_grad():
            emb[q] = saved


def test_prompt_file_reads_back_in_eval_with_categories(tiny, tmp_path):
    from scdpo.prompts.sources import load_prompt_file

    run(AttackConfig(attack="paraphrase", model=str(tiny), concepts=["dagger", "razor"], out=str(tmp_path), **FAST))
    records = load_prompt_file(tmp_path / "prompts.csv")
    assert [r.categories for r in records] == [("violence",), ("self-harm",)]
    assert [r.meta["concept"] for r in records] == ["dagger", "razor"]
    assert all(r.meta["attack"] == "paraphrase" for r in records)


def test_success_rate_counts_prompts_not_images():
    harmful = torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.bool)
    asr = success_rate(harmful, [("violence",), ("violence",), ("sexual",)])
    assert asr["rate"] == 0.5 and asr["n"] == 3 and asr["images"] == 6 and asr["any_rate"] == round(2 / 3, 4)
    assert asr["se"] == round(0.5 / 3 ** 0.5, 4)
    assert asr["by_category"] == {"sexual": 0.0, "violence": 0.75}


def test_score_writes_asr_and_merges_it(tiny, tmp_path):
    from scdpo.attack.score import ScoreConfig, score

    run(AttackConfig(attack="paraphrase", model=str(tiny), concepts=["dagger"], out=str(tmp_path / "a"),
                     **{**FAST, "judge": "emojiworld", "steps": 1}))
    m = score(ScoreConfig(run=str(tmp_path / "a"), seeds=2, into=str(tmp_path / "ev"), device="cpu"))
    asr = m["attack_success_rate"]["paraphrase"]
    assert asr["n"] == 1 and asr["images"] == 2 and 0 <= asr["rate"] <= 1
    assert m["suites"]["paraphrase"]["images"] == 2 and m["name"] == "sd"
    assert (tmp_path / "a" / "suites" / "paraphrase" / "images.parquet").is_file()  # an `scdpo eval` run too
    merged = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert merged["attack_success_rate"]["paraphrase"] == asr


def test_bad_input_is_one_line(tiny, tmp_path, capsys):
    from scdpo.cli import main

    assert main(["attack", "p4d", "--model", str(tiny), "--out", str(tmp_path)]) == 2
    assert "exactly one of --concepts and --prompts" in capsys.readouterr().err
    assert main(["attack", "p4d", "--model", str(tiny), "--concepts", "cat", "--out", str(tmp_path)]) == 2
    assert "not an EmojiWorld harmful concept" in capsys.readouterr().err
    assert main(["attack", "score", str(tmp_path / "nothing")]) == 2
    with pytest.raises(ValueError, match="unknown guard"):
        AttackConfig(attack="p4d", model="x", concepts=["dagger"], guard="sld-medium")
    # a known guard reaches the victim's sampler (its checks and ASR images are guarded)
    assert sampler_for(AttackConfig(attack="p4d", model="x", concepts=["dagger"], guard="sld:medium")).guard == "sld:medium"


def test_cli_runs_an_attack(tiny, tmp_path):
    from scdpo.cli import main

    assert main(["attack", "ring-a-bell", "--model", str(tiny), "--concepts", "bomb", "--budget-iters", "2",
                 "--population", "8", "--tokens", "3", "--judge", "none", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert len(_rows(tmp_path / "prompts.csv")) == 1
    assert target_seed(0, 1) != target_seed(1, 0)


def test_every_attack_runs_on_sdxl(tmp_path, one_thread):
    """Two CLIP encoders (concatenated states, a pooled projection): token attacks feed both."""
    from scdpo.models.testing import tiny_sdxl_pipeline

    path = tiny_sdxl_pipeline(tmp_path / "xl")
    for name in NAMES:
        run(AttackConfig(attack=name, model=str(path), concepts=["bomb"], out=str(tmp_path / name),
                         **{**FAST, "budget_iters": 2}))
        assert len(_rows(tmp_path / name / "prompts.csv")) == 1


def test_ring_a_bell_concept_pairs_from_a_prompt_file(tiny, tmp_path):
    """Outside EmojiWorld the concept vector comes from the target's own safe pair or --pairs."""
    targets = tmp_path / "targets.csv"
    targets.write_text("prompt,categories,safe_prompt\na q z,violence,a q\nb k,violence,\n")
    cfg = dict(attack="ring-a-bell", model=str(tiny), prompts=str(targets), **FAST)
    with pytest.raises(ValueError, match="--pairs"):
        run(AttackConfig(out=str(tmp_path / "a"), **cfg))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("prompt,prompt1,case_number,evaluation_seed\nx z,x,0,0\n")
    run(AttackConfig(out=str(tmp_path / "b"), pairs=str(pairs), **cfg))
    assert [r["concept"] for r in _rows(tmp_path / "b" / "prompts.csv")] == ["violence", "violence"]


def test_p4d_k_keeps_the_prompt_between_free_tokens(model):
    from scdpo.models.token_ids import interleaved

    assert interleaved([1, 2, 3, 4, 5], 3) == [None, 1, 2, 3, None, 4, 5]
    assert interleaved([1, 2, 3], 3) == [None, 1, 2, 3, None]
    res = get_attack("p4d")(_ctx(model, 3, insert_every=2), Target("a b c", "dagger", ("violence",)),
                            torch.Generator().manual_seed(0))
    words = res.prompt.split()
    assert len(res.token_ids) == 2 and words[1:3] == ["a", "b"] and words[4:] == ["c"]


def test_shards_merge_into_the_unsharded_run(tiny, tmp_path):
    from scdpo.attack.run import merge

    cfg = dict(attack="ring-a-bell", model=str(tiny), concepts=["dagger", "pistol", "bomb"], **FAST)
    run(AttackConfig(out=str(tmp_path / "whole"), **cfg))
    run(AttackConfig(out=str(tmp_path / "s1"), start=1, **cfg))
    run(AttackConfig(out=str(tmp_path / "s0"), limit=1, **cfg))
    with pytest.raises(ValueError, match="targets 0 to 0 are in no shard"):
        merge(tmp_path / "m", [tmp_path / "s1"])
    with pytest.raises(ValueError, match="two shards hold target 0"):
        merge(tmp_path / "m", [tmp_path / "s0", tmp_path / "whole"])
    merge(tmp_path / "m", [tmp_path / "s1", tmp_path / "s0"])  # any order
    assert _rows(tmp_path / "m" / "prompts.csv") == _rows(tmp_path / "whole" / "prompts.csv")
    from scdpo.cli import main

    assert main(["attack", "merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m3")]) == 0
    assert _rows(tmp_path / "m3" / "prompts.csv") == _rows(tmp_path / "whole" / "prompts.csv")
    # the merged folder is the unsharded run: its command resumes there with nothing left to do
    run(AttackConfig(out=str(tmp_path / "m"), **cfg), attack_fn=lambda *a: pytest.fail("searched again"))
    run(AttackConfig(out=str(tmp_path / "s2"), start=2, **{**cfg, "seed": 1}))
    with pytest.raises(ValueError, match="differ in more than"):
        merge(tmp_path / "m2", [tmp_path / "s0", tmp_path / "s2"])
    with pytest.raises(ValueError, match="--start 3 skips all 3 targets"):
        run(AttackConfig(out=str(tmp_path / "x"), start=3, **cfg))


def test_transfer_score_samples_the_other_victim(tiny, tmp_path):
    from scdpo.attack.score import ScoreConfig, score

    run(AttackConfig(attack="paraphrase", model=str(tiny), concepts=["dagger"], out=str(tmp_path / "a"),
                     **{**FAST, "steps": 1}))
    with pytest.raises(ValueError, match="needs --out"):
        ScoreConfig(run=str(tmp_path / "a"), guard="sld:max")
    own = score(ScoreConfig(run=str(tmp_path / "a"), seeds=2, judge="emojiworld", device="cpu"))
    other = score(ScoreConfig(run=str(tmp_path / "a"), seeds=2, judge="emojiworld", device="cpu",
                              negative_prompt="dagger knife", out=str(tmp_path / "t")))
    assert other["searched_against"]["negative_prompt"] is None and "searched_against" not in own
    assert other["suites"]["paraphrase"]["images"] == 2
    # the run folder keeps its own victim's metrics; the transfer's images differ (another sampler)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["attack_success_rate"] == own["attack_success_rate"]
    import pandas as pd
    a = pd.read_parquet(tmp_path / "a" / "suites" / "paraphrase" / "images.parquet")
    t = pd.read_parquet(tmp_path / "t" / "suites" / "paraphrase" / "images.parquet")
    assert list(a["prompt"]) == list(t["prompt"]) and not a.equals(t)


def test_a_state_written_before_a_field_existed_resumes(tiny, tmp_path):
    cfg = dict(attack="paraphrase", model=str(tiny), concepts=["dagger"], out=str(tmp_path), **FAST)
    run(AttackConfig(**cfg))
    state = json.loads((tmp_path / "state.json").read_text())
    del state["config"]["start"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    run(AttackConfig(**cfg), attack_fn=lambda *a: pytest.fail("searched again"))


def test_ring_a_bell_encodes_nothing_when_a_generation_changes_nobody(model, monkeypatch):
    from scdpo.attack import ring_a_bell as rab

    vocab = allowed_tokens(model.tokenizers[0])
    goal = encode_texts(model, ["k q"]).context[0].float()
    encoded, fitness = [], rab._fitness
    monkeypatch.setattr(rab, "_fitness", lambda *a: encoded.append(len(a[2])) or fitness(*a))
    # no mutation, no crossover: after the first generation the kept parent is all there is, unchanged
    *_, gens = rab.search(model, goal, 1, vocab, torch.Generator().manual_seed(0), Budget(4), 4, 0.0, 0.0)
    assert gens == 4 and encoded == [4]


def test_suite_seed_draws_other_targets_of_the_same_concepts(tiny, tmp_path):
    from scdpo.attack.targets import build_targets

    first, other = (build_targets(["dagger", "pills"], None, 1, s) for s in (0, 1))
    assert [t.concept for t in first] == [t.concept for t in other] == ["dagger", "pills"]
    assert [t.prompt for t in first] != [t.prompt for t in other]
    cfg = dict(attack="paraphrase", model=str(tiny), concepts=["dagger"], **FAST)
    run(AttackConfig(out=str(tmp_path / "a"), suite_seed=1, **cfg))
    assert _rows(tmp_path / "a" / "prompts.csv")[0]["source_prompt"] == other[0].prompt
    with pytest.raises(ValueError, match="suite_seed"):
        run(AttackConfig(out=str(tmp_path / "a"), **cfg))
    with pytest.raises(ValueError, match="--suite-seed"):
        AttackConfig(attack="paraphrase", model="x", prompts="p.csv", suite_seed=1)


def test_a_shard_written_before_a_field_existed_merges_with_a_new_one(tiny, tmp_path):
    from scdpo.attack.run import merge

    cfg = dict(attack="paraphrase", model=str(tiny), concepts=["dagger", "pistol"], limit=1, **FAST)
    for k in (0, 1):
        run(AttackConfig(out=str(tmp_path / f"s{k}"), start=k, **cfg))
    old = json.loads((tmp_path / "s0" / "state.json").read_text())
    del old["config"]["suite_seed"]  # shard 0 finished before --suite-seed existed
    (tmp_path / "s0" / "state.json").write_text(json.dumps(old))
    merge(tmp_path / "all", [tmp_path / "s1", tmp_path / "s0"])
    merged = json.loads((tmp_path / "all" / "state.json").read_text())
    assert merged["config"]["suite_seed"] == 0 and "out" not in merged["config"] and len(merged["results"]) == 2


def test_ring_a_bell_sets_the_population_into_ids_as_the_tokenizer_would(model):
    from scdpo.models.token_ids import build_ids, layout_slots, with_tokens

    pop = torch.randint(500, 1000, (5, 3), generator=torch.Generator().manual_seed(0))
    ids = with_tokens(layout_slots(model, [None] * 3), pop)
    for tok, batch in zip(model.tokenizers, ids):
        assert torch.equal(batch, torch.stack([build_ids(tok, row.tolist()) for row in pop]))


def test_check_seeds_needs_every_seed_harmful(model):
    """--check-seeds k: a check samples seeds seed .. seed + k - 1 in one batch and succeeds only when
    the judge finds every image harmful (1, the default: the one seed, as before)."""
    seen = []

    def judge(images):  # harmful unless the image is the second of a batch
        seen.append(len(images))
        return torch.tensor([i != 1 for i in range(len(images))])

    one = AttackContext(AttackConfig(attack="p4d", model="x", concepts=["dagger"], **FAST), model,
                        sampler_for(AttackConfig(attack="p4d", model="x", concepts=["dagger"], **FAST)), judge)
    cfg3 = AttackConfig(attack="p4d", model="x", concepts=["dagger"], check_seeds=3, **FAST)
    three = AttackContext(cfg3, model, sampler_for(cfg3), judge)
    assert one.check("a b", 7) is True and three.check("a b", 7) is False and seen == [1, 3]
    # the k images are the victim's at seeds 7, 8, 9
    torch.testing.assert_close(model.sample(["a b"] * 3, [7, 8, 9], sampler_for(cfg3))[1:2],
                               model.sample(["a b"], [8], sampler_for(cfg3)))
    with pytest.raises(ValueError, match="--check-seeds must be >= 1"):
        AttackConfig(attack="p4d", model="x", concepts=["dagger"], check_seeds=0)
