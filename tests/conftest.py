"""Shared fixtures."""

import os

import pytest
import torch

# `scdpo` commands run in-process (cli.main) and in subprocesses take their default thread count from
# the load average; under pytest-xdist two workers already share the cores, so every command run by a
# test keeps to one thread unless the test says otherwise (tests of the default unset this)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# scdpo's cache (the materialised EmojiWorld model, the Frechet references' features) in a folder of this
# test session (xdist's workers inherit it), so that no test reads what an earlier run or the user's own
# evaluations left in ~/.cache; a $SCDPO_CACHE set by the caller is kept
if "SCDPO_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SCDPO_CACHE"] = tempfile.mkdtemp(prefix="scdpo-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SCDPO_CACHE"], True)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: they run faster on one thread, and far faster
    on a machine shared with other jobs (measured: 4 training steps 0.65 s on one thread, 39 s on two
    with the cores oversubscribed; a tiny-pipeline sample 0.04 s against 6.6 s). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_fake_run(folder, name: str, suites: dict[str, dict], images: bool = True, **top) -> str:
    """An `scdpo eval` run folder from given per-suite metrics (the keys a test cares about), with
    small real images.parquet files so that the comparison grids are drawn."""
    import json
    from pathlib import Path

    from scdpo.eval.run import save_images
    from scdpo.world.records import PromptRecord

    folder = Path(folder)
    out = {}
    for s, m in suites.items():
        n = m.get("images", 4)
        if images:
            samples = [(i, 0, 1000 + i, PromptRecord(prompt=f"prompt {i}", source="test")) for i in range(n)]
            shade = 0.2 if name == "base" else 0.7
            save_images(folder / "suites" / s / "images.parquet", samples, torch.full((n, 3, 16, 16), shade))
        out[s] = {"kind": "emojiworld", "prompts": n, "images": n, "harmful_images": 0,
                  "images_file": f"suites/{s}/images.parquet", "grid": f"suites/{s}/grid.png", **m}
    metrics = {"name": name, "created": "2026-12-01 12:00 UTC", "model": "emojiworld", "lora": None,
               "negative_prompt": None, "judge": "emojiworld", "seconds": 1.0,
               "config": {"steps": 15, "scheduler": "dpmsolver++", "guidance_scale": 5.0, "n_per_prompt": 1,
                          "suite_seed": 0}, "suites": out, **top}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


@pytest.fixture
def fake_runs(tmp_path):
    """Two runs, base and sc-dpo, as in the demo: the explicit suite (48 harmful prompts) and the clean one."""
    harm = {"images": 6, "harmful_images": 6, "harmful_rate": 0.8333, "harmful_rate_harmful_prompts": 0.8333,
            "harmful_rate_harmful_prompts_n": 6, "category_images": {"sexual": 6}}
    clean = {"images": 8, "harmful_images": 0, "harmful_rate": 0.0, "harmful_rate_clean_prompts": 0.0,
             "harmful_rate_clean_prompts_n": 8, "alignment": 0.875, "alignment_n": 8, "frechet": {"fd": 130.0}}
    base = write_fake_run(tmp_path / "eval-base", "base", {
        "eval-harmful-explicit": {**harm, "harmful_rate_by_category": {"sexual": 0.8333}},
        "eval-clean": {**clean, "safe_object_rate": 0.5, "safe_object_rate_n": 8}})
    aligned = write_fake_run(tmp_path / "eval-sc-dpo", "sc-dpo", {
        "eval-harmful-explicit": {**harm, "harmful_rate": 1.0, "harmful_rate_harmful_prompts": 1.0,
                                  "harmful_rate_by_category": {"sexual": 1.0}},
        "eval-clean": {**clean, "alignment": 0.75, "frechet": {"fd": 128.0}, "safe_object_rate": 0.625,
                       "safe_object_rate_n": 8, "new_thing_rate": 0.25, "new_thing_rate_n": 8}},
        lora="outputs/demo/lora")
    return [base, aligned]


@pytest.fixture(scope="session")
def random_lora():
    """``random_lora(pipeline, out)``: a clearly non-zero LoRA for ``pipeline`` (B matrices drawn from
    N(0, 0.5²); the trainer's start at 0), saved to ``out`` the way the trainer saves it. Returns
    ``(out, the model with the adapter)``."""
    from pathlib import Path

    from scdpo.models.t2i import T2IModel
    from scdpo.train.config import LORA_TARGETS
    from scdpo.train.model import add_lora, save_lora

    def make(pipeline, out, rank: int = 4, alpha: float = 8.0, seed: int = 0):
        torch.manual_seed(seed)
        model = T2IModel.from_pretrained(pipeline, device="cpu")
        add_lora(model.unet, rank, alpha, LORA_TARGETS)
        with torch.no_grad():
            for name, weight in model.unet.named_parameters():
                if "lora_B" in name:
                    weight.normal_(0, 0.5)
        save_lora(model.unet, out, "sd")
        return Path(out), model
    return make
