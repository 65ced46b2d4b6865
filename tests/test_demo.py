"""The README's demo, miniaturised: every stage runs end to end on a tiny random pipeline."""

from __future__ import annotations

import json

import torch

from scdpo.demo import DemoConfig, run
from scdpo.models.testing import tiny_sd_pipeline


def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    torch.set_num_threads(1)  # tiny ops: threads only contend
    model = tiny_sd_pipeline(tmp_path / "model", text_encoder="minilm")
    cfg = DemoConfig(out=str(tmp_path / "demo"), model=str(model), cost_pool=24, cost_steps=10, cost_heldout=4,
                     harmful_prompts=4, clean_prompts=4, candidates=2, sample_steps=2, train_steps=2,
                     batch_size=2, eval_prompts=4,
                     # a random model's images are all unsafe to a cost model: pair them anyway
                     cost_budget=1e9, uniform_rule="reward")
    run(cfg)
    out = tmp_path / "demo"
    for f in ("cost/config.json", "scp/README.md", "lora/pytorch_lora_weights.safetensors",
              "eval-base/report.html", "eval-sc-dpo/report.html", "compare/report.html", "compare/table.md"):
        assert (out / f).exists(), f
    table = (out / "compare" / "table.md").read_text()
    assert "base" in table and "sc-dpo" in table
    base = json.loads((out / "eval-base" / "metrics.json").read_text())
    assert set(base["suites"]) == {"eval-harmful-explicit", "eval-clean"}

    capsys.readouterr()
    run(cfg)  # a second run finds every stage done
    assert capsys.readouterr().out.count("done already") == 5
