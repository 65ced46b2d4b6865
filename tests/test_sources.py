"""Tests for scdpo.prompts.sources: the external prompt-set loaders and the minors filter.

The shared data (../shared/data from the project root) is read in place, never copied; tests
that need it skip when it is absent. Hand-made prompts below are deliberately non-graphic:
the filter keys on the record's categories, not on explicit wording.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from scdpo.prompts.sources import (
    FORMATS,
    filter_minors,
    load_coco,
    load_coprov2_pairs,
    load_coprov2_test,
    load_csv,
    load_i2p,
    load_parti,
    load_prompt_file,
    load_ring_a_bell,
    load_text,
    mentions_minor,
    normalize_categories,
)
from scdpo.world.records import I2P_CATEGORIES, PromptRecord

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# file, loader, rows per SOURCES.md, rows our (broader) minors filter drops on top of the
# upstream one. The drops were measured once and are checked below to be exactly the sexual
# rows that mention a minor, so a change in either the data or the filter shows up here.
SHARED = [
    ("i2p/i2p.csv", load_i2p, 4680, 15),
    ("unlearndiffatk/nudity.csv", load_i2p, 139, 2),
    ("unlearndiffatk/violence.csv", load_i2p, 754, 0),
    ("unlearndiffatk/illegal.csv", load_i2p, 725, 0),
    ("coprov2/coprov2_train_pairs.csv", load_coprov2_pairs, 15926, 3),
    ("coprov2/coprov2_test.csv", load_coprov2_test, 7952, 4),
    ("coco/coco_30k.csv", load_coco, 30000, 0),
    ("parti/PartiPrompts.tsv", load_parti, 1632, 0),
    ("ring_a_bell/Violence_30.csv", load_ring_a_bell, 30, 0),
    ("ring_a_bell/Violence_eta_5_K_77.csv", load_ring_a_bell, 250, 0),
    ("ring_a_bell/Violence_eta_5.5_K_77.csv", load_ring_a_bell, 250, 0),
    ("ring_a_bell/Violence_eta_5.5_K_38.csv", load_ring_a_bell, 250, 0),
]
_PROMPT_COLUMN = {"coprov2_train_pairs.csv": "unsafe_prompt", "PartiPrompts.tsv": "Prompt"}


def _shared(rel: str) -> Path:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"shared data file {path} not available")
    return path


def _raw_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ","))


_cache: dict[tuple[str, bool], list[PromptRecord]] = {}


def _load(rel: str, loader, filtered: bool = True) -> list[PromptRecord]:
    """Each shared file is parsed at most twice per session (filtered / unfiltered)."""
    key = (rel, filtered)
    if key not in _cache:
        _cache[key] = loader(_shared(rel), filter_minors=filtered)
    return _cache[key]


# --------------------------------------------------------------------------- shared files


@pytest.mark.parametrize(("rel", "loader", "documented", "dropped"), SHARED, ids=[s[0] for s in SHARED])
def test_shared_file_counts(rel, loader, documented, dropped):
    path = _shared(rel)
    raw = _raw_rows(path)
    assert len(raw) == documented  # the row count SOURCES.md states
    column = _PROMPT_COLUMN.get(path.name, "prompt")
    empty = sum(not r[column].strip() for r in raw)
    records = _load(rel, loader)
    assert len(records) == documented - empty - dropped
    assert all(r.prompt and r.prompt == r.prompt.strip() for r in records)


@pytest.mark.parametrize(("rel", "loader", "documented", "dropped"), SHARED, ids=[s[0] for s in SHARED])
def test_shared_file_drops_are_exactly_sexual_minor_rows(rel, loader, documented, dropped):
    unfiltered = _load(rel, loader, filtered=False)
    filtered = _load(rel, loader)

    def flagged(r: PromptRecord) -> bool:
        sexual = "sexual" in r.categories or (r.meta.get("nudity_percentage") or 0) > 0
        return sexual and (mentions_minor(r.prompt) or mentions_minor(r.safe_prompt or ""))

    assert sum(map(flagged, unfiltered)) == dropped
    assert not any(map(flagged, filtered))
    assert len(unfiltered) - len(filtered) == dropped


@pytest.mark.parametrize("rel", [s[0] for s in SHARED])
def test_auto_detection_picks_the_right_loader(rel, caplog):
    path = _shared(rel)
    loader = next(s[1] for s in SHARED if s[0] == rel)
    auto = load_prompt_file(path, limit=20)
    assert auto == _load(rel, loader)[:20]


@pytest.mark.parametrize("rel", [s[0] for s in SHARED if s[1] is not load_coco and s[1] is not load_parti])
def test_harmful_sets_have_normalised_categories(rel):
    records = _load(rel, next(s[1] for s in SHARED if s[0] == rel))
    assert all(r.categories and set(r.categories) <= set(I2P_CATEGORIES) for r in records)
    assert all(r.severity == 1 and r.harmful for r in records)


def test_coprov2_categories_map_onto_all_seven_i2p_categories():
    rel = "coprov2/coprov2_train_pairs.csv"
    raw = _raw_rows(_shared(rel))
    records = _load(rel, load_coprov2_pairs)
    assert {r.categories for r in records} == {(c,) for c in I2P_CATEGORIES}
    # 'Harrasment' in the source becomes 'harassment', row for row (no pair dropped there).
    assert sum(r["category"] == "Harrasment" for r in raw) == sum(r.categories == ("harassment",) for r in records)


def test_coprov2_pairs_carry_safe_prompt():
    records = _load("coprov2/coprov2_train_pairs.csv", load_coprov2_pairs)
    assert all(r.safe_prompt for r in records)
    assert sum(r.safe_prompt != r.prompt for r in records) > 0.99 * len(records)
    assert records[0].meta["pair_id"] == "0000000_0"
    assert all(r.safe_prompt is None for r in _load("coprov2/coprov2_test.csv", load_coprov2_test))


def test_coco_captions_are_one_line_with_seeds():
    rel = "coco/coco_30k.csv"
    raw = _raw_rows(_shared(rel))
    assert sum("\n" in r["prompt"] for r in raw) == 97  # the quirk SOURCES.md documents
    records = _load(rel, load_coco)
    assert not any("\n" in r.prompt or "\r" in r.prompt for r in records)
    assert all(isinstance(r.seed, int) and not r.harmful for r in records)
    assert records[0].meta["image_id"] == raw[0]["image_id"]  # leading zeros kept


def test_i2p_fields(caplog):
    rel = "i2p/i2p.csv"
    raw = _raw_rows(_shared(rel))
    with caplog.at_level(logging.INFO, logger="scdpo.prompts.sources"):
        records = load_i2p(_shared(rel))
    assert "1 empty prompts skipped" in caplog.text and "15 dropped by the minors filter" in caplog.text
    by_case = {r.meta["case_number"]: r for r in records}
    assert 2260 not in by_case  # the empty prompt
    first = by_case[0]
    assert first.categories == ("violence", "self-harm")  # multi-label string split
    assert first.seed == int(raw[0]["evaluation_seed"])
    assert first.meta["hard"] == 1 and first.meta["nudity_percentage"] == 0.0
    assert {"case_number", "hard", "inappropriate_percentage", "nudity_percentage"} <= first.meta.keys()
    assert not any("\n" in r.prompt for r in records)


def test_parti_meta_and_ring_a_bell_pairs():
    parti = _load("parti/PartiPrompts.tsv", load_parti)
    assert all(not r.harmful for r in parti)
    assert parti[0].meta["Category"] == "Abstract" and parti[0].meta["Challenge"] == "Basic"
    v30 = _load("ring_a_bell/Violence_30.csv", load_ring_a_bell)
    assert all(r.safe_prompt and r.categories == ("violence",) for r in v30)
    assert v30[0].safe_prompt == "The man's hand has been cut, and he is fine."
    eta = _load("ring_a_bell/Violence_eta_5_K_77.csv", load_ring_a_bell)
    assert all(r.safe_prompt is None and r.seed is not None for r in eta)
    # Adversarial token strings keep their control characters (str.splitlines would split them).
    assert any(any(ord(c) < 32 for c in r.prompt) for r in eta)


# --------------------------------------------------------------------------- minors filter


def _rec(prompt: str, *categories: str, **meta) -> PromptRecord:
    return PromptRecord(prompt=prompt, source="test", categories=categories, severity=1, meta=meta)


def test_filter_minors_behaviour():
    minor_sexual = _rec("portrait of a 12 year old", "sexual")
    minor_violent = _rec("a 12 year old in a war zone", "violence")
    adult_sexual = _rec("portrait of a 30 year old woman, pin-up girl", "sexual")
    by_nudity = _rec("a teenager on a beach", "shocking", nudity_percentage=20.0)
    no_nudity = _rec("a teenager on a beach", "shocking", nudity_percentage=0.0)
    via_safe = PromptRecord("portrait", "test", ("sexual",), safe_prompt="portrait of a schoolgirl")
    kept, dropped = filter_minors([minor_sexual, minor_violent, adult_sexual, by_nudity, no_nudity, via_safe])
    assert kept == [minor_violent, adult_sexual, no_nudity]
    assert dropped == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a 12-year-old", True), ("twelve years old", True), ("16yo", True), ("aged 15", True),
        ("1 6 - year old", True),  # lexica writes digits spaced out
        ("2 0 - year - old", False), ("a 100 year old man", False), ("twenty one year old", False),
        ("18 year old", False), ("young asian girl", True), ("little boys", True), ("preteen", True),
        ("anime girl", False), ("boyfriend", False), ("young woman", False), ("kidney", False),
    ],
)  # fmt: skip
def test_mentions_minor(text, expected):
    assert mentions_minor(text) is expected


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


# One tiny file per format, each with one sexual row mentioning a minor, one adult sexual row
# and one other row, so every loader must apply the filter by default.
_MINI = {
    "i2p": ("x.csv", "prompt,categories,nudity_percentage,evaluation_seed,case_number\n"
            "a 12 year old,sexual,0.0,1,0\na 30 year old,sexual,0.0,2,1\na storm,violence,0.0,3,2\n"),
    "coprov2_pairs": ("x.csv", "pair_id,category,unsafe_prompt,safe_prompt\n"
                      "0,sexual,a 12 year old,a park\n1,sexual,a 30 year old,a park\n2,Harrasment,a storm,a sky\n"),
    "coprov2_test": ("x.csv", "prompt,category\na 12 year old,sexual\na 30 year old,sexual\na storm,Hate\n"),
    "csv": ("x.csv", "prompt,categories,note\na 12 year old,sexual,\na 30 year old,sexual,\na storm,,\n"),
}  # fmt: skip


@pytest.mark.parametrize("fmt", sorted(_MINI))
def test_every_loader_filters_by_default(tmp_path, fmt, caplog):
    name, text = _MINI[fmt]
    path = _write(tmp_path / name, text)
    with caplog.at_level(logging.INFO, logger="scdpo.prompts.sources"):
        records = load_prompt_file(path, fmt=fmt)
    assert [r.prompt for r in records] == ["a 30 year old", "a storm"]
    assert "1 dropped by the minors filter" in caplog.text
    assert len(load_prompt_file(path, fmt=fmt, filter_minors=False)) == 3
    assert load_prompt_file(path) == records  # auto-detected the same format


def test_text_loader(tmp_path):
    path = _write(tmp_path / "p.txt", "a cat\r\n\n  \na 12 year old\r\na 30 year old\n")
    clean = load_text(path)
    assert [r.prompt for r in clean] == ["a cat", "a 12 year old", "a 30 year old"]
    assert not any(r.harmful for r in clean)
    sexual = load_text(path, categories="Sexual")
    assert [r.prompt for r in sexual] == ["a cat", "a 30 year old"]
    assert sexual[0].categories == ("sexual",) and sexual[0].severity == 1


def test_csv_loader_bom_crlf_multiline_and_meta(tmp_path):
    text = '\ufeffprompt,categories,seed,extra\r\n"two\r\nlines",,7,x\r\na fight,"Violence, Illegal Activity",,y\r\n'
    records = load_csv(_write(tmp_path / "g.csv", text))
    assert records[0].prompt == "two lines" and records[0].seed == 7 and records[0].meta["extra"] == "x"
    assert records[1].categories == ("violence", "illegal activity") and records[1].seed is None


def test_limit_is_first_n_after_filtering(tmp_path):
    name, text = _MINI["coprov2_test"]
    path = _write(tmp_path / name, text)
    assert [r.prompt for r in load_coprov2_test(path, limit=1)] == ["a 30 year old"]
    assert load_coprov2_test(path, limit=0) == []
    assert len(load_coprov2_test(path, limit=99)) == 2
    with pytest.raises(ValueError, match="limit"):
        load_coprov2_test(path, limit=-1)


def test_normalize_categories():
    assert normalize_categories("Harrasment, illegal_activity,Hate,self harm") == (
        "self-harm", "illegal activity", "hate", "harassment",
    )  # fmt: skip
    assert normalize_categories("") == () and normalize_categories(None) == ()
    with pytest.raises(ValueError, match="weird"):
        normalize_categories("weird")


# --------------------------------------------------------------------------- bad input


def test_missing_path_and_directory(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_i2p(missing)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_prompt_file(missing)
    with pytest.raises(ValueError, match="directory"):
        load_prompt_file(tmp_path)
    with pytest.raises(ValueError, match="directory"):
        load_text(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "fmt", "match"),
    [
        ("empty.csv", "", "auto", "empty.csv is empty"),
        ("blank.txt", "\n  \n", "auto", "blank.txt is empty"),
        ("header.csv", "prompt,category\r\n", "auto", "header.csv has a header but no rows"),
        ("header.csv", "prompt,categories,nudity_percentage\n", "i2p", "header.csv has a header but no rows"),
        ("nocol.csv", "text,category\na,b\n", "csv", r"nocol.csv has no column 'prompt'; columns found: \['text', 'category'\]"),
        ("nocol.csv", "prompt,category\na,Hate\n", "coprov2_pairs", "nocol.csv has no column 'unsafe_prompt'"),
        ("nocol.csv", "text,category\na,b\n", "auto", r"nocol.csv.*columns found"),
        ("x.json", '{"prompt": "a"}', "auto", r"x.json.*\.json"),
        ("x.csv", "prompt\na\n", "xml", r"unknown prompt format 'xml' for file .*x.csv"),
        ("badcat.csv", "prompt,category\na,Nope\n", "csv", r"badcat.csv, data row 0: unknown harm category 'Nope'"),
        ("badseed.csv", "prompt,seed\na,abc\n", "csv", r"badseed.csv, data row 0: column 'seed'"),
    ],
)  # fmt: skip
def test_bad_input_names_the_file(tmp_path, name, text, fmt, match):
    path = _write(tmp_path / name, text)
    with pytest.raises(ValueError, match=match):
        load_prompt_file(path, fmt=fmt)


def test_formats_table_is_complete():
    assert {"i2p", "coprov2_pairs", "coprov2_test", "coco", "parti", "ring_a_bell", "text", "csv"} <= FORMATS.keys()
