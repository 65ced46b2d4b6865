"""`scdpo data mine`: the words that make a model draw a harmful concept (our addition;
docs/dataset-builder.md, "Mined words").

The SCP data names each harmful concept by its training keywords. The aligned model then refuses
those words and, less surely, others: the paraphrase attack wins on the same few held-out names
against every seed of the recipe (docs/attacks.md, "Twenty-fifth round"). Which other words a model
maps to a harmful concept is a property of the model, not of a word list. So this samples the model
on ``template.format(word=w)`` for each candidate word ``w`` with ``seeds`` seeds and reads every
image with a reader (:data:`READERS`): by default the EmojiWorld judge,

    harmful(x) = [max_{c harmful} p_c(x) > t],    concept(x) = argmax_{c harmful} p_c(x),

or a cost model with a concept head (cost > 0, its largest harmful concept logit). A word is mined
for concept ``c`` when at least ``min_hits`` of its images are harmful and read as ``c``.

`scdpo data build --mined-words OUT/mined.yaml` then rewrites a share of the harmful prompts' harmful
word (the span that differs from the safe counterpart, as the neighbour words do) as one of its
concept's mined words; the counterpart stays, so each pair still teaches "this word -> the safe
object". Candidate words never include an EmojiWorld concept's names or keywords, nor a word of the
clean captions (``exclude_known``): the training keywords are trained on already, the held-out ones
must stay unseen, or the implicit suite would no longer measure generalisation, and a clean word
must not learn the edit.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import logging
import re
import zlib
from pathlib import Path
from typing import Callable

import torch

from scdpo.data.mine_config import MineConfig
from scdpo.world.records import PromptRecord

log = logging.getLogger(__name__)
CHUNKS = "chunks"
#: images (N, 3, H, W) in [0, 1] -> (harmful (N,) bool, the concept name read in each, a score (N,))
Reader = Callable[[torch.Tensor], tuple[torch.Tensor, list[str], torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class Reading:
    """One candidate word: how many of its images the reader finds harmful, the harmful concept read
    most often in them ("" if none), how many images read as that concept, and the reader's mean score
    over its images (the judge's top harmful probability, or the cost)."""

    word: str
    harmful: int
    concept: str
    hits: int
    mean_score: float


@functools.lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """Every word of every EmojiWorld concept's name and keywords, held-out ones included, and every word
    of the clean side's captions (align-clean's prompts, align-harmful's safe counterparts: articles,
    positions, sizes, colours, backgrounds): a word clean prompts use must not be taught to turn into
    the safe object (the neighbour words' rule, docs/dataset-builder.md)."""
    from scdpo.data.neighbours import clean_words
    from scdpo.world.suites import get_suite
    from scdpo.world.vocab import load_vocabulary

    texts = [kw for c in load_vocabulary().concepts for kw in (c.name, *c.synonyms, *c.heldout)]
    texts += [r.prompt for r in get_suite("align-clean", 2000)]
    texts += [r.safe_prompt for r in get_suite("align-harmful", 2000) if r.safe_prompt]
    return frozenset(clean_words(texts))


def candidate_words(cfg: MineConfig, tokenizer) -> list[str]:
    """The words to read, in order: ``cfg.words``' lines, else the text encoder's whole-word tokens of
    at least 3 letters; without the known words (``exclude_known``); the first ``cfg.limit``."""
    from scdpo.data.neighbours import clean_words

    if cfg.words:
        path = Path(cfg.words)
        if not path.is_file():
            raise FileNotFoundError(f"--words {cfg.words}: no such file (one word or phrase a line)")
        words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
    else:
        from scdpo.models.tokens import allowed_tokens

        words = [tokenizer.decode([int(i)]).strip() for i in allowed_tokens(tokenizer)]
        words = [w for w in words if re.fullmatch(r"[a-z]{3,}", w)]
    if cfg.exclude_known:
        known = known_words()
        words = [w for w in words if not clean_words([w]) & known]
    words = list(dict.fromkeys(words))
    if not words:
        raise ValueError(f"no candidate words left ({cfg.words or 'the text encoder vocabulary'}; "
                         "--no-exclude-known keeps the concepts' own words)")
    return words[:cfg.limit] if cfg.limit else words


def word_seed(seed: int, word: str, k: int) -> int:
    """The seed of image ``k`` of ``word``: a stable hash, so a resumed or sharded run draws the same."""
    return zlib.crc32(f"mine\0{seed}\0{word}\0{k}".encode())


def read_words(words: list[str], model, reader, cfg: MineConfig) -> list[Reading]:
    """Sample ``cfg.seeds`` images of each word and read them with ``reader`` (:data:`READERS`)."""
    prompts = [cfg.template.format(word=w) for w in words for _ in range(cfg.seeds)]
    seeds = [word_seed(cfg.seed, w, k) for w in words for k in range(cfg.seeds)]
    # the sampler's own bar (denoising steps) moves inside a chunk: a chunk is minutes on a CPU
    harmful, read_as, score = reader(model.sample(prompts, seeds, cfg.sampler))
    out = []
    for j, word in enumerate(words):
        rows = range(j * cfg.seeds, (j + 1) * cfg.seeds)
        names = [read_as[i] for i in rows if harmful[i]]
        concept = max(sorted(set(names)), key=names.count) if names else ""
        out.append(Reading(word, len(names), concept, names.count(concept) if names else 0,
                           round(float(score[list(rows)].mean()), 4)))
    return out


def judge_reader(device) -> Reader:
    """The EmojiWorld judge: harmful when a harmful concept's probability passes its threshold, the
    concept the most probable harmful one; the score is that probability. The judge reads blobs and
    smears as nothing (judge v2, docs/base-model.md), so a word is mined for what is drawn. The
    judge already gives the builder's alignment reward; the cost model, the training signal, stays
    apart from it (docs/evaluation.md, "The judge independence rule")."""
    from scdpo.world.judge import load_default_judge
    from scdpo.world.vocab import load_vocabulary

    judge = load_default_judge(device)
    cols = [c.index for c in load_vocabulary().harmful]
    names = [c.name for c in load_vocabulary().harmful]

    def read(images):
        p = judge.probabilities(images)[:, cols].float().cpu()
        top = p.max(1)
        return top.values > float(judge.config.threshold), [names[i] for i in top.indices], top.values
    return read


def cost_reader(path: str | None, device) -> Reader:
    """A cost model with a concept head: harmful when the cost is > 0, the concept the largest of its
    harmful concept logits; the score is the cost. At the demo's scale (pool 1,500) it read blobs as
    harm (docs/dataset-builder.md, "Mined words"): use it with a cost model that does not."""
    from scdpo.cost.model import CostModel

    if not path:
        raise ValueError("--reader cost needs --cost-model (a cost model folder with a concept head)")
    model = CostModel.from_pretrained(path, device)
    cols = _harmful_columns(list(model.config.concepts), path)
    index, names = torch.tensor(sorted(cols)), [cols[i] for i in sorted(cols)]

    def read(images):
        cost, logits = model.read(images)
        return cost > 0, [names[i] for i in logits[:, index].argmax(1)], cost
    return read


#: ``--reader NAME`` -> a function of (config, device) that makes the :data:`Reader`
READERS = {"judge": lambda cfg, device: judge_reader(device),
           "cost": lambda cfg, device: cost_reader(cfg.cost_model, device)}


def mine(cfg: MineConfig, model=None, reader=None) -> dict:
    """Read every candidate word (resuming finished chunks) and write ``mined.yaml`` and ``words.csv``;
    returns the summary also in ``summary.json``."""
    from tqdm.auto import tqdm

    from scdpo.models.sampler_config import dtype_hint, with_sampling_dtype
    from scdpo.utils.io import atomic_write_text

    out = Path(cfg.out)
    cfg = dataclasses.replace(cfg, sampler=with_sampling_dtype(cfg.sampler, cfg.model, cfg.device, model))
    settings = cfg.settings()
    saved = out / "settings.json"
    if saved.is_file() and (was := json.loads(saved.read_text())) != settings:
        raise ValueError(f"{out} was mined with other settings ({saved}); give a new --out or the same settings"
                         + dtype_hint(was, settings))
    if model is None:
        from scdpo.models.t2i import T2IModel

        model = T2IModel.for_sampling(cfg.model, cfg.sampler, device=cfg.device, lora=cfg.lora)
    reader = reader or READERS[cfg.reader](cfg, model.device)
    words = candidate_words(cfg, None if cfg.words else model.tokenizers[0])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, json.dumps(settings, indent=1))
    bar = tqdm(total=len(words), desc="mine words", unit="word")
    readings = []
    for c in range(0, len(words), cfg.chunk_size):
        path = out / CHUNKS / f"chunk-{c // cfg.chunk_size:05d}.json"
        if path.is_file():
            chunk = [Reading(**r) for r in json.loads(path.read_text())]
        else:
            chunk = read_words(words[c:c + cfg.chunk_size], model, reader, cfg)
            path.parent.mkdir(exist_ok=True)
            atomic_write_text(path, json.dumps([dataclasses.asdict(r) for r in chunk]))
        readings += chunk
        bar.update(len(chunk))
        bar.set_postfix(mined=sum(r.hits >= cfg.min_hits for r in readings))
    bar.close()
    return _write(out, readings, cfg)


def _harmful_columns(names: list[str], source: str) -> dict[int, str]:
    from scdpo.world.vocab import load_vocabulary

    by_name = load_vocabulary().by_name
    cols = {i: n for i, n in enumerate(names) if n in by_name and by_name[n].harmful}
    if not cols:
        raise ValueError(f"cost model {source} has no concept head over EmojiWorld's harmful concepts; train one "
                         "with `scdpo cost train` on EmojiWorld renders (its concept head is on by default)")
    return cols


def _write(out: Path, readings: list[Reading], cfg: MineConfig) -> dict:
    import yaml

    from scdpo.utils.io import atomic_write_text

    mined: dict[str, list[str]] = {}
    for r in sorted(readings, key=lambda r: (r.concept, -r.hits, -r.mean_score, r.word)):
        if r.hits >= cfg.min_hits:
            mined.setdefault(r.concept, []).append(r.word)
    table = io.StringIO()
    writer = csv.DictWriter(table, [f.name for f in dataclasses.fields(Reading)])
    writer.writeheader()
    writer.writerows(dataclasses.asdict(r) for r in readings)
    atomic_write_text(out / "words.csv", table.getvalue())
    atomic_write_text(out / "mined.yaml", "# scdpo data mine: harmful concept -> words the model draws it for\n"
                      + yaml.safe_dump(mined, sort_keys=True, allow_unicode=True))
    summary = {"words": len(readings), "mined": sum(map(len, mined.values())), "concepts": len(mined),
               "any_harmful_image": sum(r.harmful > 0 for r in readings),
               "by_concept": {c: len(w) for c, w in sorted(mined.items())}}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    log.info("mined %d words for %d concepts of %d read", summary["mined"], summary["concepts"], summary["words"])
    return summary


def load_mined(path: str | Path) -> dict[str, list[str]]:
    """``mined.yaml`` -> {harmful concept: [words]}; ValueError naming the file if it is not one."""
    from scdpo.utils.config import yaml_safe_load
    from scdpo.world.vocab import load_vocabulary

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--mined-words {path}: no such file (write one with `scdpo data mine`)")
    data = yaml_safe_load(p.read_text(encoding="utf-8")) or {}
    by_name = load_vocabulary().by_name
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"--mined-words {path}: expected a mapping of concept -> list of words (scdpo data mine's "
                         "mined.yaml)")
    unknown = [c for c in data if c not in by_name or not by_name[c].harmful]
    if unknown:
        raise ValueError(f"--mined-words {path}: {unknown} are not EmojiWorld harmful concepts")
    return {c: [str(w) for w in ws] for c, ws in data.items() if ws}


def mined_rewrites(records: list[PromptRecord], mined: dict[str, list[str]], share: float,
                   seed: int) -> tuple[list[PromptRecord], int]:
    """``records`` with a share of the harmful ones' harmful span rewritten as a mined word of their
    concept (the neighbour words' rewrite, scdpo.data.neighbours); returns them and how many changed.
    A record keeps its concepts and safe counterpart and notes ``meta["mined_for"]`` (the words it
    replaced). Records without a counterpart, a single differing span, or a mined concept stay."""
    from scdpo.data.neighbours import harmful_span, pick, rewrite_span

    out, rewritten = [], 0
    for index, r in enumerate(records):
        span = harmful_span(r.prompt, r.safe_prompt) if r.harmful and r.safe_prompt else None
        options = next((mined[c] for c in r.concepts if c in mined), None)
        chosen, k = pick(seed, index, share, len(options or ()), salt="mined")
        if span is None or not options or not chosen:
            out.append(r)
            continue
        words = " ".join(r.prompt.split()[span[0]:span[1]])
        out.append(dataclasses.replace(r, prompt=rewrite_span(r.prompt, span, options[k]),
                                       meta={**r.meta, "mined_for": words}))
        rewritten += 1
    return out, rewritten
