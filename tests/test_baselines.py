"""ESD and UCE on the tiny pipelines: what they write loads with diffusers, and changes only what it should."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from scdpo.baselines.esd import ESDConfig, esd_targets, train_esd
from scdpo.baselines.uce import TARGETS, delta_to_lora, last_token_embeddings, uce_edit
from scdpo.cli import main
from scdpo.models import testing
from scdpo.models.t2i import T2IModel
from scdpo.train.model import LORA_FILE, save_lora

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
ERASE, KEEP = ["gun", "knife"], ["cat", "dog", "tree", "red car"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("baselines")
    return {"clip": testing.tiny_sd_pipeline(root / "clip"),
            "minilm": testing.tiny_sd_pipeline(root / "minilm", text_encoder="minilm"),
            "sdxl": testing.tiny_sdxl_pipeline(root / "sdxl")}


def load(paths, name):
    return T2IModel.from_pretrained(paths[name], device="cpu")


def changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("name", ["clip", "minilm", "sdxl"])
def test_uce_edits_only_cross_attention_kv_and_keeps_preserved(paths, name, tmp_path):
    model = load(paths, name)
    edits = uce_edit(model, ERASE, [""], KEEP, lamb=0.1)
    assert edits.keys() == {n for n, _ in model.unet.named_modules() if n.endswith(TARGETS)} and edits
    again = uce_edit(model, ERASE, [""], KEEP, lamb=0.1)
    assert all(torch.equal(edits[k], again[k]) for k in edits)  # deterministic
    c, g, p = (last_token_embeddings(model, x).double() for x in (ERASE, [""], KEEP))
    modules = dict(model.unet.named_modules())
    for n, new in edits.items():
        old = modules[n].weight.double()
        # kept concepts' keys / values barely move; erased ones move most of the way to the guide's
        kept = (p @ new.T - p @ old.T).norm() / (p @ old.T).norm()
        assert kept < 0.05, (n, float(kept))
        before, after = (c @ old.T - g @ old.T).norm(), (c @ new.T - g @ old.T).norm()
        assert after < 0.5 * before, (n, float(after), float(before))
    base = {k: v.clone() for k, v in model.unet.state_dict().items()}
    rank = len(ERASE)
    delta_to_lora(model.unet, edits, rank)
    save_lora(model.unet, tmp_path / "uce", model.family)
    layers = load_file(tmp_path / "uce" / LORA_FILE)
    assert layers and all(("attn2.to_k" in k or "attn2.to_v" in k) for k in layers)
    fresh = load(paths, name).load_lora(tmp_path / "uce")  # diffusers' load_lora_weights + fuse
    after = fresh.unet.state_dict()
    assert changed(base, after) == {f"{n}.weight" for n in edits}
    for n, new in edits.items():  # the rank-2 LoRA is the edit, exactly (up to float32)
        torch.testing.assert_close(after[f"{n}.weight"].double(), new, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["x", "u"])
def test_esd_lora_touches_only_its_layers(paths, variant, tmp_path):
    model = load(paths, "minilm")
    base = {k: v.clone() for k, v in model.unet.state_dict().items()}
    cfg = ESDConfig(model="-", out=str(tmp_path), variant=variant, iterations=3, batch_size=2, ddim_steps=4,
                    lr=1e-2, rank=2, progress=False)
    targets = esd_targets(model.unet, variant)
    assert targets and all(("attn2" in t) == (variant == "x") for t in targets)
    losses = train_esd(model, ERASE, cfg)
    assert len(losses) == 3 and all(l > 0 for l in losses)  # noqa: E741
    save_lora(model.unet, tmp_path, model.family)
    keys = load_file(tmp_path / LORA_FILE).keys()
    assert keys and all(("attn2" in k) == (variant == "x") for k in keys)
    fresh = load(paths, "minilm").load_lora(tmp_path)
    moved = changed(base, fresh.unet.state_dict())
    assert moved == {f"{t}.weight" for t in targets}  # every trained layer, and only those
    # same seed, same LoRA
    other = load(paths, "minilm")
    train_esd(other, ERASE, cfg)
    save_lora(other.unet, tmp_path / "again", model.family)
    a, b = load_file(tmp_path / LORA_FILE), load_file(tmp_path / "again" / LORA_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_esd_moves_the_concept_prediction_towards_its_target(paths, tmp_path):
    """Trained on one concept at a few fixed steps, the loss falls: the LoRA learns the negated guidance."""
    model = load(paths, "clip")
    cfg = ESDConfig(model="-", out=str(tmp_path), iterations=40, batch_size=2, ddim_steps=2, lr=3e-3, rank=4,
                    negative_guidance=2.0, progress=False)
    losses = train_esd(model, ["gun"], cfg)
    assert sum(losses[-8:]) / 8 < 0.7 * sum(losses[:8]) / 8, losses


def test_cli(paths, tmp_path, capsys):
    out = tmp_path / "uce"
    assert main(["baseline", "uce", "--model", str(paths["clip"]), "--concepts", "gun, knife",
                 "--preserve", "cat", "--out", str(out)]) == 0
    record = json.loads((out / "baseline.json").read_text())
    assert record["method"] == "uce" and record["concepts"] == ERASE and record["rank"] == 2
    assert main(["baseline", "esd", "--model", str(paths["sdxl"]), "--concepts", "gun", "--variant", "x",
                 "--iterations", "2", "--ddim-steps", "3", "--rank", "2", "--no-progress",
                 "--out", str(tmp_path / "esd")]) == 0
    assert (tmp_path / "esd" / LORA_FILE).is_file()
    T2IModel.from_pretrained(paths["sdxl"], device="cpu").load_lora(tmp_path / "esd")
    assert main(["baseline", "esd", "--model", str(paths["clip"]), "--variant", "z", "--out", str(tmp_path)]) == 2
    assert "--variant" in capsys.readouterr().err


def test_esd_resumes_exactly(paths, tmp_path, monkeypatch):
    """A run killed after its checkpoint and rerun ends with the LoRA of an uninterrupted run."""
    import scdpo.baselines.state as state
    from scdpo.train.model import lora_state_dict

    cfg = ESDConfig(model="-", out="-", iterations=4, batch_size=2, ddim_steps=3, lr=1e-2, rank=2, progress=False,
                    checkpoint_every=2)
    whole = load(paths, "minilm")
    losses = train_esd(whole, ERASE, cfg, resume_dir=tmp_path / "whole")
    saved = state.save_state

    def save_then_die(*args, **kwargs):
        saved(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(state, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_esd(load(paths, "minilm"), ERASE, cfg, resume_dir=tmp_path / "killed")
    monkeypatch.setattr(state, "save_state", saved)
    resumed = load(paths, "minilm")
    assert train_esd(resumed, ERASE, cfg, resume_dir=tmp_path / "killed") == losses
    a, b = lora_state_dict(whole.unet), lora_state_dict(resumed.unet)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="other settings"):
        train_esd(load(paths, "minilm"), ["blood"], cfg, resume_dir=tmp_path / "killed")
