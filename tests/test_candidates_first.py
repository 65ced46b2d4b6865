"""`scdpo data build --candidates-only`: the first pass sampled before the cost model exists, then the build."""

from __future__ import annotations

import json

import pytest
import torch

from scdpo.cli import main
from scdpo.data.builder import build, candidates_path, load_candidates, save_candidates
from tests.test_data_builder import FakeModel, _cfg, fake_cost, fake_reward


def _first_then_build(out, **kw):
    """``--candidates-only`` (no cost model anywhere: the cost function given is None and "fake" would not load),
    then the build; returns (the first run's summary, the build's summary, images the build sampled)."""
    ahead = build(_cfg(out, candidates_only=True, **kw), FakeModel(), None, fake_reward)
    model = FakeModel()
    return ahead, build(_cfg(out, **kw), model, fake_cost, fake_reward), model.images


def _same_parquet(out, ref):
    files = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    assert files == sorted(p.relative_to(ref) for p in ref.rglob("*.parquet")) and files
    for f in files:
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f


def test_candidates_first_then_the_build_equals_one_build(tmp_path):
    ref = tmp_path / "ref"
    ref_summary = build(_cfg(ref), FakeModel(), fake_cost, fake_reward)
    out = tmp_path / "two"
    ahead, summary, sampled = _first_then_build(out)
    assert ahead["candidates_only"] and ahead["chunks"] == ahead["chunks_sampled"] == 7  # 20 prompts, chunks of 3
    assert sampled == 0  # every candidate was read back, none sampled again
    assert summary == ref_summary
    _same_parquet(out, ref)
    assert not (out / ".work").exists()  # the candidates went with the work folder
    seconds = json.loads((out / "seconds-candidates.json").read_text())["seconds_by_phase"]
    assert {"sampling", "scoring", "write"} <= set(seconds)
    assert "reading" in json.loads((out / "seconds.json").read_text())["seconds_by_phase"]


def test_the_second_pass_still_samples_what_needs_the_costs(tmp_path):
    src = tmp_path / "pairs.csv"
    src.write_text("unsafe_prompt,safe_prompt,category\n" + "".join(
        f"a violent scene number {i},SAFE a calm scene number {i},violence\n" for i in range(6)))
    kw = dict(harmful=str(src), clean=None, safe_prompt_winner=True, uniform_rule="skip", n_harmful=None)
    ref = tmp_path / "ref"
    ref_model = FakeModel()
    ref_summary = build(_cfg(ref, **kw), ref_model, fake_cost, fake_reward)
    _, summary, sampled = _first_then_build(tmp_path / "two", **kw)
    assert summary == ref_summary
    _same_parquet(tmp_path / "two", ref)
    # only the safe prompts, sampled at the losers' seeds once the costs chose the losers
    assert 0 < sampled == ref_model.images - 6 * 4


def test_candidates_only_resumes_and_a_finished_one_samples_nothing(tmp_path):
    out = tmp_path / "pairs"
    calls = {"n": 0}

    def flaky_reward(images, records):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return fake_reward(images, records)

    with pytest.raises(RuntimeError, match="killed"):
        build(_cfg(out, candidates_only=True), FakeModel(), None, flaky_reward)
    assert sorted(p.name for p in (out / ".work").glob("candidates-*")) == [
        "candidates-00000.safetensors", "candidates-00001.safetensors"]
    assert not list(out.rglob("*.tmp"))
    model = FakeModel()
    build(_cfg(out, candidates_only=True), model, None, fake_reward)
    assert model.images == (20 - 6) * 4  # the chunks left only
    again = FakeModel()
    assert build(_cfg(out, candidates_only=True), again, None, fake_reward)["chunks_sampled"] == 7
    assert again.images == 0


def test_a_build_with_other_settings_refuses_the_candidates(tmp_path):
    out = tmp_path / "pairs"
    build(_cfg(out, candidates_only=True), FakeModel(), None, fake_reward)
    with pytest.raises(ValueError, match="other settings"):
        build(_cfg(out, candidates=3), FakeModel(), fake_cost, fake_reward)


def test_saved_candidates_read_back_as_the_same_numbers(tmp_path):
    images = (torch.rand(5, 3, 8, 8) * 255).round() / 255  # quantised as the build stores them
    save_candidates(candidates_path(tmp_path, 4), images, [0.5, -1.25, 3.0, 0.1, 2.0])
    back, rewards = load_candidates(tmp_path / "candidates-00004.safetensors")
    assert torch.equal(back, images) and back.dtype == torch.float32
    assert rewards == [0.5, -1.25, 3.0, torch.tensor(0.1).item(), 2.0]


def test_the_flag_is_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["data", "build", "--help"])
    assert "--candidates-only" in capsys.readouterr().out


def test_a_candidates_file_of_another_chunk_size_is_refused_by_name(tmp_path):
    out = tmp_path / "pairs"
    build(_cfg(out, candidates_only=True), FakeModel(), None, fake_reward)
    images, rewards = load_candidates(candidates_path(out / ".work", 0))
    save_candidates(candidates_path(out / ".work", 0), images[:-1], rewards[:-1])  # one candidate short
    with pytest.raises(ValueError, match="candidates-00000.safetensors holds 11 images .* delete it"):
        build(_cfg(out), FakeModel(), fake_cost, fake_reward)
