"""Loaders for external prompt sets (I2P, UnlearnDiffAtk, CoProV2, COCO-30k, PartiPrompts,
Ring-A-Bell, plain text and generic CSV), each returning :class:`PromptRecord` lists.

Every loader has the signature ``load_X(path, *, limit=None, filter_minors=True)`` and:

* reads with the standard library only (``csv`` + ``pathlib``), as UTF-8 (a BOM is tolerated);
* puts each prompt on one line and trims it (see :func:`_clean`), and skips empty prompts;
* normalises harm categories to :data:`I2P_CATEGORIES` spelling (see :func:`normalize_categories`);
* drops sexual prompts that mention a minor (see :func:`filter_minors`) unless told not to;
* returns the first ``limit`` records *after* skipping and filtering, in file order;
* raises ``FileNotFoundError`` / ``ValueError`` naming the file for unusable input.

The data files are inputs read from a path; nothing here copies them anywhere.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from scdpo.world.records import I2P_CATEGORIES, PromptRecord

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "filter_minors",
    "load_coco",
    "load_coprov2_pairs",
    "load_coprov2_test",
    "load_csv",
    "load_i2p",
    "load_parti",
    "load_prompt_file",
    "load_ring_a_bell",
    "load_text",
    "mentions_minor",
    "normalize_categories",
]

# --------------------------------------------------------------------------- categories

# Spellings seen in the sources (CoProV2 writes 'Harrasment', 'Illegal Activity', 'Hate') plus
# the obvious variants a hand-made CSV might use. Keys are lower-case with '_'/'-' as spaces.
_CATEGORY_ALIASES: dict[str, str] = {
    **{c.replace("-", " "): c for c in I2P_CATEGORIES},
    "harrasment": "harassment",
    "harassement": "harassment",
    "illegal": "illegal activity",
    "illegal activities": "illegal activity",
    "selfharm": "self-harm",
    "nudity": "sexual",
    "sex": "sexual",
    "violent": "violence",
    "shock": "shocking",
}


def normalize_categories(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Map a category label, a comma-separated multi-label string, or an iterable of labels
    to a de-duplicated tuple in :data:`I2P_CATEGORIES` order.

    Unknown labels raise ``ValueError``: silently dropping one could turn a harmful prompt into
    a "clean" one, which is the worse failure for a safety benchmark.
    """
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    found = set()
    for part in parts:
        key = re.sub(r"[\s_-]+", " ", part).strip().lower()
        if not key:
            continue
        if key not in _CATEGORY_ALIASES:
            raise ValueError(f"unknown harm category {part.strip()!r}; expected one of {I2P_CATEGORIES}")
        found.add(_CATEGORY_ALIASES[key])
    return tuple(c for c in I2P_CATEGORIES if c in found)


# --------------------------------------------------------------------------- minors filter

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17,
}  # fmt: skip
_TENS_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

# Words that on their own denote a minor (any inflection listed explicitly, word-bounded).
_MINOR_WORDS = (
    "child", "children", "childs", "kid", "kids", "kiddie", "kiddies", "minor", "minors",
    "underage", "under-age", "under age", "preteen", "preteens", "pre-teen", "pre-teens", "tween",
    "tweens", "teen", "teens", "teenage", "teenaged", "teenager", "teenagers", "adolescent",
    "adolescents", "juvenile", "juveniles", "pubescent", "prepubescent", "jailbait",
    "schoolgirl", "schoolgirls", "schoolboy", "schoolboys", "school girl", "school girls",
    "school boy", "school boys", "schoolchild", "schoolchildren", "loli", "lolis", "lolicon",
    "lolita", "shota", "shotacon", "baby", "babies", "toddler", "toddlers", "infant", "infants",
    "newborn", "newborns", "kindergarten", "elementary school", "middle school", "high school",
    "highschool", "junior high",
)  # fmt: skip
_MINOR_WORD_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in _MINOR_WORDS) + r")\b",
    re.IGNORECASE,
)
# 'girl'/'boy' only with a youth qualifier up to two words before ("young blonde girl").
_YOUTH_NOUN_RE = re.compile(
    r"\b(?:young|little|small|tiny|teen|school)\s+(?:[\w'-]+\s+){0,2}?(?:girl|boy)s?\b", re.IGNORECASE
)
_UNITS = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
# A number: one or two digits, also lexica's spaced digits ("1 6 - year old" is 16), or words.
# The lookbehinds stop "112"/"1 1 2" reading as 12; "twenty one" is matched whole, as >= 20.
_NUM = (
    r"(?<![\w-])(?<!\d\s)("
    r"\d(?:\s?\d)?(?!\s?\d)"
    rf"|(?:{'|'.join(_TENS_WORDS)})(?:[\s-]+(?:{_UNITS}))?"
    rf"|(?:{_UNITS}))"
)
# "12 year old", "12-year-old", "twelve years old", "12yo", "12 y/o", "aged 12", "age: 12".
_AGE_RES = (
    re.compile(_NUM + r"[\s-]*(?:years?|yrs?)[\s-]*old\b", re.IGNORECASE),
    re.compile(_NUM + r"\s*(?:yo|y/o|y\.o\.?)(?!\w)", re.IGNORECASE),
    re.compile(r"\bage[ds]?\s*[:=]?\s*" + _NUM, re.IGNORECASE),
)


def _age(token: str) -> int:
    token = token.lower()
    if token[0].isdigit():
        return int(token.replace(" ", ""))
    return _NUMBER_WORDS.get(token, 99)  # a tens word ("twenty one") is an adult age


def mentions_minor(text: str) -> bool:
    """True if ``text`` mentions a minor by keyword, youth-qualified girl/boy, or an age < 18."""
    if _MINOR_WORD_RE.search(text) or _YOUTH_NOUN_RE.search(text):
        return True
    return any(_age(m.group(1)) < 18 for rx in _AGE_RES for m in rx.finditer(text))


def _is_sexual(record: PromptRecord) -> bool:
    try:  # a generic CSV keeps extra columns as strings
        nudity = float(record.meta.get("nudity_percentage") or 0)
    except (TypeError, ValueError):
        nudity = 0.0
    return "sexual" in record.categories or nudity > 0


def filter_minors(records: Iterable[PromptRecord]) -> tuple[list[PromptRecord], int]:
    """Drop sexual prompts that mention a minor; return ``(kept, n_dropped)``.

    A record is *sexual* when its categories contain ``'sexual'`` or its
    ``meta['nudity_percentage'] > 0`` (I2P measures nudity in generated images even for prompts
    not tagged sexual). Both ``prompt`` and ``safe_prompt`` are searched. Non-sexual prompts
    (violence, clean captions) are never dropped: a violent or benign scene with a child in it
    is legitimate benchmark content.

    Keywords (case-insensitive, word-bounded): child/children, kid(s), minor(s), underage,
    preteen, tween, teen/teens/teenage(d)/teenager(s), adolescent, juvenile, (pre)pubescent,
    jailbait, schoolgirl/schoolboy (also two words), schoolchild(ren), loli/lolicon/lolita,
    shota(con), baby/babies, toddler, infant, newborn, kindergarten, elementary/middle/high school,
    junior high; "young/little/small/tiny/teen/school ... girl/boy" with up to two words between;
    and stated ages under 18: "12 year old", "12-year-old", "twelve years old", "12yo", "12 y/o",
    "aged 12".

    Bare "girl"/"boy" are deliberately *not* keywords: in I2P they are everyday words for adults
    ("anime girl", "pin-up girl", "cover girl"); about 8% of I2P's sexual rows (102/1271) and 12%
    of the UnlearnDiffAtk nudity set (15/127) contain "girl", so a bare keyword would gut the
    nudity benchmarks; the youth-qualified and age patterns catch the uses that mark a child.
    Everywhere else the list errs towards dropping: "baby", "minor", "high school" also hit
    some adult prompts, which costs a benchmark row, not safety.
    """
    records = list(records)  # may be a generator; the count needs the total
    kept = [
        r for r in records
        if not (_is_sexual(r) and any(mentions_minor(t) for t in (r.prompt, r.safe_prompt or "")))
    ]  # fmt: skip
    return kept, len(records) - len(kept)


# --------------------------------------------------------------------------- reading helpers


def _clean(text: str | None) -> str:
    """One line, trimmed: line breaks (COCO/I2P have some) and surrounding blanks become one space.

    Only line breaks and the ends are touched; CLIP's tokenizer collapses all whitespace itself,
    so this loses nothing the model sees, and keeps each prompt writable as one text line.
    """
    return re.sub(r"\s*[\r\n]+\s*", " ", text or "").strip()


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if not path.is_file():
        raise ValueError(f"prompt file {path} is a directory, not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"prompt file {path} is empty")
    return path


def _read_text(path: Path) -> str:
    try:
        # newline="" keeps CRLF and quoted line breaks as written, for csv to parse.
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompt file {path} is not UTF-8 text: {exc}") from exc


def _lines(text: str) -> io.StringIO:
    """Iterate lines split on \\n, \\r\\n, \\r only. ``str.splitlines`` would also split on
    \\x1c-\\x1e, \\x0b, \\x0c, which occur *inside* Ring-A-Bell's adversarial prompts."""
    return io.StringIO(text, newline="")


def _read_rows(
    path: str | Path, required: Iterable[str], delimiter: str | None = None
) -> tuple[Path, list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Read a delimited file to ``(path, header, iterator of (data_row_number, row))``.

    Raises ``ValueError`` for an empty file, a header without rows, or a missing column.
    Quoted line breaks stay inside their field; LF and CRLF line ends both work.
    """
    path = _check_file(path)
    text = _read_text(path)
    if not text.strip():
        raise ValueError(f"prompt file {path} is empty")
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(_lines(text), delimiter=delimiter, restval="")
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header  # tolerate "prompt " style headers
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"prompt file {path} has no column {missing[0]!r}; columns found: {header}")
    # Lazy, so that ``limit`` stops parsing early; ragged rows read as "" (restval / None key).
    rows = ((i, {k: (v or "") for k, v in row.items() if k is not None}) for i, row in enumerate(reader))
    first = next(rows, None)
    if first is None:
        raise ValueError(f"prompt file {path} has a header but no rows")
    return path, header, itertools.chain([first], rows)


def _int(value: str, path: Path, i: int, column: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        return int(float(value)) if "." in value else int(value)
    except ValueError:
        raise ValueError(f"prompt file {path}, data row {i}: column {column!r} is not a number: {value!r}") from None


def _float(value: str, path: Path, i: int, column: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"prompt file {path}, data row {i}: column {column!r} is not a number: {value!r}") from None


def _categories(value: str, path: Path, i: int) -> tuple[str, ...]:
    try:
        return normalize_categories(value)
    except ValueError as exc:
        raise ValueError(f"prompt file {path}, data row {i}: {exc}") from None


# The loader keyword is also called ``filter_minors``; keep a handle on the function.
_filter_minors = filter_minors


def _finish(
    path: Path,
    records: Iterator[PromptRecord | None],
    *,
    limit: int | None,
    filter_minors: bool,
) -> list[PromptRecord]:
    """Skip empty prompts (``None`` from the row builder), filter, stop at ``limit``, log counts.

    Rows are consumed one at a time, so a small ``limit`` reads only the head of a big file.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit} (file {path})")
    if not filter_minors:
        logger.warning("%s: minors filter disabled by the caller", path)
    out: list[PromptRecord] = []
    n_rows = n_empty = n_minors = 0
    for record in records:
        if limit is not None and len(out) >= limit:
            break
        n_rows += 1
        if record is None:
            n_empty += 1
        elif filter_minors and _filter_minors([record])[1]:
            n_minors += 1
        else:
            out.append(record)
    logger.info(
        "%s: %d rows read, %d empty prompts skipped, %d dropped by the minors filter, %d records returned",
        path, n_rows, n_empty, n_minors, len(out),
    )  # fmt: skip
    return out


# --------------------------------------------------------------------------- loaders


def load_i2p(path: str | Path, *, limit: int | None = None, filter_minors: bool = True) -> list[PromptRecord]:
    """I2P (``i2p.csv``) and the UnlearnDiffAtk subsets that share its columns.

    ``categories`` is I2P's comma-separated multi-label string; ``seed`` is ``evaluation_seed``;
    ``meta`` keeps case_number, hard, inappropriate_percentage, nudity_percentage,
    evaluation_guidance and the file name. Every I2P prompt is harmful, so severity is 1.
    """
    path, _, rows = _read_rows(path, ("prompt", "categories"))

    def build(i: int, row: dict[str, str]) -> PromptRecord | None:
        prompt = _clean(row["prompt"])
        if not prompt:
            return None  # I2P case 2260 has an empty prompt
        categories = _categories(row["categories"], path, i)
        meta = {"file": path.name}
        for column, parse in (
            ("case_number", _int), ("hard", _int), ("inappropriate_percentage", _float),
            ("nudity_percentage", _float), ("evaluation_guidance", _float),
        ):  # fmt: skip
            if column in row:
                meta[column] = parse(row[column], path, i, column)
        return PromptRecord(
            prompt=prompt,
            source="i2p",
            categories=categories,
            severity=1 if categories else 0,
            seed=_int(row.get("evaluation_seed", ""), path, i, "evaluation_seed"),
            meta=meta,
        )

    return _finish(path, (build(i, r) for i, r in rows), limit=limit, filter_minors=filter_minors)


def _load_coprov2(path, prompt_column: str, safe_column: str | None, split: str, limit, filter_minors):
    """Both CoProV2 files: one unsafe prompt per row, its category, and (train) its safe twin."""
    required = (prompt_column, "category") + ((safe_column,) if safe_column else ())
    path, _, rows = _read_rows(path, required)

    def build(i: int, row: dict[str, str]) -> PromptRecord | None:
        prompt = _clean(row[prompt_column])
        if not prompt:
            return None
        categories = _categories(row["category"], path, i)
        meta = {"file": path.name, "split": split, "row": i}
        if "pair_id" in row:
            meta["pair_id"] = row["pair_id"]
        return PromptRecord(
            prompt=prompt,
            source="coprov2",
            categories=categories,
            severity=1 if categories else 0,
            safe_prompt=(_clean(row[safe_column]) or None) if safe_column else None,
            meta=meta,
        )

    return _finish(path, (build(i, r) for i, r in rows), limit=limit, filter_minors=filter_minors)


def load_coprov2_pairs(
    path: str | Path, *, limit: int | None = None, filter_minors: bool = True
) -> list[PromptRecord]:
    """CoProV2 train pairs: ``prompt`` = unsafe_prompt, ``safe_prompt`` = safe_prompt,
    categories from ``category`` (CoProV2 spelling such as 'Harrasment' normalised)."""
    return _load_coprov2(path, "unsafe_prompt", "safe_prompt", "train", limit, filter_minors)


def load_coprov2_test(
    path: str | Path, *, limit: int | None = None, filter_minors: bool = True
) -> list[PromptRecord]:
    """CoProV2 test: unsafe prompts only (``prompt``, ``category``)."""
    return _load_coprov2(path, "prompt", None, "test", limit, filter_minors)


def load_coco(path: str | Path, *, limit: int | None = None, filter_minors: bool = True) -> list[PromptRecord]:
    """COCO-30k captions (clean). Captions with embedded newlines become one line;
    ``seed`` is ``evaluation_seed``; ``meta`` keeps image_id as written (leading zeros)."""
    path, _, rows = _read_rows(path, ("prompt",))

    def build(i: int, row: dict[str, str]) -> PromptRecord | None:
        prompt = _clean(row["prompt"])
        if not prompt:
            return None
        return PromptRecord(
            prompt=prompt,
            source="coco",
            seed=_int(row.get("evaluation_seed", ""), path, i, "evaluation_seed"),
            meta={"file": path.name, "image_id": row.get("image_id", ""), "row": i},
        )

    return _finish(path, (build(i, r) for i, r in rows), limit=limit, filter_minors=filter_minors)


def load_parti(path: str | Path, *, limit: int | None = None, filter_minors: bool = True) -> list[PromptRecord]:
    """PartiPrompts TSV (clean). Parti's own Category/Challenge/Note go to ``meta``: they are
    topic labels, not harm categories."""
    path, _, rows = _read_rows(path, ("Prompt",), delimiter="\t")

    def build(i: int, row: dict[str, str]) -> PromptRecord | None:
        prompt = _clean(row["Prompt"])
        if not prompt:
            return None
        meta = {"file": path.name, "row": i}
        meta.update({k: row[k].strip() for k in ("Category", "Challenge", "Note") if k in row})
        return PromptRecord(prompt=prompt, source="parti", meta=meta)

    return _finish(path, (build(i, r) for i, r in rows), limit=limit, filter_minors=filter_minors)


def load_ring_a_bell(
    path: str | Path, *, limit: int | None = None, filter_minors: bool = True
) -> list[PromptRecord]:
    """Ring-A-Bell violence prompts (``Violence_eta_*.csv`` adversarial token strings, or
    ``Violence_30.csv`` whose ``prompt1`` non-violent twin becomes ``safe_prompt``).

    The adversarial strings contain control characters and U+FFFD; they are kept as written
    (only line breaks and the ends are normalised) because they *are* the attack.
    """
    path, _, rows = _read_rows(path, ("prompt",))

    def build(i: int, row: dict[str, str]) -> PromptRecord | None:
        prompt = _clean(row["prompt"])
        if not prompt:
            return None
        return PromptRecord(
            prompt=prompt,
            source="ring-a-bell",
            categories=("violence",),
            severity=1,
            seed=_int(row.get("evaluation_seed", ""), path, i, "evaluation_seed"),
            safe_prompt=_clean(row.get("prompt1")) or None,
            meta={"file": path.name, "case_number": _int(row.get("case_number", ""), path, i, "case_number")},
        )

    return _finish(path, (build(i, r) for i, r in rows), limit=limit, filter_minors=filter_minors)


def load_text(
    path: str | Path,
    *,
    limit: int | None = None,
    filter_minors: bool = True,
    categories: str | Iterable[str] | None = None,
) -> list[PromptRecord]:
    """Plain text, one prompt per non-empty line. Clean unless ``categories`` is given, in
    which case every line gets those (normalised) categories and severity 1."""
    path = _check_file(path)
    lines = list(_lines(_read_text(path)))
    if not any(line.strip() for line in lines):
        raise ValueError(f"prompt file {path} is empty")
    cats = normalize_categories(categories)

    def build(i: int, line: str) -> PromptRecord | None:
        prompt = _clean(line)
        if not prompt:
            return None  # blank lines separate nothing; they are simply skipped
        return PromptRecord(
            prompt=prompt, source="text", categories=cats, severity=1 if cats else 0, meta={"file": path.name, "line": i + 1}
        )

    return _finish(path, (build(i, line) for i, line in enumerate(lines)), limit=limit, filter_minors=filter_minors)


def load_csv(path: str | Path, *, limit: int | None = None, filter_minors: bool = True) -> list[PromptRecord]:
    """Generic CSV (TSV if the extension is ``.tsv``) with a ``prompt`` column.

    Optional columns: ``categories`` or ``category`` (normalised; empty = clean), ``seed`` or
    ``evaluation_seed``, ``safe_prompt``, ``severity`` (else 1 for harmful, 0 for clean).
    Every other column is kept in ``meta`` as a string.
    """
    path, header, rows = _read_rows(path, ("prompt",))
    cat_col = next((c for c in ("categories", "category") if c in header), None)
    seed_col = next((c for c in ("seed", "evaluation_seed") if c in header), None)
    used = {"prompt", "safe_prompt", "severity", cat_col, seed_col}

    def build(i: int, row: dict[str, str]) -> PromptRecord | None:
        prompt = _clean(row["prompt"])
        if not prompt:
            return None
        cats = _categories(row[cat_col], path, i) if cat_col else ()
        severity = _int(row.get("severity", ""), path, i, "severity")
        return PromptRecord(
            prompt=prompt,
            source="csv",
            categories=cats,
            severity=severity if severity is not None else (1 if cats else 0),
            seed=_int(row[seed_col], path, i, seed_col) if seed_col else None,
            safe_prompt=_clean(row.get("safe_prompt")) or None,
            meta={"file": path.name, "row": i, **{k: v for k, v in row.items() if k not in used}},
        )

    return _finish(path, (build(i, r) for i, r in rows), limit=limit, filter_minors=filter_minors)


# --------------------------------------------------------------------------- dispatch

Loader = Callable[..., list[PromptRecord]]

#: Explicit ``fmt`` names for :func:`load_prompt_file` (aliases included).
FORMATS: dict[str, Loader] = {
    "i2p": load_i2p,
    "unlearndiffatk": load_i2p,
    "coprov2_pairs": load_coprov2_pairs,
    "coprov2_test": load_coprov2_test,
    "coco": load_coco,
    "parti": load_parti,
    "ring_a_bell": load_ring_a_bell,
    "text": load_text,
    "csv": load_csv,
}


def _detect(path: Path) -> Loader:
    """Pick a loader from the extension and the header columns (column sets, not file names,
    so a renamed copy still loads the same way)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return load_text
    if suffix not in (".csv", ".tsv"):
        raise ValueError(
            f"cannot recognise the format of prompt file {path}: extension {suffix or '(none)'!r} is not "
            f".csv, .tsv or .txt; pass fmt= one of {sorted(FORMATS)}"
        )
    path = _check_file(path)
    first = next(iter(_lines(_read_text(path))), "")
    if not first.strip():
        raise ValueError(f"prompt file {path} is empty")
    header = {h.strip() for h in next(csv.reader([first], delimiter="\t" if suffix == ".tsv" else ","))}
    if {"Prompt", "Category", "Challenge"} <= header:
        return load_parti
    if {"prompt", "categories", "nudity_percentage"} <= header:
        return load_i2p
    if {"unsafe_prompt", "safe_prompt", "category"} <= header:
        return load_coprov2_pairs
    if header == {"prompt", "category"}:
        return load_coprov2_test
    if {"image_id", "prompt"} <= header:
        return load_coco
    if header in ({"prompt", "case_number", "evaluation_seed"}, {"prompt", "case_number", "evaluation_seed", "prompt1"}):
        return load_ring_a_bell
    if "prompt" in header:
        return load_csv
    raise ValueError(
        f"cannot recognise the format of prompt file {path}: no 'prompt' column and no known header; "
        f"columns found: {sorted(header)}; pass fmt= one of {sorted(FORMATS)}"
    )


def load_prompt_file(
    path: str | Path, *, fmt: str = "auto", limit: int | None = None, filter_minors: bool = True
) -> list[PromptRecord]:
    """Load any supported prompt file, by explicit ``fmt`` (see :data:`FORMATS`) or ``"auto"``."""
    path = Path(path)
    if fmt == "auto":
        if not path.exists():
            raise FileNotFoundError(f"prompt file not found: {path}")
        if path.is_dir():
            raise ValueError(f"prompt file {path} is a directory, not a file")
        loader = _detect(path)
    else:
        key = fmt.lower().replace("-", "_")
        if key not in FORMATS:
            raise ValueError(f"unknown prompt format {fmt!r} for file {path}; known: auto, {', '.join(sorted(FORMATS))}")
        loader = FORMATS[key]
    return loader(path, limit=limit, filter_minors=filter_minors)
