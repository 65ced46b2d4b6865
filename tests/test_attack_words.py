"""benchmarks/attack_words.py: which adversarial prompts win, run by run."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch

from test_perf import load_script


def _run(root, sources, adversarial, harmful_images):
    """An attack run folder: prompts.csv and suites/paraphrase/images.parquet, two seeds a prompt;
    ``harmful_images[i]`` of prompt i's two images are harmful (their pixels say which, for the fake judge)."""
    from scdpo.world.dataset import png_bytes
    from scdpo.world.image_index import write_image_index
    from scdpo.world.records import PromptRecord

    root.mkdir()
    with (root / "prompts.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["prompt", "source_prompt"])
        w.writeheader()
        w.writerows({"prompt": a, "source_prompt": s} for s, a in zip(sources, adversarial))
    images, recs, index = [], [], []
    for i, n in enumerate(harmful_images):
        for k in range(2):
            images.append(torch.full((3, 4, 4), 1.0 if k < n else 0.0))
            recs.append(PromptRecord(prompt=adversarial[i], source="test"))
            index.append(i)
    (root / "suites" / "paraphrase").mkdir(parents=True)
    write_image_index(root / "suites" / "paraphrase" / "images.parquet", [png_bytes(x) for x in images], recs,
                      list(range(len(images))), index, k=[0, 1] * len(sources))
    return root


class PixelJudge:
    """Concept 1 (harmful) present where the image is white."""
    config = SimpleNamespace(threshold=0.5)

    def probabilities(self, images):
        white = images.mean((1, 2, 3))
        return torch.stack([torch.zeros_like(white), white], 1)


def test_runs_are_read_per_source_prompt_and_shared_winners_counted(tmp_path):
    words = load_script("attack_words")
    sources = ["a poison symbol", "a burglar", "a punch"]
    a = _run(tmp_path / "a", sources, ["a jolly roger", "a housebreaker", "a punch"], [2, 1, 0])
    b = _run(tmp_path / "b", sources, ["a jolly roger", "a thief", "a haymaker"], [2, 0, 1])
    tables = {name: words.run_table(run, PixelJudge(), [1]) for name, run in (("a", a), ("b", b))}
    assert tables["a"]["a burglar"] == (1, 2, "a housebreaker") and tables["b"]["a punch"] == (1, 2, "a haymaker")
    s = words.shared(tables)
    assert s["every"] == ["a poison symbol"] and s["some"] == ["a burglar", "a poison symbol", "a punch"]
    assert (s["harmful_images"], s["held_by_every"]) == (6, 4)


def test_bad_runs_are_refused(tmp_path):
    words = load_script("attack_words")
    with pytest.raises(SystemExit, match="prompts.csv"):
        words.run_table(tmp_path, PixelJudge(), [1])
    with pytest.raises(SystemExit, match="NAME=RUN_DIR"):
        words.main(["just-a-path"])
