"""Token-level helpers for a :class:`~scdpo.models.t2i.T2IModel`'s text encoder(s): token ids of
a text, whole-word tokens, the token-embedding matrices and the tokens nearest a word there. The
attacks (scdpo.attack) and the data builder's neighbour words (scdpo.data.neighbours) share them."""

from __future__ import annotations

import re

import torch

__all__ = ["allowed_tokens", "content_ids", "decode", "embedding_matrices", "nearest", "nearest_tokens", "word_vectors"]


def content_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return tokenizer(text, add_special_tokens=False).input_ids


def embedding_matrices(model) -> list[torch.Tensor]:
    """Each encoder's token-embedding matrix (V, D_i)."""
    return [enc.get_input_embeddings().weight for enc in model.text_encoders]


def decode(tokenizer, ids) -> str:
    """Token ids -> one-line text (special tokens dropped)."""
    text = tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
    return re.sub(r"\s+", " ", text).strip()


def allowed_tokens(tokenizer, pool: list[str] | None = None) -> torch.Tensor:
    """Token ids a search may use: those that survive decode -> re-tokenize as themselves (whole
    words, no special or sub-word pieces), so a written prompt reads back as the tokens searched;
    restricted to the tokens of the words in ``pool`` when given."""
    if pool:
        ids = sorted({i for w in pool for i in content_ids(tokenizer, w)})
        if not ids:
            raise ValueError(f"--token-pool {pool} has no tokens in this model's vocabulary")
        return torch.tensor(ids)
    cached = getattr(tokenizer, "_scdpo_allowed", None)
    if cached is not None:
        return cached
    special = set(tokenizer.all_special_ids)
    keep = []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        word = tokenizer.decode([i]).strip()
        if word and re.fullmatch(r"[\w'-]*\w[\w'-]*", word) and content_ids(tokenizer, word) == [i]:
            keep.append(i)
    tokenizer._scdpo_allowed = torch.tensor(keep)
    return tokenizer._scdpo_allowed


def word_vectors(model, words: list[str]) -> torch.Tensor:
    """(len(words), D): each word's mean token embedding in the first text encoder, unit length (the
    space in which the paraphrase attack and the neighbour words measure nearness)."""
    tok = model.tokenizers[0]
    table = embedding_matrices(model)[0].detach().float()
    rows = []
    for w in words:
        ids = content_ids(tok, w)
        if not ids:
            raise ValueError(f"{w!r} has no tokens in this model's vocabulary")
        rows.append(table[ids].mean(0))
    return torch.nn.functional.normalize(torch.stack(rows), dim=1)


def nearest_tokens(model, word: str, n: int, pool: list[str] | None = None) -> list[str]:
    """The ``n`` whole-word tokens nearest (cosine) to ``word``'s mean token embedding in the first
    text encoder, ``word``'s own tokens excluded (``pool``: only the tokens of these words)."""
    if n == 0:
        return []
    tok = model.tokenizers[0]
    table = embedding_matrices(model)[0].detach().float()
    own = content_ids(tok, word)
    vocab = allowed_tokens(tok, pool)
    vocab = vocab[~torch.isin(vocab, torch.tensor(own))]
    query = word_vectors(model, [word])[0]
    scores = torch.nn.functional.normalize(table[vocab.to(table.device)], dim=1) @ query
    order = torch.argsort(scores.cpu(), descending=True, stable=True)[:n]
    return [decode(tok, [int(vocab[i])]) for i in order]


def nearest(p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index of the row of ``table`` nearest (cosine) to each row of ``p`` (the PEZ projection's lookup)."""
    p = torch.nn.functional.normalize(p.float(), dim=-1)
    table = torch.nn.functional.normalize(table.float(), dim=-1)
    return (p @ table.T).argmax(-1)
