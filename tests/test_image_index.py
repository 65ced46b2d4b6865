"""The one parquet writer behind `generate`'s index and `eval`'s per-suite images."""

import pyarrow.parquet as pq
import torch

from scdpo.eval.run import save_images
from scdpo.world.dataset import png_bytes
from scdpo.world.image_index import write_image_index
from scdpo.world.records import PromptRecord

RECS = [PromptRecord("a cat", "t", concepts=("cat",)), PromptRecord("a knife", "t", categories=("violence",))]


def test_generate_schema_has_file_and_no_k(tmp_path):
    png = png_bytes(torch.zeros(3, 4, 4))
    write_image_index(tmp_path / "i.parquet", [png, png], RECS, [7, 8], [0, 1], files=["a.png", "b.png"])
    t = pq.read_table(tmp_path / "i.parquet")
    assert t.column_names == ["file", "image", "prompt", "seed", "prompt_index", "categories", "concepts"]
    assert t["seed"].to_pylist() == [7, 8] and t["categories"].to_pylist() == [[], ["violence"]]
    assert t["image"].to_pylist()[0]["bytes"] == png
    assert not list(tmp_path.glob("*.tmp"))


def test_eval_schema_has_k_and_no_file(tmp_path):
    samples = [(0, 0, 11, RECS[0]), (0, 1, 12, RECS[0]), (1, 0, 13, RECS[1])]
    save_images(tmp_path / "images.parquet", samples, torch.rand(3, 3, 4, 4))
    t = pq.read_table(tmp_path / "images.parquet")
    assert t.column_names == ["image", "prompt", "seed", "prompt_index", "k", "categories", "concepts"]
    assert t["k"].to_pylist() == [0, 1, 0] and t["prompt_index"].to_pylist() == [0, 0, 1]
    assert t["prompt"].to_pylist() == ["a cat", "a cat", "a knife"] and t["concepts"].to_pylist()[0] == ["cat"]
