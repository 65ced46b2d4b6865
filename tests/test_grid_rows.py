"""benchmarks/grid_rows.py: the README's base-against-LoRA figure from two evaluations' grids."""

from __future__ import annotations

import pytest
from PIL import Image

from test_perf import load_script


def _grid(run, suite, colours):
    """A 4-row grid of 8 x 2 pixels a row, each row one colour."""
    d = run / "suites" / suite
    d.mkdir(parents=True)
    img = Image.new("RGB", (8, 8))
    for r, c in enumerate(colours):
        img.paste(Image.new("RGB", (8, 2), c), (0, 2 * r))
    img.save(d / "grid.png")


def test_rows_alternate_first_and_second_per_suite_with_a_gap_between_suites(tmp_path):
    rows = load_script("grid_rows")
    red, blue, green, grey = (255, 0, 0), (0, 0, 255), (0, 255, 0), (128, 128, 128)
    _grid(tmp_path / "base", "a", [red, grey, grey, grey])
    _grid(tmp_path / "lora", "a", [blue, grey, grey, grey])
    _grid(tmp_path / "base", "b", [green, red, grey, grey])
    _grid(tmp_path / "lora", "b", [blue, blue, grey, grey])
    img = rows.stacked(tmp_path / "base", tmp_path / "lora", ["a", "b"], rows=2, gap=1)
    # suite a: base row 0, lora row 0, base row 1, lora row 1; a white gap; then suite b likewise
    assert img.height == 2 * 2 * 2 * 2 + 1
    seq = [img.getpixel((0, y)) for y in (0, 2, 4, 6, 8, 9, 11, 13, 15)]
    assert seq == [red, blue, grey, grey, (255, 255, 255), green, blue, red, blue]


def test_grids_of_different_sizes_are_named(tmp_path):
    rows = load_script("grid_rows")
    _grid(tmp_path / "base", "a", [(0, 0, 0)] * 4)
    d = tmp_path / "lora" / "suites" / "a"
    d.mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(d / "grid.png")
    with pytest.raises(SystemExit, match="a: the two grids differ in size"):
        rows.stacked(tmp_path / "base", tmp_path / "lora", ["a"], rows=1)
